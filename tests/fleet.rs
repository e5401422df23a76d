//! A fleet (SPEC §9): real etcd servers started here, several real
//! `slotproxy serve` nodes sharing one state through them, real demo-app
//! upstreams. A change through one node is served by the others; concurrent
//! writes on two nodes both land; etcd going away leaves every node serving
//! (writes 503, `/healthz` degraded, `slotproxy_state_store_up` 0) and
//! coming back catches them up; a node starts from its snapshot while etcd
//! is down; a restored (older) etcd is what every node then serves; in a
//! three-member etcd cluster, the leader killed under load interrupts
//! neither proxying nor writes.

mod common;
use common::etcd::{Cluster, Etcd};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn shop(prod: &App, staging: &App) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{}"]
warmup_timeout_secs = 2
warmup_retries = 1
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["{}"]
warmup_timeout_secs = 2
warmup_retries = 1
"#,
        prod.addr(),
        staging.addr()
    )
}

fn with_etcd(text: String, endpoints: &str, prefix: &str) -> String {
    text.replacen(
        "[state]\n",
        &format!(
            "[state]\nbackend = \"etcd\"\netcd_endpoints = [{endpoints}]\netcd_prefix = \"{prefix}\"\n"
        ),
        1,
    )
}

/// A node on `etcd` under `prefix`, with the given sites as its config.
fn node(etcd: &Etcd, prefix: &str, sites: &str) -> Proxy {
    node_on(&format!("\"{}\"", etcd.url()), prefix, sites)
}

/// A node on the etcd `endpoints` (TOML strings, comma-separated).
fn node_on(endpoints: &str, prefix: &str, sites: &str) -> Proxy {
    Proxy::start_edited(sites, 1, |t| with_etcd(t, endpoints, prefix))
}

fn api(p: &Proxy, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    p.admin(method, path, body.map(|b| b.to_string()).as_deref())
}

fn set_staging(p: &Proxy, percent: u32) -> (u16, Value) {
    api(
        p,
        "PUT",
        "/api/v1/sites/shop/traffic-routing",
        Some(json!({"distribution": {"staging": percent}})),
    )
}

/// What a cookieless request to the production host name gets.
fn version(p: &Proxy) -> String {
    get(p, "shop.test", "/", &[]).version().to_string()
}

fn healthz(p: &Proxy) -> Value {
    api(p, "GET", "/healthz", None).1
}

fn store_up(p: &Proxy) -> f64 {
    value(&scrape(p), "slotproxy_state_store_up")
}

fn unique_prefix(name: &str) -> String {
    format!("/t-{name}")
}

#[test]
fn a_change_or_swap_on_one_node_is_served_by_every_node() {
    let etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("change");
    let sites = shop(&v1, &v2);
    let a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    // a node with a different config joins a seeded store: etcd is what is
    // true, its [[sites]] are not applied
    let c = node(&etcd, &prefix, &sites.replace("shop.test", "other.test"));
    for p in [&a, &b, &c] {
        assert_eq!(version(p), "v1");
    }
    let (code, body) = set_staging(&a, 100);
    assert_eq!(code, 200, "{body}");
    for p in [&b, &c] {
        wait_for(3, "the change through A to be served", || {
            (version(p) == "v2").then_some(())
        });
    }
    // the same revision everywhere
    let rev = api(&a, "GET", "/api/v1/sites/shop", None).1["revision"].clone();
    for p in [&b, &c] {
        wait_for(3, "the same revision", || {
            (api(p, "GET", "/api/v1/sites/shop", None).1["revision"] == rev).then_some(())
        });
    }

    // a swap started on B: C serves the new production
    set_staging(&b, 0);
    wait_for(3, "0% on C", || (version(&c) == "v1").then_some(()));
    let (code, body) = api(
        &b,
        "POST",
        "/api/v1/sites/shop/slots/staging/swap",
        Some(json!({"target_slot": "production"})),
    );
    assert_eq!(code, 202, "{body}");
    let id = body["operation_id"].as_str().unwrap().to_string();
    let op = wait_ended(&b, &b, &id);
    assert_eq!(op["status"], "succeeded", "{op}");
    for p in [&a, &c] {
        wait_for(3, "the swap to be served", || {
            (version(p) == "v2").then_some(())
        });
    }
    // the activity log reads the same on every node
    let log_of = |p: &Proxy| api(p, "GET", "/api/v1/sites/shop/activity", None).1;
    let on_b = log_of(&b);
    for p in [&a, &c] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let here = log_of(p);
            if here == on_b {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the activity log differs after 3 s:\non B: {on_b}\nhere: {here}"
            );
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }

    // the fleet list: three live nodes, each at the current revision
    let (code, fleet) = api(&a, "GET", "/api/v1/fleet", None);
    assert_eq!(code, 200, "{fleet}");
    let addresses: Vec<String> = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect();
    for p in [&a, &b, &c] {
        assert!(
            addresses.contains(&format!("127.0.0.1:{}", p.port)),
            "{fleet}"
        );
    }
    let (code, out, err) = a.cli(&["fleet", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("127.0.0.1:{}", c.port)), "{out}");
}

