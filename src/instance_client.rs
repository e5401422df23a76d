//! The one HTTP client slotproxy uses to talk to app instances itself (not
//! proxied traffic): health probes, the swap's settings hook, waiting for an
//! instance to answer again after a restart, and warm-up.
//!
//! Every call has its own time-out and reports what happened as an
//! [`Outcome`] a person can read in the activity log. Connections are not
//! pooled: these calls are seconds apart, and a pooled connection an app
//! closed meanwhile would turn into a false failure.
//!
//! Each call speaks the deployment's `instances_protocol` (HTTP/1.1,
//! HTTP/2 with prior knowledge for h2c, HTTP/2 over TLS for h2 — trusting
//! the same certificates as the proxy, `upstream_tls`), and with `health_check = "grpc"`
//! health checks and warm-up ask the standard gRPC health service
//! (`grpc.health.v1.Health/Check` for the server as a whole) instead of
//! `GET`ting a path.

use crate::model::{HealthCheck, InstancesProtocol, Probe, Settings, Warmup};
use crate::upstream_tls::Trusted;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An instance's answer: its status, or (the status if it answered, why it
/// failed).
pub type Outcome = Result<u16, (Option<u16>, String)>;

#[derive(Clone)]
pub struct InstanceClient {
    http: reqwest::Client,
    h2c: reqwest::Client,
    /// HTTP/2 over TLS: a client per CA file (`None`: the system's roots),
    /// built again when the file's certificates change.
    tls: Arc<Mutex<TlsClients>>,
}

type TlsClients = HashMap<Option<Arc<str>>, (Option<Arc<Trusted>>, reqwest::Client)>;

