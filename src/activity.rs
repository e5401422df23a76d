//! The activity log's records: one `Operation` per swap, preview or reset,
//! with its phases and per-instance results, shaped as docs/guide/swaps.md's
//! "Activity log" shows.
//!
//! Plain data only; the swap engine fills them in and the store persists
//! each change before it is reported.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// What a phase (or a per-instance result) was about. The first five are
/// the phases of a swap, in the order it runs them; the last two name the
/// per-instance results of putting settings back (after a failed swap, and
/// after a restart that interrupted one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    ApplySettings,
    WaitRestart,
    Warmup,
    Switch,
    ApplySourceSettings,
    RestoreSettings,
    RecoverSettings,
    /// Ramp entries (action `ramp`): its start, each verdict, its stop.
    Start,
    Step,
    Wait,
    Hold,
    Breach,
    Callback,
    Stop,
    /// Outlier entries (action `outlier`): an instance taken out, back in.
    Eject,
    Return,
}

impl PhaseName {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::ApplySettings => "apply_settings",
            PhaseName::WaitRestart => "wait_restart",
            PhaseName::Warmup => "warmup",
            PhaseName::Switch => "switch",
            PhaseName::ApplySourceSettings => "apply_source_settings",
            PhaseName::RestoreSettings => "restore_settings",
            PhaseName::RecoverSettings => "recover_settings",
            PhaseName::Start => "start",
            PhaseName::Step => "step",
            PhaseName::Wait => "wait",
            PhaseName::Hold => "hold",
            PhaseName::Breach => "breach",
            PhaseName::Callback => "callback",
            PhaseName::Stop => "stop",
            PhaseName::Eject => "eject",
            PhaseName::Return => "return",
        }
    }
}

/// How a phase ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseResult {
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl PhaseResult {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseResult::Running => "running",
            PhaseResult::Succeeded => "succeeded",
            PhaseResult::Failed => "failed",
            PhaseResult::Skipped => "skipped",
        }
    }
}

/// `{:<22}` and friends pad the JSON name.
macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    )*};
}
display_as_str!(PhaseName, PhaseResult, Action, Status);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Swap,
    Preview,
    Reset,
    /// A ramp of a slot's share (docs/guide/ramps.md); one phase per verdict.
    Ramp,
    /// An instance ejected or returned by outlier ejection (`source` is the
    /// slot, `target` the instance); one phase, `eject` or `return`.
    Outlier,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Swap => "swap",
            Action::Preview => "preview",
            Action::Reset => "reset",
            Action::Ramp => "ramp",
            Action::Outlier => "outlier",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Previewing,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

impl Status {
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Running | Status::Previewing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Previewing => "previewing",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: PhaseName,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub result: PhaseResult,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceResult {
    pub instance: String,
    pub phase: PhaseName,
    pub attempts: u32,
    /// HTTP status the instance answered last, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub site: String,
    pub source: String,
    pub target: String,
    pub action: Action,
    pub status: Status,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub phases: Vec<Phase>,
    pub instances: Vec<InstanceResult>,
    pub error: Option<String>,
}

/// RFC 3339 UTC time with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Ids sort by creation time: `op-<unix ms>-<random>`.
pub fn new_id() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("op-{ms:013}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

impl Operation {
    pub fn new(site: &str, source: &str, target: &str, action: Action) -> Operation {
        Operation {
            id: new_id(),
            site: site.into(),
            source: source.into(),
            target: target.into(),
            action,
            status: Status::Running,
            started_at: now(),
            ended_at: None,
            phases: Vec::new(),
            instances: Vec::new(),
            error: None,
        }
    }

    pub fn begin_phase(&mut self, name: PhaseName) {
        self.phases.push(Phase {
            name,
            started_at: now(),
            ended_at: None,
            result: PhaseResult::Running,
            detail: String::new(),
        });
    }

    /// Close the phase begun last.
    pub fn end_phase(&mut self, ok: bool, detail: impl Into<String>) {
        if let Some(p) = self.phases.last_mut() {
            p.ended_at = Some(now());
            p.result = if ok {
                PhaseResult::Succeeded
            } else {
                PhaseResult::Failed
            };
            p.detail = detail.into();
        }
    }

    /// Add a phase that began and ended now.
    pub fn add_phase(&mut self, name: PhaseName, result: PhaseResult, detail: impl Into<String>) {
        let t = now();
        self.phases.push(Phase {
            name,
            started_at: t.clone(),
            ended_at: Some(t),
            result,
            detail: detail.into(),
        });
    }

    pub fn skip_phase(&mut self, name: PhaseName, detail: impl Into<String>) {
        self.add_phase(name, PhaseResult::Skipped, detail);
    }

    pub fn finish(&mut self, status: Status, error: Option<String>) {
        self.status = status;
        self.error = error;
        self.ended_at = Some(now());
        for p in &mut self.phases {
            if p.ended_at.is_none() {
                p.ended_at = self.ended_at.clone();
                p.result = PhaseResult::Failed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_matches_the_spec() {
        let mut op = Operation::new("shop", "staging", "production", Action::Swap);
        op.begin_phase(PhaseName::ApplySettings);
        op.end_phase(true, "2 instances");
        op.begin_phase(PhaseName::Warmup);
        op.finish(Status::Failed, Some("boom".into()));
        let v = serde_json::to_value(&op).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        for k in [
            "id",
            "site",
            "source",
            "target",
            "action",
            "status",
            "started_at",
            "ended_at",
            "phases",
            "instances",
            "error",
        ] {
            assert!(keys.contains(&k.to_string()), "missing {k}");
        }
        assert_eq!(v["action"], "swap");
        assert_eq!(v["phases"][0]["name"], "apply_settings");
        assert_eq!(v["phases"][0]["result"], "succeeded");
        assert_eq!(v["status"], "failed");
        assert_eq!(
            v["phases"][1]["result"], "failed",
            "an open phase fails with the operation"
        );
        assert!(op.id < new_id() || op.id.len() == new_id().len());
        let t = now();
        assert!(
            humantime::parse_rfc3339(&t).is_ok() && t.ends_with('Z'),
            "{t}"
        );
    }
}
