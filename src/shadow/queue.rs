//! The shadows of the published table ([`Shadows`], kept by the control
//! plane across tables like outlier state) and the sending of their
//! copies: each shadow has a bounded queue (`queue` copies) that the
//! request path only ever `try_send`s to — a full one drops the copy and
//! counts it `dropped` — and a dispatcher that sends at most `concurrency`
//! copies at a time to the slot's instances, over connections of its own
//! (a pooling HTTP/1 client), compares each answer with production's and
//! counts the result. All of it runs on one thread of its own
//! (`slotproxy-shadow`), never on the proxy's workers. The copies' client
//! is a small HTTP/1.1 one of its own (the request written as bytes, the
//! answer read with `observe::Watcher`, idle connections kept per
//! address): a general client (reqwest) cost the shadow thread about
//! 60% more CPU per copy in the load bench.
//!
//! A copy goes to the slot's instance as the table at the time of sending
//! says (round robin, healthy ones first), with the client's fields less
//! the hop-by-hop ones, `X-Forwarded-*` as production got them,
//! `X-Slot-Name: <slot>` and `X-Slot-Shadow: 1`. No pin cookie is read or
//! set: the copy does not go through routing at all.

use super::compare::{compare, Verdict};
use super::figures::{Difference, Figures};
use super::observe::{Answer, Watcher};
use super::{Compiled, ShadowSpec};
use crate::model::{InstancesProtocol, State, PRODUCTION};
use crate::proxy::RequestCtx;
use crate::routing::{RequestView, RouteTable};
use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// The request as the copy sends it.
#[derive(Debug, Default, Clone)]
pub struct CopyRequest {
    pub method: http::Method,
    /// Path and query, as the client sent them.
    pub target: String,
    pub fields: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
}

/// Fields of the client's request not copied: hop-by-hop ones, the body's
/// framing (the copy frames its own), and what the copy sets itself.
const NOT_COPIED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-slot-name",
];

impl CopyRequest {
    pub fn of(req: &impl RequestView, ctx: &RequestCtx, method: &str, target: &str) -> CopyRequest {
        let mut fields = Vec::new();
        for (n, v) in req.fields() {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v))
            else {
                continue;
            };
            if NOT_COPIED.contains(&name.as_str()) || name.as_str() == "x-slot-shadow" {
                continue;
            }
            fields.push((name, value));
        }
        if req.first("host").is_none() && !req.host().is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(req.host()) {
                fields.push((http::header::HOST, v));
            }
        }
        let f = crate::proxy::forwarded(req, ctx);
        if let Some(for_) = &f.for_ {
            fields.push((
                HeaderName::from_static("x-forwarded-for"),
                for_.header_value(),
            ));
        }
        if let Ok(v) = HeaderValue::from_bytes(f.proto) {
            fields.push((HeaderName::from_static("x-forwarded-proto"), v));
        }
        if let Some(Ok(v)) = f.host.map(HeaderValue::from_bytes) {
            fields.push((HeaderName::from_static("x-forwarded-host"), v));
        }
        CopyRequest {
            method: http::Method::from_bytes(method.as_bytes()).unwrap_or_default(),
            target: target.to_string(),
            fields,
            body: Vec::new(),
        }
    }
}

/// A copy waiting to be sent, with production's answer to compare.
struct Job {
    request: Arc<CopyRequest>,
    production: Arc<Answer>,
}

/// One shadow as the routing table holds it (`SiteRoutes::shadows`).
pub struct ShadowRoute {
    pub site: Box<str>,
    pub slot: Box<str>,
    /// The spec as set (a publish with the same one keeps this route).
    pub raw: ShadowSpec,
    pub spec: Arc<Compiled>,
    pub figures: Arc<Figures>,
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for ShadowRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShadowRoute({}/{})", self.site, self.slot)
    }
}

impl ShadowRoute {
    /// Queue a copy, or count it dropped when the queue is full.
    pub(super) fn enqueue(&self, request: Arc<CopyRequest>, production: Arc<Answer>) {
        if self
            .tx
            .try_send(Job {
                request,
                production,
            })
            .is_err()
        {
            self.figures.count("dropped");
        }
    }
}

/// The thread the copies are sent from.
struct Engine {
    handle: tokio::runtime::Handle,
}

fn engine() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("slotproxy-shadow".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                });
            if let Err(e) = spawned {
                log::error!("shadow traffic is off: cannot start its thread: {e}");
                return None;
            }
            match rx.recv() {
                Ok(Ok(handle)) => Some(Engine { handle }),
                Ok(Err(e)) => {
                    log::error!("shadow traffic is off: {e}");
                    None
                }
                Err(_) => None,
            }
        })
        .as_ref()
}

