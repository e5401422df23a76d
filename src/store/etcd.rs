//! The fleet's state store: one state document and the activity log in etcd
//! under `[state] etcd_prefix`, shared by every node with the same endpoints
//! and prefix (SPEC §9).
//!
//! Keys under the prefix:
//!
//! - `/state`: the [`Persisted`] document, JSON. Every write is a
//!   transaction comparing the key's mod revision with the one this node
//!   last read, so two nodes writing at once never lose a change: the loser
//!   gets [`StoreError::Conflict`] with the winner's document and the control
//!   plane applies its change again on top of it. The first write is a
//!   create-if-absent (mod revision 0), which is how the first node seeds.
//! - `/operations/<id>`: one activity-log entry, JSON (one writer each: the
//!   node running that swap).
//! - `/nodes/<id>`: a [`FleetNode`] under this node's lease, refreshed every
//!   [`PROBE`]; it disappears when the node does.
//! - `/claims/<name>`: a [`ClaimRecord`] (who runs which operation under it,
//!   e.g. the swap of a site), created only if absent, under a lease of its
//!   own that the holder keeps alive ([`CLAIM_TTL_SECS`]). Every node keeps
//!   the set of live claims from the watch; when one goes (released, or its
//!   node died and the lease expired) the control plane hears of it, to
//!   take over what a dead node left running.
//!
//! The node's own copy of the last state it saw is kept as a snapshot in
//! `[state] dir` (the [`FileStore`] format), so a node started while etcd is
//! unreachable serves from it, with writes refused.
//!
//! Every endpoint has a client of its own ([`super::endpoints`]): a call
//! goes to the member that answered last and on to the next while members
//! cannot answer, so one member killed interrupts neither reads nor writes.
//!
//! [`EtcdStore::follow`] runs the node's session on a runtime of the store's
//! own: read everything, watch the prefix from that revision, keep the
//! node's lease alive, all on the member that answered the read; when that
//! member goes away, a new session starts at once on another one. A change
//! by another node reaches the control plane through [`StoreListener`]; no
//! member answering (etcd unreachable) marks the store down (writes answer 503, `slotproxy_state_store_up` 0) until a new
//! session reads everything again, which is also how a node catches up after
//! a compaction or a restored etcd (revision going backwards).

use super::claim::{ClaimError, ClaimRecord, Fence, FleetLease};
use super::endpoints::Endpoints;
use super::{FileStore, Persisted, StateStore, StoreError, StoreListener};
use crate::activity::Operation;
use crate::config::StateSection;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one etcd call may take before the store is called unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a session proves etcd answers (lease keep-alive) and refreshes
/// this node's entry. Down is noticed within PROBE + CALL_TIMEOUT.
pub const PROBE: Duration = Duration::from_secs(2);
/// The node lease: a node that stops refreshing leaves the fleet list after it.
const NODE_TTL_SECS: i64 = 10;
/// A claim's lease (a swap's hold on its site): a node that dies mid-swap
/// is taken over this long after its last keep-alive.
pub const CLAIM_TTL_SECS: i64 = 5;
/// How often a claim's lease is kept alive.
const CLAIM_BEAT: Duration = Duration::from_millis(1500);
/// Longest wait for one claim renewal before trying the next member.
const CLAIM_RENEW_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between sessions while etcd is unreachable.
const RETRY: Duration = Duration::from_secs(1);

/// A live node, as `GET /api/v1/fleet` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetNode {
    pub id: String,
    /// The proxy's listen address.
    pub address: String,
    /// The state revision its table was built from.
    pub revision: u64,
    /// Unix seconds of its last refresh.
    pub last_seen: u64,
}

/// The compare-and-swap base: the document revision this node last read or
/// wrote, and the etcd mod revision of the key holding it (0 = absent).
#[derive(Debug, Clone, Copy, Default)]
struct Base {
    doc_revision: u64,
    mod_revision: i64,
}

pub struct EtcdStore {
    endpoints: Vec<String>,
    prefix: String,
    /// A client per endpoint: a call goes to another member when one is down.
    pool: Arc<Endpoints>,
    rt: tokio::runtime::Runtime,
    snapshot: FileStore,
    base: Mutex<Base>,
    /// Mod revisions of this node's own operation writes, so the watch does
    /// not replay an older version over a newer one written here.
    written: Mutex<HashMap<String, i64>>,
    /// Operations read by `load`, handed out once by `load_operations`.
    loaded_ops: Mutex<Option<Vec<Operation>>>,
    up: AtomicBool,
    why_down: Mutex<String>,
    released: AtomicBool,
    node: Mutex<FleetNode>,
    /// The live claims of the fleet by key, as the watch last told.
    claims: Mutex<BTreeMap<String, ClaimRecord>>,
}

