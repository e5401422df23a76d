//! Ramps (docs/guide/ramps.md): Azure's RampUpRule — raise a slot's share step by
//! step — plus gates judged from the proxy's own per-slot counters, with
//! rollback on a breach.
//!
//! This file is plain data and pure decisions: the ramp as the API takes it
//! ([`RampSpec`]) and as the control plane persists it ([`Ramp`]), and
//! [`judge`] / [`with_callback`], which turn one interval's figures into a
//! verdict and the next percent. The task that runs ramps every interval is
//! `control::ramp`; nothing here does I/O.

use crate::metrics::Window;
use crate::model::Problem;
use serde::{Deserialize, Serialize};

/// Shortest interval accepted. Sub-second intervals exist for tests and
/// demos; a real ramp judges minutes of traffic.
pub const MIN_INTERVAL_SECS: f64 = 0.1;
/// Longest interval accepted (a day).
pub const MAX_INTERVAL_SECS: f64 = 86_400.0;
/// Longest wait for a decision callback; shorter when the interval is.
pub const CALLBACK_TIMEOUT_SECS: f64 = 10.0;

/// `PUT /api/v1/sites/{site}/slots/{slot}/ramp`: what to ramp and how to
/// judge it. Keys left out take the defaults below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampSpec {
    /// Percentage points added per interval (default 10).
    #[serde(default = "default_step")]
    pub step: f64,
    /// Seconds between verdicts (default 60; fractions allowed, at least 0.1).
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    /// Where the ramp starts at the least, and where a rollback puts the
    /// rule (default 0).
    #[serde(default)]
    pub min_percent: f64,
    /// Where it stops rising and holds (default 100).
    #[serde(default = "default_max")]
    pub max_percent: f64,
    #[serde(default)]
    pub gates: Gates,
    /// Receives the figures every interval and may answer `{"percent": N}`
    /// (Azure's ChangeDecisionCallbackUrl). No answer in time is a breach.
    #[serde(default)]
    pub decision_callback_url: Option<String>,
    #[serde(default)]
    pub on_breach: OnBreach,
}

/// What a slot must show over each interval to go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Highest share of 5xx responses (0–1; default 0.02; `null`: not judged).
    #[serde(default = "default_error_ratio")]
    pub max_error_ratio: Option<f64>,
    /// Highest p99 of the slot's request duration, ms (default: not judged).
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    /// Fewer responses than this in an interval: no verdict, wait (default 100).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Highest share of the slot's shadow answers that differ from
    /// production's (or fail) over the interval, 0–1 (SPEC §15; default:
    /// not judged). Above it, or with no shadow answer compared, the ramp
    /// does not step (a wait, not a breach); judged before anything else,
    /// the first step from 0% included. This node's shadow figures only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shadow_diff_ratio: Option<f64>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            max_error_ratio: default_error_ratio(),
            max_p99_ms: None,
            min_requests: default_min_requests(),
            max_shadow_diff_ratio: None,
        }
    }
}

fn default_step() -> f64 {
    10.0
}
fn default_interval() -> f64 {
    60.0
}
fn default_max() -> f64 {
    100.0
}
fn default_error_ratio() -> Option<f64> {
    Some(0.02)
}
fn default_min_requests() -> u64 {
    100
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBreach {
    /// Set the rule to `min_percent` and stop.
    #[default]
    Rollback,
    /// Keep the rule where it is and stop stepping.
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampStatus {
    /// Stepping up every interval.
    Running,
    /// At `max_percent`; still judged every interval.
    Holding,
    /// A breach with `on_breach = "pause"`: the rule stays, no more steps.
    Paused,
    /// A breach put the rule back to `min_percent`.
    RolledBack,
    /// Stopped by `DELETE` (the rule stays where the ramp left it).
    Stopped,
}

impl RampStatus {
    /// Still judged every interval.
    pub fn is_active(self) -> bool {
        matches!(self, RampStatus::Running | RampStatus::Holding)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RampStatus::Running => "running",
            RampStatus::Holding => "holding",
            RampStatus::Paused => "paused",
            RampStatus::RolledBack => "rolled_back",
            RampStatus::Stopped => "stopped",
        }
    }
}

/// The `result` of a verdict (and the label of `slotproxy_ramp_verdicts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictResult {
    /// Gates passed: one step up.
    Step,
    /// Gates passed at `max_percent`: stay.
    Hold,
    /// Fewer than `min_requests` responses: no verdict yet.
    Wait,
    /// A gate failed (or the callback did not answer): rollback or pause.
    Breach,
    /// Gates passed and the decision callback chose the percent.
    Callback,
}

