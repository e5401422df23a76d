//! The run-time changes the admin API (and CLI) can make, as pure functions
//! on a `State`.
//!
//! Each function edits a copy handed to it by [`ControlPlane::update_at`]
//! (which then validates, persists and publishes), so they hold no locks, do
//! no I/O and are unit-tested here without sockets. They check what
//! `State::validate` cannot know — which site or slot the request names, and
//! what a request is not allowed to do — and leave the rest (ranges, sums,
//! address syntax) to that one validator, so config files and API calls obey
//! the same rules.
//!
//! The request bodies they take are the API's wire types ([`crate::api`]).
//!
//! [`ControlPlane::update_at`]: super::ControlPlane::update_at

use super::ControlError;
use crate::api::{AutoSwapConfig, CreateSlot, Deploy, SetSettings, TrafficRouting};
use crate::model::{Site, Slot, State, PRODUCTION};

/// What a deploy did, for the caller to act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployed {
    /// The slot's `auto_swap_target`, if it has one: the swap engine must
    /// swap the new deployment into that slot after warm-up (docs/guide/swaps.md).
    pub auto_swap_target: Option<String>,
}

pub fn site_mut<'a>(state: &'a mut State, site: &str) -> Result<&'a mut Site, ControlError> {
    state
        .sites
        .get_mut(site)
        .ok_or_else(|| ControlError::NotFound(format!("site {site:?} does not exist")))
}

pub fn slot_mut<'a>(
    state: &'a mut State,
    site: &str,
    slot: &str,
) -> Result<&'a mut Slot, ControlError> {
    site_mut(state, site)?
        .slots
        .get_mut(slot)
        .ok_or_else(|| ControlError::NotFound(format!("site {site:?} has no slot {slot:?}")))
}

fn invalid(key: String, reason: impl Into<String>) -> ControlError {
    ControlError::Invalid(vec![crate::model::Problem {
        key,
        reason: reason.into(),
    }])
}

/// Add slot `slot` to `site`: no deployment (it answers 503 until one is
/// deployed), no rule, settings copied from `clone_from` if given.
pub fn create_slot(
    state: &mut State,
    site: &str,
    slot: &str,
    req: &CreateSlot,
) -> Result<(), ControlError> {
    if let Err(e) = crate::model::check_name(slot) {
        return Err(invalid("slot".into(), e));
    }
    let s = site_mut(state, site)?;
    if s.slots.contains_key(slot) {
        return Err(ControlError::Conflict(format!(
            "site {site:?} already has a slot {slot:?}"
        )));
    }
    let mut new = Slot::empty(slot);
    if let Some(from) = &req.clone_from {
        let src = s.slots.get(from).ok_or_else(|| {
            ControlError::NotFound(format!(
                "clone_from: site {site:?} has no slot {from:?} to clone"
            ))
        })?;
        new.settings = src.settings.clone();
        new.sticky_settings = src.sticky_settings.clone();
    }
    check_policy(&req.matches, req.outlier.as_ref())?;
    new.matches = req.matches.clone();
    new.outlier = req.outlier;
    s.slots.insert(slot.to_string(), new);
    Ok(())
}

/// Remove a slot and with it its routing rule. Production cannot go, nor a
/// slot another slot auto-swaps into.
pub fn delete_slot(state: &mut State, site: &str, slot: &str) -> Result<(), ControlError> {
    if slot == PRODUCTION {
        return Err(ControlError::Conflict(
            "the production slot cannot be deleted".into(),
        ));
    }
    let s = site_mut(state, site)?;
    if !s.slots.contains_key(slot) {
        return Err(ControlError::NotFound(format!(
            "site {site:?} has no slot {slot:?}"
        )));
    }
    if let Some(other) = s
        .slots
        .values()
        .find(|o| o.auto_swap_target.as_deref() == Some(slot))
    {
        return Err(ControlError::Conflict(format!(
            "slot {:?} auto-swaps into {slot:?}; change its auto_swap_target first",
            other.name
        )));
    }
    s.slots.remove(slot);
    Ok(())
}

/// Replace what a slot runs.
pub fn deploy(
    state: &mut State,
    site: &str,
    slot: &str,
    req: &Deploy,
) -> Result<Deployed, ControlError> {
    let s = slot_mut(state, site, slot)?;
    let d = req.to_deployment();
    let problems = d.check_files(&crate::model::slot_key(site, slot));
    if !problems.is_empty() {
        return Err(ControlError::Invalid(problems));
    }
    s.deployment = Some(d);
    Ok(Deployed {
        auto_swap_target: s.auto_swap_target.clone(),
    })
}

