//! The swap engine: runs a [`Plan`] phase by phase — settings, restart wait,
//! warm-up, switch, source settings — records every phase and instance
//! result in the activity log, and keeps one swap per site — in the fleet,
//! under the site's claim (`swap/<site>`, a lease in etcd: see
//! [`crate::store::claim`]). Also starts the swaps nobody asked for by
//! hand: auto swap after a deployment, the declarative swap of
//! `target_build_version`, and the repair of settings after a restart (or
//! a dead fleet node) interrupted a swap.

use super::plan::{check, exchange, Plan, SwapRequest};
use crate::activity::{Action, InstanceResult, Operation, PhaseName, Status};
use crate::control::{interrupt, ControlError, ControlPlane};
use crate::instance_client::{InstanceClient, Outcome};
use crate::model::{Deployment, Settings, Slot, PRODUCTION};
use crate::store::{Claim, ClaimError, Preview};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a swap waits for the claim of a swap that has just ended (its
/// final record is written before its claim is released) before 409.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Run a control-plane call that may wait on the state store (an etcd round
/// trip; seconds while etcd is unreachable, a claim's release included)
/// from the engine's async code without holding up the other tasks of the
/// worker it runs on (health checks, the admin API, other swaps): on the
/// multi-threaded control runtime the worker hands its tasks over first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The claim a swap of `site` runs under: one swap per site in the fleet.
pub fn swap_claim(site: &str) -> String {
    format!("swap/{site}")
}

pub struct SwapEngine {
    control: Arc<ControlPlane>,
    client: InstanceClient,
    rt: tokio::runtime::Handle,
}

impl SwapEngine {
    pub fn new(control: Arc<ControlPlane>, rt: tokio::runtime::Handle) -> Arc<SwapEngine> {
        Arc::new(SwapEngine {
            control,
            client: InstanceClient::new().expect("an HTTP client without TLS options builds"),
            rt,
        })
    }

    /// Check and start a swap; it runs in the background under the site's
    /// claim. Returns the id of its operation, already durably in the
    /// activity log.
    pub fn start(self: &Arc<Self>, req: SwapRequest) -> Result<String, ControlError> {
        let op = Operation::new(&req.site, &req.source, &req.target, req.action);
        // claimed before it is recorded: a running operation always has a
        // live claim naming it, or its node is gone
        let claim = self.claim_site(&req.site, &op.id)?;
        let plan = check(
            &self.control.state(),
            self.control.preview(&req.site).as_ref(),
            &req,
        )?;
        self.control.record(&op)?;
        let id = op.id.clone();
        let engine = self.clone();
        self.rt.spawn(async move {
            engine.run(plan, op, claim).await;
        });
        Ok(id)
    }

    /// Claim `site` for operation `id`, or 409 naming where a swap of it
    /// runs. A claim whose operation has ended is about to be released: it
    /// is waited for (briefly), so a client that sees a swap end may start
    /// the next one at once, on any node.
    fn claim_site(&self, site: &str, id: &str) -> Result<Claim, ControlError> {
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            match self.control.claim(&swap_claim(site), id) {
                Ok(c) => return Ok(c),
                Err(ClaimError::Held {
                    node, operation, ..
                }) => {
                    let ending = self
                        .control
                        .operation(&operation)
                        .is_some_and(|o| o.status.is_final());
                    if ending && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    let place = node.map_or("on this node".to_string(), |n| format!("on node {n}"));
                    return Err(ControlError::Conflict(format!(
                        "a swap of site {site:?} is already running {place} (operation {operation})"
                    )));
                }
                Err(ClaimError::Store(e)) => return Err(e.into()),
            }
        }
    }

    /// Swap `slot` into its `auto_swap_target`, if it has one (after a new
    /// deployment landed in it).
    pub fn auto_swap(
        self: &Arc<Self>,
        site: &str,
        slot: &str,
    ) -> Option<Result<String, ControlError>> {
        let state = self.control.state();
        let target = state
            .sites
            .get(site)?
            .slots
            .get(slot)?
            .auto_swap_target
            .clone()?;
        let result = self.start(SwapRequest {
            site: site.into(),
            source: slot.into(),
            target,
            action: Action::Swap,
        });
        if let Err(e) = &result {
            log::warn!("auto swap of {site}/{slot} did not start: {e}");
        }
        Some(result)
    }

    /// Declarative swap: for every production slot whose
    /// `target_build_version` differs from what it runs, swap in the slot
    /// that runs that build. Running it again changes nothing.
    pub fn reconcile(self: &Arc<Self>) -> Vec<Result<String, ControlError>> {
        let mut started = Vec::new();
        for site in self.control.state().sites.values() {
            let Some(prod) = site.slots.get(PRODUCTION) else {
                continue;
            };
            let Some(want) = &prod.target_build_version else {
                continue;
            };
            let runs = |s: &Slot| {
                s.deployment
                    .as_ref()
                    .is_some_and(|d| &d.build_version == want)
            };
            if runs(prod) {
                continue;
            }
            let Some(source) = site
                .slots
                .values()
                .find(|s| s.name != PRODUCTION && runs(s))
            else {
                log::warn!(
                    "declarative swap: site {} wants build {want} in production, but no slot runs it",
                    site.name
                );
                continue;
            };
            log::info!(
                "declarative swap: {} wants build {want}, which slot {} runs",
                site.name,
                source.name
            );
            let r = self.start(SwapRequest {
                site: site.name.clone(),
                source: source.name.clone(),
                target: PRODUCTION.into(),
                action: Action::Swap,
            });
            if let Err(e) = &r {
                log::warn!("declarative swap of site {} did not start: {e}", site.name);
            }
            started.push(r);
        }
        started
    }

    /// Repair interrupted swaps as they are found, for the life of the
    /// process: those of the last stop first, then those a dead fleet node
    /// leaves (its lease on the site expires).
    pub async fn recover_forever(self: Arc<Self>) {
        loop {
            self.recover().await;
            self.control.interruptions().await;
        }
    }

    /// After a restart (or a fleet node's death) that interrupted swaps:
    /// each of the two slots of such a swap posts its own effective
    /// settings to the deployment it holds now, whichever side of the
    /// switch the process died on, so no app is left running with the other
    /// slot's sticky settings.
    ///
    /// A swap orphaned in the fleet is still `running`: the node that wins
    /// the site's claim reads it again and, if nobody ended it meanwhile,
    /// marks it `interrupted` and repairs; the others leave it alone.
    pub async fn recover(self: &Arc<Self>) {
        for op in self.control.take_interrupted() {
            // hold the site so no swap runs while its settings are repaired
            let Ok(claim) = blocking(|| self.control.claim(&swap_claim(&op.site), &op.id)) else {
                continue;
            };
            self.take_over(op, claim).await;
        }
    }

    /// Mark `op` interrupted if it still runs in the store, and re-post the
    /// settings of its slots, holding the site's `claim` meanwhile.
    async fn take_over(&self, op: Operation, claim: Claim) {
        self.repair(op).await;
        blocking(|| drop(claim));
    }

    async fn repair(&self, op: Operation) {
        {
            let mut record = op.clone();
            if op.status == Status::Running {
                match blocking(|| self.control.stored_operation(&op.id)) {
                    Ok(Some(now)) if now.status == Status::Running => {
                        record = now.clone();
                        interrupt(
                            &mut record,
                            "the node running it stopped (its lease on the site expired)",
                        );
                        // only over what was read: its runner, slow rather
                        // than dead, may have ended it since
                        match blocking(|| self.control.record_if(&record, &now)) {
                            Ok(true) => {}
                            Ok(false) => {
                                log::info!("{}: ended by its own node meanwhile", op.id);
                                return;
                            }
                            Err(e) => {
                                log::warn!("{}: cannot mark it interrupted: {e}", op.id);
                                return;
                            }
                        }
                        log::warn!("{}: marked interrupted; re-applying settings", op.id);
                    }
                    Ok(_) => return, // ended, or already taken over
                    Err(e) => {
                        log::warn!("{}: cannot read it to take it over: {e}", op.id);
                        return;
                    }
                }
            }
            let state = self.control.state();
            if let Some(site) = state.sites.get(&op.site) {
                for name in [&op.source, &op.target] {
                    let Some(slot) = site.slots.get(name) else {
                        continue;
                    };
                    let (Some(d), Some(hook)) = (
                        slot.deployment.as_ref(),
                        slot.deployment
                            .as_ref()
                            .and_then(|d| d.settings_hook_path.as_ref()),
                    ) else {
                        continue;
                    };
                    let settings = slot.effective_settings();
                    match self
                        .post_settings(&mut record, PhaseName::RecoverSettings, d, hook, &settings)
                        .await
                    {
                        Ok(()) => log::info!(
                            "{}: settings of {}/{name} re-applied after the interruption",
                            op.id,
                            op.site
                        ),
                        Err(e) => log::warn!(
                            "{}: re-applying settings of {}/{name} failed: {e}",
                            op.id,
                            op.site
                        ),
                    }
                }
                self.save(&record);
            }
        }
    }

    fn save(&self, op: &Operation) {
        if let Err(e) = blocking(|| self.control.record(op)) {
            log::error!("cannot record operation {}: {e}", op.id);
        }
    }

    /// Edit another operation (a preview's) under the control lock.
    fn update(&self, id: &str, f: impl FnOnce(&mut Operation)) {
        if let Err(e) = blocking(|| self.control.update_operation(id, f)) {
            log::error!("cannot record operation {id}: {e}");
        }
    }

    async fn run(&self, plan: Plan, mut op: Operation, claim: Claim) {
        let began = Instant::now();
        match op.action {
            Action::Reset => self.reset(&plan, &mut op).await,
            Action::Preview => self.preview(&plan, &mut op).await,
            Action::Swap => self.swap(&plan, &mut op, &claim).await,
            // refused by `plan::check` before any operation starts
            Action::Ramp | Action::Outlier => op.finish(Status::Failed, Some("not a swap".into())),
        }
        // The final record first, then the claim: a node that sees the
        // claim go while its operation still runs takes it for orphaned.
        // (A swap asked for in between waits for the release: claim_site.)
        self.save(&op);
        blocking(|| drop(claim));
        if op.action == Action::Swap {
            crate::metrics::swap_finished(&op.site, op.status.as_str(), began.elapsed());
        }
        log::info!(
            "{} {} of {}/{} into {}: {} in {:.1}s{}",
            op.id,
            op.action.as_str(),
            op.site,
            op.source,
            op.target,
            op.status.as_str(),
            began.elapsed().as_secs_f64(),
            op.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }

    /// Phases 1–2: the source's instances get the target's sticky settings
    /// and must answer again.
    async fn prepare(&self, plan: &Plan, op: &mut Operation) -> Result<(), String> {
        let d = plan.source_deployment();
        let settings = plan.source.settings_in(&plan.target);
        op.begin_phase(PhaseName::ApplySettings);
        self.save(op);
        let Some(hook) = &d.settings_hook_path else {
            op.end_phase(true, "no settings_hook_path: nothing to apply");
            op.skip_phase(PhaseName::WaitRestart, "no settings were applied");
            return Ok(());
        };
        let r = self
            .post_settings(op, PhaseName::ApplySettings, d, hook, &settings)
            .await;
        op.end_phase(
            r.is_ok(),
            r.clone().err().unwrap_or_else(|| {
                format!(
                    "{} settings posted to {} instance(s)",
                    settings.len(),
                    d.instances.len()
                )
            }),
        );
        r?;
        op.begin_phase(PhaseName::WaitRestart);
        self.save(op);
        let r = self.wait_restart(op, d).await;
        op.end_phase(
            r.is_ok(),
            r.clone()
                .err()
                .unwrap_or_else(|| "every instance answers".into()),
        );
        r
    }

    async fn preview(&self, plan: &Plan, op: &mut Operation) {
        match self.prepare(plan, op).await {
            Ok(()) => {
                let preview = Preview {
                    source: plan.source.name.clone(),
                    target: plan.target.name.clone(),
                    operation_id: op.id.clone(),
                    source_deployment: plan.source.deployment.clone(),
                    target_deployment: plan.target.deployment.clone(),
                };
                let set = blocking(|| self.control.set_preview(&plan.site.name, Some(preview)));
                // a preview of slots that changed meanwhile is dropped at once
                let pending = self.control.preview(&plan.site.name);
                match set {
                    Ok(()) if pending.is_some_and(|p| p.operation_id == op.id) => {
                        op.status = Status::Previewing
                    }
                    Ok(()) => {
                        self.abort(plan, op, "a slot changed during the preview".into())
                            .await
                    }
                    Err(e) => {
                        self.abort(plan, op, format!("cannot persist the preview: {e}"))
                            .await
                    }
                }
            }
            Err(e) => self.abort(plan, op, e).await,
        }
    }

    async fn reset(&self, plan: &Plan, op: &mut Operation) {
        op.begin_phase(PhaseName::ApplySettings);
        let r = self.restore_source_settings(plan, op).await;
        op.end_phase(
            r.is_ok(),
            r.clone()
                .err()
                .unwrap_or_else(|| "source settings reapplied".into()),
        );
        self.end_preview(plan, Status::Cancelled, Some(format!("reset by {}", op.id)));
        match r {
            Ok(()) => op.finish(Status::Succeeded, None),
            Err(e) => op.finish(Status::Failed, Some(e)),
        }
    }

    async fn swap(&self, plan: &Plan, op: &mut Operation, claim: &Claim) {
        if let Some(p) = &plan.completes {
            let why = format!("done by preview {}", p.operation_id);
            op.skip_phase(PhaseName::ApplySettings, why.clone());
            op.skip_phase(PhaseName::WaitRestart, why);
        } else if let Err(e) = self.prepare(plan, op).await {
            return self.abort(plan, op, e).await;
        }

        op.begin_phase(PhaseName::Warmup);
        self.save(op);
        let r = self.warmup(op, plan).await;
        op.end_phase(
            r.is_ok(),
            r.clone()
                .err()
                .unwrap_or_else(|| "every instance is warm".into()),
        );
        if let Err(e) = r {
            return self.abort(plan, op, e).await;
        }

        op.begin_phase(PhaseName::Switch);
        self.save(op);
        if !claim.held() {
            let e = format!(
                "the lease on {} expired (the state store was unreachable for longer than it lasts); another node may have taken the site over, so production is left alone",
                claim.name()
            );
            op.end_phase(false, e.clone());
            return self.abort(plan, op, e).await;
        }
        let site = plan.site.name.clone();
        // under the claim: if the lease went since the check above, etcd
        // refuses the switch in the same transaction
        let switched = blocking(|| {
            self.control.update_doc_claimed(claim, |doc| {
                exchange(&mut doc.state, plan)?;
                // completing a preview ends it in the same durable write
                if plan.completes.is_some() {
                    doc.previews.remove(&site);
                }
                Ok(())
            })
        });
        if let Err(e) = switched {
            op.end_phase(false, e.to_string());
            return self.abort(plan, op, format!("switch refused: {e}")).await;
        }
        let from = plan
            .target
            .deployment
            .as_ref()
            .map_or("nothing", |d| d.build_version.as_str());
        op.end_phase(
            true,
            format!(
                "{} now runs {} (was {from}); {} now runs {from}",
                plan.target.name,
                plan.source_deployment().build_version,
                plan.source.name
            ),
        );
        self.save(op);
        if let Some(p) = &plan.completes {
            let by = format!("completed by {}", op.id);
            self.update(&p.operation_id, |preview_op| {
                preview_op.finish(Status::Succeeded, Some(by))
            });
        }

        // Phase 5: the content that moved into the source slot gets the
        // source's sticky settings.
        op.begin_phase(PhaseName::ApplySourceSettings);
        let error = match &plan.target.deployment {
            Some(d) => match &d.settings_hook_path {
                Some(hook) => {
                    let settings = plan.target.settings_in(&plan.source);
                    let r = self
                        .post_settings(op, PhaseName::ApplySourceSettings, d, hook, &settings)
                        .await;
                    op.end_phase(
                        r.is_ok(),
                        r.clone().err().unwrap_or_else(|| "applied".into()),
                    );
                    r.err().map(|e| {
                        format!(
                            "swap done, but applying {}'s settings failed: {e}",
                            plan.source.name
                        )
                    })
                }
                None => {
                    op.end_phase(true, "no settings_hook_path: nothing to apply");
                    None
                }
            },
            None => {
                op.end_phase(true, "the source slot is now empty");
                None
            }
        };
        op.finish(Status::Succeeded, error);
    }

    /// Phases 1–3 failed: put the source's own settings back. Production was
    /// never touched.
    async fn abort(&self, plan: &Plan, op: &mut Operation, error: String) {
        if let Err(e) = self.restore_source_settings(plan, op).await {
            log::warn!("swap {}: reapplying source settings failed: {e}", op.id);
        }
        self.end_preview(
            plan,
            Status::Cancelled,
            Some(format!("ended by failed {}", op.id)),
        );
        op.finish(Status::Failed, Some(error));
    }

    async fn restore_source_settings(&self, plan: &Plan, op: &mut Operation) -> Result<(), String> {
        let Some(d) = &plan.source.deployment else {
            return Ok(());
        };
        let Some(hook) = &d.settings_hook_path else {
            return Ok(());
        };
        let settings = plan.source.effective_settings();
        self.post_settings(op, PhaseName::RestoreSettings, d, hook, &settings)
            .await
    }

    fn end_preview(&self, plan: &Plan, status: Status, error: Option<String>) {
        let Some(pending) = self.control.preview(&plan.site.name) else {
            return;
        };
        if pending.source != plan.source.name || pending.target != plan.target.name {
            return;
        }
        if let Err(e) = blocking(|| self.control.set_preview(&plan.site.name, None)) {
            log::error!("cannot clear the preview of {}: {e}", plan.site.name);
        }
        self.update(&pending.operation_id, |preview_op| {
            if !preview_op.status.is_final() {
                preview_op.finish(status, error);
            }
        });
    }

    async fn post_settings(
        &self,
        op: &mut Operation,
        phase: PhaseName,
        d: &Deployment,
        hook: &str,
        settings: &Settings,
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(d.warmup.timeout_secs);
        let mut tasks = tokio::task::JoinSet::new();
        for inst in &d.instances {
            let (client, inst, how) = (self.client.clone(), inst.clone(), d.probe());
            let (hook, settings) = (hook.to_string(), settings.clone());
            tasks.spawn(async move {
                let outcome = client
                    .post_settings(&inst, &hook, &settings, &how, timeout)
                    .await;
                (inst, outcome, 1)
            });
        }
        collect_counted(op, phase, &mut tasks).await
    }

    async fn wait_restart(&self, op: &mut Operation, d: &Deployment) -> Result<(), String> {
        let deadline = Duration::from_secs(d.warmup.timeout_secs);
        let mut tasks = tokio::task::JoinSet::new();
        for inst in &d.instances {
            let (client, inst, how) = (self.client.clone(), inst.clone(), d.probe());
            let path = d.warmup.path.clone();
            tasks.spawn(async move {
                let (outcome, attempts) = client.wait_answers(&inst, &path, &how, deadline).await;
                (inst, outcome, attempts)
            });
        }
        collect_counted(op, PhaseName::WaitRestart, &mut tasks).await
    }

    async fn warmup(&self, op: &mut Operation, plan: &Plan) -> Result<(), String> {
        let d = plan.source_deployment();
        let host = plan.target_host();
        let mut tasks = tokio::task::JoinSet::new();
        for inst in &d.instances {
            let (client, inst, host) = (self.client.clone(), inst.clone(), host.clone());
            let (warm, how) = (d.warmup.clone(), d.probe());
            tasks.spawn(async move {
                let (outcome, attempts) = client.warm_up(&inst, &host, &warm, &how).await;
                (inst, outcome, attempts)
            });
        }
        collect_counted(op, PhaseName::Warmup, &mut tasks).await
    }
}

/// Gather the per-instance results of one phase into the operation; the
/// phase fails naming every instance that failed.
async fn collect_counted(
    op: &mut Operation,
    phase: PhaseName,
    tasks: &mut tokio::task::JoinSet<(String, Outcome, u32)>,
) -> Result<(), String> {
    let mut failures = Vec::new();
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((instance, outcome, attempts)) = joined else {
            failures.push("an instance check panicked".to_string());
            continue;
        };
        let (status, error) = match outcome {
            Ok(code) => (Some(code), None),
            Err((code, e)) => {
                failures.push(format!("instance {instance}: {e}"));
                (code, Some(e))
            }
        };
        results.push(InstanceResult {
            instance,
            phase,
            attempts,
            status,
            error,
        });
    }
    results.sort_by(|a, b| a.instance.cmp(&b.instance));
    op.instances.extend(results);
    if failures.is_empty() {
        Ok(())
    } else {
        failures.sort();
        Err(format!("{phase} failed: {}", failures.join("; ")))
    }
}
