//! The per-request routing decision (README, "How a request is routed"): a
//! slot host name goes to its slot; a production host name is routed by the
//! query parameter, then the pin cookie, then a weighted random pick.
//!
//! [`route`] is what the proxy calls for every request (and what the
//! benchmark measures): it extracts the values from the request and rolls
//! the thread's RNG. Everything below it is pure and allocation-free: the
//! raw query string, the raw `Cookie` header values and a roll in, which
//! slot serves the request and whether to (re)set the pin cookie out.

use super::table::{HostTarget, RouteTable, SiteRoutes, WEIGHT_SCALE};
use rand::Rng;

/// Longest routing value we look at; anything longer is treated as absent.
pub const MAX_VALUE_LEN: usize = 64;

/// Why a request went where it went (for the access log and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The Host was a slot host name.
    SlotHost,
    /// `?x-ms-routing-name=` opted in or out.
    Query,
    /// A valid pin cookie.
    Cookie,
    /// No usable pin: weighted random pick.
    Weighted,
    /// A stale or unusable pin cookie: picked again and overwritten.
    Rebucketed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SlotHost => "slot-host",
            Reason::Query => "query",
            Reason::Cookie => "cookie",
            Reason::Weighted => "weighted",
            Reason::Rebucketed => "re-bucketed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into `SiteRoutes::slots`.
    pub slot: u16,
    pub reason: Reason,
    /// The response must set the pin cookie for `slot`.
    pub set_cookie: bool,
}

/// Route a request whose Host led to `target` in `table`.
pub fn route(table: &RouteTable, target: HostTarget, req: &http::request::Parts) -> Decision {
    if let Some(slot) = target.slot {
        return Decision {
            slot,
            reason: Reason::SlotHost,
            set_cookie: false,
        };
    }
    let site = &table.sites[target.site as usize];
    let query = req
        .uri
        .query()
        .and_then(|q| query_value(q.as_bytes(), table.query_param.as_bytes()));
    let cookie = cookie_value_with(
        req.headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes()),
        table.cookie_finder(),
    );
    let roll = rand::rng().random_range(0..WEIGHT_SCALE);
    decide(site, query, cookie, roll)
}

/// Route a request on a production host name.
///
/// `query` and `cookie` are the routing values already extracted (see
/// [`query_value`] and [`cookie_value`]); `roll` is uniform in
/// `0..WEIGHT_SCALE`.
pub fn decide(
    site: &SiteRoutes,
    query: Option<&[u8]>,
    cookie: Option<&[u8]>,
    roll: u32,
) -> Decision {
    if let Some(v) = query {
        let target = if v.eq_ignore_ascii_case(b"self") {
            Some(0)
        } else {
            // production by name, or any slot with a rule (explicit 0 counts)
            find_slot(site, v).filter(|&i| i == 0 || site.slots[i as usize].has_rule)
        };
        if let Some(slot) = target {
            return Decision {
                slot,
                reason: Reason::Query,
                set_cookie: true,
            };
        }
    }
    let mut reason = Reason::Weighted;
    if let Some(v) = cookie {
        if v.eq_ignore_ascii_case(b"self") {
            return Decision {
                slot: 0,
                reason: Reason::Cookie,
                set_cookie: false,
            };
        }
        if let Some(i) = find_slot(site, v) {
            let slot = &site.slots[i as usize];
            if i != 0 && slot.has_rule && slot.pool.as_ref().is_some_and(|p| p.is_live()) {
                return Decision {
                    slot: i,
                    reason: Reason::Cookie,
                    set_cookie: false,
                };
            }
        }
        reason = Reason::Rebucketed;
    }
    Decision {
        slot: weighted(site, roll),
        reason,
        set_cookie: true,
    }
}

/// The slot a roll in `0..WEIGHT_SCALE` lands on.
pub fn weighted(site: &SiteRoutes, roll: u32) -> u16 {
    debug_assert!(roll < WEIGHT_SCALE);
    for &(upper, slot) in &site.weights {
        if roll < upper {
            return slot;
        }
    }
    0
}

