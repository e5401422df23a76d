//! The control plane: the only writer of routing state.
//!
//! Every change — config applied at start or reload, an API call, a swap, a
//! health flip — goes through here: it is validated, persisted durably, and
//! then a new `RouteTable` is compiled and published with one
//! `ArcSwap::store`. When a method returns, the next request sees the change.

pub mod merge;
pub mod ops;
pub mod ramp;
pub mod reload;
pub mod swap;

use crate::activity::{Operation, Status};
use crate::config::{Config, RoutingSection};
use crate::model::{Problem, State};
use crate::routing::{Health, RouteTable};
use crate::store::claim::{orphaned, LocalClaims};
use crate::store::{
    Claim, ClaimError, ClaimRecord, Fence, Persisted, Preview, StateStore, StoreError,
    StoreListener,
};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many operations the activity log keeps (oldest dropped first).
pub const ACTIVITY_RETENTION: usize = 1000;

/// How often a write is applied again on a newer state another node wrote
/// meanwhile before it is given up with 409.
const WRITE_ATTEMPTS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn problems_text(p: &[Problem]) -> String {
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A consistent read of the control plane, for the admin API.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub revision: u64,
    pub state: State,
    pub health: Health,
}

struct Inner {
    doc: Persisted,
    /// The activity log by id; ids sort by creation time.
    operations: BTreeMap<String, Operation>,
    health: Health,
    routing: RoutingSection,
    table_version: u64,
}

pub struct ControlPlane {
    inner: Mutex<Inner>,
    table: Arc<ArcSwap<RouteTable>>,
    store: Box<dyn StateStore>,
    /// Swaps found running at open (the process died mid-swap, already
    /// marked `interrupted`) or orphaned by a dead node of the fleet (still
    /// `running`: whoever claims the site marks them), for the swap engine
    /// to put the apps' settings back in order.
    interrupted: Mutex<Vec<Operation>>,
    /// Wakes the swap engine when `interrupted` gained an entry.
    interruptions: tokio::sync::Notify,
    /// What runs once per name in this process (and, through the store's
    /// lease, once in the fleet).
    claims: LocalClaims,
    /// This process wrote the config's `[[sites]]` at open (always with the
    /// file store; with a fleet's store only the node that seeded it).
    seeded_here: std::sync::atomic::AtomicBool,
    /// Outlier-ejection state of the instances, carried across tables.
    outliers: crate::outlier::Outliers,
    /// Shadows (SPEC §15): their queues and figures, carried across tables.
    shadows: crate::shadow::Shadows,
}

