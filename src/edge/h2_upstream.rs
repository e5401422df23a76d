//! An HTTP/2 client's request to an h2c or h2 (TLS) instance (`edge`):
//! gRPC deployments. One `h2` client connection per instance (keyed by its
//! address, TLS and server name), shared by every stream to it and kept
//! until it fails ([`Upstreams`]); connected with pingora-core's transport
//! connector (connect time-out, TLS offering only ALPN `h2`, the
//! deployment's CA).
//!
//! Streams both ways: the request's DATA frames and trailers go to the
//! instance as they come while its response head, DATA frames and trailers
//! (gRPC's status) come back, each side's window given back as the bytes
//! are passed on. The response head is awaited within the read time-out,
//! as are each of its DATA frames.

use super::h2_exchange::{send_all, Failed, Incoming, SendFailed, Sent};
use super::H2Front;
use crate::lean::MAX_ATTEMPTS;
use crate::proxy::{forwarded, pin_cookie, RequestCtx};
use bytes::Bytes;
use h2::client::SendRequest;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use pingora_core::connectors::TransportConnector;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorType};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Windows announced to instances: as to clients (`h2`), large enough that
/// a response is not held to one window per round trip.
const STREAM_WINDOW: u32 = super::h2::STREAM_WINDOW;
const CONNECTION_WINDOW: u32 = super::h2::CONNECTION_WINDOW;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    addr: SocketAddr,
    tls: bool,
    sni: String,
}

/// The shared HTTP/2 connections to instances.
#[derive(Default)]
pub struct Upstreams {
    conns: Mutex<HashMap<Key, SendRequest<Bytes>>>,
}

fn upstream_error(etype: ErrorType, why: &'static str) -> Box<Error> {
    Error::explain(etype, why).into_up()
}

impl Upstreams {
    fn cached(&self, key: &Key) -> Option<SendRequest<Bytes>> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.get(key).cloned()
    }

    fn forget(&self, key: &Key) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.remove(key);
    }

    /// Stop sharing the connection to `peer` (it said GOAWAY): the next
    /// stream opens a new one.
    pub(crate) fn forget_peer(&self, peer: &HttpPeer) {
        if let Some(addr) = peer.address().as_inet().copied() {
            self.forget(&Key {
                addr,
                tls: peer.is_tls(),
                sni: peer.sni().to_string(),
            });
        }
    }

    /// A connection to `peer` ready for a new stream (`true`: it was
    /// shared already), else a new one.
    pub(crate) async fn get(
        &self,
        transport: &TransportConnector,
        peer: &HttpPeer,
    ) -> pingora_error::Result<(SendRequest<Bytes>, bool)> {
        let Some(addr) = peer.address().as_inet().copied() else {
            return Err(upstream_error(
                ErrorType::ConnectNoRoute,
                "instance has no address",
            ));
        };
        let key = Key {
            addr,
            tls: peer.is_tls(),
            sni: peer.sni().to_string(),
        };
        if let Some(send) = self.cached(&key) {
            match send.ready().await {
                Ok(send) => return Ok((send, true)),
                Err(_) => self.forget(&key),
            }
        }
        let stream = transport.new_stream(peer).await?;
        let timeout = peer
            .options
            .connection_timeout
            .unwrap_or(Duration::from_secs(10));
        let mut b = h2::client::Builder::new();
        b.initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let (send, conn) = match tokio::time::timeout(timeout, b.handshake(stream)).await {
            Ok(Ok(c)) => c,
            Ok(Err(_)) => {
                return Err(upstream_error(
                    ErrorType::ConnectError,
                    "the instance refused the HTTP/2 handshake",
                ))
            }
            Err(_) => {
                return Err(upstream_error(
                    ErrorType::ConnectTimedout,
                    "the instance's HTTP/2 handshake timed out",
                ))
            }
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("HTTP/2 connection to instance {addr} ended: {e}");
            }
        });
        let send = send
            .ready()
            .await
            .map_err(|_| upstream_error(ErrorType::ConnectError, "the HTTP/2 connection closed"))?;
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.insert(key, send.clone());
        Ok((send, false))
    }
}

/// Fields that do not pass from one HTTP/2 hop to the next as they came:
/// connection-specific ones (an HTTP/2 peer sends none but `te: trailers`,
/// which passes), `Host` (the authority says it), and what
/// `proxy::Forwarded` replaces.
fn hop_dropped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-slot-name"
    )
}

