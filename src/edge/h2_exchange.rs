//! One HTTP/2 stream as one request (`edge`): routed with
//! `proxy::route_request` as an HTTP/1 request is, answered locally (404,
//! 403, 503, 414, 502, 504, 408) in plain text or, for a gRPC request, in
//! gRPC's Trailers-Only form, else forwarded to the slot's instance
//! (`h2_h1` for HTTP/1 instances, `h2_upstream` for h2c / h2 ones), then
//! counted and logged with `proxy::log_request`.
//!
//! Trailers-Only (gRPC's PROTOCOL-HTTP2.md): a single HEADERS frame with
//! `:status 200`, `content-type: application/grpc`, `grpc-status` and
//! `grpc-message`, and END_STREAM on it — no DATA frame, no RST_STREAM — so
//! a gRPC client reads UNAVAILABLE or NOT_FOUND and its retry policy runs.
//!
//! Also here: the flow-controlled write of a body to an `h2` send stream,
//! which both forwarders use.

use super::h2::ConnInfo;
use super::H2Front;
use crate::proxy::{
    bad_gateway_message, failure_status, log_request, route_request, status_line, Finished,
    RequestCtx, LOCAL_FIELDS,
};
use crate::routing::RequestView;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderValue, Method, Request, Response};
use std::sync::Arc;
use std::time::Duration;

/// How a forwarded request ended short of success: the one kind of every
/// path (`lean`); `Late` resets the stream here.
pub(crate) use crate::lean::Failed;

/// What went out to the client.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub status: Option<u16>,
    /// Response body bytes.
    pub bytes: usize,
}

/// The request as the forwarders get it.
pub(crate) struct Incoming {
    pub parts: http::request::Parts,
    pub body: RecvStream,
    pub grpc: bool,
    pub head_request: bool,
    /// A copy for the slot's shadow, watching the answer (`shadow`).
    pub shadow: Option<Box<crate::shadow::Tap>>,
}

/// The most of a request body read and dropped after a local answer, so
/// the stream ends cleanly rather than with a reset the client may take
/// for a failure.
const DISCARD_LIMIT: usize = 1024 * 1024;
const DISCARD_WAIT: Duration = Duration::from_secs(1);

/// Serve one stream to its end.
pub(crate) fn spawn(
    front: Arc<H2Front>,
    conn: ConnInfo,
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    // The stream's state (~11 KiB: routing context, the exchange, its
    // time-outs) is put on the heap once, here; the task holds only the
    // box. Spawned as it is, tokio moved the whole future through its
    // layers by value: memmove was a quarter of the HTTP/2 path's CPU.
    tokio::spawn(Box::pin(serve(front, conn, req, respond)));
}

/// One stream as one request, to its end (see [`spawn`]).
async fn serve(
    front: Arc<H2Front>,
    conn: ConnInfo,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (parts, body) = req.into_parts();
    let grpc = crate::grpc::is_grpc(
        parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes),
    );
    let mut inc = Incoming {
        head_request: parts.method == Method::HEAD,
        parts,
        body,
        grpc,
        shadow: None,
    };
    let mut ctx = RequestCtx::default();
    let mut sent = Sent::default();
    let outcome =
        route_and_forward(&front, conn, &mut inc, &mut respond, &mut ctx, &mut sent).await;
    let finished = outcome.is_ok();
    let what = || format!("{} {}", inc.parts.method, inc.parts.uri);
    match outcome {
        Err(Failed::Early(e)) => {
            // as pingora-proxy logs what it could not proxy
            if e.esource() == &pingora_error::ErrorSource::Upstream {
                log::warn!("HTTP/2 request {} failed: {e}", what());
            }
            let code = failure_status(&e, inc.body.is_end_stream(), &ctx);
            let message = match code {
                0 => None,
                502 => Some(bad_gateway_message(&ctx)),
                408 => Some(crate::lean::body_timeout_message(&e)),
                _ => Some(status_line(code)),
            };
            if let Some(m) = message {
                answer_locally(&mut respond, &mut inc, &mut ctx, code, &m, &mut sent).await;
            }
        }
        Err(Failed::Late(e)) => {
            if let Some(e) = e {
                log::warn!("HTTP/2 request {} cut short: {e}", what());
                failure_status(&e, true, &ctx);
            }
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
        Ok(()) => {}
    }
    let parts = &inc.parts;
    log_request(
        Finished {
            method: parts.method.as_str(),
            path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            host: RequestView::host(parts),
            version: http::Version::HTTP_2,
            status: sent.status,
            bytes: sent.bytes,
            peer: conn.peer_ip,
        },
        &ctx,
    );
    let whole = finished && inc.body.is_end_stream();
    crate::shadow::complete(inc.shadow.take(), whole);
    // a body nobody read: taken and dropped (bounded), so the stream ends
    // cleanly rather than with a reset the client may take for a failure
    if !inc.body.is_end_stream() {
        discard(&mut inc.body).await;
    }
}

