//! What every request goes through, whichever protocol brought it and
//! whichever protocol its instance speaks: the one set of request
//! functions the engine's paths call — HTTP/1 clients (`lean`, and
//! `edge::h1_h2` for HTTP/2 instances) and HTTP/2 clients (`edge`).
//!
//! `route_request` → host lookup, `decide`, `ip_allow`, local 404/403/503;
//! `RequestCtx::next_peer` → next instance of the chosen slot (again after
//! a connect failure, never another slot), with its connect and outlier
//! accounting; `forwarded` → `X-Forwarded-*` and `X-Slot-Name`;
//! `pin_cookie` → the cookie a response sets; `failure_status` and the
//! 502/408 lines → what a failed request is answered with; `log_request`
//! → metrics, outlier outcome and the access log. Each is a plain
//! function on plain data; the paths own the wire.

use crate::metrics::{self, UpstreamErrorKind};
use crate::model::InstancesProtocol;
use crate::routing::forwarded::{client_ip, is_trusted, ForwardedFor};
use crate::routing::table::{Pool, SiteRoutes, SlotRoute};
use crate::routing::{route, Decision, RequestView, RouteTable};
use http::HeaderValue;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time limits on the way to an app instance (`[server]` config).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

impl UpstreamTimeouts {
    pub fn from_config(s: &crate::config::ServerSection) -> Self {
        UpstreamTimeouts {
            connect: Duration::from_millis(s.connect_timeout_ms),
            read: Duration::from_secs(s.upstream_read_timeout_secs),
            write: Duration::from_secs(s.upstream_write_timeout_secs),
            idle: Duration::from_secs(s.upstream_idle_timeout_secs),
        }
    }
}

/// What one request carries from routing to its log line.
pub struct RequestCtx {
    /// The table this request was routed with, held until it finishes so a
    /// swap or reload cannot change its slot half-way.
    pub table: Option<Arc<RouteTable>>,
    pub site: u32,
    pub decision: Option<Decision>,
    /// Bitmask of the slot's instances that refused a connection.
    pub tried: u64,
    /// Upstream attempts so far (connect retries and reused-connection
    /// retries included).
    pub attempts: u32,
    pub instance: Option<usize>,
    /// The peer is one of the site's trusted proxies.
    pub trusted_peer: bool,
    /// The client came over TLS (what `X-Forwarded-Proto` and a `Secure`
    /// cookie say): on our own TLS listener, or per a trusted proxy.
    pub https: bool,
    pub peer_ip: Option<IpAddr>,
    /// When the request header had been read (pingora makes the context then).
    pub start: Instant,
    /// When the current upstream connection attempt began.
    pub connect_start: Option<Instant>,
    /// The last upstream failure was a connect failure, already counted.
    pub connect_failed: bool,
    /// The current attempt's connection to the instance is up: what the
    /// client gets now comes from (or through) the instance, which outlier
    /// ejection counts.
    pub upstream_connected: bool,
    /// The HTTP status of an answer the proxy made itself to a gRPC
    /// request, which went out as 200 with a `grpc-status` (`respond`).
    pub local_status: Option<u16>,
    _in_flight: metrics::InFlight,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            table: None,
            site: 0,
            decision: None,
            tried: 0,
            attempts: 0,
            instance: None,
            trusted_peer: false,
            https: false,
            peer_ip: None,
            start: Instant::now(),
            connect_start: None,
            connect_failed: false,
            upstream_connected: false,
            local_status: None,
            _in_flight: metrics::InFlight::start(),
        }
    }
}

impl RequestCtx {
    pub fn site(&self) -> Option<&SiteRoutes> {
        self.table.as_ref()?.sites.get(self.site as usize)
    }

    pub fn slot(&self) -> Option<&SlotRoute> {
        self.site()?.slots.get(self.decision?.slot as usize)
    }

    fn pool(&self) -> Option<&Pool> {
        self.slot()?.pool.as_ref()
    }

    /// `host:port` of the instance the request went to last.
    pub fn instance_label(&self) -> Option<&str> {
        Some(&self.pool()?.instances.get(self.instance?)?.label)
    }

    /// The metric handles of the slot the request was routed to.
    fn slot_metrics(&self) -> Option<&metrics::SlotHandles> {
        self.slot()?.metrics.as_deref()
    }

