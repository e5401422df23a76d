//! The lean HTTP/1 proxy path: plain HTTP/1 requests forwarded by one
//! straight-line `async fn` on pingora-core's HTTP/1 server and client
//! sessions and its transport connector, with idle upstream connections
//! kept in `idle_pool`, instead of pingora-proxy.
//!
//! Why: the load benchmark's floors (BENCHMARKS.md) showed most of the gap
//! to nginx in pingora-proxy's per-request machinery — the downstream
//! session boxed twice, a dozen boxed hook futures, two `mpsc` channels and
//! a `try_join!` per request, downstream modules — not in pingora-core's
//! sessions. This path keeps pingora as the engine (listeners, TLS, the
//! HTTP/1 parser and writers, connect and its time-outs, graceful upgrade)
//! and drops the rest for the requests that do not need it.
//!
//! What it serves: what `connection::inspect` calls *plain* (an
//! origin-form target, one `Host`, no request body, no hop-by-hop field but
//! `Connection: keep-alive|close` and `Keep-Alive`) on a site whose slots
//! all have plain HTTP/1 instances ([`Lean::takes`]). Everything else —
//! request bodies, upgrades (WebSocket), `Expect: 100-continue`, absolute
//! targets, h2c instances, HTTP/2 clients — goes to pingora-proxy as
//! before, decided before the request is parsed.
//!
//! What it shares with the pingora-proxy path, by calling the same
//! functions of `proxy`: the routing decision and its local 404/403/503
//! pages, the instance pick and its retries of connect errors on the slot's
//! other instances, the time-outs, the forwarded headers and `X-Slot-Name`,
//! the pin cookie, the 502 page, metrics and the access log, and the drain.
//! What it does like pingora-proxy without sharing code (the code is
//! private to pingora-proxy): the hop-by-hop fields it strips (only
//! `Connection` and `Keep-Alive` can reach it), the version of the upstream
//! request (HTTP/1.1), and the retry of a request whose pooled connection
//! turned out to be closed before any response byte arrived.

use crate::idle_pool::IdlePool;
use crate::limits::FastPath;
use crate::model::InstancesProtocol;
use crate::proxy::{
    bad_gateway_message, failure_status, final_response, forwarded_headers, local_response,
    log_finished, route_request, status_line, RequestCtx, UpstreamTimeouts,
};
use crate::routing::RouteTable;
use arc_swap::ArcSwap;
use bytes::Bytes;
use pingora_core::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use std::sync::Arc;

/// Most upstream attempts for one request: connect failures (each on
/// another instance) and stale pooled connections together; pingora-proxy's
/// default `max_retries` is the same.
const MAX_ATTEMPTS: u32 = 16;

/// The lean path's state: the routing table, the upstream time-outs,
/// pingora's transport connector (connect, time-out, TLS) and the idle
/// connections to instances (`idle_pool`).
pub struct Lean {
    table: Arc<ArcSwap<RouteTable>>,
    timeouts: UpstreamTimeouts,
    transport: TransportConnector,
    idle: Arc<IdlePool>,
}

impl Lean {
    pub fn new(table: Arc<ArcSwap<RouteTable>>, timeouts: UpstreamTimeouts) -> Lean {
        let idle = Arc::new(IdlePool::new());
        // the sweep closes expired idle connections; it ends with the pool
        let weak = Arc::downgrade(&idle);
        let sweeper = std::thread::Builder::new()
            .name("slotproxy-idle-sweep".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                match weak.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            });
        if let Err(e) = sweeper {
            log::warn!("idle upstream connections will not be swept: {e}");
        }
        Lean {
            table,
            timeouts,
            transport: TransportConnector::new(None),
            idle,
        }
    }

    /// A connection to `peer`: an idle one if there is one (`true`), else
    /// a new one.
    async fn connect(&self, peer: &HttpPeer) -> Result<(UpstreamSession, bool)> {
        let addr = peer.address().as_inet().copied();
        if let Some(stream) = addr.and_then(|a| self.idle.take(&a)) {
            return Ok((UpstreamSession::new_with_options(stream, peer), true));
        }
        let stream = self.transport.new_stream(peer).await?;
        Ok((UpstreamSession::new_with_options(stream, peer), false))
    }

    /// Return the connection to the idle pool if its response was read
    /// to the end and both sides allow keep-alive.
    async fn release(&self, mut up: UpstreamSession, peer: &HttpPeer) {
        up.respect_keepalive();
        let (Some(addr), Some(idle)) =
            (peer.address().as_inet().copied(), peer.options.idle_timeout)
        else {
            return;
        };
        if let Some(stream) = up.reuse().await {
            self.idle.put(addr, stream, idle);
        }
    }
}