async fn route_and_forward(
    front: &H2Front,
    conn: ConnInfo,
    inc: &mut Incoming,
    respond: &mut SendResponse<Bytes>,
    ctx: &mut RequestCtx,
    sent: &mut Sent,
) -> Result<(), Failed> {
    let path_len = inc
        .parts
        .uri
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if path_len > front.settings.max_uri_bytes {
        let msg = crate::limits::uri_too_long(front.settings.max_uri_bytes);
        answer_locally(respond, inc, ctx, 414, &msg, sent).await;
        return Ok(());
    }
    let table = front.lean.table.load_full();
    if let Some((code, msg)) = route_request(table, &inc.parts, conn.peer_ip, conn.tls_here, ctx) {
        answer_locally(respond, inc, ctx, code, &msg, sent).await;
        return Ok(());
    }
    let protocol = ctx
        .slot()
        .and_then(|s| s.pool.as_ref())
        .map(|p| p.probe.protocol);
    match protocol {
        Some(crate::model::InstancesProtocol::Http1) | None => {
            // shadow traffic (SPEC §15): one branch for a site without one
            let target = inc.parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let method = inc.parts.method.as_str();
            inc.shadow = crate::shadow::offer(ctx, &inc.parts, method, target, false);
            super::h2_h1::forward(front, inc, respond, ctx, sent).await
        }
        Some(_) => super::h2_upstream::forward(front, inc, respond, ctx, sent).await,
    }
}

/// The Trailers-Only answer to a gRPC request the proxy answers itself
/// (`status` is the HTTP status it stands for).
pub(crate) fn grpc_answer(status: u16, message: &str) -> Response<()> {
    let mut resp = Response::new(());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        "grpc-status",
        HeaderValue::from(u16::from(crate::grpc::status_for(status))),
    );
    if let Ok(v) = HeaderValue::from_str(&crate::grpc::message(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// A plain-text local answer's header (its body is `message` and a LF).
pub(crate) fn text_answer(status: u16, message: &str) -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    for (name, value) in LOCAL_FIELDS {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(message.len() + 1),
    );
    date(h);
    resp
}

/// Add a `Date` field if there is none (RFC 9110 §6.6.1), pingora's
/// cached one.
pub(crate) fn date(h: &mut http::HeaderMap) {
    if !h.contains_key(http::header::DATE) {
        h.insert(
            http::header::DATE,
            pingora_core::protocols::http::date::get_cached_date(),
        );
    }
}

/// Answer locally: plain text, or Trailers-Only to a gRPC request (what
/// is left of the request body is dropped once the request is logged).
pub(crate) async fn answer_locally(
    respond: &mut SendResponse<Bytes>,
    inc: &mut Incoming,
    ctx: &mut RequestCtx,
    status: u16,
    message: &str,
    sent: &mut Sent,
) {
    if inc.grpc {
        if respond
            .send_response(grpc_answer(status, message), true)
            .is_ok()
        {
            ctx.local_status = Some(status);
            sent.status = Some(200);
        }
    } else {
        let end = inc.head_request;
        match respond.send_response(text_answer(status, message), end) {
            Ok(mut tx) => {
                sent.status = Some(status);
                if !end {
                    let body = Bytes::from(format!("{message}\n"));
                    let n = body.len();
                    if send_all(&mut tx, body, true, DISCARD_WAIT).await.is_ok() {
                        sent.bytes = n;
                    }
                }
            }
            Err(e) => log::debug!("could not send {status}: {e}"),
        }
    }
}

/// Read and drop the rest of a request body nobody will read, giving its
/// window back, for at most [`DISCARD_LIMIT`] bytes and [`DISCARD_WAIT`].
async fn discard(body: &mut RecvStream) {
    let mut seen = 0;
    let _ = tokio::time::timeout(DISCARD_WAIT, async {
        while seen < DISCARD_LIMIT {
            match body.data().await {
                Some(Ok(d)) => {
                    seen += d.len();
                    let _ = body.flow_control().release_capacity(d.len());
                }
                _ => return,
            }
        }
    })
    .await;
}

/// Why a write to an `h2` send stream failed.
#[derive(Debug)]
pub(crate) enum SendFailed {
    /// The peer reset the stream or the connection went.
    Gone,
    /// The peer's window stayed shut for the whole wait.
    Stalled,
}

/// Write `data` to `tx` as the peer's flow-control window allows (END_STREAM
/// with the last bytes when `end`), waiting at most `wait` for each grant
/// of window.
pub(crate) async fn send_all(
    tx: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    wait: Duration,
) -> Result<(), SendFailed> {
    if data.is_empty() {
        return match end {
            true => tx.send_data(data, true).map_err(|_| SendFailed::Gone),
            false => Ok(()),
        };
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let grant = std::future::poll_fn(|cx| tx.poll_capacity(cx));
        let n = match tokio::time::timeout(wait, grant).await {
            Ok(Some(Ok(n))) => n,
            Ok(_) => return Err(SendFailed::Gone),
            Err(_) => return Err(SendFailed::Stalled),
        };
        if n == 0 {
            continue;
        }
        let part = data.split_to(n.min(data.len()));
        tx.send_data(part, end && data.is_empty())
            .map_err(|_| SendFailed::Gone)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_local_answer_is_trailers_only() {
        let r = grpc_answer(
            503,
            "503 Service Unavailable: slot staging of site shop has no deployment",
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], "14");
        assert!(r.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("503 Service Unavailable"));
        assert!(r.headers().get("content-length").is_none());
        assert_eq!(grpc_answer(404, "x").headers()["grpc-status"], "5");
    }

    #[test]
    fn a_text_local_answer_says_its_length() {
        let r = text_answer(404, "404 Not Found: no site");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-length"], "23");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(r.headers().contains_key("date"));
    }
}
