//! End-to-end admin API and CLI (docs/guide/config-and-state.md,
//! docs/reference/admin-api.md and cli.md): the real binary, real demo-app
//! upstreams, real HTTP. Every change made through the API must show in live routing at once and survive
//! `kill -9`; refused changes must change nothing.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn site_config(prod: &App, staging: &App) -> String {
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
[sites.slots.settings]
DB = "prod-db"
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["{}"]
"#,
        prod.addr(),
        staging.addr()
    )
}

/// How many of `n` cookieless requests to the production host each slot got.
fn spread(proxy: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let a = get(proxy, "shop.test", "/", &[]);
        assert_eq!(a.status, 200, "{a:?}");
        *seen.entry(a.slot().to_string()).or_default() += 1;
    }
    seen
}

fn only(slot: &str, n: usize) -> BTreeMap<String, usize> {
    [(slot.to_string(), n)].into()
}

fn ok(r: (u16, Value)) -> Value {
    assert!((200..300).contains(&r.0), "expected success, got {r:?}");
    r.1
}

#[test]
fn api_changes_routing_at_once_and_survives_kill_9() {
    let (prod, staging, canary) = (App::start("v1"), App::start("v2"), App::start("v3"));
    let mut proxy = Proxy::start(&site_config(&prod, &staging));
    assert_eq!(spread(&proxy, 10), only("production", 10));

    let v = ok(proxy.admin(
        "PUT",
        "/api/v1/sites/shop/traffic-routing",
        Some(r#"{"distribution": {"staging": 100}}"#),
    ));
    assert_eq!(v["production_percent"], json!(0.0));
    assert_eq!(spread(&proxy, 20), only("staging", 20), "no delay");
    proxy.kill();
    proxy.spawn();
    assert_eq!(spread(&proxy, 20), only("staging", 20), "kept over kill -9");

    ok(proxy.admin("DELETE", "/api/v1/sites/shop/traffic-routing", None));
    assert_eq!(spread(&proxy, 20), only("production", 20));
    proxy.kill();
    proxy.spawn();
    assert_eq!(spread(&proxy, 20), only("production", 20));

    // a new slot: cloned settings, nothing deployed → 503 on its host
    let (status, v) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/canary",
        Some(r#"{"clone_from": "production"}"#),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["settings"]["DB"], "prod-db");
    assert_eq!(v["deployment"], Value::Null);
    assert_eq!(get(&proxy, "shop-canary.slots.test", "/", &[]).status, 503);

    let body =
        json!({"build_version": "v3", "instances": [canary.addr()], "warmup_path": "/ready"});
    let v = ok(proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/canary/deployment",
        Some(&body.to_string()),
    ));
    assert_eq!(v["deployment"]["build_version"], "v3");
    assert_eq!(v["deployment"]["warmup_path"], "/ready");
    let a = get(&proxy, "shop-canary.slots.test", "/", &[]);
    assert_eq!((a.status, a.slot(), a.version()), (200, "canary", "v3"));

    // settings: the demo app shows the slot's settings it was told about
    // via its hook only, so check the API view and persistence instead
    ok(proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/canary/settings",
        Some(r#"{"sticky_settings": {"ENV": "canary"}}"#),
    ));
    proxy.kill();
    proxy.spawn();
    let a = get(&proxy, "shop-canary.slots.test", "/", &[]);
    assert_eq!((a.slot(), a.version()), ("canary", "v3"), "deploy kept");
    let site = ok(proxy.admin("GET", "/api/v1/sites/shop", None));
    let canary_view = site["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "canary")
        .unwrap()
        .clone();
    assert_eq!(canary_view["sticky_settings"], json!({"ENV": "canary"}));
    assert_eq!(canary_view["settings"], json!({"DB": "prod-db"}));
    assert_eq!(
        canary_view["deployment"]["instances"][0]["address"],
        json!(canary.addr())
    );

    ok(proxy.admin("DELETE", "/api/v1/sites/shop/slots/canary", None));
    assert_eq!(get(&proxy, "shop-canary.slots.test", "/", &[]).status, 404);
    proxy.kill();
    proxy.spawn();
    assert_eq!(get(&proxy, "shop-canary.slots.test", "/", &[]).status, 404);
    let (status, _) = proxy.admin("GET", "/api/v1/sites/shop/traffic-routing", None);
    assert_eq!(status, 200);
}

#[test]
fn concurrent_conflicting_writes_leave_the_last_state() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&site_config(&prod, &staging));
    let staging_addr = staging.addr();
    // Each thread: set routing (may 404 while canary is deleted, 400 when
    // the sum is over 100), create/delete canary (201/409, 200/404), or
    // deploy a distinct build into staging.
    let results: Vec<(usize, u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let proxy = &proxy;
                let staging_addr = &staging_addr;
                s.spawn(move || {
                    let r = match i % 4 {
                        0 => {
                            let (st, ca) = (i * 2, if i % 8 == 0 { 50 } else { 30 });
                            proxy.admin(
                                "PUT",
                                "/api/v1/sites/shop/traffic-routing",
                                Some(&format!(
                                    r#"{{"distribution": {{"staging": {st}, "canary": {ca}}}}}"#
                                )),
                            )
                        }
                        1 => proxy.admin(
                            "PUT",
                            "/api/v1/sites/shop/traffic-routing",
                            Some(&format!(r#"{{"distribution": {{"staging": {}}}}}"#, i * 3)),
                        ),
                        2 if i % 8 == 2 => {
                            proxy.admin("PUT", "/api/v1/sites/shop/slots/canary", None)
                        }
                        2 => proxy.admin("DELETE", "/api/v1/sites/shop/slots/canary", None),
                        _ => proxy.admin(
                            "PUT",
                            "/api/v1/sites/shop/slots/staging/deployment",
                            Some(
                                &json!({"build_version": format!("b{i}"), "instances": [staging_addr]})
                                    .to_string(),
                            ),
                        ),
                    };
                    (i, r.0, r.1)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, status, body) in &results {
        assert!(
            [200, 201, 400, 404, 409].contains(status),
            "write {i}: {status} {body}"
        );
        if *status >= 400 {
            assert!(body["error"].is_string(), "write {i}: {body}");
        }
    }
    let statuses: std::collections::BTreeSet<u16> = results.iter().map(|r| r.1).collect();
    assert!(
        statuses.contains(&200) && statuses.contains(&400),
        "the mix must both succeed and conflict: {statuses:?}"
    );
    let won = |kind: usize| {
        results
            .iter()
            .filter(|(i, s, _)| i % 4 == kind && *s < 300)
            .max_by_key(|(_, _, b)| b["revision"].as_u64().unwrap())
            .map(|(_, _, b)| b.clone())
    };
    let max_rev = results
        .iter()
        .filter(|(_, s, _)| *s < 300)
        .map(|(_, _, b)| b["revision"].as_u64().unwrap())
        .max()
        .unwrap();

    let site = ok(proxy.admin("GET", "/api/v1/sites/shop", None));
    assert_eq!(site["revision"].as_u64(), Some(max_rev), "no write lost");
    let slot = |name: &str| {
        site["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    };
    // staging's rule is written only by routing writes, its deployment only
    // by deploys: each must be what the last successful one of those wrote
    let last_routing = [won(0), won(1)]
        .into_iter()
        .flatten()
        .max_by_key(|b| b["revision"].as_u64())
        .expect("some routing write succeeded");
    assert_eq!(
        slot("staging").unwrap()["traffic_percent"],
        last_routing["distribution"]["staging"]
    );
    let last_deploy = won(3).expect("some deploy succeeded");
    assert_eq!(
        slot("staging").unwrap()["deployment"]["build_version"],
        last_deploy["deployment"]["build_version"]
    );
    // and the whole persisted state is valid
    // (read the file itself: the running proxy holds the store's lock)
    let bytes = std::fs::read(proxy.dir.path().join("state/state.json")).unwrap();
    let doc: slotproxy::store::Persisted = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc.revision, max_rev);
    assert_eq!(doc.state.validate(), vec![]);
    let sum: f64 = doc.state.sites["shop"]
        .slots
        .values()
        .filter_map(|s| s.traffic_percent)
        .sum();
    assert!(sum <= 100.0, "{sum}");
    // live routing agrees with the state: requests reach staging's build
    let a = get(&proxy, "shop-staging.slots.test", "/", &[]);
    assert_eq!(a.status, 200);
}

/// (token, method, path, body, expected status, what the error must say)
type Case<'a> = (
    Option<&'a str>,
    &'a str,
    &'a str,
    Option<&'a str>,
    u16,
    &'a str,
);

#[test]
fn refused_requests_change_nothing() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&site_config(&prod, &staging));
    ok(proxy.admin(
        "PUT",
        "/api/v1/sites/shop/traffic-routing",
        Some(r#"{"distribution": {"staging": 0}}"#),
    ));
    let before = ok(proxy.admin("GET", "/api/v1/sites", None));
    let big = format!(
        r#"{{"distribution": {{"staging": 1}}, "pad": "{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let deploy = "/api/v1/sites/shop/slots/staging/deployment";
    let routing = "/api/v1/sites/shop/traffic-routing";
    let cases: Vec<Case> = vec![
        // a ramp is not a swap action
        (
            Some(TOKEN),
            "POST",
            "/api/v1/sites/shop/slots/staging/swap",
            Some(r#"{"action": "ramp"}"#),
            400,
            "a ramp is PUT on",
        ),
        // gRPC health checks need HTTP/2 to the instances
        (
            Some(TOKEN),
            "PUT",
            deploy,
            Some(
                r#"{"build_version": "v3", "instances": ["127.0.0.1:1"], "health_check": "grpc"}"#,
            ),
            400,
            "instances_protocol = \"h2c\"",
        ),
        (
            Some(TOKEN),
            "PUT",
            deploy,
            Some(
                r#"{"build_version": "v3", "instances": ["127.0.0.1:1"], "instances_protocol": "h3"}"#,
            ),
            400,
            "unknown variant `h3`",
        ),
        // a CA file that is not there is named, and nothing changes
        (
            Some(TOKEN),
            "PUT",
            deploy,
            Some(
                r#"{"build_version": "v3", "instances": ["127.0.0.1:1"], "instances_protocol": "h2", "instances_tls_ca": "/nonexistent/ca.pem"}"#,
            ),
            400,
            "sites[shop].slots[staging].instances_tls_ca: cannot read CA file \"/nonexistent/ca.pem\"",
        ),
        (
            Some(TOKEN),
            "PUT",
            routing,
            Some(r#"{"distribution": {"staging": 20"#),
            400,
            "EOF",
        ),
        // a path segment that is not UTF-8: still a JSON error
        (
            Some(TOKEN),
            "PUT",
            "/api/v1/sites/%FF/traffic-routing",
            Some(r#"{"distribution": {}}"#),
            400,
            "request path",
        ),
        (
            Some(TOKEN),
            "PUT",
            routing,
            Some(r#"{"distribution": {"staging": 20}, "extra": 1}"#),
            400,
            "unknown field `extra`",
        ),
        // a key given twice is refused, not "last one wins"
        (
            Some(TOKEN),
            "PUT",
            routing,
            Some(r#"{"distribution": {"staging": 10, "staging": 90}}"#),
            400,
            "key \"staging\" is given twice",
        ),
        (
            Some(TOKEN),
            "PUT",
            routing,
            Some(r#"{"distribution": {"staging": "20"}}"#),
            400,
            "invalid type",
        ),
        (
            Some(TOKEN),
            "PUT",
            routing,
            Some(r#"{"distribution": {"staging": 101}}"#),
            400,
            "out of range",
        ),
        (
            Some(TOKEN),
            "PUT",
            routing,
            Some(r#"{"distribution": {"production": 10}}"#),
            400,
            "production",
        ),
        (
            Some(TOKEN),
            "PUT",
            routing,
            Some(r#"{"distribution": {"ghost": 10}}"#),
            404,
            "ghost",
        ),
        (
            Some(TOKEN),
            "PUT",
            "/api/v1/sites/nope/traffic-routing",
            Some(r#"{"distribution": {}}"#),
            404,
            "nope",
        ),
        (
            Some(TOKEN),
            "DELETE",
            "/api/v1/sites/nope/traffic-routing",
            None,
            404,
            "nope",
        ),
        (Some(TOKEN), "GET", "/api/v1/sites/nope", None, 404, "nope"),
        (
            Some(TOKEN),
            "PUT",
            deploy,
            Some(r#"{"build_version": "v9", "instances": ["nohost"]}"#),
            400,
            "instances[0]",
        ),
        (
            Some(TOKEN),
            "PUT",
            deploy,
            Some(r#"{"build_version": "v9", "instances": []}"#),
            400,
            "at least one instance",
        ),
        (
            Some(TOKEN),
            "PUT",
            deploy,
            Some(r#"{"build_version": "v9", "instances": ["127.0.0.1:1"], "warmup": "/"}"#),
            400,
            "unknown field `warmup`",
        ),
        (
            Some(TOKEN),
            "PUT",
            deploy,
            Some(r#"{"instances": ["127.0.0.1:1"]}"#),
            400,
            "missing field `build_version`",
        ),
        (
            Some(TOKEN),
            "PUT",
            "/api/v1/sites/shop/slots/ghost/deployment",
            Some(r#"{"build_version": "v9", "instances": ["127.0.0.1:1"]}"#),
            404,
            "ghost",
        ),
        (
            Some(TOKEN),
            "PUT",
            "/api/v1/sites/shop/slots/staging",
            None,
            409,
            "already has",
        ),
        (
            Some(TOKEN),
            "PUT",
            "/api/v1/sites/shop/slots/Bad_Name",
            None,
            400,
            "not a valid name",
        ),
        (
            Some(TOKEN),
            "PUT",
            "/api/v1/sites/shop/slots/qa",
            Some(r#"{"clone_from": "ghost"}"#),
            404,
            "ghost",
        ),
        (
            Some(TOKEN),
            "DELETE",
            "/api/v1/sites/shop/slots/production",
            None,
            409,
            "production",
        ),
        (
            Some(TOKEN),
            "DELETE",
            "/api/v1/sites/shop/slots/ghost",
            None,
            404,
            "ghost",
        ),
        (
            Some(TOKEN),
            "PUT",
            "/api/v1/sites/shop/slots/staging/settings",
            Some(r#"{"settings": {"A": 1}}"#),
            400,
            "invalid type",
        ),
        (Some(TOKEN), "PUT", routing, Some(&big), 413, "limit"),
        (
            Some(TOKEN),
            "GET",
            "/api/v1/nothing-here",
            None,
            404,
            "no such",
        ),
        (None, "GET", "/api/v1/sites", None, 401, "token"),
        (
            Some("wrong-token"),
            "GET",
            "/api/v1/sites",
            None,
            401,
            "token",
        ),
        (Some(""), "DELETE", routing, None, 401, "token"),
        (
            Some("test-token-longer"),
            "DELETE",
            routing,
            None,
            401,
            "token",
        ),
        (None, "GET", "/api/v1/nothing-here", None, 401, "token"),
    ];
    for (token, method, path, body, want, says) in cases {
        let (status, v) = proxy.admin_as(token, method, path, body);
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(
            msg.contains(says),
            "{method} {path}: {msg:?} should say {says:?}"
        );
    }
    assert_eq!(ok(proxy.admin("GET", "/api/v1/sites", None)), before);
    // staging kept its explicit 0: opt-in works, random share is nil
    assert_eq!(spread(&proxy, 10), only("production", 10));
    let a = get(&proxy, "shop.test", "/?x-ms-routing-name=staging", &[]);
    assert_eq!(a.slot(), "staging");

    // /healthz needs no token
    let r = client().get(proxy.admin_url("/healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["status"], "ok", "{body}");
}

#[test]
fn reload_with_invalid_config_keeps_state_and_says_why() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&site_config(&prod, &staging));
    ok(proxy.admin(
        "PUT",
        "/api/v1/sites/shop/traffic-routing",
        Some(r#"{"distribution": {"staging": 100}}"#),
    ));
    let before = ok(proxy.admin("GET", "/api/v1/sites", None));

    // a file that does not parse
    proxy.rewrite_sites(&site_config(&prod, &staging).replace("instances", "instancez"));
    let (status, v) = proxy.admin("POST", "/api/v1/reload", None);
    assert_eq!(status, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("unknown field `instancez`"), "{msg}");
    assert!(msg.contains("running state kept"), "{msg}");

    // a file that parses but, merged with the run-time rule, sums over 100
    proxy.rewrite_sites(&format!(
        "{}\n[[sites.slots]]\nname = \"canary\"\ntraffic_percent = 50\n",
        site_config(&prod, &staging)
    ));
    let (status, v) = proxy.admin("POST", "/api/v1/reload", None);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("over 100"), "{v}");

    assert_eq!(ok(proxy.admin("GET", "/api/v1/sites", None)), before);
    assert_eq!(spread(&proxy, 10), only("staging", 10));

    // a valid edit applies what changed in the file, keeps the API's rule
    proxy.rewrite_sites(&format!(
        "{}\n[[sites.slots]]\nname = \"canary\"\n",
        site_config(&prod, &staging)
    ));
    let v = ok(proxy.admin("POST", "/api/v1/reload", None));
    assert!(v["revision"].as_u64() > before["revision"].as_u64(), "{v}");
    let r = ok(proxy.admin("GET", "/api/v1/sites/shop/traffic-routing", None));
    assert_eq!(r["distribution"], json!({"staging": 100.0}));
    assert_eq!(get(&proxy, "shop-canary.slots.test", "/", &[]).status, 503);
}

#[test]
fn cli_drives_create_deploy_route_clear_delete() {
    let (prod, staging, canary) = (App::start("v1"), App::start("v2"), App::start("v3"));
    let proxy = Proxy::start(&site_config(&prod, &staging));
    let run = |args: &[&str]| {
        let (code, out, err) = proxy.cli(args);
        assert_eq!(code, 0, "slotproxy {args:?} failed: {err}");
        out
    };

    let out = run(&[
        "slot",
        "create",
        "--site",
        "shop",
        "--slot",
        "canary",
        "--clone-from",
        "production",
    ]);
    assert!(out.contains("created slot shop/canary"), "{out}");
    let out = run(&[
        "deploy",
        "--site",
        "shop",
        "--slot",
        "canary",
        "--build-version",
        "v3",
        "--instance",
        &canary.addr(),
        "--warmup-path",
        "/",
        "--warmup-status",
        "200",
    ]);
    assert!(out.contains("deployed v3 to shop/canary"), "{out}");
    let out = run(&["slot", "list", "--site", "shop"]);
    let canary_row = out
        .lines()
        .find(|l| l.starts_with("canary"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        canary_row.contains("v3") && canary_row.contains(&canary.addr()),
        "{out}"
    );

    let out = run(&[
        "traffic-routing",
        "set",
        "--site",
        "shop",
        "--distribution",
        "canary=100,staging=0",
    ]);
    assert!(out.contains("production  0% (rest)"), "{out}");
    assert_eq!(spread(&proxy, 20), only("canary", 20));
    let json_out = run(&[
        "traffic-routing",
        "show",
        "--site",
        "shop",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["distribution"], json!({"canary": 100.0, "staging": 0.0}));

    run(&["traffic-routing", "clear", "--site", "shop"]);
    assert_eq!(spread(&proxy, 20), only("production", 20));

    // Azure's swap with preview from the CLI: phase one applies
    // production's settings to staging and stops; reset undoes it, and
    // production never moved
    let swap = |action: &str| {
        run(&[
            "slot",
            "swap",
            "--site",
            "shop",
            "--slot",
            "staging",
            "--target-slot",
            "production",
            "--action",
            action,
        ])
    };
    let out = swap("preview");
    assert_eq!(out.lines().last(), Some("previewing"), "{out}");
    let out = swap("reset");
    assert_eq!(out.lines().last(), Some("succeeded"), "{out}");
    assert_eq!(get(&proxy, "shop.test", "/", &[]).version(), "v1");
    let out = run(&["activity", "--site", "shop"]);
    assert!(
        out.contains("preview") && out.contains("reset"),
        "both operations are in the log:\n{out}"
    );

    let out = run(&["slot", "delete", "--site", "shop", "--slot", "canary"]);
    assert!(out.contains("deleted slot shop/canary"), "{out}");
    assert_eq!(get(&proxy, "shop-canary.slots.test", "/", &[]).status, 404);

    // errors: status and message, non-zero exit
    let (code, _, err) = proxy.cli(&["slot", "delete", "--site", "shop", "--slot", "production"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("409") && err.contains("production slot cannot be deleted"),
        "{err}"
    );
    let (code, _, err) = proxy.cli(&["slot", "list", "--token", "wrong"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = proxy.cli(&[
        "traffic-routing",
        "set",
        "--site",
        "shop",
        "--distribution",
        "staging",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("slot=percent"), "{err}");

    let out = run(&["reload"]);
    let file = proxy.config_path.display().to_string();
    assert!(
        out.starts_with(&format!("reloaded {file} (revision ")),
        "{out}"
    );
}

#[test]
fn non_loopback_admin_without_token_is_refused() {
    let (port, metrics) = (free_port(), free_port());
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
[admin]
listen = "0.0.0.0:{admin}"
[metrics]
listen = "127.0.0.1:{metrics}"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
"#,
        admin = free_port()
    );
    let (code, err) = refused(&config);
    assert_ne!(code, 0);
    assert!(err.contains("admin.listen"), "{err}");
    assert!(err.contains("no admin token"), "{err}");
}

/// What an operator types first (issue 23): a bare `host:port` for
/// `--admin`, usage lines that do not list the flags the environment gave,
/// one table for every site's slots, `auto-swap` with neither flag refused,
/// a swap action error that lists only what it takes, and a fresh
/// deployment's instances `unknown` until their first health check.
#[test]
fn cli_says_what_an_operator_needs_first() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let blog = App::start("b1");
    let sites = format!(
        "{}\n[[sites]]\nname = \"blog\"\nhostnames = [\"blog.test\"]\n[[sites.slots]]\nname = \"production\"\ninstances = [\"{}\"]\n",
        site_config(&prod, &staging),
        blog.addr()
    );
    let proxy = Proxy::start(&sites);

    // every site's slots: one header, a SITE column
    let (code, out, err) = proxy.cli(&["slot", "list"]);
    assert_eq!(code, 0, "{err}");
    let headers = out.lines().filter(|l| l.starts_with("SITE ")).count();
    assert_eq!(headers, 1, "{out}");
    assert!(out.lines().any(|l| l.starts_with("blog ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("shop ")), "{out}");

    // --admin without a scheme is http
    let bare = format!("127.0.0.1:{}", proxy.admin_port);
    let (code, out, err) = proxy.cli(&["slot", "list", "--site", "blog", "--admin", &bare]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("production"), "{out}");
    let (code, _, err) = proxy.cli(&["slot", "list", "--admin", "ftp://127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--admin") && err.contains("http://host:port"),
        "{err}"
    );

    // a usage line lists what is required, not what the environment set
    let (code, _, err) = proxy.cli(&["deploy", "--site", "shop"]);
    assert_eq!(code, 2, "{err}");
    let usage = err.lines().find(|l| l.starts_with("Usage:")).unwrap_or("");
    assert!(usage.contains("--slot <SLOT>"), "{err}");
    assert!(
        !usage.contains("--admin") && !usage.contains("--token"),
        "{err}"
    );

    // auto-swap with neither flag: an error naming both, nothing changed
    let (code, _, err) = proxy.cli(&["slot", "auto-swap", "--site", "shop", "--slot", "staging"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--auto-swap-slot") && err.contains("--disable"),
        "{err}"
    );
    let site = ok(proxy.admin("GET", "/api/v1/sites/shop", None));
    let staging_view = site["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "staging")
        .unwrap()
        .clone();
    assert_eq!(staging_view["auto_swap_target"], Value::Null);

    // a bad swap action is told the three it may be; ramp is not one
    let (status, v) = proxy.admin(
        "POST",
        "/api/v1/sites/shop/slots/staging/swap",
        Some(r#"{"action": "swapp"}"#),
    );
    assert_eq!(status, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("use swap, preview or reset"), "{msg}");
    assert!(!msg.contains("ramp"), "{msg}");

    // a deployment to an address nothing listens on: unknown, then down
    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, out, err) = proxy.cli(&[
        "deploy",
        "--site",
        "shop",
        "--slot",
        "staging",
        "--build-version",
        "v9",
        "--instance",
        &nobody,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{nobody} (unknown)")), "{out}");
    assert!(!out.contains("(up)"), "{out}");
    wait_for(20, "the instance to be checked down", || {
        let (_, out, _) = proxy.cli(&["slot", "list", "--site", "shop"]);
        out.contains(&format!("{nobody} (down)")).then_some(())
    });
}
