//! Planning a swap, without I/O: may this swap start, against which slots
//! exactly (their content as it was when it started), and the one edit of
//! the state that switches them.
//!
//! The engine (`engine.rs`) runs a [`Plan`]; everything it decides before
//! and at the switch is decided here, so it is unit-tested without sockets.

use crate::activity::Action;
use crate::control::ControlError;
use crate::model::{Deployment, Site, Slot, State, PRODUCTION};
use crate::store::Preview;

/// What the admin API (or auto / declarative swap) asks for.
#[derive(Debug, Clone)]
pub struct SwapRequest {
    pub site: String,
    pub source: String,
    pub target: String,
    pub action: Action,
}

/// The slots of a swap as they were when it started.
#[derive(Clone)]
pub(super) struct Plan {
    pub site: Site,
    pub source: Slot,
    pub target: Slot,
    /// Completing a preview: phases 1–2 already ran.
    pub completes: Option<Preview>,
}

impl Plan {
    pub fn source_deployment(&self) -> &Deployment {
        // `check` refuses a source without a deployment
        self.source.deployment.as_ref().expect("checked")
    }

    /// The Host header the target's users send, for the warm-up.
    pub fn target_host(&self) -> String {
        if self.target.name == PRODUCTION {
            if let Some(h) = self.site.hostnames.first() {
                return h.clone();
            }
        }
        self.site
            .slot_hostnames(&self.target)
            .into_iter()
            .next()
            .or_else(|| self.site.hostnames.first().cloned())
            .unwrap_or_default()
    }
}

/// Decide whether a request may start, and how. Pure: no I/O.
pub(super) fn check(
    state: &State,
    preview: Option<&Preview>,
    req: &SwapRequest,
) -> Result<Plan, ControlError> {
    let site = state
        .sites
        .get(&req.site)
        .ok_or_else(|| ControlError::NotFound(format!("site {:?} does not exist", req.site)))?;
    let slot = |name: &str| {
        site.slots.get(name).cloned().ok_or_else(|| {
            ControlError::NotFound(format!("site {:?} has no slot {name:?}", req.site))
        })
    };
    let (source, target) = (slot(&req.source)?, slot(&req.target)?);
    if source.name == target.name {
        return Err(ControlError::Invalid(vec![crate::model::Problem {
            key: "target_slot".into(),
            reason: "a slot cannot be swapped with itself".into(),
        }]));
    }
    let same_pair = preview.is_some_and(|p| p.source == req.source && p.target == req.target);
    if let Some(p) = preview {
        if !same_pair {
            return Err(ControlError::Conflict(format!(
                "a preview of {} into {} is pending on site {:?}; complete it with action swap or cancel it with action reset first",
                p.source, p.target, req.site
            )));
        }
    }
    match req.action {
        // by hand, auto or declarative: a ramp is never run as a swap
        Action::Ramp | Action::Outlier => {
            return Err(ControlError::Invalid(vec![crate::model::Problem {
                key: "action".into(),
                reason: "use swap, preview or reset (a ramp is PUT on …/slots/{slot}/ramp)".into(),
            }]))
        }
        Action::Reset if !same_pair => {
            return Err(ControlError::Conflict(format!(
                "no preview of {} into {} is pending on site {:?}",
                req.source, req.target, req.site
            )))
        }
        Action::Preview if same_pair => {
            return Err(ControlError::Conflict(format!(
                "a preview of {} into {} is already pending",
                req.source, req.target
            )))
        }
        _ => {}
    }
    if req.action != Action::Reset && source.deployment.is_none() {
        return Err(ControlError::Conflict(format!(
            "slot {:?} has no deployment to swap in",
            req.source
        )));
    }
    Ok(Plan {
        site: site.clone(),
        completes: if req.action == Action::Swap && same_pair {
            preview.cloned()
        } else {
            None
        },
        source,
        target,
    })
}