/// Whether the lean path can serve the site of `host` in `table`: every
/// slot's instances speak plain HTTP/1 (an h2c pool needs pingora-proxy's
/// HTTP/2 client). An unknown host is served here too (its 404).
pub fn serves_host(table: &RouteTable, host: &[u8]) -> bool {
    let Some(target) = table.lookup_host(host) else {
        return true;
    };
    table.sites[target.site as usize].slots.iter().all(|s| {
        s.pool
            .as_ref()
            .is_none_or(|p| p.probe.protocol == InstancesProtocol::Http1)
    })
}

/// The request sent to the instance: the client's header as HTTP/1.1, its
/// `Connection` and `Keep-Alive` fields dropped (the connection to the
/// instance is pooled on its own terms), the forwarded headers added.
fn upstream_request(req: &RequestHeader, ctx: &RequestCtx) -> Result<Box<RequestHeader>> {
    let mut up = Box::new(req.clone());
    up.set_version(http::Version::HTTP_11);
    if up.headers.contains_key(http::header::CONNECTION) {
        up.remove_header(&http::header::CONNECTION);
    }
    if up.headers.contains_key("keep-alive") {
        up.remove_header("keep-alive");
    }
    forwarded_headers(req, &mut up, ctx)?;
    Ok(up)
}

/// How a proxied request ended short of success.
enum Failed {
    /// Before any response was written to the client: answer it.
    Early(Box<Error>),
    /// After the response began, or the client went away: close. Holds
    /// the instance's error, if it was the instance that failed (counted).
    Late(Option<Box<Error>>),
}

