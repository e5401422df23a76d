//! A request header the lean path would not take as it came, written anew
//! in the one form it takes (`connection::Plain`), so that one request
//! engine serves every HTTP/1 request (issue 22).
//!
//! Most requests are plain and never come here: this is the rare path,
//! and it favours being obviously right over being fast (one parse, one
//! new header). What it does, as nginx and HAProxy do:
//!
//! - **HTTP/1.0**: the request goes to the instance as HTTP/1.1 (the pooled
//!   connection's own version), with `Connection: close` unless the client
//!   asked for `keep-alive`; [`Rewritten::http10`] tells the response side
//!   to answer as HTTP/1.0 allows (no chunked body, no interim answer).
//!   `Expect` is dropped (RFC 9110 §10.1.1: ignored in HTTP/1.0).
//! - **absolute-form** (`GET http://host/path`): the target's authority
//!   becomes the `Host` (RFC 9112 §3.2.2: the received `Host` is ignored)
//!   and the target its path.
//! - **bare-LF lines**: written with CRLF (a strict app parser refuses a
//!   bare LF, and mixed line ends are how two parsers come to disagree).
//! - **hop-by-hop fields** (RFC 9110 §7.6.1): the fields `Connection` names
//!   (but the body's framing, which stays: [`keeps_when_named`]),
//!   `TE`, `Trailer`, `Proxy-Connection`, `Proxy-Authorization` (credentials
//!   for the proxy, which takes none), `HTTP2-Settings`; `Connection` is
//!   written anew with what the lean path acts on (`close`, `upgrade`).
//! - **upgrades the lean path does not tunnel**: `Upgrade: h2c` (served
//!   as HTTP/1.1, as nginx does), and an `Upgrade` without its
//!   `Connection: upgrade` token, with a body, or in HTTP/1.0: the
//!   `Upgrade` field is dropped and the request served as it is.
//!
//! What is refused, with one line for the client: `CONNECT` (405: a
//! reverse proxy opens no tunnels to where a client says), more than
//! [`crate::connection::MAX_HEADERS`] fields (431, as HAProxy refuses more
//! than 101), an expectation other than `100-continue` (417), a target
//! with user information (400), and whatever `request_check` refuses.

use crate::connection::MAX_HEADERS;
use crate::request_check::Refused;

/// A request header written anew (see the module's comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The whole header, ending in its blank line.
    pub head: Vec<u8>,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
}

const fn refused(status: u16, why: &'static str) -> Refused {
    Refused { status, why }
}

/// Fields that never go on as they came (besides those `Connection`
/// names): the connection's own, and `Host` (written anew).
const DROPPED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "http2-settings",
    "host",
];