/// Replace a slot's settings and/or sticky settings.
pub fn set_settings(
    state: &mut State,
    site: &str,
    slot: &str,
    req: &SetSettings,
) -> Result<(), ControlError> {
    if req.settings.is_none() && req.sticky_settings.is_none() {
        return Err(invalid(
            "(body)".into(),
            "give \"settings\", \"sticky_settings\" or both",
        ));
    }
    let s = slot_mut(state, site, slot)?;
    if let Some(m) = &req.settings {
        s.settings = m.clone();
    }
    if let Some(m) = &req.sticky_settings {
        s.sticky_settings = m.clone();
    }
    Ok(())
}

/// Turn auto swap of `slot` on (into `target`) or off. The target must
/// exist; `State::validate` refuses a slot swapping into itself.
pub fn set_auto_swap(
    state: &mut State,
    site: &str,
    slot: &str,
    req: &AutoSwapConfig,
) -> Result<(), ControlError> {
    if let Some(t) = &req.target_slot {
        if !site_mut(state, site)?.slots.contains_key(t) {
            return Err(ControlError::NotFound(format!(
                "site {site:?} has no slot {t:?} to auto-swap into"
            )));
        }
    }
    slot_mut(state, site, slot)?.auto_swap_target = req.target_slot.clone();
    Ok(())
}

/// Problems of a request body's `match` and `outlier`, named as in the body
/// (`match[1].all[0]`, `outlier.max_ejection_percent`).
fn check_policy(
    matches: &[crate::policy::MatchEntry],
    outlier: Option<&crate::policy::Outlier>,
) -> Result<(), ControlError> {
    let mut problems: Vec<crate::model::Problem> = crate::policy::check_matches("", matches)
        .into_iter()
        .chain(outlier.map(|o| o.check(".outlier")).unwrap_or_default())
        .map(|(key, reason)| crate::model::Problem {
            key: key.trim_start_matches('.').to_string(),
            reason,
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    problems.dedup();
    Err(ControlError::Invalid(problems))
}

/// Replace the request matches of a slot.
pub fn set_matches(
    state: &mut State,
    site: &str,
    slot: &str,
    req: &crate::api::SetMatches,
) -> Result<(), ControlError> {
    check_policy(&req.matches, None)?;
    slot_mut(state, site, slot)?.matches = req.matches.clone();
    Ok(())
}

/// Turn a slot's outlier ejection on with `outlier`, or off with `None`.
pub fn set_outlier(
    state: &mut State,
    site: &str,
    slot: &str,
    outlier: Option<crate::policy::Outlier>,
) -> Result<(), ControlError> {
    check_policy(&[], outlier.as_ref())?;
    slot_mut(state, site, slot)?.outlier = outlier;
    Ok(())
}

/// Start (`Some`) or stop (`None`) the shadow of a slot (SPEC §15).
pub fn set_shadow(
    state: &mut State,
    site: &str,
    slot: &str,
    shadow: Option<crate::shadow::ShadowSpec>,
) -> Result<(), ControlError> {
    if let Some(spec) = &shadow {
        if slot == crate::model::PRODUCTION {
            return Err(ControlError::Invalid(vec![crate::model::Problem {
                key: "slot".into(),
                reason: "production is what a shadow copies: start the shadow on the slot that \
                         should get the copies"
                    .into(),
            }]));
        }
        let problems: Vec<crate::model::Problem> = spec
            .check("")
            .into_iter()
            .map(|(key, reason)| crate::model::Problem {
                key: key.trim_start_matches('.').to_string(),
                reason,
            })
            .collect();
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems));
        }
    }
    slot_mut(state, site, slot)?.shadow = shadow;
    Ok(())
}

/// Replace every rule of `site`: slots named get that percentage (`0` is an
/// explicit rule: opt-in by link only), every other slot loses its rule.
pub fn set_traffic_routing(
    state: &mut State,
    site: &str,
    req: &TrafficRouting,
) -> Result<(), ControlError> {
    let s = site_mut(state, site)?;
    for name in req.distribution.keys() {
        let key = format!("distribution.{name}");
        if name == PRODUCTION {
            return Err(invalid(
                key,
                "production takes the rest of the traffic; list only the other slots",
            ));
        }
        if !s.slots.contains_key(name) {
            return Err(ControlError::NotFound(format!(
                "{key}: site {site:?} has no slot {name:?}"
            )));
        }
    }
    // Ranges and the sum are State::validate's job, as for the config file.
    for slot in s.slots.values_mut() {
        slot.traffic_percent = req.distribution.get(&slot.name).copied();
    }
    Ok(())
}

