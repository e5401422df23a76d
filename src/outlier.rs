//! Passive outlier ejection (SPEC §16): each instance of a slot with
//! `[sites.slots.outlier]` counts its proxied requests' failures in a row —
//! 5xx answers, and failed connections (refused or timed out) — and is taken
//! out of the slot's pool when either streak reaches its threshold. The
//! n-th ejection lasts `base_ejection_secs` × n, at most
//! [`MAX_EJECTION_MULTIPLIER`] ×; the count starts again once an instance
//! has stayed in for that longest ejection. No more than
//! `max_ejection_percent` of a slot's instances are out at once, and never
//! all of them. When its time is up an instance returns on its next passing
//! active health check (`health`), not before.
//!
//! The state of one instance is a handful of atomics ([`InstanceOutlier`]),
//! kept by address in [`Outliers`] so that it outlives the routing tables:
//! every table published attaches the same state to the same address. The
//! request path only loads and adds (lock-free); an ejection or a return —
//! rare — takes one lock to keep the cap exact, sets the metrics, and hands
//! an [`Event`] to a bounded queue whose reader writes the activity log and
//! the access log (no I/O on the request path). State is per node: each
//! node of a fleet ejects by what it sees itself.

use crate::policy::{Outlier, MAX_EJECTION_MULTIPLIER};
use crate::routing::table::Pool;
use crate::routing::RouteTable;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Events waiting for the activity log before new ones are dropped.
const EVENT_QUEUE: usize = 1024;

/// What one proxied request told about its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A connection to it is up.
    Connected,
    /// A connection to it failed: refused, timed out, reset.
    ConnectFailed,
    /// It answered, below 500.
    Answered,
    /// It answered 5xx (or timed out / broke off after the connection).
    Failed5xx,
}

/// An ejection or a return, for the activity and access logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub site: String,
    pub slot: String,
    pub address: String,
    /// `true`: ejected; `false`: returned.
    pub ejected: bool,
    /// How many times it has been ejected (this one included).
    pub times: u32,
    /// Why, in one line.
    pub detail: String,
    /// When (RFC 3339), taken as it happened, not when it was logged.
    pub at: String,
}

/// The ejection state of one instance address.
#[derive(Debug)]
pub struct InstanceOutlier {
    address: Box<str>,
    fails_5xx: AtomicU32,
    fails_connect: AtomicU32,
    ejected: AtomicBool,
    /// Milliseconds (of [`now_ms`]) until which an ejection lasts.
    until_ms: AtomicU64,
    /// Ejections so far (in the current run of them, see [`next_times`]).
    times: AtomicU32,
    /// When it last returned (0: never ejected).
    returned_ms: AtomicU64,
    /// Where the ejection happened, for the return's metric and event.
    place: Mutex<(String, String)>,
    events: SyncSender<Event>,
}

/// Milliseconds since the process first asked (a monotonic clock).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // from 1, so 0 can mean "never"
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// May one more of `total` instances go out while `out` are out already?
/// Never the last one, and never past `max_percent` of them.
pub fn ejection_allowed(out: usize, total: usize, max_percent: u32) -> bool {
    out + 1 < total && (out + 1) * 100 <= max_percent as usize * total
}

/// The ejection count after one more ejection: it starts again after an
/// instance stayed in for the longest ejection there is.
pub fn next_times(times: u32, in_for: Option<Duration>, base: Duration) -> u32 {
    let longest = base * MAX_EJECTION_MULTIPLIER;
    match in_for {
        Some(d) if d >= longest => 1,
        _ => times.saturating_add(1),
    }
}

/// How long the `times`-th ejection lasts.
pub fn ejection_length(base: Duration, times: u32) -> Duration {
    base * times.clamp(1, MAX_EJECTION_MULTIPLIER)
}

impl InstanceOutlier {
    fn new(address: &str, events: SyncSender<Event>) -> Self {
        InstanceOutlier {
            address: address.into(),
            fails_5xx: AtomicU32::new(0),
            fails_connect: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            until_ms: AtomicU64::new(0),
            times: AtomicU32::new(0),
            returned_ms: AtomicU64::new(0),
            place: Mutex::new((String::new(), String::new())),
            events,
        }
    }