impl Lean {
    /// Route, then forward or answer locally. `Err` leaves the client
    /// connection unusable.
    async fn proxy(
        &self,
        table: Arc<RouteTable>,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> Result<(), Failed> {
        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls_here = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let refusal = route_request(table, session.req_header(), peer_ip, tls_here, ctx);
        if let Some((code, msg)) = refusal {
            let (resp, body) = local_response(code, msg).map_err(Failed::Early)?;
            session
                .write_response_header(resp)
                .await
                .map_err(|_| Failed::Late(None))?;
            return session
                .write_response_body(body, true)
                .await
                .map_err(|_| Failed::Late(None));
        }
        loop {
            let peer = ctx.next_peer(&self.timeouts).map_err(Failed::Early)?;
            let (mut up, reused) = match self.connect(&peer).await {
                Ok(c) => c,
                Err(e) => {
                    if ctx.connect_failed(&e) && ctx.attempts < MAX_ATTEMPTS {
                        continue;
                    }
                    return Err(Failed::Early(e.into_up()));
                }
            };
            ctx.connected(reused);
            up.read_timeout = peer.options.read_timeout;
            up.write_timeout = peer.options.write_timeout;
            match self.exchange(session, &mut up, ctx).await {
                Ok(()) => {
                    self.release(up, &peer).await;
                    return Ok(());
                }
                Err(Failed::Early(mut e)) => {
                    // a pooled connection the instance had closed: nothing
                    // was answered, so the request may go again, on a fresh
                    // or another pooled connection
                    e.retry.decide_reuse(reused);
                    // ...unless the instance may have acted on it: a method
                    // that is not idempotent (POST, PATCH) is never sent
                    // twice, as pingora-proxy's `error_while_proxy` decides
                    if !session.req_header().method.is_idempotent() {
                        e.set_retry(false);
                    }
                    if e.retry() && ctx.attempts < MAX_ATTEMPTS {
                        continue;
                    }
                    return Err(Failed::Early(e));
                }
                Err(late) => return Err(late),
            }
        }
    }

    /// One request and its response over the connection `up`.
    async fn exchange(
        &self,
        session: &mut ServerSession,
        up: &mut UpstreamSession,
        ctx: &mut RequestCtx,
    ) -> Result<(), Failed> {
        let req = upstream_request(session.req_header(), ctx).map_err(Failed::Early)?;
        up.write_request_header(req)
            .await
            .map_err(|e| Failed::Early(e.into_up()))?;
        let mut resp = loop {
            up.read_response()
                .await
                .map_err(|e| Failed::Early(e.into_up()))?;
            let Some(resp) = up.resp_header() else {
                return Err(Failed::Early(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "no response header",
                )));
            };
            if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
                // never asked for (plain requests carry no Upgrade)
                return Err(Failed::Early(
                    Error::explain(ErrorType::InvalidHTTPHeader, "101 without an upgrade")
                        .into_up(),
                ));
            }
            if !resp.status.is_informational() {
                break resp.clone();
            }
            // 103 Early Hints and the like go to the client as they are;
            // an HTTP/1.0 client must not get one (RFC 9110 §15.2)
            if session.req_header().version != http::Version::HTTP_10 {
                session
                    .write_response_header_ref(resp)
                    .await
                    .map_err(|_| Failed::Late(None))?;
            }
        };
        // A body delimited by the instance closing its connection is sent
        // on chunked, as pingora-proxy does, so the client connection stays
        // reusable and a cut-off body is seen as cut off (HTTP/1.0 clients
        // get it close-delimited again: `final_response`).
        let no_body = session.req_header().method == http::Method::HEAD
            || matches!(resp.status.as_u16(), 204 | 304);
        if !no_body
            && resp.headers.get(http::header::TRANSFER_ENCODING).is_none()
            && resp.headers.get(http::header::CONTENT_LENGTH).is_none()
            && !up.is_body_done()
        {
            resp.set_version(http::Version::HTTP_11);
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")
                .map_err(|e| Failed::Early(e.into_in()))?;
        }
        if final_response(&mut resp, session.req_header().version, ctx)
            .map_err(|e| Failed::Early(e.into_in()))?
        {
            session.set_keepalive(None);
        }
        session
            .write_response_header(Box::new(resp))
            .await
            .map_err(|_| Failed::Late(None))?;
        // the rest fails late: the response has begun
        let instance_failed = |e: Box<Error>| Failed::Late(Some(e.into_up()));
        while let Some(chunk) = up.read_body_bytes().await.map_err(instance_failed)? {
            session
                .write_response_body(chunk, false)
                .await
                .map_err(|_| Failed::Late(None))?;
        }
        session
            .write_response_body(Bytes::new(), true)
            .await
            .map_err(|_| Failed::Late(None))
    }

    /// Answer a failure that happened before the response began, as
    /// `SlotProxy::fail_to_proxy` does.
    async fn answer_failure(session: &mut ServerSession, e: &Error, ctx: &RequestCtx) {
        let code = failure_status(e, true, ctx);
        let message = match code {
            0 => return,
            502 => bad_gateway_message(ctx),
            _ => status_line(code),
        };
        if let Ok((resp, body)) = local_response(code, message) {
            if session.write_response_header(resp).await.is_ok() {
                let _ = session.write_response_body(body, true).await;
            }
        }
    }
}