/// Exchange the content (deployment and swappable settings) of two slots,
/// provided neither changed since the swap was planned.
pub(super) fn exchange(state: &mut State, plan: &Plan) -> Result<(), ControlError> {
    let site = state
        .sites
        .get_mut(&plan.site.name)
        .ok_or_else(|| ControlError::Conflict("the site was deleted during the swap".into()))?;
    let (Some(source), Some(target)) = (
        site.slots.get(&plan.source.name),
        site.slots.get(&plan.target.name),
    ) else {
        return Err(ControlError::Conflict(
            "a slot was deleted during the swap".into(),
        ));
    };
    if source.deployment != plan.source.deployment || target.deployment != plan.target.deployment {
        return Err(ControlError::Conflict(
            "a deployment changed during the swap; the warmed-up instances are no longer the ones to switch to".into(),
        ));
    }
    let (sd, ss) = (source.deployment.clone(), source.settings.clone());
    let (td, ts) = (target.deployment.clone(), target.settings.clone());
    let source = site
        .slots
        .get_mut(&plan.source.name)
        .expect("checked above");
    source.deployment = td;
    source.settings = ts;
    let target = site
        .slots
        .get_mut(&plan.target.name)
        .expect("checked above");
    target.deployment = sd;
    target.settings = ss;
    Ok(())
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
[sites.slots.sticky_settings]
DB = "prod-db"
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["127.0.0.1:2"]
[sites.slots.settings]
FLAG = "new"
[sites.slots.sticky_settings]
DB = "staging-db"
[[sites.slots]]
name = "empty"
"#;
        Config::parse(cfg, Path::new("t")).unwrap().1
    }

    fn req(source: &str, target: &str, action: Action) -> SwapRequest {
        SwapRequest {
            site: "shop".into(),
            source: source.into(),
            target: target.into(),
            action,
        }
    }

    #[test]
    fn exchange_moves_content_and_keeps_sticky_settings() {
        let mut s = state();
        let plan = check(&s, None, &req("staging", "production", Action::Swap)).unwrap();
        exchange(&mut s, &plan).unwrap();
        let site = &s.sites["shop"];
        let prod = &site.slots["production"];
        assert_eq!(prod.deployment.as_ref().unwrap().build_version, "v2");
        assert_eq!(prod.settings["FLAG"], "new");
        assert_eq!(prod.sticky_settings["DB"], "prod-db");
        assert_eq!(
            site.slots["staging"]
                .deployment
                .as_ref()
                .unwrap()
                .build_version,
            "v1"
        );
        // a second exchange with the same (now stale) plan is refused
        assert!(matches!(
            exchange(&mut s, &plan),
            Err(ControlError::Conflict(_))
        ));
        // swapping back is the rollback
        let back = check(&s, None, &req("staging", "production", Action::Swap)).unwrap();
        exchange(&mut s, &back).unwrap();
        assert_eq!(s, state());
    }

    #[test]
    fn effective_settings_for_the_target() {
        let s = state();
        let site = &s.sites["shop"];
        let eff = site.slots["staging"].settings_in(&site.slots["production"]);
        assert_eq!(eff["FLAG"], "new");
        assert_eq!(eff["DB"], "prod-db");
    }

    #[test]
    fn what_may_start() {
        let s = state();
        assert!(matches!(
            check(&s, None, &req("nope", "production", Action::Swap)),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            check(&s, None, &req("staging", "staging", Action::Swap)),
            Err(ControlError::Invalid(_))
        ));
        assert!(matches!(
            check(&s, None, &req("empty", "production", Action::Swap)),
            Err(ControlError::Conflict(_))
        ));
        assert!(matches!(
            check(&s, None, &req("staging", "production", Action::Reset)),
            Err(ControlError::Conflict(_))
        ));
        let site = &s.sites["shop"];
        let pending = Preview {
            source: "staging".into(),
            target: "production".into(),
            operation_id: "op-1".into(),
            source_deployment: site.slots["staging"].deployment.clone(),
            target_deployment: site.slots["production"].deployment.clone(),
        };
        assert!(pending.stands(&s, "shop"));
        let mut redeployed = s.clone();
        redeployed
            .sites
            .get_mut("shop")
            .unwrap()
            .slots
            .get_mut("staging")
            .unwrap()
            .deployment = None;
        assert!(!pending.stands(&redeployed, "shop"));
        assert!(!pending.stands(&s, "other-site"));
        let p = Some(&pending);
        assert!(check(&s, p, &req("staging", "production", Action::Swap))
            .unwrap()
            .completes
            .is_some());
        assert!(check(&s, p, &req("staging", "production", Action::Reset)).is_ok());
        assert!(matches!(
            check(&s, p, &req("staging", "production", Action::Preview)),
            Err(ControlError::Conflict(_))
        ));
        assert!(matches!(
            check(&s, p, &req("empty", "staging", Action::Swap)),
            Err(ControlError::Conflict(_))
        ));
        // swapping into an empty slot is allowed
        assert!(check(&s, None, &req("staging", "empty", Action::Swap)).is_ok());
    }

    #[test]
    fn warmup_host_is_the_targets() {
        let s = state();
        let plan = check(&s, None, &req("staging", "production", Action::Swap)).unwrap();
        assert_eq!(plan.target_host(), "shop.test");
    }
}
