//! `RouteTable`: the whole routing view — host names, rules, slot → instances
//! and instance health — compiled from a `State` into one immutable value.
//!
//! The control plane builds a new table off the hot path and publishes it with
//! one `ArcSwap::store`; each request loads it once and only reads it. Anything
//! a request would otherwise compute (cumulative weights, `Set-Cookie` header
//! values, resolved socket addresses) is computed here.

use super::buckets::bucket_ranges;
use crate::config::{Assignment, RoutingSection};
use crate::model::{KeySource, State, PRODUCTION};
use http::HeaderValue;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Weighted routing works in basis points so rules like 12.5% are exact.
pub const WEIGHT_SCALE: u32 = 10_000;
// a bucket is one basis point of a site's traffic
const _: () = assert!(super::buckets::BUCKETS == WEIGHT_SCALE);

pub use crate::model::{Addresses, Health};

/// Where a host name leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTarget {
    pub site: u32,
    /// `None`: a production host name, routed by query, cookie and weights.
    /// `Some(slot)`: a slot host name, which always reaches that slot.
    pub slot: Option<u16>,
}

#[derive(Debug)]
pub struct RouteTable {
    /// Bumped on every publish; shown in metrics and logs.
    pub version: u64,
    /// Lower-case host names. foldhash rather than SipHash: the keys come
    /// from the config, not from clients, so there is no flooding to resist,
    /// and this lookup runs on every request.
    hosts: HashMap<Box<[u8]>, HostTarget, foldhash::fast::RandomState>,
    pub sites: Vec<SiteRoutes>,
    pub cookie_name: Box<str>,
    pub query_param: Box<str>,
    /// Searcher for `cookie_name` in `Cookie` headers, built once.
    cookie_finder: memchr::memmem::Finder<'static>,
    /// What follows `<cookie_name>=b.<n>` in a bucket's `Set-Cookie`
    /// (attributes; index 1 with `Secure`).
    bucket_cookie_attrs: [Box<str>; 2],
}

#[derive(Debug)]
pub struct SiteRoutes {
    pub name: Box<str>,
    /// Index 0 is always production.
    pub slots: Vec<SlotRoute>,
    /// Cumulative upper bounds (exclusive, in basis points) of the slots that
    /// take part in the weighted pick; a roll past the last goes to production.
    pub weights: Vec<(u32, u16)>,
    pub trusted_proxies: Vec<IpNet>,
    /// `Some` when the site assigns clients by sticky bucket.
    pub buckets: Option<BucketRoutes>,
    /// The slots' `match` entries, compiled (empty for most sites).
    pub matches: super::matches::SiteMatches,
    /// Shadows of its slots (SPEC §15), attached on publish; empty for
    /// most sites, which is all a request of theirs checks.
    pub shadows: Vec<Arc<crate::shadow::ShadowRoute>>,
}

/// Bucket assignment of a site (`routing::buckets`).
#[derive(Debug)]
pub struct BucketRoutes {
    /// Contiguous bucket ranges (exclusive upper edge, slot) of every slot
    /// with a positive rule, in routing order, live or not: the buckets of
    /// a slot that cannot serve go to production for as long as it is
    /// down, without shifting the ranges of the slots after it.
    pub ranges: Vec<(u32, u16)>,
    /// Where the user key comes from, if the site has one.
    pub key: Option<UserKey>,
}

/// A site's `assignment_key`, ready to look up.
#[derive(Debug)]
pub enum UserKey {
    Header(http::HeaderName),
    Cookie(Box<memchr::memmem::Finder<'static>>),
}

#[derive(Debug)]
pub struct SlotRoute {
    pub name: Box<str>,
    /// `name` ready to send as `X-Slot-Name` (cloning it is a refcount).
    pub name_header: HeaderValue,
    /// The slot has a routing rule (an explicit 0 counts).
    pub has_rule: bool,
    pub ip_allow: Vec<IpNet>,
    pub pool: Option<Pool>,
    /// Ready-made `Set-Cookie` values pinning a client to this slot.
    pub cookie: HeaderValue,
    pub cookie_secure: HeaderValue,
    /// Its metric handles, attached by [`RouteTable::attach_metrics`] when
    /// the table is published (`None` in a table that never was).
    pub metrics: Option<Arc<crate::metrics::SlotHandles>>,
}

/// The instances of the deployment a slot runs now.
#[derive(Debug)]
pub struct Pool {
    pub build_version: Box<str>,
    pub instances: Vec<Instance>,
    /// How health checks and proxied requests reach the instances: the
    /// protocol (`instances_protocol`), the check, the TLS CA file.
    pub probe: crate::model::Probe,
    /// The deployment's own `upstream_read_timeout_secs`, if it sets one.
    pub read_timeout: Option<std::time::Duration>,
    /// The slot's outlier ejection, if it has it on (`outlier`).
    pub outlier: Option<crate::policy::Outlier>,
    next: AtomicUsize,
}

#[derive(Debug)]
pub struct Instance {
    /// `host:port` as configured.
    pub label: Box<str>,
    /// `None` when the name did not resolve; such an instance is never tried.
    pub addr: Option<SocketAddr>,
    pub healthy: bool,
    /// Its passive-ejection state, shared by every table that has the same
    /// address in the same slot (attached on publish, `outlier`).
    pub outlier: Option<Arc<crate::outlier::InstanceOutlier>>,
}

impl Instance {
    /// Taken out of the pool by outlier ejection.
    pub fn ejected(&self) -> bool {
        self.outlier.as_ref().is_some_and(|o| o.is_ejected())
    }
}

impl Pool {
    /// The slot can serve: at least one instance is up.
    pub fn is_live(&self) -> bool {
        self.instances.iter().any(|i| i.healthy && i.addr.is_some())
    }

