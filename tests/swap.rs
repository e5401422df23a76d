//! End-to-end swaps (docs/guide/swaps.md) through the admin API of the real
//! binary, with real demo-app instances: phases, settings, preview/reset,
//! rollback, failures that leave production alone, kill -9 mid-swap, auto and
//! declarative swap, and the zero-drop test under load.

mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The admin API, with a JSON body.
fn api(proxy: &Proxy, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    proxy.admin(method, path, body.map(|b| b.to_string()).as_deref())
}

fn start_swap(proxy: &Proxy, source: &str, target: &str, action: &str) -> (u16, Value) {
    api(
        proxy,
        "POST",
        &format!("/api/v1/sites/shop/slots/{source}/swap"),
        Some(json!({"target_slot": target, "action": action})),
    )
}

/// Start a swap and wait until its operation settles.
fn swap(proxy: &Proxy, source: &str, action: &str) -> Value {
    let (code, body) = start_swap(proxy, source, "production", action);
    assert_eq!(code, 202, "{body}");
    wait_op(proxy, body["operation_id"].as_str().expect("operation_id"))
}

fn wait_op(proxy: &Proxy, id: &str) -> Value {
    wait_for(60, "the operation to settle", || {
        let (code, op) = api(proxy, "GET", &format!("/api/v1/operations/{id}"), None);
        assert_eq!(code, 200, "{op}");
        (op["status"] != "running").then_some(op)
    })
}