fn find_slot(site: &SiteRoutes, name: &[u8]) -> Option<u16> {
    site.slots
        .iter()
        .position(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
        .map(|i| i as u16)
}

/// The value of `name` in a raw query string. Absent when missing, empty,
/// repeated or over [`MAX_VALUE_LEN`]: a malformed parameter never fails a
/// request, it is just not a routing instruction.
pub fn query_value<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut found = None;
    for pair in query.split(|&b| b == b'&') {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        if k == name {
            if found.is_some() {
                return None;
            }
            found = Some(v);
        }
    }
    found.filter(|v| !v.is_empty() && v.len() <= MAX_VALUE_LEN)
}

/// The value of cookie `name` across all `Cookie` header values. Absent when
/// missing, empty, set more than once or over [`MAX_VALUE_LEN`].
///
/// Rather than splitting every `name=value` pair, this searches for `name`
/// itself (SIMD `memmem`) and checks each hit is a whole cookie name: a
/// browser's `Cookie` header is mostly other cookies, and a hostile one can be
/// kilobytes of junk, so the cost should follow the hits, not the bytes.
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> Option<&'a [u8]> {
    cookie_value_with(headers, &memchr::memmem::Finder::new(name))
}

/// [`cookie_value`] with a searcher built once (building one costs about as
/// much as a search; `RouteTable` keeps one for its cookie name).
pub fn cookie_value_with<'a>(
    headers: impl Iterator<Item = &'a [u8]>,
    finder: &memchr::memmem::Finder<'_>,
) -> Option<&'a [u8]> {
    let name = finder.needle();
    if name.is_empty() {
        return None;
    }
    let mut found = None;
    for header in headers {
        for at in finder.find_iter(header) {
            let Some(v) = cookie_at(header, at, name.len()) else {
                continue;
            };
            if found.is_some() {
                return None;
            }
            found = Some(v);
        }
    }
    found.filter(|v| !v.is_empty() && v.len() <= MAX_VALUE_LEN)
}

