//! One etcd client per endpoint, and the rule that moves a call to the next
//! member when the one it went to cannot answer.
//!
//! `etcd-client` balances one gRPC channel over every endpoint it is given,
//! and that channel keeps sending requests to a member that was killed
//! (`tcp connect error ... Connection refused` on every other call), and the
//! streams opened on it (watch, lease keep-alive) die with it: the bug
//! APISIX users hit with one etcd member down. Here every endpoint has its
//! own client; a call goes to the member that answered last and, when that
//! member cannot answer (the connection failed, or it has no leader), to the
//! next one. Retrying is safe for what the store sends: state writes compare
//! the revision they read (a write that did land makes its retry a conflict,
//! which the control plane resolves), operation writes are puts of the same
//! value, and reads are reads.

use etcd_client::{Client, ConnectOptions, Error};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub(super) struct Endpoints {
    urls: Vec<String>,
    options: ConnectOptions,
    /// A client per endpoint, made on first use (with credentials, making
    /// one authenticates, which needs that member up).
    clients: Vec<Mutex<Option<Client>>>,
    /// The endpoint that answered last: calls start there.
    current: AtomicUsize,
    /// How long one attempt on one member may take.
    attempt: Duration,
}

impl Endpoints {
    pub(super) fn new(urls: Vec<String>, options: ConnectOptions, attempt: Duration) -> Endpoints {
        let clients = urls.iter().map(|_| Mutex::new(None)).collect();
        Endpoints {
            urls,
            options,
            clients,
            current: AtomicUsize::new(0),
            attempt,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.urls.len()
    }

    async fn client(&self, i: usize) -> Result<Client, String> {
        if let Some(c) = lock(&self.clients[i]).clone() {
            return Ok(c);
        }
        let connect = Client::connect([self.urls[i].as_str()], Some(self.options.clone()));
        let c = tokio::time::timeout(self.attempt, connect)
            .await
            .map_err(|_| format!("{}: no answer", self.urls[i]))?
            .map_err(|e| format!("{}: {e}", self.urls[i]))?;
        *lock(&self.clients[i]) = Some(c.clone());
        Ok(c)
    }

    /// Run `f` with a member's client, starting with the one that answered
    /// last and moving on while members cannot answer. `Ok` carries which
    /// endpoint answered (to open streams on the same one); `Err` the last
    /// member's error, or an error that another member would answer alike.
    pub(super) async fn run_on<T, F, Fut>(&self, mut f: F) -> Result<(T, usize), String>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let start = self.current.load(Ordering::SeqCst);
        let mut last = String::from("no etcd endpoints");
        for i in order(start, self.len()) {
            let client = match self.client(i).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match tokio::time::timeout(self.attempt, f(client)).await {
                Ok(Ok(v)) => {
                    self.current.store(i, Ordering::SeqCst);
                    return Ok((v, i));
                }
                Ok(Err(e)) if member_cannot_answer(&e) => {
                    last = format!("{}: {e}", self.urls[i]);
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => {
                    last = format!(
                        "{}: no answer within {}s",
                        self.urls[i],
                        self.attempt.as_secs()
                    )
                }
            }
        }
        Err(last)
    }

    /// [`Endpoints::run_on`] without the endpoint.
    pub(super) async fn run<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.run_on(f).await.map(|(v, _)| v)
    }

    /// A stream opened on endpoint `i` broke: the next call starts on the
    /// next member.
    pub(super) fn failed(&self, i: usize) {
        let next = (i + 1) % self.len().max(1);
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The client of endpoint `i` (made if needed), to keep a stream on it.
    pub(super) async fn on(&self, i: usize) -> Result<Client, String> {
        self.client(i).await
    }
}

/// The endpoints to try, starting with `start` and wrapping around.
fn order(start: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (start + k) % n)
}

/// Whether another member may answer what this one could not: it was not
/// reached (connection refused, reset, broken), or it answered that it
/// cannot serve now (no leader, leader changed, stopping: gRPC
/// `Unavailable`). Not: the request itself was wrong, or refused for a
/// reason every member shares (auth, a compacted revision).
fn member_cannot_answer(e: &Error) -> bool {
    match e {
        Error::TransportError(_) | Error::IoError(_) => true,
        Error::GRpcStatus(s) => status_means_member_down(s.code() as i32, s.message()),
        Error::LeaseKeepAliveError(_) | Error::WatchError(_) => true,
        _ => false,
    }
}

/// gRPC status codes (the numbers of the gRPC spec, as `tonic::Code`).
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const UNAVAILABLE: i32 = 14;

fn status_means_member_down(code: i32, message: &str) -> bool {
    match code {
        UNAVAILABLE | CANCELLED => true,
        // a connection cut mid-call surfaces as Unknown from the h2 layer
        UNKNOWN => [
            "h2 protocol error",
            "transport",
            "broken pipe",
            "connection",
        ]
        .iter()
        .any(|w| message.to_ascii_lowercase().contains(w)),
        _ => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    const INVALID_ARGUMENT: i32 = 3;
    const UNAUTHENTICATED: i32 = 16;

    #[test]
    fn calls_start_at_the_last_member_that_answered_and_wrap_around() {
        assert_eq!(order(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(order(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(order(0, 1).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn only_a_member_that_cannot_answer_sends_the_call_elsewhere() {
        // killed member / leader election / cut connection: try the next one
        assert!(status_means_member_down(UNAVAILABLE, "tcp connect error"));
        assert!(status_means_member_down(
            UNAVAILABLE,
            "etcdserver: no leader"
        ));
        assert!(status_means_member_down(
            UNKNOWN,
            "h2 protocol error: error reading a body from connection"
        ));
        // the same answer from every member: no point asking another
        assert!(!status_means_member_down(
            INVALID_ARGUMENT,
            "etcdserver: mvcc: required revision has been compacted"
        ));
        assert!(!status_means_member_down(
            UNAUTHENTICATED,
            "etcdserver: invalid auth token"
        ));
        assert!(!status_means_member_down(UNKNOWN, "some app error"));
        assert!(!member_cannot_answer(&Error::InvalidArgs("x".into())));
        assert!(member_cannot_answer(&Error::LeaseKeepAliveError(
            "channel closed".into()
        )));
    }

    #[tokio::test]
    async fn every_member_is_tried_before_a_call_fails() {
        // two endpoints where nothing listens: both refuse
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let eps = Endpoints::new(
            vec![dead_url, "http://127.0.0.1:1".into()],
            ConnectOptions::new(),
            Duration::from_secs(2),
        );
        let mut seen = Vec::new();
        let r = eps
            .run_on(|mut c| {
                seen.push(());
                async move { c.get("k", None).await.map(|_| ()) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(seen.len(), 2, "both members were tried");
        assert!(r.unwrap_err().contains("127.0.0.1:1"), "names the last one");
    }
}