/// The shadows of the published table, by (site, slot), carried across
/// tables so that their queues and figures outlive a publish that does not
/// change them.
#[derive(Default)]
pub struct Shadows {
    routes: Mutex<HashMap<(String, String), Arc<ShadowRoute>>>,
}

impl Shadows {
    /// Give each site of `table` the shadows `state` sets for its slots;
    /// `live` is where the copies find the slot's instances when sent.
    pub fn attach(&self, table: &mut RouteTable, state: &State, live: &Arc<ArcSwap<RouteTable>>) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = HashMap::new();
        for site in &mut table.sites {
            let Some(model) = state.sites.get(&*site.name) else {
                continue;
            };
            let mut list = Vec::new();
            for (name, slot) in &model.slots {
                let Some(spec) = slot.shadow.as_ref().filter(|_| name != PRODUCTION) else {
                    continue;
                };
                let key = (site.name.to_string(), name.clone());
                let route = match routes.remove(&key) {
                    Some(r) if r.raw == *spec => r,
                    old => {
                        if let Some(old) = old {
                            old.figures.remove_series();
                        }
                        match start(&site.name, name, spec, live) {
                            Some(r) => r,
                            None => continue,
                        }
                    }
                };
                list.push(route.clone());
                kept.insert(key, route);
            }
            site.shadows = list;
        }
        for gone in routes.values() {
            gone.figures.remove_series();
        }
        *routes = kept;
    }

    /// The shadow of `site`/`slot` on this node, if one runs.
    pub fn get(&self, site: &str, slot: &str) -> Option<Arc<ShadowRoute>> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.get(&(site.to_string(), slot.to_string())).cloned()
    }
}

/// A new shadow: its figures, its queue and its dispatcher.
fn start(
    site: &str,
    slot: &str,
    spec: &ShadowSpec,
    live: &Arc<ArcSwap<RouteTable>>,
) -> Option<Arc<ShadowRoute>> {
    let engine = engine()?;
    let (tx, rx) = mpsc::channel(spec.queue.max(1));
    let route = Arc::new(ShadowRoute {
        site: site.into(),
        slot: slot.into(),
        raw: spec.clone(),
        spec: Arc::new(spec.compile()),
        figures: Arc::new(Figures::new(site, slot)),
        tx,
    });
    let d = Dispatch {
        site: site.into(),
        slot: slot.into(),
        spec: route.spec.clone(),
        figures: route.figures.clone(),
        live: live.clone(),
        idle: Arc::new(Idle::default()),
    };
    engine
        .handle
        .spawn(d.run(rx, Arc::new(Semaphore::new(spec.concurrency.max(1)))));
    Some(route)
}

/// What the tasks of one shadow share.
#[derive(Clone)]
struct Dispatch {
    site: Arc<str>,
    slot: Arc<str>,
    spec: Arc<Compiled>,
    figures: Arc<Figures>,
    live: Arc<ArcSwap<RouteTable>>,
    idle: Arc<Idle>,
}

