//! The engine's HTTP/1 path (every HTTP/1 request): forwarded by one
//! straight-line `async fn` on the raw client and instance connections,
//! with our own HTTP/1 codec (`h1`), pingora-core's transport connector,
//! and idle instance connections kept in `idle_pool` — not pingora-proxy,
//! which is off the request path.
//!
//! Why: the load benchmark's floors (docs/performance/history.md) showed most of the gap
//! to nginx in pingora-proxy's per-request machinery (the session boxed
//! twice, a dozen boxed hook futures, two `mpsc` channels and a `try_join!`
//! per request), and most of the rest in pingora-core's session objects:
//! two header maps built per message, the request header cloned for the
//! instance, the response header cloned and serialized again. Here the
//! request header is parsed once in place and written to the instance with
//! the forwarded fields spliced in, and the response header is parsed once
//! and written to the client with the pin cookie spliced in; a small
//! response goes out in one write. pingora stays the engine: listeners,
//! TLS, connect and its time-out, graceful upgrade.
//!
//! What it serves: what `connection::inspect` calls *plain*
//! (`connection::Plain`: HTTP/1.1, an origin-form target, one `Host`, a
//! body of one `Content-Length` or `chunked`, or none, and no hop-by-hop
//! field but `Connection`, `Keep-Alive`, an `Upgrade` and `Expect:
//! 100-continue`). The body streams to the instance as it arrives
//! (`request_body`: a chunked one framed anew), while the instance is
//! watched for an early answer: an interim `100 Continue` goes to the
//! client (which then sends its body), a final answer ends the body's
//! forwarding and the client connection after it. An upgrade's `101`
//! turns the connection into a tunnel (`tunnel`). A request that is not
//! plain as it came (HTTP/1.0, an absolute target, bare-LF lines,
//! hop-by-hop fields) is written anew in the plain form by `head_rewrite`
//! first and served here too; an HTTP/1.0 client's answer is framed as
//! HTTP/1.0 allows (`h1::ClientAdds::http10`). A request routed to a slot
//! whose instances speak HTTP/2 goes over HTTP/2 (`edge::h1_h2`).
//!
//! What it shares with the HTTP/2 front end (`edge`), by calling the same
//! functions of `proxy`: the routing decision and its local 404/403/503
//! pages, the instance pick and its retries of connect errors on the slot's
//! other instances, the time-outs, the forwarded headers and `X-Slot-Name`
//! (`proxy::forwarded`), the pin cookie (`proxy::pin_cookie`), the 502
//! page, metrics and the access log (`proxy::log_request`), and the drain.
//! What it does as pingora-proxy did, without its code: the hop-by-hop
//! fields it drops (`h1`), a body the instance delimits by closing sent on
//! chunked, and the retry of an idempotent request whose pooled connection
//! turned out to be closed before any response byte arrived.

use crate::connection::{Fenced, PlainKind};
use crate::h1::{self, Body, ClientAdds, ResponseHead};
use crate::idle_pool::futures_lite_now_or_never::now_or_never;
use crate::idle_pool::{IdlePool, PoolKey};
use crate::model::InstancesProtocol;
use crate::proxy::{
    bad_gateway_message, failure_status, forwarded, log_request, pin_cookie, route_request,
    status_line, Finished, RequestCtx, UpstreamTimeouts, BODY_TIMEOUT_MESSAGE, LOCAL_FIELDS,
};
use crate::request_body::{BodyIn, ChunkedDecoder, Pace};
use crate::routing::RouteTable;
use arc_swap::ArcSwap;
use bytes::BytesMut;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::{GetSocketDigest, Ssl, Stream};
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorType};
use pingora_timeout::fast_timeout::fast_timeout;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most upstream attempts for one request: connect failures (each on
/// another instance) and stale pooled connections together; pingora-proxy's
/// default `max_retries` is the same.
pub(crate) const MAX_ATTEMPTS: u32 = 16;

/// Read buffer for an instance's response, and for each read of its body.
const READ_BUF: usize = 16 * 1024;

/// The lean path's state: the routing table, the upstream time-outs,
/// pingora's transport connector (connect, time-out, TLS) and the idle
/// connections to instances (`idle_pool`). Cloned, it shares all of
/// them: the HTTP/2 front end (`edge`) reaches HTTP/1 instances through
/// the same pooled connections.
#[derive(Clone)]
pub struct Lean {
    pub(crate) table: Arc<ArcSwap<RouteTable>>,
    pub(crate) timeouts: UpstreamTimeouts,
    /// `[server] body_timeout_secs`: the most a request body may pause.
    pub(crate) body_timeout: Duration,
    /// `[server] body_min_bytes_per_sec`: the mean rate a body must keep.
    pub(crate) body_min_rate: u64,
    /// `[server] send_timeout_secs`: the most a client may stall its answer.
    pub(crate) send_timeout: Duration,
    /// `[server] max_response_header_bytes`: a larger answer's header is a 502.
    pub(crate) max_response_head: usize,
    pub(crate) transport: Arc<TransportConnector>,
    idle: Arc<IdlePool>,
    /// The shared HTTP/2 connections to h2c / h2 instances, for HTTP/1
    /// and HTTP/2 clients alike (`edge::h2_upstream`).
    pub(crate) h2: Arc<crate::edge::h2_upstream::Upstreams>,
}

impl Lean {
    /// The lean path of `table`, with `[server]`'s time-outs and limits.
    pub fn new(table: Arc<ArcSwap<RouteTable>>, server: &crate::config::ServerSection) -> Lean {
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
            timeouts: UpstreamTimeouts::from_config(server),
            body_timeout: Duration::from_secs(server.body_timeout_secs),
            body_min_rate: server.body_min_bytes_per_sec,
            send_timeout: Duration::from_secs(server.send_timeout_secs),
            max_response_head: server.max_response_header_bytes,
            transport: Arc::new(TransportConnector::new(None)),
            idle,
            h2: Arc::default(),
        }
    }

    /// A connection to `peer` for a request of `site`: an idle one if
    /// there is one (`true`), else a new one.
    pub(crate) async fn connect(
        &self,
        peer: &HttpPeer,
        site: &str,
    ) -> pingora_error::Result<(Stream, bool)> {
        let key = peer.address().as_inet().map(|a| PoolKey::new(site, *a));
        let unasked = || crate::metrics::upstream_discarded(site, "unasked_bytes");
        if let Some(stream) = key.and_then(|k| self.idle.take(&k, unasked)) {
            return Ok((stream, true));
        }
        Ok((self.transport.new_stream(peer).await?, false))
    }

    /// Keep the connection for the next request of `site` to `peer`.
    pub(crate) fn release(&self, stream: Stream, peer: &HttpPeer, site: &str) {
        if let (Some(addr), Some(idle)) =
            (peer.address().as_inet().copied(), peer.options.idle_timeout)
        {
            self.idle.put(PoolKey::new(site, addr), stream, idle);
        }
    }
}

