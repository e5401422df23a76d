//! Live rates for the dashboard: requests and 5xx per second per slot, from
//! snapshots of the proxy's own per-slot counters
//! ([`metrics::slot_figures`](crate::metrics::slot_figures)), not from a
//! Prometheus scrape and not from a second set of counters.
//!
//! Snapshots are taken when someone asks (no timer runs while nobody looks),
//! at most one per [`MIN_GAP`] per site, and kept for about [`SPAN`]; a
//! rate is measured from the oldest snapshot kept to now, so it is an
//! average over the last ~10 s however often, or by how many browsers, the
//! page polls. Pure: time and figures are inputs, so it is tested without
//! a clock or a socket.

use crate::api::{LiveView, SlotLive};
use crate::metrics::SlotFigures;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Rates are averaged over about this long.
pub const SPAN: Duration = Duration::from_secs(10);
/// Snapshots closer together than this are not kept (it bounds how many a
/// site keeps to `SPAN / MIN_GAP + 1`), and a window shorter than this
/// gives no rate.
pub const MIN_GAP: Duration = Duration::from_millis(500);

/// One snapshot of a site's slots.
struct Sample {
    at: Instant,
    figures: BTreeMap<String, SlotFigures>,
}

/// Snapshots per site.
#[derive(Default)]
pub struct Sampler {
    sites: HashMap<String, VecDeque<Sample>>,
}

impl Sampler {
    /// Take `figures` (each slot of `site` that has counters, now) as seen at
    /// `now`, and answer the rates since the oldest snapshot kept. `slots`
    /// are the site's slots in the order to show them; a slot with no
    /// figures counts as having answered nothing.
    pub fn observe(
        &mut self,
        site: &str,
        slots: &[String],
        now: Instant,
        figures: BTreeMap<String, SlotFigures>,
    ) -> LiveView {
        let samples = self.sites.entry(site.to_string()).or_default();
        // Keep the newest snapshot older than SPAN as the base, drop the rest
        // of the old ones: after a pause in polling the next answer still
        // has a (longer) window instead of none.
        while samples.len() >= 2 && now.duration_since(samples[1].at) >= SPAN {
            samples.pop_front();
        }
        let base = samples
            .front()
            .filter(|b| now.duration_since(b.at) >= MIN_GAP);
        let window = base.map(|b| now.duration_since(b.at).as_secs_f64());
        let empty = SlotFigures::default();
        let view = LiveView {
            site: site.to_string(),
            window_secs: window,
            slots: slots
                .iter()
                .map(|name| {
                    let current = figures.get(name).unwrap_or(&empty);
                    let rates = base.zip(window).map(|(b, secs)| {
                        let w = current.since(b.figures.get(name).unwrap_or(&empty));
                        (w.responses as f64 / secs, w.errors_5xx as f64 / secs)
                    });
                    SlotLive {
                        slot: name.clone(),
                        requests_per_sec: rates.map(|r| r.0),
                        errors_5xx_per_sec: rates.map(|r| r.1),
                        responses_total: current.responses,
                        errors_5xx_total: current.errors_5xx,
                    }
                })
                .collect(),
        };
        let keep = samples
            .back()
            .is_none_or(|last| now.duration_since(last.at) >= MIN_GAP);
        if keep {
            samples.push_back(Sample { at: now, figures });
        }
        view
    }

    /// Forget sites that no longer exist.
    pub fn retain_sites(&mut self, exists: impl Fn(&str) -> bool) {
        self.sites.retain(|site, _| exists(site));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs(slots: &[(&str, u64, u64)]) -> BTreeMap<String, SlotFigures> {
        slots
            .iter()
            .map(|&(name, responses, errors_5xx)| {
                (
                    name.to_string(),
                    SlotFigures {
                        responses,
                        errors_5xx,
                        duration_buckets: Vec::new(),
                    },
                )
            })
            .collect()
    }

    fn names() -> Vec<String> {
        vec!["production".into(), "staging".into()]
    }

    fn rate(v: &LiveView, slot: &str) -> (Option<f64>, Option<f64>) {
        let s = v.slots.iter().find(|s| s.slot == slot).unwrap();
        (s.requests_per_sec, s.errors_5xx_per_sec)
    }

    #[test]
    fn first_call_has_no_rate_then_the_window_gives_one() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let v = s.observe("shop", &names(), t0, figs(&[("production", 100, 1)]));
        assert_eq!(v.window_secs, None);
        assert_eq!(rate(&v, "production"), (None, None));
        assert_eq!(v.slots[0].responses_total, 100);

        let v = s.observe(
            "shop",
            &names(),
            t0 + Duration::from_secs(2),
            figs(&[("production", 300, 5), ("staging", 40, 0)]),
        );
        assert_eq!(v.window_secs, Some(2.0));
        assert_eq!(rate(&v, "production"), (Some(100.0), Some(2.0)));
        // staging had no counters at the first snapshot: a window from zero
        assert_eq!(rate(&v, "staging"), (Some(20.0), Some(0.0)));
        assert_eq!(
            v.slots.iter().map(|s| s.slot.as_str()).collect::<Vec<_>>(),
            ["production", "staging"]
        );
    }

    #[test]
    fn the_window_slides_and_keeps_a_base_after_a_pause() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        for i in 0..=20 {
            s.observe("shop", &names(), at(i), figs(&[("production", i * 10, 0)]));
        }
        // polled every second: the base is ~SPAN old, not the first snapshot
        let v = s.observe("shop", &names(), at(21), figs(&[("production", 210, 0)]));
        let w = v.window_secs.unwrap();
        assert!((10.0..=11.0).contains(&w), "{w}");
        assert_eq!(rate(&v, "production").0, Some(10.0));
        assert!(s.sites["shop"].len() <= (SPAN.as_millis() / MIN_GAP.as_millis()) as usize + 2);
        // a minute without polling: still a rate, over the whole pause
        let v = s.observe("shop", &names(), at(81), figs(&[("production", 810, 0)]));
        assert_eq!(v.window_secs, Some(60.0));
        assert_eq!(rate(&v, "production").0, Some(10.0));
    }

    #[test]
    fn quick_polls_share_one_base_and_keep_few_snapshots() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        s.observe("shop", &names(), t0, figs(&[("production", 0, 0)]));
        for ms in 1..=200u64 {
            s.observe(
                "shop",
                &names(),
                t0 + Duration::from_millis(ms * 10),
                figs(&[("production", ms, 0)]),
            );
        }
        // 2 s of polls every 10 ms keep one snapshot per MIN_GAP
        assert!(s.sites["shop"].len() <= 5, "{}", s.sites["shop"].len());
        // too soon after the only snapshot: no rate yet
        let mut fresh = Sampler::default();
        fresh.observe("shop", &names(), t0, figs(&[]));
        let v = fresh.observe("shop", &names(), t0 + Duration::from_millis(100), figs(&[]));
        assert_eq!(v.window_secs, None);
    }

    #[test]
    fn a_recreated_slot_starts_over() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        s.observe("shop", &names(), t0, figs(&[("staging", 500, 0)]));
        let v = s.observe(
            "shop",
            &names(),
            t0 + Duration::from_secs(1),
            figs(&[("staging", 7, 0)]),
        );
        assert_eq!(rate(&v, "staging").0, Some(7.0));
        s.retain_sites(|site| site != "shop");
        assert!(s.sites.is_empty());
    }
}
