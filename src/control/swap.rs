//! The swap engine (SPEC §3): warm-up-gated swaps with preview, reset, auto
//! swap and declarative swap, each recorded in the activity log.
//!
//! A swap runs off the hot path on the control runtime. Phases 1–3 only talk
//! to the source's instances; production is untouched until phase 4, which is
//! one `ControlPlane::update` — one durable write and one `ArcSwap::store` of
//! a table where the two slots have exchanged deployments and swappable
//! settings. Requests in flight keep the table they started with, so no
//! request fails because of a swap; a failure before phase 4 puts the
//! source's own settings back and leaves production as it was.

use super::{ControlError, ControlPlane};
use crate::activity::{self, Action, InstanceResult, Operation, Status};
use crate::model::{Deployment, Settings, Site, Slot, State, PRODUCTION};
use crate::store::Preview;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the admin API (or auto / declarative swap) asks for.
#[derive(Debug, Clone)]
pub struct SwapRequest {
    pub site: String,
    pub source: String,
    pub target: String,
    pub action: Action,
}

pub struct SwapEngine {
    control: Arc<ControlPlane>,
    /// Sites with a swap running: one at a time per site.
    busy: Mutex<HashSet<String>>,
    client: reqwest::Client,
    rt: tokio::runtime::Handle,
}

/// The slots of a swap as they were when it started.
#[derive(Clone)]
struct Plan {
    site: Site,
    source: Slot,
    target: Slot,
    /// Completing a preview: phases 1–2 already ran.
    completes: Option<Preview>,
}

impl Plan {
    fn source_deployment(&self) -> &Deployment {
        // `check` refuses a source without a deployment
        self.source.deployment.as_ref().expect("checked")
    }

    /// The Host header the target's users send, for the warm-up.
    fn target_host(&self) -> String {
        if self.target.name == PRODUCTION {
            if let Some(h) = self.site.hostnames.first() {
                return h.clone();
            }
        }
        self.site
            .slot_hostnames(&self.target)
            .into_iter()
            .next()
            .or_else(|| self.site.hostnames.first().cloned())
            .unwrap_or_default()
    }
}

/// Decide whether a request may start, and how. Pure: no I/O.
fn check(
    state: &State,
    preview: Option<&Preview>,
    req: &SwapRequest,
) -> Result<Plan, ControlError> {
    let site = state
        .sites
        .get(&req.site)
        .ok_or_else(|| ControlError::NotFound(format!("site {:?} does not exist", req.site)))?;
    let slot = |name: &str| {
        site.slots.get(name).cloned().ok_or_else(|| {
            ControlError::NotFound(format!("site {:?} has no slot {name:?}", req.site))
        })
    };
    let (source, target) = (slot(&req.source)?, slot(&req.target)?);
    if source.name == target.name {
        return Err(ControlError::Invalid(vec![crate::model::Problem {
            key: "target_slot".into(),
            reason: "a slot cannot be swapped with itself".into(),
        }]));
    }
    let same_pair = preview.is_some_and(|p| p.source == req.source && p.target == req.target);
    if let Some(p) = preview {
        if !same_pair {
            return Err(ControlError::Conflict(format!(
                "a preview of {} into {} is pending on site {:?}; complete it with action swap or cancel it with action reset first",
                p.source, p.target, req.site
            )));
        }
    }
    match req.action {
        Action::Reset if !same_pair => {
            return Err(ControlError::Conflict(format!(
                "no preview of {} into {} is pending on site {:?}",
                req.source, req.target, req.site
            )))
        }
        Action::Preview if same_pair => {
            return Err(ControlError::Conflict(format!(
                "a preview of {} into {} is already pending",
                req.source, req.target
            )))
        }
        _ => {}
    }
    if req.action != Action::Reset && source.deployment.is_none() {
        return Err(ControlError::Conflict(format!(
            "slot {:?} has no deployment to swap in",
            req.source
        )));
    }
    Ok(Plan {
        site: site.clone(),
        completes: if req.action == Action::Swap && same_pair {
            preview.cloned()
        } else {
            None
        },
        source,
        target,
    })
}