    /// Tell the instance the request went to last what happened, for
    /// outlier ejection (nothing when its slot has it off); ejects it when
    /// a streak reached its threshold.
    fn outlier_outcome(&self, outcome: crate::outlier::Outcome) {
        let (Some(site), Some(slot), Some(i)) = (self.site(), self.slot(), self.instance) else {
            return;
        };
        let Some(pool) = &slot.pool else { return };
        let (Some(cfg), Some(o)) = (
            &pool.outlier,
            pool.instances.get(i).and_then(|x| x.outlier.as_ref()),
        ) else {
            return;
        };
        if let Some(why) = o.observe(outcome, cfg) {
            o.eject(&site.name, &slot.name, pool, cfg, &why);
        }
    }

    fn count_upstream_error(&self, e: &Error) {
        metrics::upstream_error(self.slot_metrics(), error_kind(e.etype()));
    }

    /// The peer for the next attempt: the slot's next untried instance,
    /// with the configured time-outs.
    pub fn next_peer(&mut self, timeouts: &UpstreamTimeouts) -> Result<HttpPeer> {
        let pool = self
            .pool()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request was not routed"))?;
        // An upstream error (502), not an internal one: the slot has no
        // instance left that could take the request.
        let no_route = |why: &'static str| Error::explain(ErrorType::ConnectNoRoute, why).into_up();
        let Some(i) = pool.pick(self.tried) else {
            return Err(no_route("no instance of the slot is left to try"));
        };
        let instance = &pool.instances[i];
        let addr = instance
            .addr
            .ok_or_else(|| no_route("instance does not resolve"))?;
        let mut peer = match pool.probe.protocol {
            InstancesProtocol::Http1 => HttpPeer::new(addr, false, String::new()),
            InstancesProtocol::H2c => {
                // HTTP/2 only, without TLS: pingora then speaks h2c
                let mut peer = HttpPeer::new(addr, false, String::new());
                peer.options.set_http_version(2, 2);
                peer
            }
            InstancesProtocol::H2 => {
                // TLS offering only ALPN h2; the certificate must be valid
                // for the instance's host and chain to the deployment's CA
                let name = crate::upstream_tls::server_name(&instance.label);
                let mut peer = HttpPeer::new(addr, true, name.to_string());
                peer.options.set_http_version(2, 2);
                if let Some(ca) = &pool.probe.tls_ca {
                    peer.options.ca = Some(crate::upstream_tls::trusted(ca).peer.clone());
                }
                peer
            }
        };
        let read_timeout = pool.read_timeout;
        self.attempts += 1;
        self.instance = Some(i);
        self.upstream_connected = false;
        self.connect_start = Some(Instant::now());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(read_timeout.unwrap_or(timeouts.read));
        peer.options.write_timeout = Some(timeouts.write);
        peer.options.idle_timeout = Some(timeouts.idle);
        Ok(peer)
    }

    /// A connection to the instance failed: count it, mark the instance
    /// tried; returns whether another instance of the slot is left to try.
    pub fn connect_failed(&mut self, e: &Error) -> bool {
        self.count_upstream_error(e);
        self.connect_failed = true;
        self.outlier_outcome(crate::outlier::Outcome::ConnectFailed);
        // Only a failed connect marks the instance as tried: a request that
        // is retried after a stale pooled connection may go to the same
        // instance again over a fresh one.
        if let Some(i) = self.instance {
            self.tried |= 1 << i;
        }
        // Nothing was sent yet, so any method may go to the slot's next
        // instance; never to another slot.
        self.pool().is_some_and(|p| p.has_untried(self.tried))
    }

    /// A connection to the instance is up (`reused`: from the pool).
    pub fn connected(&mut self, reused: bool) {
        self.connect_failed = false;
        self.upstream_connected = true;
        self.outlier_outcome(crate::outlier::Outcome::Connected);
        if let (false, Some(start)) = (reused, self.connect_start) {
            metrics::upstream_connected(self.slot_metrics(), start.elapsed());
        }
    }
}

/// The bounded `kind` label of an upstream failure.
fn error_kind(e: &ErrorType) -> UpstreamErrorKind {
    match e {
        ErrorType::ConnectRefused => UpstreamErrorKind::ConnectRefused,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            UpstreamErrorKind::Timeout
        }
        ErrorType::ConnectNoRoute => UpstreamErrorKind::NoInstance,
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
            UpstreamErrorKind::Closed
        }
        _ => UpstreamErrorKind::Other,
    }
}

/// The fields of a local answer besides its length, on either request path
/// (`lean` writes them as bytes).
pub const LOCAL_FIELDS: [(&str, &str); 2] = [
    ("content-type", "text/plain; charset=utf-8"),
    ("cache-control", "no-store"),
];

