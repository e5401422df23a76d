//! Who may open a client connection (docs/reference/limits.md): the count of open
//! connections in total and per client address, and — when the total is
//! reached — room made by closing the connection that has idled longest
//! between two requests, as nginx does, before a new one is refused.
//!
//! Why both: with only a total, one address that opens idle keep-alive
//! connections (each renewed by a request now and then) locks everyone else
//! out. The per-address cap (default: a quarter of the total, at least 64)
//! keeps one host from taking it all while a large NAT stays well inside
//! it; closing the oldest idle keep-alive connection keeps idle ones from
//! ever refusing a client that has something to ask. A connection waiting
//! for its *first* request is not idle in that sense: the header time-out
//! bounds it.
//!
//! The cost on the request path is two relaxed atomic stores per request
//! (idle begins, idle ends); the search for the oldest idle connection
//! runs only when the total is reached, over the open connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::Notify;

/// Why a connection was refused at accept (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::MaxConnections, Refusal::MaxConnectionsPerIp];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

/// The key a per-client limit counts under: the address, or for IPv6 its
/// /64 (one subscriber usually holds a whole /64, so counting single
/// addresses would let one client open a connection per address).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// `max_connections_per_ip` when the config leaves it out: a quarter of
/// `max_connections`, at least 64 (and never more than the total).
pub fn auto_max_per_ip(max_connections: usize) -> usize {
    (max_connections / 4).max(64).min(max_connections)
}

/// A connection's idle mark: `BUSY`, `EVICTED`, or when it began to idle
/// between requests (milliseconds since [`origin`], plus one).
struct Mark {
    since: AtomicU64,
    evict: Notify,
}

const BUSY: u64 = 0;
const EVICTED: u64 = u64::MAX;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Open client connections of this process, in total and per client.
pub struct Connections {
    max: usize,
    max_per_ip: usize,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Every open connection's mark, for the search of the oldest idle one.
    marks: Mutex<Slab>,
}

/// Marks by slot; freed slots are reused.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Arc<Mark>>>,
    free: Vec<usize>,
}

/// One admitted connection; releases its count when dropped.
pub struct Admitted {
    conns: Arc<Connections>,
    key: Option<IpAddr>,
    mark: Arc<Mark>,
    slot: usize,
}

impl Connections {
    /// `max_per_ip` 0: no per-client limit.
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            marks: Mutex::new(Slab::default()),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Count a new connection from `ip`, or say why it must be refused. At
    /// the total, the connection idle longest between requests is told to
    /// close to make room (it goes within a moment, so the count may pass
    /// the total by the evictions under way).
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Admitted, Refusal> {
        let key = match ip {
            Some(ip) if self.max_per_ip > 0 => {
                let key = client_key(ip);
                let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                let n = map.entry(key).or_insert(0);
                if *n >= self.max_per_ip {
                    return Err(Refusal::MaxConnectionsPerIp);
                }
                *n += 1;
                Some(key)
            }
            _ => None,
        };
        let was = self.open.fetch_add(1, Ordering::AcqRel);
        if was >= self.max && !self.evict_oldest_idle() {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.forget(key);
            return Err(Refusal::MaxConnections);
        }
        let mark = Arc::new(Mark {
            since: AtomicU64::new(BUSY),
            evict: Notify::new(),
        });
        let slot = {
            let mut slab = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            match slab.free.pop() {
                Some(i) => {
                    slab.slots[i] = Some(mark.clone());
                    i
                }
                None => {
                    slab.slots.push(Some(mark.clone()));
                    slab.slots.len() - 1
                }
            }
        };
        crate::metrics::connection_opened();
        Ok(Admitted {
            conns: self.clone(),
            key,
            mark,
            slot,
        })
    }

