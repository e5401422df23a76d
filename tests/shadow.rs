//! Shadow traffic end to end (SPEC §15): production's requests copied to a
//! slot and compared, over HTTP/1.1 and HTTP/2, with the real proxy and
//! real demo apps. A slot that answers the same shows `match` only (JSON
//! with reordered keys included); one that differs on one path shows
//! `body_differs` for that path alone, with the pair listed;
//! `ignore_json_paths` decides whether a field counts; a slot that is down
//! shows `error` while clients get no error; a slow slot and a one-copy
//! queue drop copies while clients go on; a POST is copied only when
//! listed; a ramp gated on `max_shadow_diff_ratio` waits while the shadow
//! differs and steps once it matches.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const HOST: &str = "shop.test";
const SHADOW: &str = "/api/v1/sites/shop/slots/staging/shadow";

/// A site whose staging slot shadows production with `shadow` (TOML keys
/// of `[sites.slots.shadow]`, and `[sites.slots.shadow.compare]` after).
fn sites(prod: &App, staging: &App, staging_rule: &str, shadow: &str) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["{HOST}"]
[[sites.slots]]
name = "production"
instances = ["{}"]
[[sites.slots]]
name = "staging"
{staging_rule}
instances = ["{}"]
[sites.slots.shadow]
{shadow}
"#,
        prod.addr(),
        staging.addr()
    )
}

fn shadow(proxy: &Proxy) -> Value {
    let (code, v) = proxy.admin("GET", SHADOW, None);
    assert_eq!(code, 200, "{v}");
    v
}

/// Poll the shadow until `pred` holds of its figures.
fn wait_figures(proxy: &Proxy, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(30, what, || {
        let v = shadow(proxy);
        pred(&v["figures"]).then_some(v)
    })
}