/// The body of a local answer that has nothing more to say than its
/// status: `400 Bad Request`.
pub fn status_line(code: u16) -> String {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("Error");
    format!("{code} {reason}")
}

/// Every `X-Forwarded-For` value as one list: a proxy chain may send the
/// header more than once, and each is part of the chain (RFC 7230 §3.2.2).
fn forwarded_chain(req: &impl RequestView) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut values = req.values("x-forwarded-for");
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(std::borrow::Cow::Borrowed(first));
    };
    let mut joined = first.to_vec();
    for v in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v);
    }
    Some(std::borrow::Cow::Owned(joined))
}

/// A client-supplied value, made safe to echo in a one-line body.
fn shown(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(&v[..v.len().min(100)]);
    format!("{:?}", s)
}

/// Route a request (host lookup, `decide`, `ip_allow`) and fill `ctx` with
/// the answer; `Some((status, message))` when it must be answered locally
/// (404, 403, 503). Both request paths call this: the `request_filter` hook
/// and the lean HTTP/1 path (`lean`).
pub fn route_request(
    table: Arc<RouteTable>,
    req: &impl RequestView,
    peer_ip: Option<IpAddr>,
    tls_here: bool,
    ctx: &mut RequestCtx,
) -> Option<(u16, String)> {
    ctx.peer_ip = peer_ip;
    let Some(target) = table.lookup_host(req.host()) else {
        let msg = format!(
            "404 Not Found: no site is configured for host {}",
            shown(req.host())
        );
        return Some((404, msg));
    };
    let site = &table.sites[target.site as usize];
    let trusted = peer_ip.is_some_and(|ip| is_trusted(ip, &site.trusted_proxies));

    let decision = route(&table, target, req);
    let slot = &site.slots[decision.slot as usize];

    // Decided before any local answer, so 403 and 503 count for the slot.
    let mut refusal = None;
    if !slot.ip_allow.is_empty() {
        let client = peer_ip
            .map(|peer| client_ip(peer, forwarded_chain(req).as_deref(), &site.trusted_proxies));
        if !client.is_some_and(|ip| slot.ip_allow.iter().any(|n| n.contains(&ip))) {
            let who = client.map_or("unknown".to_string(), |ip| ip.to_string());
            let msg = format!(
                "403 Forbidden: client {who} is not allowed to reach slot {} of site {}",
                slot.name, site.name
            );
            refusal = Some((403, msg));
        }
    }
    if refusal.is_none() && slot.pool.is_none() {
        let msg = format!(
            "503 Service Unavailable: slot {} of site {} has no deployment",
            slot.name, site.name
        );
        refusal = Some((503, msg));
    }

    ctx.site = target.site;
    ctx.decision = Some(decision);
    ctx.trusted_peer = trusted;
    ctx.https = if trusted {
        req.first("x-forwarded-proto")
            .map_or(tls_here, |v| v.eq_ignore_ascii_case(b"https"))
    } else {
        tls_here
    };
    ctx.table = Some(table);
    refusal
}

/// The `X-Forwarded-For`, `-Proto`, `-Host` and `X-Slot-Name` values the
/// instance gets (each replaces what the client sent), computed once for
/// every request path: the HTTP/1 path writes them as bytes (`h1`), the
/// HTTP/2 ones into a header map (`edge::h2_upstream`).
pub struct Forwarded<'a> {
    /// `None`: no peer address, the field is dropped.
    pub for_: Option<ForwardedFor>,
    pub proto: &'a [u8],
    /// `None`: no host at all, the field is dropped.
    pub host: Option<&'a [u8]>,
    pub slot: Option<&'a HeaderValue>,
}

/// The forwarded values for the routed request `req` (see [`Forwarded`]):
/// a trusted proxy's `-Proto` and `-Host` are kept, anyone else's replaced.
pub fn forwarded<'a>(req: &'a impl RequestView, ctx: &'a RequestCtx) -> Forwarded<'a> {
    // only a trusted proxy's chain is looked at
    let for_ = ctx.peer_ip.map(|peer| match ctx.trusted_peer {
        true => ForwardedFor::new(peer, forwarded_chain(req).as_deref(), true),
        false => ForwardedFor::Peer(peer),
    });
    let keep = |name: &'a str| ctx.trusted_peer.then(|| req.first(name)).flatten();
    let proto = keep("x-forwarded-proto").unwrap_or(if ctx.https { b"https" } else { b"http" });
    let host = keep("x-forwarded-host").or_else(|| Some(req.host()).filter(|h| !h.is_empty()));
    Forwarded {
        for_,
        proto,
        host,
        slot: ctx.slot().map(|s| &s.name_header),
    }
}