impl VerdictResult {
    pub const ALL: [VerdictResult; 5] = [
        Self::Step,
        Self::Hold,
        Self::Wait,
        Self::Breach,
        Self::Callback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::Hold => "hold",
            Self::Wait => "wait",
            Self::Breach => "breach",
            Self::Callback => "callback",
        }
    }
}

/// One interval's judgement, as persisted and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub at: String,
    pub result: VerdictResult,
    /// The rule before and after this verdict.
    pub from_percent: f64,
    pub to_percent: f64,
    #[serde(flatten)]
    pub figures: Figures,
    pub detail: String,
}

/// What the slot answered over one interval, from its own counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub responses: u64,
    pub errors_5xx: u64,
    pub error_ratio: f64,
    /// `null` with no responses.
    pub p99_ms: Option<f64>,
    /// The slot's shadow answers compared over the interval (this node's),
    /// and how many of them differed or failed; absent without a shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_compared: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_differing: Option<u64>,
}

impl Figures {
    /// Differing shadow answers over compared ones; `None` with none.
    pub fn shadow_diff_ratio(&self) -> Option<f64> {
        match (self.shadow_compared, self.shadow_differing) {
            (Some(n), Some(d)) if n > 0 => Some(d as f64 / n as f64),
            _ => None,
        }
    }
}

impl Figures {
    pub fn of(w: &Window) -> Figures {
        Figures {
            responses: w.responses,
            errors_5xx: w.errors_5xx,
            error_ratio: w.error_ratio(),
            p99_ms: w.quantile_secs(0.99).map(|s| s * 1000.0),
            shadow_compared: None,
            shadow_differing: None,
        }
    }
}

/// A ramp as the control plane persists it (per site and slot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ramp {
    pub spec: RampSpec,
    pub status: RampStatus,
    /// Its activity-log operation (action `ramp`).
    pub operation_id: String,
    pub started_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub last_verdict: Option<Verdict>,
    /// How many verdicts in a row had `last_verdict`'s result (waits and
    /// holds repeat; the activity log keeps one entry for a run of them).
    #[serde(default)]
    pub repeats: u32,
}

/// The body POSTed to `decision_callback_url` every interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackRequest {
    pub site: String,
    pub slot: String,
    /// The rule now.
    pub percent: f64,
    /// What the gates alone would do next.
    pub proposed_percent: f64,
    pub min_percent: f64,
    pub max_percent: f64,
    pub interval_secs: f64,
    #[serde(flatten)]
    pub figures: Figures,
}

/// What a decision callback may answer; `{}` (or no `percent`) keeps the
/// gates' proposal. Other keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallbackAnswer {
    #[serde(default)]
    pub percent: Option<f64>,
}