#[test]
fn concurrent_writes_on_two_nodes_are_all_kept() {
    let etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("concurrent");
    let sites = shop(&v1, &v2);
    let a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    // 24 slots created at once, half through each node: each write replaces
    // the whole document, so a lost update would lose a slot
    let names: Vec<String> = (0..24).map(|i| format!("s{i}")).collect();
    std::thread::scope(|s| {
        for (i, name) in names.iter().enumerate() {
            let p = if i % 2 == 0 { &a } else { &b };
            s.spawn(move || {
                let (code, body) = api(
                    p,
                    "PUT",
                    &format!("/api/v1/sites/shop/slots/{name}"),
                    Some(json!({})),
                );
                assert_eq!(code, 201, "{name}: {body}");
            });
        }
    });
    for p in [&a, &b] {
        wait_for(3, "every slot on every node", || {
            let site = api(p, "GET", "/api/v1/sites/shop", None).1;
            let slots: Vec<String> = site["slots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect();
            names.iter().all(|n| slots.contains(n)).then_some(())
        });
    }
}

#[test]
fn etcd_down_under_load_keeps_serving_refuses_writes_and_catches_up() {
    let mut etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("down");
    let sites = shop(&v1, &v2);
    let a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    assert_eq!(healthz(&a)["status"], "ok");
    assert_eq!(store_up(&a), 1.0);
    // clients sending requests back to back through both nodes during the
    // whole outage and the catching up
    let load = Load::start(&[&a, &b], "shop.test");
    load.wait_more(100, "the load to run");

    etcd.kill();
    for p in [&a, &b] {
        wait_for(15, "the node to notice etcd is gone", || {
            (healthz(p)["status"] == "degraded").then_some(())
        });
        assert_eq!(store_up(p), 0.0);
        assert!(
            healthz(p)["state_store"]
                .as_str()
                .unwrap()
                .contains(&etcd.url()),
            "{}",
            healthz(p)
        );
    }
    let (code, body) = set_staging(&a, 100);
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("state store unavailable: "),
        "{body}"
    );
    // reads answer from the last state
    let (code, _) = api(&b, "GET", "/api/v1/sites/shop", None);
    assert_eq!(code, 200);
    let answer = get(&b, "shop.test", "/", &[]);
    assert_eq!(answer.version(), "v1", "{answer:?}\n{}", b.log());
    // writers through both nodes from now on: refused while etcd is down,
    // acknowledged once it is back, none lost
    let writers = Writers::start(&[&a, &b]);
    load.wait_more(500, "proxied requests with etcd down");
    let refused = writers.stop();

    let writers = Writers::start(&[&a, &b]);
    etcd.spawn();
    for p in [&a, &b] {
        wait_for(15, "the node to notice etcd is back", || {
            (healthz(p)["status"] == "ok").then_some(())
        });
        assert_eq!(store_up(p), 1.0);
    }
    let back = std::time::Instant::now();
    wait_for(20, "writes acknowledged after etcd is back", || {
        (writers.acked_since(back) >= 10).then_some(())
    });
    let writes = writers.stop();
    assert!(
        !refused.is_empty() && refused.iter().all(|w| w.status == 503),
        "every write with etcd down is refused: {:?}",
        refused.iter().find(|w| w.status != 503)
    );
    let history = state_history(vec![etcd.url()], &prefix);
    let all_writes: Vec<Write> = refused.iter().chain(&writes).cloned().collect();
    let acked = check_writes(&all_writes, &history);
    assert!(acked >= 10);
    println!(
        "etcd down: {} writes refused (503) while it was down; {} writes while it came back: {} acknowledged (the rest 503), each in etcd's history",
        refused.len(),
        writes.len(),
        acked
    );
    // both nodes converge on the last document
    let (&last, _) = history.last_key_value().unwrap();
    for p in [&a, &b] {
        wait_for(10, "every node at the last revision", || {
            (revision_of(p) == Some(last)).then_some(())
        });
    }
    let (code, body) = set_staging(&a, 100);
    assert_eq!(code, 200, "{body}");
    wait_for(3, "B to follow again", || {
        (version(&b) == "v2").then_some(())
    });
    load.wait_more(100, "proxied requests after etcd is back");
    let (served, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} of {} proxied requests failed, first: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn a_node_starts_from_its_snapshot_while_etcd_is_down() {
    let mut etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("snapshot");
    let mut a = node(&etcd, &prefix, &shop(&v1, &v2));
    let (code, body) = set_staging(&a, 100);
    assert_eq!(code, 200, "{body}");
    a.kill();
    etcd.kill();
    // same config and state dir: the snapshot holds the change made through
    // the API, which the config does not
    a.spawn();
    assert_eq!(version(&a), "v2");
    assert_eq!(healthz(&a)["status"], "degraded");
    let (code, _) = set_staging(&a, 0);
    assert_eq!(code, 503);

    // no snapshot: refused, naming the endpoints
    let text = with_etcd(
        config_text(
            free_port(),
            free_port(),
            free_port(),
            Path::new("/nonexistent-dir-for-slotproxy-test/state"),
            &shop(&v1, &v2),
        ),
        &format!("\"{}\"", etcd.url()),
        &prefix,
    );
    let dir = tempfile::tempdir().unwrap();
    let text = text.replace(
        "/nonexistent-dir-for-slotproxy-test/state",
        &dir.path().join("empty").display().to_string(),
    );
    let (code, err) = refused(&text);
    assert_ne!(code, 0);
    assert!(err.contains("no local snapshot"), "{err}");
    assert!(err.contains(&etcd.url()), "{err}");

    // etcd back: the node writes again
    etcd.spawn();
    wait_for(15, "etcd to be noticed", || {
        (healthz(&a)["status"] == "ok").then_some(())
    });
    let (code, body) = set_staging(&a, 0);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_restored_etcd_is_read_anew_by_every_node() {
    let mut etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("restore");
    let sites = shop(&v1, &v2);
    let a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    let backup = etcd.data.with_extension("backup.db");
    etcd.ctl(&["snapshot", "save", backup.to_str().unwrap()])
        .unwrap();
    // changes after the backup, then a compaction of their history
    for pct in [30, 60, 100] {
        assert_eq!(set_staging(&a, pct).0, 200);
    }
    wait_for(3, "B to serve staging", || {
        (version(&b) == "v2").then_some(())
    });
    let rev: i64 = etcd
        .ctl(&["get", "/", "--prefix", "-w", "json"])
        .unwrap()
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .unwrap()
        .parse()
        .unwrap();
    etcd.ctl(&["compact", &rev.to_string()]).unwrap();
    assert_eq!(set_staging(&a, 0).0, 200);
    wait_for(3, "B to follow after the compaction", || {
        (version(&b) == "v1").then_some(())
    });
    assert_eq!(set_staging(&a, 100).0, 200);
    wait_for(3, "B to serve staging again", || {
        (version(&b) == "v2").then_some(())
    });

    // restore the backup (revision goes back): every node serves it
    etcd.kill();
    std::fs::remove_dir_all(&etcd.data).unwrap();
    let peer = format!("http://127.0.0.1:{}", etcd.peer_port);
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", backup.to_str().unwrap()])
        .arg(format!("--data-dir={}", etcd.data.display()))
        .arg("--name=test")
        .arg(format!("--initial-cluster=test={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    etcd.spawn();
    for p in [&a, &b] {
        wait_for(20, "the restored state to be served", || {
            (version(p) == "v1" && healthz(p)["status"] == "ok").then_some(())
        });
    }
}

/// `shop` with settings hooks and sticky settings (as tests/swap.rs), and
/// `extra` keys on the staging slot (e.g. a slow warm-up path).
fn shop_with_settings(prod: &App, staging: &App, extra: &str) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{}"]
settings_hook_path = "/settings"
[sites.slots.settings]
FLAG = "old"
[sites.slots.sticky_settings]
DB = "prod-db"
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["{}"]
settings_hook_path = "/settings"
{extra}
[sites.slots.settings]
FLAG = "new"
[sites.slots.sticky_settings]
DB = "staging-db"
"#,
        prod.addr(),
        staging.addr()
    )
}

fn start_swap(p: &Proxy) -> (u16, Value) {
    api(
        p,
        "POST",
        "/api/v1/sites/shop/slots/staging/swap",
        Some(json!({"target_slot": "production"})),
    )
}

/// Operation `id` once `p` shows it ended (30 s at most; the failure
/// shows the record and what `runner`, the node running it, logged).
fn wait_ended(p: &Proxy, runner: &Proxy, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let op = operation(p, id);
        // (a node may not have heard of the operation yet: a 404 body)
        if op["status"].as_str().is_some_and(|s| s != "running") {
            return op;
        }
        if std::time::Instant::now() > deadline {
            let log = runner.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "operation {id} not ended after 30 s: {op}\nlog of its node (newest first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

fn operation(p: &Proxy, id: &str) -> Value {
    api(p, "GET", &format!("/api/v1/operations/{id}"), None).1
}

/// What a request pinned to production (`x-ms-routing-name=self`) gets.
fn prod_version(p: &Proxy) -> String {
    get(p, "shop.test", "/", &[("cookie", "x-ms-routing-name=self")])
        .version()
        .to_string()
}

#[test]
fn one_swap_per_site_in_the_whole_fleet() {
    let etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("swaplock");
    // a slow warm-up keeps the winner busy while the other asks
    let sites = shop_with_settings(&v1, &v2, "warmup_path = \"/?delay_ms=1500\"");
    let a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    // both at once, one through each node
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| start_swap(&a));
        let tb = s.spawn(|| start_swap(&b));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let (winner, loser, won, lost) = match (ra.0, rb.0) {
        (202, 409) => (&a, &b, ra.1, rb.1),
        (409, 202) => (&b, &a, rb.1, ra.1),
        other => panic!(
            "want one 202 and one 409, got {other:?}: {} / {}",
            ra.1, rb.1
        ),
    };
    let id = won["operation_id"].as_str().unwrap().to_string();
    let error = lost["error"].as_str().unwrap();
    assert!(error.contains("already running on node"), "{error}");
    assert!(
        error.contains(&format!("127.0.0.1:{}", winner.port)) && error.contains(&id),
        "the 409 names the node holding the site and its operation: {error}"
    );
    // the same through the node that runs it: refused here too
    let (code, body) = start_swap(winner);
    assert_eq!(code, 409, "{body}");
    // (the other node may not have heard of the operation yet: 404 body)
    let op = wait_ended(loser, winner, &id);
    assert_eq!(op["status"], "succeeded", "{op}");
    // released: the other node may swap back at once
    let (code, body) = start_swap(loser);
    assert_eq!(code, 202, "{body}");
    let back = body["operation_id"].as_str().unwrap().to_string();
    let op = wait_ended(winner, loser, &back);
    assert_eq!(op["status"], "succeeded", "{op}");
    for p in [&a, &b] {
        wait_for(3, "production back on v1", || {
            (prod_version(p) == "v1").then_some(())
        });
    }
}

#[test]
fn a_swap_whose_node_dies_is_taken_over_when_its_lease_expires() {
    let etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("swapdies");
    // the warm-up path answers after 20 s: the swap is sure to be waiting
    // on it when its node is killed
    let sites = shop_with_settings(
        &v1,
        &v2,
        "warmup_path = \"/?delay_ms=20000\"\nwarmup_timeout_secs = 30",
    );
    let mut a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    let (code, body) = start_swap(&a);
    assert_eq!(code, 202, "{body}");
    let id = body["operation_id"].as_str().unwrap().to_string();
    // B sees phase 1 done (it gave staging production's sticky settings)
    // and the slow part begin: the restart wait and the warm-up both GET
    // the warm-up path
    let slow_phase = wait_for(10, "the warm-up path to be waited on, seen on B", || {
        let op = operation(&b, &id);
        op["phases"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["name"] == "wait_restart" || p["name"] == "warmup")
                .map(|p| p["name"].as_str().unwrap().to_string())
        })
    });
    assert_eq!(
        get(&b, "shop-staging.slots.test", "/", &[]).field("settings"),
        Some(r#"{"DB":"prod-db","FLAG":"new"}"#)
    );
    // while A runs it, B refuses a second one
    let (code, body) = start_swap(&b);
    assert_eq!(code, 409, "{body}");

    a.kill();
    // the claim's lease (5 s) expires; B takes over: interrupted, production
    // untouched, staging's own settings posted back
    let op = wait_for(15, "B to mark the swap interrupted", || {
        let op = operation(&b, &id);
        (op["status"] == "interrupted").then_some(op)
    });
    assert!(
        op["error"]
            .as_str()
            .unwrap()
            .contains(&format!("phase {slow_phase}")),
        "{op}"
    );
    wait_for(10, "staging's own settings to be re-applied", || {
        let r = get(&b, "shop-staging.slots.test", "/", &[]);
        (r.field("settings") == Some(r#"{"DB":"staging-db","FLAG":"new"}"#)).then_some(())
    });
    // (the record of the re-posting is written once the POSTs are done)
    wait_for(10, "the re-posting of settings to be recorded", || {
        let recovered = operation(&b, &id);
        recovered["instances"]
            .as_array()?
            .iter()
            .any(|i| i["phase"] == "recover_settings" && i["instance"] == v2.addr())
            .then_some(())
    });
    // the site still serves, from production as it was
    let r = get(&b, "shop.test", "/", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(prod_version(&b), "v1");
    // and the site is free again: a swap through B starts
    a.spawn();
    let (code, body) = start_swap(&b);
    assert_eq!(code, 202, "{body}");
}

/// Clients sending requests back to back over kept-alive connections until
/// stopped (proxied requests, or admin API reads); every answer but a good
/// 200 is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Proxied requests to `host`, two clients per node.
    fn start(nodes: &[&Proxy], host: &str) -> Load {
        let targets = nodes
            .iter()
            .chain(nodes.iter())
            .map(|p| (p.url("/"), Some(host.to_string()), "version: "))
            .collect();
        Self::on(targets)
    }

    /// Admin API reads (`GET /api/v1/sites/shop`), one client per node.
    fn reads(nodes: &[&Proxy]) -> Load {
        let targets = nodes
            .iter()
            .map(|p| (p.admin_url("/api/v1/sites/shop"), None, "\"revision\""))
            .collect();
        Self::on(targets)
    }

    /// One client per target: its URL, a `Host` for proxied requests (the
    /// admin token otherwise), what a good answer's body holds.
    fn on(targets: Vec<(String, Option<String>, &'static str)>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (url, host, good) in targets {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            threads.push(std::thread::spawn(move || {
                let http = client();
                while !stop.load(Ordering::SeqCst) {
                    let req = match &host {
                        Some(h) => http.get(&url).header("host", h),
                        None => http.get(&url).bearer_auth(TOKEN),
                    };
                    let failed = match req.send() {
                        Ok(r) if r.status() == 200 => match r.text() {
                            Ok(body) if body.contains(good) => None,
                            Ok(body) => Some(format!("{url}: 200 but not the answer: {body:?}")),
                            Err(e) => Some(format!("{url}: body: {e}")),
                        },
                        Ok(r) => Some(format!("{url}: {} {:?}", r.status(), r.text())),
                        Err(e) => Some(format!("{url}: {e}")),
                    };
                    match failed {
                        None => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(f) => failures.lock().unwrap().push(f),
                    }
                }
            }));
        }
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Wait for `n` more successful requests than now.
    fn wait_more(&self, n: usize, what: &str) {
        let from = self.ok();
        wait_for(30, what, || (self.ok() >= from + n).then_some(()));
    }

    /// Stop; (requests that succeeded, the failures).
    fn stop(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.ok(), failures)
    }
}

/// One admin write and what came of it.
#[derive(Debug, Clone)]
struct Write {
    at: std::time::Instant,
    percent: u32,
    status: u16,
    /// The state revision a 200 answered with.
    revision: Option<u64>,
    error: String,
}

/// One writer per node setting staging's traffic share back to back, each
/// from its own range of values (so no write is a no-op repeat of the
/// previous one), until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Write>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(nodes: &[&Proxy]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (w, p) in nodes.iter().enumerate() {
            let url = p.admin_url("/api/v1/sites/shop/traffic-routing");
            let (stop, done) = (stop.clone(), done.clone());
            threads.push(std::thread::spawn(move || {
                let http = client();
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    // writer w uses 1 + 20w .. 19 + 20w
                    let percent = 1 + 20 * w as u32 + i % 19;
                    i += 1;
                    let r = http
                        .put(&url)
                        .bearer_auth(TOKEN)
                        .json(&json!({"distribution": {"staging": percent}}))
                        .send();
                    let at = std::time::Instant::now();
                    let write = match r {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body: Value = r.json().unwrap_or(Value::Null);
                            Write {
                                at,
                                percent,
                                status,
                                revision: body["revision"].as_u64(),
                                error: body["error"].as_str().unwrap_or("").to_string(),
                            }
                        }
                        Err(e) => Write {
                            at,
                            percent,
                            status: 0,
                            revision: None,
                            error: format!("no answer: {e}"),
                        },
                    };
                    done.lock().unwrap().push(write);
                }
            }));
        }
        Writers {
            stop,
            done,
            threads,
        }
    }

    fn acked_since(&self, t: std::time::Instant) -> usize {
        self.done
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.status == 200 && w.at > t)
            .count()
    }

    fn stop(mut self) -> Vec<Write> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.done.lock().unwrap())
    }
}