/// The value of the cookie whose name is `header[at..at + len]`, if that is a
/// whole name: only whitespace between it and the previous `;` (or the start)
/// and between it and its `=`.
fn cookie_at(header: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    let before = header[..at].trim_ascii_end();
    if before.last().is_some_and(|&b| b != b';') {
        return None;
    }
    let after = header[at + len..].trim_ascii_start();
    let rest = after.strip_prefix(b"=")?;
    let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
    let mut v = rest[..end].trim_ascii();
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        v = &v[1..v.len() - 1];
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::table::Health;

    const CFG: &str = r#"
[[sites]]
name = "shop"
hostnames = ["shop.example.com"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:3001"]
[[sites.slots]]
name = "staging"
traffic_percent = 20
instances = ["127.0.0.1:3002"]
[[sites.slots]]
name = "optin"
traffic_percent = 0
instances = ["127.0.0.1:3003"]
[[sites.slots]]
name = "norule"
instances = ["127.0.0.1:3004"]
"#;

    use crate::routing::table::compile_toml as table;

    fn idx(site: &SiteRoutes, name: &str) -> u16 {
        find_slot(site, name.as_bytes()).unwrap()
    }

    #[test]
    fn query_opt_in_and_out() {
        let t = table(CFG, &Health::new());
        let s = &t.sites[0];
        let d = decide(s, Some(b"optin"), Some(b"staging"), 0);
        assert_eq!(
            (d.slot, d.reason, d.set_cookie),
            (idx(s, "optin"), Reason::Query, true)
        );
        let d = decide(s, Some(b"self"), Some(b"staging"), 0);
        assert_eq!((d.slot, d.reason), (0, Reason::Query));
        let d = decide(s, Some(b"production"), None, 0);
        assert_eq!((d.slot, d.reason), (0, Reason::Query));
        // no rule: the parameter is ignored and the cookie decides
        let d = decide(s, Some(b"norule"), Some(b"staging"), 0);
        assert_eq!(
            (d.slot, d.reason, d.set_cookie),
            (idx(s, "staging"), Reason::Cookie, false)
        );
        let d = decide(s, Some(b"nosuchslot"), None, 9999);
        assert_eq!((d.slot, d.reason), (0, Reason::Weighted));
    }

    #[test]
    fn cookie_pins_and_stale_pins() {
        let t = table(CFG, &Health::new());
        let s = &t.sites[0];
        let d = decide(s, None, Some(b"self"), 0);
        assert_eq!((d.slot, d.reason, d.set_cookie), (0, Reason::Cookie, false));
        let d = decide(s, None, Some(b"optin"), 9999);
        assert_eq!((d.slot, d.reason), (idx(s, "optin"), Reason::Cookie));
        for stale in [&b"norule"[..], b"gone", b"production", b"\xff\x00"] {
            let d = decide(s, None, Some(stale), 9999);
            assert_eq!(
                (d.slot, d.reason, d.set_cookie),
                (0, Reason::Rebucketed, true)
            );
        }
    }

    #[test]
    fn pin_to_a_dead_slot_is_rebucketed() {
        let health: Health = [("127.0.0.1:3002".to_string(), false)].into();
        let t = table(CFG, &health);
        let s = &t.sites[0];
        let d = decide(s, None, Some(b"staging"), 0);
        assert_eq!(
            (d.slot, d.reason, d.set_cookie),
            (0, Reason::Rebucketed, true)
        );
        // and it no longer takes part in the split
        assert!(s.weights.is_empty());
    }

    #[test]
    fn weights_cover_the_scale() {
        let t = table(CFG, &Health::new());
        let s = &t.sites[0];
        assert_eq!(weighted(s, 0), idx(s, "staging"));
        assert_eq!(weighted(s, 1999), idx(s, "staging"));
        assert_eq!(weighted(s, 2000), 0);
        assert_eq!(weighted(s, WEIGHT_SCALE - 1), 0);
    }

    #[test]
    fn extracting_values() {
        let n = b"x-ms-routing-name";
        assert_eq!(
            query_value(b"a=1&x-ms-routing-name=staging", n),
            Some(&b"staging"[..])
        );
        assert_eq!(
            query_value(b"x-ms-routing-name=a&x-ms-routing-name=b", n),
            None
        );
        assert_eq!(query_value(b"x-ms-routing-name", n), None);
        assert_eq!(query_value(b"x-ms-routing-name=", n), None);
        assert_eq!(
            query_value(&[b"x-ms-routing-name=".as_slice(), &[b'a'; 65]].concat(), n),
            None
        );
        assert_eq!(query_value(b"&&=&", n), None);

        let c = |h: &[&'static [u8]]| cookie_value(h.iter().copied(), n);
        assert_eq!(
            c(&[b"a=b; x-ms-routing-name=staging"]),
            Some(&b"staging"[..])
        );
        assert_eq!(
            c(&[b"x-ms-routing-name=\"staging\""]),
            Some(&b"staging"[..])
        );
        assert_eq!(c(&[b"x-ms-routing-name=a", b"x-ms-routing-name=b"]), None);
        assert_eq!(c(&[b"x-ms-routing-name=a; x-ms-routing-name=a"]), None);
        assert_eq!(c(&[b";;;=;x-ms-routing-name"]), None);
        assert_eq!(c(&[b"other=1"]), None);
        assert_eq!(c(&[b"\xff\xfe", b"x-ms-routing-name=qa"]), Some(&b"qa"[..]));
        // the name inside another cookie's name or value is not the cookie
        assert_eq!(c(&[b"my-x-ms-routing-name=a"]), None);
        assert_eq!(c(&[b"x-ms-routing-names=a"]), None);
        assert_eq!(c(&[b"a=x-ms-routing-name=b"]), None);
        assert_eq!(
            c(&[b"a=x-ms-routing-name; x-ms-routing-name = beta ;b=1"]),
            Some(&b"beta"[..])
        );
        assert_eq!(c(&[b"\tx-ms-routing-name=beta"]), Some(&b"beta"[..]));
        assert_eq!(c(&[b"x-ms-routing-name"]), None);
        assert_eq!(c(&[b"x-ms-routing-name=\"\""]), None);
        assert_eq!(c(&[b"x-ms-routing-name=; a=b"]), None);
    }

    /// The obvious split-every-pair parser `cookie_value` replaced; the fast
    /// one must agree with it on anything.
    fn cookie_value_by_pairs<'a>(headers: &[&'a [u8]], name: &[u8]) -> Option<&'a [u8]> {
        let mut found = None;
        for header in headers {
            for pair in header.split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                    continue;
                };
                if pair[..eq].trim_ascii() != name {
                    continue;
                }
                if found.is_some() {
                    return None;
                }
                let mut v = pair[eq + 1..].trim_ascii();
                if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                    v = &v[1..v.len() - 1];
                }
                found = Some(v);
            }
        }
        found.filter(|v| !v.is_empty() && v.len() <= MAX_VALUE_LEN)
    }

    #[test]
    fn cookie_search_agrees_with_splitting_pairs() {
        use rand::Rng;
        // pieces that make names, separators and near-misses likely
        let pieces: &[&[u8]] = &[
            b"pin", b"pin", b"=", b";", b" ", b"\t", b"\"", b"a", b"xpin", b"pinx", b"=pin", b"s",
        ];
        let mut rng = rand::rng();
        for _ in 0..50_000 {
            let headers: Vec<Vec<u8>> = (0..rng.random_range(1..3))
                .map(|_| {
                    (0..rng.random_range(0..12))
                        .flat_map(|_| pieces[rng.random_range(0..pieces.len())].iter().copied())
                        .collect()
                })
                .collect();
            let refs: Vec<&[u8]> = headers.iter().map(|h| h.as_slice()).collect();
            assert_eq!(
                cookie_value(refs.iter().copied(), b"pin"),
                cookie_value_by_pairs(&refs, b"pin"),
                "headers {:?}",
                headers
                    .iter()
                    .map(|h| String::from_utf8_lossy(h))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Pearson's chi-squared statistic over 100,000 cookieless decisions
    /// drawn with the real RNG must stay under the p = 0.001 critical value.
    #[test]
    fn weighted_split_passes_chi_squared() {
        use rand::Rng;
        // critical values of chi-squared at p = 0.001 by degrees of freedom
        let critical = [0.0, 10.828, 13.816, 16.266, 18.467];
        let cases: &[&[f64]] = &[
            &[20.0],
            &[50.0],
            &[1.0, 2.5],
            &[10.0, 30.0, 25.5],
            &[33.0, 33.0, 34.0],
        ];
        use rand::SeedableRng;
        // seeded: the statistic is tested, not the luck of one run (an
        // unseeded run would fail 0.1% of the time per case by design)
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5107_9e0c);
        for weights in cases {
            let mut cfg = String::from(
                "[[sites]]\nname = \"s\"\nhostnames = [\"s.test\"]\n[[sites.slots]]\nname = \"production\"\ninstances = [\"127.0.0.1:1\"]\n",
            );
            for (i, w) in weights.iter().enumerate() {
                cfg += &format!(
                    "[[sites.slots]]\nname = \"slot{i}\"\ntraffic_percent = {w}\ninstances = [\"127.0.0.1:{}\"]\n",
                    i + 2
                );
            }
            let t = table(&cfg, &Health::new());
            let site = &t.sites[0];
            let n = 100_000u32;
            let mut counts = vec![0u32; site.slots.len()];
            for _ in 0..n {
                let d = decide(site, None, None, rng.random_range(0..WEIGHT_SCALE));
                counts[d.slot as usize] += 1;
            }
            let mut expected = vec![0.0f64; site.slots.len()];
            for (i, w) in weights.iter().enumerate() {
                expected[idx(site, &format!("slot{i}")) as usize] = w / 100.0 * n as f64;
            }
            expected[0] = n as f64 - expected.iter().sum::<f64>();
            let chi2: f64 = counts
                .iter()
                .zip(&expected)
                .filter(|(_, &e)| e > 0.0)
                .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
                .sum();
            let dof = expected.iter().filter(|&&e| e > 0.0).count() - 1;
            assert!(
                chi2 < critical[dof],
                "weights {weights:?}: chi2 {chi2} ≥ {} (counts {counts:?})",
                critical[dof]
            );
        }
    }
}
