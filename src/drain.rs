//! The drain phase of an upgrade (SIGQUIT) or a shutdown (SIGTERM): for
//! `[server] drain_secs` the old process keeps its client connections open
//! and answers every request on them with `Connection: close`, so clients
//! leave between requests; only then are idle connections closed.
//!
//! Why: left to itself, pingora 0.9 closes every kept-alive connection that
//! is idle in `read_request` the moment it broadcasts shutdown (SIGTERM at
//! once, SIGQUIT 5 s after handing the sockets over): `http_cleanup` wakes
//! those reads and drops the connections. A client that is just sending its
//! next request on one sees the connection closed with no response — the
//! keep-alive race, and for a POST a request it cannot safely retry.
//!
//! What this module owns:
//! - the process-wide drain state (started by the signal, the end of the
//!   window), read by the hooks with one atomic load;
//! - the wait for the window's end in the client listeners' cleanup
//!   (`limits::Limited`), which pingora calls at its shutdown broadcast;
//! - the same for the axum control listeners (admin, metrics, demo apps):
//!   a `Connection: close` response layer and a listener that lets go of its
//!   address at hand-over while its open connections drain.
//!
//! The HTTP/1 connection loop (`limits`) reads [`draining`] to turn
//! keep-alive off for every request read during the drain, and waits for
//! [`window_over`] before it closes an idle connection (gracefully:
//! `limits::linger_close`); the engine (`lean`, `edge`) turns it off for
//! requests read before the drain began and answered after.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long pingora should wait, after it broadcasts shutdown, before it
/// stops the runtimes: the drain window runs inside that wait, then the
/// requests still in flight get the configured grace period.
pub fn pingora_grace_secs(grace_period_secs: u64, drain_secs: u64) -> u64 {
    grace_period_secs.saturating_add(drain_secs)
}

/// What is left of a drain window of `window` that began at `started`, as
/// seen at `now`: `None` before the drain began, zero once it is over.
pub fn remaining(started: Option<Instant>, now: Instant, window: Duration) -> Option<Duration> {
    let end = started? + window;
    Some(end.saturating_duration_since(now))
}

struct DrainState {
    /// Set by the first SIGQUIT/SIGTERM (or pingora's cleanup, whichever
    /// comes first); the hot path reads only this.
    draining: AtomicBool,
    started: OnceLock<Instant>,
    /// The window in milliseconds (`[server] drain_secs`).
    window_ms: AtomicU64,
    /// Wakes the waiters for the start of the drain.
    started_tx: tokio::sync::watch::Sender<bool>,
}

fn state() -> &'static DrainState {
    static STATE: OnceLock<DrainState> = OnceLock::new();
    STATE.get_or_init(|| DrainState {
        draining: AtomicBool::new(false),
        started: OnceLock::new(),
        window_ms: AtomicU64::new(10_000),
        started_tx: tokio::sync::watch::channel(false).0,
    })
}

/// Set the drain window (`[server] drain_secs`) before anything serves.
pub fn configure(drain_secs: u64) {
    state()
        .window_ms
        .store(drain_secs.saturating_mul(1000), Ordering::Relaxed);
}

/// The drain window (`[server] drain_secs`).
pub fn window() -> Duration {
    Duration::from_millis(state().window_ms.load(Ordering::Relaxed))
}

/// Begin the drain now (idempotent: a second signal does not extend it).
pub fn start() {
    let s = state();
    if s.started.set(Instant::now()).is_ok() {
        log::info!(
            "draining: every response now carries Connection: close; idle connections close in {:?}",
            window()
        );
    }
    s.draining.store(true, Ordering::Release);
    s.started_tx.send_replace(true);
}

/// Whether the drain has begun: one atomic load, for the request path.
#[inline]
pub fn draining() -> bool {
    state().draining.load(Ordering::Acquire)
}

/// Resolves when the drain has begun (HTTP/2 connections then send
/// GOAWAY, `edge::h2`, as HTTP/1 answers say `Connection: close`).
pub async fn begun() {
    let mut rx = state().started_tx.subscribe();
    let _ = rx.wait_for(|started| *started).await;
}

/// Resolves when the drain has begun and its window is over.
pub async fn window_over() {
    let mut rx = state().started_tx.subscribe();
    let _ = rx.wait_for(|started| *started).await;
    if let Some(left) = remaining(state().started.get().copied(), Instant::now(), window()) {
        tokio::time::sleep(left).await;
    }
}

/// Start the drain on SIGQUIT (upgrade) or SIGTERM (shutdown). pingora
/// watches the same signals and does its own part (sockets, grace period).
pub async fn start_on_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (quit, term) = (signal(SignalKind::quit()), signal(SignalKind::terminate()));
    let (mut quit, mut term) = match (quit, term) {
        (Ok(q), Ok(t)) => (q, t),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot watch SIGQUIT/SIGTERM for the drain: {e}");
            return;
        }
    };
    tokio::select! {
        _ = quit.recv() => {},
        _ = term.recv() => {},
    }
    start();
}

/// axum layer for the control listeners: `Connection: close` on every
/// response during the drain, so hyper closes the connection after it and
/// the client reconnects (to the new process, after an upgrade).
pub async fn close_when_draining(mut resp: axum::response::Response) -> axum::response::Response {
    if draining() {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// A control listener that lets go of its address as soon as `released`
/// resolves (the hand-over, so the new process can bind it) while the
/// connections it already accepted keep being served by `axum::serve`.
pub struct ReleasingListener<F> {
    inner: Option<tokio::net::TcpListener>,
    addr: std::net::SocketAddr,
    released: std::pin::Pin<Box<F>>,
}

impl<F: std::future::Future<Output = ()> + Send + 'static> ReleasingListener<F> {
    pub fn new(inner: tokio::net::TcpListener, released: F) -> std::io::Result<Self> {
        Ok(ReleasingListener {
            addr: inner.local_addr()?,
            inner: Some(inner),
            released: Box::pin(released),
        })
    }
}

impl<F: std::future::Future<Output = ()> + Send + 'static> axum::serve::Listener
    for ReleasingListener<F>
{
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(listener) = self.inner.as_mut() else {
                // released: accept nothing more, let axum serve what it has
                return std::future::pending().await;
            };
            tokio::select! {
                biased;
                _ = self.released.as_mut() => {
                    log::info!("released {}", self.addr);
                    self.inner = None;
                }
                accepted = tokio::net::TcpListener::accept(listener) => match accepted {
                    Ok(conn) => return conn,
                    Err(e) => {
                        // as axum's own listener: e.g. EMFILE must not spin
                        log::debug!("accept on {}: {e}", self.addr);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_covers_the_drain_window() {
        assert_eq!(pingora_grace_secs(5, 10), 15);
        assert_eq!(pingora_grace_secs(5, 0), 5);
        assert_eq!(pingora_grace_secs(u64::MAX, 10), u64::MAX);
    }

    #[test]
    fn remaining_counts_down_from_the_start() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        assert_eq!(remaining(None, t0, w), None, "no drain yet");
        assert_eq!(remaining(Some(t0), t0, w), Some(w));
        assert_eq!(
            remaining(Some(t0), t0 + Duration::from_secs(4), w),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            remaining(Some(t0), t0 + Duration::from_secs(30), w),
            Some(Duration::ZERO),
            "over, never negative"
        );
        assert_eq!(
            remaining(Some(t0), t0, Duration::ZERO),
            Some(Duration::ZERO)
        );
    }
}