impl EtcdStore {
    /// Set up a client per endpoint (made on first use: etcd may be down)
    /// and open the snapshot directory.
    /// `node_id` and `address` name this node in the fleet list.
    pub fn open(
        cfg: &StateSection,
        node_id: &str,
        address: &str,
        patience: Duration,
    ) -> Result<Arc<EtcdStore>, StoreError> {
        let snapshot = FileStore::open(&cfg.dir, patience)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("slotproxy-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start etcd client: {e}")))?;
        // require_leader: a member cut off from the others fails calls and
        // watches instead of serving what it last knew
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(PROBE, CALL_TIMEOUT)
            .with_require_leader(true);
        if let (Some(u), Some(p)) = (&cfg.etcd_username, &cfg.etcd_password) {
            options = options.with_user(u.clone(), p.clone());
        }
        if let Some(ca) = &cfg.etcd_ca_path {
            options = options.with_tls(tls_options(cfg, ca)?);
        }
        let endpoints = cfg.etcd_endpoints.clone();
        // lazily: each member's client is made on first use
        let pool = Arc::new(Endpoints::new(endpoints.clone(), options, CALL_TIMEOUT));
        let now = unix_now();
        Ok(Arc::new(EtcdStore {
            prefix: cfg.etcd_prefix.clone(),
            endpoints,
            pool,
            rt,
            snapshot,
            base: Mutex::new(Base::default()),
            written: Mutex::new(HashMap::new()),
            loaded_ops: Mutex::new(None),
            up: AtomicBool::new(false),
            why_down: Mutex::new("not connected yet".into()),
            released: AtomicBool::new(false),
            node: Mutex::new(FleetNode {
                id: node_id.into(),
                address: address.into(),
                revision: 0,
                last_seen: now,
            }),
            claims: Mutex::new(BTreeMap::new()),
        }))
    }

    fn state_key(&self) -> String {
        format!("{}/state", self.prefix)
    }
    fn ops_prefix(&self) -> String {
        format!("{}/operations/", self.prefix)
    }
    fn op_key(&self, id: &str) -> String {
        format!("{}{id}", self.ops_prefix())
    }
    fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    fn claims_prefix(&self) -> String {
        format!("{}/claims/", self.prefix)
    }

    fn endpoints_text(&self) -> String {
        self.endpoints.join(", ")
    }

    fn set_up(&self, up: bool, why: &str) {
        if !up {
            *lock(&self.why_down) = why.to_string();
        }
        let was = self.up.swap(up, Ordering::SeqCst);
        if was != up {
            if up {
                log::info!("state store: etcd at {} answers", self.endpoints_text());
            } else {
                log::warn!(
                    "state store: etcd at {} unavailable ({why}); serving the last state, writes refused",
                    self.endpoints_text()
                );
            }
        }
        crate::metrics::set_state_store_up(up);
    }

    /// Run `f` with a member's client on the store's runtime and wait for
    /// it (from any thread, inside an async runtime or not), at most
    /// [`CALL_TIMEOUT`] per member tried.
    fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
    {
        if self.released.load(Ordering::SeqCst) {
            return Err(StoreError::HandedOver);
        }
        if !self.up.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(format!(
                "etcd at {} is unreachable ({})",
                self.endpoints_text(),
                lock(&self.why_down)
            )));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        self.rt.spawn(async move {
            let _ = tx.send(pool.run(f).await);
        });
        match rx.recv_timeout(self.patience()) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "{what} at etcd {}: {e}",
                self.endpoints_text()
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what}: etcd at {} did not answer within {}s",
                self.endpoints_text(),
                self.patience().as_secs()
            ))),
        }
    }

    /// How long a caller waits for a call that may try every member: on
    /// each, up to [`CALL_TIMEOUT`] to connect and as long for the call, so
    /// the caller never gives up on a write that then lands.
    fn patience(&self) -> Duration {
        2 * CALL_TIMEOUT * self.pool.len().max(1) as u32 + Duration::from_secs(1)
    }

    /// Read the whole prefix: the document (with its mod revision), the
    /// activity log, and the etcd revision of the read.
    /// Also which endpoint answered.
    async fn read_all(pool: &Endpoints, prefix: &str) -> Result<(ReadAll, usize), String> {
        let (resp, endpoint) = pool
            .run_on(|mut c| {
                let p = prefix.to_string();
                async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let (mut doc, mut ops, mut claims) = (None, Vec::new(), BTreeMap::new());
        let (state_key, ops_prefix) = (format!("{prefix}/state"), format!("{prefix}/operations/"));
        let claims_prefix = format!("{prefix}/claims/");
        for kv in resp.kvs() {
            if kv.key().starts_with(claims_prefix.as_bytes()) {
                if let Ok(c) = serde_json::from_slice::<ClaimRecord>(kv.value()) {
                    claims.insert(String::from_utf8_lossy(kv.key()).into_owned(), c);
                }
                continue;
            }
            if kv.key() == state_key.as_bytes() {
                let d: Persisted = serde_json::from_slice(kv.value())
                    .map_err(|e| format!("{state_key} is not valid state: {e}"))?;
                doc = Some((d, kv.mod_revision()));
            } else if kv.key().starts_with(ops_prefix.as_bytes()) {
                match serde_json::from_slice(kv.value()) {
                    Ok(op) => ops.push(op),
                    Err(e) => log::warn!(
                        "ignoring {}: not an operation ({e})",
                        String::from_utf8_lossy(kv.key())
                    ),
                }
            }
        }
        Ok(((doc, ops, claims, revision), endpoint))
    }

    /// Keep the snapshot in step with what etcd holds (best effort: the
    /// snapshot only matters for a start while etcd is down).
    fn snapshot_doc(&self, doc: &Persisted) {
        if let Err(e) = self.snapshot.save(doc) {
            log::warn!("cannot write the local snapshot: {e}");
        }
    }

    fn snapshot_op(&self, op: &Operation) {
        if let Err(e) = self.snapshot.save_operation(op) {
            log::warn!("cannot write the local snapshot: {e}");
        }
    }

    /// The live nodes of the fleet, from their leased entries.
    pub fn nodes(&self) -> Result<Vec<FleetNode>, StoreError> {
        let prefix = self.nodes_prefix();
        let resp = self.call("list nodes", move |mut c| {
            let p = prefix.clone();
            async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
        })?;
        let mut nodes: Vec<FleetNode> = resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Follow etcd for the life of the process: sessions of read-all, watch
    /// and keep-alive, with a pause between them while etcd is unreachable.
    ///
    /// What the sessions read reaches `listener` in order on a thread of its
    /// own: the listener takes the control plane's lock, which a writer holds
    /// while it waits for etcd, so it must never block the runtime that
    /// carries etcd's answers.
    pub fn follow(self: &Arc<Self>, listener: Arc<dyn StoreListener>) {
        let (tx, rx) = std::sync::mpsc::channel::<Delivery>();
        let applier = self.clone();
        let spawned = std::thread::Builder::new()
            .name("slotproxy-follow".into())
            .spawn(move || {
                for d in rx {
                    applier.deliver(&*listener, d);
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot follow etcd: {e}");
            return;
        }
        let store = self.clone();
        self.rt.spawn(async move {
            let mut last_revision = 0i64;
            let mut lost_at: Option<Instant> = None;
            loop {
                match store.session(&tx, &mut last_revision).await {
                    SessionEnd::Again(why) => {
                        log::info!("state store: reading everything again ({why})")
                    }
                    // one member went away: a new session on another at
                    // once, without calling the store down, unless sessions
                    // keep breaking as soon as they start
                    SessionEnd::Lost(why, endpoint)
                        if lost_at.is_none_or(|t| t.elapsed() > PROBE * 2) =>
                    {
                        log::warn!("state store: {why}; following etcd through another member");
                        store.pool.failed(endpoint);
                        lost_at = Some(Instant::now());
                    }
                    SessionEnd::Lost(why, endpoint) => {
                        store.pool.failed(endpoint);
                        store.set_up(false, &why);
                        tokio::time::sleep(RETRY).await;
                    }
                    SessionEnd::Unreachable(why) => {
                        store.set_up(false, &why);
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
    }

    /// One session: read everything through whichever member answers, then
    /// watch and keep the node's lease alive on that member.
    async fn session(
        &self,
        listener: &std::sync::mpsc::Sender<Delivery>,
        last_revision: &mut i64,
    ) -> SessionEnd {
        let endpoint = match Self::read_all(&self.pool, &self.prefix).await {
            Ok((read, endpoint)) => match self.pool.on(endpoint).await {
                Ok(client) => Ok((read, endpoint, client)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let ((doc, ops, claims, revision), endpoint, client) = match endpoint {
            Ok(r) => r,
            Err(why) => return SessionEnd::Unreachable(why),
        };
        let url = self.endpoints[endpoint].clone();
        match self
            .session_on(
                client,
                listener,
                last_revision,
                (doc, ops, claims, revision),
            )
            .await
        {
            Ok(why) => SessionEnd::Again(why),
            Err(why) => SessionEnd::Lost(format!("{url}: {why}"), endpoint),
        }
    }

    /// The session's stream part, on one member's `client`. `Ok(why)` asks
    /// for a new session at once (the watch was compacted away, or etcd's
    /// revision went backwards: restored); `Err(why)` means that member
    /// cannot be followed any more.
    async fn session_on(
        &self,
        mut client: Client,
        listener: &std::sync::mpsc::Sender<Delivery>,
        last_revision: &mut i64,
        read: ReadAll,
    ) -> Result<String, String> {
        let (doc, ops, claims, revision) = read;
        let lease = tokio::time::timeout(CALL_TIMEOUT, client.lease_grant(NODE_TTL_SECS, None))
            .await
            .map_err(|_| "lease grant: no answer".to_string())?
            .map_err(|e| format!("lease grant: {e}"))?
            .id();
        let (mut keeper, mut beats) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| format!("lease keep-alive: {e}"))?;
        let mut watch = client
            .watch(
                self.prefix.as_bytes().to_vec(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .map_err(|e| format!("watch: {e}"))?;
        // Everything from this read on reaches the listener in order.
        *lock(&self.base) = match &doc {
            Some((d, m)) => Base {
                doc_revision: d.revision,
                mod_revision: *m,
            },
            None => Base::default(),
        };
        *last_revision = revision;
        let _ = listener.send(Delivery::Reloaded(doc.map(|(d, _)| d), ops));
        // what a node that died while this one was away left running
        let live: Vec<ClaimRecord> = claims.values().cloned().collect();
        *lock(&self.claims) = claims;
        let _ = listener.send(Delivery::Claims(live));
        self.set_up(true, "");
        self.refresh_node(&mut client, lease).await?;
        let mut probe = tokio::time::interval(PROBE);
        probe.tick().await;
        loop {
            tokio::select! {
                msg = watch.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return Err("the watch ended".into()),
                        Err(e) => return Err(format!("watch: {e}")),
                    };
                    if resp.canceled() {
                        return Ok(format!(
                            "watch canceled at compact revision {}: {}",
                            resp.compact_revision(),
                            resp.cancel_reason()
                        ));
                    }
                    if let Some(h) = resp.header() {
                        *last_revision = (*last_revision).max(h.revision());
                    }
                    for ev in resp.events() {
                        if let Some(kv) = ev.kv() {
                            self.on_event(listener, ev.event_type(), kv);
                        }
                    }
                }
                _ = probe.tick() => {
                    let beat = tokio::time::timeout(CALL_TIMEOUT, async {
                        keeper.keep_alive().await?;
                        beats.message().await
                    }).await;
                    match beat {
                        Ok(Ok(Some(b))) if b.ttl() > 0 => {
                            let now = b.header().map_or(*last_revision, |h| h.revision());
                            if now < *last_revision {
                                return Ok(format!(
                                    "etcd's revision went back from {} to {now} (restored)",
                                    *last_revision
                                ));
                            }
                        }
                        Ok(Ok(_)) => return Err("the node lease expired".into()),
                        Ok(Err(e)) => return Err(format!("keep-alive: {e}")),
                        Err(_) => return Err(format!(
                            "no answer within {}s", CALL_TIMEOUT.as_secs()
                        )),
                    }
                    self.refresh_node(&mut client, lease).await?;
                }
            }
        }
    }

    async fn refresh_node(&self, client: &mut Client, lease: i64) -> Result<(), String> {
        let node = {
            let mut n = lock(&self.node);
            // the control plane serves what the store last read or wrote
            n.revision = lock(&self.base).doc_revision;
            n.last_seen = unix_now();
            n.clone()
        };
        let key = format!("{}{}", self.nodes_prefix(), node.id);
        let body = serde_json::to_vec(&node).expect("a node serializes");
        tokio::time::timeout(
            CALL_TIMEOUT,
            client.put(key, body, Some(PutOptions::new().with_lease(lease))),
        )
        .await
        .map_err(|_| "node entry: no answer".to_string())?
        .map_err(|e| format!("node entry: {e}"))?;
        Ok(())
    }

    /// Hand one delivery to the listener (on the follow thread), keeping the
    /// snapshot in step.
    fn deliver(&self, listener: &dyn StoreListener, d: Delivery) {
        match d {
            Delivery::Reloaded(doc, ops) => {
                if let Some(doc) = &doc {
                    self.snapshot_doc(doc);
                }
                for op in &ops {
                    self.snapshot_op(op);
                }
                listener.reloaded(doc, ops);
            }
            Delivery::State(doc) => {
                self.snapshot_doc(&doc);
                listener.state_changed(doc);
            }
            Delivery::Operation(op) => {
                self.snapshot_op(&op);
                listener.operation_changed(op);
            }
            Delivery::OperationDeleted(id) => {
                let _ = self.snapshot.delete_operation(&id);
                listener.operation_deleted(&id);
            }
            Delivery::Claims(live) => listener.claims_seen(live),
        }
    }

    fn on_event(
        &self,
        listener: &std::sync::mpsc::Sender<Delivery>,
        kind: EventType,
        kv: &etcd_client::KeyValue,
    ) {
        let key = kv.key();
        if key == self.state_key().as_bytes() {
            if kind != EventType::Put {
                log::warn!(
                    "{} was deleted in etcd; keeping the last state",
                    self.state_key()
                );
                return;
            }
            let doc: Persisted = match serde_json::from_slice(kv.value()) {
                Ok(d) => d,
                Err(e) => {
                    log::error!("ignoring {}: not valid state ({e})", self.state_key());
                    return;
                }
            };
            {
                let mut base = lock(&self.base);
                if kv.mod_revision() <= base.mod_revision {
                    return; // this node's own write, already held
                }
                *base = Base {
                    doc_revision: doc.revision,
                    mod_revision: kv.mod_revision(),
                };
            }
            let _ = listener.send(Delivery::State(doc));
        } else if key.starts_with(self.claims_prefix().as_bytes()) {
            let name = String::from_utf8_lossy(key).into_owned();
            let mut claims = lock(&self.claims);
            match kind {
                EventType::Put => {
                    if let Ok(c) = serde_json::from_slice::<ClaimRecord>(kv.value()) {
                        claims.insert(name, c);
                    }
                }
                EventType::Delete => {
                    claims.remove(&name);
                    let live = claims.values().cloned().collect();
                    let _ = listener.send(Delivery::Claims(live));
                }
            }
        } else if let Some(id) = key.strip_prefix(self.ops_prefix().as_bytes()) {
            let id = String::from_utf8_lossy(id).into_owned();
            if lock(&self.written)
                .get(&id)
                .is_some_and(|&m| kv.mod_revision() <= m)
            {
                return;
            }
            match kind {
                EventType::Put => match serde_json::from_slice::<Operation>(kv.value()) {
                    Ok(op) => {
                        let _ = listener.send(Delivery::Operation(op));
                    }
                    Err(e) => log::warn!("ignoring operation {id}: {e}"),
                },
                EventType::Delete => {
                    let _ = listener.send(Delivery::OperationDeleted(id));
                }
            }
        }
    }
}

/// How a session ended.
enum SessionEnd {
    /// Read everything again at once: compacted, or restored.
    Again(String),
    /// The member it followed (this endpoint) went away: follow another
    /// one at once.
    Lost(String, usize),
    /// No member could be read from: etcd is unreachable.
    Unreachable(String),
}

/// What a session read, on its way to the listener.
enum Delivery {
    Reloaded(Option<Persisted>, Vec<Operation>),
    State(Persisted),
    Operation(Operation),
    OperationDeleted(String),
    /// The live claims, after one ended or everything was read anew.
    Claims(Vec<ClaimRecord>),
}

/// What one read of the whole prefix holds: the document with its mod
/// revision, the activity log, the live claims by key, etcd's revision.
type ReadAll = (
    Option<(Persisted, i64)>,
    Vec<Operation>,
    BTreeMap<String, ClaimRecord>,
    i64,
);

fn tls_options(
    cfg: &StateSection,
    ca: &std::path::Path,
) -> Result<etcd_client::TlsOptions, StoreError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| StoreError::Io {
            path: p.display().to_string(),
            op: "read",
            source: e,
        })
    };
    let mut tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&cfg.etcd_cert_path, &cfg.etcd_key_path) {
        tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl StateStore for EtcdStore {
    /// What etcd holds (and the snapshot becomes a copy of it); with etcd
    /// unreachable, the snapshot, degraded; with neither, an error naming
    /// the endpoints.
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let (pool, prefix) = (self.pool.clone(), self.prefix.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(Self::read_all(&pool, &prefix).await);
        });
        let read = rx
            .recv_timeout(self.patience())
            .unwrap_or_else(|_| Err("no answer".into()));
        match read {
            Ok(((doc, ops, _, _), _)) => {
                self.set_up(true, "");
                for op in &ops {
                    self.snapshot_op(op);
                }
                *lock(&self.loaded_ops) = Some(ops);
                match doc {
                    Some((d, m)) => {
                        *lock(&self.base) = Base {
                            doc_revision: d.revision,
                            mod_revision: m,
                        };
                        self.snapshot_doc(&d);
                        Ok(Some(d))
                    }
                    None => Ok(None),
                }
            }
            Err(why) => {
                self.set_up(false, &why);
                match self.snapshot.load()? {
                    Some(d) => {
                        log::warn!(
                            "etcd at {} is unreachable ({why}): serving the local snapshot {} (revision {}), writes refused until etcd answers",
                            self.endpoints_text(),
                            self.snapshot.describe(),
                            d.revision
                        );
                        *lock(&self.loaded_ops) = Some(self.snapshot.load_operations()?);
                        Ok(Some(d))
                    }
                    None => Err(StoreError::Unavailable(format!(
                        "etcd at {} is unreachable ({why}) and there is no local snapshot in {} to start from; start etcd (or fix [state] etcd_endpoints) and try again",
                        self.endpoints_text(),
                        self.snapshot.describe()
                    ))),
                }
            }
        }
    }

    fn save(&self, doc: &Persisted) -> Result<(), StoreError> {
        self.save_with(doc, None)
    }

    /// The write also compares the claim key's lease: etcd refuses it if
    /// the lease expired or was revoked (the key is gone) or another node
    /// holds the claim now.
    fn save_fenced(&self, doc: &Persisted, fence: &Fence) -> Result<(), StoreError> {
        self.save_with(doc, Some(fence))
    }

    fn save_operation(&self, op: &Operation) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(op).expect("operation serializes");
        let key = self.op_key(&op.id);
        let resp = self.call("write operation", move |mut c| {
            let (key, body) = (key.clone(), body.clone());
            async move { c.put(key, body, None).await }
        })?;
        if let Some(h) = resp.header() {
            lock(&self.written).insert(op.id.clone(), h.revision());
        }
        self.snapshot_op(op);
        Ok(())
    }

    fn load_operations(&self) -> Result<Vec<Operation>, StoreError> {
        if let Some(ops) = lock(&self.loaded_ops).take() {
            return Ok(ops);
        }
        let prefix = self.ops_prefix();
        let resp = self.call("read operations", move |mut c| {
            let p = prefix.clone();
            async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
        })?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    fn delete_operation(&self, id: &str) -> Result<(), StoreError> {
        let key = self.op_key(id);
        self.call("delete operation", move |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })?;
        lock(&self.written).remove(id);
        self.snapshot.delete_operation(id)
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.snapshot.release();
    }

    fn describe(&self) -> String {
        format!(
            "etcd {} prefix {} (snapshot {})",
            self.endpoints_text(),
            self.prefix,
            self.snapshot.describe()
        )
    }

    fn shared(&self) -> bool {
        true
    }

    /// Create `<prefix>/claims/<name>` if absent, under a fresh lease kept
    /// alive until the claim is released; held: the holder's record.
    fn lease(
        &self,
        name: &str,
        operation: &str,
    ) -> Result<Option<Box<dyn FleetLease>>, ClaimError> {
        let key = format!("{}{name}", self.claims_prefix());
        let record = ClaimRecord {
            name: name.into(),
            node: lock(&self.node).id.clone(),
            operation: operation.into(),
            since: unix_now(),
        };
        let body = serde_json::to_vec(&record).expect("a claim serializes");
        let (id, resp) = self.call("claim", move |mut client| {
            let (key, body) = (key.clone(), body.clone());
            async move {
                let id = client.lease_grant(CLAIM_TTL_SECS, None).await?.id();
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        body,
                        Some(PutOptions::new().with_lease(id)),
                    )])
                    .or_else([TxnOp::get(key, None)]);
                let resp = client.txn(txn).await;
                if !resp.as_ref().is_ok_and(|r| r.succeeded()) {
                    let _ = client.lease_revoke(id).await;
                }
                Ok((id, resp?))
            }
        })?;
        if !resp.succeeded() {
            let holder = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .and_then(|kv| serde_json::from_slice::<ClaimRecord>(kv.value()).ok()),
                _ => None,
            });
            return Err(ClaimError::Held {
                name: name.into(),
                node: Some(holder.as_ref().map_or("?".into(), |h| h.node.clone())),
                operation: holder.map_or("?".into(), |h| h.operation),
            });
        }
        Ok(Some(Box::new(EtcdLease::keep(
            id,
            (name, &format!("{}{name}", self.claims_prefix())),
            self.pool.clone(),
            self.rt.handle().clone(),
        ))))
    }

    fn load_operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        let key = self.op_key(id);
        let resp = self.call("read operation", move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Read the entry with its mod revision, then put it in a txn that
    /// compares that revision: a write in between makes it `Ok(false)`.
    fn save_operation_if(&self, op: &Operation, expected: &Operation) -> Result<bool, StoreError> {
        let key = self.op_key(&op.id);
        let k = key.clone();
        let resp = self.call("read operation", move |mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        })?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(false);
        };
        if serde_json::from_slice::<Operation>(kv.value())
            .ok()
            .as_ref()
            != Some(expected)
        {
            return Ok(false);
        }
        let body = serde_json::to_vec_pretty(op).expect("operation serializes");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::put(key, body, None)]);
        let resp = self.call("write operation", move |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        if !resp.succeeded() {
            return Ok(false);
        }
        if let Some(h) = resp.header() {
            lock(&self.written).insert(op.id.clone(), h.revision());
        }
        self.snapshot_op(op);
        Ok(true)
    }

    fn health(&self) -> Result<(), String> {
        if self.up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!(
                "etcd at {} is unreachable: {}",
                self.endpoints_text(),
                lock(&self.why_down)
            ))
        }
    }
}

