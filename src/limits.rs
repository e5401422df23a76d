//! Downstream limits (docs/reference/limits.md):
//! what one client may cost the proxy.
//!
//! The client listeners' application ([`Limited`], a pingora-core
//! [`ServerApp`]): the connection loop around slotproxy's one request
//! engine, and what one client may cost it (pingora's own HTTP server keeps
//! idle keep-alive connections forever, buffers a header up to 1 MB and
//! limits nothing, so none of it is used):
//!
//! * **accept**: [`Connections::admit`] (`admission`) refuses a connection
//!   beyond `max_connections_per_ip`, or beyond `max_connections` when no
//!   keep-alive connection idles to make room, by closing it at once
//!   (counted in `slotproxy_connections_refused_total{reason}`), before it
//!   can cost a buffer or a file descriptor for an upstream;
//! * **between requests** (HTTP/1.x): the idle connection waits for its next
//!   request holding no request buffer (only `FIRST_READ`), and is closed after
//!   `keepalive_timeout_secs` (the first request: `header_timeout_secs`);
//! * **the request header** is read here into a buffer capped at
//!   `max_header_bytes` (more → 431 at once), with the request line capped
//!   at `max_uri_bytes` (more → 414) and the whole header due within
//!   `header_timeout_secs` (else 408); it is checked (`request_check`),
//!   written anew if it is not plain (`head_rewrite`), and handed to the
//!   engine (`lean::Lean::serve`) with what of its body came with it;
//! * **the request body** is read by the engine with `body_timeout_secs`
//!   between reads and `body_min_bytes_per_sec` on average; a client that
//!   stalls gets 408 ([`client_fault`] decides);
//! * **the answer**: a write to a client that takes nothing for
//!   `send_timeout_secs` ends the connection (and the instance's).
//!
//! HTTP/2 connections (TLS with ALPN `h2`, h2c with prior knowledge) are
//! counted and limited at accept, then served by the engine's HTTP/2 front
//! end (`edge`).
//!
//! The decisions ([`check_head`], [`client_fault`], the counters of
//! [`Connections`]) are plain functions, tested below without sockets.