    /// Some instance not in `tried` could still take a request.
    pub fn has_untried(&self, tried: u64) -> bool {
        self.instances
            .iter()
            .take(64)
            .enumerate()
            .any(|(i, inst)| tried & (1 << i) == 0 && inst.addr.is_some())
    }

    /// Pick the next instance round robin, skipping those in `tried` (a
    /// bitmask of indices). Healthy instances first; if every untried one is
    /// marked down, try those anyway — the health view may be stale, and a
    /// try is better than a certain 502. Ejected instances (`outlier`) come
    /// last of all: only when every other one refused a connection.
    pub fn pick(&self, tried: u64) -> Option<usize> {
        let n = self.instances.len().min(64);
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidate = |want_healthy: bool, want_ejected: bool| {
            (0..n).map(|k| (start + k) % n).find(|&i| {
                let inst = &self.instances[i];
                tried & (1 << i) == 0
                    && inst.addr.is_some()
                    && inst.healthy == want_healthy
                    && inst.ejected() == want_ejected
            })
        };
        candidate(true, false)
            .or_else(|| candidate(false, false))
            .or_else(|| candidate(true, true))
            .or_else(|| candidate(false, true))
    }
}

impl SiteRoutes {
    /// Percent of unpinned visitors slot `slot` gets by the weighted pick,
    /// as this table actually routes them (production gets the rest).
    pub fn share(&self, slot: u16) -> f64 {
        let mut previous = 0u32;
        let mut share = 0u32;
        for &(upper, s) in &self.weights {
            if s == slot {
                share += upper - previous;
            }
            previous = upper;
        }
        if slot == 0 {
            share += WEIGHT_SCALE - previous;
        }
        f64::from(share) * 100.0 / f64::from(WEIGHT_SCALE)
    }
}

impl RouteTable {
    /// Build the table for `state`, with the instances' `health` and the
    /// `addresses` of those given by name (`crate::names`). Never fails:
    /// `State::validate` has already refused anything that could not be
    /// routed, and an instance whose name does not resolve is kept as an
    /// unusable instance. No I/O.
    pub fn compile(
        state: &State,
        routing: &RoutingSection,
        health: &Health,
        addresses: &Addresses,
        version: u64,
    ) -> Self {
        let mut hosts = HashMap::default();
        let mut sites = Vec::with_capacity(state.sites.len());
        for site in state.sites.values() {
            let site_idx = sites.len() as u32;
            for h in &site.hostnames {
                hosts.insert(
                    h.as_bytes().into(),
                    HostTarget {
                        site: site_idx,
                        slot: None,
                    },
                );
            }
            let mut slots = Vec::with_capacity(site.slots.len());
            let matches = super::matches::SiteMatches::compile(
                site.slots_in_order()
                    .enumerate()
                    .map(|(i, s)| (i as u16, s.matches.as_slice())),
            );
            // (slot, basis points) of every rule, and of the live ones
            let mut shares = Vec::new();
            let mut live_shares = Vec::new();
            for slot in site.slots_in_order() {
                let slot_idx = slots.len() as u16;
                for h in site.slot_hostnames(slot) {
                    hosts.insert(
                        h.into_bytes().into_boxed_slice(),
                        HostTarget {
                            site: site_idx,
                            slot: Some(slot_idx),
                        },
                    );
                }
                let pool = slot.deployment.as_ref().map(|d| Pool {
                    build_version: d.build_version.as_str().into(),
                    instances: d
                        .instances
                        .iter()
                        .map(|label| Instance {
                            label: label.as_str().into(),
                            addr: label.parse().ok().or_else(|| addresses.get(label).copied()),
                            healthy: health.get(label).copied().unwrap_or(true),
                            outlier: None,
                        })
                        .collect(),
                    probe: d.probe(),
                    read_timeout: d
                        .upstream_read_timeout_secs
                        .map(std::time::Duration::from_secs),
                    outlier: slot.outlier,
                    next: AtomicUsize::new(0),
                });
                let live = pool.as_ref().is_some_and(Pool::is_live);
                if let Some(p) = slot.traffic_percent {
                    let bp = (p * 100.0).round() as u32;
                    if slot.name != PRODUCTION {
                        shares.push((slot_idx, bp));
                    }
                    // A slot that cannot serve gives its share to production
                    // rather than sending that share of users to an error.
                    if slot.name != PRODUCTION && live {
                        live_shares.push((slot_idx, bp));
                    }
                }
                let value = if slot.name == PRODUCTION {
                    "self"
                } else {
                    slot.name.as_str()
                };
                slots.push(SlotRoute {
                    name: slot.name.as_str().into(),
                    // names are validated to lower-case ASCII
                    name_header: HeaderValue::from_maybe_shared(bytes::Bytes::from(
                        slot.name.clone(),
                    ))
                    .unwrap_or_else(|_| HeaderValue::from_static("")),
                    has_rule: slot.traffic_percent.is_some(),
                    ip_allow: slot.ip_allow.clone(),
                    pool,
                    metrics: None,
                    cookie: set_cookie(routing, value, false),
                    cookie_secure: set_cookie(routing, value, true),
                });
            }
            // validated when the state was; an unusable key is no key
            let key = site
                .assignment_key
                .as_deref()
                .and_then(|k| crate::model::parse_assignment_key(k).ok())
                .and_then(|k| match k {
                    KeySource::Header(h) => http::HeaderName::from_bytes(h.as_bytes())
                        .ok()
                        .map(UserKey::Header),
                    KeySource::Cookie(c) => Some(UserKey::Cookie(Box::new(
                        memchr::memmem::Finder::new(c.as_bytes()).into_owned(),
                    ))),
                });
            let buckets =
                (routing.assignment == Assignment::Bucket || key.is_some()).then(|| BucketRoutes {
                    ranges: bucket_ranges(&shares),
                    key,
                });
            sites.push(SiteRoutes {
                name: site.name.as_str().into(),
                slots,
                // cumulative edges, as bucket ranges are
                weights: bucket_ranges(&live_shares),
                trusted_proxies: site.trusted_proxies.clone(),
                buckets,
                matches,
                shadows: Vec::new(),
            });
        }
        RouteTable {
            version,
            hosts,
            sites,
            cookie_name: routing.cookie_name.as_str().into(),
            query_param: routing.query_param.as_str().into(),
            cookie_finder: memchr::memmem::Finder::new(routing.cookie_name.as_bytes()).into_owned(),
            bucket_cookie_attrs: [false, true].map(|secure| {
                let full = set_cookie(routing, "b.0", secure);
                let text = full.to_str().unwrap_or("");
                text.find(';').map_or("", |i| &text[i..]).into()
            }),
        }
    }