impl ControlPlane {
    /// Load the persisted state (or start empty), apply `seed` from the
    /// config on top of it, persist, and publish the first table.
    pub fn open(
        config: &Config,
        seed: State,
        store: Box<dyn StateStore>,
    ) -> Result<ControlPlane, ControlError> {
        let loaded = store.load()?;
        // A fleet's store that holds a state already is what is true: the
        // config seeds only an empty one (SPEC §9).
        let seeded = store.shared() && loaded.is_some();
        let store_shared = store.shared();
        let doc = loaded.unwrap_or_default();
        let mut operations = BTreeMap::new();
        let mut interrupted = Vec::new();
        for mut op in store.load_operations()? {
            if store.shared() {
                // a swap `running` here may be running on another node
                operations.insert(op.id.clone(), op);
                continue;
            }
            // A swap that was running when the process died: the routing is
            // whatever its last atomic write left (pre- or post-switch).
            // (A ramp's operation stays running: its runner picks it up.)
            if op.status == Status::Running && op.action != crate::activity::Action::Ramp {
                interrupt(&mut op, "slotproxy stopped");
                store.save_operation(&op)?;
                interrupted.push(op.clone());
            }
            // A preview whose pending entry is gone (completed or dropped in
            // the write the process died right after).
            if op.status == Status::Previewing
                && !doc.previews.values().any(|p| p.operation_id == op.id)
            {
                op.finish(
                    Status::Interrupted,
                    Some(
                        "slotproxy stopped while this preview was being completed or dropped"
                            .into(),
                    ),
                );
                store.save_operation(&op)?;
            }
            operations.insert(op.id.clone(), op);
        }
        let routing = config.routing.clone();
        let addresses = crate::names::addresses(&doc.state);
        let table = RouteTable::compile(&doc.state, &routing, &Health::new(), &addresses, 0);
        let cp = ControlPlane {
            inner: Mutex::new(Inner {
                doc,
                operations,
                health: Health::new(),
                routing,
                table_version: 0,
            }),
            table: Arc::new(ArcSwap::from_pointee(table)),
            store,
            interrupted: Mutex::new(interrupted),
            interruptions: tokio::sync::Notify::new(),
            claims: LocalClaims::default(),
            seeded_here: std::sync::atomic::AtomicBool::new(!store_shared),
            outliers: crate::outlier::Outliers::default(),
            shadows: crate::shadow::Shadows::default(),
        };
        if seeded {
            log::info!(
                "state from {} (revision {}); config.toml's [[sites]] seed only an empty store, so they are not applied",
                cp.store.describe(),
                cp.lock().doc.revision
            );
            cp.republish();
        } else if cp.apply_config_written(config, seed, store_shared)?.1 && store_shared {
            // of nodes starting at once on an empty store, only the one
            // whose seed landed gets here
            cp.seeded_here
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(cp)
    }

    /// `Err(why)` while the state store cannot be written (a fleet's etcd
    /// is unreachable): the node serves its last table, degraded.
    pub fn store_health(&self) -> Result<(), String> {
        self.store.health()
    }

    /// The swaps that were interrupted by the last stop (once).
    pub fn take_interrupted(&self) -> Vec<Operation> {
        std::mem::take(&mut *self.interrupted.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wait until [`take_interrupted`](Self::take_interrupted) has more.
    pub async fn interruptions(&self) {
        self.interruptions.notified().await
    }

    /// Take `name` for `operation`: once in this process and, with a
    /// fleet's store, once in the fleet under a lease ("run once for the
    /// fleet"); released when the [`Claim`] drops. See
    /// [`crate::store::claim`].
    pub fn claim(&self, name: &str, operation: &str) -> Result<Claim, ClaimError> {
        self.claims
            .claim(name, operation, || self.store.lease(name, operation))
    }

    /// An activity-log entry as the store holds it now (another node may
    /// have changed it since this one last heard).
    pub fn stored_operation(&self, id: &str) -> Result<Option<Operation>, ControlError> {
        Ok(self.store.load_operation(id)?)
    }

    /// Hand the store to a successor process: from now on every change
    /// here fails, and this process only serves what it has.
    pub fn release_store(&self) {
        let _inner = self.lock();
        self.store.release();
    }

    /// The published table, shared with the proxy.
    pub fn table(&self) -> Arc<ArcSwap<RouteTable>> {
        self.table.clone()
    }

    pub fn state(&self) -> State {
        self.lock().doc.state.clone()
    }

    /// State, revision and instance health, read together.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            revision: inner.doc.revision,
            state: inner.doc.state.clone(),
            health: inner.health.clone(),
        }
    }

    pub fn store_description(&self) -> String {
        self.store.describe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the last good state in
        // place (it is only replaced after validation), so go on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply a change: `f` edits a copy of the state; the result must
    /// validate, is persisted, then published. Nothing changes on error.
    /// Returns `f`'s answer and the revision of the state the change
    /// produced (unchanged if the change was a no-op), so a
    /// caller can tell which of several concurrent writes landed last.
    pub fn update_at<T>(
        &self,
        mut f: impl FnMut(&mut State) -> Result<T, ControlError>,
    ) -> Result<(T, u64), ControlError> {
        self.update_doc(|doc| f(&mut doc.state))
    }

    /// The most general change: `f` edits a copy of the whole persisted
    /// document (state and pending previews), so several edits land in one
    /// durable write. The state must validate; nothing changes on error.
    ///
    /// With a shared store another node may have written first: then `f`
    /// runs again on the state it wrote (so it may run more than once), and
    /// the change lands on top of the other one instead of replacing it.
    pub fn update_doc<T>(
        &self,
        f: impl FnMut(&mut Persisted) -> Result<T, ControlError>,
    ) -> Result<(T, u64), ControlError> {
        let mut inner = self.lock();
        let (out, _) = self.write_locked(&mut inner, WRITE_ATTEMPTS, None, f)?;
        Ok((out, inner.doc.revision))
    }

    /// [`ControlPlane::update_doc`] under `claim`: the write lands only if
    /// the claim still stands in the store when it is made (one etcd
    /// transaction), so a node whose lease expired cannot make it.
    pub fn update_doc_claimed<T>(
        &self,
        claim: &Claim,
        f: impl FnMut(&mut Persisted) -> Result<T, ControlError>,
    ) -> Result<(T, u64), ControlError> {
        let fence = claim.fence();
        let mut inner = self.lock();
        let (out, _) = self.write_locked(&mut inner, WRITE_ATTEMPTS, fence.as_ref(), f)?;
        Ok((out, inner.doc.revision))
    }

    /// The compare-and-swap loop: edit a copy, validate, persist; on a
    /// conflict take the winner's document and edit that. Returns whether
    /// anything was written.
    fn write_locked<T>(
        &self,
        inner: &mut Inner,
        attempts: usize,
        fence: Option<&Fence>,
        mut f: impl FnMut(&mut Persisted) -> Result<T, ControlError>,
    ) -> Result<(T, bool), ControlError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut doc = inner.doc.clone();
            let out = f(&mut doc)?;
            let problems = doc.state.validate();
            if !problems.is_empty() {
                return Err(ControlError::Invalid(problems));
            }
            if doc == inner.doc {
                return Ok((out, false));
            }
            match self.commit(inner, doc, fence) {
                Ok(()) => return Ok((out, true)),
                Err(ControlError::Store(StoreError::Conflict(current))) => {
                    self.adopt(inner, *current);
                    if attempt >= attempts {
                        return Err(ControlError::Conflict(format!(
                            "other nodes changed the state {attempt} times while this change was being written; try again (revision now {})",
                            inner.doc.revision
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Take a document another node wrote and serve it.
    fn adopt(&self, inner: &mut Inner, doc: Persisted) {
        if doc != inner.doc {
            inner.doc = doc;
            self.forget_undeployed_health(inner);
            self.publish(inner);
        }
    }

    /// Apply a (re)loaded config: the three-way merge of `merge`, validated
    /// as a whole; on error the running state is kept.
    ///
    /// Returns the deployments the file brought in (`(site, slot)`), as
    /// seen in the very write that applied it: a deploy through the API
    /// landing at the same moment is not among them (it runs its own auto
    /// swap), so a reload never starts a second one for it.
    pub fn apply_config(
        &self,
        config: &Config,
        seed: State,
    ) -> Result<Vec<(String, String)>, ControlError> {
        self.apply_config_written(config, seed, false)
            .map(|(new, _)| new)
    }

    /// Whether the state this process started with came from its own
    /// config: what runs once "on start" for a fleet (the declarative swap)
    /// runs on that node only, not once per node.
    pub fn seeded_here(&self) -> bool {
        self.seeded_here.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`apply_config`](Self::apply_config), telling whether it wrote.
    /// `seeding`: the first write to an empty shared store. It is tried
    /// once: when another node's seed landed first, that one is the state
    /// (SPEC §9: one seeds, the rest load it), and this node's config is
    /// not merged over it.
    fn apply_config_written(
        &self,
        config: &Config,
        seed: State,
        seeding: bool,
    ) -> Result<(Vec<(String, String)>, bool), ControlError> {
        let mut inner = self.lock();
        let routing_changed = inner.routing != config.routing;
        let old_routing = std::mem::replace(&mut inner.routing, config.routing.clone());
        let attempts = if seeding { 1 } else { WRITE_ATTEMPTS };
        let written = self.write_locked(&mut inner, attempts, None, |doc| {
            let merged = merge::apply_config(&doc.state, &doc.applied_config, &seed);
            let brought = merge::new_deployments(&doc.state, &merged);
            doc.state = merged;
            doc.applied_config = seed.clone();
            Ok(brought)
        });
        let written = match written {
            // another node seeded first: its document was adopted
            Err(ControlError::Conflict(_)) if seeding => {
                log::info!("another node seeded the shared state first; serving its state");
                Ok((Vec::new(), false))
            }
            other => other,
        };
        match written {
            Err(e) => {
                inner.routing = old_routing;
                Err(e)
            }
            Ok((brought, false)) if routing_changed || inner.table_version == 0 => {
                self.publish(&mut inner);
                Ok((brought, false))
            }
            Ok(written) => Ok(written),
        }
    }

    /// Durably record a new or changed operation of the activity log.
    pub fn record(&self, op: &Operation) -> Result<(), ControlError> {
        let mut inner = self.lock();
        self.record_locked(&mut inner, op)
    }

    /// Change operation `id` of the activity log with `f` and record it
    /// durably, all under the control lock, so that two edits of one
    /// operation (a ramp's step and its stop; a swap completing a preview
    /// and the preview being ended) cannot overwrite each other as a read
    /// outside the lock followed by `record` could. `None`: no such
    /// operation. Nothing is written when `f` changes nothing.
    pub fn update_operation(
        &self,
        id: &str,
        f: impl FnOnce(&mut Operation),
    ) -> Result<Option<Operation>, ControlError> {
        let mut inner = self.lock();
        let Some(before) = inner.operations.get(id) else {
            return Ok(None);
        };
        let mut op = before.clone();
        f(&mut op);
        if op != *before {
            self.record_locked(&mut inner, &op)?;
        }
        Ok(Some(op))
    }

    /// Record `op` only if the store still holds `expected` for it (see
    /// [`StateStore::save_operation_if`]); whether it was written.
    pub fn record_if(&self, op: &Operation, expected: &Operation) -> Result<bool, ControlError> {
        let mut inner = self.lock();
        if !self.store.save_operation_if(op, expected)? {
            return Ok(false);
        }
        inner.operations.insert(op.id.clone(), op.clone());
        Ok(true)
    }

    fn record_locked(&self, inner: &mut Inner, op: &Operation) -> Result<(), ControlError> {
        self.store.save_operation(op)?;
        inner.operations.insert(op.id.clone(), op.clone());
        while inner.operations.len() > ACTIVITY_RETENTION {
            let Some((oldest, _)) = inner.operations.pop_first() else {
                break;
            };
            self.store.delete_operation(&oldest)?;
        }
        Ok(())
    }

    pub fn operation(&self, id: &str) -> Option<Operation> {
        self.lock().operations.get(id).cloned()
    }

    /// Operations of `site`, newest first.
    pub fn activity(&self, site: &str) -> Vec<Operation> {
        self.lock()
            .operations
            .values()
            .rev()
            .filter(|o| o.site == site)
            .cloned()
            .collect()
    }

    /// Every ramp, by site, then slot.
    pub fn ramps(&self) -> ramp::Ramps {
        self.lock().doc.ramps.clone()
    }

    pub fn preview(&self, site: &str) -> Option<Preview> {
        self.lock().doc.previews.get(site).cloned()
    }

    /// Persist (or clear) the pending preview of `site`.
    pub fn set_preview(&self, site: &str, preview: Option<Preview>) -> Result<(), ControlError> {
        self.update_doc(|doc| {
            match preview.clone() {
                Some(p) => doc.previews.insert(site.to_string(), p),
                None => doc.previews.remove(site),
            };
            Ok(())
        })
        .map(|_| ())
    }

    /// The reader of outlier ejections and returns, for the activity log
    /// (once; see [`ControlPlane::record_outlier_events`]).
    pub fn outlier_events(&self) -> Option<std::sync::mpsc::Receiver<crate::outlier::Event>> {
        self.outliers.take_events()
    }

    /// Write each outlier ejection and return as an activity-log entry
    /// (action `outlier`) and an access-log line, until the queue closes.
    /// Blocking: run it on its own thread.
    pub fn record_outlier_events(&self, events: std::sync::mpsc::Receiver<crate::outlier::Event>) {
        for e in events {
            let mut op = Operation::new(
                &e.site,
                &e.slot,
                &e.address,
                crate::activity::Action::Outlier,
            );
            let phase = if e.ejected {
                crate::activity::PhaseName::Eject
            } else {
                crate::activity::PhaseName::Return
            };
            op.add_phase(
                phase,
                crate::activity::PhaseResult::Succeeded,
                e.detail.clone(),
            );
            op.finish(Status::Succeeded, None);
            if let Err(err) = self.record(&op) {
                log::error!("cannot record outlier event of {}: {err}", e.address);
            }
            crate::access_log::event(&e);
        }
    }

    /// The shadow of `site`/`slot` running on this node (SPEC §15).
    pub fn shadow(&self, site: &str, slot: &str) -> Option<Arc<crate::shadow::ShadowRoute>> {
        self.shadows.get(site, slot)
    }

    /// Publish the same state again (an instance name resolves anew).
    pub fn republish(&self) {
        let mut inner = self.lock();
        self.publish(&mut inner);
    }

    /// Record health results; a flip publishes a new table.
    pub fn set_health(&self, results: &[(String, bool)]) {
        let mut inner = self.lock();
        let mut changed = false;
        for (label, up) in results {
            let was = inner.health.insert(label.clone(), *up);
            changed |= was.unwrap_or(true) != *up;
        }
        if changed {
            self.publish(&mut inner);
        }
    }

    /// Persist `doc` and publish it. A pending preview whose slots no
    /// longer run what was previewed (deleted, redeployed, swapped) ends in
    /// the same write, and its operation is marked cancelled.
    fn commit(
        &self,
        inner: &mut Inner,
        mut doc: Persisted,
        fence: Option<&Fence>,
    ) -> Result<(), ControlError> {
        let mut ended = Vec::new();
        let state = &doc.state;
        doc.previews.retain(|site, p| {
            let stands = p.stands(state, site);
            if !stands {
                ended.push(p.operation_id.clone());
            }
            stands
        });
        doc.revision = inner.doc.revision + 1;
        match fence {
            Some(fence) => self.store.save_fenced(&doc, fence)?,
            None => self.store.save(&doc)?,
        }
        inner.doc = doc;
        self.forget_undeployed_health(inner);
        self.publish(inner);
        for id in ended {
            if let Some(mut op) = inner.operations.get(&id).cloned() {
                if !op.status.is_final() {
                    op.finish(
                        Status::Cancelled,
                        Some("the previewed slots changed (deployed, deleted or swapped)".into()),
                    );
                    if let Err(e) = self.store.save_operation(&op) {
                        log::error!("cannot record operation {id}: {e}");
                    }
                    inner.operations.insert(id, op);
                }
            }
        }
        Ok(())
    }

    /// Forget the health of instances no longer deployed anywhere: if the
    /// address comes back later it starts fresh (up), as the health
    /// checker's tracker for it does.
    fn forget_undeployed_health(&self, inner: &mut Inner) {
        let deployed: std::collections::HashSet<&str> = inner
            .doc
            .state
            .sites
            .values()
            .flat_map(|s| s.slots.values())
            .filter_map(|s| s.deployment.as_ref())
            .flat_map(|d| d.instances.iter().map(String::as_str))
            .collect();
        let stale: Vec<String> = inner
            .health
            .keys()
            .filter(|l| !deployed.contains(l.as_str()))
            .cloned()
            .collect();
        for label in stale {
            inner.health.remove(&label);
        }
    }

    fn publish(&self, inner: &mut Inner) {
        inner.table_version += 1;
        // names new to this state resolve here, before the table is built
        let addresses = crate::names::addresses(&inner.doc.state);
        let mut table = RouteTable::compile(
            &inner.doc.state,
            &inner.routing,
            &inner.health,
            &addresses,
            inner.table_version,
        );
        self.outliers.attach(&mut table);
        self.shadows
            .attach(&mut table, &inner.doc.state, &self.table);
        table.attach_metrics();
        self.table.store(Arc::new(table));
    }
}

/// End an operation whose process (or fleet node) stopped while it ran:
/// the routing is whatever its last atomic write left, pre- or post-switch.
pub fn interrupt(op: &mut Operation, who: &str) {
    let phase = op.phases.last().map_or("start", |p| p.name.as_str());
    op.finish(
        Status::Interrupted,
        Some(format!(
            "{who} during phase {phase}; routing is as last persisted (the switch is one atomic write)"
        )),
    );
}

/// What other nodes of a fleet wrote, as the shared store reports it: the
/// table follows without this node writing anything.
impl StoreListener for ControlPlane {
    fn state_changed(&self, doc: Persisted) {
        crate::names::prefetch_state(&doc.state);
        let mut inner = self.lock();
        // an older document than the one held (this node's own write seen
        // late) changes nothing
        if doc.revision > inner.doc.revision {
            log::info!("state revision {} from another node", doc.revision);
            self.adopt(&mut inner, doc);
        }
    }

    fn operation_changed(&self, op: Operation) {
        self.lock().operations.insert(op.id.clone(), op);
    }

    fn operation_deleted(&self, id: &str) {
        self.lock().operations.remove(id);
    }

    fn reloaded(&self, doc: Option<Persisted>, ops: Vec<Operation>) {
        if let Some(doc) = &doc {
            crate::names::prefetch_state(&doc.state);
        }
        let mut inner = self.lock();
        if let Some(doc) = doc {
            if doc != inner.doc {
                log::info!(
                    "state read anew from the store: revision {} (held {})",
                    doc.revision,
                    inner.doc.revision
                );
                self.adopt(&mut inner, doc);
            }
        }
        inner.operations = ops.into_iter().map(|o| (o.id.clone(), o)).collect();
    }

    fn claims_seen(&self, live: Vec<ClaimRecord>) {
        let found = orphaned(self.lock().operations.values(), &live);
        if found.is_empty() {
            return;
        }
        let mut queue = self.interrupted.lock().unwrap_or_else(|p| p.into_inner());
        for op in found {
            if !queue.iter().any(|q| q.id == op.id) {
                log::info!(
                    "{} of site {} runs under no live claim: its node stopped; taking over",
                    op.id,
                    op.site
                );
                queue.push(op);
            }
        }
        drop(queue);
        self.interruptions.notify_one();
    }
}
