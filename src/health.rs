//! Active health checks: every instance in the published table is probed
//! with `GET <health.path>` each interval. An instance goes down after
//! `unhealthy_threshold` failures in a row and up again after
//! `healthy_threshold` successes; each flip publishes a new table through
//! the control plane, so routing (and stale-pin detection) follows at once.
//! An instance ejected by outlier ejection (`outlier`) whose time is up
//! returns on a round whose check it passes.

use crate::config::HealthSection;
use crate::control::ControlPlane;
use crate::instance_client::InstanceClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Consecutive results for one instance.
#[derive(Debug, Clone, Copy)]
pub struct Tracker {
    pub up: bool,
    streak: u32,
}

impl Default for Tracker {
    /// Unchecked instances count as up, so a fresh start serves at once.
    fn default() -> Self {
        Tracker {
            up: true,
            streak: 0,
        }
    }
}

impl Tracker {
    /// Record one probe; returns the new state when it flips.
    pub fn observe(&mut self, ok: bool, cfg: &HealthSection) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok {
            cfg.healthy_threshold
        } else {
            cfg.unhealthy_threshold
        };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Probe forever (until the runtime stops).
pub async fn run(control: Arc<ControlPlane>, cfg: HealthSection) {
    let client = match InstanceClient::new() {
        Ok(c) => c,
        Err(e) => {
            log::error!("health checks disabled: {e}");
            return;
        }
    };
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let table = control.table();
    let mut trackers: HashMap<String, Tracker> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let instances = table.load().probes();
        // `probes` is sorted by label
        trackers.retain(|l, _| {
            instances
                .binary_search_by(|(i, _)| i.as_str().cmp(l))
                .is_ok()
        });
        let mut probes = tokio::task::JoinSet::new();
        for (label, how) in instances {
            let client = client.clone();
            let path = cfg.path.clone();
            probes.spawn(async move {
                let ok = client.probe(&label, &path, &how, timeout).await;
                (label, ok)
            });
        }
        let mut passed = std::collections::HashSet::new();
        while let Some(Ok((label, ok))) = probes.join_next().await {
            let tracker = trackers.entry(label.clone()).or_default();
            if let Some(up) = tracker.observe(ok, &cfg) {
                log::info!("instance {label} is {}", if up { "up" } else { "down" });
            }
            if ok && tracker.up {
                passed.insert(label);
            }
        }
        crate::outlier::readmit(&table.load(), &|l| passed.contains(l));
        // Hand over the whole view, not just this tick's flips: the control
        // plane publishes only what differs from its own, and an instance
        // that left and came back is set right on the next tick.
        let view: Vec<(String, bool)> = trackers.iter().map(|(l, t)| (l.clone(), t.up)).collect();
        let labels: Vec<String> = trackers.keys().cloned().collect();
        let renamed = crate::names::refresh(&labels).await;
        let control = control.clone();
        // publishing compiles a table: off the runtime's worker
        let _ = tokio::task::spawn_blocking(move || {
            control.set_health(&view);
            if renamed {
                control.republish();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let cfg = HealthSection {
            unhealthy_threshold: 2,
            healthy_threshold: 2,
            ..Default::default()
        };
        let mut t = Tracker::default();
        assert_eq!(t.observe(false, &cfg), None);
        assert_eq!(t.observe(true, &cfg), None, "a success resets the streak");
        assert_eq!(t.observe(false, &cfg), None);
        assert_eq!(t.observe(false, &cfg), Some(false));
        assert_eq!(t.observe(false, &cfg), None);
        assert_eq!(t.observe(true, &cfg), None);
        assert_eq!(t.observe(true, &cfg), Some(true));
        assert!(t.up);
    }
}
