//! One client HTTP/1 connection as the connection loop (`limits`) hands it
//! to the engine (`lean`), request after request: how HTTP/1.1 pipelining
//! is answered in order (RFC 9112 §9.3.2), as nginx does, and what one
//! parse of a request header says about it ([`inspect`]: its body's
//! length, whether it is plain, whether it is refused).
//!
//! The engine reads a request's body itself and, once it is complete, may
//! watch the socket while the response is produced (to notice a client
//! that goes away). With requests pipelined behind the current one, either
//! read would take the next request's bytes. So the engine is given a
//! [`Fenced`] connection: it may read exactly the current request's body
//! from the socket ([`body_length`] decides how many bytes that is), and
//! what arrives after it is kept aside as the start of the next request,
//! which the connection loop reads from there with the same limits as any
//! other. A chunked body is fenced where its decoder finds its end
//! (`lean::body_ended`); an upgrade is not fenced (its bytes are the
//! tunnel's).
//!
//! The fence also replays bytes already read (the HTTP/2 connection
//! preface of an h2c client, found by the connection loop) to the HTTP/2
//! front end (`edge`).

use crate::request_body::RequestBody;
use bytes::{Buf, BytesMut};
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// How many body bytes follow a request header on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Exactly this many (0: no body; RFC 9112 §6.3: a request with
    /// neither Content-Length nor Transfer-Encoding has none).
    Exactly(u64),
    /// Not known from the header alone (chunked, an upgrade, CONNECT), or
    /// a header that is refused anyway: no fence.
    Unknown,
}

/// Most headers a request may have for its body to be framed here; one
/// with more is simply not fenced.
pub const MAX_HEADERS: usize = 128;

/// The body length of the request whose complete header is `head`.
pub fn body_length(head: &[u8]) -> BodyLength {
    inspect(head).body
}

/// What the connection loop learns from one parse of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected<'a> {
    pub body: BodyLength,
    /// What the lean HTTP/1 path (`lean`) needs to serve the request, when
    /// it can: see [`Plain`]. `None` for anything else.
    pub plain: Option<Plain<'a>>,
    /// The request must be refused (`request_check`): the connection loop
    /// answers it with this, whatever path would have served it.
    pub refused: Option<crate::request_check::Refused>,
}

/// A request the lean path serves: HTTP/1.1, an origin-form target, one
/// `Host`, lines ending in CRLF, a body framed one unambiguous way
/// (`request_body`) or none, and no hop-by-hop field but `Connection:
/// keep-alive|close|upgrade`, `Keep-Alive`, `Upgrade` with `Connection:
/// upgrade` and `Expect: 100-continue` (no `TE`, `Trailer`, proxy fields
/// or `HTTP2-Settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain<'a> {
    pub host: &'a [u8],
    pub kind: PlainKind,
}

/// The parts of a [`Plain`] request that shape its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainKind {
    pub body: RequestBody,
    /// An upgrade (WebSocket): after a 101 the connection is a tunnel.
    pub upgrade: bool,
    /// `Expect: 100-continue`: the client waits for a 100 (the instance's,
    /// passed on) before it sends the body.
    pub expect_continue: bool,
    /// The client speaks HTTP/1.0 (its header was written anew as
    /// HTTP/1.1 by `head_rewrite`): no chunked answer, no interim one.
    pub http10: bool,
}

/// Parse the complete request header `head` once: its body length (the
/// fence) and whether it is plain (see [`Plain`]).
pub fn inspect(head: &[u8]) -> Inspected<'_> {
    inspect_on(head, false)
}

/// [`inspect`] for a request that came over TLS if `tls`, with its checks
/// (`request_check`).
pub fn inspect_on(head: &[u8], tls: bool) -> Inspected<'_> {
    let unknown = Inspected {
        body: BodyLength::Unknown,
        plain: None,
        refused: None,
    };
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        // more fields than this parse holds: pingora's own parser takes them
        Err(httparse::Error::TooManyHeaders) => return unknown,
        _ => {
            return Inspected {
                refused: Some(crate::request_check::Refused {
                    status: 400,
                    why: "400 Bad Request: the request header is malformed",
                }),
                ..unknown
            }
        }
    }
    if let Err(refused) = crate::request_check::check(&req, tls) {
        return Inspected {
            refused: Some(refused),
            ..unknown
        };
    }
    if req.method == Some("CONNECT") {
        return unknown;
    }
    let body = body_length_of(req.headers);
    let plain = if req.version == Some(1)
        && !bare_lf(head)
        && req.path.is_some_and(|p| p.starts_with('/') || p == "*")
    {
        plain(req.headers)
    } else {
        None
    };
    Inspected {
        body,
        plain,
        refused: None,
    }
}