impl EtcdStore {
    /// Compare-and-swap the document on the mod revision this node last
    /// read (and, under a claim, the claim's lease).
    fn save_with(&self, doc: &Persisted, fence: Option<&Fence>) -> Result<(), StoreError> {
        let base = *lock(&self.base);
        let key = self.state_key();
        if doc.revision != base.doc_revision + 1 {
            // written on a document older than the one this node holds now
            let k = key.clone();
            let resp = self.call("read state", move |mut c| {
                let k = k.clone();
                async move { c.get(k, None).await }
            })?;
            return Err(self.conflict_from(resp.kvs().first())?);
        }
        let body = serde_json::to_vec_pretty(doc).expect("state serializes");
        let mut compare = vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            base.mod_revision,
        )];
        let mut otherwise = vec![TxnOp::get(key.clone(), None)];
        if let Some(f) = fence {
            // a key that is gone has lease 0: the compare fails too
            compare.push(Compare::lease(f.key.clone(), CompareOp::Equal, f.lease));
            otherwise.push(TxnOp::get(f.key.clone(), None));
        }
        let txn = Txn::new()
            .when(compare)
            .and_then([TxnOp::put(key.clone(), body, None)])
            .or_else(otherwise);
        let resp = self.call("write state", move |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            self.written_state(doc, revision);
            return Ok(());
        }
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().cloned()),
            _ => None,
        });
        let current = gets.next().flatten();
        let claim = gets.next().flatten();
        // A retry on another member after the first attempt did land (its
        // answer was lost with the member) finds this very document: it is
        // written. Applying the change again would apply it twice (a swap's
        // exchange would swap back).
        if let Some(kv) = &current {
            if serde_json::from_slice::<Persisted>(kv.value()).is_ok_and(|d| d == *doc) {
                self.written_state(doc, kv.mod_revision());
                return Ok(());
            }
        }
        if let Some(f) = fence {
            let lost = match &claim {
                None => Some("its lease expired or was revoked".to_string()),
                Some(kv) if kv.lease() != f.lease => {
                    Some(match serde_json::from_slice::<ClaimRecord>(kv.value()) {
                        Ok(r) => format!("node {} holds it now", r.node),
                        Err(_) => "another lease holds it now".to_string(),
                    })
                }
                Some(_) => None,
            };
            if let Some(why) = lost {
                // what etcd holds becomes this node's base all the same
                if current.is_some() {
                    let _ = self.conflict_from(current.as_ref());
                }
                return Err(StoreError::ClaimLost {
                    name: f.name.clone(),
                    why,
                });
            }
        }
        Err(self.conflict_from(current.as_ref())?)
    }

    fn written_state(&self, doc: &Persisted, mod_revision: i64) {
        *lock(&self.base) = Base {
            doc_revision: doc.revision,
            mod_revision,
        };
        self.snapshot_doc(doc);
    }

    /// The conflict answer for a write that lost: etcd's current document,
    /// which becomes this node's base.
    fn conflict_from(&self, kv: Option<&etcd_client::KeyValue>) -> Result<StoreError, StoreError> {
        let Some(kv) = kv else {
            return Err(StoreError::Unavailable(format!(
                "{} disappeared from etcd during a write",
                self.state_key()
            )));
        };
        let doc: Persisted = serde_json::from_slice(kv.value()).map_err(|e| {
            StoreError::Unavailable(format!("{} is not valid state: {e}", self.state_key()))
        })?;
        *lock(&self.base) = Base {
            doc_revision: doc.revision,
            mod_revision: kv.mod_revision(),
        };
        Ok(StoreError::Conflict(Box::new(doc)))
    }
}

