//! How a config file is applied to a running state: a three-way merge.
//!
//! `config.toml` seeds the state on first start; after that the state is the
//! truth, changed at run time by the API and by swaps. When the config is
//! applied again (restart, SIGHUP, `POST /api/v1/reload`), only what changed
//! *in the file* since it was last applied is taken from it: an unchanged file
//! changes nothing, so a reload never undoes a swap or an API change, and an
//! edited key wins over whatever the state had.

use crate::model::{Site, Slot, State};
use std::collections::BTreeMap;

/// `current` + (`new_seed` − `old_seed`).
pub fn apply_config(current: &State, old_seed: &State, new_seed: &State) -> State {
    let mut out = current.clone();
    let names: Vec<&String> = old_seed.sites.keys().chain(new_seed.sites.keys()).collect();
    for name in names {
        let old = old_seed.sites.get(name);
        let new = new_seed.sites.get(name);
        match (new, out.sites.get_mut(name)) {
            // removed from the file: remove it
            (None, Some(_)) => {
                out.sites.remove(name);
            }
            (None, None) => {}
            (Some(new), Some(cur)) => merge_site(cur, old, new),
            (Some(new), None) => {
                // deleted at run time and untouched in the file: stay deleted
                if old != Some(new) {
                    out.sites.insert(name.clone(), new.clone());
                }
            }
        }
    }
    out
}

/// Slots with an `auto_swap_target` whose deployment is new in `after`.
pub fn new_deployments(before: &State, after: &State) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for site in after.sites.values() {
        for slot in site.slots.values() {
            if slot.auto_swap_target.is_none() || slot.deployment.is_none() {
                continue;
            }
            let was = before
                .sites
                .get(&site.name)
                .and_then(|s| s.slots.get(&slot.name))
                .and_then(|s| s.deployment.as_ref());
            if was != slot.deployment.as_ref() {
                out.push((site.name.clone(), slot.name.clone()));
            }
        }
    }
    out
}

fn pick<T: Clone + PartialEq>(cur: &mut T, old: Option<&T>, new: &T) {
    if old != Some(new) {
        *cur = new.clone();
    }
}

fn merge_site(cur: &mut Site, old: Option<&Site>, new: &Site) {
    pick(
        &mut cur.hostnames,
        old.map(|o| &o.hostnames),
        &new.hostnames,
    );
    pick(
        &mut cur.slot_domain,
        old.map(|o| &o.slot_domain),
        &new.slot_domain,
    );
    pick(
        &mut cur.trusted_proxies,
        old.map(|o| &o.trusted_proxies),
        &new.trusted_proxies,
    );
    pick(
        &mut cur.assignment_key,
        old.map(|o| &o.assignment_key),
        &new.assignment_key,
    );
    let empty = BTreeMap::new();
    let old_slots = old.map_or(&empty, |o| &o.slots);
    let names: Vec<&String> = old_slots.keys().chain(new.slots.keys()).collect();
    for name in names {
        let old = old_slots.get(name);
        match (new.slots.get(name), cur.slots.get_mut(name)) {
            (None, Some(_)) => {
                cur.slots.remove(name);
            }
            (None, None) => {}
            (Some(new), Some(cur)) => merge_slot(cur, old, new),
            (Some(new), None) => {
                if old != Some(new) {
                    cur.slots.insert(name.clone(), new.clone());
                }
            }
        }
    }
}

