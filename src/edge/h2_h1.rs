//! An HTTP/2 client's request to an HTTP/1 instance (`edge`), over the
//! lean path's pooled connections (`lean::Lean::connect` / `release`).
//!
//! The request head is written here ([`request_head`]): the request line
//! from `:method` and `:path`, `Host` from `:authority`, the client's
//! fields but HTTP/2's connection-specific ones and those the proxy
//! replaces, `Cookie` fields joined into one (RFC 9113 §8.2.3), the
//! forwarded fields (`proxy::forwarded`), and the body's framing: its
//! `content-length` when the client gave one, else chunked. DATA frames
//! go to the instance as they come, each one's window given back to the
//! client once written. The response head is judged by `h1::response_head`
//! (status, strict framing, reuse), its fields passed on but the
//! connection-specific ones, the pin cookie added; its body is followed by
//! its framing — a length, chunked (decoded by
//! `request_body::ChunkedDecoder::bare`, as strictly as request bodies;
//! trailers dropped), or the close — and sent in DATA frames as the
//! client's window allows. Interim answers (100, 103) go to the client as
//! interim HEADERS.
//!
//! Retries as on the lean path: a connect failure goes to the slot's next
//! instance; a pooled connection found closed before any answer is tried
//! again only for an idempotent request none of whose body was read yet.

use super::h2_exchange::{date, send_all, Failed, Incoming, SendFailed, Sent};
use super::H2Front;
use crate::h1::{self, field, Body, ClientAdds, ResponseHead};
use crate::lean::MAX_ATTEMPTS;
use crate::proxy::{forwarded, pin_cookie, Forwarded, RequestCtx};
use crate::request_body::{ChunkedDecoder, Pace};
use crate::routing::RequestView;
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_timeout::fast_timeout::fast_timeout;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Read buffer for an instance's response.
const READ_BUF: usize = 16 * 1024;
/// Most response header fields taken (pingora's and `h1`'s limit).
const MAX_FIELDS: usize = 256;

/// How the request body is framed for the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// The framing of the request body: none when the client ended the
/// stream with its HEADERS (a `content-length: 0` for methods that carry
/// a body), its `content-length` when it gave one (the `h2` crate holds
/// the DATA frames to it), else chunked. `Err` for a malformed length.
pub fn framing(parts: &http::request::Parts, end_stream: bool) -> Result<Framing, &'static str> {
    let mut lengths = parts.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(v), None) => {
            Some(crate::connection::content_length(v.as_bytes()).ok_or("invalid Content-Length")?)
        }
        (Some(_), Some(_)) => return Err("more than one Content-Length"),
    };
    let carries_body = matches!(
        parts.method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    );
    Ok(match (end_stream, length) {
        (_, Some(n)) => Framing::Length(n),
        (true, None) if carries_body => Framing::Length(0),
        (true, None) => Framing::None,
        (false, None) => Framing::Chunked,
    })
}

/// Fields of an HTTP/2 request that do not go to an HTTP/1 instance as
/// they came: connection-specific ones (RFC 9113 §8.2.2), the framing and
/// `Host` (written anew), `Cookie` (joined), and what [`Forwarded`]
/// replaces.
fn dropped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "host"
            | "content-length"
            | "cookie"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-slot-name"
    ) || crate::request_check::drops_field(name.as_str())
}