/// The gRPC health service's method (grpc/grpc health-checking.md).
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckRequest { service: "" }` (the server as a whole) in a gRPC
/// message frame: not compressed, 0 bytes long.
const GRPC_CHECK_SERVER: [u8; 5] = [0, 0, 0, 0, 0];

impl InstanceClient {
    pub fn new() -> Result<InstanceClient, String> {
        Ok(InstanceClient {
            http: build(reqwest::Client::builder().http1_only())?,
            h2c: build(reqwest::Client::builder().http2_prior_knowledge())?,
            tls: Arc::default(),
        })
    }

    /// The client that speaks `how.protocol` (with its CA, over TLS).
    fn client(&self, how: &Probe) -> Result<reqwest::Client, String> {
        match how.protocol {
            InstancesProtocol::Http1 => Ok(self.http.clone()),
            InstancesProtocol::H2c => Ok(self.h2c.clone()),
            InstancesProtocol::H2 => {
                let trusted = how.tls_ca.as_deref().map(crate::upstream_tls::trusted);
                let mut clients = self.tls.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((was, client)) = clients.get(&how.tls_ca) {
                    let same = match (was, &trusted) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        (None, None) => true,
                        _ => false,
                    };
                    if same {
                        return Ok(client.clone());
                    }
                }
                let mut b = reqwest::Client::builder()
                    .use_rustls_tls()
                    .http2_prior_knowledge();
                if trusted.is_none() {
                    // the system's roots only, as the proxy's own TLS to
                    // instances (not also reqwest's bundled webpki roots)
                    b = b.tls_built_in_webpki_certs(false);
                }
                if let Some(t) = &trusted {
                    // the deployment's CA instead of the system's roots
                    b = b.tls_built_in_root_certs(false);
                    for der in &t.der {
                        let cert = reqwest::Certificate::from_der(der)
                            .map_err(|e| format!("instances_tls_ca: {e}"))?;
                        b = b.add_root_certificate(cert);
                    }
                }
                let client = build(b)?;
                clients.insert(how.tls_ca.clone(), (trusted, client.clone()));
                Ok(client)
            }
        }
    }

    /// Send `req` (built on the client for `how`), within `timeout`.
    async fn send(
        &self,
        how: &Probe,
        timeout: Duration,
        req: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        let client = self.client(how)?;
        req(&client)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| describe(&e))
    }

    /// A health probe: any HTTP answer below 500 within `timeout` is
    /// healthy; for a gRPC health check, `SERVING`.
    pub async fn probe(&self, instance: &str, path: &str, how: &Probe, timeout: Duration) -> bool {
        if how.check == HealthCheck::Grpc {
            return self.grpc_serving(instance, how, timeout).await.is_ok();
        }
        let url = url(how, instance, path);
        match self.send(how, timeout, |c| c.get(url)).await {
            Ok(resp) => resp.status().as_u16() < 500,
            Err(_) => false,
        }
    }

    /// Ask the instance's gRPC health service whether the server serves.
    pub async fn grpc_serving(
        &self,
        instance: &str,
        how: &Probe,
        timeout: Duration,
    ) -> Result<(), String> {
        let url = url(how, instance, GRPC_HEALTH_CHECK);
        let resp = self
            .send(how, timeout, |c| {
                c.post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/grpc")
                    .header(reqwest::header::TE, "trailers")
                    .body(GRPC_CHECK_SERVER.to_vec())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(format!("gRPC health check answered HTTP {}", resp.status()));
        }
        // a failed call without a message puts its status in the headers
        if let Some(status) = resp.headers().get("grpc-status") {
            if status.as_bytes() != b"0" {
                let msg = resp
                    .headers()
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or("");
                return Err(format!(
                    "gRPC health check failed: grpc-status {} {msg}",
                    String::from_utf8_lossy(status.as_bytes())
                ));
            }
        }
        let body = resp.bytes().await.map_err(|e| describe(&e))?;
        match grpc_health_status(&body) {
            Some(1) => Ok(()),
            Some(other) => Err(format!(
                "gRPC health service says {}",
                match other {
                    0 => "UNKNOWN",
                    2 => "NOT_SERVING",
                    3 => "SERVICE_UNKNOWN",
                    _ => "an unknown status",
                }
            )),
            None => {
                Err("no gRPC health answer (does the server serve grpc.health.v1.Health?)".into())
            }
        }
    }

    /// POST `settings` as a JSON object to `hook` (the deployment's
    /// `settings_hook_path`); a 2xx passes.
    pub async fn post_settings(
        &self,
        instance: &str,
        hook: &str,
        settings: &Settings,
        how: &Probe,
        timeout: Duration,
    ) -> Outcome {
        let url = url(how, instance, hook);
        match self
            .send(how, timeout, |c| c.post(url).json(settings))
            .await
        {
            Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16()),
            Ok(resp) => Err((
                Some(resp.status().as_u16()),
                format!("answered {}", resp.status()),
            )),
            Err(why) => Err((None, why)),
        }
    }

    /// Poll `GET path` until the instance answers at all (an app restarting
    /// after new settings), for up to `deadline`. Returns the outcome and
    /// the number of tries.
    pub async fn wait_answers(
        &self,
        instance: &str,
        path: &str,
        how: &Probe,
        deadline: Duration,
    ) -> (Outcome, u32) {
        let url = url(how, instance, path);
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = self
                .send(how, Duration::from_secs(2), |c| c.get(&url))
                .await;
            match sent {
                Ok(resp) => return (Ok(resp.status().as_u16()), attempts),
                Err(e) if start.elapsed() >= deadline => {
                    let why = format!("did not answer again: {e}");
                    return (Err((None, why)), attempts);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Warm an instance up: `GET warm.path` with the `Host` its future users
    /// send, until a status in `warm.statuses` (any, when empty), retried
    /// `warm.retries` times with backoff. Returns the outcome and the number
    /// of tries. A gRPC deployment is warm when its health service says
    /// `SERVING`.
    pub async fn warm_up(
        &self,
        instance: &str,
        host: &str,
        warm: &Warmup,
        how: &Probe,
    ) -> (Outcome, u32) {
        let url = url(how, instance, &warm.path);
        let tries = warm.retries.saturating_add(1);
        let mut last = (None, String::new());
        for attempt in 1..=tries {
            if how.check == HealthCheck::Grpc {
                let timeout = Duration::from_secs(warm.timeout_secs);
                match self.grpc_serving(instance, how, timeout).await {
                    Ok(()) => return (Ok(200), attempt),
                    Err(why) => last = (None, why),
                }
                if attempt < tries {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                continue;
            }
            let timeout = Duration::from_secs(warm.timeout_secs);
            let sent = self
                .send(how, timeout, |c| {
                    c.get(&url).header(reqwest::header::HOST, host)
                })
                .await;
            match sent {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    if warm.statuses.is_empty() || warm.statuses.contains(&code) {
                        return (Ok(code), attempt);
                    }
                    last = (
                        Some(code),
                        format!("answered {code}, expected one of {:?}", warm.statuses),
                    );
                }
                Err(why) => last = (None, why),
            }
            if attempt < tries {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        (Err(last), tries)
    }
}

/// A client for instances: no pooled connections (see the module's doc).
fn build(b: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
    b.pool_max_idle_per_host(0)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// The URL of `path` on `instance`: `https` for HTTP/2 over TLS.
fn url(how: &Probe, instance: &str, path: &str) -> String {
    let scheme = match how.protocol {
        InstancesProtocol::H2 => "https",
        InstancesProtocol::Http1 | InstancesProtocol::H2c => "http",
    };
    format!("{scheme}://{instance}{path}")
}

/// The `status` of a gRPC `HealthCheckResponse` frame (`None` if `body`
/// is not one uncompressed message). The message is protobuf: field 1, a
/// varint enum; an empty message means status 0 (UNKNOWN).
pub fn grpc_health_status(body: &[u8]) -> Option<u64> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let mut msg = rest.get(4..4 + len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut msg)?,
            // skip other fields: varint, 64-bit, length-delimited, 32-bit
            (_, 0) => {
                varint(&mut msg)?;
            }
            (_, 1) => msg = msg.get(8..)?,
            (_, 2) => {
                let n = varint(&mut msg)? as usize;
                msg = msg.get(n..)?;
            }
            (_, 5) => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// Read one protobuf varint off the front of `buf`.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

/// Pause before warm-up try `attempt + 1`: doubling from 200 ms, at most 2 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5)).min(2000))
}

/// A client error as one readable line.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_health_answers_are_read_from_their_frame() {
        // SERVING
        assert_eq!(grpc_health_status(&[0, 0, 0, 0, 2, 0x08, 0x01]), Some(1));
        // NOT_SERVING, with an unknown field before it
        assert_eq!(
            grpc_health_status(&[0, 0, 0, 0, 5, 0x12, 0x01, b'x', 0x08, 0x02]),
            Some(2)
        );
        // the empty message: UNKNOWN
        assert_eq!(grpc_health_status(&[0, 0, 0, 0, 0]), Some(0));
        // compressed, short, truncated or malformed
        assert_eq!(grpc_health_status(&[1, 0, 0, 0, 2, 0x08, 0x01]), None);
        assert_eq!(grpc_health_status(&[0, 0, 0]), None);
        assert_eq!(grpc_health_status(&[0, 0, 0, 0, 3, 0x08, 0x01]), None);
        assert_eq!(grpc_health_status(&[0, 0, 0, 0, 2, 0x08, 0x80]), None);
        assert_eq!(grpc_health_status(&[0, 0, 0, 0, 1, 0x0b]), None);
        assert_eq!(grpc_health_status(&[]), None);
    }

    #[test]
    fn backoff_doubles_up_to_two_seconds() {
        let ms: Vec<u128> = (1..=7).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, vec![200, 400, 800, 1600, 2000, 2000, 2000]);
    }
}