    /// Tell the connection idle longest between requests to close; false
    /// if none idles.
    fn evict_oldest_idle(&self) -> bool {
        let slab = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let oldest = slab
                .slots
                .iter()
                .flatten()
                .map(|m| (m.since.load(Ordering::Relaxed), m))
                .filter(|(since, _)| *since != BUSY && *since != EVICTED)
                .min_by_key(|(since, _)| *since);
            let Some((since, mark)) = oldest else {
                return false;
            };
            // it may have just woken for a request: then look again
            if mark
                .since
                .compare_exchange(since, EVICTED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                mark.evict.notify_one();
                crate::metrics::connection_evicted();
                return true;
            }
        }
    }

    fn forget(&self, key: Option<IpAddr>) {
        if let Some(key) = key {
            let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("key", &self.key)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Admitted {
    /// The connection waits for its next request from now on: it may be
    /// closed to make room.
    pub fn idle_begins(&self, now: Instant) {
        let ms = now.saturating_duration_since(origin()).as_millis() as u64 + 1;
        let _ = self
            .mark
            .since
            .compare_exchange(BUSY, ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A request arrived (a connection told to close keeps that word).
    pub fn idle_ends(&self) {
        let since = self.mark.since.load(Ordering::Relaxed);
        if since != EVICTED {
            let _ =
                self.mark
                    .since
                    .compare_exchange(since, BUSY, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Resolves once this connection has been told to close to make room.
    pub async fn evicted(&self) {
        self.mark.evict.notified().await
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.forget(self.key);
        {
            let mut slab = self.conns.marks.lock().unwrap_or_else(|p| p.into_inner());
            slab.slots[self.slot] = None;
            slab.free.push(self.slot);
        }
        self.conns.open.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connections_are_limited_in_total_and_per_client() {
        let c = Connections::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.admit(Some(a)).unwrap();
        let _a2 = c.admit(Some(a)).unwrap();
        assert_eq!(c.admit(Some(a)).unwrap_err(), Refusal::MaxConnectionsPerIp);
        let _b1 = c.admit(Some(b)).unwrap();
        assert_eq!(c.admit(Some(b)).unwrap_err(), Refusal::MaxConnections);
        assert_eq!(c.open(), 3);
        // a refused connection leaves no count behind
        assert_eq!(c.per_ip.lock().unwrap()[&b], 1);
        drop(a1);
        assert_eq!(c.open(), 2);
        let _a3 = c.admit(Some(a)).unwrap();
        assert!(c.per_ip.lock().unwrap().len() == 2);
    }

    #[test]
    fn per_client_counts_are_forgotten_when_zero_and_off_at_zero() {
        let c = Connections::new(10, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        drop(c.admit(Some(a)).unwrap());
        assert!(c.per_ip.lock().unwrap().is_empty());
        let unlimited = Connections::new(10, 0);
        let _x: Vec<_> = (0..5).map(|_| unlimited.admit(Some(a)).unwrap()).collect();
        assert!(unlimited.per_ip.lock().unwrap().is_empty());
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
    }

    #[test]
    fn the_per_client_default_is_a_quarter_of_the_total() {
        assert_eq!(auto_max_per_ip(10_000), 2_500);
        assert_eq!(auto_max_per_ip(100), 64);
        assert_eq!(auto_max_per_ip(16), 16);
    }

    #[tokio::test]
    async fn at_the_total_the_oldest_idle_connection_makes_room() {
        let c = Connections::new(3, 0);
        let t0 = Instant::now();
        let busy = c.admit(None).unwrap();
        let old = c.admit(None).unwrap();
        let young = c.admit(None).unwrap();
        // nobody idles: refused
        assert_eq!(c.admit(None).unwrap_err(), Refusal::MaxConnections);
        old.idle_begins(t0);
        young.idle_begins(t0 + Duration::from_secs(1));
        let new = c.admit(None).unwrap();
        // the oldest was told, at once; the younger was not
        tokio::time::timeout(Duration::from_secs(1), old.evicted())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), young.evicted())
                .await
                .is_err()
        );
        // a connection told to close stays told, even if a request came
        old.idle_ends();
        assert_eq!(old.mark.since.load(Ordering::Relaxed), EVICTED);
        drop(old);
        assert_eq!(c.open(), 3);
        // the younger goes next; a busy one never
        let _next = c.admit(None).unwrap();
        young.idle_ends();
        drop(young);
        assert_eq!(c.admit(None).unwrap_err(), Refusal::MaxConnections);
        drop((busy, new));
        assert_eq!(c.open(), 1);
    }

    #[test]
    fn a_connection_busy_again_is_not_taken() {
        let c = Connections::new(1, 0);
        let a = c.admit(None).unwrap();
        a.idle_begins(Instant::now());
        a.idle_ends();
        assert_eq!(c.admit(None).unwrap_err(), Refusal::MaxConnections);
    }
}