/// A request read, routed and made ready for the instance, from one parse
/// of its header; the header's parts the log needs stay in the header
/// bytes (`Range`s into them).
struct Prepared {
    /// What the instance gets (`h1::upstream_request`); empty when the
    /// request is answered locally.
    upstream: Vec<u8>,
    /// A local answer (404, 403, 503) instead.
    refusal: Option<(u16, String)>,
    method: Range<usize>,
    path: Range<usize>,
    host: Range<usize>,
    /// The method may be sent again after a connection failed under it.
    idempotent: bool,
    head_request: bool,
    /// The client said `Connection: close`.
    client_close: bool,
    kind: PlainKind,
    /// The slot's instances speak HTTP/2: the request as HTTP/2 parts
    /// (`edge::h1_h2`), and `upstream` holds the body bytes read so far.
    h2: Option<http::request::Parts>,
}

/// Where `part` (a slice of `whole`) sits in it.
fn span(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    if part.is_empty() || start + part.len() > whole.len() {
        return 0..0;
    }
    start..start + part.len()
}

/// Parse and route the request whose header is `head`, and write what the
/// instance gets. `None`: not an HTTP/1.1 request after all (the
/// connection loop's parse said it was).
fn prepare(
    table: Arc<RouteTable>,
    head: &[u8],
    kind: PlainKind,
    peer_ip: Option<std::net::IpAddr>,
    tls_here: bool,
    ctx: &mut RequestCtx,
) -> Option<Prepared> {
    let mut headers = h1::headers();
    let req = h1::parse_request(head, &mut headers)?;
    let mut refusal = route_request(table, &req, peer_ip, tls_here, ctx);
    let mut upstream = Vec::new();
    let mut h2 = None;
    let to_h2 = ctx
        .slot()
        .and_then(|s| s.pool.as_ref())
        .is_some_and(|p| p.probe.protocol != InstancesProtocol::Http1);
    if refusal.is_none() && to_h2 {
        h2 = crate::edge::h2_parts(&req);
        if h2.is_none() {
            refusal = Some((
                400,
                "400 Bad Request: a header field HTTP/2 cannot carry".to_string(),
            ));
        }
    } else if refusal.is_none() {
        upstream.reserve(head.len() + 160);
        let fwd = forwarded(&req, ctx);
        h1::upstream_request(head, &req, &fwd, kind.upgrade, &mut upstream);
    }
    let method = http::Method::from_bytes(req.method.as_bytes()).ok();
    Some(Prepared {
        upstream,
        refusal,
        method: span(head, req.method.as_bytes()),
        path: span(head, req.path.as_bytes()),
        host: span(head, crate::routing::RequestView::host(&req)),
        idempotent: method.as_ref().is_some_and(http::Method::is_idempotent),
        head_request: method == Some(http::Method::HEAD),
        client_close: req.wants_close(),
        kind,
        h2,
    })
}

/// How a proxied request ended short of success.
pub(crate) enum Failed {
    /// Before any response was written to the client: answer it.
    Early(Box<Error>),
    /// After the response began, or the client went away: close (an
    /// HTTP/2 stream: reset). Holds the instance's error, if it was the
    /// instance that failed (counted).
    Late(Option<Box<Error>>),
}

/// An error of the instance's connection (502 unless a time-out).
fn upstream_error(etype: ErrorType, why: &'static str) -> Box<Error> {
    Error::explain(etype, why).into_up()
}

/// What went out to the client.
#[derive(Default)]
pub(crate) struct Sent {
    pub(crate) status: Option<u16>,
    /// Response body bytes (payload; no chunk framing).
    pub(crate) bytes: usize,
    /// The response said `Connection: close`.
    pub(crate) close: bool,
}