/// Write the complete request header `head` (which came over TLS if
/// `tls`) in the lean path's form, or say why it is refused.
pub fn rewrite(head: &[u8], tls: bool) -> Result<Rewritten, Refused> {
    // room for every line, so a header with many fields is parsed whole
    // and refused for its count, not misread
    let lines = memchr::memchr_iter(b'\n', head).count();
    let mut fields = vec![httparse::EMPTY_HEADER; lines.max(1)];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(refused(
                400,
                "400 Bad Request: the request header is malformed",
            ))
        }
    }
    if req.headers.len() > MAX_HEADERS {
        return Err(refused(
            431,
            "431 Request Header Fields Too Large: more than 128 header fields",
        ));
    }
    crate::request_check::check(&req, tls)?;
    let method = req.method.unwrap_or("GET");
    if method == "CONNECT" {
        return Err(refused(
            405,
            "405 Method Not Allowed: CONNECT is not served here (a reverse proxy opens no tunnels)",
        ));
    }
    let http10 = req.version == Some(0);
    let (authority, path) = target(req.path.unwrap_or("/"))?;
    let headers = &*req.headers;
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let tokens: Vec<&[u8]> = values("connection")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    let said = |t: &str| tokens.iter().any(|x| x.eq_ignore_ascii_case(t.as_bytes()));
    let has_body = values("transfer-encoding").next().is_some()
        || values("content-length")
            .any(|v| crate::connection::content_length(v).is_some_and(|n| n > 0));
    let upgrades: Vec<&[u8]> = values("upgrade").collect();
    let upgrade = !http10
        && said("upgrade")
        && !has_body
        && upgrades.len() == 1
        && !upgrades[0]
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    let expects: Vec<&[u8]> = values("expect").collect();
    let expect = !http10 && !expects.is_empty();
    if expect
        && (expects.len() > 1
            || !crate::request_check::ows_trim(expects[0]).eq_ignore_ascii_case(b"100-continue"))
    {
        return Err(refused(
            417,
            "417 Expectation Failed: the only expectation taken is 100-continue",
        ));
    }
    let close = said("close") || (http10 && !said("keep-alive"));

    let mut out = Vec::with_capacity(head.len() + 32);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = match authority {
        Some(a) => Some(a.as_bytes()),
        None => values("host").next(),
    };
    // an HTTP/1.0 request may have none: an empty one routes as unknown
    crate::h1::field(&mut out, b"host", host.unwrap_or(b""));
    for h in headers {
        let name = h.name;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let dropped = DROPPED.iter().any(|d| is(d))
            || (is("upgrade") && !upgrade)
            || (is("expect") && !expect)
            || (!keeps_when_named(name)
                && tokens
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(name.as_bytes())));
        if !dropped {
            crate::h1::field(&mut out, name.as_bytes(), h.value);
        }
    }
    if close {
        crate::h1::field(&mut out, b"connection", b"close");
    } else if upgrade {
        crate::h1::field(&mut out, b"connection", b"upgrade");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Rewritten { head: out, http10 })
}

/// Fields that stay though `Connection` names them: the body's framing (a
/// nominated `Content-Length` dropped would leave the body's bytes to be
/// read as the next request), and `Upgrade`, which the upgrade decision
/// above keeps or drops.
fn keeps_when_named(name: &str) -> bool {
    ["content-length", "transfer-encoding", "upgrade"]
        .iter()
        .any(|k| name.eq_ignore_ascii_case(k))
}

