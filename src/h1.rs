//! The lean path's HTTP/1 wire work (`lean`), as plain functions on bytes:
//! the client's request header parsed once and rewritten for the instance
//! with the forwarded fields spliced in, the instance's response header
//! parsed once and rewritten for the client with the pin cookie spliced in,
//! and the framing of the response body (length, chunked, or until the
//! instance closes) followed as it passes through.
//!
//! No header map is built on either side: field lines are copied as they
//! came (names keep their case, values their bytes), except the ones a
//! proxy must drop or replace (`tests/lean.rs` holds a plain request and
//! one written anew by `head_rewrite` to the same request as the instance
//! sees it).

use crate::proxy::Forwarded;
use crate::routing::RequestView;
use std::io::Write;
use std::mem::MaybeUninit;

/// Most header fields a request may have here; the connection loop
/// refuses one with more (431, `head_rewrite`; `connection::inspect`
/// parses with the same limit).
pub const MAX_HEADERS: usize = crate::connection::MAX_HEADERS;

/// Room for a message's header fields, left uninitialized until parsed
/// (4 KiB that need no zeroing per message).
pub type Headers<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Fresh room for header fields.
pub fn headers<'b>() -> Headers<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Longest response header read from an instance, and most fields in it:
/// pingora's limits, so an instance's answer passes on either path.
pub const MAX_RESPONSE_HEAD: usize = 1024 * 1024 - 1;
/// `[server] max_response_header_bytes` when the config leaves it out:
/// HAProxy's buffer (`tune.bufsize`), four of nginx's `proxy_buffer_size`
/// pages — room for the large cookies and security headers of real apps.
pub const DEFAULT_MAX_RESPONSE_HEAD: usize = 16 * 1024;
const MAX_RESPONSE_FIELDS: usize = 256;

/// A client request header parsed in place.
pub struct RawRequest<'h, 'b> {
    pub method: &'b str,
    /// The target as received (origin-form: path and query).
    pub path: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    host: &'b [u8],
}

/// Parse the complete HTTP/1.1 request header `head`; `None` if it is not
/// one (the connection loop checked it already: see `connection::inspect`).
pub fn parse_request<'h, 'b>(
    head: &'b [u8],
    headers: &'h mut Headers<'b>,
) -> Option<RawRequest<'h, 'b>> {
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, headers) {
        // the whole of `head` and nothing past it: field lines are copied
        // up to its end (`copy_fields`)
        Ok(httparse::Status::Complete(n)) if n == head.len() && req.version == Some(1) => {}
        _ => return None,
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return None;
    };
    let headers: &'h [httparse::Header<'b>] = req.headers;
    let host = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map_or(&[][..], |h| h.value);
    Some(RawRequest {
        method,
        path,
        headers,
        host,
    })
}

impl RequestView for RawRequest<'_, '_> {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|h| (h.name.as_bytes(), h.value))
    }

    fn query(&self) -> Option<&[u8]> {
        // a fragment is no part of the query (as `http::Uri` reads it)
        let path = self.path.split_once('#').map_or(self.path, |(p, _)| p);
        path.split_once('?').map(|(_, q)| q.as_bytes())
    }

    fn host(&self) -> &[u8] {
        self.host
    }
}

impl RawRequest<'_, '_> {
    /// The client asked to close the connection after this request.
    pub fn wants_close(&self) -> bool {
        self.values("connection").any(|v| has_token(v, b"close"))
    }
}

/// Whether the comma-separated field value `v` holds `token` (any case).
fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Fields of the client's request that do not go to the instance as they
/// came: hop-by-hop ones (the connection to the instance is pooled on its
/// own terms) and the ones [`Forwarded`] replaces.
const REQUEST_DROPPED: [&str; 6] = [
    "connection",
    "keep-alive",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-slot-name",
];