/// The client's side of the exchange: its connection and what was sent.
pub(crate) struct Client<'a> {
    pub(crate) conn: &'a mut Fenced,
    pub(crate) sent: Sent,
    /// `[server] send_timeout_secs`: the longest one write may wait for
    /// the client to take more (nginx's `send_timeout`: between two
    /// writes, not for the whole answer).
    send_timeout: Duration,
    /// The client speaks HTTP/1.0: a kept-alive answer says so.
    http10: bool,
    /// A copy for the slot's shadow, watching what goes out (`shadow`).
    shadow: Option<Box<crate::shadow::Tap>>,
}

impl Client<'_> {
    /// Write `bytes` (`body`: how many of them are body bytes) and flush.
    /// A client that takes nothing for the send time-out is let go (and
    /// with it the instance's connection, which is not read meanwhile).
    pub(crate) async fn send(&mut self, bytes: &[u8], body: usize) -> Result<(), Failed> {
        let s = self.conn.socket();
        let t = self.send_timeout;
        let mut rest = bytes;
        while !rest.is_empty() {
            match fast_timeout(t, s.write(rest)).await {
                Ok(Ok(n)) if n > 0 => rest = &rest[n..],
                _ => return Err(Failed::Late(None)),
            }
        }
        if !matches!(fast_timeout(t, s.flush()).await, Ok(Ok(()))) {
            return Err(Failed::Late(None));
        }
        if let Some(tap) = &mut self.shadow {
            tap.client_bytes(bytes);
        }
        self.sent.bytes += body;
        Ok(())
    }
}

/// How long the instance may take to begin its answer before the client
/// is watched too (a client that leaves then is seen at once, not at the
/// first write: its instance connection is let go and the request counted
/// as 499). Shorter waits do without: watching costs a read of the client
/// socket per request.
const WATCH_CLIENT_AFTER: Duration = Duration::from_millis(50);

/// Read more of the instance's answer into `buf` within `timeout`, as
/// [`read_more`], while also watching the client connection after
/// [`WATCH_CLIENT_AFTER`]: `Ok(None)` if the client closed it first.
async fn read_or_client_gone(
    up: &mut Stream,
    buf: &mut Vec<u8>,
    timeout: Duration,
    conn: &mut Fenced,
) -> Result<Option<usize>, Box<Error>> {
    let soon = WATCH_CLIENT_AFTER.min(timeout);
    if let Ok(r) = fast_timeout(soon, read_some(up, buf)).await {
        return r.map(Some);
    }
    let mut probe = [0u8; 1];
    tokio::select! {
        r = read_more(up, buf, timeout - soon) => r.map(Some),
        // the fence (`connection::Fenced`, nothing allowed past this
        // bodiless request) keeps pipelined bytes for the next request and
        // ends this read only when the client closes or resets
        _ = conn.read(&mut probe) => Ok(None),
    }
}

/// One read of the instance's answer into `buf` (0 at its end).
async fn read_some(up: &mut Stream, buf: &mut Vec<u8>) -> Result<usize, Box<Error>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUF);
    }
    up.read_buf(buf)
        .await
        .map_err(|_| upstream_error(ErrorType::ReadError, "reading the response failed"))
}