fn merge_slot(cur: &mut Slot, old: Option<&Slot>, new: &Slot) {
    pick(
        &mut cur.hostnames,
        old.map(|o| &o.hostnames),
        &new.hostnames,
    );
    pick(
        &mut cur.traffic_percent,
        old.map(|o| &o.traffic_percent),
        &new.traffic_percent,
    );
    pick(
        &mut cur.auto_swap_target,
        old.map(|o| &o.auto_swap_target),
        &new.auto_swap_target,
    );
    pick(&mut cur.ip_allow, old.map(|o| &o.ip_allow), &new.ip_allow);
    pick(
        &mut cur.target_build_version,
        old.map(|o| &o.target_build_version),
        &new.target_build_version,
    );
    pick(
        &mut cur.sticky_settings,
        old.map(|o| &o.sticky_settings),
        &new.sticky_settings,
    );
    pick(&mut cur.matches, old.map(|o| &o.matches), &new.matches);
    pick(&mut cur.outlier, old.map(|o| &o.outlier), &new.outlier);
    pick(&mut cur.shadow, old.map(|o| &o.shadow), &new.shadow);
    // Content: the file deploying something new into this slot wins; an
    // unchanged file keeps whatever swaps and deploys put here.
    pick(&mut cur.settings, old.map(|o| &o.settings), &new.settings);
    pick(
        &mut cur.deployment,
        old.map(|o| &o.deployment),
        &new.deployment,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn seed(staging_percent: &str, prod_instance: &str) -> State {
        let cfg = format!(
            r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{prod_instance}"]
[[sites.slots]]
name = "staging"
{staging_percent}
build_version = "v2"
instances = ["127.0.0.1:2"]
"#
        );
        Config::parse(&cfg, Path::new("t")).unwrap().1
    }

    fn swapped(s: &State) -> State {
        let mut s = s.clone();
        let site = s.sites.get_mut("shop").unwrap();
        let p = site.slots["production"].deployment.clone();
        let st = site.slots["staging"].deployment.clone();
        site.slots.get_mut("production").unwrap().deployment = st;
        site.slots.get_mut("staging").unwrap().deployment = p;
        s
    }

    fn version(s: &State, slot: &str) -> String {
        s.sites["shop"].slots[slot]
            .deployment
            .as_ref()
            .unwrap()
            .build_version
            .clone()
    }

    #[test]
    fn unchanged_file_keeps_run_time_changes() {
        let seed = seed("traffic_percent = 10", "127.0.0.1:1");
        let cur = swapped(&seed);
        let merged = apply_config(&cur, &seed, &seed);
        assert_eq!(merged, cur);
        assert_eq!(version(&merged, "production"), "v2");
    }

    #[test]
    fn edited_keys_win_and_the_rest_stays() {
        let old = seed("traffic_percent = 10", "127.0.0.1:1");
        let new = seed("traffic_percent = 0", "127.0.0.1:1");
        let merged = apply_config(&swapped(&old), &old, &new);
        assert_eq!(
            merged.sites["shop"].slots["staging"].traffic_percent,
            Some(0.0)
        );
        assert_eq!(version(&merged, "production"), "v2", "swap kept");

        let removed = seed("", "127.0.0.1:1");
        let merged = apply_config(&old, &old, &removed);
        assert_eq!(merged.sites["shop"].slots["staging"].traffic_percent, None);

        let redeployed = seed("traffic_percent = 10", "127.0.0.1:9");
        let merged = apply_config(&swapped(&old), &old, &redeployed);
        assert_eq!(
            merged.sites["shop"].slots["production"]
                .deployment
                .as_ref()
                .unwrap()
                .instances,
            vec!["127.0.0.1:9"]
        );
    }

    #[test]
    fn new_deployments_of_auto_swap_slots() {
        let old = seed(
            "traffic_percent = 10\nauto_swap_target = \"production\"",
            "127.0.0.1:1",
        );
        assert!(new_deployments(&old, &old).is_empty());
        let mut new = old.clone();
        let staging = new
            .sites
            .get_mut("shop")
            .unwrap()
            .slots
            .get_mut("staging")
            .unwrap();
        staging.deployment.as_mut().unwrap().build_version = "v3".into();
        assert_eq!(
            new_deployments(&old, &new),
            vec![("shop".to_string(), "staging".to_string())]
        );
        // production has no auto_swap_target: its redeploys do not count
        let other = seed(
            "traffic_percent = 10\nauto_swap_target = \"production\"",
            "127.0.0.1:9",
        );
        assert!(new_deployments(&old, &other).is_empty());
    }

    #[test]
    fn run_time_slots_survive_and_file_removals_apply() {
        let old = seed("traffic_percent = 10", "127.0.0.1:1");
        let mut cur = old.clone();
        let site = cur.sites.get_mut("shop").unwrap();
        site.slots.insert("canary".into(), Slot::empty("canary"));
        let mut new = old.clone();
        new.sites.get_mut("shop").unwrap().slots.remove("staging");
        let merged = apply_config(&cur, &old, &new);
        let slots: Vec<_> = merged.sites["shop"].slots.keys().cloned().collect();
        assert_eq!(slots, vec!["canary", "production"]);
        // first start: everything comes from the file
        assert_eq!(
            apply_config(&State::default(), &State::default(), &old),
            old
        );
    }
}
