//! Fleet propagation (issue 10's benchmark; docs/performance/
//! control-plane.md, "Fleet propagation"): the time from an acknowledged
//! admin write on node A to
//! the other nodes serving the new route, over `FLEET_CHANGES` (default
//! 1000) changes, printed as p50/p90/p99/max.
//!
//! Everything real, on loopback, with the bench profile's (release) build
//! of the `slotproxy` binary: etcd processes started here, `slotproxy
//! serve` nodes, demo-app upstreams (the tests' harness, tests/common).
//! Two setups: two nodes on one etcd; three nodes on a three-member etcd
//! cluster (every node given all three endpoints).
//!
//! ```sh
//! cargo bench --bench fleet_propagation            # FLEET_CHANGES=1000
//! ```
//!
//! Each change is a `PUT /api/v1/sites/shop/traffic-routing` on A,
//! alternating staging 100 % and 0 %. The clock starts when A has answered
//! 200 (the write is in etcd and served by A) and stops when every other
//! node has served a response from the new slot, each polled back to back
//! over one kept-alive connection (a poll is one proxied request, so a
//! figure includes up to one request's time of resolution).

#[path = "../tests/common/mod.rs"]
mod common;

use common::etcd::{Cluster, Etcd};
use common::{client, App, Proxy, TOKEN};
use std::time::{Duration, Instant};

fn shop(prod: &App, staging: &App) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{}"]
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["{}"]
"#,
        prod.addr(),
        staging.addr()
    )
}

/// A node on the etcd `endpoints` (TOML strings) under `prefix`.
fn node(endpoints: &str, prefix: &str, sites: &str) -> Proxy {
    Proxy::start_edited(sites, 1, |t| {
        t.replacen(
            "[state]\n",
            &format!(
                "[state]\nbackend = \"etcd\"\netcd_endpoints = [{endpoints}]\netcd_prefix = \"{prefix}\"\n"
            ),
            1,
        )
    })
}

/// `changes` writes on `nodes[0]`; for each, how long until every other
/// node served the new slot.
fn measure(nodes: &[Proxy], changes: usize) -> Vec<Duration> {
    let http = client();
    let write_url = nodes[0].admin_url("/api/v1/sites/shop/traffic-routing");
    let served = |p: &Proxy| {
        http.get(p.url("/"))
            .header("host", "shop.test")
            .send()
            .and_then(|r| r.text())
            .map(|body| {
                body.lines()
                    .find_map(|l| l.strip_prefix("version: "))
                    .unwrap_or("-")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let mut took = Vec::with_capacity(changes);
    for i in 0..changes {
        let (percent, want) = if i % 2 == 0 { (100, "v2") } else { (0, "v1") };
        let r = http
            .put(&write_url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(format!(r#"{{"distribution": {{"staging": {percent}}}}}"#))
            .send()
            .expect("node A answers");
        assert_eq!(r.status().as_u16(), 200, "change {i}: {:?}", r.text());
        let acked = Instant::now();
        for p in &nodes[1..] {
            // back to back: a pause here would be the figure
            while served(p) != want {
                assert!(
                    acked.elapsed() < Duration::from_secs(3),
                    "change {i} not served by 127.0.0.1:{} within 3 s",
                    p.port
                );
            }
        }
        took.push(acked.elapsed());
    }
    took
}

fn row(setup: &str, mut took: Vec<Duration>) {
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    println!(
        "| {setup} | {} | {} | {} | {} | {} |",
        took.len(),
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(*took.last().unwrap())
    );
}

fn main() {
    // `cargo test --benches` runs bench targets once as a smoke test: a
    // handful of changes then (cargo bench passes --bench)
    let benching = std::env::args().any(|a| a == "--bench");
    let changes: usize = std::env::var("FLEET_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1000 } else { 10 });
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let sites = shop(&v1, &v2);
    println!("\n| setup | changes | p50 ms | p90 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");

    let etcd = Etcd::start();
    let one = format!("\"{}\"", etcd.url());
    let nodes: Vec<Proxy> = (0..2).map(|_| node(&one, "/bench-one", &sites)).collect();
    row("2 nodes, 1 etcd", measure(&nodes, changes));
    drop(nodes);
    drop(etcd);

    let cluster = Cluster::start();
    let nodes: Vec<Proxy> = (0..3)
        .map(|_| node(&cluster.endpoints(), "/bench-cluster", &sites))
        .collect();
    row(
        "3 nodes, 3-member etcd cluster (A → B and C)",
        measure(&nodes, changes),
    );
}