fn n(figures: &Value, key: &str) -> u64 {
    figures[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {figures}"))
}

/// A POST to one demo app, straight (not through the proxy).
fn tell(app: &App, path: &str, body: &str) {
    let resp = client()
        .post(format!("http://{}{path}", app.addr()))
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

fn get_json(proxy: &Proxy, path: &str) -> Value {
    let a = get(proxy, HOST, path, &[]);
    assert_eq!(a.status, 200, "{a:?}");
    serde_json::from_str(&a.body).unwrap()
}

fn h2_client(proxy: &Proxy) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .resolve(HOST, ([127, 0, 0, 1], proxy.port).into())
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

#[test]
fn an_identical_slot_matches_and_a_path_that_differs_is_listed_alone() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(
        &prod,
        &staging,
        "",
        "percent = 100\n[sites.slots.shadow.compare]\nignore_json_paths = [\"$.requestId\"]",
    ));
    // every result is exported at 0 before the first copy
    let text = scrape(&proxy);
    for r in [
        "match",
        "status_differs",
        "headers_differ",
        "body_differs",
        "error",
        "dropped",
    ] {
        let series = format!(
            "slotproxy_shadow_requests_total{{result=\"{r}\",site=\"shop\",slot=\"staging\"}}"
        );
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
    }
    let v = shadow(&proxy);
    assert_eq!(v["figures_of"], "this node");
    assert_eq!(
        v["shadow"]["methods"],
        serde_json::json!(["GET", "HEAD", "OPTIONS"])
    );

    // the same answers, over HTTP/1.1 and HTTP/2: match only
    for i in 0..10 {
        get_json(&proxy, &format!("/demo/json/item{}", i % 2));
    }
    let h2 = h2_client(&proxy);
    for _ in 0..5 {
        let resp = h2
            .get(format!("http://{HOST}:{}/demo/json/h2", proxy.port))
            .send()
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().unwrap();
    }
    let v = wait_figures(&proxy, "15 copies compared", |f| n(f, "compared") >= 15);
    let f = &v["figures"];
    assert_eq!((n(f, "compared"), n(f, "match")), (15, 15), "{v}");
    assert_eq!(f["match_ratio"], 1.0);
    assert!(v["last_differences"].as_array().unwrap().is_empty(), "{v}");

    // staging answers another total on one path: that path alone differs
    tell(&staging, "/demo/differ", "/demo/json/cart");
    for _ in 0..3 {
        let answer = get_json(&proxy, "/demo/json/cart");
        assert_eq!(answer["total"], 6, "the client gets production's answer");
        get_json(&proxy, "/demo/json/item0");
    }
    let v = wait_figures(&proxy, "21 copies compared", |f| n(f, "compared") >= 21);
    let f = &v["figures"];
    assert_eq!((n(f, "match"), n(f, "body_differs")), (18, 3), "{v}");
    let last = v["last_differences"].as_array().unwrap();
    assert_eq!(last.len(), 3, "{v}");
    for d in last {
        assert_eq!(d["method"], "GET");
        assert_eq!(d["path"], "/demo/json/cart", "{d}");
        assert_eq!(d["result"], "body_differs");
        assert_eq!(
            (d["production_status"].as_u64(), d["slot_status"].as_u64()),
            (Some(200), Some(200))
        );
        assert_eq!(d["first_difference"], "body $.total: 6 vs 7", "{d}");
    }
    let text = scrape(&proxy);
    let series = |r: &str| {
        format!("slotproxy_shadow_requests_total{{result=\"{r}\",site=\"shop\",slot=\"staging\"}}")
    };
    assert_eq!(sample(&text, &series("body_differs")), Some(3.0));
    assert_eq!(sample(&text, &series("match")), Some(18.0));
    assert!(
        sample(
            &text,
            "slotproxy_shadow_latency_ratio_count{site=\"shop\",slot=\"staging\"}"
        ) == Some(21.0),
        "{text}"
    );

    // the CLI shows the same
    let (code, out, err) = proxy.cli(&[
        "slot", "shadow", "show", "--site", "shop", "--slot", "staging",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("21 compared, 18 matched (85.7%)"), "{out}");
    assert!(
        out.contains("GET /demo/json/cart") && out.contains("body $.total: 6 vs 7"),
        "{out}"
    );

    // JSON keys in another order are the same values
    tell(&staging, "/demo/recover", "");
    tell(&staging, "/demo/reorder", "");
    for _ in 0..3 {
        get_json(&proxy, "/demo/json/cart");
    }
    let v = wait_figures(&proxy, "24 copies compared", |f| n(f, "compared") >= 24);
    assert_eq!(n(&v["figures"], "match"), 21, "{v}");

    // without ignore_json_paths the requestId of each answer differs; a
    // new shadow starts its figures from 0
    let (code, out, err) = proxy.cli(&[
        "slot",
        "shadow",
        "start",
        "--site",
        "shop",
        "--slot",
        "staging",
        "--percent",
        "100",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 compared"), "{out}");
    get_json(&proxy, "/demo/json/cart");
    let v = wait_figures(&proxy, "a copy compared", |f| n(f, "compared") >= 1);
    assert_eq!(n(&v["figures"], "body_differs"), 1, "{v}");
    let d = &v["last_differences"][0];
    assert!(
        d["first_difference"]
            .as_str()
            .unwrap()
            .starts_with("body $.requestId: "),
        "{d}"
    );

    // stopped: no more copies, its series gone
    let (code, out, err) = proxy.cli(&[
        "slot", "shadow", "stop", "--site", "shop", "--slot", "staging",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, v) = proxy.admin("GET", SHADOW, None);
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("has no shadow"),
        "{v}"
    );
    assert!(!scrape(&proxy).contains("slotproxy_shadow_requests_total{"));
}

#[test]
fn a_down_slot_counts_errors_while_clients_get_none() {
    let (prod, mut staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(&prod, &staging, "", "percent = 100"));
    staging.kill();
    for _ in 0..20 {
        let a = get(&proxy, HOST, "/demo/json/x", &[]);
        assert_eq!(a.status, 200, "{a:?}");
    }
    let v = wait_figures(&proxy, "20 copies failed", |f| n(f, "compared") >= 20);
    let f = &v["figures"];
    assert_eq!((n(f, "error"), n(f, "match")), (20, 0), "{v}");
    let d = &v["last_differences"][0];
    assert_eq!(d["result"], "error");
    assert!(d["slot_status"].is_null(), "{d}");
    assert!(
        d["first_difference"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{d}"
    );
    // the clients saw production's answers only
    let text = scrape(&proxy);
    assert_eq!(
        value(
            &text,
            "slotproxy_requests_total{code=\"200\",site=\"shop\",slot=\"production\"}"
        ),
        20.0
    );
    assert_eq!(
        value(
            &text,
            "slotproxy_requests_total{code=\"502\",site=\"shop\",slot=\"production\"}"
        ),
        0.0
    );
}

#[test]
fn a_slow_slot_with_a_full_queue_drops_copies_while_clients_go_on() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(
        &prod,
        &staging,
        "",
        "percent = 100\nqueue = 1\nconcurrency = 1\n[sites.slots.shadow.compare]\nignore_json_paths = [\"$.requestId\"]",
    ));
    tell(&staging, "/demo/slow?ms=2000", "");
    // one copy in flight and one waiting at most: had a client waited for
    // its copy, none would ever be dropped
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        get_json(&proxy, "/demo/json/slow");
        slowest = slowest.max(t.elapsed());
    }
    println!("slowest of 20 client requests with a 2 s shadow: {slowest:?}");
    let v = wait_figures(&proxy, "every copy dropped or compared", |f| {
        n(f, "dropped") + n(f, "compared") >= 20
    });
    let f = &v["figures"];
    assert!(n(f, "dropped") >= 15, "{v}");
    assert_eq!(n(f, "match"), n(f, "compared"), "{v}");
    // the slot's time over production's, per copy answered
    assert!(f["latency_ratio_mean"].as_f64().unwrap() > 1.0, "{v}");
}

#[test]
fn a_post_is_copied_only_when_its_method_is_listed() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    // one copy at a time, in the order queued: a GET queued after the
    // POSTs is compared after any copy of them
    let proxy = Proxy::start(&sites(&prod, &staging, "", "concurrency = 1"));
    let post = |path: &str| {
        let resp = client()
            .post(proxy.url(path))
            .header("host", HOST)
            .body("hello")
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().unwrap()
    };
    for _ in 0..3 {
        assert!(post("/orders").contains("body-bytes: 5"));
    }
    get_json(&proxy, "/demo/json/after-posts");
    let v = wait_figures(&proxy, "the GET compared", |f| n(f, "compared") >= 1);
    assert_eq!(n(&v["figures"], "compared"), 1, "no POST was copied: {v}");

    // listed: the POST goes with its body (the demo app's answers name
    // their slot, so the bodies differ from byte 6 on)
    let (code, v) = proxy.admin(
        "PUT",
        SHADOW,
        Some(r#"{"methods": ["GET", "POST"], "concurrency": 1}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["shadow"]["methods"], serde_json::json!(["GET", "POST"]));
    for _ in 0..2 {
        post("/orders");
    }
    let v = wait_figures(&proxy, "2 POSTs compared", |f| n(f, "compared") >= 2);
    let d = &v["last_differences"][0];
    assert_eq!(
        (d["method"].as_str(), d["path"].as_str()),
        (Some("POST"), Some("/orders")),
        "{v}"
    );
    assert!(
        d["first_difference"]
            .as_str()
            .unwrap()
            .contains("\"production"),
        "{d}"
    );

    // bad specs are refused, naming the key
    let (code, v) = proxy.admin(
        "PUT",
        SHADOW,
        Some(r#"{"percent": 120, "methods": ["get"]}"#),
    );
    assert_eq!(code, 400, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("percent") && text.contains("methods[0]"),
        "{v}"
    );
    let (code, v) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/production/shadow",
        Some("{}"),
    );
    assert_eq!(code, 400, "{v}");
}

#[test]
fn a_ramp_gated_on_the_shadow_waits_while_it_differs_then_steps() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(
        &prod,
        &staging,
        "traffic_percent = 0",
        "percent = 100\n[sites.slots.shadow.compare]\nignore_json_paths = [\"$.requestId\"]",
    ));
    tell(&staging, "/demo/differ", "/demo/json/ramp");
    // production's traffic, all the while
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), proxy.url("/demo/json/ramp"));
        std::thread::spawn(move || {
            let c = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c
                    .get(&url)
                    .header("host", HOST)
                    .send()
                    .and_then(|r| r.text());
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let ramp = "/api/v1/sites/shop/slots/staging/ramp";
    let (code, v) = proxy.admin(
        "PUT",
        ramp,
        Some(
            r#"{"step": 10, "interval_secs": 0.5, "max_percent": 10,
                 "gates": {"max_shadow_diff_ratio": 0.01, "min_requests": 1}}"#,
        ),
    );
    assert_eq!(code, 200, "{v}");
    // verdicts come and the rule stays at 0 while the shadow differs
    let waiting = |after: Option<&Value>| {
        wait_for(30, "a verdict that waits", || {
            let (_, v) = proxy.admin("GET", ramp, None);
            let verdict = &v["last_verdict"];
            let new = after.is_none_or(|a| verdict["at"] != a["last_verdict"]["at"]);
            (verdict["result"] == "wait" && new).then_some(v)
        })
    };
    let first = waiting(None);
    let v = waiting(Some(&first));
    assert_eq!(v["percent"], 0.0, "{v}");
    let detail = v["last_verdict"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("shadow answers differ 100.0% > 1.0%"),
        "{v}"
    );
    assert!(
        v["last_verdict"]["shadow_compared"].as_u64().unwrap() > 0,
        "{v}"
    );

    // the slot answers the same again: the ramp steps
    tell(&staging, "/demo/recover", "");
    let v = wait_for(30, "the ramp to step", || {
        let (_, v) = proxy.admin("GET", ramp, None);
        (v["percent"].as_f64() == Some(10.0)).then_some(v)
    });
    assert!(
        v["last_verdict"]["detail"]
            .as_str()
            .unwrap()
            .contains("shadow answers differ 0.0%"),
        "{v}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
}

#[test]
fn in_a_fleet_each_node_shadows_and_counts_its_own_share() {
    let etcd = common::etcd::Etcd::start();
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let config = sites(&prod, &staging, "", "percent = 0")
        .replace("[sites.slots.shadow]\npercent = 0\n", "");
    let with_etcd = |t: String| {
        t.replacen(
            "[state]\n",
            &format!(
                "[state]\nbackend = \"etcd\"\netcd_endpoints = [\"{}\"]\netcd_prefix = \"/t-shadow-fleet\"\n",
                etcd.url()
            ),
            1,
        )
    };
    let a = Proxy::start_edited(&config, 1, with_etcd);
    let b = Proxy::start_edited(&config, 1, with_etcd);
    // started through node A, shared through etcd
    let (code, v) = a.admin(
        "PUT",
        SHADOW,
        Some(r#"{"compare": {"ignore_json_paths": ["$.requestId"]}}"#),
    );
    assert_eq!(code, 200, "{v}");
    // node B copies what it serves once its table has the shadow
    wait_for(10, "node B to copy", || {
        get_json(&b, "/demo/json/fleet");
        let (code, v) = b.admin("GET", SHADOW, None);
        (code == 200 && n(&v["figures"], "compared") >= 1).then_some(())
    });
    let before = n(&shadow(&b)["figures"], "compared");
    for _ in 0..10 {
        get_json(&b, "/demo/json/fleet");
    }
    let v = wait_figures(&b, "node B's 10 more copies", |f| {
        n(f, "compared") >= before + 10
    });
    assert_eq!(
        n(&v["figures"], "match"),
        n(&v["figures"], "compared"),
        "{v}"
    );
    assert_eq!(v["figures_of"], "this node");
    // node A served none of them: its figures are its own
    let va = shadow(&a);
    assert_eq!(n(&va["figures"], "compared"), 0, "{va}");
    assert_eq!(va["shadow"], v["shadow"]);
}