/// Read more of the instance's answer into `buf` within `timeout`; 0 at
/// its end.
async fn read_more(
    up: &mut Stream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<usize, Box<Error>> {
    match fast_timeout(timeout, read_some(up, buf)).await {
        Ok(r) => r,
        Err(_) => Err(upstream_error(
            ErrorType::ReadTimedout,
            "no response within the read time-out",
        )),
    }
}

/// Why the client's side of a request failed (what `failure_status` makes
/// of it: 408 counted as the client's, 400, or no answer at all).
fn client_error(etype: ErrorType, why: &'static str) -> Box<Error> {
    Error::explain(etype, why).into_down()
}

/// The client stopped sending its body (408, the client's fault).
pub(crate) fn body_stalled() -> Box<Error> {
    client_error(ErrorType::ReadTimedout, "the request body stopped arriving")
}

/// What [`body_too_slow`] says, and the 408's text for it.
pub(crate) const BODY_SLOW: &str =
    "the request body arrived slower than server.body_min_bytes_per_sec";

/// The client sends its body slower than the mean rate it must keep
/// (408, the client's fault; `request_body::Pace`).
pub(crate) fn body_too_slow() -> Box<Error> {
    client_error(ErrorType::ReadTimedout, BODY_SLOW)
}

/// The 408 text for a body time-out `e`: stalled, or too slow.
pub(crate) fn body_timeout_message(e: &Error) -> String {
    if e.context.as_ref().is_some_and(|c| c.as_str() == BODY_SLOW) {
        format!("408 Request Timeout: {BODY_SLOW}")
    } else {
        BODY_TIMEOUT_MESSAGE.to_string()
    }
}

/// The client's chunked body cannot be framed (400).
pub(crate) fn body_malformed(why: &'static str) -> Box<Error> {
    client_error(ErrorType::HTTPStatus(400), why)
}

/// The client closed its connection in the middle of its body (no answer).
pub(crate) fn body_cut() -> Box<Error> {
    client_error(
        ErrorType::ConnectionClosed,
        "the client closed the connection before its body was complete",
    )
}

/// The chunked body ended inside `bytes` at `used`: what follows is the
/// next request's, and the connection is fenced from here on.
pub(crate) fn body_ended(conn: &mut Fenced, bytes: &[u8], used: usize) {
    conn.put_next(BytesMut::from(&bytes[used..]));
    conn.fence(Some(0));
}

/// Read more of the request body into `out` while it is already here
/// (no waiting): a small body that came a moment after its header then
/// goes out with it, in one write.
fn body_now(conn: &mut Fenced, body: &mut BodyIn, out: &mut Vec<u8>) -> Result<(), Box<Error>> {
    let mut chunk = [0u8; 4096];
    while !body.done() && out.len() < MAX_FIRST_WRITE {
        let read = tokio::task::unconstrained(conn.read(&mut chunk));
        let n = match now_or_never(read) {
            Some(Ok(n)) if n > 0 => n,
            // closed, failed, or nothing yet: the pump will see it
            _ => return Ok(()),
        };
        let used = body.take(&chunk[..n], out).map_err(body_malformed)?;
        if used < n {
            body_ended(conn, &chunk[..n], used);
        }
    }
    Ok(())
}

/// The most of a request body put into the request's first write.
const MAX_FIRST_WRITE: usize = 64 * 1024;

impl Lean {
    /// Forward the prepared request, or answer it locally. `Err` leaves
    /// the client connection unusable.
    async fn proxy(
        &self,
        client: &mut Client<'_>,
        req: &mut Prepared,
        body: &mut BodyIn,
        early: &[u8],
        close: bool,
        ctx: &mut RequestCtx,
    ) -> Result<(), Failed> {
        if let Some((code, msg)) = &req.refusal {
            // a body left unread ends the connection after the answer
            let close = close || !body.done();
            return send_local(client, *code, msg, close, req.head_request).await;
        }
        if !req.kind.expect_continue {
            body_now(client.conn, body, &mut req.upstream).map_err(Failed::Early)?;
        }
        let cookie = pin_cookie(ctx);
        let adds = ClientAdds {
            cookie: cookie.as_ref().map(|c| c.as_bytes()),
            // an upgrade the instance does not take ends the connection:
            // the client may have sent its first tunnel bytes already
            close: close || req.kind.upgrade,
            head_request: req.head_request,
            upgrade: req.kind.upgrade,
            max_head: self.max_response_head,
            http10: req.kind.http10,
        };
        if let Some(parts) = &req.h2 {
            let first = std::mem::take(&mut req.upstream);
            let expect = req.kind.expect_continue;
            return crate::edge::forward_h1_to_h2(
                self, client, parts, body, &first, &adds, expect, ctx,
            )
            .await;
        }
        // the table is held by `ctx` anyway: a second handle on it lends
        // the site's name without copying it
        let table = ctx.table.clone();
        let site = site_name(table.as_deref(), ctx.site);
        loop {
            let peer = ctx.next_peer(&self.timeouts).map_err(Failed::Early)?;
            let (mut up, reused) = match self.connect(&peer, site).await {
                Ok(c) => c,
                Err(e) => {
                    if ctx.connect_failed(&e) && ctx.attempts < MAX_ATTEMPTS {
                        continue;
                    }
                    return Err(Failed::Early(e.into_up()));
                }
            };
            ctx.connected(reused);
            let exchange = Exchange {
                up: &mut up,
                peer: &peer,
                req,
                body,
                early,
                adds: &adds,
                body_timeout: self.body_timeout,
                body_min_rate: self.body_min_rate,
                site,
            };
            match exchange.run(client).await {
                Ok(true) => {
                    self.release(up, &peer, site);
                    return Ok(());
                }
                Ok(false) => return Ok(()),
                // a pooled connection the instance had closed: nothing was
                // answered, so the request may go again on a fresh or
                // another pooled connection — unless the instance may have
                // acted on it: a method that is not idempotent (POST,
                // PATCH) is never sent twice, as pingora-proxy decides, nor
                // one whose body went out beyond its first write (it is
                // not held to be sent again)
                Err(Outcome::Stale(e)) => {
                    let again = reused && req.idempotent && !body.streamed;
                    if !(again && ctx.attempts < MAX_ATTEMPTS) {
                        return Err(Failed::Early(e));
                    }
                }
                Err(Outcome::Failed(f)) => return Err(f),
            }
        }
    }
}

/// How one exchange with an instance failed.
enum Outcome {
    /// Before any byte of a response came: the connection may have been
    /// closed by the instance while it idled.
    Stale(Box<Error>),
    Failed(Failed),
}

impl From<Failed> for Outcome {
    fn from(f: Failed) -> Outcome {
        Outcome::Failed(f)
    }
}

fn early(e: Box<Error>) -> Outcome {
    Outcome::Failed(Failed::Early(e))
}

/// What happened while the rest of the body went to the instance.
enum Pumped {
    /// The client read gave this many bytes (0: it closed).
    Client(std::io::Result<usize>),
    /// The instance sent this many bytes of its answer into the buffer.
    Instance(Result<usize, Box<Error>>),
}

/// One request and its response over one connection to an instance.
struct Exchange<'a> {
    up: &'a mut Stream,
    peer: &'a HttpPeer,
    req: &'a Prepared,
    body: &'a mut BodyIn,
    /// Bytes the client sent after an upgrade request's header: the
    /// tunnel's, sent on only after a `101`.
    early: &'a [u8],
    adds: &'a ClientAdds<'a>,
    body_timeout: Duration,
    /// `[server] body_min_bytes_per_sec`.
    body_min_rate: u64,
    /// The site's name: its own idle connections, and the metric's label.
    site: &'a str,
}

