//! Shadow traffic (SPEC §15, README "Shadow traffic"): a share of the
//! requests production serves on the production host names is copied to a
//! slot's instances, and the slot's answer is compared with production's
//! and thrown away. The client only ever gets production's answer.
//!
//! What lives where:
//! - here: the spec as the API, the config and the state take it
//!   ([`ShadowSpec`]), its checks, the decision whether a request is copied
//!   ([`should_copy`], pure), and the two hooks the request paths call —
//!   [`offer`] when the request is routed and [`complete`] when
//!   production's answer is done — with the [`Tap`] that carries a copied
//!   request between them and watches production's answer go by;
//! - `observe`: reading an answer (HTTP/1 bytes as the client got them, or
//!   a status, fields and body pieces) into what is compared, in bounded
//!   memory;
//! - `compare`: the pure comparison (status, fields, JSON as values minus
//!   `ignore_json_paths`, other bodies by digest);
//! - `figures`: the counters, the latency ratio and the bounded list of the
//!   last differences, per shadow and per node;
//! - `queue`: the bounded queue and the tasks (on a thread of their own)
//!   that send the copies over their own connections.
//!
//! The request path's cost without a shadow is one branch: the site's
//! `shadows` list in the routing table is empty. With one, a request that
//! is not copied costs a method check and a random number; a copied one
//! costs a parse of its header, a copy of its body (at most
//! `max_body_bytes`) and the hashing of production's answer as it goes
//! out. Nothing waits: the copy is queued after production's answer is
//! complete, and dropped (counted) when the queue is full.

pub mod compare;
pub mod figures;
pub mod observe;
pub mod queue;

use crate::proxy::RequestCtx;
use crate::routing::RequestView;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use figures::{Difference, Figures, FiguresView};
pub use queue::{ShadowRoute, Shadows};

/// `PUT …/slots/{slot}/shadow` and `[sites.slots.shadow]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// Share of production's requests copied, 0–100 (default 100, as
    /// Envoy's request mirroring).
    #[serde(default = "default_percent")]
    pub percent: f64,
    /// Methods copied (default the safe ones: GET, HEAD, OPTIONS).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// A request body larger than this is not copied, and an answer's body
    /// larger than this is compared by digest only (default 65536).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub compare: Compare,
    /// Copies waiting to be sent at most; one more is dropped (default 1000).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Copies in flight to the slot at most (default 32).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

/// What the comparison leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// Response fields not compared, any case (default `["date"]`). The
    /// framing and connection fields (`content-length`,
    /// `transfer-encoding`, `connection`, `keep-alive`) and the proxy's own
    /// pin cookie are never compared.
    #[serde(default = "default_ignore_headers")]
    pub ignore_headers: Vec<String>,
    /// Parts of a JSON body not compared: `$.requestId`, `$.items[*].id`,
    /// `$.a['b c']`, `$.list[0]`.
    #[serde(default)]
    pub ignore_json_paths: Vec<String>,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            ignore_headers: default_ignore_headers(),
            ignore_json_paths: Vec::new(),
        }
    }
}

fn default_percent() -> f64 {
    100.0
}
fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "OPTIONS".into()]
}
fn default_max_body() -> usize {
    65536
}
fn default_queue() -> usize {
    1000
}
fn default_concurrency() -> usize {
    32
}
fn default_ignore_headers() -> Vec<String> {
    vec!["date".into()]
}

/// Largest `max_body_bytes` accepted: each queued copy may hold this much.
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Largest `queue` accepted.
pub const MAX_QUEUE: usize = 1_000_000;
/// Largest `concurrency` accepted.
pub const MAX_CONCURRENCY: usize = 4096;

impl ShadowSpec {
    /// Everything wrong with it, as (key under `prefix`, reason).
    pub fn check(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let key = |k: &str| format!("{prefix}.{k}");
        if !(self.percent.is_finite() && (0.0..=100.0).contains(&self.percent)) {
            out.push((
                key("percent"),
                format!("{} is out of range 0-100", self.percent),
            ));
        }
        if self.methods.is_empty() {
            out.push((key("methods"), "lists no method".into()));
        }
        for (i, m) in self.methods.iter().enumerate() {
            if http::Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m {
                out.push((
                    format!("{prefix}.methods[{i}]"),
                    format!("{m:?} is not an HTTP method in capitals (GET, POST, ...)"),
                ));
            }
        }
        if self.max_body_bytes > MAX_BODY_LIMIT {
            out.push((
                key("max_body_bytes"),
                format!("{} is above {MAX_BODY_LIMIT}", self.max_body_bytes),
            ));
        }
        if !(1..=MAX_QUEUE).contains(&self.queue) {
            out.push((
                key("queue"),
                format!("{} is out of range 1-{MAX_QUEUE}", self.queue),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            out.push((
                key("concurrency"),
                format!("{} is out of range 1-{MAX_CONCURRENCY}", self.concurrency),
            ));
        }
        for (i, h) in self.compare.ignore_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                out.push((
                    format!("{prefix}.compare.ignore_headers[{i}]"),
                    format!("{h:?} is not a header field name"),
                ));
            }
        }
        for (i, p) in self.compare.ignore_json_paths.iter().enumerate() {
            if let Err(why) = compare::JsonPath::parse(p) {
                out.push((format!("{prefix}.compare.ignore_json_paths[{i}]"), why));
            }
        }
        out
    }