/// Append the request for the instance to `out`: the client's request
/// line as HTTP/1.1, its fields but the dropped ones, then the forwarded
/// fields, and `Connection: upgrade` for an upgrade (its `Upgrade` field
/// passes as it came).
pub fn upstream_request(
    head: &[u8],
    req: &RawRequest<'_, '_>,
    fwd: &Forwarded<'_>,
    upgrade: bool,
    out: &mut Vec<u8>,
) {
    // method and target as they came, in one copy
    let line =
        offset(head, req.method.as_bytes())..offset(head, req.path.as_bytes()) + req.path.len();
    out.extend_from_slice(&head[line]);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    copy_fields(head, req.headers, out, |h| {
        !(REQUEST_DROPPED
            .iter()
            .any(|d| h.name.eq_ignore_ascii_case(d))
            || crate::request_check::drops_field(h.name))
    });
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
    if upgrade {
        field(out, b"connection", b"upgrade");
    }
    out.extend_from_slice(b"\r\n");
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// Copy the field lines of the complete header `head` (`headers` parsed
/// from it) that `keep` keeps, as they came: each run of kept lines in one
/// copy, not four per field.
fn copy_fields(
    head: &[u8],
    headers: &[httparse::Header<'_>],
    out: &mut Vec<u8>,
    keep: impl Fn(&httparse::Header<'_>) -> bool,
) {
    // the field lines end where the blank line begins
    let end = head.len() - if head.ends_with(b"\r\n") { 2 } else { 1 };
    let mut run = None;
    for h in headers {
        let start = offset(head, h.name.as_bytes());
        match (keep(h), run) {
            (true, None) => run = Some(start),
            (false, Some(from)) => {
                out.extend_from_slice(&head[from..start]);
                run = None;
            }
            _ => {}
        }
    }
    if let Some(from) = run {
        out.extend_from_slice(&head[from..end]);
    }
}

/// Append the field line `name: value` to `out`.
pub(crate) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited on the instance's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked: decoded and framed anew for the client
    /// (`request_body::ChunkedDecoder`, the one strict chunked decoder).
    Chunked,
    /// No length: the body ends when the instance closes; the client gets
    /// it chunked (as pingora-proxy does), so its connection stays usable
    /// and a cut-off body is seen as cut off.
    UntilClose,
}

/// A response header read from an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Length of the header in the bytes read.
    pub len: usize,
    pub body: Body,
    /// The instance lets its connection be reused after this response.
    pub reusable: bool,
    /// The body goes to the client bare, delimited by closing its
    /// connection (an HTTP/1.0 client's chunked or close-delimited body).
    pub bare: bool,
}

/// What the response going to the client gets besides the instance's
/// fields.
pub struct ClientAdds<'a> {
    /// The pin cookie (a `Set-Cookie` value), on a final response.
    pub cookie: Option<&'a [u8]>,
    /// Say `Connection: close` (and close after it).
    pub close: bool,
    /// The request was HEAD: no body whatever the fields say.
    pub head_request: bool,
    /// The request asked for an upgrade: a `101` may come, and goes to the
    /// client as it came.
    pub upgrade: bool,
    /// A larger response header is refused (502): `max_response_header_bytes`.
    pub max_head: usize,
    /// The client speaks HTTP/1.0: a body the instance chunks or delimits
    /// by closing goes to it bare, delimited by the close (it knows no
    /// chunked coding), and a kept-alive answer says `keep-alive`.
    pub http10: bool,
}

/// Why an instance's response cannot be passed on (the client gets 502).
pub type Malformed = &'static str;

