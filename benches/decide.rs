//! The per-request routing decision on a production host name, through the
//! very function `SlotProxy::request_filter` calls (`routing::route`): pull
//! the routing value out of the raw query string and `Cookie` header bytes,
//! roll the thread-local RNG, then `decide`.
//!
//! The `bucket_*` and `user_key_*` cases route a site in sticky-bucket
//! assignment (docs/guide/buckets.md).
//!
//! The `matches_*` cases give the site's `qa` slot three `match` entries
//! (SPEC §16) — a header value, a header regex, a cookie — that the
//! cookieless request does not fit (`matches_none_fit`, to compare with
//! `cookieless_weighted`: the goal is within a few ns) or fits
//! (`matches_header_fits`).
//!
//! Target: ≤ 100 ns for every case.

mod support;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use slotproxy::config::{Assignment, RoutingSection};
use slotproxy::policy::MatchEntry;
use slotproxy::routing::table::Addresses;
use slotproxy::routing::{route, Health, RouteTable};

fn request(path: &str, cookies: &[&[u8]]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
    req.insert_header("host", "site0.example.com")
        .expect("host");
    req.insert_header("user-agent", "bench/1.0").expect("ua");
    req.insert_header("accept", "*/*").expect("accept");
    for c in cookies {
        req.append_header("cookie", http::HeaderValue::from_bytes(c).expect("cookie"))
            .expect("cookie");
    }
    req
}

fn bench_decide(c: &mut Criterion) {
    let state = support::state(1);
    let table = RouteTable::compile(
        &state,
        &RoutingSection::default(),
        &Health::new(),
        &Addresses::new(),
        1,
    );
    let target = table
        .lookup_host(b"site0.example.com")
        .expect("the fixture's production host");
    let garbage: Vec<u8> = {
        // a malformed, repeated and oversized jumble: every branch of the
        // parser, and the request must still route (as if cookieless)
        let mut g = b";;;=;x-ms-routing-name;==; a=\"; x-ms-routing-name=\"".to_vec();
        g.extend_from_slice(b"; x-ms-routing-name=");
        g.extend(std::iter::repeat_n(b'z', 300));
        g.extend_from_slice(b"; x-ms-routing-name=staging; =====; ;x=1;");
        g.extend(std::iter::repeat_n(b"k=v; ".as_slice(), 40).flatten());
        g
    };
    let cases: Vec<(&str, RequestHeader, &str)> = vec![
        ("cookieless_weighted", request("/products/42", &[]), "weighted"),
        (
            "valid_pin",
            request(
                "/products/42",
                &[b"_ga=GA1.2.1234567890.1700000000; session=8f14e45fceea167a5a36dedd4bea2543; x-ms-routing-name=staging"],
            ),
            "cookie",
        ),
        (
            "stale_pin",
            request(
                "/products/42",
                &[b"_ga=GA1.2.1234567890.1700000000; session=8f14e45fceea167a5a36dedd4bea2543; x-ms-routing-name=removed-slot"],
            ),
            "re-bucketed",
        ),
        (
            "query_opt_in",
            request("/products/42?color=red&x-ms-routing-name=qa", &[]),
            "query",
        ),
        ("garbage_cookies", request("/products/42", &[&garbage]), "re-bucketed"),
    ];
    let mut group = c.benchmark_group("decide");
    for (name, req, want) in &cases {
        // the fixture must route the way the case name says
        let got = route(&table, target, req).reason.as_str();
        assert!(
            got == *want || (*want == "re-bucketed" && got == "weighted"),
            "{name}: routed as {got}, expected {want}"
        );
        group.bench_function(*name, |b| b.iter(|| route(&table, target, black_box(req))));
    }

    // Sticky buckets (`[routing] assignment = "bucket"`) and a user key.
    let mut keyed = support::state(1);
    for site in keyed.sites.values_mut() {
        site.assignment_key = Some("header:X-User-Id".into());
    }
    let bucket_routing = RoutingSection {
        assignment: Assignment::Bucket,
        ..RoutingSection::default()
    };
    let buckets = RouteTable::compile(
        &state,
        &bucket_routing,
        &Health::new(),
        &Addresses::new(),
        1,
    );
    let keyed = RouteTable::compile(
        &keyed,
        &bucket_routing,
        &Health::new(),
        &Addresses::new(),
        1,
    );
    let mut with_key = request("/products/42", &[b"_ga=GA1.2.1234567890.1700000000"]);
    with_key
        .insert_header("x-user-id", "user-8f14e45fceea167a5a36dedd4bea2543")
        .expect("key");
    let bucket_cases: Vec<(&str, &RouteTable, RequestHeader, &str)> = vec![
        ("bucket_new", &buckets, request("/products/42", &[]), "weighted"),
        (
            "bucket_cookie",
            &buckets,
            request(
                "/products/42",
                &[b"_ga=GA1.2.1234567890.1700000000; session=8f14e45fceea167a5a36dedd4bea2543; x-ms-routing-name=b.4821"],
            ),
            "cookie",
        ),
        (
            "bucket_garbage",
            &buckets,
            request("/products/42", &[b"x-ms-routing-name=b.99999"]),
            "re-bucketed",
        ),
        ("user_key_header", &keyed, with_key, "user-key"),
    ];
    for (name, table, req, want) in &bucket_cases {
        let target = table.lookup_host(b"site0.example.com").expect("host");
        let got = route(table, target, req).reason.as_str();
        assert_eq!(got, *want, "{name}");
        group.bench_function(*name, |b| b.iter(|| route(table, target, black_box(req))));
    }

    // Three match entries on `qa` that the request does not fit.
    let mut matched = support::state(1);
    for site in matched.sites.values_mut() {
        let qa = site.slots.get_mut("qa").expect("fixture has qa");
        qa.matches = vec![
            MatchEntry {
                header: Some("x-beta".into()),
                value: Some("true".into()),
                ..Default::default()
            },
            MatchEntry {
                header: Some("x-canary".into()),
                regex: Some("^(yes|1|true)$".into()),
                ..Default::default()
            },
            MatchEntry {
                cookie: Some("plan".into()),
                value: Some("enterprise".into()),
                ..Default::default()
            },
        ];
    }
    let matched = RouteTable::compile(
        &matched,
        &RoutingSection::default(),
        &Health::new(),
        &Addresses::new(),
        1,
    );
    let mut fits = request("/products/42", &[]);
    fits.insert_header("x-beta", "true").expect("x-beta");
    let match_cases: Vec<(&str, RequestHeader, &str)> = vec![
        ("matches_none_fit", request("/products/42", &[]), "weighted"),
        ("matches_header_fits", fits, "match"),
    ];
    let target = matched.lookup_host(b"site0.example.com").expect("host");
    for (name, req, want) in &match_cases {
        let got = route(&matched, target, req).reason.as_str();
        assert_eq!(got, *want, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| route(&matched, target, black_box(req)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