    /// The `Set-Cookie` value giving a client bucket `bucket`. Built per
    /// response (one small allocation), and only for a client that gets a
    /// new bucket: 10,000 ready-made values per site would cost more.
    pub fn bucket_cookie(&self, bucket: u32, secure: bool) -> HeaderValue {
        let attrs = &self.bucket_cookie_attrs[usize::from(secure)];
        let text = format!("{}=b.{bucket}{attrs}", self.cookie_name);
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Look up a `Host` header value: case-insensitive, port ignored, a
    /// trailing dot ignored (`shop.example.com.` is the same fully qualified
    /// name), no allocation for names up to 255 bytes.
    pub fn lookup_host(&self, host: &[u8]) -> Option<HostTarget> {
        let host = strip_port(host);
        let host = host.strip_suffix(b".").unwrap_or(host);
        let mut buf = [0u8; 255];
        if host.is_empty() || host.len() > buf.len() {
            return None;
        }
        let lower = &mut buf[..host.len()];
        lower.copy_from_slice(host);
        lower.make_ascii_lowercase();
        self.hosts.get(&*lower).copied()
    }

    /// The searcher for the pin cookie's name, built once per table.
    pub fn cookie_finder(&self) -> &memchr::memmem::Finder<'static> {
        &self.cookie_finder
    }