/// The pin cookie a response must set, if the routing decision says so:
/// the bucket's (`b.<n>`) or the slot's, `Secure` when the client came
/// over TLS.
pub fn pin_cookie(ctx: &RequestCtx) -> Option<HeaderValue> {
    let decision = ctx.decision?;
    if !decision.set_cookie {
        return None;
    }
    let secure = ctx.https;
    if let (Some(bucket), Some(table)) = (decision.bucket, &ctx.table) {
        return Some(table.bucket_cookie(u32::from(bucket), secure));
    }
    let slot = ctx.slot()?;
    Some(if secure {
        slot.cookie_secure.clone()
    } else {
        slot.cookie.clone()
    })
}

/// The status a failed request is answered with (0: none, the client is
/// gone), given whether its body had been read; counts the upstream error
/// unless `fail_to_connect` counted it already.
pub fn failure_status(e: &Error, body_done: bool, ctx: &RequestCtx) -> u16 {
    // A client that stalls its body is not the app's failure (it gets 408).
    let client_fault = crate::limits::client_fault(e.etype(), e.esource(), body_done);
    // Connect failures were counted in fail_to_connect as they happened.
    let upstream =
        e.esource() == &ErrorSource::Upstream || matches!(e.etype(), ErrorType::ConnectNoRoute);
    if upstream && !ctx.connect_failed && client_fault.is_none() {
        ctx.count_upstream_error(e);
    }
    client_fault.unwrap_or_else(|| match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    })
}

/// The 502 page's line.
pub fn bad_gateway_message(ctx: &RequestCtx) -> String {
    let what = match (ctx.site(), ctx.slot()) {
        (Some(site), Some(slot)) => format!("slot {} of site {}", slot.name, site.name),
        _ => "the chosen slot".into(),
    };
    format!(
        "502 Bad Gateway: no instance of {what} answered ({} tried)",
        ctx.attempts
    )
}

/// The 408 page's line (a request body that stopped arriving).
pub const BODY_TIMEOUT_MESSAGE: &str = "408 Request Timeout: the request body stopped arriving before it was complete (server.body_timeout_secs)";

/// What the metrics and the access log record of a finished request,
/// whichever path served it.
pub struct Finished<'a> {
    pub method: &'a str,
    /// The target as received (path and query).
    pub path: &'a str,
    pub host: &'a [u8],
    pub version: http::Version,
    /// The status written to the client (`None`: none was, the client went
    /// away first).
    pub status: Option<u16>,
    /// Response body bytes written to the client.
    pub bytes: usize,
    /// The connection's peer.
    pub peer: Option<IpAddr>,
}

/// Count a finished request and write its access-log line.
pub fn log_request(f: Finished<'_>, ctx: &RequestCtx) {
    // a local answer to a gRPC request went out as 200 + grpc-status: the
    // status it stands for is counted
    let status = ctx
        .local_status
        .unwrap_or_else(|| f.status.unwrap_or(metrics::CLIENT_CLOSED));
    let elapsed = ctx.start.elapsed();
    metrics::request_finished(ctx.slot_metrics(), status, elapsed, f.version);
    // the instance's answer (or its failure after the connection) counts
    // for outlier ejection; the proxy's own answers do not
    let from_instance = ctx.upstream_connected && ctx.local_status.is_none();
    if let Some(outcome) = crate::outlier::outcome_of(f.status, from_instance) {
        ctx.outlier_outcome(outcome);
    }
    if let Some(format) = crate::access_log::format() {
        let entry = crate::access_log::Entry {
            time: crate::activity::now(),
            client: ctx.peer_ip.or(f.peer),
            host: std::str::from_utf8(f.host).unwrap_or("-"),
            site: ctx.site().map_or("-", |s| &s.name),
            slot: ctx.slot().map_or("-", |s| &s.name),
            instance: ctx.instance_label().unwrap_or("-"),
            method: f.method,
            path: f.path,
            protocol: metrics::protocol_name(f.version),
            status,
            bytes: f.bytes,
            duration: elapsed.as_secs_f64(),
            reason: ctx.decision.map_or("-", |d| d.reason.as_str()),
        };
        crate::access_log::write(entry.format(format));
    }
}