impl RampSpec {
    /// Everything wrong with it, keys named as in the request body.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, reason: String| {
            out.push(Problem {
                key: key.into(),
                reason,
            })
        };
        let pct = |v: f64| v.is_finite() && (0.0..=100.0).contains(&v);
        if !(self.step.is_finite() && self.step > 0.0 && self.step <= 100.0) {
            bad("step", format!("{} is out of range (0-100]", self.step));
        }
        if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&self.interval_secs) {
            bad(
                "interval_secs",
                format!(
                    "{} is out of range {MIN_INTERVAL_SECS}-{MAX_INTERVAL_SECS}",
                    self.interval_secs
                ),
            );
        }
        if !pct(self.min_percent) {
            bad(
                "min_percent",
                format!("{} is out of range 0-100", self.min_percent),
            );
        }
        if !pct(self.max_percent) {
            bad(
                "max_percent",
                format!("{} is out of range 0-100", self.max_percent),
            );
        } else if self.max_percent < self.min_percent {
            bad(
                "max_percent",
                format!(
                    "{} is below min_percent {}",
                    self.max_percent, self.min_percent
                ),
            );
        }
        if let Some(r) = self.gates.max_error_ratio {
            if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
                bad(
                    "gates.max_error_ratio",
                    format!("{r} is out of range 0-1 (0.02 = 2%)"),
                );
            }
        }
        if let Some(r) = self.gates.max_shadow_diff_ratio {
            if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
                bad(
                    "gates.max_shadow_diff_ratio",
                    format!("{r} is out of range 0-1 (0.01 = 1% of shadow answers differ)"),
                );
            }
        }
        if let Some(ms) = self.gates.max_p99_ms {
            if !(ms.is_finite() && ms > 0.0) {
                bad("gates.max_p99_ms", format!("{ms} must be above 0"));
            }
        }
        if let Some(url) = &self.decision_callback_url {
            if reqwest::Url::parse(url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                bad(
                    "decision_callback_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                );
            }
        }
        out
    }

    /// How long to wait for the decision callback.
    pub fn callback_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_secs.min(CALLBACK_TIMEOUT_SECS))
    }
}

/// What one interval decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub result: VerdictResult,
    /// The rule from now on.
    pub percent: f64,
    pub status: RampStatus,
    pub detail: String,
}

/// Percentages are kept to basis points, as routing uses them.
fn bp(p: f64) -> f64 {
    (p * 100.0).round() / 100.0
}

/// The highest percent the ramp may set: its `max_percent`, or less when
/// the site's other rules leave less (`ceiling` = 100 − their sum).
fn top(spec: &RampSpec, ceiling: f64) -> f64 {
    bp(spec.max_percent.min(ceiling).max(0.0))
}

fn status_at(spec: &RampSpec, ceiling: f64, percent: f64) -> RampStatus {
    if percent >= top(spec, ceiling) {
        RampStatus::Holding
    } else {
        RampStatus::Running
    }
}

fn describe(f: &Figures) -> String {
    let p99 = f.p99_ms.map_or("-".to_string(), |ms| format!("{ms:.0} ms"));
    format!(
        "{} responses, {} 5xx ({:.1}%), p99 {p99}",
        f.responses,
        f.errors_5xx,
        f.error_ratio * 100.0
    )
}