    /// Out of its pool now (until a passing health check after its time).
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Times ejected so far.
    pub fn times(&self) -> u32 {
        self.times.load(Ordering::Relaxed)
    }

    /// Count one outcome; `Some(why)` when a streak reached its threshold
    /// (the caller then tries [`eject`](Self::eject)). A success resets its
    /// streak; counters are written only when they change, so a healthy
    /// instance's requests only read them.
    pub fn observe(&self, outcome: Outcome, cfg: &Outlier) -> Option<String> {
        let bump = |c: &AtomicU32, limit: u32, what: &str| {
            let n = c.fetch_add(1, Ordering::Relaxed) + 1;
            (limit > 0 && n >= limit).then(|| format!("{n} {what} in a row"))
        };
        let reset = |c: &AtomicU32| {
            if c.load(Ordering::Relaxed) != 0 {
                c.store(0, Ordering::Relaxed);
            }
        };
        match outcome {
            Outcome::Connected => {
                reset(&self.fails_connect);
                None
            }
            Outcome::Answered => {
                reset(&self.fails_5xx);
                None
            }
            Outcome::ConnectFailed => bump(
                &self.fails_connect,
                cfg.consecutive_connect_errors,
                "failed connections",
            ),
            Outcome::Failed5xx => bump(&self.fails_5xx, cfg.consecutive_5xx, "5xx answers"),
        }
    }

    /// Take the instance out of `pool` (of slot `slot` of site `site`) if
    /// the cap allows; returns whether it did. Either way its streaks start
    /// again, so a capped instance is not re-judged on every request.
    pub fn eject(&self, site: &str, slot: &str, pool: &Pool, cfg: &Outlier, why: &str) -> bool {
        static DECIDING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = DECIDING.lock().unwrap_or_else(|p| p.into_inner());
        self.fails_5xx.store(0, Ordering::Relaxed);
        self.fails_connect.store(0, Ordering::Relaxed);
        if self.is_ejected() {
            return false;
        }
        let out = pool.instances.iter().filter(|i| i.ejected()).count();
        if !ejection_allowed(out, pool.instances.len(), cfg.max_ejection_percent) {
            log::info!(
                "instance {} of slot {slot} of site {site}: {why}, but max_ejection_percent {} keeps it in ({out} of {} out)",
                self.address,
                cfg.max_ejection_percent,
                pool.instances.len()
            );
            return false;
        }
        let now = now_ms();
        let base = Duration::from_secs(cfg.base_ejection_secs);
        let returned = self.returned_ms.load(Ordering::Relaxed);
        let in_for = (returned > 0).then(|| Duration::from_millis(now.saturating_sub(returned)));
        let times = next_times(self.times(), in_for, base);
        let length = ejection_length(base, times);
        self.times.store(times, Ordering::Relaxed);
        self.until_ms
            .store(now + length.as_millis() as u64, Ordering::Relaxed);
        self.ejected.store(true, Ordering::Relaxed);
        *self.place.lock().unwrap_or_else(|p| p.into_inner()) = (site.into(), slot.into());
        crate::metrics::instance_ejected(site, slot, &self.address, true);
        crate::metrics::ejection(site, slot);
        self.send(Event {
            site: site.into(),
            slot: slot.into(),
            address: self.address.to_string(),
            ejected: true,
            times,
            detail: format!(
                "{why}: ejected for {}s (ejection {times}; returns after a passing health check)",
                length.as_secs()
            ),
            at: crate::activity::now(),
        });
        true
    }

    /// Its ejection time is over (it may return on a passing check).
    pub fn time_is_up(&self, now: u64) -> bool {
        self.is_ejected() && now >= self.until_ms.load(Ordering::Relaxed)
    }

    /// Put it back in (its time was up and its health check passed).
    fn readmit(&self) {
        self.ejected.store(false, Ordering::Relaxed);
        self.returned_ms.store(now_ms(), Ordering::Relaxed);
        let (site, slot) = self.place.lock().unwrap_or_else(|p| p.into_inner()).clone();
        crate::metrics::instance_ejected(&site, &slot, &self.address, false);
        self.send(Event {
            site,
            slot,
            address: self.address.to_string(),
            ejected: false,
            times: self.times(),
            detail: "ejection time over and health check passed: back in the pool".into(),
            at: crate::activity::now(),
        });
    }