/// Every version etcd kept of `<prefix>/state`, by document revision
/// (each revision once: a second document with the same revision would be
/// a write that overwrote another).
fn state_history(endpoints: Vec<String>, prefix: &str) -> BTreeMap<u64, Value> {
    let key = format!("{prefix}/state");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let read = async {
            let mut c = etcd_client::Client::connect(endpoints, None).await.unwrap();
            let now = c.get(key.as_str(), None).await.unwrap();
            let last = now.kvs()[0].mod_revision();
            let mut events = c
                .watch(
                    key.as_str(),
                    Some(etcd_client::WatchOptions::new().with_start_revision(1)),
                )
                .await
                .unwrap();
            let mut history = BTreeMap::new();
            loop {
                let resp = events.message().await.unwrap().expect("the watch goes on");
                for ev in resp.events() {
                    let kv = ev.kv().unwrap();
                    let doc: Value = serde_json::from_slice(kv.value()).unwrap();
                    let rev = doc["revision"].as_u64().unwrap();
                    assert!(
                        history.insert(rev, doc).is_none(),
                        "two documents with revision {rev} in etcd's history: a lost update"
                    );
                    if kv.mod_revision() >= last {
                        return history;
                    }
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), read)
            .await
            .expect("etcd's history read within 20 s")
    })
}