/// Judge one interval of a ramp whose slot is at `percent`, by the slot's
/// `figures` over that interval. `ceiling` is what the site's other rules
/// leave (100 − their sum). Pure.
pub fn judge(spec: &RampSpec, percent: f64, ceiling: f64, figures: &Figures) -> Judgement {
    let top = top(spec, ceiling);
    let up = |detail: String| {
        let next = bp((percent + spec.step).min(top));
        Judgement {
            result: VerdictResult::Step,
            percent: next,
            status: status_at(spec, ceiling, next),
            detail: format!("{percent}% → {next}%: {detail}"),
        }
    };
    if let Some(max) = spec.gates.max_shadow_diff_ratio {
        let wait = |detail: String| Judgement {
            result: VerdictResult::Wait,
            percent,
            status: status_at(spec, ceiling, percent),
            detail,
        };
        match figures.shadow_diff_ratio() {
            None => {
                return wait(format!(
                    "waiting at {percent}%: no shadow answer compared this interval \
                     (gate max_shadow_diff_ratio needs the slot's shadow on)"
                ))
            }
            Some(r) if r > max => {
                return wait(format!(
                    "waiting at {percent}%: shadow answers differ {:.1}% > {:.1}% ({} of {})",
                    r * 100.0,
                    max * 100.0,
                    figures.shadow_differing.unwrap_or(0),
                    figures.shadow_compared.unwrap_or(0)
                ))
            }
            Some(_) => {}
        }
    }
    if percent <= 0.0 && top > 0.0 {
        return up(match figures.shadow_diff_ratio() {
            Some(r) if spec.gates.max_shadow_diff_ratio.is_some() => format!(
                "shadow answers differ {:.1}%; a step from 0% needs no other verdict",
                r * 100.0
            ),
            _ => "a step from 0% needs no verdict".into(),
        });
    }
    let seen = describe(figures);
    if figures.responses < spec.gates.min_requests {
        return Judgement {
            result: VerdictResult::Wait,
            percent,
            status: status_at(spec, ceiling, percent),
            detail: format!(
                "waiting at {percent}%: {seen}; {} needed for a verdict",
                spec.gates.min_requests
            ),
        };
    }
    let mut breaches = Vec::new();
    if let Some(max) = spec.gates.max_error_ratio {
        if figures.error_ratio > max {
            breaches.push(format!(
                "5xx {:.1}% > {:.1}%",
                figures.error_ratio * 100.0,
                max * 100.0
            ));
        }
    }
    if let (Some(max), Some(p99)) = (spec.gates.max_p99_ms, figures.p99_ms) {
        if p99 > max {
            breaches.push(format!("p99 {p99:.0} ms > {max} ms"));
        }
    }
    if !breaches.is_empty() {
        return breach(spec, percent, &format!("{}; {seen}", breaches.join(", ")));
    }
    if percent < top {
        up(seen)
    } else {
        Judgement {
            result: VerdictResult::Hold,
            percent,
            status: RampStatus::Holding,
            detail: format!("holding at {percent}%: {seen}"),
        }
    }
}

/// The breach verdict: back to `min_percent`, or pause where it is.
fn breach(spec: &RampSpec, percent: f64, why: &str) -> Judgement {
    match spec.on_breach {
        OnBreach::Rollback => Judgement {
            result: VerdictResult::Breach,
            percent: bp(spec.min_percent),
            status: RampStatus::RolledBack,
            detail: format!("rolled back {percent}% → {}%: {why}", spec.min_percent),
        },
        OnBreach::Pause => Judgement {
            result: VerdictResult::Breach,
            percent,
            status: RampStatus::Paused,
            detail: format!("paused at {percent}%: {why}"),
        },
    }
}

/// Whether the decision callback is asked about `proposal`: only when the
/// gates passed (a breach or a wait stands on its own) and there was
/// something to judge (not the first step from 0%).
pub fn asks_callback(spec: &RampSpec, percent: f64, proposal: &Judgement) -> bool {
    spec.decision_callback_url.is_some()
        && percent > 0.0
        && matches!(proposal.result, VerdictResult::Step | VerdictResult::Hold)
}