    fn send(&self, e: Event) {
        let what = if e.ejected { "ejected" } else { "returned" };
        log::warn!(
            "outlier: instance {} of slot {} of site {} {what}: {}",
            e.address,
            e.slot,
            e.site,
            e.detail
        );
        // a full queue loses the log entry, never delays the request
        let _ = self.events.try_send(e);
    }
}

/// The ejection state of every instance address a table has had, and the
/// queue of ejection events; one per control plane.
pub struct Outliers {
    by_address: Mutex<HashMap<String, Arc<InstanceOutlier>>>,
    tx: SyncSender<Event>,
    rx: Mutex<Option<Receiver<Event>>>,
}

impl Default for Outliers {
    fn default() -> Self {
        let (tx, rx) = sync_channel(EVENT_QUEUE);
        Outliers {
            by_address: Mutex::new(HashMap::new()),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Outliers {
    /// Give every instance of a slot with outlier ejection on its state
    /// (the same one as in the previous table for the same address); state
    /// of addresses no longer in the table is dropped.
    pub fn attach(&self, table: &mut RouteTable) {
        let mut map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = HashMap::with_capacity(map.len());
        for pool in table
            .sites
            .iter_mut()
            .flat_map(|s| s.slots.iter_mut())
            .filter_map(|s| s.pool.as_mut())
            .filter(|p| p.outlier.is_some())
        {
            for inst in &mut pool.instances {
                let label = inst.label.to_string();
                let state = map
                    .remove(&label)
                    .or_else(|| kept.get(&label).cloned())
                    .unwrap_or_else(|| Arc::new(InstanceOutlier::new(&label, self.tx.clone())));
                inst.outlier = Some(state.clone());
                kept.insert(label, state);
            }
        }
        *map = kept;
    }

    /// The event queue's reader (once).
    pub fn take_events(&self) -> Option<Receiver<Event>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Return the ejected instances of `table` whose time is up and whose
/// health check just passed (`passed`: the labels that passed this round).
pub fn readmit(table: &RouteTable, passed: &dyn Fn(&str) -> bool) {
    let now = now_ms();
    for inst in table
        .sites
        .iter()
        .flat_map(|s| s.slots.iter())
        .filter_map(|s| s.pool.as_ref())
        .flat_map(|p| p.instances.iter())
    {
        if let Some(o) = &inst.outlier {
            if o.time_is_up(now) && passed(&inst.label) {
                o.readmit();
            }
        }
    }
}

/// What a proxied request's end says of its instance: the status the
/// client got and whether it came from the instance (`None`: no verdict —
/// the client went away, or the proxy answered before any instance did).
pub fn outcome_of(status: Option<u16>, connected: bool) -> Option<Outcome> {
    let status = status?;
    if !connected {
        return None;
    }
    Some(if status >= 500 {
        Outcome::Failed5xx
    } else {
        Outcome::Answered
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::table::compile_toml;

    fn cfg() -> Outlier {
        Outlier {
            consecutive_5xx: 3,
            consecutive_connect_errors: 2,
            base_ejection_secs: 10,
            max_ejection_percent: 50,
        }
    }

    fn state() -> InstanceOutlier {
        InstanceOutlier::new("127.0.0.1:1", sync_channel(16).0)
    }

    #[test]
    fn streaks_reach_their_thresholds_and_successes_reset_them() {
        let o = state();
        let c = cfg();
        assert_eq!(o.observe(Outcome::Failed5xx, &c), None);
        assert_eq!(o.observe(Outcome::Failed5xx, &c), None);
        assert_eq!(o.observe(Outcome::Answered, &c), None);
        assert_eq!(o.observe(Outcome::Failed5xx, &c), None);
        assert_eq!(o.observe(Outcome::Failed5xx, &c), None);
        // a connect success does not reset the 5xx streak
        assert_eq!(o.observe(Outcome::Connected, &c), None);
        assert!(o.observe(Outcome::Failed5xx, &c).unwrap().contains("3 5xx"));
        assert_eq!(o.observe(Outcome::ConnectFailed, &c), None);
        assert_eq!(o.observe(Outcome::Connected, &c), None);
        assert_eq!(o.observe(Outcome::ConnectFailed, &c), None);
        assert!(o.observe(Outcome::ConnectFailed, &c).is_some());
        let off = Outlier {
            consecutive_5xx: 0,
            ..c
        };
        for _ in 0..10 {
            assert_eq!(o.observe(Outcome::Failed5xx, &off), None);
        }
    }

    #[test]
    fn the_cap_keeps_at_least_one_in() {
        assert!(ejection_allowed(0, 2, 50));
        assert!(!ejection_allowed(1, 2, 50));
        assert!(!ejection_allowed(0, 1, 100), "never the last one");
        assert!(ejection_allowed(2, 4, 100) && !ejection_allowed(3, 4, 100));
        assert!(!ejection_allowed(0, 3, 10), "10% of 3 is no instance");
        assert!(ejection_allowed(1, 4, 50) && !ejection_allowed(2, 4, 50));
    }

    #[test]
    fn ejections_grow_capped_and_start_again_after_a_long_stay() {
        let base = Duration::from_secs(30);
        assert_eq!(ejection_length(base, 1), base);
        assert_eq!(ejection_length(base, 2), base * 2);
        assert_eq!(ejection_length(base, 50), base * 10);
        assert_eq!(next_times(0, None, base), 1);
        assert_eq!(next_times(1, Some(Duration::from_secs(5)), base), 2);
        assert_eq!(next_times(4, Some(base * 10), base), 1);
    }

    #[test]
    fn outcomes_of_a_request() {
        assert_eq!(outcome_of(Some(503), true), Some(Outcome::Failed5xx));
        assert_eq!(outcome_of(Some(404), true), Some(Outcome::Answered));
        assert_eq!(outcome_of(Some(502), false), None, "the proxy's own 502");
        assert_eq!(outcome_of(None, true), None, "client gone");
    }

    const CFG: &str = r#"
[[sites]]
name = "shop"
hostnames = ["shop.example.com"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:3001", "127.0.0.1:3002"]
[sites.slots.outlier]
base_ejection_secs = 1
"#;

    #[test]
    fn ejection_survives_a_new_table_skips_the_pick_and_returns_on_a_check() {
        let outliers = Outliers::default();
        let mut t = compile_toml(CFG, &Default::default());
        outliers.attach(&mut t);
        let pool = t.sites[0].slots[0].pool.as_ref().unwrap();
        let first = pool.instances[0].outlier.as_ref().unwrap();
        assert!(first.eject("shop", "production", pool, &cfg(), "test"));
        assert!(!pool.instances[1].outlier.as_ref().unwrap().eject(
            "shop",
            "production",
            pool,
            &cfg(),
            "test"
        ));
        for _ in 0..4 {
            assert_eq!(pool.pick(0), Some(1));
        }
        // the other refused its connection: the ejected one is still tried
        assert_eq!(pool.pick(0b10), Some(0));

        let mut t2 = compile_toml(CFG, &Default::default());
        outliers.attach(&mut t2);
        let pool2 = t2.sites[0].slots[0].pool.as_ref().unwrap();
        assert!(pool2.instances[0].ejected(), "same address, same state");
        // the time is not up: a passing check does not bring it back
        readmit(&t2, &|_| true);
        assert!(pool2.instances[0].ejected());
        first.until_ms.store(0, Ordering::Relaxed);
        readmit(&t2, &|_| false);
        assert!(pool2.instances[0].ejected(), "its check must pass");
        readmit(&t2, &|_| true);
        assert!(!pool2.instances[0].ejected());
        assert_eq!(pool2.pick(0b10), Some(0));
        let e = outliers.take_events().unwrap();
        let events: Vec<Event> = e.try_iter().collect();
        assert_eq!(events.len(), 2);
        assert!(events[0].ejected && !events[1].ejected);
        assert_eq!(events[0].address, "127.0.0.1:3001");
    }
}