/// The request for the instance: method and target as they came, the
/// instance's scheme, the client's authority, the client's fields but the
/// dropped ones, then the forwarded fields.
pub(crate) fn upstream_request(
    p: &http::request::Parts,
    ctx: &RequestCtx,
    tls: bool,
) -> Result<Request<()>, Box<Error>> {
    let authority = crate::routing::RequestView::host(p);
    let authority = std::str::from_utf8(authority).unwrap_or("");
    let target = p.uri.path_and_query().map_or("/", |t| t.as_str());
    let scheme = if tls { "https" } else { "http" };
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(if authority.is_empty() {
            "localhost"
        } else {
            authority
        })
        .path_and_query(target)
        .build()
        .map_err(|_| {
            Error::explain(ErrorType::HTTPStatus(400), "invalid request target").into_down()
        })?;
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for (name, value) in &p.headers {
        if !hop_dropped(name) && (name != http::header::TE || value == "trailers") {
            h.append(name.clone(), value.clone());
        }
    }
    let fwd = forwarded(p, ctx);
    if let Some(v) = &fwd.for_ {
        h.insert("x-forwarded-for", v.header_value());
    }
    if let Ok(v) = HeaderValue::from_bytes(fwd.proto) {
        h.insert("x-forwarded-proto", v);
    }
    if let Some(v) = fwd.host.and_then(|v| HeaderValue::from_bytes(v).ok()) {
        h.insert("x-forwarded-host", v);
    }
    if let Some(s) = fwd.slot {
        h.insert("x-slot-name", s.clone());
    }
    Ok(req)
}

/// The response head for the client: the instance's, connection-specific
/// fields dropped, the pin cookie added.
fn client_response(resp: &Response<RecvStream>, cookie: Option<HeaderValue>) -> Response<()> {
    let mut out = Response::new(());
    *out.status_mut() = resp.status();
    let h: &mut HeaderMap = out.headers_mut();
    for (name, value) in resp.headers() {
        if !hop_dropped(name) && name != http::header::TE {
            h.append(name.clone(), value.clone());
        }
    }
    if let Some(c) = cookie {
        h.append(http::header::SET_COOKIE, c);
    }
    out
}