impl Exchange<'_> {
    fn write_timeout(&self) -> Duration {
        let w = self.peer.options.write_timeout;
        w.unwrap_or(Duration::from_secs(60))
    }

    fn read_timeout(&self) -> Duration {
        let r = self.peer.options.read_timeout;
        r.unwrap_or(Duration::from_secs(60))
    }

    /// Write and flush `bytes` to the instance within the write time-out.
    async fn write_up(&mut self, bytes: &[u8]) -> Result<(), Box<Error>> {
        let timeout = self.write_timeout();
        let up = &mut *self.up;
        let write = async {
            up.write_all(bytes).await?;
            up.flush().await
        };
        match fast_timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(upstream_error(
                ErrorType::WriteError,
                "sending the request failed",
            )),
            Err(_) => Err(upstream_error(
                ErrorType::WriteTimedout,
                "sending the request timed out",
            )),
        }
    }

    /// Send the rest of the body as it comes from the client, watching the
    /// instance: interim answers (`100 Continue`) go to the client; a final
    /// one (or the instance closing, or refusing more of the body) ends
    /// the forwarding with the body unfinished, and the response is read
    /// from `buf` on.
    async fn pump(
        &mut self,
        client: &mut Client<'_>,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), Outcome> {
        let mut chunk = vec![0u8; READ_BUF];
        let mut framed = Vec::with_capacity(READ_BUF + 64);
        // the app waiting for a stalled body times out too: that is the
        // client's fault as much as our own body time-out (`client_fault`)
        let wait = self.body_timeout.min(self.read_timeout());
        let mut pace = Pace::new(self.body_min_rate);
        // a client that asked for a 100 waits for it: that wait is the
        // instance's, not counted against the client's rate
        let mut pacing = !self.req.kind.expect_continue;
        while !self.body.done() {
            let allowance = pace.allowance().filter(|a| pacing && *a < wait);
            let up = &mut *self.up;
            let conn = &mut *client.conn;
            let began = std::time::Instant::now();
            let step = fast_timeout(allowance.unwrap_or(wait), async {
                tokio::select! {
                    r = conn.read(&mut chunk) => Pumped::Client(r),
                    r = read_some(up, buf) => Pumped::Instance(r),
                }
            })
            .await;
            let got = match &step {
                Ok(Pumped::Client(Ok(n))) => *n,
                _ => 0,
            };
            pacing |= got > 0;
            if pacing {
                pace.record(began.elapsed(), got);
            }
            match step {
                Err(_) if allowance.is_some() => return Err(early(body_too_slow())),
                Err(_) => return Err(early(body_stalled())),
                Ok(Pumped::Client(Ok(0) | Err(_))) => return Err(early(body_cut())),
                Ok(Pumped::Client(Ok(n))) => {
                    framed.clear();
                    let used = self
                        .body
                        .take(&chunk[..n], &mut framed)
                        .map_err(|why| early(body_malformed(why)))?;
                    if used < n {
                        body_ended(client.conn, &chunk[..n], used);
                    }
                    self.body.streamed = true;
                    if self.write_up(&framed).await.is_err() {
                        // the instance stopped taking the body: what it
                        // answered, if anything, is read next
                        return Ok(());
                    }
                }
                // the instance closed, or failed: the response read says
                // what that means
                Ok(Pumped::Instance(Ok(0) | Err(_))) => return Ok(()),
                Ok(Pumped::Instance(Ok(_))) => loop {
                    out.clear();
                    match h1::response_head(buf, self.adds, out) {
                        Ok(None) => break,
                        Ok(Some(h)) if h.status < 200 && h.status != 101 => {
                            if !self.adds.http10 {
                                client.send(out, 0).await?;
                            }
                            buf.drain(..h.len);
                            pacing = true;
                        }
                        // a final answer, or a bad one: read as the response
                        _ => {
                            out.clear();
                            return Ok(());
                        }
                    }
                },
            }
        }
        Ok(())
    }

    /// The request and its response. `Ok(true)`: the connection to the
    /// instance may be reused.
    async fn run(mut self, client: &mut Client<'_>) -> Result<bool, Outcome> {
        match self.write_up(&self.req.upstream).await {
            Ok(()) => {}
            Err(e) if e.etype() == &ErrorType::WriteError => return Err(Outcome::Stale(e)),
            Err(e) => return Err(early(e)),
        }
        let mut buf = Vec::with_capacity(READ_BUF);
        let mut out = Vec::with_capacity(1024);
        if !self.body.done() {
            self.pump(client, &mut buf, &mut out).await?;
        }
        let body_sent = self.body.done();
        // the client is watched for leaving only once nothing more of its
        // request is due (a read would take its body or tunnel bytes)
        let watch = body_sent && !self.adds.upgrade;
        let read_timeout = self.read_timeout();
        let head: ResponseHead = loop {
            // a drain that began while the instance worked closes this
            // connection after the response, as `final_response` does; so
            // does a body left unread
            let adds = ClientAdds {
                close: self.adds.close || crate::drain::draining() || !body_sent,
                ..*self.adds
            };
            let head = loop {
                if buf.is_empty() {
                    break None;
                }
                out.clear();
                match h1::response_head(&buf, &adds, &mut out) {
                    Ok(None) => break None,
                    Err(why) => {
                        return Err(early(upstream_error(ErrorType::InvalidHTTPHeader, why)))
                    }
                    Ok(Some(h)) if h.status >= 200 || h.status == 101 => break Some(h),
                    // 103 Early Hints and the like go to the client as they
                    // are; never to an HTTP/1.0 one (RFC 9110 §15.2)
                    Ok(Some(h)) => {
                        if !adds.http10 {
                            client.send(&out, 0).await?;
                        }
                        buf.drain(..h.len);
                    }
                }
            };
            if let Some(h) = head {
                client.sent.close = adds.close || h.bare;
                break h;
            }
            let read = if watch {
                read_or_client_gone(self.up, &mut buf, read_timeout, client.conn).await
            } else {
                read_more(self.up, &mut buf, read_timeout).await.map(Some)
            };
            let n = match read {
                Ok(Some(n)) => n,
                // nothing more to do for it: the instance's connection goes
                Ok(None) => return Err(Outcome::Failed(Failed::Late(None))),
                Err(e) if buf.is_empty() && e.etype() == &ErrorType::ReadError => {
                    return Err(Outcome::Stale(e))
                }
                Err(e) => return Err(early(e)),
            };
            if n == 0 {
                let e = upstream_error(
                    ErrorType::ConnectionClosed,
                    "the instance closed the connection before answering",
                );
                return Err(if buf.is_empty() {
                    Outcome::Stale(e)
                } else {
                    early(e)
                });
            }
        };
        if head.status == 101 {
            return self.tunnel(client, &buf[head.len..], &out).await;
        }
        let reusable = stream_response(client, self.up, &buf, head, &mut out, read_timeout).await?;
        if reusable == Reuse::Overrun {
            crate::metrics::upstream_discarded(self.site, "bytes_after_response");
        }
        Ok(reusable == Reuse::Yes && body_sent)
    }

    /// After a `101`: its header (and what came with it) to the client,
    /// the client's early bytes to the instance, then the tunnel. The
    /// connection is never reused.
    async fn tunnel(
        mut self,
        client: &mut Client<'_>,
        after_head: &[u8],
        head_out: &[u8],
    ) -> Result<bool, Outcome> {
        let mut first = Vec::with_capacity(head_out.len() + after_head.len());
        first.extend_from_slice(head_out);
        first.extend_from_slice(after_head);
        client.send(&first, after_head.len()).await?;
        client.sent.status = Some(101);
        client.sent.close = true;
        if !self.early.is_empty() {
            let early_bytes = self.early;
            self.write_up(early_bytes)
                .await
                .map_err(|e| Outcome::Failed(Failed::Late(Some(e))))?;
        }
        let moved = crate::tunnel::run(client.conn, self.up, self.read_timeout()).await;
        client.sent.bytes += moved.to_client as usize;
        Ok(false)
    }
}

