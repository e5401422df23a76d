//! The task that runs ramps: every `interval_secs` it takes the slot's
//! figures over that interval from the proxy's own counters
//! (`metrics::slot_figures` snapshots, differenced), judges them
//! (`ramp::judge`, then the decision callback if the ramp has one), applies
//! the verdict through the control plane (validated, persisted, published
//! like any rule change) and writes it to the ramp's activity-log operation
//! and to the metrics.
//!
//! Interval bookkeeping (the last snapshot and when the next verdict is
//! due) lives here, in memory: after a restart a running ramp starts a
//! fresh interval.

use super::{apply, ceiling, end};
use crate::activity::{now, Operation, PhaseName, PhaseResult, Status};
use crate::control::{ControlError, ControlPlane};
use crate::metrics::{self, SlotFigures, Window};
use crate::model::State;
use crate::ramp::{
    asks_callback, judge, with_callback, CallbackAnswer, CallbackRequest, Figures, Judgement, Ramp,
    RampStatus, Verdict, VerdictResult,
};
use crate::store::claim::Claim;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the runner looks for ramps that are due (and new ones).
const TICK: Duration = Duration::from_millis(50);

/// The claim under which one node runs every ramp of the fleet.
const RAMP_CLAIM: &str = "ramps";
/// How often a node that does not run ramps asks for the claim again.
const CLAIM_RETRY: Duration = Duration::from_secs(2);

/// The one seam deciding whether this node runs ramps: the holder of the
/// [`RAMP_CLAIM`] claim ("run once for the fleet", `store::claim`). With one
/// state directory that is always this process; in a fleet one node at a
/// time, and another takes over when its lease expires (every node would
/// otherwise step the same shared rule each interval).
struct RampDuty {
    claim: Option<Claim>,
    next_try: Instant,
}

impl RampDuty {
    async fn held(&mut self, control: &Arc<ControlPlane>) -> bool {
        if self.claim.as_ref().is_some_and(Claim::held) {
            return true;
        }
        if self.claim.take().is_some() {
            log::warn!("this node lost the claim on ramps; another node runs them now");
        }
        if Instant::now() < self.next_try {
            return false;
        }
        self.next_try = Instant::now() + CLAIM_RETRY;
        let c = control.clone();
        match tokio::task::spawn_blocking(move || c.claim(RAMP_CLAIM, "ramp-runner")).await {
            Ok(Ok(claim)) => {
                log::info!("this node runs the ramps");
                self.claim = Some(claim);
                true
            }
            _ => false,
        }
    }
}

/// Where one running ramp's current interval started.
struct Track {
    operation_id: String,
    baseline: SlotFigures,
    /// The slot's shadow figures (compared, differing) at the start.
    shadow_base: Option<(u64, u64)>,
    due: Instant,
}

/// This node's shadow figures of the slot: (compared, differing or failed).
fn shadow_now(control: &ControlPlane, site: &str, slot: &str) -> Option<(u64, u64)> {
    let view = control.shadow(site, slot)?.figures.view();
    Some((view.compared, view.differing()))
}

/// The shadow's figures over an interval; a shadow started anew in it
/// counts from 0.
fn shadow_since(now: Option<(u64, u64)>, base: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (now, base) {
        (Some(n), Some(b)) if n.0 >= b.0 && n.1 >= b.1 => Some((n.0 - b.0, n.1 - b.1)),
        (n, _) => n,
    }
}

fn figures_now(site: &str, slot: &str) -> SlotFigures {
    metrics::slot_figures(site, slot).unwrap_or_default()
}

