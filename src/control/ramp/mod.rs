//! Ramps in the control plane: starting and stopping one, and applying a
//! verdict — each a pure function on the persisted document, handed to
//! [`ControlPlane::update_doc`] so the rule and the ramp's state land in one
//! durable write (and, with a shared store, on every node). The rule moves
//! through the same validation as `traffic-routing set`.
//!
//! `runner` is the task that judges running ramps every interval.
//!
//! [`ControlPlane::update_doc`]: super::ControlPlane::update_doc

mod runner;

pub use runner::run;

use super::ops::slot_mut;
use super::ControlError;
use crate::model::{Problem, State, PRODUCTION};
use crate::ramp::{Judgement, Ramp, RampSpec, RampStatus, Verdict};
use crate::store::Persisted;
use std::collections::BTreeMap;

/// Ramps by site, then slot.
pub type Ramps = BTreeMap<String, BTreeMap<String, Ramp>>;

/// What the site's other rules leave for `slot`: 100 − their sum.
pub fn ceiling(state: &State, site: &str, slot: &str) -> f64 {
    let others: f64 = state
        .sites
        .get(site)
        .map(|s| {
            s.slots
                .values()
                .filter(|o| o.name != slot)
                .filter_map(|o| o.traffic_percent)
                .sum()
        })
        .unwrap_or(0.0);
    (100.0 - others).max(0.0)
}

/// Start (or replace) the ramp of `site`/`slot`: its rule is set to where
/// the ramp starts — the slot's current percent, at least `min_percent`
/// and at most `max_percent`. Returns the new ramp and the one it replaced.
pub fn start(
    doc: &mut Persisted,
    site: &str,
    slot: &str,
    spec: RampSpec,
    operation_id: &str,
    now: &str,
) -> Result<(Ramp, Option<Ramp>), ControlError> {
    let problems = spec.validate();
    if !problems.is_empty() {
        return Err(ControlError::Invalid(problems));
    }
    if slot == PRODUCTION {
        return Err(ControlError::Invalid(vec![Problem {
            key: "slot".into(),
            reason: "production takes the rest of the traffic; ramp another slot".into(),
        }]));
    }
    let ceiling = ceiling(&doc.state, site, slot);
    let s = slot_mut(&mut doc.state, site, slot)?;
    if s.deployment.is_none() {
        return Err(ControlError::Conflict(format!(
            "slot {slot:?} of site {site:?} has no deployment; deploy a build before ramping it"
        )));
    }
    let from = s
        .traffic_percent
        .unwrap_or(0.0)
        .clamp(spec.min_percent, spec.max_percent);
    if from > ceiling {
        return Err(ControlError::Conflict(format!(
            "the site's other rules leave {ceiling}% for {slot:?}, below the ramp's start at {from}%"
        )));
    }
    s.traffic_percent = Some(from);
    let status = if from >= spec.max_percent.min(ceiling) {
        RampStatus::Holding
    } else {
        RampStatus::Running
    };
    let ramp = Ramp {
        spec,
        status,
        operation_id: operation_id.to_string(),
        started_at: now.to_string(),
        updated_at: now.to_string(),
        last_verdict: None,
        repeats: 0,
    };
    let old = doc
        .ramps
        .entry(site.to_string())
        .or_default()
        .insert(slot.to_string(), ramp.clone());
    Ok((ramp, old))
}

/// Stop the ramp of `site`/`slot`, leaving the rule where it is. Returns
/// the ramp as it was before.
pub fn stop(doc: &mut Persisted, site: &str, slot: &str, now: &str) -> Result<Ramp, ControlError> {
    let ramp = doc
        .ramps
        .get_mut(site)
        .and_then(|r| r.get_mut(slot))
        .ok_or_else(|| {
            ControlError::NotFound(format!("slot {slot:?} of site {site:?} has no ramp"))
        })?;
    let before = ramp.clone();
    if ramp.status.is_active() {
        ramp.status = RampStatus::Stopped;
        ramp.updated_at = now.to_string();
    }
    Ok(before)
}

/// Apply one verdict of the ramp whose operation is `operation_id`: set the
/// rule and record the verdict. `false` (and nothing changed) if that ramp
/// is no longer running there (stopped, replaced or its slot deleted in
/// the meantime), or if the rule is no longer the one the verdict judged
/// (someone set it by hand meanwhile: the next interval judges from there).
pub fn apply(
    doc: &mut Persisted,
    site: &str,
    slot: &str,
    operation_id: &str,
    judgement: &Judgement,
    verdict: Verdict,
) -> Result<bool, ControlError> {
    let running = doc.ramps.get(site).and_then(|r| r.get(slot));
    if !running.is_some_and(|r| r.operation_id == operation_id && r.status.is_active()) {
        return Ok(false);
    }
    let rule = doc
        .state
        .sites
        .get(site)
        .and_then(|s| s.slots.get(slot))
        .and_then(|s| s.traffic_percent);
    if rule != Some(verdict.from_percent) {
        return Ok(false);
    }
    let Some(ramp) = doc.ramps.get_mut(site).and_then(|r| r.get_mut(slot)) else {
        return Ok(false);
    };
    let same = ramp
        .last_verdict
        .as_ref()
        .is_some_and(|v| v.result == verdict.result);
    ramp.repeats = if same { ramp.repeats + 1 } else { 1 };
    ramp.status = judgement.status;
    ramp.updated_at = verdict.at.clone();
    ramp.last_verdict = Some(verdict);
    let s = slot_mut(&mut doc.state, site, slot)?;
    s.traffic_percent = Some(judgement.percent);
    Ok(true)
}

