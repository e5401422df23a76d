//! Instance names to socket addresses. An instance given as `host:port`
//! with a name (not an IP) is resolved here, off the hot path, and the
//! routing table is compiled from the result (`RouteTable::compile` takes
//! addresses as input, like it takes health, and does no I/O).
//!
//! A name is resolved (blocking) the first time it is seen — before the
//! control lock is taken where a write brings it ([`prefetch`]: a deploy
//! through the API, a reload, another node's state), else when a table
//! needs it — and cached;
//! after that the health checker re-resolves names each interval, off the
//! control lock ([`refresh`]), and a changed address publishes a new table.

use crate::model::{Addresses, State};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};

/// Last known address of each name (`None`: it did not resolve).
fn cache() -> &'static Mutex<HashMap<String, Option<SocketAddr>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<SocketAddr>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The addresses of every instance of `state` given by name; names never
/// seen before are resolved now (blocking). Instances given as IP addresses
/// need no entry, and a name that does not resolve has none: such an
/// instance is never tried.
pub fn addresses(state: &State) -> Addresses {
    let mut out = Addresses::new();
    for label in labels(state) {
        if label.parse::<SocketAddr>().is_ok() || out.contains_key(label) {
            continue;
        }
        if let Some(addr) = resolve(label) {
            out.insert(label.clone(), addr);
        }
    }
    out
}

fn labels(state: &State) -> impl Iterator<Item = &String> {
    state
        .sites
        .values()
        .flat_map(|s| s.slots.values())
        .filter_map(|s| s.deployment.as_ref())
        .flat_map(|d| d.instances.iter())
}

/// Resolve the names among `labels` never seen before (blocking), so that
/// the table built next — under the control lock — finds them cached: a
/// slow DNS server then holds up the one write that brought a new name,
/// not every reader and writer of the control plane.
pub fn prefetch<'a>(labels: impl IntoIterator<Item = &'a String>) {
    for label in labels {
        if label.parse::<SocketAddr>().is_err() {
            resolve(label);
        }
    }
}

/// [`prefetch`] every instance name of `state`.
pub fn prefetch_state(state: &State) {
    prefetch(labels(state));
}

fn resolve(label: &str) -> Option<SocketAddr> {
    if let Some(known) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(label) {
        return *known;
    }
    let addr = match label.to_socket_addrs() {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            log::warn!("instance {label} does not resolve: {e}");
            None
        }
    };
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(label.to_string(), addr);
    addr
}

/// Re-resolve every instance given by name among `labels`; true when an
/// address changed (the caller publishes a new table).
pub async fn refresh(labels: &[String]) -> bool {
    let mut changed = false;
    for label in labels {
        if label.parse::<SocketAddr>().is_ok() {
            continue;
        }
        let now = match tokio::net::lookup_host(label.as_str()).await {
            Ok(mut addrs) => addrs.next(),
            Err(_) => None,
        };
        let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        if cache.get(label) != Some(&now) {
            log::info!("instance {label} now resolves to {now:?}");
            cache.insert(label.clone(), now);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_and_ip_addresses_need_no_entry() {
        let cfg = r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:1", "localhost:2", "no-such-host.invalid:3"]
"#;
        let (_, state) = crate::config::Config::parse(cfg, std::path::Path::new("t")).unwrap();
        let a = addresses(&state);
        assert!(!a.contains_key("127.0.0.1:1"));
        assert_eq!(a.get("localhost:2").map(|s| s.port()), Some(2));
        assert!(!a.contains_key("no-such-host.invalid:3"));
    }
}