/// Whether a line of `head` ends in a bare LF: the lean path copies field
/// lines as they came, and a strict app server (llhttp, h11) refuses a bare
/// LF, so such a header is written anew with CRLFs first (`head_rewrite`).
fn bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// The [`Plain`] reading of a request's fields, if they are plain.
fn plain<'a>(headers: &[httparse::Header<'a>]) -> Option<Plain<'a>> {
    let mut host = None;
    let (mut length, mut chunked) = (None, false);
    let (mut upgrade_token, mut upgrade_field) = (false, false);
    let mut expect_continue = false;
    for h in headers {
        let name = h.name.as_bytes();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("host") {
            if host.is_some() {
                return None;
            }
            host = Some(h.value);
        } else if is("connection") {
            for t in h.value.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                } else if !(t.eq_ignore_ascii_case(b"keep-alive")
                    || t.eq_ignore_ascii_case(b"close"))
                {
                    return None;
                }
            }
        } else if is("content-length") {
            if length.is_some() {
                return None;
            }
            length = Some(content_length(h.value)?);
        } else if is("transfer-encoding") {
            // exactly one coding, chunked (RFC 9112 §6.1, §7)
            if chunked || !h.value.eq_ignore_ascii_case(b"chunked") {
                return None;
            }
            chunked = true;
        } else if is("upgrade") {
            if upgrade_field {
                return None;
            }
            upgrade_field = true;
        } else if is("expect") {
            if expect_continue || !h.value.eq_ignore_ascii_case(b"100-continue") {
                return None;
            }
            expect_continue = true;
        } else if is("te")
            || is("trailer")
            || is("proxy-connection")
            || is("proxy-authorization")
            || is("proxy-authenticate")
            || is("http2-settings")
        {
            return None;
        }
    }
    let body = match (length, chunked) {
        (Some(_), true) => return None,
        (Some(0) | None, false) => RequestBody::None,
        (Some(n), false) => RequestBody::Length(n),
        (None, true) => RequestBody::Chunked,
    };
    // an upgrade is asked for by both fields, and carries no body
    let upgrade = upgrade_token || upgrade_field;
    if upgrade && !(upgrade_token && upgrade_field && body == RequestBody::None) {
        return None;
    }
    Some(Plain {
        host: host?,
        kind: PlainKind {
            body,
            upgrade,
            expect_continue,
            http10: false,
        },
    })
}

/// A `Content-Length` value: digits only (no sign, no list), fitting a u64.
pub fn content_length(value: &[u8]) -> Option<u64> {
    // optional whitespace is SP and HTAB only: a Unicode space (U+00A0,
    // U+0085, U+2003) is a byte of the value, and refused with it
    let v = crate::request_check::ows_trim(value);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // what a signed 64-bit length holds (nginx's off_t): the larger ones
    // no app can take
    std::str::from_utf8(v)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|&n| n <= i64::MAX as u64)
}

fn body_length_of(headers: &[httparse::Header<'_>]) -> BodyLength {
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
        {
            return BodyLength::Unknown;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            match (content_length(h.value), length) {
                (Some(n), None) => length = Some(n),
                // two lengths (even equal ones) or a bad one: pingora
                // refuses the request; leave it unfenced
                _ => return BodyLength::Unknown,
            }
        }
    }
    BodyLength::Exactly(length.unwrap_or(0))
}

/// Split what was read with a request header: its header and the part of
/// the body already here go to pingora, the rest is the next request's.
/// Returns (for pingora, body bytes still to read from the socket or
/// `None` for no fence, the next request's bytes).
pub fn split_request(buf: BytesMut, head_len: usize) -> (BytesMut, Option<u64>, BytesMut) {
    let body = body_length(&buf[..head_len]);
    split_at_body(buf, head_len, body)
}