/// Run ramps until the process stops.
pub async fn run(control: Arc<ControlPlane>) {
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            log::error!("ramps cannot run: no HTTP client for decision callbacks: {e}");
            return;
        }
    };
    let mut tracks: HashMap<(String, String), Track> = HashMap::new();
    let mut duty = RampDuty {
        claim: None,
        next_try: Instant::now(),
    };
    loop {
        tokio::time::sleep(TICK).await;
        if !duty.held(&control).await {
            tracks.clear();
            continue;
        }
        // the state is copied only when a ramp is due (rarely), not every tick
        let ramps = control.ramps();
        let mut live = HashSet::new();
        for (site, slots) in &ramps {
            for (slot, ramp) in slots.iter().filter(|(_, r)| r.status.is_active()) {
                let key = (site.clone(), slot.clone());
                live.insert(key.clone());
                let interval = Duration::from_secs_f64(ramp.spec.interval_secs);
                let fresh = || Track {
                    operation_id: ramp.operation_id.clone(),
                    baseline: figures_now(site, slot),
                    shadow_base: shadow_now(&control, site, slot),
                    due: Instant::now() + interval,
                };
                let track = tracks.entry(key).or_insert_with(fresh);
                if track.operation_id != ramp.operation_id {
                    *track = fresh();
                }
                if Instant::now() < track.due {
                    continue;
                }
                let window = figures_now(site, slot).since(&track.baseline);
                let shadow = shadow_since(shadow_now(&control, site, slot), track.shadow_base);
                let state = control.state();
                judge_once(
                    &control,
                    &client,
                    site,
                    slot,
                    ramp,
                    &state,
                    (&window, shadow),
                )
                .await;
                // the next interval starts now, with the new rule published
                track.baseline = figures_now(site, slot);
                track.shadow_base = shadow_now(&control, site, slot);
                track.due = Instant::now() + interval;
            }
        }
        tracks.retain(|k, _| live.contains(k));
    }
}

/// Run a control-plane write off the async workers (it fsyncs).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ControlError::Conflict(format!("ramp task failed: {e}"))))
}

/// Judge one interval of `ramp` and apply the verdict.
async fn judge_once(
    control: &Arc<ControlPlane>,
    client: &reqwest::Client,
    site: &str,
    slot: &str,
    ramp: &Ramp,
    state: &State,
    // the slot's figures over the interval, and its shadow's
    (window, shadow): (&Window, Option<(u64, u64)>),
) {
    let op_id = ramp.operation_id.clone();
    let percent = match state.sites.get(site).and_then(|s| s.slots.get(slot)) {
        Some(s) => s.traffic_percent,
        None => None,
    };
    let Some(percent) = percent else {
        let why = if state
            .sites
            .get(site)
            .is_some_and(|s| s.slots.contains_key(slot))
        {
            "the slot's routing rule was removed"
        } else {
            "the slot was deleted"
        };
        let (c, s, sl, id, t) = (
            control.clone(),
            site.to_string(),
            slot.to_string(),
            op_id.clone(),
            now(),
        );
        match blocking(move || c.update_doc(|doc| Ok(end(doc, &s, &sl, &id, &t)))).await {
            Ok((true, _)) => {
                metrics::ramp_percent(site, slot, None);
                log::info!("ramp {site}/{slot} stopped: {why}");
                let why = why.to_string();
                record(control, &op_id, move |op| {
                    op.add_phase(PhaseName::Stop, PhaseResult::Succeeded, why.clone());
                    op.finish(Status::Cancelled, Some(format!("ramp stopped: {why}")));
                })
                .await;
            }
            Ok((false, _)) => {}
            Err(e) => log::error!("ramp {site}/{slot}: cannot stop it ({why}): {e}"),
        }
        return;
    };
    let ceiling = ceiling(state, site, slot);
    let mut figures = Figures::of(window);
    if let Some((compared, differing)) = shadow {
        figures.shadow_compared = Some(compared);
        figures.shadow_differing = Some(differing);
    }
    let mut j = judge(&ramp.spec, percent, ceiling, &figures);
    if asks_callback(&ramp.spec, percent, &j) {
        let body = CallbackRequest {
            site: site.to_string(),
            slot: slot.to_string(),
            percent,
            proposed_percent: j.percent,
            min_percent: ramp.spec.min_percent,
            max_percent: ramp.spec.max_percent,
            interval_secs: ramp.spec.interval_secs,
            figures: figures.clone(),
        };
        let answer = call_back(client, ramp, &body).await;
        j = with_callback(&ramp.spec, percent, ceiling, j, answer);
    }
    let verdict = Verdict {
        at: now(),
        result: j.result,
        from_percent: percent,
        to_percent: j.percent,
        figures,
        detail: j.detail.clone(),
    };
    let (c, s, sl, id, jj) = (
        control.clone(),
        site.to_string(),
        slot.to_string(),
        op_id.clone(),
        j.clone(),
    );
    let applied =
        blocking(move || c.update_doc(|doc| apply(doc, &s, &sl, &id, &jj, verdict.clone()))).await;
    match applied {
        Ok((true, _)) => {}
        Ok((false, _)) => return, // stopped or replaced meanwhile
        Err(e) => {
            log::error!("ramp {site}/{slot}: cannot apply \"{}\": {e}", j.detail);
            return;
        }
    }
    metrics::ramp_verdict(j.result.as_str());
    metrics::ramp_percent(site, slot, Some(j.percent));
    log::info!("ramp {site}/{slot}: {}", j.detail);
    let repeated = ramp
        .last_verdict
        .as_ref()
        .is_some_and(|v| v.result == j.result)
        .then_some(ramp.repeats + 1);
    let j = j.clone();
    record(control, &op_id, move |op| add_verdict(op, &j, repeated)).await;
}

