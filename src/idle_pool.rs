//! Idle connections to app instances, kept for reuse by the lean HTTP/1
//! path (`lean`) without a task per connection.
//!
//! pingora-core's connector pool wraps every returned connection in an
//! `Arc<Mutex>`, puts it in an LRU and spawns a task that watches it while
//! it idles; taking it back wakes that task and waits for it to let go.
//! That is a task spawn, a wake-up and two locks per proxied request. Here a
//! returned connection goes on a per-instance stack (newest on top) under
//! one mutex, and is checked when it is taken instead: a connection the
//! instance closed, or one that sent bytes nobody asked for, reads as ready
//! and is dropped; one idle longer than the idle time-out is dropped. A
//! sweep every second closes what expired meanwhile, so a quiet proxy does
//! not hold sockets the instances have closed.

use futures_lite_now_or_never::now_or_never;
use pingora_core::protocols::Stream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Most idle connections kept per instance (pingora's default pool holds
/// 128 in all).
pub const MAX_IDLE_PER_INSTANCE: usize = 128;

struct Idle {
    stream: Stream,
    since: Instant,
    idle_timeout: Duration,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= self.idle_timeout
    }
}

/// Idle upstream connections by instance address.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl IdlePool {
    pub fn new() -> IdlePool {
        IdlePool::default()
    }

    /// The most recently returned connection to `addr` that is still
    /// usable, if any.
    pub fn take(&self, addr: &SocketAddr) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                map.get_mut(addr)?.pop()?
            };
            if idle.expired(now) {
                // everything under it is older and expired too: drop them
                // all now (outside the lock), and connect afresh
                let stale = {
                    let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                    map.get_mut(addr).map(std::mem::take)
                };
                drop((idle, stale));
                return None;
            }
            let mut stream = idle.stream;
            if quiet(&mut stream) {
                return Some(stream);
            }
        }
    }

    /// Keep `stream` (its response fully read) for the next request to
    /// `addr`, for at most `idle_timeout`.
    pub fn put(&self, addr: SocketAddr, stream: Stream, idle_timeout: Duration) {
        if idle_timeout.is_zero() {
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = map.entry(addr).or_default();
        if stack.len() >= MAX_IDLE_PER_INSTANCE {
            // the oldest goes (dropped outside the lock would be nicer,
            // but this is the rare case of a full stack)
            stack.remove(0);
        }
        stack.push(Idle {
            stream,
            since: Instant::now(),
            idle_timeout,
        });
    }

    /// Close the connections idle longer than their time-out.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, stack| {
                // oldest first: expired ones are a prefix
                let n = stack.iter().take_while(|i| i.expired(now)).count();
                expired.extend(stack.drain(..n));
                !stack.is_empty()
            });
        }
        // closed outside the lock
        drop(expired);
    }

    /// Idle connections held, in all.
    pub fn len(&self) -> usize {
        let map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an idle connection has nothing to read: the instance neither
/// closed it nor sent anything (pingora's connector makes the same check).
fn quiet(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // unconstrained: a ready read must not be turned into Pending by
    // tokio's cooperative budget
    now_or_never(tokio::task::unconstrained(stream.read(&mut byte))).is_none()
}

/// A tiny `now_or_never` (poll once with a no-op waker), so this module
/// needs no futures crate.
pub(crate) mod futures_lite_now_or_never {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    pub fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(f).poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::l4::stream::Stream as L4Stream;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: (our end as a pingora Stream, the instance's end).
    async fn pair(l: &TcpListener) -> (Stream, TcpStream) {
        let ours = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (theirs, _) = l.accept().await.unwrap();
        (Box::new(L4Stream::from(ours)), theirs)
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_newest_usable_connection_comes_back() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let pool = IdlePool::new();
        assert!(pool.take(&addr).is_none());
        let (a, _ta) = pair(&l).await;
        let (b, _tb) = pair(&l).await;
        let (a_id, b_id) = (a.id(), b.id());
        pool.put(addr, a, LONG);
        pool.put(addr, b, LONG);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.take(&addr).unwrap().id(), b_id);
        assert_eq!(pool.take(&addr).unwrap().id(), a_id);
        assert!(pool.take(&addr).is_none());
        // another instance's connections are apart
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (c, _tc) = pair(&l).await;
        pool.put(other, c, LONG);
        assert!(pool.take(&addr).is_none());
    }

    #[tokio::test]
    async fn closed_chatty_and_expired_connections_are_dropped() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let pool = IdlePool::new();
        let (good, _tgood) = pair(&l).await;
        let good_id = good.id();
        pool.put(addr, good, LONG);
        // the instance closes one, writes unasked bytes on another
        let (closed, tclosed) = pair(&l).await;
        pool.put(addr, closed, LONG);
        drop(tclosed);
        let (chatty, mut tchatty) = pair(&l).await;
        pool.put(addr, chatty, LONG);
        tchatty
            .write_all(b"HTTP/1.1 408 Timeout\r\n\r\n")
            .await
            .unwrap();
        // loopback delivers within the write and the close; one turn of
        // the reactor lets it see what the kernel already has
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(pool.take(&addr).unwrap().id(), good_id);
        assert!(pool.is_empty());
        // an expired one is not handed out, and the sweep closes it
        let (old, _told) = pair(&l).await;
        pool.put(addr, old, Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pool.len(), 1);
        pool.sweep();
        assert!(pool.is_empty());
        let (old, _told) = pair(&l).await;
        pool.put(addr, old, Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(pool.take(&addr).is_none());
    }

    #[tokio::test]
    async fn a_full_stack_drops_its_oldest() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let pool = IdlePool::new();
        let mut theirs = Vec::new();
        let mut first = None;
        for i in 0..=MAX_IDLE_PER_INSTANCE {
            let (s, t) = pair(&l).await;
            if i == 0 {
                first = Some(s.id());
            }
            theirs.push(t);
            pool.put(addr, s, LONG);
        }
        assert_eq!(pool.len(), MAX_IDLE_PER_INSTANCE);
        let mut ids = Vec::new();
        while let Some(s) = pool.take(&addr) {
            ids.push(s.id());
        }
        assert_eq!(ids.len(), MAX_IDLE_PER_INSTANCE);
        assert!(!ids.contains(&first.unwrap()));
    }
}