/// [`split_request`] with the body length already known (from [`inspect`]).
pub fn split_at_body(
    mut buf: BytesMut,
    head_len: usize,
    body: BodyLength,
) -> (BytesMut, Option<u64>, BytesMut) {
    match body {
        BodyLength::Exactly(len) => {
            let here = (buf.len() - head_len) as u64;
            if here > len {
                let next = buf.split_off(head_len + len as usize);
                (buf, Some(0), next)
            } else {
                (buf, Some(len - here), BytesMut::new())
            }
        }
        BodyLength::Unknown => (buf, None, BytesMut::new()),
    }
}

/// A client connection whose reads pingora can be kept from taking past
/// the current request (see the module doc).
#[derive(Debug)]
pub struct Fenced {
    inner: Stream,
    /// Bytes pingora may still read from the socket for this request;
    /// `None`: no fence.
    allow: Option<u64>,
    /// Bytes of the next request(s), read while fenced; or bytes to replay
    /// to the next reader when `replay` is set.
    next: BytesMut,
    replay: bool,
    /// Most bytes kept in `next` (the header limit plus one: the
    /// connection loop refuses a longer header anyway).
    cap: usize,
}

/// Size of one read taken while fenced.
const FENCED_READ: usize = 1024;

impl Fenced {
    pub fn new(inner: Stream, cap: usize) -> Fenced {
        Fenced {
            inner,
            allow: None,
            next: BytesMut::new(),
            replay: false,
            cap,
        }
    }

    /// From here on pingora may read `allow` more bytes (`None`: any).
    pub fn fence(&mut self, allow: Option<u64>) {
        self.allow = allow;
        self.replay = false;
    }

    /// Take the bytes of the next request read so far.
    pub fn take_next(&mut self) -> BytesMut {
        std::mem::take(&mut self.next)
    }

    /// Keep `bytes` as the start of the next request.
    pub fn put_next(&mut self, bytes: BytesMut) {
        debug_assert!(self.next.is_empty());
        self.next = bytes;
    }

    /// Let the next reader read `bytes` first, then the socket, unfenced.
    pub fn replay(&mut self, bytes: BytesMut) {
        self.next = bytes;
        self.replay = true;
        self.allow = None;
    }

    /// The socket itself, past any fence (the connection loop reads the
    /// header from it between requests).
    pub fn socket(&mut self) -> &mut Stream {
        &mut self.inner
    }

    pub fn into_inner(self) -> Stream {
        self.inner
    }

    /// The fence is closed: read the socket into `next` (so the client's
    /// pipelined bytes do not sit unread) until it would block, reporting
    /// only the end of the connection.
    fn poll_fenced(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.next.len() >= self.cap {
                // the next header is already too long; the loop will say
                // 431 once this response is done. Nothing wakes this read.
                return Poll::Pending;
            }
            let mut chunk = [0u8; FENCED_READ];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // the client closed: pingora sees the end of the connection
                return Poll::Ready(Ok(()));
            }
            self.next.extend_from_slice(rb.filled());
        }
    }
}

