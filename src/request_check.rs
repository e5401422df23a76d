//! What an HTTP/1 request header must be before anything of it goes to an
//! app (docs/reference/limits.md): the inputs nginx refuses, refused here too, with
//! one line saying what was wrong (issue 26).
//!
//! A proxy that forwards what its app may read differently is the start of
//! request smuggling and of forged fields; so is one that "repairs" input
//! (a Unicode trim of a length, a space percent-encoded into the path).
//! Refused, on every request path, before routing:
//!
//! - a method that is not 1–32 upper-case letters (or `-`, `_`), as nginx;
//! - a target that is not a path (`/…`), `*` for OPTIONS, or an
//!   absolute `http://`/`https://` URI — and `https://` only over TLS, so
//!   an app never reads "https" off a plain connection;
//! - HTTP/1.1 without a `Host`, more than one `Host`, or a `Host` with
//!   characters no host name has (RFC 9112 §3.2);
//! - `Content-Length` that is not digits alone (no sign, no list, no
//!   Unicode space), repeated (even with the same value), over 2^63−1, or
//!   beside `Transfer-Encoding` (RFC 9112 §6.3: "ought to be handled as
//!   an error"; nginx answers 400);
//! - `Transfer-Encoding` twice, in an HTTP/1.0 request, or other than the
//!   one coding `chunked` (501, RFC 9112 §6.1: not implemented).
//!
//! Field names with `_` are not refused but dropped before the request
//! goes on (nginx's `underscores_in_headers off`): an app that maps `-` to
//! `_` (CGI, WSGI, Rack) would read `X_Forwarded_For` as the forwarded
//! field the proxy wrote. See [`drops_field`].

use std::sync::atomic::{AtomicBool, Ordering};

/// Why a request is refused: its status and one line for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub why: &'static str,
}

const fn bad(why: &'static str) -> Refused {
    Refused { status: 400, why }
}

/// Longest method taken (nginx's longest known is 9; extension methods
/// such as `PROPPATCH` or `MKCALENDAR` fit).
const MAX_METHOD: usize = 32;

/// Check the parsed request `req`, which came over TLS if `tls`.
pub fn check(req: &httparse::Request<'_, '_>, tls: bool) -> Result<(), Refused> {
    let method = req.method.unwrap_or("");
    if method.is_empty()
        || method.len() > MAX_METHOD
        || !method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return Err(bad(
            "400 Bad Request: the method must be upper-case letters (GET, POST, …)",
        ));
    }
    let target = req.path.unwrap_or("");
    if method != "CONNECT" {
        check_target(method, target, tls)?;
    }
    let http11 = req.version == Some(1);
    let mut hosts = 0;
    let mut lengths = 0;
    let mut codings = 0;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !h.value.iter().all(|&b| host_byte(b)) {
                return Err(bad(
                    "400 Bad Request: the Host field has characters no host name has",
                ));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            if crate::connection::content_length(h.value).is_none() {
                return Err(bad(
                    "400 Bad Request: Content-Length must be digits alone, at most 2^63-1",
                ));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            if !ows_trim(h.value).eq_ignore_ascii_case(b"chunked") {
                return Err(Refused {
                    status: 501,
                    why: "501 Not Implemented: the only Transfer-Encoding taken is chunked",
                });
            }
        }
    }
    if hosts > 1 {
        return Err(bad(
            "400 Bad Request: the request has more than one Host field; send one",
        ));
    }
    if hosts == 0 && http11 {
        return Err(bad(
            "400 Bad Request: an HTTP/1.1 request must have a Host field",
        ));
    }
    if lengths > 1 {
        return Err(bad("400 Bad Request: more than one Content-Length field"));
    }
    if codings > 1 {
        return Err(bad(
            "400 Bad Request: more than one Transfer-Encoding field",
        ));
    }
    if codings > 0 && lengths > 0 {
        return Err(bad(
            "400 Bad Request: both Transfer-Encoding and Content-Length; send one",
        ));
    }
    if codings > 0 && !http11 {
        return Err(bad(
            "400 Bad Request: Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    Ok(())
}

fn check_target(method: &str, target: &str, tls: bool) -> Result<(), Refused> {
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok(());
    }
    let scheme = target.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") => Ok(()),
        Some(s) if s.eq_ignore_ascii_case("https") && tls => Ok(()),
        Some(s) if s.eq_ignore_ascii_case("https") => Err(bad(
            "400 Bad Request: an https:// target on a connection without TLS",
        )),
        _ => Err(bad(
            "400 Bad Request: the request target must be a path (/…)",
        )),
    }
}