/// The response whose header is `head` (parsed from the start of `buf`,
/// the client's version of it in `out`) to the client: the header and
/// whatever of the body came with it in one write, then the rest of the
/// body as it comes. Says whether the instance's connection may be reused.
async fn stream_response(
    client: &mut Client<'_>,
    up: &mut Stream,
    buf: &[u8],
    head: ResponseHead,
    out: &mut Vec<u8>,
    read_timeout: Duration,
) -> Result<Reuse, Outcome> {
    let mut rest = &buf[head.len..];
    let reusable = head.reusable;
    // bytes past the response's end came with it
    let mut overrun = false;
    // decoded strictly and framed anew: no extension, no trailer field
    // (`Set-Cookie`, `Content-Length`…) and no bare LF reaches the client
    let mut chunked = if head.bare {
        ChunkedDecoder::bare()
    } else {
        ChunkedDecoder::keeping_trailers()
    };
    let mut remaining = 0u64;
    // payload bytes in this first write (chunk framing is not counted)
    let mut payload = 0;
    let mut done = match head.body {
        Body::None => true,
        Body::Length(n) => {
            let take = (rest.len() as u64).min(n) as usize;
            out.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            remaining = n - take as u64;
            payload = take;
            remaining == 0
        }
        Body::Chunked => {
            let take = chunked
                .decode(rest, out)
                .map_err(|why| early(upstream_error(ErrorType::InvalidHTTPHeader, why)))?;
            rest = &rest[take..];
            payload = chunked.data as usize;
            chunked.done()
        }
        Body::UntilClose => {
            if head.bare {
                out.extend_from_slice(rest);
            } else if !rest.is_empty() {
                h1::chunk(rest, out);
            }
            payload = rest.len();
            rest = &[];
            false
        }
    };
    // bytes after the response: not ours to pass on, nor to keep
    overrun |= !rest.is_empty();
    client.send(out, payload).await?;
    client.sent.status = Some(head.status);
    // the rest fails late: the response has begun
    let late = |e: Box<Error>| Outcome::Failed(Failed::Late(Some(e)));
    let mut buf = Vec::with_capacity(READ_BUF);
    while !done {
        buf.clear();
        let n = read_more(up, &mut buf, read_timeout).await.map_err(late)?;
        match head.body {
            Body::UntilClose if n == 0 => {
                if !head.bare {
                    client.send(h1::LAST_CHUNK, 0).await?;
                }
                done = true;
            }
            Body::UntilClose if head.bare => client.send(&buf, n).await?,
            Body::UntilClose => {
                out.clear();
                h1::chunk(&buf, out);
                client.send(out, n).await?;
            }
            _ if n == 0 => {
                let why = "the instance closed the connection in the middle of the body";
                return Err(late(upstream_error(ErrorType::ConnectionClosed, why)));
            }
            Body::Length(_) => {
                let take = (n as u64).min(remaining) as usize;
                client.send(&buf[..take], take).await?;
                remaining -= take as u64;
                overrun |= take < n;
                done = remaining == 0;
            }
            Body::Chunked => {
                let before = chunked.data;
                out.clear();
                let take = chunked
                    .decode(&buf, out)
                    .map_err(|why| late(upstream_error(ErrorType::InvalidHTTPHeader, why)))?;
                client.send(out, (chunked.data - before) as usize).await?;
                overrun |= take < n;
                done = chunked.done();
            }
            Body::None => unreachable!("a response without a body is done"),
        }
    }
    Ok(if overrun {
        Reuse::Overrun
    } else if reusable {
        Reuse::Yes
    } else {
        Reuse::No
    })
}

