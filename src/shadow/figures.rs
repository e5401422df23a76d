//! What one shadow found on this node: the counts by result (the series of
//! `slotproxy_shadow_requests_total`, every result there at 0 from the
//! start), the latency ratio (`slotproxy_shadow_latency_ratio`) and the
//! last differing pairs, bounded. Figures are per node: in a fleet each
//! node copies and compares its own share of production's requests.

use crate::metrics::SHADOW_RESULTS;
use prometheus::{Histogram, IntCounter};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Differing pairs kept (the oldest goes first).
pub const LAST_DIFFERENCES: usize = 20;

/// One differing pair, as `GET …/shadow` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub at: String,
    pub method: String,
    pub path: String,
    /// `status_differs`, `headers_differ`, `body_differs` or `error`.
    pub result: String,
    pub production_status: u16,
    /// `null` when the slot did not answer.
    pub slot_status: Option<u16>,
    pub first_difference: String,
    pub production_ms: f64,
    /// `null` when the slot did not answer.
    pub slot_ms: Option<f64>,
}

/// The counts of one shadow as shown, with the share that matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FiguresView {
    #[serde(rename = "match")]
    pub matched: u64,
    pub status_differs: u64,
    pub headers_differ: u64,
    pub body_differs: u64,
    pub error: u64,
    pub dropped: u64,
    /// Answers compared or failed (every result but `dropped`).
    pub compared: u64,
    /// `match` / `compared`; `null` before the first.
    pub match_ratio: Option<f64>,
    /// Mean of slot time / production time over the answers compared.
    pub latency_ratio_mean: Option<f64>,
}

impl FiguresView {
    /// Answers that were not a match (differing or failed).
    pub fn differing(&self) -> u64 {
        self.compared - self.matched
    }
}

/// The live figures of one shadow.
pub struct Figures {
    site: String,
    slot: String,
    /// In `SHADOW_RESULTS` order.
    counters: [IntCounter; 6],
    ratio: Histogram,
    last: Mutex<VecDeque<Difference>>,
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Figures({}/{})", self.site, self.slot)
    }
}

impl Figures {
    /// Fresh figures of the shadow of `site`/`slot`: its series start at 0.
    pub fn new(site: &str, slot: &str) -> Figures {
        let (requests, ratio) = crate::metrics::shadow_vecs();
        for r in SHADOW_RESULTS {
            let _ = requests.remove_label_values(&[site, slot, r]);
        }
        let _ = ratio.remove_label_values(&[site, slot]);
        Figures {
            site: site.into(),
            slot: slot.into(),
            counters: SHADOW_RESULTS.map(|r| requests.with_label_values(&[site, slot, r])),
            ratio: ratio.with_label_values(&[site, slot]),
            last: Mutex::new(VecDeque::new()),
        }
    }

    /// The shadow stopped: its series go.
    pub fn remove_series(&self) {
        let (requests, ratio) = crate::metrics::shadow_vecs();
        for r in SHADOW_RESULTS {
            let _ = requests.remove_label_values(&[&self.site, &self.slot, r]);
        }
        let _ = ratio.remove_label_values(&[&self.site, &self.slot]);
    }

    /// Count one result (a `SHADOW_RESULTS` name).
    pub fn count(&self, result: &str) {
        if let Some(i) = SHADOW_RESULTS.iter().position(|&r| r == result) {
            self.counters[i].inc();
        }
    }

    /// One pair answered: slot time over production time.
    pub fn latency(&self, production_secs: f64, slot_secs: f64) {
        if production_secs > 0.0 {
            self.ratio.observe(slot_secs / production_secs);
        }
    }

    /// Keep a differing pair, the oldest making room.
    pub fn differs(&self, d: Difference) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() == LAST_DIFFERENCES {
            last.pop_front();
        }
        last.push_back(d);
    }

    /// The last differing pairs, newest first.
    pub fn last_differences(&self) -> Vec<Difference> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.iter().rev().cloned().collect()
    }

    pub fn view(&self) -> FiguresView {
        let c = |i: usize| self.counters[i].get();
        let compared = (0..5).map(c).sum::<u64>();
        let n = self.ratio.get_sample_count();
        FiguresView {
            matched: c(0),
            status_differs: c(1),
            headers_differ: c(2),
            body_differs: c(3),
            error: c(4),
            dropped: c(5),
            compared,
            match_ratio: (compared > 0).then(|| c(0) as f64 / compared as f64),
            latency_ratio_mean: (n > 0).then(|| self.ratio.get_sample_sum() / n as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ratios_and_a_bounded_newest_first_list() {
        let f = Figures::new("figures-test", "staging");
        f.count("match");
        f.count("match");
        f.count("body_differs");
        f.count("dropped");
        f.latency(0.1, 0.2);
        let v = f.view();
        assert_eq!(
            (v.matched, v.body_differs, v.dropped, v.compared),
            (2, 1, 1, 3)
        );
        assert_eq!(v.differing(), 1);
        assert!((v.match_ratio.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((v.latency_ratio_mean.unwrap() - 2.0).abs() < 1e-9);
        for i in 0..LAST_DIFFERENCES + 3 {
            f.differs(Difference {
                at: String::new(),
                method: "GET".into(),
                path: format!("/{i}"),
                result: "body_differs".into(),
                production_status: 200,
                slot_status: Some(200),
                first_difference: String::new(),
                production_ms: 1.0,
                slot_ms: Some(1.0),
            });
        }
        let last = f.last_differences();
        assert_eq!(last.len(), LAST_DIFFERENCES);
        assert_eq!(last[0].path, format!("/{}", LAST_DIFFERENCES + 2));
        // a new shadow of the same slot starts from 0
        let again = Figures::new("figures-test", "staging");
        assert_eq!(again.view(), FiguresView::default());
        again.remove_series();
    }
}