/// Combine the gates' `proposal` with the decision callback's `answer`
/// (an error: it did not answer in time, or not with JSON): an error is a
/// breach; a `percent` replaces the proposal, kept within
/// `min_percent`..`max_percent` (and the ceiling); no `percent` keeps it.
pub fn with_callback(
    spec: &RampSpec,
    percent: f64,
    ceiling: f64,
    proposal: Judgement,
    answer: Result<CallbackAnswer, String>,
) -> Judgement {
    match answer {
        Err(e) => breach(spec, percent, &format!("decision callback: {e}")),
        Ok(CallbackAnswer { percent: None }) => Judgement {
            detail: format!("{} (callback: no change)", proposal.detail),
            ..proposal
        },
        Ok(CallbackAnswer { percent: Some(n) }) if !n.is_finite() => {
            breach(spec, percent, &format!("decision callback answered {n}"))
        }
        Ok(CallbackAnswer { percent: Some(n) }) => {
            let next = bp(n.clamp(spec.min_percent, top(spec, ceiling).max(spec.min_percent)));
            Judgement {
                result: VerdictResult::Callback,
                percent: next,
                status: status_at(spec, ceiling, next),
                detail: format!("{percent}% → {next}%: decision callback answered {n}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RampSpec {
        serde_json::from_str(
            r#"{"step": 10, "interval_secs": 60, "min_percent": 0, "max_percent": 50,
                "gates": {"max_error_ratio": 0.02, "max_p99_ms": 500, "min_requests": 200}}"#,
        )
        .unwrap()
    }

    fn fig(responses: u64, errors: u64, p99_ms: f64) -> Figures {
        Figures {
            responses,
            errors_5xx: errors,
            error_ratio: errors as f64 / responses.max(1) as f64,
            p99_ms: (responses > 0).then_some(p99_ms),
            ..Figures::default()
        }
    }

    #[test]
    fn the_shadow_gate_holds_the_ramp_until_the_shadow_matches() {
        let mut s = spec();
        s.gates.max_shadow_diff_ratio = Some(0.01);
        assert!(s.validate().is_empty());
        let shadow = |compared, differing| Figures {
            shadow_compared: Some(compared),
            shadow_differing: Some(differing),
            ..fig(0, 0, 0.0)
        };
        // at 0%: differing answers (or none compared) keep it there
        for f in [fig(0, 0, 0.0), shadow(0, 0), shadow(100, 5)] {
            let j = judge(&s, 0.0, 100.0, &f);
            assert_eq!((j.result, j.percent), (VerdictResult::Wait, 0.0), "{j:?}");
        }
        assert!(judge(&s, 0.0, 100.0, &shadow(100, 5))
            .detail
            .contains("5.0% > 1.0%"));
        let j = judge(&s, 0.0, 100.0, &shadow(100, 1));
        assert_eq!((j.result, j.percent), (VerdictResult::Step, 10.0), "{j:?}");
        // later steps need the other gates too
        let mut f = fig(400, 0, 10.0);
        f.shadow_compared = Some(50);
        f.shadow_differing = Some(0);
        assert_eq!(judge(&s, 10.0, 100.0, &f).percent, 20.0);
        s.gates.max_shadow_diff_ratio = Some(1.5);
        assert_eq!(s.validate()[0].key, "gates.max_shadow_diff_ratio");
    }

    #[test]
    fn defaults_and_strict_keys() {
        let s: RampSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(
            (s.step, s.interval_secs, s.min_percent, s.max_percent),
            (10.0, 60.0, 0.0, 100.0)
        );
        assert_eq!(s.gates, Gates::default());
        assert_eq!(s.on_breach, OnBreach::Rollback);
        assert!(serde_json::from_str::<RampSpec>(r#"{"stepp": 1}"#).is_err());
        assert!(serde_json::from_str::<RampSpec>(r#"{"gates": {"p99": 1}}"#).is_err());
        let s: RampSpec = serde_json::from_str(r#"{"gates": {"max_error_ratio": null}}"#).unwrap();
        assert_eq!(s.gates.max_error_ratio, None);
        assert_eq!(spec().validate(), vec![]);
    }

    #[test]
    fn validation_names_every_bad_key() {
        let s: RampSpec = serde_json::from_str(
            r#"{"step": 0, "interval_secs": 0.01, "min_percent": 60, "max_percent": 50,
                "gates": {"max_error_ratio": 2, "max_p99_ms": -1},
                "decision_callback_url": "ftp://x"}"#,
        )
        .unwrap();
        let keys: Vec<String> = s.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "step",
                "interval_secs",
                "max_percent",
                "gates.max_error_ratio",
                "gates.max_p99_ms",
                "decision_callback_url"
            ]
        );
    }

    #[test]
    fn steps_up_while_the_gates_pass_then_holds() {
        let s = spec();
        let j = judge(&s, 0.0, 100.0, &Figures::default());
        assert_eq!(
            (j.result, j.percent, j.status),
            (VerdictResult::Step, 10.0, RampStatus::Running)
        );
        let j = judge(&s, 10.0, 100.0, &fig(400, 2, 120.0));
        assert_eq!((j.result, j.percent), (VerdictResult::Step, 20.0));
        let j = judge(&s, 45.0, 100.0, &fig(400, 0, 120.0));
        assert_eq!(
            (j.result, j.percent, j.status),
            (VerdictResult::Step, 50.0, RampStatus::Holding)
        );
        let j = judge(&s, 50.0, 100.0, &fig(400, 0, 120.0));
        assert_eq!(
            (j.result, j.percent, j.status),
            (VerdictResult::Hold, 50.0, RampStatus::Holding)
        );
        // other rules leave only 35%: that is the top
        let j = judge(&s, 30.0, 35.0, &fig(400, 0, 1.0));
        assert_eq!((j.percent, j.status), (35.0, RampStatus::Holding));
    }

    #[test]
    fn too_few_requests_wait_and_say_so() {
        let j = judge(&spec(), 20.0, 100.0, &fig(199, 199, 9000.0));
        assert_eq!(
            (j.result, j.percent, j.status),
            (VerdictResult::Wait, 20.0, RampStatus::Running)
        );
        assert!(
            j.detail.contains("199 responses") && j.detail.contains("200 needed"),
            "{}",
            j.detail
        );
    }

    #[test]
    fn a_breach_rolls_back_or_pauses() {
        let s = spec();
        let j = judge(&s, 30.0, 100.0, &fig(200, 5, 100.0));
        assert_eq!(
            (j.result, j.percent, j.status),
            (VerdictResult::Breach, 0.0, RampStatus::RolledBack)
        );
        assert!(j.detail.contains("5xx 2.5% > 2.0%"), "{}", j.detail);
        let j = judge(&s, 50.0, 100.0, &fig(1000, 0, 700.0));
        assert_eq!(
            (j.result, j.status),
            (VerdictResult::Breach, RampStatus::RolledBack)
        );
        assert!(j.detail.contains("p99 700 ms > 500 ms"), "{}", j.detail);
        let paused = RampSpec {
            on_breach: OnBreach::Pause,
            min_percent: 5.0,
            ..s
        };
        let j = judge(&paused, 30.0, 100.0, &fig(200, 100, 100.0));
        assert_eq!(
            (j.result, j.percent, j.status),
            (VerdictResult::Breach, 30.0, RampStatus::Paused)
        );
        // exactly at the limit passes
        let j = judge(&spec(), 30.0, 100.0, &fig(200, 4, 500.0));
        assert_eq!(j.result, VerdictResult::Step);
    }

    #[test]
    fn the_callback_decides_within_bounds_and_silence_is_a_breach() {
        let s = RampSpec {
            decision_callback_url: Some("http://127.0.0.1:1/decide".into()),
            ..spec()
        };
        let proposal = judge(&s, 20.0, 100.0, &fig(300, 0, 10.0));
        assert!(asks_callback(&s, 20.0, &proposal));
        assert!(!asks_callback(
            &s,
            0.0,
            &judge(&s, 0.0, 100.0, &Figures::default())
        ));
        assert!(!asks_callback(
            &s,
            20.0,
            &judge(&s, 20.0, 100.0, &fig(1, 0, 1.0))
        ));
        let j = with_callback(
            &s,
            20.0,
            100.0,
            proposal.clone(),
            Ok(CallbackAnswer {
                percent: Some(35.0),
            }),
        );
        assert_eq!(
            (j.result, j.percent, j.status),
            (VerdictResult::Callback, 35.0, RampStatus::Running)
        );
        let j = with_callback(
            &s,
            20.0,
            100.0,
            proposal.clone(),
            Ok(CallbackAnswer {
                percent: Some(90.0),
            }),
        );
        assert_eq!((j.percent, j.status), (50.0, RampStatus::Holding));
        let j = with_callback(
            &s,
            20.0,
            100.0,
            proposal.clone(),
            Ok(CallbackAnswer::default()),
        );
        assert_eq!((j.result, j.percent), (VerdictResult::Step, 30.0));
        let j = with_callback(&s, 20.0, 100.0, proposal, Err("timed out after 10s".into()));
        assert_eq!(
            (j.result, j.percent, j.status),
            (VerdictResult::Breach, 0.0, RampStatus::RolledBack)
        );
        assert!(j.detail.contains("timed out"), "{}", j.detail);
    }
}
