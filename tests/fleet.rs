//! A fleet (SPEC §9): real etcd servers started here, several real
//! `slotproxy serve` nodes sharing one state through them, real demo-app
//! upstreams. A change through one node is served by the others; concurrent
//! writes on two nodes both land; etcd going away leaves every node serving
//! (writes 503, `/healthz` degraded, `slotproxy_state_store_up` 0) and
//! coming back catches them up; a node starts from its snapshot while etcd
//! is down; a restored (older) etcd is what every node then serves.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One etcd server on loopback ports, killed on drop.
struct Etcd {
    child: Option<Child>,
    port: u16,
    peer_port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Etcd {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            data: dir.path().join("data"),
            _dir: dir,
        };
        e.spawn();
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.data.with_extension("log")).unwrap();
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data.display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (./dev test installs etcd-server)");
        self.child = Some(child);
        wait_for(30, "etcd to answer", || {
            self.ctl(&["get", "/probe"]).is_ok().then_some(())
        });
    }

    /// `kill -9`: the data directory stays.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .arg("--command-timeout=2s")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

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
    let endpoints = format!("\"{}\"", etcd.url());
    Proxy::start_edited(sites, 1, |t| with_etcd(t, &endpoints, prefix))
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
    let op = wait_for(30, "the swap to end", || {
        let (_, op) = api(&b, "GET", &format!("/api/v1/operations/{id}"), None);
        (op["status"] != "running").then_some(op)
    });
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
        wait_for(3, "the same activity log", || {
            (log_of(p) == on_b).then_some(())
        });
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
fn etcd_down_keeps_serving_refuses_writes_and_catches_up() {
    let mut etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("down");
    let sites = shop(&v1, &v2);
    let a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    assert_eq!(healthz(&a)["status"], "ok");
    assert_eq!(store_up(&a), 1.0);

    etcd.kill();
    for p in [&a, &b] {
        wait_for(15, "the node to notice etcd is gone", || {
            // proxying goes on all along
            let r = get(p, "shop.test", "/", &[]);
            assert_eq!(r.status, 200, "{}", r.body);
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
    assert_eq!(version(&b), "v1");

    etcd.spawn();
    for p in [&a, &b] {
        wait_for(15, "the node to notice etcd is back", || {
            (healthz(p)["status"] == "ok").then_some(())
        });
        assert_eq!(store_up(p), 1.0);
    }
    let (code, body) = set_staging(&a, 100);
    assert_eq!(code, 200, "{body}");
    wait_for(3, "B to follow again", || {
        (version(&b) == "v2").then_some(())
    });
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
    let op = wait_for(30, "the swap to end", || {
        let op = operation(loser, &id);
        (op["status"] != "running").then_some(op)
    });
    assert_eq!(op["status"], "succeeded", "{op}");
    // released: the other node may swap back at once
    let (code, body) = start_swap(loser);
    assert_eq!(code, 202, "{body}");
    let back = body["operation_id"].as_str().unwrap().to_string();
    let op = wait_for(30, "the swap back to end", || {
        let op = operation(winner, &back);
        (op["status"] != "running").then_some(op)
    });
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
    let recovered = operation(&b, &id);
    assert!(
        recovered["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["phase"] == "recover_settings" && i["instance"] == v2.addr()),
        "{recovered}"
    );
    // the site still serves, from production as it was
    let r = get(&b, "shop.test", "/", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(prod_version(&b), "v1");
    // and the site is free again: a swap through B starts
    a.spawn();
    let (code, body) = start_swap(&b);
    assert_eq!(code, 202, "{body}");
}

/// Not a check but a measurement (BENCHMARKS.md, "Fleet propagation"): the
/// time from an acknowledged admin write on node A to node B serving the
/// new route, over `FLEET_CHANGES` (default 1000) changes, printed as a
/// table. Run it with
/// `cargo test --test fleet -- --ignored --nocapture propagation`.
#[test]
#[ignore = "a measurement: run by hand, see BENCHMARKS.md"]
fn propagation() {
    let changes: usize = std::env::var("FLEET_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let etcd = Etcd::start();
    let (v1, v2) = (App::start("v1"), App::start("v2"));
    let prefix = unique_prefix("propagation");
    let sites = shop(&v1, &v2);
    let a = node(&etcd, &prefix, &sites);
    let b = node(&etcd, &prefix, &sites);
    // one kept-alive connection to B for the polling
    let http = client();
    let served_on_b = || {
        http.get(b.url("/"))
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
        let (code, body) = set_staging(&a, percent);
        assert_eq!(code, 200, "{body}");
        let acked = std::time::Instant::now();
        // poll back to back (wait_for's 25 ms pause would be the figure)
        while served_on_b() != want {
            assert!(
                acked.elapsed() < std::time::Duration::from_secs(3),
                "change {i} not served by B within 3 s"
            );
        }
        took.push(acked.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    let ms = |d: std::time::Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    println!("\n| changes | p50 ms | p90 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {} | {} |",
        took.len(),
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(*took.last().unwrap())
    );
}
