//! Randomised property tests of the pure parsers a client's bytes reach
//! first (issue 14): query and cookie extraction, the host lookup, and the
//! request-head check of `limits`. Each property runs a bounded number of
//! cases from a fixed seed, so `cargo test` stays fast and a failure
//! reproduces; set `SLOTPROXY_FUZZ_CASES` (and `SLOTPROXY_FUZZ_SEED`) for a
//! longer run, e.g. `SLOTPROXY_FUZZ_CASES=5000000 cargo test --release
//! --test parsers_fuzz`.
//!
//! Inputs come from small alphabets rich in the bytes that matter (`=`,
//! `;`, `&`, spaces, quotes, line ends), so collisions and edge cases are
//! frequent; each parser is compared with a plainly written model of what
//! docs/guide/routing.md says it does.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slotproxy::limits::{check_head, Head};
use slotproxy::routing::decide::{cookie_value, query_value, MAX_VALUE_LEN};

fn cases() -> usize {
    std::env::var("SLOTPROXY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn rng() -> StdRng {
    let seed = std::env::var("SLOTPROXY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14);
    StdRng::seed_from_u64(seed)
}

fn bytes(rng: &mut StdRng, alphabet: &[u8], max_len: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max_len);
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

/// The routing rules: the value of the one `name=value` pair; absent when missing,
/// repeated, empty or too long.
fn query_model<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let values: Vec<&[u8]> = query
        .split(|&b| b == b'&')
        .filter_map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            let k = kv.next()?;
            (k == name).then(|| kv.next().unwrap_or(&[]))
        })
        .collect();
    match values[..] {
        [v] if !v.is_empty() && v.len() <= MAX_VALUE_LEN => Some(v),
        _ => None,
    }
}

#[test]
fn query_value_matches_the_model() {
    let mut rng = rng();
    for _ in 0..cases() {
        let name = bytes(&mut rng, b"ab", 3);
        let query = bytes(&mut rng, b"ab=&x", 40);
        let got = query_value(&query, &name);
        assert_eq!(
            got,
            query_model(&query, &name),
            "query {:?} name {:?}",
            String::from_utf8_lossy(&query),
            String::from_utf8_lossy(&name)
        );
    }
}

/// Cookies as routing reads them: `;`-separated `name=value` pairs, whitespace around
/// both ignored, a quoted value unquoted; absent when missing, repeated
/// (across all headers), empty or too long.
fn cookie_model<'a>(headers: &[&'a [u8]], name: &[u8]) -> Option<&'a [u8]> {
    let mut values = Vec::new();
    for h in headers {
        for part in h.split(|&b| b == b';') {
            let Some(rest) = part.trim_ascii_start().strip_prefix(name) else {
                continue;
            };
            let Some(v) = rest.trim_ascii_start().strip_prefix(b"=") else {
                continue;
            };
            let mut v = v.trim_ascii();
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            values.push(v);
        }
    }
    match values[..] {
        [v] if !v.is_empty() && v.len() <= MAX_VALUE_LEN => Some(v),
        _ => None,
    }
}

#[test]
fn cookie_value_matches_the_model() {
    let mut rng = rng();
    for _ in 0..cases() {
        // names are cookie tokens (config refuses ; = , quotes, spaces)
        let mut name = bytes(&mut rng, b"ab", 3);
        if name.is_empty() {
            name.push(b'a');
        }
        let headers: Vec<Vec<u8>> = (0..rng.random_range(0..3))
            .map(|_| bytes(&mut rng, b"ab=; \"x\t", 40))
            .collect();
        let refs: Vec<&[u8]> = headers.iter().map(|h| h.as_slice()).collect();
        let got = cookie_value(refs.iter().copied(), &name);
        assert_eq!(
            got,
            cookie_model(&refs, &name),
            "headers {:?} name {:?}",
            refs.iter()
                .map(|h| String::from_utf8_lossy(h))
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&name)
        );
    }
}

#[test]
fn a_long_value_is_never_a_routing_instruction() {
    let long = "s".repeat(MAX_VALUE_LEN + 1);
    assert_eq!(query_value(format!("n={long}").as_bytes(), b"n"), None);
    let header = format!("n={long}");
    assert_eq!(cookie_value([header.as_bytes()].into_iter(), b"n"), None);
}

#[test]
fn request_head_verdicts_are_stable_as_bytes_arrive() {
    // The header reader stops at the first verdict that is not Incomplete;
    // more bytes must never turn a verdict back into Incomplete, and a
    // complete header must stay complete.
    let mut rng = rng();
    for _ in 0..cases() {
        let max_header = rng.random_range(16..80);
        let max_uri = rng.random_range(1..max_header);
        let buf = bytes(&mut rng, b"GET /a HTP1.\r\n:x", 120);
        let mut earlier = Head::Incomplete;
        for end in 0..=buf.len() {
            let now = check_head(&buf[..end], max_header, max_uri);
            let ok = match earlier {
                Head::Incomplete => true,
                // the request line and the header's end are already fixed
                Head::Complete => now == Head::Complete,
                Head::TooLarge => matches!(now, Head::TooLarge | Head::UriTooLong),
                // a target judged while its line still arrives; the reader
                // has stopped there, so later bytes do not matter
                Head::UriTooLong => true,
            };
            assert!(
                ok,
                "{:?}: {earlier:?} then {now:?}",
                String::from_utf8_lossy(&buf[..end])
            );
            if end <= max_header && !matches!(now, Head::UriTooLong) {
                assert_ne!(now, Head::TooLarge, "{:?}", String::from_utf8_lossy(&buf));
            }
            if now != Head::Incomplete && earlier == Head::Incomplete {
                earlier = now;
            }
        }
    }
}

#[test]
fn host_lookup_ignores_case_port_and_one_trailing_dot() {
    let (cfg, state) = slotproxy::config::Config::parse(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.example.com", "a.b"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:1"]
[[sites.slots]]
name = "staging"
instances = ["127.0.0.1:2"]
"#,
        std::path::Path::new("fuzz.toml"),
    )
    .unwrap();
    let table = slotproxy::routing::RouteTable::compile(
        &state,
        &cfg.routing,
        &slotproxy::routing::Health::new(),
        &slotproxy::routing::table::Addresses::new(),
        1,
    );
    let names = ["shop.example.com", "a.b", "shop-staging.slots.test"];
    let mut rng = rng();
    for _ in 0..cases() {
        let name = names[rng.random_range(0..names.len())];
        let want = table.lookup_host(name.as_bytes());
        assert!(want.is_some());
        let mut host: Vec<u8> = name
            .bytes()
            .map(|b| {
                if rng.random_bool(0.5) {
                    b.to_ascii_uppercase()
                } else {
                    b
                }
            })
            .collect();
        if rng.random_bool(0.5) {
            host.push(b'.');
        }
        if rng.random_bool(0.5) {
            host.extend_from_slice(format!(":{}", rng.random_range(0..70000)).as_bytes());
        }
        assert_eq!(
            table.lookup_host(&host),
            want,
            "{:?}",
            String::from_utf8_lossy(&host)
        );
        // arbitrary bytes: never a panic, and only a configured name matches
        let junk = bytes(&mut rng, b"ab.:[]Sx", 12);
        if let Some(t) = table.lookup_host(&junk) {
            let s = String::from_utf8_lossy(&junk).to_ascii_lowercase();
            assert!(names.iter().any(|n| s.starts_with(n)), "{s:?} -> {t:?}");
        }
    }
}
