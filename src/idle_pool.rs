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
//!
//! Connections are kept per *site and* instance ([`PoolKey`]): an app that
//! writes past its responses (a second answer a moment later, a body after
//! a HEAD or 304 answer) can hand a stale answer to the next request on
//! that connection — nginx's pool does the same — but never to another
//! site's request, though both sites may run on one app server. Such bytes,
//! seen when the connection is taken, drop it and are counted
//! (`slotproxy_upstream_connections_discarded_total{reason="unasked_bytes"}`).

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

/// Whose idle connections: one site's, to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The site's name, hashed (stable across routing tables).
    site: u64,
    pub addr: SocketAddr,
}

impl PoolKey {
    pub fn new(site: &str, addr: SocketAddr) -> PoolKey {
        use std::hash::BuildHasher;
        let site = foldhash::fast::FixedState::with_seed(0).hash_one(site);
        PoolKey { site, addr }
    }
}

/// Idle upstream connections by site and instance.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

/// What an idle connection showed when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing to read: usable.
    Quiet,
    /// The instance closed it (or it failed).
    Closed,
    /// The instance sent bytes no request asked for.
    Unasked,
}

impl IdlePool {
    pub fn new() -> IdlePool {
        IdlePool::default()
    }

    /// The most recently returned connection for `key` that is still
    /// usable, if any. `unasked` is told of each one dropped because the
    /// instance had sent bytes on it.
    pub fn take(&self, key: &PoolKey, mut unasked: impl FnMut()) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                map.get_mut(key)?.pop()?
            };
            if idle.expired(now) {
                // everything under it is older and expired too: drop them
                // all now (outside the lock), and connect afresh
                let stale = {
                    let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                    map.get_mut(key).map(std::mem::take)
                };
                drop((idle, stale));
                return None;
            }
            let mut stream = idle.stream;
            match check(&mut stream) {
                Check::Quiet => return Some(stream),
                Check::Unasked => unasked(),
                Check::Closed => {}
            }
        }
    }

    /// Keep `stream` (its response fully read) for the next request to
    /// `key`, for at most `idle_timeout`.
    pub fn put(&self, key: PoolKey, stream: Stream, idle_timeout: Duration) {
        if idle_timeout.is_zero() {
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = map.entry(key).or_default();
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
pub fn check(stream: &mut Stream) -> Check {
    let mut byte = [0u8; 1];
    // unconstrained: a ready read must not be turned into Pending by
    // tokio's cooperative budget
    match now_or_never(tokio::task::unconstrained(stream.read(&mut byte))) {
        None => Check::Quiet,
        Some(Ok(n)) if n > 0 => Check::Unasked,
        Some(_) => Check::Closed,
    }
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
        let addr = PoolKey::new("web", l.local_addr().unwrap());
        let pool = IdlePool::new();
        assert!(pool.take(&addr, || {}).is_none());
        let (a, _ta) = pair(&l).await;
        let (b, _tb) = pair(&l).await;
        let (a_id, b_id) = (a.id(), b.id());
        pool.put(addr, a, LONG);
        pool.put(addr, b, LONG);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.take(&addr, || {}).unwrap().id(), b_id);
        assert_eq!(pool.take(&addr, || {}).unwrap().id(), a_id);
        assert!(pool.take(&addr, || {}).is_none());
        // another instance's connections are apart, and so are another
        // site's to the same instance
        let other = PoolKey::new("web", "127.0.0.1:1".parse().unwrap());
        let (c, _tc) = pair(&l).await;
        pool.put(other, c, LONG);
        let shop = PoolKey::new("shop", addr.addr);
        let (d, _td) = pair(&l).await;
        pool.put(shop, d, LONG);
        assert!(pool.take(&addr, || {}).is_none());
        assert!(pool.take(&shop, || {}).is_some());
    }

    #[tokio::test]
    async fn closed_chatty_and_expired_connections_are_dropped() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = PoolKey::new("web", l.local_addr().unwrap());
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
        let mut unasked = 0;
        assert_eq!(pool.take(&addr, || unasked += 1).unwrap().id(), good_id);
        assert!(pool.is_empty());
        // the chatty one is told of, the closed one is not
        assert_eq!(unasked, 1);
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
        assert!(pool.take(&addr, || {}).is_none());
    }

    #[tokio::test]
    async fn a_full_stack_drops_its_oldest() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = PoolKey::new("web", l.local_addr().unwrap());
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
        while let Some(s) = pool.take(&addr, || {}) {
            ids.push(s.id());
        }
        assert_eq!(ids.len(), MAX_IDLE_PER_INSTANCE);
        assert!(!ids.contains(&first.unwrap()));
    }
}