/// Whether a stream's failure `e` means the instance did not process it,
/// so a request without a body may go again (RFC 9113 §8.7): it refused
/// the stream (`REFUSED_STREAM`, e.g. at its stream limit), or its GOAWAY
/// came before the stream was taken (a graceful restart of the app).
pub(crate) fn unprocessed(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

/// What to do after a bodiless stream's attempt failed with `e`: `true`
/// to send it again (on a new connection after a GOAWAY), within the
/// attempts allowed.
pub(crate) fn again(upstreams: &Upstreams, peer: &HttpPeer, e: &h2::Error, attempts: u32) -> bool {
    if e.is_go_away() {
        upstreams.forget_peer(peer);
    }
    unprocessed(e) && attempts < MAX_ATTEMPTS
}

/// Await the response head within `read_timeout`.
pub(crate) async fn response_head(
    response: h2::client::ResponseFuture,
    read_timeout: Duration,
) -> Result<Result<Response<RecvStream>, h2::Error>, Failed> {
    tokio::time::timeout(read_timeout, response)
        .await
        .map_err(|_| {
            Failed::Early(upstream_error(
                ErrorType::ReadTimedout,
                "no response within the read time-out",
            ))
        })
}

/// The failure of a stream reset before its answer.
pub(crate) fn reset_before_answer() -> Failed {
    Failed::Early(upstream_error(
        ErrorType::ReadError,
        "the instance reset the stream before answering",
    ))
}

/// A stream opened to the slot's HTTP/2 instance ([`open`]).
pub(crate) enum Opened {
    /// A request without a body, already answered (head only so far).
    Answered(Response<RecvStream>, Duration),
    /// A request whose body is still to be sent; the answer is to come.
    Streaming(h2::client::ResponseFuture, SendStream<Bytes>, Duration),
}

/// Open the request's stream (`parts`; `end`: it has no body) on the next
/// instance of its slot, each with its read time-out. A request without a
/// body is answered here, so that one whose stream the instance did not
/// take ([`unprocessed`]) goes again, as an HTTP/1 request whose pooled
/// connection had closed does; one with a body cannot be sent again.
pub(crate) async fn open(
    lean: &crate::lean::Lean,
    parts: &http::request::Parts,
    ctx: &mut RequestCtx,
    end: bool,
) -> Result<Opened, Failed> {
    loop {
        let (mut send, peer) = connect(lean, ctx).await?;
        let req = upstream_request(parts, ctx, peer.is_tls()).map_err(Failed::Early)?;
        let read_timeout = peer.options.read_timeout.unwrap_or(Duration::from_secs(60));
        let (response, up) = match send.send_request(req, end) {
            Ok(r) => r,
            Err(e) if end && again(&lean.h2, &peer, &e, ctx.attempts) => continue,
            Err(_) => {
                return Err(Failed::Early(upstream_error(
                    ErrorType::WriteError,
                    "the instance's HTTP/2 connection closed",
                )))
            }
        };
        if !end {
            return Ok(Opened::Streaming(response, up, read_timeout));
        }
        match response_head(response, read_timeout).await? {
            Ok(resp) => return Ok(Opened::Answered(resp, read_timeout)),
            Err(e) if again(&lean.h2, &peer, &e, ctx.attempts) => continue,
            Err(_) => return Err(reset_before_answer()),
        }
    }
}

/// Forward the routed request to the slot's HTTP/2 instance, streaming
/// both ways ([`open`]).
pub(crate) async fn forward(
    front: &H2Front,
    inc: &mut Incoming,
    respond: &mut SendResponse<Bytes>,
    ctx: &mut RequestCtx,
    sent: &mut Sent,
) -> Result<(), Failed> {
    let end = inc.body.is_end_stream();
    let (response, up_body, read_timeout) = match open(&front.lean, &inc.parts, ctx, end).await? {
        Opened::Answered(resp, read_timeout) => {
            let send_timeout = front.lean.send_timeout;
            return relay_answer(resp, respond, ctx, sent, read_timeout, send_timeout).await;
        }
        Opened::Streaming(response, up, read_timeout) => (response, up, read_timeout),
    };
    let body_timeout = front.lean.body_timeout;
    let send_timeout = front.lean.send_timeout;
    // the request body goes on while the response comes (bidirectional
    // streams); the response's end ends the exchange
    let pump = pump_request(&mut inc.body, up_body, body_timeout);
    let relay = relay_response(response, respond, ctx, sent, read_timeout, send_timeout);
    tokio::pin!(pump, relay);
    let mut pumped = end;
    loop {
        tokio::select! {
            _ = &mut pump, if !pumped => pumped = true,
            r = &mut relay => return r,
        }
    }
}

/// A connection for the request's next attempt: to the next instance of
/// its slot, connect failures going on to the others.
pub(crate) async fn connect(
    lean: &crate::lean::Lean,
    ctx: &mut RequestCtx,
) -> Result<(SendRequest<Bytes>, HttpPeer), Failed> {
    loop {
        let peer = ctx.next_peer(&lean.timeouts).map_err(Failed::Early)?;
        match lean.h2.get(&lean.transport, &peer).await {
            Ok((send, reused)) => {
                ctx.connected(reused);
                return Ok((send, peer));
            }
            Err(e) => {
                if ctx.connect_failed(&e) && ctx.attempts < MAX_ATTEMPTS {
                    continue;
                }
                return Err(Failed::Early(e.into_up()));
            }
        }
    }
}

/// The client's request body and trailers to the instance.
async fn pump_request(body: &mut RecvStream, mut up: SendStream<Bytes>, wait: Duration) {
    loop {
        match tokio::time::timeout(wait, body.data()).await {
            Ok(Some(Ok(data))) => {
                let n = data.len();
                let last = body.is_end_stream();
                if send_all(&mut up, data, last, wait).await.is_err() {
                    return;
                }
                let _ = body.flow_control().release_capacity(n);
                if last {
                    return;
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                up.send_reset(h2::Reason::CANCEL);
                return;
            }
        }
    }
    match tokio::time::timeout(wait, body.trailers()).await {
        Ok(Ok(Some(t))) => {
            let _ = up.send_trailers(t);
        }
        Ok(Ok(None)) => {
            let _ = up.send_data(Bytes::new(), true);
        }
        _ => up.send_reset(h2::Reason::CANCEL),
    }
}

/// The instance's response to the client: head, DATA frames, trailers.
async fn relay_response(
    response: h2::client::ResponseFuture,
    respond: &mut SendResponse<Bytes>,
    ctx: &RequestCtx,
    sent: &mut Sent,
    read_timeout: Duration,
    send_timeout: Duration,
) -> Result<(), Failed> {
    let resp = response_head(response, read_timeout)
        .await?
        .map_err(|_| reset_before_answer())?;
    relay_answer(resp, respond, ctx, sent, read_timeout, send_timeout).await
}

/// The instance's answer `resp` to the client: head, DATA frames, trailers.
async fn relay_answer(
    resp: Response<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    ctx: &RequestCtx,
    sent: &mut Sent,
    read_timeout: Duration,
    send_timeout: Duration,
) -> Result<(), Failed> {
    let status = resp.status().as_u16();
    let head = client_response(&resp, pin_cookie(ctx));
    let mut body = resp.into_body();
    let end = body.is_end_stream();
    let mut tx = respond
        .send_response(head, end)
        .map_err(|_| Failed::Late(None))?;
    sent.status = Some(status);
    if end {
        return Ok(());
    }
    let late = |why: &'static str, etype| Failed::Late(Some(upstream_error(etype, why)));
    loop {
        match tokio::time::timeout(read_timeout, body.data()).await {
            Ok(Some(Ok(data))) => {
                let n = data.len();
                let last = body.is_end_stream();
                send_all(&mut tx, data, last, send_timeout)
                    .await
                    .map_err(|_: SendFailed| Failed::Late(None))?;
                sent.bytes += n;
                let _ = body.flow_control().release_capacity(n);
                if last {
                    return Ok(());
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(late("the instance reset the stream", ErrorType::ReadError))
            }
            Err(_) => {
                return Err(late(
                    "no response within the read time-out",
                    ErrorType::ReadTimedout,
                ))
            }
        }
    }
    match tokio::time::timeout(read_timeout, body.trailers()).await {
        Ok(Ok(Some(t))) => tx.send_trailers(t).map_err(|_| Failed::Late(None)),
        Ok(Ok(None)) => tx
            .send_data(Bytes::new(), true)
            .map_err(|_| Failed::Late(None)),
        Ok(Err(_)) => Err(late("the instance reset the stream", ErrorType::ReadError)),
        Err(_) => Err(late(
            "no trailers within the read time-out",
            ErrorType::ReadTimedout,
        )),
    }
}
