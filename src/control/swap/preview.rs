//! What a swap would change, told before it starts: the settings each side
//! gets and keeps, as Azure's swap dialog lists them under "Source Changes"
//! and "Target Changes". Pure: it asks [`check`](super::plan::check)
//! whether the swap could start and diffs the settings the engine would
//! post, so the preview cannot promise what the swap would not do.

use super::plan::{check, SwapRequest};
use crate::activity::Action;
use crate::api::{SettingChange, SlotChanges, SwapPreview};
use crate::control::ControlError;
use crate::model::{Settings, Slot, State};
use crate::store::Preview;

/// The preview of swapping `req.source` into `req.target` (its `action` is
/// ignored: the answer is about the swap itself), or the error the swap
/// would be refused with.
pub fn swap_preview(
    state: &State,
    pending: Option<&Preview>,
    req: &SwapRequest,
) -> Result<SwapPreview, ControlError> {
    let req = SwapRequest {
        action: Action::Swap,
        ..req.clone()
    };
    let plan = check(state, pending, &req)?;
    let (source, target) = (&plan.source, &plan.target);
    // What the source's content runs with once it serves the target: the
    // settings phase 1 posts and the switch makes live.
    let after = source.settings_in(target);
    Ok(SwapPreview {
        site: req.site.clone(),
        source: source.name.clone(),
        target: target.name.clone(),
        pending_preview: plan.completes.map(|p| p.operation_id),
        source_changes: changes(
            source,
            build(source),
            build(source),
            &source.effective_settings(),
            &after,
            target,
        ),
        target_changes: changes(
            target,
            build(target),
            build(source),
            &target.effective_settings(),
            &after,
            target,
        ),
    })
}

fn build(slot: &Slot) -> Option<String> {
    slot.deployment.as_ref().map(|d| d.build_version.clone())
}

fn changes(
    slot: &Slot,
    build_version_before: Option<String>,
    build_version_after: Option<String>,
    before: &Settings,
    after: &Settings,
    target: &Slot,
) -> SlotChanges {
    let (changed, unchanged) = diff(before, after, &target.sticky_settings);
    SlotChanges {
        slot: slot.name.clone(),
        build_version_before,
        build_version_after,
        changed,
        unchanged,
    }
}

/// Every key of `before` and `after`, by name, split into those whose value
/// changes (added, removed, or another value) and those that keep it.
pub fn diff(
    before: &Settings,
    after: &Settings,
    sticky: &Settings,
) -> (Vec<SettingChange>, Vec<SettingChange>) {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .map(|k| SettingChange {
            key: k.clone(),
            before: before.get(k).cloned(),
            after: after.get(k).cloned(),
            sticky: sticky.contains_key(k),
        })
        .partition(|c| c.before != c.after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn state() -> State {
        let cfg = r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["127.0.0.1:1"]
[sites.slots.settings]
FLAG = "old"
SAME = "x"
ONLY_PROD = "p"
[sites.slots.sticky_settings]
DB = "prod-db"
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["127.0.0.1:2"]
[sites.slots.settings]
FLAG = "new"
SAME = "x"
[sites.slots.sticky_settings]
DB = "staging-db"
[[sites.slots]]
name = "empty"
"#;
        Config::parse(cfg, Path::new("t")).unwrap().1
    }

    fn req(source: &str, target: &str) -> SwapRequest {
        SwapRequest {
            site: "shop".into(),
            source: source.into(),
            target: target.into(),
            action: Action::Preview,
        }
    }

    fn keys(cs: &[SettingChange]) -> Vec<&str> {
        cs.iter().map(|c| c.key.as_str()).collect()
    }

    #[test]
    fn source_gets_the_targets_sticky_settings() {
        let p = swap_preview(&state(), None, &req("staging", "production")).unwrap();
        let src = &p.source_changes;
        assert_eq!(src.slot, "staging");
        assert_eq!(src.build_version_before.as_deref(), Some("v2"));
        assert_eq!(src.build_version_after.as_deref(), Some("v2"));
        assert_eq!(keys(&src.changed), ["DB"]);
        let db = &src.changed[0];
        assert_eq!(db.before.as_deref(), Some("staging-db"));
        assert_eq!(db.after.as_deref(), Some("prod-db"));
        assert!(db.sticky);
        assert_eq!(keys(&src.unchanged), ["FLAG", "SAME"]);
        assert_eq!(p.pending_preview, None);
    }

    #[test]
    fn target_gets_the_sources_build_and_swappable_settings() {
        let p = swap_preview(&state(), None, &req("staging", "production")).unwrap();
        let tgt = &p.target_changes;
        assert_eq!(tgt.slot, "production");
        assert_eq!(tgt.build_version_before.as_deref(), Some("v1"));
        assert_eq!(tgt.build_version_after.as_deref(), Some("v2"));
        assert_eq!(keys(&tgt.changed), ["FLAG", "ONLY_PROD"]);
        assert_eq!(tgt.changed[1].after, None, "ONLY_PROD goes away");
        assert!(!tgt.changed[0].sticky);
        assert_eq!(keys(&tgt.unchanged), ["DB", "SAME"]);
        assert!(tgt.unchanged[0].sticky, "DB stays with production");
    }

    #[test]
    fn refused_as_the_swap_would_be() {
        let s = state();
        assert!(matches!(
            swap_preview(&s, None, &req("empty", "production")),
            Err(ControlError::Conflict(_))
        ));
        assert!(matches!(
            swap_preview(&s, None, &req("nope", "production")),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            swap_preview(&s, None, &req("staging", "staging")),
            Err(ControlError::Invalid(_))
        ));
        let site = &s.sites["shop"];
        let pending = Preview {
            source: "staging".into(),
            target: "production".into(),
            operation_id: "op-1".into(),
            source_deployment: site.slots["staging"].deployment.clone(),
            target_deployment: site.slots["production"].deployment.clone(),
        };
        // the same pair: the swap would complete the preview
        let p = swap_preview(&s, Some(&pending), &req("staging", "production")).unwrap();
        assert_eq!(p.pending_preview.as_deref(), Some("op-1"));
        // another pair is blocked by it
        assert!(matches!(
            swap_preview(&s, Some(&pending), &req("staging", "empty")),
            Err(ControlError::Conflict(_))
        ));
    }
}