    /// The form the request path and the comparer use.
    pub fn compile(&self) -> Compiled {
        Compiled {
            percent_bp: (self.percent * 100.0).round().clamp(0.0, 10_000.0) as u32,
            methods: self.methods.iter().map(|m| m.as_bytes().into()).collect(),
            max_body: self.max_body_bytes,
            rules: compare::Rules::new(
                &self.compare.ignore_headers,
                self.compare
                    .ignore_json_paths
                    .iter()
                    .filter_map(|p| compare::JsonPath::parse(p).ok())
                    .collect(),
            ),
        }
    }
}

/// A [`ShadowSpec`] ready to use.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// `percent` in basis points.
    pub percent_bp: u32,
    pub methods: Vec<Box<[u8]>>,
    pub max_body: usize,
    pub rules: compare::Rules,
}

/// Whether a request production serves is copied: its method is listed,
/// its body (`body_len`: its `Content-Length`; `None`: of unknown length,
/// taken up to the limit) fits, and the roll (`roll`, uniform in
/// 0..10 000) falls in the share. Pure.
pub fn should_copy(spec: &Compiled, method: &[u8], body_len: Option<u64>, roll: u32) -> bool {
    roll < spec.percent_bp
        && spec.methods.iter().any(|m| **m == *method)
        && body_len.is_none_or(|n| n <= spec.max_body as u64)
}

/// Whether the routing decision in `ctx` is production serving a request
/// on a production host name: the only requests shadowed. A copy never
/// reads or sets pins, so how production was chosen (weights, pin,
/// query) does not matter.
fn served_by_production(ctx: &RequestCtx) -> bool {
    ctx.decision
        .is_some_and(|d| d.slot == 0 && d.reason != crate::routing::decide::Reason::SlotHost)
}

/// A copied request, from routing to production's complete answer: the
/// copy to send and production's answer as it went out.
pub struct Tap {
    targets: Vec<Arc<ShadowRoute>>,
    request: queue::CopyRequest,
    /// The body's length as the request said (`Content-Length`); `None`:
    /// of unknown length.
    body_expected: Option<u64>,
    max_body: usize,
    /// The body went over `max_body`: no copy.
    body_over: bool,
    production: observe::Watcher,
}

/// The shadows of the site `ctx` was routed to, if it has any and the
/// request is production's; the one check every request pays.
fn shadows_of(ctx: &RequestCtx) -> Option<&[Arc<ShadowRoute>]> {
    let site = ctx.site()?;
    if site.shadows.is_empty() || !served_by_production(ctx) {
        return None;
    }
    Some(&site.shadows)
}

/// Called once a request is routed, before it is forwarded: a [`Tap`] if
/// some shadow of its site copies it. `http1`: the answer is watched as
/// the HTTP/1 bytes written to the client ([`Tap::client_bytes`]), else as
/// a head and body pieces.
pub fn offer(
    ctx: &RequestCtx,
    req: &impl RequestView,
    method: &str,
    target: &str,
    http1: bool,
) -> Option<Box<Tap>> {
    let shadows = shadows_of(ctx)?;
    offer_to(shadows, ctx, req, method, target, http1)
}

/// The lean HTTP/1 path's [`offer`]: the request is its raw header.
pub fn offer_h1(ctx: &RequestCtx, head: &[u8]) -> Option<Box<Tap>> {
    let shadows = shadows_of(ctx)?;
    let mut headers = crate::h1::headers();
    let req = crate::h1::parse_request(head, &mut headers)?;
    // a chunked request body is of unknown length on this path, and not
    // kept for a copy (SPEC §15: "bodies up to max_body_bytes")
    // nor is an absolute-form target (the copy sends origin-form only)
    if req.first("transfer-encoding").is_some() || !req.path.starts_with('/') {
        return None;
    }
    offer_to(shadows, ctx, &req, req.method, req.path, true)
}