/// Parse the response header at the start of `buf` and append what the
/// client gets to `out`: `Ok(None)` while incomplete. An interim (1xx)
/// response goes out as it came (never a cookie); a final one is rewritten
/// per [`response_fields`].
pub fn response_head(
    buf: &[u8],
    adds: &ClientAdds<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, Malformed> {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_RESPONSE_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) if n > adds.max_head => {
            return Err("response header too large (server.max_response_header_bytes)")
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= adds.max_head.min(MAX_RESPONSE_HEAD) => {
            return Err("response header too large (server.max_response_header_bytes)")
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many response header fields"),
        Err(_) => return Err("invalid response header"),
    };
    let status = resp.code.unwrap_or(0);
    if status < 100 {
        return Err("invalid status code");
    }
    let reason = resp.reason.unwrap_or("");
    if status == 101 {
        if !adds.upgrade {
            return Err("101 Switching Protocols without an upgrade");
        }
        interim(status, reason, resp.headers, true, out);
        return Ok(Some(ResponseHead {
            status,
            len,
            body: Body::None,
            reusable: false,
            bare: false,
        }));
    }
    if status < 200 {
        interim(status, reason, resp.headers, false, out);
        return Ok(Some(ResponseHead {
            status,
            len,
            body: Body::None,
            reusable: true,
            bare: false,
        }));
    }
    let (body, reusable) = response_fields(
        &buf[..len],
        status,
        resp.version == Some(1),
        reason,
        resp.headers,
        adds,
        out,
    )?;
    Ok(Some(ResponseHead {
        status,
        len,
        body,
        reusable,
        bare: goes_bare(adds, body),
    }))
}

/// Whether a header has a line ended by a bare LF (httparse takes them, as
/// nginx does): such a header is written anew with CRLFs, never passed on
/// with mixed line ends a client may frame differently.
fn bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// Write an interim (1xx) response for the client, written anew: the
/// status line as HTTP/1.1 and its fields but a `Set-Cookie` (no cookie is
/// set by an answer that is not the answer) and the connection's own
/// fields — which a `101` keeps (`Connection: upgrade` says what it is).
fn interim(
    status: u16,
    reason: &str,
    headers: &[httparse::Header<'_>],
    upgrade: bool,
    out: &mut Vec<u8>,
) {
    let is = |h: &httparse::Header<'_>, n: &str| h.name.eq_ignore_ascii_case(n);
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    for h in headers {
        let hop = is(h, "connection") || is(h, "keep-alive") || is(h, "proxy-connection");
        if is(h, "set-cookie") || (hop && !upgrade) {
            continue;
        }
        field(out, h.name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Write a final response's header for the client: the status line as
/// HTTP/1.1 with the instance's reason, the instance's fields but its
/// hop-by-hop ones (`Connection`, `Keep-Alive`, `Proxy-Connection`), a
/// `Date` if it had none, then the pin cookie, `Transfer-Encoding:
/// chunked` for a body delimited by the close, and `Connection: close`.
/// Returns the body's framing and whether the instance's connection may be
/// reused.
fn response_fields(
    head: &[u8],
    status: u16,
    http11: bool,
    reason: &str,
    headers: &[httparse::Header<'_>],
    adds: &ClientAdds<'_>,
    out: &mut Vec<u8>,
) -> Result<(Body, bool), Malformed> {
    let is = |h: &httparse::Header<'_>, n: &str| h.name.eq_ignore_ascii_case(n);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = http11;
    let mut close = false;
    let mut date = false;
    // two lengths, or a list of one: said once in the client's header
    let mut lengths = 0;
    let mut listed = false;
    for h in headers {
        if is(h, "content-length") {
            lengths += 1;
            listed |= h.value.contains(&b',');
            match (length_list(h.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err("invalid or conflicting Content-Length"),
            }
        } else if is(h, "transfer-encoding") {
            // only chunked as the final coding delimits a body; anything
            // else would leave the body to the close, under a coding the
            // client cannot frame (nginx answers 502 too)
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported Transfer-Encoding");
            }
            chunked = true;
        } else if is(h, "connection") {
            // `close` is final, whatever else is said (RFC 9112 §9.6)
            close |= has_token(h.value, b"close");
            keep_alive |= has_token(h.value, b"keep-alive");
        } else if is(h, "date") {
            date = true;
        }
    }
    let no_body = adds.head_request || status == 204 || status == 304;
    let body = match (no_body, chunked, length) {
        (true, ..) => Body::None,
        (false, true, _) => Body::Chunked,
        (false, false, Some(n)) => Body::Length(n),
        (false, false, None) => Body::UntilClose,
    };
    // both: Transfer-Encoding wins, Content-Length is dropped, and the
    // connection is not trusted again (RFC 9112 §6.3); nor is an HTTP/1.0
    // one that sent Transfer-Encoding at all (§6.1)
    let faulty = chunked && (length.is_some() || !http11);
    let drop_length = chunked || lengths > 1 || listed;
    let reusable = keep_alive && !close && !faulty && body != Body::UntilClose;
    let anew = bare_lf(head);
    let bare = goes_bare(adds, body);

    match headers.first() {
        // an HTTP/1.1 status line as it came
        Some(h) if http11 && !anew => {
            out.extend_from_slice(&head[..offset(head, h.name.as_bytes())])
        }
        _ => {
            // writing to a Vec cannot fail
            let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
        }
    }
    // The connection's own fields stay behind. Fields `Connection` names
    // pass, as pingora-proxy passes them: dropping a nominated
    // `Content-Length` would leave the body unframed.
    let keep = |h: &httparse::Header<'_>| {
        !(is(h, "connection")
            || is(h, "keep-alive")
            || is(h, "proxy-connection")
            || (drop_length && is(h, "content-length"))
            || (bare && is(h, "transfer-encoding")))
    };
    if anew {
        for h in headers.iter().filter(|h| keep(h)) {
            field(out, h.name.as_bytes(), h.value);
        }
    } else {
        copy_fields(head, headers, out, keep);
    }
    if let (false, Some(n)) = (chunked, length.filter(|_| drop_length)) {
        let _ = write!(out, "content-length: {n}\r\n");
    }
    if !date {
        // a proxy with a clock adds one (RFC 9110 §6.6.1); pingora's
        // cached value, formatted once a second
        field(
            out,
            b"date",
            pingora_core::protocols::http::date::get_cached_date().as_bytes(),
        );
    }
    if let Some(c) = adds.cookie {
        field(out, b"set-cookie", c);
    }
    if body == Body::UntilClose && !bare {
        field(out, b"transfer-encoding", b"chunked");
    }
    if adds.close || bare {
        field(out, b"connection", b"close");
    } else if adds.http10 {
        field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    Ok((body, reusable))
}

/// Whether `body` goes to the client bare, delimited by the close: an
/// HTTP/1.0 client reads a body of no known length so.
fn goes_bare(adds: &ClientAdds<'_>, body: Body) -> bool {
    adds.http10 && matches!(body, Body::Chunked | Body::UntilClose)
}

/// A `Content-Length` value, or a list of identical ones (RFC 9110 §8.6).
fn length_list(value: &[u8]) -> Option<u64> {
    let mut values = value
        .split(|&b| b == b',')
        .map(crate::connection::content_length);
    let first = values.next()??;
    values.all(|v| v == Some(first)).then_some(first)
}

/// One chunk of a body the instance delimits by closing, framed for the
/// client (`data` must not be empty: an empty chunk ends the body).
pub fn chunk(data: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!data.is_empty());
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a body framed with [`chunk`].
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str, f: impl FnOnce(&RawRequest<'_, '_>)) {
        let mut headers = headers();
        let req = parse_request(head.as_bytes(), &mut headers).expect("parses");
        f(&req);
    }

    #[test]
    fn a_request_is_read_in_place() {
        let head = "GET /a?x-ms-routing-name=staging&b=1 HTTP/1.1\r\nHost: shop.test\r\n\
                    Cookie: a=1\r\ncookie: b=2\r\nConnection: keep-alive, Close\r\n\r\n";
        parsed(head, |r| {
            assert_eq!(
                (r.method, r.path),
                ("GET", "/a?x-ms-routing-name=staging&b=1")
            );
            assert_eq!(r.host(), b"shop.test");
            assert_eq!(r.query(), Some(&b"x-ms-routing-name=staging&b=1"[..]));
        });
        // a fragment is not part of the query, as `http::Uri` reads it
        parsed("GET /a?q=1#f?x=2 HTTP/1.1\r\nHost: a\r\n\r\n", |r| {
            assert_eq!(r.query(), Some(&b"q=1"[..]));
        });
        parsed(head, |r| {
            let cookies: Vec<_> = r.values("cookie").collect();
            assert_eq!(cookies, [&b"a=1"[..], b"b=2"]);
            assert!(r.wants_close());
        });
        parsed(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            |r| {
                assert!(!r.wants_close());
                assert_eq!(r.query(), None);
            },
        );
        // HTTP/1.0 is written anew as HTTP/1.1 first (`head_rewrite`)
        let mut headers = headers();
        assert!(parse_request(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", &mut headers).is_none());
    }

    #[test]
    fn the_upstream_request_replaces_forwarded_fields_and_drops_hop_by_hop_ones() {
        let head = "GET /p HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive\r\n\
                    Keep-Alive: timeout=5\r\nX-Forwarded-For: 6.6.6.6\r\nX-Slot-Name: evil\r\n\
                    Accept: */*\r\n\r\n";
        let slot = http::HeaderValue::from_static("staging");
        parsed(head, |r| {
            let fwd = Forwarded {
                for_: Some(crate::routing::forwarded::ForwardedFor::Peer(
                    "10.0.0.1".parse().unwrap(),
                )),
                proto: b"http",
                host: Some(b"shop.test"),
                slot: Some(&slot),
            };
            let mut out = Vec::new();
            upstream_request(head.as_bytes(), r, &fwd, false, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "GET /p HTTP/1.1\r\nHost: shop.test\r\nAccept: */*\r\n\
                 x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\n\
                 x-forwarded-host: shop.test\r\nx-slot-name: staging\r\n\r\n"
            );
        });
    }

    fn respond(
        raw: &str,
        adds: ClientAdds<'_>,
    ) -> (Result<Option<ResponseHead>, Malformed>, String) {
        let mut out = Vec::new();
        let r = response_head(raw.as_bytes(), &adds, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    fn plain() -> ClientAdds<'static> {
        ClientAdds {
            cookie: None,
            close: false,
            head_request: false,
            upgrade: false,
            max_head: DEFAULT_MAX_RESPONSE_HEAD,
            http10: false,
        }
    }

    #[test]
    fn a_response_keeps_its_fields_and_gets_the_cookie() {
        let raw = "HTTP/1.1 200 Fine\r\nContent-Length: 5\r\nX-App: 1\r\nDate: then\r\n\
                   Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\nhello";
        let adds = ClientAdds {
            cookie: Some(b"x-ms-routing-name=staging; Path=/"),
            close: true,
            ..plain()
        };
        let (r, out) = respond(raw, adds);
        let head = r.unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.len, raw.len() - 5);
        assert_eq!(head.body, Body::Length(5));
        assert!(head.reusable);
        // a field `Connection` names passes, as on pingora-proxy's path
        assert_eq!(
            out,
            "HTTP/1.1 200 Fine\r\nContent-Length: 5\r\nX-App: 1\r\nDate: then\r\nX-Hop: 1\r\n\
             set-cookie: x-ms-routing-name=staging; Path=/\r\nconnection: close\r\n\r\n"
        );
        // no Date: the proxy adds one
        let (r, out) = respond("HTTP/1.0 204 No Content\r\n\r\n", plain());
        assert_eq!(r.unwrap().unwrap().body, Body::None);
        assert!(
            out.starts_with("HTTP/1.1 204 No Content\r\ndate: "),
            "{out}"
        );
        assert!(out.ends_with(" GMT\r\n\r\n"), "{out}");
        // a nominated framing field still frames: it is never dropped
        let (r, out) = respond(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: content-length\r\n\r\n",
            plain(),
        );
        assert_eq!(r.unwrap().unwrap().body, Body::Length(2));
        assert!(out.contains("Content-Length: 2\r\n"), "{out}");
    }

    #[test]
    fn the_body_framing_follows_rfc_9112() {
        let body = |raw: &str, adds| respond(raw, adds).0.unwrap().unwrap();
        let chunked = body(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            plain(),
        );
        assert_eq!((chunked.body, chunked.reusable), (Body::Chunked, true));
        // both: chunked wins, the length goes, the connection is not reused
        let (r, out) = respond(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            plain(),
        );
        let both = r.unwrap().unwrap();
        assert_eq!((both.body, both.reusable), (Body::Chunked, false));
        assert!(
            !out.to_ascii_lowercase().contains("content-length"),
            "{out}"
        );
        // no length: until the close, sent on chunked, never reused
        let (r, out) = respond(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
            plain(),
        );
        let close = r.unwrap().unwrap();
        assert_eq!((close.body, close.reusable), (Body::UntilClose, false));
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        // HTTP/1.0 keeps its connection only when it says so
        let ka = body(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            plain(),
        );
        assert!(ka.reusable);
        let closing = body(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            plain(),
        );
        assert!(!closing.reusable);
        // close is final, whatever follows it
        for raw in [
            "HTTP/1.1 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            // HTTP/1.0 with Transfer-Encoding: faulty framing (RFC 9112 §6.1)
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(!body(raw, plain()).reusable, "{raw}");
        }
        // a list of one length, as RFC 9110 §8.6 allows
        let listed = body("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n", plain());
        assert_eq!(listed.body, Body::Length(2));
        // no body for HEAD, 204 and 304, whatever the length says
        let head = ClientAdds {
            head_request: true,
            ..plain()
        };
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", head).body,
            Body::None
        );
        assert_eq!(
            body("HTTP/1.1 304 Not Modified\r\n\r\n", plain()).body,
            Body::None
        );
        assert_eq!(
            body("HTTP/1.1 204 No Content\r\n\r\n", plain()).body,
            Body::None
        );
    }

    #[test]
    fn interim_responses_pass_as_they_came_and_bad_ones_are_refused() {
        let raw = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200";
        let adds = ClientAdds {
            cookie: Some(b"c=1"),
            ..plain()
        };
        let (r, out) = respond(raw, adds);
        let head = r.unwrap().unwrap();
        assert_eq!((head.status, head.body), (103, Body::None));
        assert_eq!(
            out,
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        );
        assert_eq!(
            respond("HTTP/1.1 200 OK\r\nContent-Le", plain()).0,
            Ok(None)
        );
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "HTTP/1.1 042 Odd\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n",
        ] {
            assert!(respond(bad, plain()).0.is_err(), "{bad}");
        }
        // a 101 only answers an upgrade, and then goes out as it came
        let ws =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let upgrade = ClientAdds {
            upgrade: true,
            cookie: Some(b"c=1"),
            ..plain()
        };
        let (r, out) = respond(ws, upgrade);
        let head = r.unwrap().unwrap();
        assert_eq!(
            (head.status, head.body, head.reusable),
            (101, Body::None, false)
        );
        assert_eq!(out, ws);
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert!(respond(&huge, plain()).0.is_err());
        // pingora-proxy's limits, not tighter ones: 200 fields pass
        let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{many}\r\n");
        assert!(respond(&raw, plain()).0.unwrap().is_some());
    }

    #[test]
    fn a_close_delimited_body_is_framed_in_chunks() {
        let mut out = Vec::new();
        chunk(&[b'a'; 26], &mut out);
        out.extend_from_slice(LAST_CHUNK);
        let mut c = crate::request_body::ChunkedDecoder::default();
        let mut again = Vec::new();
        assert_eq!(c.decode(&out, &mut again).unwrap(), out.len());
        assert!(c.done());
        assert!(out.starts_with(b"1a\r\n"));
        assert_eq!(again, out);
    }

    #[test]
    fn what_a_client_could_frame_differently_is_written_anew() {
        // bare LFs: the header goes out with CRLFs only
        let raw = "HTTP/1.1 200 OK\nContent-Length: 2\r\nX-App: 1\n\nok";
        let (r, out) = respond(raw, plain());
        assert_eq!(r.unwrap().unwrap().body, Body::Length(2));
        assert!(!bare_lf(out.as_bytes()), "{out:?}");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App: 1\r\n"));
        // a list of one length, or the same length twice: said once
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
        ] {
            let (_, out) = respond(raw, plain());
            assert_eq!(out.matches("ontent-").count(), 1, "{out}");
            assert!(out.contains("content-length: 2\r\n"), "{out}");
        }
        // an interim answer sets no cookie
        let raw = "HTTP/1.1 103 Early Hints\r\nSet-Cookie: a=1\r\nLink: </a>\r\n\r\n";
        let (_, out) = respond(raw, plain());
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        // the response header limit is the config's
        let small = ClientAdds {
            max_head: 1024,
            ..plain()
        };
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(1100));
        assert!(respond(&big, plain()).0.unwrap().is_some());
        assert!(respond(&big, small).0.is_err());
        let partial = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(1100));
        assert!(respond(
            &partial,
            ClientAdds {
                max_head: 1024,
                ..plain()
            }
        )
        .0
        .is_err());
    }
}