fn phases(op: &Value) -> Vec<(String, String)> {
    op["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["result"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn shop(prod: &[&App], staging: &[&App], extra: &str) -> String {
    let list = |apps: &[&App]| {
        apps.iter()
            .map(|a| format!("\"{}\"", a.addr()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
build_version = "v1"
instances = [{}]
settings_hook_path = "/settings"
warmup_timeout_secs = 2
warmup_retries = 1
[sites.slots.settings]
FLAG = "old"
[sites.slots.sticky_settings]
DB = "prod-db"
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = [{}]
settings_hook_path = "/settings"
warmup_timeout_secs = 2
warmup_retries = 1
{extra}
[sites.slots.settings]
FLAG = "new"
[sites.slots.sticky_settings]
DB = "staging-db"
"#,
        list(prod),
        list(staging)
    )
}

fn prod_version(proxy: &Proxy) -> String {
    get(
        proxy,
        "shop.test",
        "/",
        &[("cookie", "x-ms-routing-name=self")],
    )
    .version()
    .to_string()
}

#[test]
fn swap_runs_every_phase_moves_settings_and_rolls_back() {
    let (p, s) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&shop(&[&p], &[&s], ""));
    assert_eq!(prod_version(&proxy), "v1");

    let op = swap(&proxy, "staging", "swap");
    assert_eq!(op["status"], "succeeded", "{op:#}");
    let names: Vec<_> = phases(&op).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "apply_settings",
            "wait_restart",
            "warmup",
            "switch",
            "apply_source_settings"
        ]
    );
    assert!(phases(&op).iter().all(|(_, r)| r == "succeeded"), "{op:#}");
    assert!(op["instances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["phase"] == "warmup" && i["instance"] == s.addr() && i["status"] == 200));

    // production now runs v2 with production's sticky settings
    let a = get(
        &proxy,
        "shop.test",
        "/",
        &[("cookie", "x-ms-routing-name=self")],
    );
    assert_eq!((a.slot(), a.version()), ("production", "v2"));
    assert_eq!(
        a.field("settings"),
        Some(r#"{"DB":"prod-db","FLAG":"new"}"#)
    );
    // and staging holds v1 with staging's sticky settings
    let a = get(&proxy, "shop-staging.slots.test", "/", &[]);
    assert_eq!((a.slot(), a.version()), ("staging", "v1"));
    assert_eq!(
        a.field("settings"),
        Some(r#"{"DB":"staging-db","FLAG":"old"}"#)
    );

    // swapping again is the rollback
    assert_eq!(swap(&proxy, "staging", "swap")["status"], "succeeded");
    assert_eq!(prod_version(&proxy), "v1");
    // both counted, with their duration
    let m = scrape(&proxy);
    assert_eq!(
        value(
            &m,
            r#"slotproxy_swaps_total{result="succeeded",site="shop"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&m, r#"slotproxy_swaps_total{result="failed",site="shop"}"#),
        0.0
    );
    assert_eq!(value(&m, "slotproxy_swap_duration_seconds_count"), 2.0);

    // the activity log lists both, newest first
    let (code, log) = api(&proxy, "GET", "/api/v1/sites/shop/activity", None);
    assert_eq!(code, 200);
    let ops = log.as_array().expect("a list");
    assert_eq!(ops.len(), 2);
    assert!(ops[0]["started_at"].as_str() >= ops[1]["started_at"].as_str());
}

#[test]
fn preview_pauses_then_swap_completes_or_reset_cancels() {
    let (p, s) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&shop(&[&p], &[&s], ""));

    let op = swap(&proxy, "staging", "preview");
    assert_eq!(op["status"], "previewing", "{op:#}");
    // staging runs with production's settings, production is untouched
    let a = get(&proxy, "shop-staging.slots.test", "/", &[]);
    assert_eq!(
        a.field("settings"),
        Some(r#"{"DB":"prod-db","FLAG":"new"}"#)
    );
    assert_eq!(prod_version(&proxy), "v1");
    // nothing else may swap while the preview is pending
    let (code, body) = start_swap(&proxy, "production", "staging", "swap");
    assert_eq!(code, 409, "{body}");

    // reset: cancelled, source settings back
    let reset = swap(&proxy, "staging", "reset");
    assert_eq!(reset["status"], "succeeded", "{reset:#}");
    let (_, preview) = api(
        &proxy,
        "GET",
        &format!("/api/v1/operations/{}", op["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(preview["status"], "cancelled");
    let a = get(&proxy, "shop-staging.slots.test", "/", &[]);
    assert_eq!(
        a.field("settings"),
        Some(r#"{"DB":"staging-db","FLAG":"new"}"#)
    );
    assert_eq!(prod_version(&proxy), "v1");

    // preview again, then complete it with swap
    assert_eq!(swap(&proxy, "staging", "preview")["status"], "previewing");
    let done = swap(&proxy, "staging", "swap");
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        phases(&done)[0],
        ("apply_settings".into(), "skipped".into())
    );
    assert_eq!(prod_version(&proxy), "v2");
    // nothing pending any more
    let (code, _) = start_swap(&proxy, "staging", "production", "reset");
    assert_eq!(code, 409);
}

#[test]
fn failed_warmup_leaves_production_alone_and_names_the_instance() {
    let (p, s) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&shop(&[&p], &[&s], "warmup_statuses = [204]"));
    let op = swap(&proxy, "staging", "swap");
    assert_eq!(op["status"], "failed", "{op:#}");
    let err = op["error"].as_str().unwrap();
    assert!(
        err.contains(&s.addr()) && err.contains("answered 200, expected one of [204]"),
        "{err}"
    );
    let warm = op["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["phase"] == "warmup")
        .unwrap();
    assert_eq!(
        (warm["attempts"].as_u64(), warm["status"].as_u64()),
        (Some(2), Some(200))
    );
    assert_eq!(prod_version(&proxy), "v1");
    // the source got its own settings back
    let a = get(&proxy, "shop-staging.slots.test", "/", &[]);
    assert_eq!(
        a.field("settings"),
        Some(r#"{"DB":"staging-db","FLAG":"new"}"#)
    );
}

#[test]
fn warmup_timeout_and_dead_instance_abort_the_swap() {
    let (p, s1) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&shop(&[&p], &[&s1], "warmup_path = \"/?delay_ms=5000\""));
    let op = swap(&proxy, "staging", "swap");
    assert_eq!(op["status"], "failed", "{op:#}");
    assert!(
        op["error"].as_str().unwrap().contains("timed out"),
        "{op:#}"
    );
    assert_eq!(prod_version(&proxy), "v1");

    // an instance that is dead when the swap starts
    let (p2, s2) = (App::start("v1"), App::start("v2"));
    let mut dead = App::start("v2");
    let proxy = Proxy::start(&shop(&[&p2], &[&s2, &dead], ""));
    dead.kill();
    let op = swap(&proxy, "staging", "swap");
    assert_eq!(op["status"], "failed", "{op:#}");
    let err = op["error"].as_str().unwrap();
    assert!(
        err.contains(&dead.addr()) && err.contains("refused"),
        "{err}"
    );
    assert_eq!(prod_version(&proxy), "v1");
}

#[test]
fn one_swap_per_site_at_a_time() {
    let (p, s) = (App::start("v1"), App::start("v2"));
    // a slow warm-up keeps the first swap busy for a while
    let proxy = Proxy::start(&shop(&[&p], &[&s], "warmup_path = \"/?delay_ms=1500\""));
    let (code, first) = start_swap(&proxy, "staging", "production", "swap");
    assert_eq!(code, 202);
    let (code, body) = start_swap(&proxy, "staging", "production", "swap");
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("already running"));
    assert_eq!(
        wait_op(&proxy, first["operation_id"].as_str().unwrap())["status"],
        "succeeded"
    );
    // bad requests
    assert_eq!(start_swap(&proxy, "nope", "production", "swap").0, 404);
    assert_eq!(start_swap(&proxy, "staging", "staging", "swap").0, 400);
    assert_eq!(
        start_swap(&proxy, "staging", "production", "explode").0,
        400
    );
}

#[test]
fn kill_9_mid_swap_leaves_routing_whole_and_the_operation_interrupted() {
    let (p, s) = (App::start("v1"), App::start("v2"));
    let mut proxy = Proxy::start(&shop(&[&p], &[&s], "warmup_path = \"/?delay_ms=1500\""));
    let (code, body) = start_swap(&proxy, "staging", "production", "swap");
    assert_eq!(code, 202);
    let id = body["operation_id"].as_str().unwrap().to_string();
    wait_for(10, "the warm-up to begin", || {
        let (_, op) = api(&proxy, "GET", &format!("/api/v1/operations/{id}"), None);
        phases(&op).iter().any(|(n, _)| n == "warmup").then_some(())
    });
    proxy.kill();
    proxy.spawn();
    let (_, op) = api(&proxy, "GET", &format!("/api/v1/operations/{id}"), None);
    assert_eq!(op["status"], "interrupted", "{op:#}");
    assert_eq!(prod_version(&proxy), "v1");
    // phase 1 had given staging's app production's sticky settings; the
    // restart puts its own back
    wait_for(10, "staging's own settings to be re-applied", || {
        let a = get(&proxy, "shop-staging.slots.test", "/", &[]);
        (a.field("settings") == Some(r#"{"DB":"staging-db","FLAG":"new"}"#)).then_some(())
    });

    // killed right after a successful swap: the swap stays
    assert_eq!(swap(&proxy, "staging", "swap")["status"], "succeeded");
    proxy.kill();
    proxy.spawn();
    assert_eq!(prod_version(&proxy), "v2");
    assert_eq!(
        get(&proxy, "shop-staging.slots.test", "/", &[]).version(),
        "v1"
    );
}

#[test]
fn declarative_swap_runs_on_start_and_once() {
    let (p, s) = (App::start("v1"), App::start("v2"));
    let config = shop(&[&p], &[&s], "").replace(
        "name = \"production\"\nbuild_version = \"v1\"",
        "name = \"production\"\nbuild_version = \"v1\"\ntarget_build_version = \"v2\"",
    );
    let proxy = Proxy::start(&config);
    wait_for(30, "the declarative swap", || {
        (prod_version(&proxy) == "v2").then_some(())
    });
    let ops = |proxy: &Proxy| api(proxy, "GET", "/api/v1/sites/shop/activity", None).1;
    wait_for(10, "the operation to finish", || {
        (ops(&proxy)[0]["status"] == "succeeded").then_some(())
    });
    // reload with the same file: nothing to do
    proxy.signal(libc::SIGHUP);
    wait_for(10, "the SIGHUP reload", || {
        proxy.log().contains("reloaded").then_some(())
    });
    // POST /reload answers after its reconcile has started any swap
    let (code, _) = api(&proxy, "POST", "/api/v1/reload", None);
    assert_eq!(code, 200);
    assert_eq!(ops(&proxy).as_array().unwrap().len(), 1);
    assert_eq!(prod_version(&proxy), "v2");

    // a changed target in the file swaps again on reload
    proxy.rewrite_sites(&config.replace(
        "target_build_version = \"v2\"",
        "target_build_version = \"v1\"",
    ));
    let (code, body) = api(&proxy, "POST", "/api/v1/reload", None);
    assert_eq!(code, 200, "{body}");
    wait_for(30, "the second declarative swap", || {
        (prod_version(&proxy) == "v1").then_some(())
    });
    assert_eq!(ops(&proxy).as_array().unwrap().len(), 2);
}

#[test]
fn auto_swap_after_a_deployment_lands() {
    let (p, s, s_new) = (App::start("v1"), App::start("v2"), App::start("v3"));
    let proxy = Proxy::start(&shop(&[&p], &[&s], "auto_swap_target = \"production\""));
    assert_eq!(prod_version(&proxy), "v1");
    let (code, body) = api(
        &proxy,
        "PUT",
        "/api/v1/sites/shop/slots/staging/deployment",
        Some(json!({"build_version": "v3", "instances": [s_new.addr()]})),
    );
    assert_eq!(code, 200, "{body}");
    let id = body["auto_swap"]["operation_id"]
        .as_str()
        .expect("the deploy names its auto swap");
    assert_eq!(wait_op(&proxy, id)["status"], "succeeded");
    assert_eq!(prod_version(&proxy), "v3");
    let (_, log) = api(&proxy, "GET", "/api/v1/sites/shop/activity", None);
    assert_eq!(log[0]["source"], "staging");
    assert_eq!(log[0]["target"], "production");

    // while another swap of the site runs, the deploy says why none started
    let slow = App::start("v4");
    let (code, _) = api(
        &proxy,
        "PUT",
        "/api/v1/sites/shop/slots/production/deployment",
        Some(
            json!({"build_version": "v4", "instances": [slow.addr()], "warmup_path": "/?delay_ms=1500"}),
        ),
    );
    assert_eq!(code, 200);
    let (code, running) = start_swap(&proxy, "production", "staging", "swap");
    assert_eq!(code, 202, "{running}");
    let (code, body) = api(
        &proxy,
        "PUT",
        "/api/v1/sites/shop/slots/staging/deployment",
        Some(json!({"build_version": "v5", "instances": [s.addr()]})),
    );
    assert_eq!(code, 200, "{body}");
    let err = body["auto_swap"]["error"]
        .as_str()
        .expect("a refusal reason");
    assert!(err.contains("already running"), "{err}");
    wait_op(&proxy, running["operation_id"].as_str().unwrap());
}

/// Continuous load (keep-alive and fresh connections, GET and POST with
/// bodies) while the slots are swapped 200 times: not one request may fail,
/// and a request that ran entirely between two swaps must have been served
/// by the deployment production had then.
#[test]
fn zero_dropped_requests_across_200_swaps() {
    let (p, s) = (App::start("v1"), App::start("v2"));
    let config = shop(&[&p], &[&s], "").replace("settings_hook_path = \"/settings\"\n", "");
    let proxy = Arc::new(Proxy::start(&config));
    // epoch: even = stable (production version known), odd = swap in flight
    let epoch = Arc::new(AtomicU64::new(0));
    let stable_version = Arc::new(Mutex::new(String::from("v1")));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    for w in 0..4 {
        let (proxy, epoch, stable, stop, failures, sent) = (
            proxy.clone(),
            epoch.clone(),
            stable_version.clone(),
            stop.clone(),
            failures.clone(),
            sent.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let keepalive = client();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // workers 0-1 reuse connections, 2-3 open a new one each time
                let c = if w < 2 {
                    keepalive.clone()
                } else {
                    reqwest::blocking::Client::builder()
                        .pool_max_idle_per_host(0)
                        .build()
                        .unwrap()
                };
                let before = epoch.load(Ordering::SeqCst);
                let expected = stable.lock().unwrap().clone();
                let req = if i.is_multiple_of(2) {
                    c.post(proxy.url("/order")).body(vec![b'x'; 4096])
                } else {
                    c.get(proxy.url("/"))
                };
                let r = req
                    .header("host", "shop.test")
                    .header("cookie", "x-ms-routing-name=self")
                    .send();
                let after = epoch.load(Ordering::SeqCst);
                sent.fetch_add(1, Ordering::Relaxed);
                let outcome = match r {
                    Ok(resp) if resp.status() == 200 => {
                        let body = resp.text().unwrap_or_default();
                        let version = body
                            .lines()
                            .find_map(|l| l.strip_prefix("version: "))
                            .unwrap_or("?")
                            .to_string();
                        let bytes_ok = !i.is_multiple_of(2) || body.contains("body-bytes: 4096");
                        if !bytes_ok {
                            Err(format!("POST body lost: {body}"))
                        } else if before == after && before.is_multiple_of(2) && version != expected {
                            Err(format!("served by {version} while production was {expected} (epoch {before})"))
                        } else if version != "v1" && version != "v2" {
                            Err(format!("unknown version {version}"))
                        } else {
                            Ok(())
                        }
                    }
                    Ok(resp) => Err(format!("status {}", resp.status())),
                    Err(e) => Err(format!("request failed: {e}")),
                };
                if let Err(e) = outcome {
                    failures.lock().unwrap().push(e);
                }
            }
        }));
    }

    let swaps = 200;
    for k in 0..swaps {
        // odd: a swap is in flight; the stable version is unknown
        epoch.fetch_add(1, Ordering::SeqCst);
        let op = swap(&proxy, "staging", "swap");
        assert_eq!(op["status"], "succeeded", "swap {k}: {op:#}");
        *stable_version.lock().unwrap() = if k % 2 == 0 { "v2" } else { "v1" }.into();
        epoch.fetch_add(1, Ordering::SeqCst);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "zero-drop: {sent} requests, {swaps} swaps, {} failures",
        failures.len()
    );
    assert!(
        sent > 1000,
        "the load was too light to mean anything: {sent} requests"
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn instance_dying_mid_warmup_aborts_the_swap() {
    let (p, s1) = (App::start("v1"), App::start("v2"));
    let mut s2 = App::start("v2");
    let config = shop(&[&p], &[&s1, &s2], "warmup_path = \"/?delay_ms=1000\"");
    let proxy = Proxy::start(&config);
    let (code, body) = start_swap(&proxy, "staging", "production", "swap");
    assert_eq!(code, 202);
    let id = body["operation_id"].as_str().unwrap().to_string();
    wait_for(10, "the warm-up to begin", || {
        let (_, op) = api(&proxy, "GET", &format!("/api/v1/operations/{id}"), None);
        phases(&op).iter().any(|(n, _)| n == "warmup").then_some(())
    });
    s2.kill();
    let op = wait_op(&proxy, &id);
    assert_eq!(op["status"], "failed", "{op:#}");
    let err = op["error"].as_str().unwrap();
    assert!(
        err.contains(&s2.addr()) && !err.contains(&s1.addr()),
        "only the dead one is blamed: {err}"
    );
    assert_eq!(prod_version(&proxy), "v1");
}

#[test]
fn cli_swap_follows_the_phases_and_activity_lists_it() {
    let (p, s) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&shop(&[&p], &[&s], ""));
    let (code, out, err) = proxy.cli(&["slot", "swap", "--site", "shop", "--slot", "staging"]);
    assert_eq!(code, 0, "{out}{err}");
    for phase in [
        "apply_settings",
        "wait_restart",
        "warmup",
        "switch",
        "apply_source_settings",
    ] {
        assert!(out.contains(phase), "{phase} missing in:\n{out}");
    }
    assert!(out.trim_end().ends_with("succeeded"), "{out}");
    assert_eq!(prod_version(&proxy), "v2");

    let (code, out, err) = proxy.cli(&["activity", "--site", "shop"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("staging -> production") && out.contains("succeeded"),
        "{out}"
    );

    // a failing swap exits non-zero
    let (code, out, _) = proxy.cli(&[
        "slot",
        "swap",
        "--site",
        "shop",
        "--slot",
        "staging",
        "--target-slot",
        "nope",
    ]);
    assert_ne!(code, 0, "{out}");

    // auto swap on, then a deploy swaps itself in
    let (code, out, err) = proxy.cli(&[
        "slot",
        "auto-swap",
        "--site",
        "shop",
        "--slot",
        "staging",
        "--auto-swap-slot",
        "production",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let fresh = App::start("v9");
    let (code, out, err) = proxy.cli(&[
        "deploy",
        "--site",
        "shop",
        "--slot",
        "staging",
        "--build-version",
        "v9",
        "--instance",
        &fresh.addr(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(30, "the auto swap", || {
        (prod_version(&proxy) == "v9").then_some(())
    });
    let (code, out, _) = proxy.cli(&[
        "slot",
        "auto-swap",
        "--site",
        "shop",
        "--slot",
        "staging",
        "--disable",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("off"), "{out}");
}

#[test]
fn a_preview_ends_when_its_slots_change() {
    let (p, s, s_new) = (App::start("v1"), App::start("v2"), App::start("v3"));
    let proxy = Proxy::start(&shop(&[&p], &[&s], ""));
    let preview = swap(&proxy, "staging", "preview");
    assert_eq!(preview["status"], "previewing");
    // a new deployment in the previewed slot ends the preview...
    let (code, body) = api(
        &proxy,
        "PUT",
        "/api/v1/sites/shop/slots/staging/deployment",
        Some(
            json!({"build_version": "v3", "instances": [s_new.addr()], "settings_hook_path": "/settings"}),
        ),
    );
    assert_eq!(code, 200, "{body}");
    let id = preview["id"].as_str().unwrap();
    let (_, ended) = api(&proxy, "GET", &format!("/api/v1/operations/{id}"), None);
    assert_eq!(ended["status"], "cancelled", "{ended:#}");
    // ...so the next swap runs every phase on the new instances
    let done = swap(&proxy, "staging", "swap");
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(
        phases(&done).iter().all(|(_, r)| r == "succeeded"),
        "{done:#}"
    );
    assert_eq!(prod_version(&proxy), "v3");

    // deleting a previewed slot ends its preview and frees the site
    assert_eq!(swap(&proxy, "staging", "preview")["status"], "previewing");
    let (code, body) = api(&proxy, "DELETE", "/api/v1/sites/shop/slots/staging", None);
    assert_eq!(code, 200, "{body}");
    let (code, _) = api(
        &proxy,
        "PUT",
        "/api/v1/sites/shop/slots/canary",
        Some(json!({})),
    );
    assert_eq!(code, 201);
    let (code, _) = api(
        &proxy,
        "PUT",
        "/api/v1/sites/shop/slots/canary/deployment",
        Some(json!({"build_version": "v2", "instances": [s.addr()]})),
    );
    assert_eq!(code, 200);
    assert_eq!(swap(&proxy, "canary", "swap")["status"], "succeeded");
    assert_eq!(prod_version(&proxy), "v2");
}