fn offer_to(
    shadows: &[Arc<ShadowRoute>],
    ctx: &RequestCtx,
    req: &impl RequestView,
    method: &str,
    target: &str,
    http1: bool,
) -> Option<Box<Tap>> {
    let body_len = req
        .first("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    let mut targets = Vec::new();
    for s in shadows {
        let roll = rand::random_range(0..10_000u32);
        if should_copy(&s.spec, method.as_bytes(), body_len.or(Some(0)), roll) {
            targets.push(s.clone());
        }
    }
    if targets.is_empty() {
        return None;
    }
    let max_body = targets.iter().map(|t| t.spec.max_body).max().unwrap_or(0);
    let cookie_name = ctx.table.as_ref().map_or("", |t| &t.cookie_name);
    let request = queue::CopyRequest::of(req, ctx, method, target);
    Some(Box::new(Tap {
        targets,
        request,
        body_expected: body_len,
        max_body,
        body_over: false,
        production: observe::Watcher::new(
            max_body,
            method == "HEAD",
            http1,
            cookie_name,
            ctx.start,
        ),
    }))
}

impl Tap {
    /// Bytes of the request body, as they come from the client.
    pub fn request_body(&mut self, bytes: &[u8]) {
        if self.body_over {
            return;
        }
        if self.request.body.len() + bytes.len() > self.max_body {
            self.body_over = true;
            self.request.body = Vec::new();
            return;
        }
        self.request.body.extend_from_slice(bytes);
    }

    /// Bytes written to an HTTP/1 client (header, framed body), in order.
    pub fn client_bytes(&mut self, bytes: &[u8]) {
        self.production.h1_bytes(bytes);
    }

    /// The head of production's answer (HTTP/2 clients).
    pub fn response_head(&mut self, status: u16, headers: &http::HeaderMap) {
        self.production.head(
            status,
            headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        );
    }

    /// A piece of production's answer's body (HTTP/2 clients).
    pub fn response_body(&mut self, bytes: &[u8]) {
        self.production.body(bytes);
    }
}

/// The lean HTTP/1 path keeps a copy of the request body in its
/// `BodyIn` as the body passes (one place sees every byte of it).
pub fn keep_body(tap: &Option<Box<Tap>>, body: &mut crate::request_body::BodyIn) {
    if let Some(t) = tap {
        body.keep_copy(t.max_body);
    }
}

/// [`complete`] for the lean HTTP/1 path, with the body `body` kept.
pub fn complete_h1(tap: Option<Box<Tap>>, body: &mut crate::request_body::BodyIn, finished: bool) {
    let Some(mut tap) = tap else { return };
    match body.take_copy() {
        Some(b) => tap.request.body = b,
        None => tap.body_over = true,
    }
    complete(Some(tap), finished);
}

/// Called when production's answer is done: `finished` says it went out
/// whole. The copy is queued for each shadow that took the request (or
/// counted `dropped` when its queue is full); an answer cut short, or a
/// request body that was over the limit or shorter than it said, is not
/// copied.
pub fn complete(tap: Option<Box<Tap>>, finished: bool) {
    let Some(tap) = tap else { return };
    let Tap {
        targets,
        mut request,
        body_expected,
        body_over,
        production,
        ..
    } = *tap;
    if !finished || body_over {
        return;
    }
    if body_expected.is_some_and(|n| n != request.body.len() as u64) {
        return;
    }
    let Some(answer) = production.finish() else {
        return;
    };
    let answer = Arc::new(answer);
    let request = Arc::new(std::mem::take(&mut request));
    for t in targets {
        t.enqueue(request.clone(), answer.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> ShadowSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_copy_safe_methods_to_the_full_share() {
        let s = spec("{}");
        assert_eq!(s.percent, 100.0);
        assert_eq!(s.methods, ["GET", "HEAD", "OPTIONS"]);
        assert_eq!(s.max_body_bytes, 65536);
        assert_eq!(s.queue, 1000);
        assert_eq!(s.compare.ignore_headers, ["date"]);
        assert!(s.check("shadow").is_empty());
        let c = s.compile();
        assert!(should_copy(&c, b"GET", None, 9_999));
        assert!(!should_copy(&c, b"POST", Some(0), 0));
    }

    #[test]
    fn the_share_the_methods_and_the_body_limit_decide() {
        let c =
            spec(r#"{"percent": 10, "methods": ["GET", "POST"], "max_body_bytes": 100}"#).compile();
        assert!(should_copy(&c, b"GET", Some(0), 999));
        assert!(!should_copy(&c, b"GET", Some(0), 1000));
        assert!(should_copy(&c, b"POST", Some(100), 0));
        assert!(!should_copy(&c, b"POST", Some(101), 0));
        assert!(!should_copy(&c, b"PUT", Some(0), 0));
        let none = spec(r#"{"percent": 0}"#).compile();
        assert!(!should_copy(&none, b"GET", Some(0), 0));
    }

    #[test]
    fn checks_name_each_bad_key() {
        let s = spec(
            r#"{"percent": 101, "methods": ["get", "G T"], "queue": 0, "concurrency": 0,
                "max_body_bytes": 99999999999,
                "compare": {"ignore_headers": ["a b"], "ignore_json_paths": ["requestId"]}}"#,
        );
        let keys: Vec<String> = s.check("shadow").into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "shadow.percent",
                "shadow.methods[0]",
                "shadow.methods[1]",
                "shadow.max_body_bytes",
                "shadow.queue",
                "shadow.concurrency",
                "shadow.compare.ignore_headers[0]",
                "shadow.compare.ignore_json_paths[0]",
            ]
        );
        assert!(serde_json::from_str::<ShadowSpec>(r#"{"precent": 5}"#).is_err());
    }
}