/// Exchange the content (deployment and swappable settings) of two slots,
/// provided neither changed since the swap was planned.
fn exchange(state: &mut State, plan: &Plan) -> Result<(), ControlError> {
    let site = state
        .sites
        .get_mut(&plan.site.name)
        .ok_or_else(|| ControlError::Conflict("the site was deleted during the swap".into()))?;
    let (Some(source), Some(target)) = (
        site.slots.get(&plan.source.name),
        site.slots.get(&plan.target.name),
    ) else {
        return Err(ControlError::Conflict(
            "a slot was deleted during the swap".into(),
        ));
    };
    if source.deployment != plan.source.deployment || target.deployment != plan.target.deployment {
        return Err(ControlError::Conflict(
            "a deployment changed during the swap; the warmed-up instances are no longer the ones to switch to".into(),
        ));
    }
    let (sd, ss) = (source.deployment.clone(), source.settings.clone());
    let (td, ts) = (target.deployment.clone(), target.settings.clone());
    let source = site
        .slots
        .get_mut(&plan.source.name)
        .expect("checked above");
    source.deployment = td;
    source.settings = ts;
    let target = site
        .slots
        .get_mut(&plan.target.name)
        .expect("checked above");
    target.deployment = sd;
    target.settings = ss;
    Ok(())
}