pub use crate::admission::{client_key, Admitted, Connections, Refusal};
use crate::config::ServerSection;
use crate::connection::Fenced;
use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_error::{ErrorSource, ErrorType};
use pingora_timeout::fast_timeout::fast_timeout;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[server]` limits, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub keepalive_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// `send_timeout_secs`: the longest a write to the client may wait.
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_connections: usize,
    /// 0: no limit.
    pub max_connections_per_ip: usize,
    /// Plain connections may start with the HTTP/2 preface (h2c).
    pub h2c: bool,
}

impl Limits {
    pub fn from_config(s: &ServerSection) -> Limits {
        let max_connections = s.max_connections.unwrap_or_else(auto_max_connections);
        Limits {
            keepalive_timeout: Duration::from_secs(s.keepalive_timeout_secs),
            header_timeout: Duration::from_secs(s.header_timeout_secs),
            body_timeout: Duration::from_secs(s.body_timeout_secs),
            send_timeout: Duration::from_secs(s.send_timeout_secs),
            max_header_bytes: s.max_header_bytes,
            max_uri_bytes: s.max_uri_bytes,
            max_connections,
            max_connections_per_ip: s
                .max_connections_per_ip
                .unwrap_or_else(|| crate::admission::auto_max_per_ip(max_connections)),
            h2c: s.h2c,
        }
    }
}

/// A plain-HTTP listener whose connections keep no read buffer of their
/// own. pingora puts a 64 KB read buffer under every accepted connection
/// (`DEFAULT_L4_READ_BUFFER_SIZE`, there for TLS's 16 KB records) for as
/// long as it is open, idle or not: that was most of the ~100 KB an idle
/// keep-alive connection cost. Plain HTTP reads the header and body into
/// buffers of their own, so it loses nothing without it; writes keep
/// pingora's one-segment buffer.
pub fn plain_listener(addr: &str) -> pingora_core::listeners::ListenerConfig {
    use pingora_core::listeners::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE};
    pingora_core::listeners::ListenerConfig::tcp(addr)
        .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE))
}

/// `max_connections` when the config leaves it out: half the process's
/// open-file limit, so the other half stays free for connections to the
/// apps, health checks and files — running out of descriptors is what turns
/// one client's idle connections into 502s for everyone.
pub fn auto_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return 1 << 20;
    }
    ((lim.rlim_cur / 2) as usize).clamp(16, 1 << 20)
}

/// What the bytes of a request header read so far allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The header is not complete yet and within limits: read more.
    Incomplete,
    /// The header ends within the buffer.
    Complete,
    /// More than `max_header_bytes` without the header's end: 431.
    TooLarge,
    /// The request target is longer than `max_uri_bytes`: 414.
    UriTooLong,
}

/// Judge the start of a request (`buf` holds bytes from its first byte on).
/// The request line is judged first, so a long URI gets 414 even when it
/// also makes the header too large.
pub fn check_head(buf: &[u8], max_header: usize, max_uri: usize) -> Head {
    // RFC 9112 §2.2: empty lines before the request line are ignored.
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let line_end = memchr::memchr(b'\n', rest);
    let line = &rest[..line_end.unwrap_or(rest.len())];
    let target = match memchr::memchr(b' ', line) {
        Some(sp) => {
            let after = &line[sp + 1..];
            match (line_end, memchr::memrchr(b' ', after)) {
                // a complete line: the target ends at the last space
                (Some(_), Some(end)) => after[..end].len(),
                (Some(_), None) => after.len(),
                // still arriving: " HTTP/1.1\r" may follow the target
                (None, _) => after.len().saturating_sub(" HTTP/1.1\r".len()),
            }
        }
        None => 0,
    };
    if target > max_uri {
        return Head::UriTooLong;
    }
    match header_end(buf) {
        Some(end) if end <= max_header => Head::Complete,
        Some(_) => Head::TooLarge,
        None if buf.len() > max_header => Head::TooLarge,
        None => Head::Incomplete,
    }
}

/// Length of the header up to and including its blank line (`\n\r\n` or
/// `\n\n`, as httparse accepts bare LF), ignoring leading empty lines.
fn header_end(buf: &[u8]) -> Option<usize> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    for i in memchr::memchr_iter(b'\n', &buf[start..]) {
        let i = start + i;
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            _ => {}
        }
    }
    None
}

/// The status a failed request gets when the client, not the app, caused
/// it, else `None`. A client that stops sending its body makes either our
/// body read time out, or — when `upstream_read_timeout_secs` is shorter —
/// the app's, because the app is still waiting for that body: both are the
/// client's (408), never the app's.
pub fn client_fault(etype: &ErrorType, source: &ErrorSource, body_done: bool) -> Option<u16> {
    match (etype, source) {
        (ErrorType::ReadTimedout, ErrorSource::Downstream) => Some(408),
        (ErrorType::ReadTimedout, ErrorSource::Upstream) if !body_done => Some(408),
        _ => None,
    }
}

/// The client listeners' application: the limits above around
/// slotproxy's one request engine — HTTP/1 clients on the lean path
/// (`lean::Lean`), HTTP/2 clients on its HTTP/2 front end (`edge`).
pub struct Limited {
    engine: crate::lean::Lean,
    h2: Arc<crate::edge::H2Front>,
    limits: Limits,
    conns: Arc<Connections>,
}

impl Limited {
    pub fn new(engine: crate::lean::Lean, h2: crate::edge::H2Front, limits: Limits) -> Limited {
        crate::metrics::connections_init(Refusal::ALL.map(Refusal::as_str));
        Limited {
            engine,
            h2: Arc::new(h2),
            conns: Connections::new(limits.max_connections, limits.max_connections_per_ip),
            limits,
        }
    }
}

/// How reading a request header ended, short of a complete header.
enum NoHead {
    /// Closed by the client, or idle too long: close without a word.
    Quiet,
    /// Still idle when the drain window ended: close without a word, but
    /// lingering (see [`linger_close`]), as a request may be on its way.
    Drained,
    /// Answer with this status and close.
    Refuse(u16),
}

/// First read of a request: a small array in this connection's future (which
/// `async_trait` boxes: about 2 KiB in all), so an idle connection holds no
/// request buffer (nginx's `client_header_buffer_size` is 1 KB). What else
/// an idle connection costs, and whose it is: docs/performance/memory.md,
/// "Idle connections today" (`examples/alloc_census.rs`).
const FIRST_READ: usize = 1024;
/// Header buffer to start with once a request arrives (pingora's too).
const HEADER_BUF: usize = 4096;
/// After refusing a request, how long to read and discard what the client
/// still sends, so closing does not reset the connection (a reset can
/// destroy the answer before the client reads it).
const LINGER: Duration = Duration::from_secs(1);

impl Limited {
    /// Read one request header: its first bytes within `idle`, all of it by
    /// `deadline` (counted from the first byte when `None`). Bytes of it
    /// already read (pipelined behind the previous request) count as its
    /// first bytes. Returns the bytes read and the header's length.
    async fn read_head(
        &self,
        conn: &mut Fenced,
        idle: Duration,
        deadline: Option<Instant>,
        shutdown: &ShutdownWatch,
        keepalive: Option<&Admitted>,
    ) -> Result<(BytesMut, usize), NoHead> {
        let mut buf = conn.take_next();
        if buf.is_empty() {
            let mut first = [0u8; FIRST_READ];
            let mut stop = shutdown.clone();
            let idle_since = Instant::now();
            // between requests, the connection may be closed to make room
            // for a new one (`admission`)
            if let Some(a) = keepalive {
                a.idle_begins(idle_since);
            }
            let evicted = async {
                match keepalive {
                    Some(a) => a.evicted().await,
                    None => std::future::pending::<()>().await,
                }
            };
            let n = tokio::select! {
                // pingora's coarse timer: no timer-wheel entry, nor a wake-up
                // of the I/O driver, per kept-alive request
                r = fast_timeout(idle, conn.socket().read(&mut first)) => match r {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => return Err(NoHead::Quiet),
                },
                _ = evicted => return Err(NoHead::Quiet),
                // An idle connection outlives the shutdown broadcast: it is
                // closed only once the drain window is over (drain.rs) *and* it
                // has been idle for a whole window itself, so a connection that
                // was just accepted, or just answered, still gets its request
                // read and answered (with `Connection: close`) instead of a
                // closed socket.
                _ = async {
                    let _ = stop.wait_for(|down| *down).await;
                    crate::drain::start();
                    crate::drain::window_over().await;
                    tokio::time::sleep_until((idle_since + crate::drain::window()).into()).await;
                } => return Err(NoHead::Drained),
            };
            if let Some(a) = keepalive {
                a.idle_ends();
            }
            buf = BytesMut::with_capacity(HEADER_BUF.max(n));
            buf.extend_from_slice(&first[..n]);
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.limits.header_timeout);
        let l = &self.limits;
        loop {
            match check_head(&buf, l.max_header_bytes, l.max_uri_bytes) {
                Head::Complete => {
                    let len = header_end(&buf).unwrap_or(buf.len());
                    return Ok((buf, len));
                }
                Head::TooLarge => return Err(NoHead::Refuse(431)),
                Head::UriTooLong => return Err(NoHead::Refuse(414)),
                Head::Incomplete => {}
            }
            // never buffer more than one byte past the limit
            let room = (l.max_header_bytes + 1).saturating_sub(buf.len()).max(1);
            buf.reserve(room.min(HEADER_BUF));
            let mut capped = (&mut buf).limit(room);
            let read = conn.socket().read_buf(&mut capped);
            match tokio::time::timeout_at(deadline.into(), read).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Err(NoHead::Quiet),
                Err(_) => return Err(NoHead::Refuse(408)),
            }
        }
    }

    /// Answer a request refused before pingora saw it, then close.
    async fn refuse(&self, stream: Stream, status: u16, started: Instant) {
        let why = match status {
            431 => format!(
                "431 Request Header Fields Too Large: the request header is larger than {} bytes (server.max_header_bytes)",
                self.limits.max_header_bytes
            ),
            414 => uri_too_long(self.limits.max_uri_bytes),
            _ => format!(
                "408 Request Timeout: the request header did not arrive within {} s (server.header_timeout_secs)",
                self.limits.header_timeout.as_secs()
            ),
        };
        self.answer_and_close(stream, status, &why, started).await
    }

    /// Answer `status` with the one line `why`, log and count it, then
    /// close.
    async fn answer_and_close(&self, mut stream: Stream, status: u16, why: &str, started: Instant) {
        let line = crate::proxy::status_line(status);
        let reason = line.split_once(' ').map_or("", |(_, r)| r);
        let text = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{why}\n",
            why.len() + 1
        );
        crate::metrics::request_finished(None, status, started.elapsed(), http::Version::HTTP_11);
        if let Some(format) = crate::access_log::format() {
            // refused before any request was parsed: who, and what status
            let client = stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
            let entry = crate::access_log::Entry {
                time: crate::activity::now(),
                client,
                host: "-",
                site: "-",
                slot: "-",
                instance: "-",
                method: "-",
                path: "-",
                protocol: "HTTP/1.1",
                status,
                bytes: why.len() + 1,
                duration: started.elapsed().as_secs_f64(),
                reason: "-",
            };
            crate::access_log::write(entry.format(format));
        }
        let written = tokio::time::timeout(LINGER, async {
            stream.write_all(text.as_bytes()).await?;
            stream.flush().await
        })
        .await;
        if matches!(written, Ok(Ok(()))) {
            linger_close(stream).await;
        }
    }
}

/// The answer to a request target over `max_uri_bytes` (HTTP/1 here, HTTP/2
/// in `edge::h2_exchange`, where the `h2` crate has parsed the request).
pub fn uri_too_long(max_uri_bytes: usize) -> String {
    format!(
        "414 URI Too Long: the request target is longer than {max_uri_bytes} bytes (server.max_uri_bytes)"
    )
}

/// Close a client connection gracefully: FIN first, then read and discard
/// what the client still sends for up to [`LINGER`]. Closing a socket with
/// unread bytes — a request that was on its way — makes the kernel answer
/// with a reset, which can destroy a response the client has not read yet
/// and tells it nothing; a FIN followed by silence is an ordinary close an
/// HTTP client retries on a new connection.
async fn linger_close(mut stream: Stream) {
    linger(&mut stream).await
}

/// [`linger_close`] on a connection the caller still holds (and then
/// drops): the lean path closes this way after an answer given while the
/// client may still be sending a body nobody will read.
pub(crate) async fn linger(stream: &mut Stream) {
    let fin = tokio::time::timeout(LINGER, stream.shutdown()).await;
    if !matches!(fin, Ok(Ok(()))) {
        return;
    }
    let mut sink = [0u8; FIRST_READ];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The start of the HTTP/2 connection preface (RFC 9113 §3.4) as the
/// header reader sees it: a request line and an empty header.
const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";
/// The whole preface: that head, then `SM\r\n\r\n`.
const H2_PREFACE_LEN: usize = 24;

impl Limited {
    /// The HTTP/1.x keep-alive loop of pingora's own `ServerApp` (apps/mod.rs),
    /// with the header read and the idle wait done here, and pipelined
    /// requests answered in order (`connection`).
    async fn serve_h1(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
        admitted: &Admitted,
    ) {
        let accepted = Instant::now();
        let mut conn = Fenced::new(stream, self.limits.max_header_bytes + 1);
        let mut first = true;
        loop {
            let (idle, deadline) = if first {
                let d = accepted + self.limits.header_timeout;
                (self.limits.header_timeout, Some(d))
            } else {
                (self.limits.keepalive_timeout, None)
            };
            let started = Instant::now();
            let keepalive = (!first).then_some(admitted);
            let read = self.read_head(&mut conn, idle, deadline, shutdown, keepalive);
            let (buf, head_len) = match read.await {
                Ok(head) => head,
                Err(NoHead::Quiet) => return,
                Err(NoHead::Drained) => return linger_close(conn.into_inner()).await,
                Err(NoHead::Refuse(status)) => {
                    return self.refuse(conn.into_inner(), status, started).await
                }
            };
            if first && self.limits.h2c && buf.starts_with(H2_PREFACE_HEAD) {
                // an h2c client with prior knowledge: the whole 24-byte
                // preface is due within the header time-out, then pingora's
                // HTTP/2 server reads it again from the start
                let mut buf = buf;
                let deadline = accepted + self.limits.header_timeout;
                while buf.len() < H2_PREFACE_LEN {
                    let read = conn.socket().read_buf(&mut buf);
                    match tokio::time::timeout_at(deadline.into(), read).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                }
                conn.replay(buf);
                return crate::edge::h2::serve(&self.h2, Box::new(conn), shutdown, Some(admitted))
                    .await;
            }
            let tls = conn.socket().get_ssl_digest().is_some();
            let (mut buf, mut head_len) = (buf, head_len);
            let mut head = crate::connection::inspect_on(&buf[..head_len], tls);
            if let Some(r) = head.refused {
                return self
                    .answer_and_close(conn.into_inner(), r.status, r.why, started)
                    .await;
            }
            // not plain (HTTP/1.0, an absolute target, bare LFs, hop-by-hop
            // fields…): the header written anew in the lean path's form
            let mut http10 = false;
            if head.plain.is_none() {
                match crate::head_rewrite::rewrite(&buf[..head_len], tls) {
                    Err(r) => {
                        return self
                            .answer_and_close(conn.into_inner(), r.status, r.why, started)
                            .await
                    }
                    Ok(r) => {
                        let mut anew = BytesMut::with_capacity(r.head.len() + buf.len());
                        anew.extend_from_slice(&r.head);
                        anew.extend_from_slice(&buf[head_len..]);
                        head_len = r.head.len();
                        buf = anew;
                        http10 = r.http10;
                        head = crate::connection::inspect_on(&buf[..head_len], tls);
                    }
                }
            }
            let Some(plain) = head.plain else {
                // what `head_rewrite` writes is plain; a header it let
                // through that is not would be its fault, refused here
                let why = "400 Bad Request: the request header is malformed";
                return self
                    .answer_and_close(conn.into_inner(), 400, why, started)
                    .await;
            };
            let kind = crate::connection::PlainKind {
                http10,
                ..plain.kind
            };
            let body = head.body;
            let (mine, allow, next) = crate::connection::split_at_body(buf, head_len, body);
            conn.fence(allow);
            conn.put_next(next);
            // Keep-alive unless shutting down or draining: during the drain
            // every answer on this connection (local ones included) says
            // `Connection: close`, so the client's next request goes to a
            // new connection. The idle time-out itself is enforced above.
            let closing = *shutdown.borrow() || crate::drain::draining();
            // boxed, as pingora's own app future is (async_trait): inline,
            // the request's whole state would sit in every idle
            // connection's task (measured: 26.7 instead of 14.8 KiB per
            // idle connection)
            let serving = self.engine.serve(&mut conn, mine, head_len, kind, closing);
            if !Box::pin(serving).await {
                return;
            }
            first = false;
        }
    }
}

#[async_trait]
impl ServerApp for Limited {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _activity = crate::allocator::connection_started();
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let admitted = match self.conns.admit(ip) {
            Ok(a) => a,
            Err(why) => {
                crate::metrics::connection_refused(why.as_str());
                log::debug!("refused a connection from {ip:?}: {}", why.as_str());
                return None;
            }
        };
        match stream.selected_alpn_proto() {
            None | Some(ALPN::H1) => self.serve_h1(stream, shutdown, &admitted).await,
            // ALPN offers h2 and http/1.1 only (`server`)
            Some(_) => crate::edge::h2::serve(&self.h2, stream, shutdown, Some(&admitted)).await,
        }
        None
    }

    async fn cleanup(&self) {
        // pingora calls this once the listeners stopped (its shutdown
        // broadcast): a shutdown that did not come through our signal
        // watch drains too; connections parked between requests close
        // themselves at the end of the window (`NoHead::Drained`)
        crate::drain::start();
        crate::drain::window_over().await;
        log::info!("drain window over: closing idle client connections");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAXH: usize = 100;
    const MAXU: usize = 20;

    fn head(s: &str) -> Head {
        check_head(s.as_bytes(), MAXH, MAXU)
    }

    #[test]
    fn a_header_is_complete_at_its_blank_line() {
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Head::Complete);
        assert_eq!(head("GET / HTTP/1.1\nHost: a\n\n"), Head::Complete);
        assert_eq!(head("\r\nGET / HTTP/1.1\r\n\r\n"), Head::Complete);
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a\r\n"), Head::Incomplete);
        assert_eq!(head("GET / HT"), Head::Incomplete);
        assert_eq!(head(""), Head::Incomplete);
        assert_eq!(head("\r\n"), Head::Incomplete);
        // body bytes after the header do not count against it
        let with_body = format!("POST / HTTP/1.1\r\n\r\n{}", "x".repeat(500));
        assert_eq!(head(&with_body), Head::Complete);
    }

    #[test]
    fn a_header_over_the_limit_is_too_large_before_it_ends() {
        let big = format!("GET / HTTP/1.1\r\nCookie: {}", "a".repeat(MAXH));
        assert_eq!(head(&big), Head::TooLarge);
        assert_eq!(head(&format!("{big}\r\n\r\n")), Head::TooLarge);
        let exact = format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "a".repeat(MAXH - 23));
        assert_eq!(exact.len(), MAXH);
        assert_eq!(head(&exact), Head::Complete);
    }

    #[test]
    fn a_long_target_is_414_even_before_its_line_ends() {
        let t = "/".to_string() + &"u".repeat(MAXU - 1);
        assert_eq!(head(&format!("GET {t} HTTP/1.1\r\n\r\n")), Head::Complete);
        assert_eq!(
            head(&format!("GET {t}u HTTP/1.1\r\n\r\n")),
            Head::UriTooLong
        );
        assert_eq!(head(&format!("GET {t}uuuuuuuuuuu")), Head::UriTooLong);
        assert_eq!(head(&format!("GET {t}")), Head::Incomplete);
        // judged before the header size
        let huge = format!("GET /{} HTTP/1.1\r\n", "u".repeat(MAXH));
        assert_eq!(head(&huge), Head::UriTooLong);
    }

    #[test]
    fn stalled_bodies_are_the_clients_fault() {
        use ErrorSource::*;
        use ErrorType::*;
        assert_eq!(client_fault(&ReadTimedout, &Downstream, false), Some(408));
        assert_eq!(client_fault(&ReadTimedout, &Upstream, false), Some(408));
        // the app had the whole request and did not answer: its fault
        assert_eq!(client_fault(&ReadTimedout, &Upstream, true), None);
        assert_eq!(client_fault(&ConnectRefused, &Upstream, false), None);
        assert_eq!(client_fault(&ConnectionClosed, &Downstream, false), None);
    }
}
