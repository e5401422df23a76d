//! An HTTP/1 client's request to an h2c or h2 (TLS) instance — an app that
//! speaks only HTTP/2, a gRPC server's HTTP/1 health page — served by the
//! lean path (`lean`) like any other HTTP/1 request: routed, pinned,
//! counted and logged there, then carried here over the instance's shared
//! HTTP/2 connection (`h2_upstream`, the one HTTP/2 clients use too).
//!
//! The request goes on as HTTP/2 parts ([`parts`]): method, target, the
//! client's fields but the connection's own; its body as DATA frames while
//! the instance is watched for an early answer (as `lean` does), with the
//! same body time-out, minimum rate and 408s. `Expect: 100-continue` is
//! answered here with a `100` (HTTP/2 has no such exchange to pass on).
//! The answer comes back as HTTP/1.1: its `content-length` when the
//! instance gave one, else chunked with the instance's trailers in the
//! trailer section — or, to an HTTP/1.0 client, bare to the close.

use super::h2_exchange::send_all;
use super::h2_upstream::{self, Opened};
use crate::h1::{self, ClientAdds, RawRequest};
use crate::lean::{self, Client, Failed, Lean};
use crate::proxy::RequestCtx;
use crate::request_body::{BodyIn, Pace};
use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Response};
use pingora_error::{Error, ErrorType};
use std::io::Write;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// The client's request as HTTP/2 parts: method, origin-form target, and
/// its fields but those of the HTTP/1 connection (`h2_upstream` drops the
/// rest of what does not cross a hop, and adds the forwarded fields).
/// `None`: a field HTTP/2 cannot carry.
pub fn parts(req: &RawRequest<'_, '_>) -> Option<http::request::Parts> {
    let r = http::Request::builder()
        .method(req.method)
        .uri(req.path)
        .body(())
        .ok()?;
    let (mut parts, ()) = r.into_parts();
    for h in req.headers {
        if crate::request_check::drops_field(h.name) {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        // answered here (`100`), or the HTTP/1 connection's own
        if matches!(name.as_str(), "expect" | "transfer-encoding" | "upgrade") {
            continue;
        }
        parts
            .headers
            .append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(parts)
}

fn upstream_error(etype: ErrorType, why: &'static str) -> Box<Error> {
    Error::explain(etype, why).into_up()
}

/// Forward the routed request to its slot's HTTP/2 instance and the
/// answer back. `first`: the body bytes that came with the header
/// (decoded); `adds`: what the client's answer gets (cookie, close).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward(
    lean: &Lean,
    client: &mut Client<'_>,
    parts: &http::request::Parts,
    body: &mut BodyIn,
    first: &[u8],
    adds: &ClientAdds<'_>,
    expect_continue: bool,
    ctx: &mut RequestCtx,
) -> Result<(), Failed> {
    let end = body.done() && first.is_empty();
    let (response, mut up, read_timeout) = match h2_upstream::open(lean, parts, ctx, end).await? {
        Opened::Answered(resp, read_timeout) => {
            return relay(client, resp, adds, false, read_timeout).await
        }
        Opened::Streaming(response, up, read_timeout) => (response, up, read_timeout),
    };
    tokio::pin!(response);
    if expect_continue && !adds.http10 {
        client.send(b"HTTP/1.1 100 Continue\r\n\r\n", 0).await?;
    }
    let wait = lean.body_timeout.min(read_timeout);
    let answered = pump(lean, client, body, first, &mut up, &mut response, wait).await?;
    let resp = match answered {
        Some(r) => r,
        None => match tokio::time::timeout(read_timeout, &mut response).await {
            Ok(r) => r,
            Err(_) => {
                return Err(Failed::Early(upstream_error(
                    ErrorType::ReadTimedout,
                    "no response within the read time-out",
                )))
            }
        },
    };
    let resp = resp.map_err(|_| h2_upstream::reset_before_answer())?;
    relay(client, resp, adds, !body.done(), read_timeout).await
}

/// The body, as it comes from the client, to the instance, until it is
/// done or the instance answers (`Some`: that answer, the body unfinished).
async fn pump(
    lean: &Lean,
    client: &mut Client<'_>,
    body: &mut BodyIn,
    first: &[u8],
    up: &mut SendStream<Bytes>,
    response: &mut std::pin::Pin<&mut ResponseFuture>,
    wait: Duration,
) -> Result<Option<Result<Response<RecvStream>, h2::Error>>, Failed> {
    if send_all(up, Bytes::copy_from_slice(first), body.done(), wait)
        .await
        .is_err()
    {
        return Ok(None);
    }
    let mut chunk = vec![0u8; 16 * 1024];
    let mut data = Vec::with_capacity(chunk.len());
    let mut pace = Pace::new(lean.body_min_rate);
    while !body.done() {
        let allowance = pace.allowance().filter(|a| *a < wait);
        let began = Instant::now();
        let conn = &mut *client.conn;
        let step = tokio::time::timeout(allowance.unwrap_or(wait), async {
            tokio::select! {
                r = conn.read(&mut chunk) => Ok(r),
                r = &mut *response => Err(r),
            }
        })
        .await;
        let n = match step {
            Err(_) if allowance.is_some() => return Err(Failed::Early(lean::body_too_slow())),
            Err(_) => return Err(Failed::Early(lean::body_stalled())),
            Ok(Err(answer)) => return Ok(Some(answer)),
            Ok(Ok(Ok(n))) if n > 0 => n,
            Ok(Ok(_)) => return Err(Failed::Early(lean::body_cut())),
        };
        pace.record(began.elapsed(), n);
        data.clear();
        let used = body
            .take(&chunk[..n], &mut data)
            .map_err(|why| Failed::Early(lean::body_malformed(why)))?;
        if used < n {
            lean::body_ended(client.conn, &chunk[..n], used);
        }
        body.streamed = true;
        let sent = send_all(up, Bytes::copy_from_slice(&data), body.done(), wait).await;
        if sent.is_err() {
            // the instance stopped taking the body: its answer is next
            return Ok(None);
        }
    }
    Ok(None)
}

/// How the answer's body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    /// The instance's `content-length` (or 0 for an empty stream).
    Length,
    Chunked,
    /// To an HTTP/1.0 client: the bytes as they come, then the close.
    Bare,
}