fn staging_percent(doc: &Value) -> Option<f64> {
    doc["state"]["sites"]["shop"]["slots"]["staging"]["traffic_percent"].as_f64()
}

/// Check what writers did: every write acknowledged, or refused with the
/// documented error; every acknowledged one is in etcd's history with the
/// value it set. Returns how many were acknowledged.
fn check_writes(writes: &[Write], history: &BTreeMap<u64, Value>) -> usize {
    let mut acked = 0;
    for w in writes {
        match w.status {
            200 => {
                acked += 1;
                let rev = w.revision.expect("a 200 names its revision");
                let doc = history
                    .get(&rev)
                    .unwrap_or_else(|| panic!("acknowledged write {w:?} is not in etcd's history"));
                assert_eq!(staging_percent(doc), Some(w.percent as f64), "{w:?}");
            }
            503 => assert!(w.error.starts_with("state store unavailable: "), "{w:?}"),
            409 => assert!(w.error.contains("try again"), "{w:?}"),
            _ => panic!("a write neither acknowledged nor refused as documented: {w:?}"),
        }
    }
    acked
}

fn revision_of(p: &Proxy) -> Option<u64> {
    api(p, "GET", "/api/v1/sites/shop", None).1["revision"].as_u64()
}

#[test]
fn a_cluster_member_killed_under_load_interrupts_nothing() {
    let mut cluster = Cluster::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("cluster");
    let sites = shop(&v1, &v2);
    let endpoints = cluster.endpoints();
    let nodes: Vec<Proxy> = (0..3)
        .map(|_| node_on(&endpoints, &prefix, &sites))
        .collect();
    let all: Vec<&Proxy> = nodes.iter().collect();

    let load = Load::start(&all, "shop.test");
    let reads = Load::reads(&all);
    let writers = Writers::start(&all[..2]);
    load.wait_more(200, "the load to run");
    let started = std::time::Instant::now();
    wait_for(20, "writes to be acknowledged", || {
        (writers.acked_since(started) >= 10).then_some(())
    });

    // Two outages, each a kill -9 and a restart: first the member that is
    // every node's first endpoint (their calls and their watch sessions
    // start there), then whichever member leads then (an election, and
    // every client stream on it cut).
    let mut down = Vec::new();
    for outage in ["first endpoint", "leader"] {
        let victim = if outage == "leader" {
            cluster.leader()
        } else {
            0
        };
        cluster.members[victim].kill();
        let killed = std::time::Instant::now();
        // long enough for every node's keep-alive (every 2 s) and watch to
        // have met the dead member
        std::thread::sleep(std::time::Duration::from_secs(4));
        wait_for(20, "writes acknowledged with a member down", || {
            (writers.acked_since(killed) >= 10).then_some(())
        });
        load.wait_more(200, "proxied requests with a member down");
        reads.wait_more(20, "admin reads with a member down");
        if victim == 0 {
            // the nodes' watch sessions were on it: they moved on, not down
            for p in &all {
                wait_for(10, "the node's session to move to another member", || {
                    p.log()
                        .contains("following etcd through another member")
                        .then_some(())
                });
            }
        }
        for p in &all {
            let h = healthz(p);
            assert_eq!(
                h["status"],
                "ok",
                "{outage} down is not degraded: {h}\n{}",
                p.log()
                    .lines()
                    .filter(|l| l.contains("state store"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        cluster.members[victim].spawn();
        let back = std::time::Instant::now();
        down.push((killed, back, victim));
        wait_for(20, "writes acknowledged after the member is back", || {
            (writers.acked_since(back) >= 10).then_some(())
        });
        load.wait_more(200, "proxied requests after the member is back");
    }
    let writes = writers.stop();
    let (served, failures) = load.stop();
    let (read, read_failures) = reads.stop();

    assert!(
        failures.is_empty(),
        "{} of {} proxied requests failed, first: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        read_failures.is_empty(),
        "{} of {} admin reads failed, first: {:?}",
        read_failures.len(),
        read + read_failures.len(),
        &read_failures[..read_failures.len().min(5)]
    );
    let history = state_history(cluster.members.iter().map(|m| m.url()).collect(), &prefix);
    let acked = check_writes(&writes, &history);
    let during: Vec<usize> = down
        .iter()
        .map(|&(killed, back, _)| {
            writes
                .iter()
                .filter(|w| w.status == 200 && w.at > killed && w.at < back)
                .count()
        })
        .collect();
    println!(
        "cluster: {served} proxied requests and {read} admin reads, 0 failed; {} writes, {acked} acknowledged ({during:?} with member {:?} down), {} documents in etcd's history",
        writes.len(),
        down.iter().map(|d| d.2).collect::<Vec<_>>(),
        history.len()
    );

    // every node and the restarted member converge on the last document
    let (&last, doc) = history.last_key_value().unwrap();
    let percent = staging_percent(doc);
    for p in &all {
        wait_for(10, "every node at the last revision", || {
            (revision_of(p) == Some(last)).then_some(())
        });
        assert_eq!(
            api(p, "GET", "/api/v1/sites/shop", None).1["slots"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "staging")
                .unwrap()["traffic_percent"]
                .as_f64(),
            percent
        );
    }
    // every member, the restarted ones too, holds it (a local read)
    for m in &cluster.members {
        wait_for(10, "every member to hold the last document", || {
            let out = m
                .ctl(&[
                    "get",
                    &format!("{prefix}/state"),
                    "--consistency=s",
                    "--print-value-only",
                ])
                .ok()?;
            let doc: Value = serde_json::from_str(out.trim()).ok()?;
            (doc["revision"].as_u64() == Some(last)).then_some(())
        });
    }
    // and a change after it all is served everywhere
    let (code, body) = set_staging(&nodes[2], 100);
    assert_eq!(code, 200, "{body}");
    for p in &all {
        wait_for(3, "the change to be served", || {
            (version(p) == "v2").then_some(())
        });
    }
}

/// The lock gap closed at the store: a write under a claim lands only while
/// the claim's key is still bound to the writer's lease, checked by etcd in
/// the same transaction, not by the holder's (possibly late) keep-alive.
#[test]
fn a_write_under_a_claim_whose_lease_is_gone_is_refused_by_etcd() {
    use slotproxy::store::{Persisted, StateStore, StoreError};
    let etcd = Etcd::start();
    let prefix = unique_prefix("fence");
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = |dir: &Path, id: &str| open_store(&etcd, &prefix, dir, id);
    let (a, b) = (open(dirs.0.path(), "node-a"), open(dirs.1.path(), "node-b"));
    assert!(a.load().unwrap().is_none());
    let mut doc = Persisted {
        revision: 1,
        ..Default::default()
    };
    a.save(&doc).unwrap();
    let claim = a
        .lease("swap/shop", "op-1")
        .unwrap()
        .expect("a fleet lease");
    let fence = claim.fence();
    // while the claim stands, a write under it lands
    doc.revision = 2;
    a.save_fenced(&doc, &fence).unwrap();

    // the lease ends behind the holder's back (as when etcd expires it);
    // the very next write, before any keep-alive could tell, is refused
    etcd.ctl(&["lease", "revoke", &format!("{:x}", fence.lease)])
        .unwrap();
    doc.revision = 3;
    match a.save_fenced(&doc, &fence) {
        Err(StoreError::ClaimLost { name, why }) => {
            assert_eq!(name, "swap/shop");
            assert!(why.contains("expired or was revoked"), "{why}");
        }
        other => panic!("want ClaimLost, got {other:?}"),
    }
    // another node takes the claim over: refused, naming it
    assert_eq!(b.load().unwrap().map(|d| d.revision), Some(2));
    let taken = b
        .lease("swap/shop", "op-2")
        .unwrap()
        .expect("a fleet lease");
    let err = a.save_fenced(&doc, &fence).unwrap_err();
    assert!(err.to_string().contains("node-b holds it now"), "{err}");
    // nothing of A's landed; the new holder writes under its own claim
    let stored = etcd
        .ctl(&["get", &format!("{prefix}/state"), "--print-value-only"])
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&stored).unwrap()["revision"],
        2
    );
    b.save_fenced(&doc, &taken.fence()).unwrap();
    // a plain write needs no claim
    doc.revision = 4;
    b.save(&doc).unwrap();
}

/// The same end to end: the claim's lease revoked while the swap warms up;
/// the switch never happens (production never changes on any node), the
/// operation ends failed (or interrupted, by the node that saw the claim go).
#[test]
fn a_swap_whose_lease_is_revoked_mid_warmup_never_switches() {
    let etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("revoked");
    let sites = shop_with_settings(&v1, &v2, "warmup_path = \"/?delay_ms=1500\"");
    let a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    let (code, body) = start_swap(&a);
    assert_eq!(code, 202, "{body}");
    let id = body["operation_id"].as_str().unwrap().to_string();
    wait_for(10, "the warm-up to begin", || {
        let op = operation(&a, &id);
        op["phases"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == "warmup" || p["name"] == "wait_restart")
            .then_some(())
    });
    let claim = etcd
        .ctl(&["get", &format!("{prefix}/claims/swap/shop"), "-w", "json"])
        .unwrap();
    let lease = serde_json::from_str::<Value>(&claim).unwrap()["kvs"][0]["lease"]
        .as_i64()
        .expect("the swap's claim is a leased key");
    etcd.ctl(&["lease", "revoke", &format!("{lease:x}")])
        .unwrap();
    // From now on production must never change, on either node: watched
    // until A's swap has ended (the site is free on A again).
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, urls) = (stop.clone(), [a.url("/"), b.url("/")]);
        std::thread::spawn(move || {
            let http = client();
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for url in &urls {
                    let body = http
                        .get(url)
                        .header("host", "shop.test")
                        .header("cookie", "x-ms-routing-name=self")
                        .send()
                        .and_then(|r| r.text())
                        .unwrap_or_default();
                    if !body.contains("version: v1") {
                        seen.push(format!("{url}: {body:?}"));
                    }
                }
            }
            seen
        })
    };
    // B sees the claim go and may mark the operation interrupted; A, done
    // warming up, finds its claim lost and ends it failed (the two records
    // race: the activity log is last-writer-wins). A's own claim is held
    // until then, so A answers 409 until its swap has ended.
    let (code, body) = wait_for(30, "A's swap to end and the site to be free", || {
        let (code, body) = start_swap(&a);
        (code != 409).then_some((code, body))
    });
    stop.store(true, Ordering::SeqCst);
    let changed = watcher.join().unwrap();
    assert!(
        changed.is_empty(),
        "production changed after the lease was revoked: {:?}",
        &changed[..changed.len().min(3)]
    );
    let op = operation(&a, &id);
    match op["status"].as_str() {
        Some("failed") => {
            let error = op["error"].as_str().unwrap();
            assert!(
                error.contains("lease on swap/shop expired")
                    || error.contains("no longer this node's"),
                "{op}"
            );
            assert!(
                op["phases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "switch" && p["result"] == "failed"),
                "{op}"
            );
        }
        Some("interrupted") => {}
        _ => panic!("want failed or interrupted: {op}"),
    }
    // and the site can be swapped again
    assert_eq!(code, 202, "{body}");
}