/// A byte a Host value may hold: a registered name, an IPv4 or a
/// bracketed IPv6 address, and a port (RFC 3986 §3.2.2).
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".-_~:[]%!$&'()*+,;=".contains(&b)
}

/// A field value without the optional whitespace (SP, HTAB) around it —
/// no other space: a Unicode one is part of the value.
pub fn ows_trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t');
    let Some(start) = start else {
        return &[];
    };
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .unwrap_or(start);
    &v[start..=end]
}

/// `[server] underscores_in_headers`, set once at start (the access log's
/// format is held the same way): one process, one setting.
static UNDERSCORES_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Pass field names with `_` on (`true`), or drop them (the default).
pub fn allow_underscores(allowed: bool) {
    UNDERSCORES_ALLOWED.store(allowed, Ordering::Relaxed);
}

/// Whether a request field named `name` is dropped before the request goes
/// to the app: a name with `_`, unless `underscores_in_headers` is on.
pub fn drops_field(name: &str) -> bool {
    name.as_bytes().contains(&b'_') && !UNDERSCORES_ALLOWED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(head: &str, tls: bool) -> Result<(), Refused> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head.as_bytes()).expect("parses");
        check(&req, tls)
    }

    fn status(head: &str) -> u16 {
        judge(head, false).err().map_or(200, |r| r.status)
    }

    #[test]
    fn ordinary_requests_pass() {
        for ok in [
            "GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n",
            "POST /a?b=c HTTP/1.1\r\nHost: shop.test:8080\r\nContent-Length: 12\r\n\r\n",
            "PUT /x HTTP/1.1\r\nHost: [::1]:80\r\nTransfer-Encoding: Chunked\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://shop.test/ HTTP/1.1\r\nHost: shop.test\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "PROPPATCH /d HTTP/1.1\r\nHost: a\r\nContent-Length:  0 \r\n\r\n",
        ] {
            assert_eq!(status(ok), 200, "{ok}");
        }
        assert_eq!(
            judge(
                "GET https://shop.test/ HTTP/1.1\r\nHost: shop.test\r\n\r\n",
                true
            ),
            Ok(())
        );
    }

    #[test]
    fn what_nginx_refuses_is_refused() {
        for (head, want) in [
            ("get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (&*format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "A".repeat(20_000)), 400),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ] {
            assert_eq!(status(head), want, "{head:.80}");
        }
    }

    #[test]
    fn a_length_is_ascii_digits_with_no_unicode_space() {
        for v in ["0\u{a0}", "0\u{85}", "\u{2003}0"] {
            let head = format!("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n");
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut req = httparse::Request::new(&mut headers);
            // httparse takes these bytes in a value; the check must not
            if req.parse(head.as_bytes()).is_ok() {
                assert_eq!(check(&req, false).unwrap_err().status, 400, "{v:?}");
            }
        }
        assert_eq!(ows_trim(b" \t5\t "), b"5");
        assert_eq!(ows_trim(b"  "), b"");
    }

    #[test]
    fn underscored_names_are_dropped() {
        assert!(drops_field("X_Forwarded_For"));
        assert!(drops_field("Transfer_Encoding"));
        assert!(!drops_field("X-Forwarded-For"));
    }
}