/// The answer's HTTP/1.1 header for the client, and its body's framing:
/// the instance's fields but the connection's own, a `date`, the pin
/// cookie, the framing, and `connection` as `adds` and the HTTP/1.0
/// client need. `unread`: the request's body was not all read (close).
fn client_head(
    resp: &Response<RecvStream>,
    adds: &ClientAdds<'_>,
    unread: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = resp.status();
    let h = resp.headers();
    let no_body =
        adds.head_request || status.is_informational() || status.as_u16() == 204 || status == 304;
    let length = h.contains_key(http::header::CONTENT_LENGTH);
    let framing = match (no_body, length || resp.body().is_end_stream()) {
        (true, _) => Framing::None,
        (false, true) => Framing::Length,
        (false, false) if adds.http10 => Framing::Bare,
        (false, false) => Framing::Chunked,
    };
    let close = adds.close || unread || framing == Framing::Bare;
    let reason = status.canonical_reason().unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", status.as_u16());
    for (name, value) in h {
        if matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
        ) {
            continue;
        }
        h1::field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !h.contains_key(http::header::DATE) {
        h1::field(
            out,
            b"date",
            pingora_core::protocols::http::date::get_cached_date().as_bytes(),
        );
    }
    if let Some(c) = adds.cookie {
        h1::field(out, b"set-cookie", c);
    }
    match framing {
        Framing::Length if !length => h1::field(out, b"content-length", b"0"),
        Framing::Chunked => h1::field(out, b"transfer-encoding", b"chunked"),
        _ => {}
    }
    if close {
        h1::field(out, b"connection", b"close");
    } else if adds.http10 {
        h1::field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    (framing, close)
}

/// The instance's answer to the client: head, body as it comes, and its
/// trailers (in a chunked trailer section).
async fn relay(
    client: &mut Client<'_>,
    resp: Response<RecvStream>,
    adds: &ClientAdds<'_>,
    unread: bool,
    read_timeout: Duration,
) -> Result<(), Failed> {
    let mut out = Vec::with_capacity(512);
    let (framing, close) = client_head(&resp, adds, unread, &mut out);
    client.send(&out, 0).await?;
    client.sent.status = Some(resp.status().as_u16());
    client.sent.close = close;
    if framing == Framing::None {
        return Ok(());
    }
    let mut body = resp.into_body();
    let late = |etype, why| Failed::Late(Some(upstream_error(etype, why)));
    loop {
        match tokio::time::timeout(read_timeout, body.data()).await {
            Ok(Some(Ok(data))) => {
                let n = data.len();
                let _ = body.flow_control().release_capacity(n);
                if n == 0 {
                    continue;
                }
                if framing == Framing::Chunked {
                    out.clear();
                    h1::chunk(&data, &mut out);
                    client.send(&out, n).await?;
                } else {
                    client.send(&data, n).await?;
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(late(ErrorType::ReadError, "the instance reset the stream"))
            }
            Err(_) => {
                return Err(late(
                    ErrorType::ReadTimedout,
                    "no response within the read time-out",
                ))
            }
        }
    }
    if framing != Framing::Chunked {
        return Ok(());
    }
    let trailers = match tokio::time::timeout(read_timeout, body.trailers()).await {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => return Err(late(ErrorType::ReadError, "the instance reset the stream")),
        Err(_) => {
            return Err(late(
                ErrorType::ReadTimedout,
                "no trailers within the read time-out",
            ))
        }
    };
    out.clear();
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.iter().flatten() {
        h1::field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    client.send(&out, 0).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_keeps_its_fields_but_the_connections_own() {
        let head = b"POST /api?x=1 HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/grpc\r\n\
                     Expect: 100-continue\r\nTransfer-Encoding: chunked\r\nX_Under: 1\r\nTE: trailers\r\n\r\n";
        let mut headers = h1::headers();
        let req = h1::parse_request(head, &mut headers).unwrap();
        let p = parts(&req).unwrap();
        assert_eq!(p.method, http::Method::POST);
        assert_eq!(p.uri, "/api?x=1");
        let names: Vec<&str> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "content-type", "te"]);
    }
}
