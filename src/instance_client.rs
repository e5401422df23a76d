//! The one HTTP client slotproxy uses to talk to app instances itself (not
//! proxied traffic): health probes, the swap's settings hook, waiting for an
//! instance to answer again after a restart, and warm-up.
//!
//! Every call has its own time-out and reports what happened as an
//! [`Outcome`] a person can read in the activity log. Connections are not
//! pooled: these calls are seconds apart, and a pooled connection an app
//! closed meanwhile would turn into a false failure.

use crate::model::{Settings, Warmup};
use std::time::{Duration, Instant};

/// An instance's answer: its status, or (the status if it answered, why it
/// failed).
pub type Outcome = Result<u16, (Option<u16>, String)>;

#[derive(Clone)]
pub struct InstanceClient {
    http: reqwest::Client,
}

impl InstanceClient {
    pub fn new() -> Result<InstanceClient, String> {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .map(|http| InstanceClient { http })
            .map_err(|e| format!("cannot build an HTTP client: {e}"))
    }

    /// A health probe: any HTTP answer below 500 within `timeout` is healthy.
    pub async fn probe(&self, instance: &str, path: &str, timeout: Duration) -> bool {
        match self
            .http
            .get(format!("http://{instance}{path}"))
            .timeout(timeout)
            .send()
            .await
        {
            Ok(resp) => resp.status().as_u16() < 500,
            Err(_) => false,
        }
    }

    /// POST `settings` as a JSON object to `hook` (the deployment's
    /// `settings_hook_path`); a 2xx passes.
    pub async fn post_settings(
        &self,
        instance: &str,
        hook: &str,
        settings: &Settings,
        timeout: Duration,
    ) -> Outcome {
        let sent = self
            .http
            .post(format!("http://{instance}{hook}"))
            .json(settings)
            .timeout(timeout)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16()),
            Ok(resp) => Err((
                Some(resp.status().as_u16()),
                format!("answered {}", resp.status()),
            )),
            Err(e) => Err((None, describe(&e))),
        }
    }

    /// Poll `GET path` until the instance answers at all (an app restarting
    /// after new settings), for up to `deadline`. Returns the outcome and
    /// the number of tries.
    pub async fn wait_answers(
        &self,
        instance: &str,
        path: &str,
        deadline: Duration,
    ) -> (Outcome, u32) {
        let url = format!("http://{instance}{path}");
        let start = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            match sent {
                Ok(resp) => return (Ok(resp.status().as_u16()), attempts),
                Err(e) if start.elapsed() >= deadline => {
                    let why = format!("did not answer again: {}", describe(&e));
                    return (Err((None, why)), attempts);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Warm an instance up: `GET warm.path` with the `Host` its future users
    /// send, until a status in `warm.statuses` (any, when empty), retried
    /// `warm.retries` times with backoff. Returns the outcome and the number
    /// of tries.
    pub async fn warm_up(&self, instance: &str, host: &str, warm: &Warmup) -> (Outcome, u32) {
        let url = format!("http://{instance}{}", warm.path);
        let tries = warm.retries.saturating_add(1);
        let mut last = (None, String::new());
        for attempt in 1..=tries {
            let sent = self
                .http
                .get(&url)
                .header(reqwest::header::HOST, host)
                .timeout(Duration::from_secs(warm.timeout_secs))
                .send()
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
                Err(e) => last = (None, describe(&e)),
            }
            if attempt < tries {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        (Err(last), tries)
    }
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
    fn backoff_doubles_up_to_two_seconds() {
        let ms: Vec<u128> = (1..=7).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, vec![200, 400, 800, 1600, 2000, 2000, 2000]);
    }
}
