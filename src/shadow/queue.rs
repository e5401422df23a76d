//! The shadows of the published table ([`Shadows`], kept by the control
//! plane across tables like outlier state) and the sending of their
//! copies: each shadow has a bounded queue (`queue` copies) that the
//! request path only ever `try_send`s to — a full one drops the copy and
//! counts it `dropped` — and a dispatcher that sends at most `concurrency`
//! copies at a time to the slot's instances, over connections of its own
//! (a pooling HTTP/1 client), compares each answer with production's and
//! counts the result. All of it runs on one thread of its own
//! (`slotproxy-shadow`), never on the proxy's workers.
//!
//! A copy goes to the slot's instance as the table at the time of sending
//! says (round robin, healthy ones first), with the client's fields less
//! the hop-by-hop ones, `X-Forwarded-*` as production got them,
//! `X-Slot-Name: <slot>` and `X-Slot-Shadow: 1`. No pin cookie is read or
//! set: the copy does not go through routing at all.

use super::compare::{compare, Verdict};
use super::figures::{Difference, Figures};
use super::observe::{fields_of, Answer, BodyReader};
use super::{Compiled, ShadowSpec};
use crate::model::{InstancesProtocol, State, PRODUCTION};
use crate::proxy::RequestCtx;
use crate::routing::{RequestView, RouteTable};
use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
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

/// The thread the copies are sent from, and its HTTP client.
struct Engine {
    handle: tokio::runtime::Handle,
    client: reqwest::Client,
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
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .redirect(reqwest::redirect::Policy::none())
                        .http1_only()
                        .connect_timeout(Duration::from_secs(5))
                        .pool_idle_timeout(Duration::from_secs(30))
                        .build();
                    match client {
                        Ok(c) => {
                            let _ = tx.send(Ok((rt.handle().clone(), c)));
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    }
                    rt.block_on(std::future::pending::<()>());
                });
            if let Err(e) = spawned {
                log::error!("shadow traffic is off: cannot start its thread: {e}");
                return None;
            }
            match rx.recv() {
                Ok(Ok((handle, client))) => Some(Engine { handle, client }),
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
        client: engine.client.clone(),
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
    client: reqwest::Client,
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
        let url = format!("http://{addr}{}", req.target);
        let mut fields = http::HeaderMap::with_capacity(req.fields.len() + 2);
        for (n, v) in &req.fields {
            fields.append(n.clone(), v.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&self.slot) {
            fields.insert(HeaderName::from_static("x-slot-name"), v);
        }
        fields.insert(
            HeaderName::from_static("x-slot-shadow"),
            HeaderValue::from_static("1"),
        );
        let mut rb = self
            .client
            .request(req.method.clone(), url)
            .headers(fields)
            .timeout(timeout);
        if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
            rb = rb.body(req.body.clone());
        }
        let start = Instant::now();
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                format!("no answer from {addr} within {timeout:?}")
            } else if e.is_connect() {
                format!("cannot connect to {addr}")
            } else {
                format!("{addr}: {e}")
            }
        };
        let mut resp = rb.send().await.map_err(describe)?;
        let status = resp.status().as_u16();
        let fields = fields_of(
            resp.headers()
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
            "",
        );
        let mut body = BodyReader::new(self.spec.max_body);
        while let Some(piece) = resp.chunk().await.map_err(describe)? {
            body.push(&piece);
        }
        Ok(Answer {
            status,
            fields,
            body: body.finish(),
            secs: start.elapsed().as_secs_f64(),
        })
    }
}

fn ms(secs: f64) -> f64 {
    (secs * 1e6).round() / 1e3
}