/// The authority (for an absolute-form target) and the path the instance
/// gets: origin-form and `*` as they came.
fn target(t: &str) -> Result<(Option<&str>, String), Refused> {
    if t.starts_with('/') || t == "*" {
        return Ok((None, t.to_string()));
    }
    // `request_check` took only http:// and (over TLS) https:// besides
    let rest = t.split_once("://").map_or(t, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(refused(
            400,
            "400 Bad Request: an absolute target needs a host and no user information",
        ));
    }
    let path = match path.split_once('#').map_or(path, |(p, _)| p) {
        "" => "/".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    Ok((Some(authority), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anew(head: &str) -> String {
        let r = rewrite(head.as_bytes(), false).unwrap_or_else(|e| panic!("{head:?}: {e:?}"));
        String::from_utf8(r.head).unwrap()
    }

    fn status(head: &str) -> u16 {
        rewrite(head.as_bytes(), false).map_or_else(|e| e.status, |_| 200)
    }

    #[test]
    fn http10_goes_on_as_http11_closing_unless_kept_alive() {
        let r = rewrite(b"GET /a HTTP/1.0\r\nHost: s\r\n\r\n", false).unwrap();
        assert!(r.http10);
        assert_eq!(
            String::from_utf8(r.head).unwrap(),
            "GET /a HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            anew("GET / HTTP/1.0\r\nHost: s\r\nConnection: Keep-Alive\r\nExpect: 100-continue\r\n\r\n"),
            "GET / HTTP/1.1\r\nhost: s\r\n\r\n"
        );
        // no Host at all: an empty one, which routes as an unknown host
        assert_eq!(
            anew("GET / HTTP/1.0\r\n\r\n"),
            "GET / HTTP/1.1\r\nhost: \r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn an_absolute_target_gives_its_host_and_path() {
        assert_eq!(
            anew("GET http://shop.test:8080/a?b=1 HTTP/1.1\r\nHost: other\r\nX: 1\r\n\r\n"),
            "GET /a?b=1 HTTP/1.1\r\nhost: shop.test:8080\r\nX: 1\r\n\r\n"
        );
        assert_eq!(
            anew("GET HTTP://shop.test?q HTTP/1.1\r\nHost: s\r\n\r\n"),
            "GET /?q HTTP/1.1\r\nhost: shop.test\r\n\r\n"
        );
        assert_eq!(
            anew("GET http://shop.test HTTP/1.1\r\nHost: s\r\n\r\n"),
            "GET / HTTP/1.1\r\nhost: shop.test\r\n\r\n"
        );
        assert_eq!(
            status("GET http://u@shop.test/ HTTP/1.1\r\nHost: s\r\n\r\n"),
            400
        );
        assert_eq!(status("GET http:///a HTTP/1.1\r\nHost: s\r\n\r\n"), 400);
    }

    #[test]
    fn hop_by_hop_fields_stay_behind() {
        assert_eq!(
            anew(
                "GET / HTTP/1.1\nHost: s\nConnection: keep-alive, X-Secret\nX-Secret: 1\n\
                 TE: trailers\nProxy-Connection: keep-alive\nProxy-Authorization: b\nX: 2\n\n"
            ),
            "GET / HTTP/1.1\r\nhost: s\r\nX: 2\r\n\r\n"
        );
        // an h2c upgrade is served as HTTP/1.1
        assert_eq!(
            anew(
                "GET / HTTP/1.1\r\nHost: s\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                 Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
            ),
            "GET / HTTP/1.1\r\nhost: s\r\n\r\n"
        );
        // an upgrade without its token, or with a body, is no upgrade
        assert_eq!(
            anew("GET / HTTP/1.1\r\nHost: s\r\nUpgrade: websocket\r\n\r\n"),
            "GET / HTTP/1.1\r\nhost: s\r\n\r\n"
        );
        assert_eq!(
            anew("POST / HTTP/1.1\r\nHost: s\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\n"),
            "POST / HTTP/1.1\r\nhost: s\r\nContent-Length: 1\r\n\r\n"
        );
        // a WebSocket upgrade beside another token keeps its upgrade
        assert_eq!(
            anew("GET / HTTP/1.1\r\nHost: s\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "GET / HTTP/1.1\r\nhost: s\r\nUpgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn a_framing_field_named_by_connection_stays() {
        assert_eq!(
            anew("POST / HTTP/1.1\r\nHost: s\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n"),
            "POST / HTTP/1.1\r\nhost: s\r\nContent-Length: 5\r\n\r\n"
        );
        assert_eq!(
            anew("POST / HTTP/1.1\r\nHost: s\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "POST / HTTP/1.1\r\nhost: s\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn what_is_not_served_is_refused() {
        assert_eq!(status("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), 405);
        assert_eq!(
            status("PUT / HTTP/1.1\r\nHost: s\r\nExpect: something-else\r\n\r\n"),
            417
        );
        let many: String = (0..129).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: s\r\n{many}\r\n")),
            431
        );
        let fits: String = (0..127).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: s\r\n{fits}\r\n")),
            200
        );
        // what request_check refuses, refused here too
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn what_comes_out_is_plain() {
        for head in [
            "GET http://s/a HTTP/1.1\r\nHost: s\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: s\r\nConnection: keep-alive\r\n\r\n",
            "POST / HTTP/1.1\nHost: s\nContent-Length: 3\nTE: trailers\n\n",
            "OPTIONS * HTTP/1.1\r\nHost: s\r\n\r\n",
        ] {
            let r = rewrite(head.as_bytes(), false).unwrap();
            let seen = crate::connection::inspect(&r.head);
            assert!(
                seen.plain.is_some(),
                "{head:?} -> {:?}",
                String::from_utf8(r.head)
            );
        }
    }
}