impl SwapEngine {
    pub fn new(control: Arc<ControlPlane>, rt: tokio::runtime::Handle) -> Arc<SwapEngine> {
        Arc::new(SwapEngine {
            control,
            busy: Mutex::new(HashSet::new()),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client builds"),
            rt,
        })
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Check and start a swap; it runs in the background. Returns the id of
    /// its operation, already durably in the activity log.
    pub fn start(self: &Arc<Self>, req: SwapRequest) -> Result<String, ControlError> {
        if !self.busy().insert(req.site.clone()) {
            return Err(ControlError::Conflict(format!(
                "a swap of site {:?} is already running",
                req.site
            )));
        }
        let started = (|| {
            let plan = check(
                &self.control.state(),
                self.control.preview(&req.site).as_ref(),
                &req,
            )?;
            let op = Operation::new(&req.site, &req.source, &req.target, req.action);
            self.control.record(&op)?;
            Ok::<_, ControlError>((plan, op))
        })();
        let (plan, op) = match started {
            Ok(v) => v,
            Err(e) => {
                self.busy().remove(&req.site);
                return Err(e);
            }
        };
        let id = op.id.clone();
        let engine = self.clone();
        self.rt.spawn(async move {
            engine.run(plan, op).await;
        });
        Ok(id)
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

    /// After a restart that interrupted swaps: each of the two slots of such
    /// a swap posts its own effective settings to the deployment it holds
    /// now, whichever side of the switch the process died on, so no app is
    /// left running with the other slot's sticky settings.
    pub async fn recover(self: &Arc<Self>) {
        for op in self.control.take_interrupted() {
            // hold the site so no swap runs while its settings are repaired
            if !self.busy().insert(op.site.clone()) {
                continue;
            }
            let state = self.control.state();
            if let Some(site) = state.sites.get(&op.site) {
                let mut record = op.clone();
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
                        .post_settings(&mut record, "recover_settings", d, hook, &settings)
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
            self.busy().remove(&op.site);
        }
    }

    fn save(&self, op: &Operation) {
        if let Err(e) = self.control.record(op) {
            log::error!("cannot record operation {}: {e}", op.id);
        }
    }

    async fn run(&self, plan: Plan, mut op: Operation) {
        let began = Instant::now();
        match op.action {
            Action::Reset => self.reset(&plan, &mut op).await,
            Action::Preview => self.preview(&plan, &mut op).await,
            Action::Swap => self.swap(&plan, &mut op).await,
        }
        // Free the site before the final record is written: a client that
        // sees this operation end may start the next swap at once.
        self.busy().remove(&plan.site.name);
        self.save(&op);
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
        op.begin_phase(activity::APPLY_SETTINGS);
        self.save(op);
        let Some(hook) = &d.settings_hook_path else {
            op.end_phase(true, "no settings_hook_path: nothing to apply");
            op.skip_phase(activity::WAIT_RESTART, "no settings were applied");
            return Ok(());
        };
        let r = self
            .post_settings(op, activity::APPLY_SETTINGS, d, hook, &settings)
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
        op.begin_phase(activity::WAIT_RESTART);
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
                let set = self.control.set_preview(&plan.site.name, Some(preview));
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
        op.begin_phase(activity::APPLY_SETTINGS);
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

    async fn swap(&self, plan: &Plan, op: &mut Operation) {
        if let Some(p) = &plan.completes {
            let why = format!("done by preview {}", p.operation_id);
            op.skip_phase(activity::APPLY_SETTINGS, why.clone());
            op.skip_phase(activity::WAIT_RESTART, why);
        } else if let Err(e) = self.prepare(plan, op).await {
            return self.abort(plan, op, e).await;
        }

        op.begin_phase(activity::WARMUP);
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

        op.begin_phase(activity::SWITCH);
        self.save(op);
        let site = plan.site.name.clone();
        let switched = self.control.update_doc(|doc| {
            exchange(&mut doc.state, plan)?;
            // completing a preview ends it in the same durable write
            if plan.completes.is_some() {
                doc.previews.remove(&site);
            }
            Ok(())
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
            if let Some(mut preview_op) = self.control.operation(&p.operation_id) {
                preview_op.finish(Status::Succeeded, Some(format!("completed by {}", op.id)));
                self.save(&preview_op);
            }
        }

        // Phase 5: the content that moved into the source slot gets the
        // source's sticky settings.
        op.begin_phase(activity::APPLY_SOURCE_SETTINGS);
        let error = match &plan.target.deployment {
            Some(d) => match &d.settings_hook_path {
                Some(hook) => {
                    let settings = plan.target.settings_in(&plan.source);
                    let r = self
                        .post_settings(op, activity::APPLY_SOURCE_SETTINGS, d, hook, &settings)
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
        self.post_settings(op, "restore_settings", d, hook, &settings)
            .await
    }

    fn end_preview(&self, plan: &Plan, status: Status, error: Option<String>) {
        let Some(pending) = self.control.preview(&plan.site.name) else {
            return;
        };
        if pending.source != plan.source.name || pending.target != plan.target.name {
            return;
        }
        if let Err(e) = self.control.set_preview(&plan.site.name, None) {
            log::error!("cannot clear the preview of {}: {e}", plan.site.name);
        }
        if let Some(mut preview_op) = self.control.operation(&pending.operation_id) {
            if !preview_op.status.is_final() {
                preview_op.finish(status, error);
                self.save(&preview_op);
            }
        }
    }

    async fn post_settings(
        &self,
        op: &mut Operation,
        phase: &str,
        d: &Deployment,
        hook: &str,
        settings: &Settings,
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(d.warmup.timeout_secs);
        let mut tasks = tokio::task::JoinSet::new();
        for inst in &d.instances {
            let req = self
                .client
                .post(format!("http://{inst}{hook}"))
                .json(settings)
                .timeout(timeout);
            let inst = inst.clone();
            tasks.spawn(async move {
                let r = match req.send().await {
                    Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16()),
                    Ok(resp) => Err((
                        Some(resp.status().as_u16()),
                        format!("answered {}", resp.status()),
                    )),
                    Err(e) => Err((None, describe(&e))),
                };
                (inst, r, 1)
            });
        }
        collect_counted(op, phase, &mut tasks).await
    }

    async fn wait_restart(&self, op: &mut Operation, d: &Deployment) -> Result<(), String> {
        let deadline = Duration::from_secs(d.warmup.timeout_secs);
        let mut tasks = tokio::task::JoinSet::new();
        for inst in &d.instances {
            let (client, inst) = (self.client.clone(), inst.clone());
            let url = format!("http://{inst}{}", d.warmup.path);
            tasks.spawn(async move {
                let start = Instant::now();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match client
                        .get(&url)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                    {
                        Ok(resp) => return (inst, Ok(resp.status().as_u16()), attempts),
                        Err(e) if start.elapsed() >= deadline => {
                            return (
                                inst,
                                Err((None, format!("did not answer again: {}", describe(&e)))),
                                attempts,
                            )
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        }
        collect_counted(op, activity::WAIT_RESTART, &mut tasks).await
    }

    async fn warmup(&self, op: &mut Operation, plan: &Plan) -> Result<(), String> {
        let d = plan.source_deployment();
        let host = plan.target_host();
        let mut tasks = tokio::task::JoinSet::new();
        for inst in &d.instances {
            let (client, inst, host) = (self.client.clone(), inst.clone(), host.clone());
            let warm = d.warmup.clone();
            tasks.spawn(async move {
                let url = format!("http://{inst}{}", warm.path);
                let mut last = (None, String::new());
                for attempt in 1..=warm.retries.saturating_add(1) {
                    let sent = client
                        .get(&url)
                        .header(reqwest::header::HOST, &host)
                        .timeout(Duration::from_secs(warm.timeout_secs))
                        .send()
                        .await;
                    match sent {
                        Ok(resp) => {
                            let code = resp.status().as_u16();
                            if warm.statuses.is_empty() || warm.statuses.contains(&code) {
                                return (inst, Ok(code), attempt);
                            }
                            last = (
                                Some(code),
                                format!("answered {code}, expected one of {:?}", warm.statuses),
                            );
                        }
                        Err(e) => last = (None, describe(&e)),
                    }
                    if attempt <= warm.retries {
                        let backoff = 100u64.saturating_mul(1 << attempt.min(5)).min(2000);
                        tokio::time::sleep(Duration::from_millis(backoff)).await;
                    }
                }
                (inst, Err(last), warm.retries.saturating_add(1))
            });
        }
        collect_counted(op, activity::WARMUP, &mut tasks).await
    }
}

type InstanceOutcome = Result<u16, (Option<u16>, String)>;

async fn collect_counted(
    op: &mut Operation,
    phase: &str,
    tasks: &mut tokio::task::JoinSet<(String, InstanceOutcome, u32)>,
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
            phase: phase.to_string(),
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

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
FLAG = "old"
[sites.slots.sticky_settings]
DB = "prod-db"
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["127.0.0.1:2"]
[sites.slots.settings]
FLAG = "new"
[sites.slots.sticky_settings]
DB = "staging-db"
[[sites.slots]]
name = "empty"
"#;
        Config::parse(cfg, Path::new("t")).unwrap().1
    }

    fn req(source: &str, target: &str, action: Action) -> SwapRequest {
        SwapRequest {
            site: "shop".into(),
            source: source.into(),
            target: target.into(),
            action,
        }
    }

    #[test]
    fn exchange_moves_content_and_keeps_sticky_settings() {
        let mut s = state();
        let plan = check(&s, None, &req("staging", "production", Action::Swap)).unwrap();
        exchange(&mut s, &plan).unwrap();
        let site = &s.sites["shop"];
        let prod = &site.slots["production"];
        assert_eq!(prod.deployment.as_ref().unwrap().build_version, "v2");
        assert_eq!(prod.settings["FLAG"], "new");
        assert_eq!(prod.sticky_settings["DB"], "prod-db");
        assert_eq!(
            site.slots["staging"]
                .deployment
                .as_ref()
                .unwrap()
                .build_version,
            "v1"
        );
        // a second exchange with the same (now stale) plan is refused
        assert!(matches!(
            exchange(&mut s, &plan),
            Err(ControlError::Conflict(_))
        ));
        // swapping back is the rollback
        let back = check(&s, None, &req("staging", "production", Action::Swap)).unwrap();
        exchange(&mut s, &back).unwrap();
        assert_eq!(s, state());
    }

    #[test]
    fn effective_settings_for_the_target() {
        let s = state();
        let site = &s.sites["shop"];
        let eff = site.slots["staging"].settings_in(&site.slots["production"]);
        assert_eq!(eff["FLAG"], "new");
        assert_eq!(eff["DB"], "prod-db");
    }

    #[test]
    fn what_may_start() {
        let s = state();
        assert!(matches!(
            check(&s, None, &req("nope", "production", Action::Swap)),
            Err(ControlError::NotFound(_))
        ));
        assert!(matches!(
            check(&s, None, &req("staging", "staging", Action::Swap)),
            Err(ControlError::Invalid(_))
        ));
        assert!(matches!(
            check(&s, None, &req("empty", "production", Action::Swap)),
            Err(ControlError::Conflict(_))
        ));
        assert!(matches!(
            check(&s, None, &req("staging", "production", Action::Reset)),
            Err(ControlError::Conflict(_))
        ));
        let site = &s.sites["shop"];
        let pending = Preview {
            source: "staging".into(),
            target: "production".into(),
            operation_id: "op-1".into(),
            source_deployment: site.slots["staging"].deployment.clone(),
            target_deployment: site.slots["production"].deployment.clone(),
        };
        assert!(pending.stands(&s, "shop"));
        let mut redeployed = s.clone();
        redeployed
            .sites
            .get_mut("shop")
            .unwrap()
            .slots
            .get_mut("staging")
            .unwrap()
            .deployment = None;
        assert!(!pending.stands(&redeployed, "shop"));
        assert!(!pending.stands(&s, "other-site"));
        let p = Some(&pending);
        assert!(check(&s, p, &req("staging", "production", Action::Swap))
            .unwrap()
            .completes
            .is_some());
        assert!(check(&s, p, &req("staging", "production", Action::Reset)).is_ok());
        assert!(matches!(
            check(&s, p, &req("staging", "production", Action::Preview)),
            Err(ControlError::Conflict(_))
        ));
        assert!(matches!(
            check(&s, p, &req("empty", "staging", Action::Swap)),
            Err(ControlError::Conflict(_))
        ));
        // swapping into an empty slot is allowed
        assert!(check(&s, None, &req("staging", "empty", Action::Swap)).is_ok());
    }

    #[test]
    fn warmup_host_is_the_targets() {
        let s = state();
        let plan = check(&s, None, &req("staging", "production", Action::Swap)).unwrap();
        assert_eq!(plan.target_host(), "shop.test");
    }
}