impl AsyncRead for Fenced {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.replay && !this.next.is_empty() {
            let n = this.next.len().min(buf.remaining());
            buf.put_slice(&this.next[..n]);
            this.next.advance(n);
            return Poll::Ready(Ok(()));
        }
        match this.allow {
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
            Some(0) => this.poll_fenced(cx),
            Some(allow) => {
                let max = usize::try_from(allow)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining());
                let mut part = buf.take(max);
                let start = part.filled().as_ptr();
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                debug_assert_eq!(start, part.filled().as_ptr());
                let n = part.filled().len();
                // SAFETY: `part` is the unfilled part of `buf`, and the
                // read above initialised its first `n` bytes (tokio's
                // `Take` does the same).
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                this.allow = Some(allow - n as u64);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Fenced {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait::async_trait]
impl Shutdown for Fenced {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Fenced {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Fenced {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Fenced {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Fenced {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Fenced {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait::async_trait]
impl Peek for Fenced {
    /// Peek at replayed bytes (the h2c preface check of pingora's HTTP
    /// server reads exactly the preface's length).
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if !self.replay {
            return Ok(false);
        }
        while self.next.len() < buf.len() {
            let mut chunk = [0u8; FENCED_READ];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.next.extend_from_slice(&chunk[..n]);
        }
        buf.copy_from_slice(&self.next[..buf.len()]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(head: &str) -> BodyLength {
        body_length(head.as_bytes())
    }

    #[test]
    fn requests_without_framing_headers_have_no_body() {
        assert_eq!(
            len("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            BodyLength::Exactly(0)
        );
        assert_eq!(len("DELETE /x HTTP/1.0\r\n\r\n"), BodyLength::Exactly(0));
        assert_eq!(
            len("POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH:  12 \r\n\r\n"),
            BodyLength::Exactly(12)
        );
    }

    #[test]
    fn anything_uncertain_is_not_fenced() {
        for head in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "garbage\r\n\r\n",
        ] {
            assert_eq!(len(head), BodyLength::Unknown, "{head:?}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        assert_eq!(
            len(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            BodyLength::Unknown
        );
    }

    #[test]
    fn two_host_fields_are_found_in_any_case_and_version() {
        let two = |h: &str| {
            inspect(h.as_bytes())
                .refused
                .is_some_and(|r| r.why.contains("more than one Host"))
        };
        assert!(two("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"));
        assert!(two("GET / HTTP/1.0\r\nHOST: a\r\nX: y\r\nHost: b\r\n\r\n"));
        assert!(!two("GET / HTTP/1.1\r\nHost: a\r\nX-Host: b\r\n\r\n"));
        assert!(!two("GET / HTTP/1.0\r\n\r\n"));
    }

    fn plain(head: &str) -> Option<&str> {
        inspect(head.as_bytes())
            .plain
            .map(|p| std::str::from_utf8(p.host).unwrap())
    }

    fn kind(head: &str) -> PlainKind {
        inspect(head.as_bytes()).plain.expect("plain").kind
    }

    #[test]
    fn plain_requests_are_origin_form_with_one_host_and_one_framing() {
        assert_eq!(plain("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some("a"));
        assert_eq!(
            plain("HEAD /x?y HTTP/1.1\r\nhost: b:8080\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n\r\n"),
            Some("b:8080")
        );
        let none = PlainKind {
            body: RequestBody::None,
            upgrade: false,
            expect_continue: false,
            http10: false,
        };
        assert_eq!(
            kind("GET / HTTP/1.1\r\nHost: a\r\nConnection: close , keep-alive\r\nContent-Length: 0\r\n\r\n"),
            none
        );
        assert_eq!(
            kind("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n").body,
            RequestBody::Length(3)
        );
        assert_eq!(
            kind("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").body,
            RequestBody::Chunked
        );
        let k =
            kind("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n");
        assert!(k.expect_continue && !k.upgrade);
        let k = kind("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(k.upgrade && k.body == RequestBody::None);
        // `OPTIONS *` goes on as it came
        assert_eq!(kind("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), none);
        for head in [
            // no Host, two Hosts
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            // framing that is not one unambiguous way (the slow path
            // refuses these)
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            // an upgrade needs both fields, and no body
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\n",
            // not origin-form
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            // hop-by-hop fields: written anew first (`head_rewrite`)
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-secret\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            "garbage\r\n\r\n",
            // HTTP/1.0: written anew as HTTP/1.1 (`head_rewrite`)
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            // bare LFs: written anew with CRLFs (`head_rewrite`)
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n",
        ] {
            assert_eq!(plain(head), None, "{head:?}");
        }
    }

    #[test]
    fn pipelined_bytes_are_split_at_the_end_of_the_body() {
        let get = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        let post = "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        let buf = BytesMut::from(format!("{post}hello{get}").as_str());
        let (mine, allow, next) = split_request(buf, post.len());
        assert_eq!(&mine[..], format!("{post}hello").as_bytes());
        assert_eq!(allow, Some(0));
        assert_eq!(&next[..], get.as_bytes());
        // part of the body still to come
        let buf = BytesMut::from(format!("{post}he").as_str());
        let (mine, allow, next) = split_request(buf, post.len());
        assert_eq!(
            (mine.len(), allow, next.len()),
            (post.len() + 2, Some(3), 0)
        );
        // a chunked body is not split
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let buf = BytesMut::from(format!("{chunked}0\r\n\r\n{get}").as_str());
        let total = buf.len();
        let (mine, allow, next) = split_request(buf, chunked.len());
        assert_eq!((mine.len(), allow, next.len()), (total, None, 0));
    }
}