/// A claim's lease, kept alive on the store's runtime until released.
struct EtcdLease {
    id: i64,
    name: String,
    /// The claim's key, bound to the lease.
    key: String,
    pool: Arc<Endpoints>,
    rt: tokio::runtime::Handle,
    lost: Arc<AtomicBool>,
    /// When etcd last confirmed the lease.
    renewed: Arc<Mutex<Instant>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl EtcdLease {
    fn keep(
        id: i64,
        (name, key): (&str, &str),
        pool: Arc<Endpoints>,
        rt: tokio::runtime::Handle,
    ) -> EtcdLease {
        let lost = Arc::new(AtomicBool::new(false));
        let renewed = Arc::new(Mutex::new(Instant::now()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (p, l, n) = (pool.clone(), lost.clone(), name.to_string());
        let r_at = renewed.clone();
        rt.spawn(async move {
            let mut beat = tokio::time::interval(CLAIM_BEAT);
            // the keep-alive stream, on the member (endpoint) it was opened on
            let mut keeper: Option<((LeaseKeeper, LeaseKeepAliveStream), usize)> = None;
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = beat.tick() => {
                        if keeper.is_none() {
                            keeper = p
                                .run_on(|mut c| async move { c.lease_keep_alive(id).await })
                                .await
                                .ok();
                        }
                        let Some(((k, answers), on)) = keeper.as_mut() else { continue };
                        let on = *on;
                        // well under the beat: a member that hangs must
                        // not eat the lease's margin (TTL − beat)
                        let r = tokio::time::timeout(CLAIM_RENEW_TIMEOUT, async {
                            k.keep_alive().await?;
                            answers.message().await
                        })
                        .await;
                        match r {
                            Ok(Ok(Some(a))) if a.ttl() > 0 => {
                                *r_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                            }
                            Ok(Ok(Some(_))) => {
                                log::error!("the lease on {n} expired: another node may take it over");
                                l.store(true, Ordering::SeqCst);
                                return;
                            }
                            // that member went away or hangs: another one now
                            _ => {
                                p.failed(on);
                                keeper = None;
                                beat.reset_immediately();
                            }
                        }
                    }
                }
            }
        });
        EtcdLease {
            id,
            name: name.into(),
            key: key.into(),
            pool,
            rt,
            lost,
            renewed,
            stop: Some(stop),
        }
    }
}

impl FleetLease for EtcdLease {
    /// Lost once etcd said the lease expired, and also once it was not
    /// renewed for longer than the TTL minus one beat: cut off from etcd,
    /// this node cannot know whether the lease still stands, and another
    /// node may already have taken the work over.
    fn held(&self) -> bool {
        let renewed = *self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = Duration::from_secs(CLAIM_TTL_SECS as u64);
        !self.lost.load(Ordering::SeqCst) && renewed.elapsed() < ttl.saturating_sub(CLAIM_BEAT)
    }

    fn fence(&self) -> Fence {
        Fence {
            name: self.name.clone(),
            key: self.key.clone(),
            lease: self.id,
        }
    }

    fn release(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        let _ = stop.send(());
        let (pool, id) = (self.pool.clone(), self.id);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let r = pool
                .run(|mut c| async move { c.lease_revoke(id).await })
                .await;
            let _ = tx.send(r);
        });
        match rx.recv_timeout(CALL_TIMEOUT + Duration::from_secs(1)) {
            Ok(Ok(_)) => {}
            _ => log::warn!(
                "cannot release {} now (etcd unreachable): it ends by itself within {CLAIM_TTL_SECS}s",
                self.name
            ),
        }
    }
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        self.release();
    }
}