/// Remove every rule of `site`: all production-host traffic goes to
/// production, and no slot can be opted into by query parameter.
pub fn clear_traffic_routing(state: &mut State, site: &str) -> Result<(), ControlError> {
    for slot in site_mut(state, site)?.slots.values_mut() {
        slot.traffic_percent = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RoutingView;
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
DB = "prod-db"
[sites.slots.sticky_settings]
ENV = "production"
[[sites.slots]]
name = "staging"
traffic_percent = 10
build_version = "v2"
instances = ["127.0.0.1:2"]
"#;
        Config::parse(cfg, Path::new("t")).unwrap().1
    }

    fn site(s: &State) -> &Site {
        &s.sites["shop"]
    }

    /// Run `f` the way `ControlPlane::update_at` does: on a copy, kept only if
    /// it succeeds and validates.
    fn apply<T>(
        s: &State,
        f: impl FnOnce(&mut State) -> Result<T, ControlError>,
    ) -> Result<State, ControlError> {
        let mut copy = s.clone();
        f(&mut copy)?;
        let problems = copy.validate();
        if problems.is_empty() {
            Ok(copy)
        } else {
            Err(ControlError::Invalid(problems))
        }
    }

    #[test]
    fn create_clones_settings_but_not_content() {
        let req = CreateSlot {
            clone_from: Some("production".into()),
            ..Default::default()
        };
        let s = apply(&state(), |s| create_slot(s, "shop", "canary", &req)).unwrap();
        let canary = &site(&s).slots["canary"];
        assert_eq!(canary.settings["DB"], "prod-db");
        assert_eq!(canary.sticky_settings["ENV"], "production");
        assert_eq!(canary.deployment, None);
        assert_eq!(canary.traffic_percent, None);

        let plain = apply(&state(), |s| {
            create_slot(s, "shop", "canary", &CreateSlot::default())
        })
        .unwrap();
        assert!(site(&plain).slots["canary"].settings.is_empty());
    }

    #[test]
    fn create_refuses_duplicates_unknowns_and_bad_names() {
        let st = state();
        let e = apply(&st, |s| {
            create_slot(s, "shop", "staging", &CreateSlot::default())
        });
        assert!(matches!(e, Err(ControlError::Conflict(_))), "{e:?}");
        let e = apply(&st, |s| create_slot(s, "nope", "x", &CreateSlot::default()));
        assert!(matches!(e, Err(ControlError::NotFound(_))), "{e:?}");
        let req = CreateSlot {
            clone_from: Some("ghost".into()),
            ..Default::default()
        };
        let e = apply(&st, |s| create_slot(s, "shop", "x", &req));
        assert!(matches!(e, Err(ControlError::NotFound(_))), "{e:?}");
        for bad in ["Bad", "self", "", "a_b"] {
            let e = apply(&st, |s| create_slot(s, "shop", bad, &CreateSlot::default()));
            assert!(matches!(e, Err(ControlError::Invalid(_))), "{bad}: {e:?}");
        }
    }

    #[test]
    fn delete_removes_the_rule_but_never_production() {
        let s = apply(&state(), |s| delete_slot(s, "shop", "staging")).unwrap();
        assert!(!site(&s).slots.contains_key("staging"));
        assert!(RoutingView::of(site(&s)).distribution.is_empty());
        let e = apply(&state(), |s| delete_slot(s, "shop", "production"));
        assert!(matches!(e, Err(ControlError::Conflict(_))), "{e:?}");
        let e = apply(&state(), |s| delete_slot(s, "shop", "ghost"));
        assert!(matches!(e, Err(ControlError::NotFound(_))), "{e:?}");
    }

    #[test]
    fn delete_refuses_an_auto_swap_target() {
        let mut st = state();
        st.sites
            .get_mut("shop")
            .unwrap()
            .slots
            .insert("canary".into(), {
                let mut c = Slot::empty("canary");
                c.auto_swap_target = Some("staging".into());
                c
            });
        let e = apply(&st, |s| delete_slot(s, "shop", "staging"));
        assert!(matches!(e, Err(ControlError::Conflict(_))), "{e:?}");
    }

    fn deploy_req(instances: &[&str]) -> Deploy {
        Deploy {
            build_version: "v3".into(),
            instances: instances.iter().map(|s| s.to_string()).collect(),
            warmup_path: Some("/ready".into()),
            warmup_statuses: Some(vec![200]),
            warmup_timeout_secs: None,
            warmup_retries: Some(2),
            ..Deploy::default()
        }
    }

    #[test]
    fn deploy_replaces_content_and_reports_auto_swap() {
        let mut st = state();
        st.sites
            .get_mut("shop")
            .unwrap()
            .slots
            .get_mut("staging")
            .unwrap()
            .auto_swap_target = Some("production".into());
        let mut out = None;
        let s = apply(&st, |s| {
            out = Some(deploy(s, "shop", "staging", &deploy_req(&["127.0.0.1:7"]))?);
            Ok(())
        })
        .unwrap();
        let d = site(&s).slots["staging"].deployment.clone().unwrap();
        assert_eq!(d.build_version, "v3");
        assert_eq!(d.instances, vec!["127.0.0.1:7"]);
        assert_eq!(d.warmup.path, "/ready");
        assert_eq!(d.warmup.timeout_secs, 90, "default kept");
        assert_eq!(d.warmup.retries, 2);
        assert_eq!(out.unwrap().auto_swap_target.as_deref(), Some("production"));
    }

    #[test]
    fn deploy_is_validated() {
        let e = apply(&state(), |s| {
            deploy(s, "shop", "staging", &deploy_req(&["no-port"]))
        });
        match e {
            Err(ControlError::Invalid(p)) => {
                assert_eq!(p[0].key, "sites[shop].slots[staging].instances[0]")
            }
            other => panic!("{other:?}"),
        }
        let e = apply(&state(), |s| deploy(s, "shop", "staging", &deploy_req(&[])));
        assert!(matches!(e, Err(ControlError::Invalid(_))), "{e:?}");
        let e = apply(&state(), |s| {
            deploy(s, "shop", "ghost", &deploy_req(&["127.0.0.1:1"]))
        });
        assert!(matches!(e, Err(ControlError::NotFound(_))), "{e:?}");
    }

    #[test]
    fn settings_replace_only_what_is_given() {
        let req = SetSettings {
            settings: Some([("A".to_string(), "1".to_string())].into()),
            sticky_settings: None,
        };
        let s = apply(&state(), |s| set_settings(s, "shop", "production", &req)).unwrap();
        let p = &site(&s).slots["production"];
        assert_eq!(p.settings.len(), 1);
        assert_eq!(p.settings["A"], "1");
        assert_eq!(p.sticky_settings["ENV"], "production");
        let e = apply(&state(), |s| {
            set_settings(s, "shop", "production", &SetSettings::default())
        });
        assert!(matches!(e, Err(ControlError::Invalid(_))), "{e:?}");
    }

    fn routing(pairs: &[(&str, f64)]) -> TrafficRouting {
        TrafficRouting {
            distribution: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn traffic_routing_replaces_every_rule() {
        let mut st = state();
        create_slot(&mut st, "shop", "canary", &CreateSlot::default()).unwrap();
        let s = apply(&st, |s| {
            set_traffic_routing(s, "shop", &routing(&[("canary", 0.0)]))
        })
        .unwrap();
        let v = RoutingView::of(site(&s));
        assert_eq!(v.distribution, [("canary".to_string(), 0.0)].into());
        assert_eq!(v.production_percent, 100.0);
        assert_eq!(
            site(&s).slots["staging"].traffic_percent,
            None,
            "unlisted slot lost its rule"
        );
        assert_eq!(
            site(&s).slots["canary"].traffic_percent,
            Some(0.0),
            "0 is an explicit rule"
        );

        let s = apply(&s, |s| {
            set_traffic_routing(s, "shop", &routing(&[("staging", 30.0), ("canary", 70.0)]))
        })
        .unwrap();
        assert_eq!(RoutingView::of(site(&s)).production_percent, 0.0);
        let s = apply(&s, |s| clear_traffic_routing(s, "shop")).unwrap();
        assert!(site(&s).slots.values().all(|x| x.traffic_percent.is_none()));
    }

    #[test]
    fn traffic_routing_refuses_bad_distributions() {
        let st = state();
        let cases: &[(&[(&str, f64)], &str)] = &[
            (&[("ghost", 10.0)], "not found"),
            (&[("production", 10.0)], "invalid"),
            (&[("staging", 101.0)], "invalid"),
            (&[("staging", -1.0)], "invalid"),
            (&[("staging", f64::NAN)], "invalid"),
        ];
        for (pairs, want) in cases {
            let e = apply(&st, |s| set_traffic_routing(s, "shop", &routing(pairs)));
            let got = match e {
                Err(ControlError::NotFound(_)) => "not found",
                Err(ControlError::Invalid(_)) => "invalid",
                other => panic!("{pairs:?}: {other:?}"),
            };
            assert_eq!(got, *want, "{pairs:?}");
        }
        let mut st2 = st.clone();
        create_slot(&mut st2, "shop", "canary", &CreateSlot::default()).unwrap();
        let e = apply(&st2, |s| {
            set_traffic_routing(s, "shop", &routing(&[("staging", 60.0), ("canary", 41.0)]))
        });
        assert!(matches!(e, Err(ControlError::Invalid(_))), "{e:?}");
        let e = apply(&st, |s| clear_traffic_routing(s, "nope"));
        assert!(matches!(e, Err(ControlError::NotFound(_))), "{e:?}");
    }
}