/// Whether a connection to an instance may take the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    Yes,
    /// The response said so (`Connection: close`, or delimited by closing).
    No,
    /// The instance sent more than the response: the connection is not in
    /// step with its requests any more.
    Overrun,
}

/// The name of site `site` of `table` ("" before routing).
pub(crate) fn site_name(table: Option<&RouteTable>, site: u32) -> &str {
    table
        .and_then(|t| t.sites.get(site as usize))
        .map_or("", |s| &s.name)
}

/// Write a local answer (`proxy::local_response`'s, as bytes): its header
/// only to a HEAD request (RFC 9110 §9.3.2); `Connection: close` if `close`
/// or the drain has begun.
async fn send_local(
    client: &mut Client<'_>,
    code: u16,
    message: &str,
    close: bool,
    head_request: bool,
) -> Result<(), Failed> {
    use std::io::Write;
    let close = close || crate::drain::draining();
    let mut out = Vec::with_capacity(200 + message.len());
    // writing to a Vec cannot fail
    let _ = write!(out, "HTTP/1.1 {}\r\n", status_line(code));
    for (name, value) in LOCAL_FIELDS {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "content-length: {}\r\ndate: ", message.len() + 1);
    out.extend_from_slice(pingora_core::protocols::http::date::get_cached_date().as_bytes());
    out.extend_from_slice(match (close, client.http10) {
        (true, _) => b"\r\nconnection: close\r\n\r\n",
        (false, true) => b"\r\nconnection: keep-alive\r\n\r\n",
        (false, false) => b"\r\n\r\n",
    });
    let body = if head_request { 0 } else { message.len() + 1 };
    if body > 0 {
        out.extend_from_slice(message.as_bytes());
        out.push(b'\n');
    }
    client.send(&out, body).await?;
    client.sent.status = Some(code);
    client.sent.close = close;
    Ok(())
}

/// Answer a failure that happened before the response began, as
/// `SlotProxy::fail_to_proxy` does; the connection closes after it.
async fn answer_failure(
    client: &mut Client<'_>,
    e: &Error,
    ctx: &RequestCtx,
    head_request: bool,
    body_done: bool,
) {
    let code = failure_status(e, body_done, ctx);
    let message = match code {
        0 => return,
        502 => bad_gateway_message(ctx),
        408 => body_timeout_message(e),
        400 => format!(
            "400 Bad Request: {}",
            e.context
                .as_ref()
                .map_or("malformed request", |c| c.as_str())
        ),
        _ => status_line(code),
    };
    let _ = send_local(client, code, &message, true, head_request).await;
}