/// Append the HTTP/1.1 request for the instance to `out`.
pub fn request_head(
    parts: &http::request::Parts,
    fwd: &Forwarded<'_>,
    framing: Framing,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = RequestView::host(parts);
    if !host.is_empty() {
        field(out, b"host", host);
    }
    for (name, value) in &parts.headers {
        if !dropped(name) {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let mut cookies = parts.headers.get_all(http::header::COOKIE).iter();
    if let Some(first) = cookies.next() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first.as_bytes());
        for c in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(c.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if let Some(v) = &fwd.for_ {
        out.extend_from_slice(b"x-forwarded-for: ");
        v.write(out);
        out.extend_from_slice(b"\r\n");
    }
    field(out, b"x-forwarded-proto", fwd.proto);
    if let Some(h) = fwd.host {
        field(out, b"x-forwarded-host", h);
    }
    if let Some(s) = fwd.slot {
        field(out, b"x-slot-name", s.as_bytes());
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => field(out, b"content-length", n.to_string().as_bytes()),
        Framing::Chunked => field(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Fields of an HTTP/1 response an HTTP/2 client must not get (RFC 9113
/// §8.2.2), besides a `Content-Length` the framing overrides.
fn response_dropped(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
    ]
    .iter()
    .any(|d| name.eq_ignore_ascii_case(d))
}

/// Parse the response head at the start of `buf`: its judgement by
/// `h1::response_head` (framing, reuse; `Ok(None)` while incomplete) and
/// its fields for the HTTP/2 client.
pub fn parse_head(
    buf: &[u8],
    head_request: bool,
    max_head: usize,
) -> Result<Option<(ResponseHead, HeaderMap)>, h1::Malformed> {
    let adds = ClientAdds {
        cookie: None,
        close: false,
        head_request,
        upgrade: false,
        max_head,
        http10: false,
    };
    let mut scratch = Vec::new();
    let Some(head) = h1::response_head(buf, &adds, &mut scratch)? else {
        return Ok(None);
    };
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut fields);
    resp.parse(&buf[..head.len])
        .map_err(|_| "invalid response header")?;
    // a length the framing does not use is dropped (chunked, or to the
    // close); a HEAD or 304 answer keeps the one it states
    let keep_length = !matches!(head.body, Body::Chunked | Body::UntilClose);
    let mut map = HeaderMap::with_capacity(resp.headers.len() + 2);
    for h in resp.headers.iter() {
        if response_dropped(h.name)
            || (!keep_length && h.name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Err("invalid response header field");
        };
        map.append(name, value);
    }
    Ok(Some((head, map)))
}

fn upstream_error(etype: ErrorType, why: &'static str) -> Box<Error> {
    Error::explain(etype, why).into_up()
}

fn client_error(etype: ErrorType, why: &'static str) -> Box<Error> {
    Error::explain(etype, why).into_down()
}

/// How one attempt on one instance connection failed.
enum Outcome {
    /// No byte of an answer came on a pooled connection: it may have been
    /// closed by the instance while it idled.
    Stale(Box<Error>),
    Failed(Failed),
}

fn early(e: Box<Error>) -> Outcome {
    Outcome::Failed(Failed::Early(e))
}

fn late(e: Box<Error>) -> Outcome {
    Outcome::Failed(Failed::Late(Some(e)))
}

/// Forward the routed request `inc` to the slot's HTTP/1 instance and its
/// answer to the client.
pub(crate) async fn forward(
    front: &H2Front,
    inc: &mut Incoming,
    respond: &mut SendResponse<Bytes>,
    ctx: &mut RequestCtx,
    sent: &mut Sent,
) -> Result<(), Failed> {
    let framing = framing(&inc.parts, inc.body.is_end_stream())
        .map_err(|why| Failed::Early(client_error(ErrorType::HTTPStatus(400), why)))?;
    let mut head = Vec::with_capacity(512);
    request_head(&inc.parts, &forwarded(&inc.parts, ctx), framing, &mut head);
    let idempotent = inc.parts.method.is_idempotent();
    let mut body = BodyOut {
        framing,
        done: framing == Framing::None || framing == Framing::Length(0),
        streamed: false,
    };
    // idle instance connections are pooled per site (`idle_pool`)
    let table = ctx.table.clone();
    let site = crate::lean::site_name(table.as_deref(), ctx.site);
    loop {
        let peer = ctx.next_peer(&front.lean.timeouts).map_err(Failed::Early)?;
        let (mut up, reused) = match front.lean.connect(&peer, site).await {
            Ok(c) => c,
            Err(e) => {
                if ctx.connect_failed(&e) && ctx.attempts < MAX_ATTEMPTS {
                    continue;
                }
                return Err(Failed::Early(e.into_up()));
            }
        };
        ctx.connected(reused);
        let mut x = Exchange {
            front,
            up: &mut up,
            peer: &peer,
            inc: &mut *inc,
            body: &mut body,
            cookie: pin_cookie(ctx),
        };
        match x.run(&head, respond, sent).await {
            Ok(true) => {
                front.lean.release(up, &peer, site);
                return Ok(());
            }
            Ok(false) => return Ok(()),
            Err(Outcome::Stale(e)) => {
                let again = reused && idempotent && !body.streamed;
                if !(again && ctx.attempts < MAX_ATTEMPTS) {
                    return Err(Failed::Early(e));
                }
            }
            Err(Outcome::Failed(f)) => return Err(f),
        }
    }
}

/// The request body's progress towards the instance.
struct BodyOut {
    framing: Framing,
    done: bool,
    /// Some of it was read from the client (it cannot be sent again).
    streamed: bool,
}

/// One request and its response over one instance connection.
struct Exchange<'a> {
    front: &'a H2Front,
    up: &'a mut Stream,
    peer: &'a HttpPeer,
    inc: &'a mut Incoming,
    body: &'a mut BodyOut,
    cookie: Option<HeaderValue>,
}

/// What happened while the body went to the instance.
enum Pumped {
    Client(Result<Option<Result<Bytes, h2::Error>>, tokio::time::error::Elapsed>),
    Instance(std::io::Result<usize>),
}

impl Exchange<'_> {
    fn read_timeout(&self) -> Duration {
        self.peer
            .options
            .read_timeout
            .unwrap_or(Duration::from_secs(60))
    }

    async fn write_up(&mut self, bytes: &[u8]) -> Result<(), Box<Error>> {
        let timeout = self
            .peer
            .options
            .write_timeout
            .unwrap_or(Duration::from_secs(60));
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

    /// The request, then its answer. `Ok(true)`: the instance connection
    /// may be reused.
    async fn run(
        &mut self,
        head: &[u8],
        respond: &mut SendResponse<Bytes>,
        sent: &mut Sent,
    ) -> Result<bool, Outcome> {
        match self.write_up(head).await {
            Ok(()) => {}
            Err(e) if e.etype() == &ErrorType::WriteError => return Err(Outcome::Stale(e)),
            Err(e) => return Err(early(e)),
        }
        let mut buf = BytesMut::with_capacity(READ_BUF);
        if !self.body.done {
            self.pump(&mut buf, respond).await?;
        }
        let read_timeout = self.read_timeout();
        let (head, fields) = loop {
            if !buf.is_empty() {
                match parse_head(
                    &buf,
                    self.inc.head_request,
                    self.front.lean.max_response_head,
                ) {
                    Err(why) => {
                        return Err(early(upstream_error(ErrorType::InvalidHTTPHeader, why)))
                    }
                    Ok(Some((h, f))) if h.status < 200 => {
                        interim(respond, h.status, f);
                        let _ = buf.split_to(h.len);
                        continue;
                    }
                    Ok(Some(found)) => break found,
                    Ok(None) => {}
                }
            }
            let got = buf.len();
            let n = match read_more(self.up, &mut buf, read_timeout).await {
                Ok(n) => n,
                Err(e) if got == 0 && e.etype() == &ErrorType::ReadError => {
                    return Err(Outcome::Stale(e))
                }
                Err(e) => return Err(early(e)),
            };
            if n == 0 {
                let e = upstream_error(
                    ErrorType::ConnectionClosed,
                    "the instance closed the connection before answering",
                );
                return Err(if got == 0 {
                    Outcome::Stale(e)
                } else {
                    early(e)
                });
            }
        };
        let _ = buf.split_to(head.len);
        let mut resp = Response::new(());
        *resp.status_mut() = http::StatusCode::from_u16(head.status).map_err(|_| {
            early(upstream_error(
                ErrorType::InvalidHTTPHeader,
                "invalid status",
            ))
        })?;
        *resp.headers_mut() = fields;
        date(resp.headers_mut());
        if let Some(c) = self.cookie.take() {
            resp.headers_mut().append(http::header::SET_COOKIE, c);
        }
        let no_body = head.body == Body::None;
        if let Some(tap) = &mut self.inc.shadow {
            tap.response_head(head.status, resp.headers());
        }
        let mut tx = respond
            .send_response(resp, no_body)
            .map_err(|_| Outcome::Failed(Failed::Late(None)))?;
        sent.status = Some(head.status);
        if no_body {
            return Ok(head.reusable && buf.is_empty() && self.body.done);
        }
        let reusable = self.stream_body(head, buf, &mut tx, sent).await?;
        Ok(reusable && head.reusable && self.body.done)
    }

    /// Send the request body as DATA frames come, watching the instance:
    /// interim answers go to the client, a final one (or the instance
    /// closing) ends the forwarding, the body unfinished.
    async fn pump(
        &mut self,
        buf: &mut BytesMut,
        respond: &mut SendResponse<Bytes>,
    ) -> Result<(), Outcome> {
        let wait = self.front.lean.body_timeout.min(self.read_timeout());
        let mut framed = Vec::with_capacity(READ_BUF + 16);
        let mut pace = Pace::new(self.front.lean.body_min_rate);
        // a client that asked for a 100 waits for it: not counted (`lean`)
        let mut pacing = !self.inc.parts.headers.contains_key(http::header::EXPECT);
        while !self.body.done {
            let allowance = pace.allowance().filter(|a| pacing && *a < wait);
            let began = std::time::Instant::now();
            let step = {
                let data = tokio::time::timeout(allowance.unwrap_or(wait), self.inc.body.data());
                let up = &mut *self.up;
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(READ_BUF);
                }
                tokio::select! {
                    d = data => Pumped::Client(d),
                    r = up.read_buf(buf) => Pumped::Instance(r),
                }
            };
            let got = match &step {
                Pumped::Client(Ok(Some(Ok(d)))) => d.len(),
                _ => 0,
            };
            pacing |= got > 0;
            if pacing {
                pace.record(began.elapsed(), got);
            }
            match step {
                Pumped::Client(Err(_)) if allowance.is_some() => {
                    return Err(early(crate::lean::body_too_slow()))
                }
                Pumped::Client(Err(_)) => {
                    return Err(early(client_error(
                        ErrorType::ReadTimedout,
                        "the request body stopped arriving",
                    )))
                }
                Pumped::Client(Ok(Some(Err(_)))) => {
                    return Err(Outcome::Failed(Failed::Early(client_error(
                        ErrorType::ConnectionClosed,
                        "the client reset the stream before its body was complete",
                    ))))
                }
                Pumped::Client(Ok(None)) => {
                    self.body.done = true;
                    if self.body.framing == Framing::Chunked
                        && self.write_up(h1::LAST_CHUNK).await.is_err()
                    {
                        return Ok(());
                    }
                }
                Pumped::Client(Ok(Some(Ok(data)))) => {
                    self.body.streamed = true;
                    if let Some(tap) = &mut self.inc.shadow {
                        tap.request_body(&data);
                    }
                    let n = data.len();
                    let bytes: &[u8] = if self.body.framing == Framing::Chunked && n > 0 {
                        framed.clear();
                        h1::chunk(&data, &mut framed);
                        &framed
                    } else {
                        &data
                    };
                    let last = self.inc.body.is_end_stream();
                    let written = self.write_up(bytes).await;
                    let _ = self.inc.body.flow_control().release_capacity(n);
                    if written.is_err() {
                        // the instance stopped taking the body: what it
                        // answered, if anything, is read next
                        return Ok(());
                    }
                    if last && self.body.framing != Framing::Chunked {
                        self.body.done = true;
                    }
                }
                Pumped::Instance(Ok(0) | Err(_)) => return Ok(()),
                Pumped::Instance(Ok(_)) => loop {
                    match parse_head(
                        buf,
                        self.inc.head_request,
                        self.front.lean.max_response_head,
                    ) {
                        Ok(Some((h, f))) if h.status < 200 => {
                            interim(respond, h.status, f);
                            let _ = buf.split_to(h.len);
                            pacing = true;
                        }
                        Ok(None) => break,
                        // a final answer, or a bad one: read as the response
                        _ => return Ok(()),
                    }
                },
            }
        }
        Ok(())
    }

    /// The response body after its head (`rest`: what of it came with the
    /// head), by its framing. `Ok(true)`: it ended where its framing said,
    /// with nothing after it.
    async fn stream_body(
        &mut self,
        head: ResponseHead,
        mut rest: BytesMut,
        tx: &mut h2::SendStream<Bytes>,
        sent: &mut Sent,
    ) -> Result<bool, Outcome> {
        let read_timeout = self.read_timeout();
        // a client that takes nothing for send_timeout_secs is let go
        let wait = self.front.lean.send_timeout;
        let gone = |f: SendFailed| match f {
            SendFailed::Gone | SendFailed::Stalled => Outcome::Failed(Failed::Late(None)),
        };
        let mut decoder = ChunkedDecoder::bare();
        let mut decoded = Vec::new();
        let mut remaining = match head.body {
            Body::Length(n) => n,
            _ => 0,
        };
        let mut clean = true;
        loop {
            if !rest.is_empty() {
                let (piece, end) = match head.body {
                    Body::Length(_) => {
                        let take = (rest.len() as u64).min(remaining) as usize;
                        let piece = rest.split_to(take).freeze();
                        remaining -= take as u64;
                        clean &= rest.is_empty();
                        (piece, remaining == 0)
                    }
                    Body::Chunked => {
                        decoded.clear();
                        let used = decoder.decode(&rest, &mut decoded).map_err(|why| {
                            late(upstream_error(ErrorType::InvalidHTTPHeader, why))
                        })?;
                        clean &= used == rest.len();
                        rest.clear();
                        (Bytes::copy_from_slice(&decoded), decoder.done())
                    }
                    _ => (rest.split().freeze(), false),
                };
                let n = piece.len();
                if let Some(tap) = &mut self.inc.shadow {
                    tap.response_body(&piece);
                }
                send_all(tx, piece, end, wait).await.map_err(gone)?;
                sent.bytes += n;
                if end {
                    return Ok(clean);
                }
            }
            if head.body == Body::Length(0) {
                send_all(tx, Bytes::new(), true, wait).await.map_err(gone)?;
                return Ok(true);
            }
            rest.reserve(READ_BUF);
            let n = read_more(self.up, &mut rest, read_timeout)
                .await
                .map_err(late)?;
            if n == 0 {
                if head.body == Body::UntilClose {
                    send_all(tx, Bytes::new(), true, wait).await.map_err(gone)?;
                    return Ok(false);
                }
                let why = "the instance closed the connection in the middle of the body";
                return Err(late(upstream_error(ErrorType::ConnectionClosed, why)));
            }
        }
    }
}

/// An interim answer (100, 103) to the client as interim HEADERS; one the
/// client's stream cannot take is dropped.
fn interim(respond: &mut SendResponse<Bytes>, status: u16, fields: HeaderMap) {
    let Ok(code) = http::StatusCode::from_u16(status) else {
        return;
    };
    let mut resp = Response::new(());
    *resp.status_mut() = code;
    *resp.headers_mut() = fields;
    let _ = respond.send_informational(resp);
}

/// Read more of the instance's answer into `buf` within `timeout` (0 at
/// its end).
async fn read_more(
    up: &mut Stream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<usize, Box<Error>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUF);
    }
    match fast_timeout(timeout, up.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(_)) => Err(upstream_error(
            ErrorType::ReadError,
            "reading the response failed",
        )),
        Err(_) => Err(upstream_error(
            ErrorType::ReadTimedout,
            "no response within the read time-out",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::forwarded::ForwardedFor;

    fn parts(req: http::request::Builder) -> http::request::Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_body_is_framed_by_its_length_else_chunked() {
        let get = parts(http::Request::get("https://a.test/"));
        assert_eq!(framing(&get, true), Ok(Framing::None));
        assert_eq!(framing(&get, false), Ok(Framing::Chunked));
        let post = parts(http::Request::post("https://a.test/"));
        assert_eq!(framing(&post, true), Ok(Framing::Length(0)));
        let sized = parts(http::Request::post("https://a.test/").header("content-length", "12"));
        assert_eq!(framing(&sized, false), Ok(Framing::Length(12)));
        let bad = parts(http::Request::post("https://a.test/").header("content-length", "1x"));
        assert!(framing(&bad, false).is_err());
    }

    #[test]
    fn the_request_head_joins_cookies_and_replaces_what_the_proxy_sets() {
        let p = parts(
            http::Request::post("https://shop.test/up?x=1")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("te", "trailers")
                .header("x-forwarded-for", "6.6.6.6")
                .header("content-length", "3")
                .header("accept", "*/*"),
        );
        let slot = HeaderValue::from_static("staging");
        let fwd = Forwarded {
            for_: Some(ForwardedFor::Peer("10.0.0.1".parse().unwrap())),
            proto: b"https",
            host: Some(b"shop.test"),
            slot: Some(&slot),
        };
        let mut out = Vec::new();
        request_head(&p, &fwd, Framing::Length(3), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /up?x=1 HTTP/1.1\r\nhost: shop.test\r\naccept: */*\r\ncookie: a=1; b=2\r\n\
             x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: shop.test\r\nx-slot-name: staging\r\ncontent-length: 3\r\n\r\n"
        );
    }

    #[test]
    fn response_heads_lose_their_connection_fields() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
                    Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let (h, f) = parse_head(raw, false, h1::DEFAULT_MAX_RESPONSE_HEAD)
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.body), (200, Body::Chunked));
        assert!(f.get("connection").is_none() && f.get("transfer-encoding").is_none());
        assert_eq!(f["x-a"], "1");
        let sized = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
        let (h, f) = parse_head(sized, false, h1::DEFAULT_MAX_RESPONSE_HEAD)
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.body), (404, Body::Length(2)));
        assert_eq!(f["content-length"], "2");
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\n", false, h1::DEFAULT_MAX_RESPONSE_HEAD)
                .unwrap()
                .is_none()
        );
        // a HEAD answer states the length of what a GET would get
        let (h, f) = parse_head(sized, true, h1::DEFAULT_MAX_RESPONSE_HEAD)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.body, f["content-length"].as_bytes()),
            (Body::None, &b"2"[..])
        );
        let bad = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(parse_head(bad, false, h1::DEFAULT_MAX_RESPONSE_HEAD).is_err());
    }
}