#[test]
fn nodes_starting_together_on_an_empty_prefix_seed_it_once() {
    let etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("seeding");
    let sites = shop(&v1, &v2);
    // three nodes at once, each with its own host name in its config: one
    // seeds, the others load what it wrote (no merge of their configs)
    let nodes: Vec<Proxy> = std::thread::scope(|s| {
        let started: Vec<_> = (0..3)
            .map(|i| {
                let (sites, prefix, etcd) = (&sites, &prefix, &etcd);
                s.spawn(move || {
                    node(
                        etcd,
                        prefix,
                        &sites.replace("shop.test", &format!("shop{i}.test")),
                    )
                })
            })
            .collect();
        started.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let site = |p: &Proxy| api(p, "GET", "/api/v1/sites/shop", None).1;
    let first = site(&nodes[0]);
    let hostnames = first["hostnames"].clone();
    assert_eq!(hostnames.as_array().map(|h| h.len()), Some(1), "{first}");
    assert_eq!(first["revision"], 1, "one write: the seed, {first}");
    for p in &nodes {
        let s = site(p);
        assert_eq!(s["hostnames"], hostnames, "{s}");
        assert_eq!(s["revision"], 1, "{s}");
    }
    // and they serve it: the seeded host everywhere, the others nowhere
    let seeded = hostnames[0].as_str().unwrap();
    for p in &nodes {
        assert_eq!(get(p, seeded, "/", &[]).version(), "v1");
        for i in 0..3 {
            let other = format!("shop{i}.test");
            if other != seeded {
                assert_eq!(get(p, &other, "/", &[]).status, 404, "{other}");
            }
        }
    }
}

#[test]
fn the_fleet_list_drops_a_dead_node_when_its_lease_ends() {
    let etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("fleetlist");
    let sites = shop(&v1, &v2);
    let a = node(&etcd, &prefix, &sites);
    let mut b = node(&etcd, &prefix, &sites);
    let listed = |p: &Proxy| {
        let (code, fleet) = api(&a, "GET", "/api/v1/fleet", None);
        assert_eq!(code, 200, "{fleet}");
        fleet["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["address"] == format!("127.0.0.1:{}", p.port))
    };
    wait_for(10, "both nodes listed", || {
        (listed(&a) && listed(&b)).then_some(())
    });
    b.kill();
    // the node lease is 10 s: gone after it, A still listed
    wait_for(20, "the dead node to leave the list", || {
        (!listed(&b)).then_some(())
    });
    assert!(listed(&a));
}

/// The store of a node named `id` on `etcd` under `prefix` (no process:
/// the library's `EtcdStore`, its snapshot in `dir`).
fn open_store(
    etcd: &Etcd,
    prefix: &str,
    dir: &Path,
    id: &str,
) -> std::sync::Arc<slotproxy::store::EtcdStore> {
    use slotproxy::config::{StateBackend, StateSection};
    let cfg = StateSection {
        dir: dir.to_path_buf(),
        backend: StateBackend::Etcd,
        etcd_endpoints: vec![etcd.url()],
        etcd_prefix: prefix.to_string(),
        ..Default::default()
    };
    slotproxy::store::EtcdStore::open(&cfg, id, "127.0.0.1:1", std::time::Duration::from_secs(1))
        .unwrap()
}

/// A node taking over an operation it read as running marks it
/// interrupted only over what it read: the final record its slow (not
/// dead) runner wrote meanwhile is not overwritten.
#[test]
fn a_takeover_does_not_write_over_a_final_record() {
    use slotproxy::activity::{Action, Operation, Status};
    use slotproxy::store::StateStore;
    let etcd = Etcd::start();
    let prefix = unique_prefix("takeover");
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let runner = open_store(&etcd, &prefix, dirs.0.path(), "node-a");
    let taker = open_store(&etcd, &prefix, dirs.1.path(), "node-b");
    runner.load().unwrap();
    taker.load().unwrap();
    let running = Operation::new("shop", "staging", "production", Action::Swap);
    runner.save_operation(&running).unwrap();
    // B reads it running
    let read = taker.load_operation(&running.id).unwrap().unwrap();
    assert_eq!(read.status, Status::Running);
    // A ends it
    let mut ended = running.clone();
    ended.finish(
        Status::Failed,
        Some("the lease on swap/shop expired".into()),
    );
    runner.save_operation(&ended).unwrap();
    // B's interrupted record, over its stale read: refused
    let mut interrupted = read.clone();
    interrupted.finish(Status::Interrupted, Some("taken over".into()));
    assert!(!taker.save_operation_if(&interrupted, &read).unwrap());
    assert_eq!(
        taker.load_operation(&running.id).unwrap(),
        Some(ended.clone())
    );
    // over a fresh read it is written
    let fresh = taker.load_operation(&running.id).unwrap().unwrap();
    let mut noted = fresh.clone();
    noted.error = Some("noted".into());
    assert!(taker.save_operation_if(&noted, &fresh).unwrap());
    assert_eq!(runner.load_operation(&running.id).unwrap(), Some(noted));
}

/// A state write whose answer was lost with its member is retried on
/// another one, where the compare fails on the write's own revision: when
/// etcd holds exactly the document being written, it counts as written
/// (applying the change again would apply it twice: a swap's exchange would
/// swap back). The same situation made with two nodes: B writes a
/// document, then A, still on the older base, writes the identical one.
#[test]
fn a_write_etcd_already_holds_counts_as_written() {
    use slotproxy::store::{Persisted, StateStore, StoreError};
    let etcd = Etcd::start();
    let prefix = unique_prefix("landed");
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open_store(&etcd, &prefix, dirs.0.path(), "node-a");
    let b = open_store(&etcd, &prefix, dirs.1.path(), "node-b");
    let mut doc = Persisted {
        revision: 1,
        ..Default::default()
    };
    a.load().unwrap();
    a.save(&doc).unwrap();
    b.load().unwrap();
    doc.revision = 2;
    b.save(&doc).unwrap();
    // A's base is revision 1: its compare fails, but etcd holds its document
    a.save(&doc).unwrap();
    // a different document on the stale base is a conflict, as ever
    let mut other = doc.clone();
    other.revision = 3;
    b.save(&other).unwrap();
    let mut mine = doc.clone();
    mine.revision = 3;
    mine.state = serde_json::from_value(json!({"sites": {"shop": {
        "name": "shop", "hostnames": ["shop.test"], "slots": {}
    }}}))
    .unwrap();
    match a.save(&mine) {
        Err(StoreError::Conflict(current)) => assert_eq!(*current, other),
        r => panic!("want a conflict, got {r:?}"),
    }
}