impl Lean {
    /// Serve the request whose complete (plain) header is the first
    /// `head_len` bytes of `buf`, read from `conn`; the rest of `buf` is
    /// the part of its body (or, for an upgrade, of the tunnel) read with
    /// it. Bytes pipelined behind a body of known length are set aside in
    /// `conn` already, and `conn` is fenced at that body's end; a chunked
    /// body or an upgrade is not fenced. `closing`: answer with
    /// `Connection: close`. Returns whether the connection stays open for
    /// the next request. A slot whose instances speak HTTP/2 is reached
    /// over HTTP/2 after the routing (`edge::h1_h2`).
    pub(crate) async fn serve(
        &self,
        conn: &mut Fenced,
        buf: BytesMut,
        head_len: usize,
        kind: PlainKind,
        closing: bool,
    ) -> bool {
        let table = self.table.load_full();
        let mut ctx = RequestCtx::default();
        let peer_ip = conn
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let tls_here = conn.get_ssl_digest().is_some();
        let mut client = Client {
            conn,
            sent: Sent::default(),
            send_timeout: self.send_timeout,
            http10: kind.http10,
            shadow: None,
        };
        let head = &buf[..head_len];
        let Some(mut req) = prepare(table, head, kind, peer_ip, tls_here, &mut ctx) else {
            let _ = send_local(&mut client, 400, &status_line(400), true, false).await;
            return false;
        };
        // what of the body came with the header goes out with it; after
        // an upgrade request it is the tunnel's, held until a 101
        // to an HTTP/2 instance the body goes as DATA: decoded, not framed
        let mut body = match req.h2 {
            Some(_) => BodyIn::unframed(kind.body),
            None => BodyIn::new(kind.body),
        };
        // shadow traffic (SPEC §15): one branch for a site without one
        if req.refusal.is_none() && !kind.upgrade {
            client.shadow = crate::shadow::offer_h1(&ctx, head);
            crate::shadow::keep_body(&client.shadow, &mut body);
        }
        let rest = &buf[head_len..];
        let early = if kind.upgrade { rest } else { &[][..] };
        let mut outcome = Ok(());
        if !kind.upgrade && !rest.is_empty() {
            match body.take(rest, &mut req.upstream) {
                Ok(used) if used < rest.len() => body_ended(client.conn, rest, used),
                Ok(_) => {}
                Err(why) => outcome = Err(Failed::Early(body_malformed(why))),
            }
        }
        // during the drain every answer says `Connection: close` (a request
        // read before it began, answered after, too)
        let close = closing || req.client_close || crate::drain::draining();
        if outcome.is_ok() {
            outcome = self
                .proxy(&mut client, &mut req, &mut body, early, close, &mut ctx)
                .await;
        }
        match &outcome {
            Err(Failed::Early(e)) => {
                answer_failure(&mut client, e, &ctx, req.head_request, body.done()).await
            }
            Err(Failed::Late(Some(e))) => {
                // counted; the client sees a truncated response
                failure_status(e, true, &ctx);
            }
            _ => {}
        }
        let text = |r: &Range<usize>| std::str::from_utf8(&head[r.clone()]).unwrap_or("-");
        log_request(
            Finished {
                method: text(&req.method),
                path: text(&req.path),
                host: &head[req.host.clone()],
                version: if kind.http10 {
                    http::Version::HTTP_10
                } else {
                    http::Version::HTTP_11
                },
                status: client.sent.status,
                bytes: client.sent.bytes,
                peer: peer_ip,
            },
            &ctx,
        );
        let finished = outcome.is_ok() && body.done();
        crate::shadow::complete_h1(client.shadow.take(), &mut body, finished);
        // as pingora-proxy does after a failure: no reuse
        let keep = outcome.is_ok() && !client.sent.close;
        if !keep && !body.done() {
            // the client may still be sending the body: let it see the
            // answer before the close, not a reset
            crate::limits::linger(client.conn.socket()).await;
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Health;
    use crate::request_body::RequestBody;
    use crate::routing::table::compile_toml;

    const NO_BODY: PlainKind = PlainKind {
        body: RequestBody::None,
        upgrade: false,
        expect_continue: false,
        http10: false,
    };

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
traffic_percent = 0
"#;

    #[test]
    fn a_request_routed_to_an_h2c_slot_is_prepared_as_http2_parts() {
        let t = Arc::new(compile_toml(CFG, &Health::new()));
        let head = b"GET /svc?x-ms-routing-name=staging HTTP/1.1\r\nHost: grpc.example.com\r\n\r\n";
        let mut ctx = RequestCtx::default();
        let p = prepare(t.clone(), head, NO_BODY, None, false, &mut ctx).unwrap();
        assert!(p.refusal.is_none() && p.upstream.is_empty());
        let uri = p.h2.map(|h| h.uri.to_string());
        assert_eq!(uri.as_deref(), Some("/svc?x-ms-routing-name=staging"));
        // the site's HTTP/1 slot: bytes for the pooled connection
        let head = b"GET /svc HTTP/1.1\r\nHost: grpc.example.com\r\n\
                     Cookie: x-ms-routing-name=production\r\n\r\n";
        let mut ctx = RequestCtx::default();
        let p = prepare(t, head, NO_BODY, None, false, &mut ctx).unwrap();
        assert!(p.h2.is_none() && !p.upstream.is_empty());
    }

    #[test]
    fn a_request_is_routed_and_rewritten_from_one_parse() {
        let t = Arc::new(compile_toml(CFG, &Health::new()));
        let head = b"GET /a?b=c HTTP/1.1\r\nHost: web.example.com\r\nConnection: keep-alive\r\n\
                     Keep-Alive: timeout=5\r\nX-Forwarded-For: 6.6.6.6\r\nAccept: */*\r\n\r\n";
        let mut ctx = RequestCtx::default();
        let peer = Some("10.1.2.3".parse().unwrap());
        let p = prepare(t.clone(), head, NO_BODY, peer, false, &mut ctx).unwrap();
        assert!(p.refusal.is_none());
        assert_eq!(&head[p.method.clone()], b"GET");
        assert_eq!(&head[p.path.clone()], b"/a?b=c");
        assert_eq!(&head[p.host.clone()], b"web.example.com");
        assert!(p.idempotent && !p.head_request && !p.client_close);
        let up = String::from_utf8(p.upstream).unwrap();
        let slot = &ctx.slot().unwrap().name;
        assert_eq!(
            up,
            format!(
                "GET /a?b=c HTTP/1.1\r\nHost: web.example.com\r\nAccept: */*\r\n\
                 x-forwarded-for: 10.1.2.3\r\nx-forwarded-proto: http\r\n\
                 x-forwarded-host: web.example.com\r\nx-slot-name: {slot}\r\n\r\n"
            )
        );
        // an unknown host is answered here, with nothing for an instance
        let mut ctx = RequestCtx::default();
        let head = b"HEAD / HTTP/1.1\r\nHost: nowhere\r\nConnection: close\r\n\r\n";
        let p = prepare(t, head, NO_BODY, peer, false, &mut ctx).unwrap();
        assert_eq!(p.refusal.as_ref().map(|r| r.0), Some(404));
        assert!(p.upstream.is_empty() && p.head_request && p.client_close);
    }

    #[test]
    fn spans_locate_parts_of_the_header() {
        let whole = b"GET /x HTTP/1.1";
        assert_eq!(span(whole, &whole[4..6]), 4..6);
        assert_eq!(span(whole, b"elsewhere"), 0..0);
        assert_eq!(span(whole, &[]), 0..0);
    }
}