impl FastPath for Lean {
    /// The table the choice was made on: the request is routed with it, so
    /// a slot cannot turn HTTP/2 between the choice and the routing.
    type Ticket = Arc<RouteTable>;

    fn takes(&self, host: &[u8]) -> Option<Arc<RouteTable>> {
        let table = self.table.load_full();
        serves_host(&table, host).then_some(table)
    }

    async fn serve(
        &self,
        table: Arc<RouteTable>,
        mut session: ServerSession,
        closing: bool,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    let _ = session.respond_error(400).await;
                }
                return None;
            }
        }
        if closing {
            session.set_keepalive(None);
        }
        let mut ctx = RequestCtx::default();
        let outcome = self.proxy(table, &mut session, &mut ctx).await;
        match &outcome {
            Err(Failed::Early(e)) => Self::answer_failure(&mut session, e, &ctx).await,
            Err(Failed::Late(Some(e))) => {
                // counted; the client sees a truncated response
                failure_status(e, true, &ctx);
            }
            _ => {}
        }
        log_finished(&session, &ctx);
        if outcome.is_err() {
            // as pingora-proxy does after a failure: no reuse
            return None;
        }
        let persisted = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(s) => s.map(|s| ReusedHttpStream::from_reusable_stream(s, persisted)),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Health;
    use crate::routing::table::compile_toml;

    const CFG: &str = r#"
[[sites]]
name = "web"
hostnames = ["web.example.com"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:3001"]
[[sites.slots]]
name = "staging"
instances = ["127.0.0.1:3002"]

[[sites]]
name = "grpc"
hostnames = ["grpc.example.com"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:3003"]
[[sites.slots]]
name = "staging"
instances = ["127.0.0.1:3004"]
instances_protocol = "h2c"
"#;

    #[test]
    fn sites_with_an_h2c_slot_are_left_to_pingora_proxy() {
        let t = compile_toml(CFG, &Health::new());
        assert!(serves_host(&t, b"web.example.com"));
        assert!(serves_host(&t, b"WEB.example.com:8080"));
        // one h2c slot is enough: the decision comes after the choice
        assert!(!serves_host(&t, b"grpc.example.com"));
        // unknown hosts get their 404 here
        assert!(serves_host(&t, b"nowhere.example.com"));
    }

    #[test]
    fn the_upstream_request_is_http11_without_hop_by_hop_fields() {
        let t = Arc::new(compile_toml(CFG, &Health::new()));
        let mut req = RequestHeader::build("GET", b"/a?b=c", None).unwrap();
        req.set_version(http::Version::HTTP_10);
        req.insert_header("host", "web.example.com").unwrap();
        req.insert_header("connection", "keep-alive").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("x-forwarded-for", "6.6.6.6").unwrap();
        req.insert_header("accept", "*/*").unwrap();
        let mut ctx = RequestCtx::default();
        let peer = Some("10.1.2.3".parse().unwrap());
        assert!(route_request(t, &req, peer, false, &mut ctx).is_none());
        let up = upstream_request(&req, &ctx).unwrap();
        assert_eq!(up.version, http::Version::HTTP_11);
        assert_eq!(up.raw_path(), b"/a?b=c");
        let get = |n: &str| up.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("connection"), None);
        assert_eq!(get("keep-alive"), None);
        assert_eq!(get("host").as_deref(), Some("web.example.com"));
        assert_eq!(get("accept").as_deref(), Some("*/*"));
        // an untrusted peer's X-Forwarded-For is replaced
        assert_eq!(get("x-forwarded-for").as_deref(), Some("10.1.2.3"));
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(get("x-forwarded-host").as_deref(), Some("web.example.com"));
        let slot = get("x-slot-name").unwrap();
        assert!(slot == "production" || slot == "staging", "{slot}");
        // the client's own header is left as it was
        assert_eq!(req.headers.get("connection").unwrap(), "keep-alive");
    }
}