/// Longest a copy may take when the slot's deployment sets no read
/// time-out.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Dispatch {
    /// Send the queued copies, `concurrency` at a time, until the shadow
    /// stops (its queue's sender is dropped with its last table).
    async fn run(self, mut rx: mpsc::Receiver<Job>, slots: Arc<Semaphore>) {
        while let Some(job) = rx.recv().await {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let d = self.clone();
            tokio::spawn(async move {
                d.one(job).await;
                drop(permit);
            });
        }
    }

    async fn one(&self, job: Job) {
        let p = &job.production;
        match self.send(&job.request).await {
            Ok(slot) => {
                let verdict = compare(p, &slot, &self.spec.rules);
                self.figures.count(verdict.result());
                self.figures.latency(p.secs, slot.secs);
                if verdict != Verdict::Match {
                    self.note(&job, verdict.result(), Some(&slot), verdict.detail());
                }
            }
            Err(why) => {
                self.figures.count("error");
                self.note(&job, "error", None, &why);
            }
        }
    }

    fn note(&self, job: &Job, result: &str, slot: Option<&Answer>, detail: &str) {
        self.figures.differs(Difference {
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            method: job.request.method.to_string(),
            path: job.request.target.clone(),
            result: result.into(),
            production_status: job.production.status,
            slot_status: slot.map(|s| s.status),
            first_difference: detail.into(),
            production_ms: ms(job.production.secs),
            slot_ms: slot.map(|s| ms(s.secs)),
        });
    }

    /// The copy to one of the slot's instances, and its answer.
    async fn send(&self, req: &CopyRequest) -> Result<Answer, String> {
        let (addr, timeout) = {
            let table = self.live.load();
            let site = table
                .sites
                .iter()
                .find(|s| *s.name == *self.site)
                .ok_or("the site is gone")?;
            let slot = site
                .slots
                .iter()
                .find(|s| *s.name == *self.slot)
                .ok_or("the slot is gone")?;
            let pool = slot.pool.as_ref().ok_or("the slot has nothing deployed")?;
            if pool.probe.protocol != InstancesProtocol::Http1 {
                return Err("shadow copies go to HTTP/1 instances only".into());
            }
            let i = pool.pick(0).ok_or("the slot has no instance")?;
            let addr = pool.instances[i]
                .addr
                .ok_or("the slot's instance does not resolve")?;
            (addr, pool.read_timeout.unwrap_or(DEFAULT_TIMEOUT))
        };
        if !req.target.starts_with('/') {
            return Err(format!("target {:?} is not a path", req.target));
        }
        let bytes = req.to_bytes(&self.slot);
        let head = req.method == http::Method::HEAD;
        // a pooled connection the instance closed meanwhile: once more on a
        // new one, if the method may be sent twice
        let again = req.method.is_idempotent();
        for attempt in 0..2 {
            let (mut conn, reused) = match self.idle.take(addr) {
                Some(c) => (c, true),
                None => {
                    let c = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                        .await
                        .map_err(|_| format!("cannot connect to {addr}: timed out"))?
                        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                    let _ = c.set_nodelay(true);
                    (c, false)
                }
            };
            let mut seen = Watcher::raw(self.spec.max_body, head);
            match tokio::time::timeout(timeout, exchange(&mut conn, &bytes, &mut seen)).await {
                Err(_) => return Err(format!("no answer from {addr} within {timeout:?}")),
                Ok(Err(Exchange::Stale)) if reused && again && attempt == 0 => continue,
                Ok(Err(Exchange::Stale)) => {
                    return Err(format!("{addr} closed the connection without answering"))
                }
                Ok(Err(Exchange::Failed(why))) => return Err(format!("{addr}: {why}")),
                Ok(Ok(())) => {
                    if seen.reusable() {
                        self.idle.put(addr, conn);
                    }
                    return seen
                        .finish()
                        .ok_or_else(|| format!("{addr}: the answer was cut short"));
                }
            }
        }
        Err(format!("{addr} closed the connection without answering"))
    }
}

/// Longest wait for a connection to a slot's instance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per instance address.
const IDLE_PER_ADDRESS: usize = 64;

/// How one exchange of a copy failed.
enum Exchange {
    /// Nothing came back: the connection may have been closed while idle.
    Stale,
    Failed(String),
}

/// Write the copy and read its answer into `seen` to its end.
async fn exchange(conn: &mut TcpStream, bytes: &[u8], seen: &mut Watcher) -> Result<(), Exchange> {
    if conn.write_all(bytes).await.is_err() {
        return Err(Exchange::Stale);
    }
    // read_buf fills spare capacity: no zeroing per copy
    let mut buf = Vec::with_capacity(8 * 1024);
    let mut got = 0;
    loop {
        buf.clear();
        let n = match conn.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(_) if got == 0 => return Err(Exchange::Stale),
            Err(e) => return Err(Exchange::Failed(format!("reading the answer failed: {e}"))),
        };
        if n == 0 {
            seen.eof();
            if seen.done() {
                return Ok(());
            }
            return Err(if got == 0 {
                Exchange::Stale
            } else {
                Exchange::Failed("the connection closed in the middle of the answer".into())
            });
        }
        got += n;
        seen.h1_bytes(&buf);
        if seen.failed() {
            return Err(Exchange::Failed(
                "the answer is not HTTP/1.1 this reads".into(),
            ));
        }
        if seen.done() {
            return Ok(());
        }
    }
}

/// The copies' own idle connections to the slot's instances.
#[derive(Default)]
struct Idle(Mutex<HashMap<SocketAddr, Vec<TcpStream>>>);

impl Idle {
    fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(&addr)?.pop()
    }

    fn put(&self, addr: SocketAddr, conn: TcpStream) {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < IDLE_PER_ADDRESS {
            list.push(conn);
        }
    }
}

impl CopyRequest {
    /// The copy as HTTP/1.1 bytes for slot `slot`.
    fn to_bytes(&self, slot: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.target.len() + self.body.len());
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (n, v) in &self.fields {
            out.extend_from_slice(n.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-slot-name: ");
        out.extend_from_slice(slot.as_bytes());
        out.extend_from_slice(b"\r\nx-slot-shadow: 1\r\n");
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn ms(secs: f64) -> f64 {
    (secs * 1e6).round() / 1e3
}