    /// Every instance with how its deployment asks whether it serves,
    /// sorted by label; an instance in two deployments that ask differently
    /// is listed once, with the first slot's way.
    pub fn probes(&self) -> Vec<(String, crate::model::Probe)> {
        let mut out: Vec<(String, crate::model::Probe)> = self
            .sites
            .iter()
            .flat_map(|s| s.slots.iter())
            .filter_map(|s| s.pool.as_ref())
            .flat_map(|p| {
                let probe = &p.probe;
                p.instances
                    .iter()
                    .map(move |i| (i.label.to_string(), probe.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}

/// The `Set-Cookie` value pinning a client to `value` (`self` or a slot).
fn set_cookie(routing: &RoutingSection, value: &str, secure: bool) -> HeaderValue {
    let max_age = i64::try_from(routing.cookie_max_age_secs).unwrap_or(i64::MAX);
    let c = cookie::Cookie::build((routing.cookie_name.as_str(), value))
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age))
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure)
        .build();
    // Names are validated to visible ASCII, so this cannot fail.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(c.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `host:port` → `host`, also for `[v6]:port`.
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// Tests across the crate build tables from config text.
#[cfg(test)]
pub(crate) fn compile_toml(toml: &str, health: &Health) -> RouteTable {
    let (cfg, state) = crate::config::Config::parse(toml, std::path::Path::new("t.toml"))
        .expect("test config parses");
    RouteTable::compile(&state, &cfg.routing, health, &Addresses::new(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::compile_toml as table;

    const CFG: &str = r#"
[[sites]]
name = "shop"
hostnames = ["shop.example.com"]
slot_domain = "slots.local"
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:3001", "127.0.0.1:3002"]
[[sites.slots]]
name = "staging"
traffic_percent = 12.5
instances = ["127.0.0.1:3003"]
[[sites.slots]]
name = "beta"
traffic_percent = 30
instances = ["127.0.0.1:3004"]
[[sites.slots]]
name = "empty"
traffic_percent = 20
"#;

    #[test]
    fn hosts_and_weights() {
        let t = table(CFG, &Health::new());
        let site = &t.sites[0];
        assert_eq!(&*site.slots[0].name, "production");
        assert_eq!(
            t.lookup_host(b"SHOP.example.com:8080"),
            Some(HostTarget {
                site: 0,
                slot: None
            })
        );
        let staging = t.lookup_host(b"shop-staging.slots.local").unwrap();
        assert_eq!(&*site.slots[staging.slot.unwrap() as usize].name, "staging");
        assert_eq!(t.lookup_host(b"other.example.com"), None);
        // beta (3000 bp) then staging (1250 bp); "empty" has no deployment so
        // its share stays with production.
        let names: Vec<_> = site
            .weights
            .iter()
            .map(|(w, s)| (*w, &*site.slots[*s as usize].name))
            .collect();
        assert_eq!(names, vec![(3000, "beta"), (4250, "staging")]);
        assert_eq!(
            site.slots[1].cookie.to_str().unwrap(),
            "x-ms-routing-name=beta; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600"
        );
        assert_eq!(
            site.slots[0].cookie_secure.to_str().unwrap(),
            "x-ms-routing-name=self; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600"
        );
    }

    #[test]
    fn down_instances_are_skipped_and_dead_slots_lose_their_weight() {
        let health: Health = [
            ("127.0.0.1:3001".to_string(), false),
            ("127.0.0.1:3004".to_string(), false),
        ]
        .into();
        let t = table(CFG, &health);
        let site = &t.sites[0];
        let prod = site.slots[0].pool.as_ref().unwrap();
        for _ in 0..4 {
            assert_eq!(prod.pick(0), Some(1));
        }
        // the healthy one already tried: the down one is still worth a try
        assert_eq!(prod.pick(0b10), Some(0));
        assert_eq!(prod.pick(0b11), None);
        assert_eq!(site.weights.len(), 1);
    }

    #[test]
    fn round_robin_visits_every_instance() {
        let t = table(CFG, &Health::new());
        let prod = t.sites[0].slots[0].pool.as_ref().unwrap();
        let picks: Vec<_> = (0..4).map(|_| prod.pick(0).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
    }

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port(b"a.b:80"), b"a.b");
        assert_eq!(strip_port(b"a.b"), b"a.b");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
    }

    #[test]
    fn a_trailing_dot_names_the_same_host() {
        let t = table(CFG, &Health::new());
        let plain = t.lookup_host(b"shop.example.com");
        assert!(plain.is_some());
        assert_eq!(t.lookup_host(b"shop.example.com."), plain);
        assert_eq!(t.lookup_host(b"SHOP.example.com.:8080"), plain);
        assert_eq!(
            t.lookup_host(b"shop-staging.slots.local."),
            t.lookup_host(b"shop-staging.slots.local")
        );
        // only one dot, and never the whole name
        assert_eq!(t.lookup_host(b"shop.example.com.."), None);
        assert_eq!(t.lookup_host(b"."), None);
    }
}