/// One verdict as an activity-log entry. A run of waits or holds stays one
/// entry (its detail says how many), so a ramp holding for days does not
/// push swaps out of the log.
fn add_verdict(op: &mut Operation, j: &Judgement, repeated: Option<u32>) {
    let (name, result) = match j.result {
        VerdictResult::Step => (PhaseName::Step, PhaseResult::Succeeded),
        VerdictResult::Hold => (PhaseName::Hold, PhaseResult::Succeeded),
        VerdictResult::Wait => (PhaseName::Wait, PhaseResult::Skipped),
        VerdictResult::Breach => (PhaseName::Breach, PhaseResult::Failed),
        VerdictResult::Callback => (PhaseName::Callback, PhaseResult::Succeeded),
    };
    let collapses = matches!(name, PhaseName::Wait | PhaseName::Hold);
    match (op.phases.last_mut(), repeated) {
        (Some(last), Some(n)) if collapses && last.name == name => {
            last.ended_at = Some(now());
            last.detail = format!("{} ({n} in a row)", j.detail);
        }
        _ => op.add_phase(name, result, j.detail.clone()),
    }
    match j.status {
        RampStatus::RolledBack | RampStatus::Paused => {
            op.finish(Status::Failed, Some(j.detail.clone()));
        }
        _ => {}
    }
}

/// Change the ramp's operation with `f` and record it durably.
async fn record(
    control: &Arc<ControlPlane>,
    op_id: &str,
    f: impl FnOnce(&mut Operation) + Send + 'static,
) {
    let (c, id) = (control.clone(), op_id.to_string());
    match blocking(move || c.update_operation(&id, f)).await {
        Ok(Some(_)) => {}
        Ok(None) => log::warn!("ramp operation {op_id} is no longer in the activity log"),
        Err(e) => log::error!("cannot record ramp operation {op_id}: {e}"),
    }
}

/// POST the figures to the decision callback; its answer, or why there is
/// none (which the judge treats as a breach).
async fn call_back(
    client: &reqwest::Client,
    ramp: &Ramp,
    body: &CallbackRequest,
) -> Result<CallbackAnswer, String> {
    let url = ramp
        .spec
        .decision_callback_url
        .as_deref()
        .unwrap_or_default();
    let timeout = ramp.spec.callback_timeout();
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("{url} did not answer within {:.1}s", timeout.as_secs_f64())
        } else {
            format!("{url}: {e}")
        }
    };
    let resp = client
        .post(url)
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(failed)?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(failed)?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(CallbackAnswer::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{url} answered something other than {{\"percent\": N}}: {e}"))
}