/// End a ramp whose slot is gone or lost its rule. `false` if it was not
/// running.
pub fn end(doc: &mut Persisted, site: &str, slot: &str, operation_id: &str, now: &str) -> bool {
    match doc.ramps.get_mut(site).and_then(|r| r.get_mut(slot)) {
        Some(r) if r.operation_id == operation_id && r.status.is_active() => {
            r.status = RampStatus::Stopped;
            r.updated_at = now.to_string();
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ramp::{Figures, VerdictResult};
    use std::path::Path;

    fn doc(staging: &str) -> Persisted {
        let cfg = format!(
            r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:1"]
[[sites.slots]]
name = "staging"
{staging}
instances = ["127.0.0.1:2"]
[[sites.slots]]
name = "canary"
traffic_percent = 30
instances = ["127.0.0.1:3"]
[[sites.slots]]
name = "empty"
"#
        );
        Persisted {
            state: Config::parse(&cfg, Path::new("t")).unwrap().1,
            ..Persisted::default()
        }
    }

    fn spec(json: &str) -> RampSpec {
        serde_json::from_str(json).unwrap()
    }

    fn rule(d: &Persisted, slot: &str) -> Option<f64> {
        d.state.sites["shop"].slots[slot].traffic_percent
    }

    #[test]
    fn a_ramp_starts_from_the_current_percent_within_its_bounds() {
        let mut d = doc("");
        let (r, old) = start(
            &mut d,
            "shop",
            "staging",
            spec(r#"{"min_percent": 5}"#),
            "op-1",
            "t",
        )
        .unwrap();
        assert_eq!(
            (rule(&d, "staging"), r.status, old),
            (Some(5.0), RampStatus::Running, None)
        );
        let mut d = doc("traffic_percent = 20");
        start(
            &mut d,
            "shop",
            "staging",
            spec(r#"{"max_percent": 10}"#),
            "op-1",
            "t",
        )
        .unwrap();
        assert_eq!(rule(&d, "staging"), Some(10.0));
        assert_eq!(d.ramps["shop"]["staging"].status, RampStatus::Holding);
        assert!((ceiling(&d.state, "shop", "staging") - 70.0).abs() < 1e-9);
    }

    #[test]
    fn a_ramp_needs_a_deployed_slot_that_is_not_production() {
        let mut d = doc("");
        let e = start(&mut d, "shop", "production", spec("{}"), "op", "t");
        assert!(matches!(e, Err(ControlError::Invalid(_))), "{e:?}");
        let e = start(&mut d, "shop", "empty", spec("{}"), "op", "t");
        assert!(matches!(e, Err(ControlError::Conflict(_))), "{e:?}");
        let e = start(&mut d, "shop", "ghost", spec("{}"), "op", "t");
        assert!(matches!(e, Err(ControlError::NotFound(_))), "{e:?}");
        let e = start(
            &mut d,
            "shop",
            "staging",
            spec(r#"{"step": -1}"#),
            "op",
            "t",
        );
        assert!(matches!(e, Err(ControlError::Invalid(_))), "{e:?}");
        let e = start(
            &mut d,
            "shop",
            "staging",
            spec(r#"{"min_percent": 80}"#),
            "op",
            "t",
        );
        assert!(matches!(e, Err(ControlError::Conflict(_))), "{e:?}");
    }

    #[test]
    fn verdicts_apply_only_to_the_running_ramp_they_judged() {
        let mut d = doc("traffic_percent = 10");
        start(&mut d, "shop", "staging", spec("{}"), "op-1", "t0").unwrap();
        let j = Judgement {
            result: VerdictResult::Step,
            percent: 20.0,
            status: RampStatus::Running,
            detail: "10% → 20%".into(),
        };
        let v = Verdict {
            at: "t1".into(),
            result: j.result,
            from_percent: 10.0,
            to_percent: 20.0,
            figures: Figures::default(),
            detail: j.detail.clone(),
        };
        assert!(apply(&mut d, "shop", "staging", "op-1", &j, v.clone()).unwrap());
        assert_eq!(rule(&d, "staging"), Some(20.0));
        // a verdict judged on a rule that has changed since is dropped
        assert!(!apply(&mut d, "shop", "staging", "op-1", &j, v.clone()).unwrap());
        let v = Verdict {
            from_percent: 20.0,
            ..v
        };
        assert!(apply(&mut d, "shop", "staging", "op-1", &j, v.clone()).unwrap());
        assert_eq!(d.ramps["shop"]["staging"].repeats, 2);
        // another ramp's verdict, or one after a stop, changes nothing
        assert!(!apply(&mut d, "shop", "staging", "op-0", &j, v.clone()).unwrap());
        let before = stop(&mut d, "shop", "staging", "t2").unwrap();
        assert_eq!(before.status, RampStatus::Running);
        assert_eq!(d.ramps["shop"]["staging"].status, RampStatus::Stopped);
        let j30 = Judgement { percent: 30.0, ..j };
        assert!(!apply(&mut d, "shop", "staging", "op-1", &j30, v).unwrap());
        assert_eq!(
            rule(&d, "staging"),
            Some(20.0),
            "the rule stays where the ramp left it"
        );
        assert!(matches!(
            stop(&mut d, "shop", "canary", "t"),
            Err(ControlError::NotFound(_))
        ));
    }
}
