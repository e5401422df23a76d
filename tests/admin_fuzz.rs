//! Randomised tests of the admin API's request bodies (issue 14): every body
//! decoder (`admin::parse_body` for each body type of `api`), and every
//! endpoint that takes a body, end to end against the real binary.
//!
//! Inputs: arbitrary bytes from a JSON-rich alphabet, and valid bodies with
//! one structure-aware edit (a value of another type or an edge value, a
//! key removed, added or repeated, an array element repeated or removed).
//! Whatever the input: no panic and no 5xx; a refusal is a 4xx with
//! `{"error": "<what was wrong>"}`; and a refused write changes nothing (the
//! state's revision stays). An accepted write is undone (or its operation
//! followed to its end) before the next case, so nothing runs in the
//! background to move the revision.
//!
//! A few seconds in `cargo test`; a longer run:
//! `SLOTPROXY_FUZZ_CASES=100000 cargo test --release --test admin_fuzz`
//! (the end-to-end property sends 1/280 of that to each of its 7 endpoints:
//! ~70 each by default).

mod common;
mod fuzz_support;
use common::*;
use fuzz_support::*;
use rand::Rng;
use serde_json::{json, Value};
use slotproxy::admin::parse_body;
use slotproxy::api;

const JSON_BYTES: &[u8] = b"{}[]:,\"\\ 0123456789.-+eEtrufalsn\n\tabx\xc3\xa9";

/// A valid body per body type, the seeds of the structure-aware edits.
fn seeds() -> Vec<(&'static str, Value)> {
    vec![
        ("create_slot", json!({"clone_from": "production"})),
        (
            "deploy",
            json!({"build_version": "v9", "instances": ["127.0.0.1:1", "127.0.0.1:2"],
                   "warmup_path": "/", "warmup_statuses": [200], "warmup_timeout_secs": 5,
                   "warmup_retries": 1, "settings_hook_path": "/s",
                   "instances_protocol": "http1", "health_check": "http",
                   "upstream_read_timeout_secs": 30}),
        ),
        (
            "settings",
            json!({"settings": {"A": "1", "B": "2"}, "sticky_settings": {"DB": "x"}}),
        ),
        (
            "traffic_routing",
            json!({"distribution": {"staging": 10.5}}),
        ),
        ("auto_swap", json!({"target_slot": "production"})),
        (
            "swap",
            json!({"target_slot": "production", "action": "swap"}),
        ),
        (
            "ramp",
            json!({"step": 10, "interval_secs": 60, "min_percent": 0, "max_percent": 50,
                   "gates": {"max_error_ratio": 0.02, "max_p99_ms": 500, "min_requests": 5},
                   "on_breach": "pause"}),
        ),
    ]
}

/// Decode `body` as the body type `kind` names; Err is the refusal's text.
fn decode(kind: &str, body: &[u8]) -> Result<(), String> {
    match kind {
        "create_slot" => parse_body::<api::CreateSlot>(body).map(drop),
        "deploy" => parse_body::<api::Deploy>(body).map(drop),
        "settings" => parse_body::<api::SetSettings>(body).map(drop),
        "traffic_routing" => parse_body::<api::TrafficRouting>(body).map(drop),
        "auto_swap" => parse_body::<api::AutoSwapConfig>(body).map(drop),
        "swap" => parse_body::<api::StartSwap>(body).map(drop),
        "ramp" => parse_body::<api::StartRamp>(body).map(drop),
        _ => unreachable!(),
    }
}

fn check_decode(kind: &str, body: &[u8]) -> Result<(), String> {
    let r = std::panic::catch_unwind(|| decode(kind, body)).unwrap_or_else(|_| {
        panic!(
            "{kind}: parse_body panicked on {:?}",
            String::from_utf8_lossy(body)
        )
    });
    if let Err(e) = &r {
        let what = e.strip_prefix("request body: ").unwrap_or("");
        assert!(
            !what.trim().is_empty(),
            "{kind}: a refusal that names nothing ({e:?}) for {:?}",
            String::from_utf8_lossy(body)
        );
    }
    r
}

#[test]
fn the_seed_bodies_decode() {
    for (kind, body) in seeds() {
        check_decode(kind, body.to_string().as_bytes()).unwrap();
    }
}

#[test]
fn arbitrary_bytes_never_panic_a_decoder() {
    let mut rng = rng();
    for _ in 0..cases(20_000) {
        let body = bytes(&mut rng, JSON_BYTES, 60);
        for (kind, _) in seeds() {
            let _ = check_decode(kind, &body);
        }
    }
}

#[test]
fn edited_bodies_never_panic_a_decoder_and_repeated_keys_are_refused() {
    let mut rng = rng();
    let seeds = seeds();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..cases(20_000) {
        let (kind, seed) = &seeds[rng.random_range(0..seeds.len())];
        let mut body = seed.clone();
        let path = mutate_json(&mut rng, &mut body);
        let text = body.to_string();
        let result = check_decode(kind, text.as_bytes());
        let ok = result.is_ok();
        if ok {
            accepted += 1;
        } else {
            refused += 1;
        }
        // a value of the wrong type is named by its key
        if let (Err(e), Some(key)) = (&result, retyped_key(seed, &body, &path)) {
            assert!(
                e.contains(key),
                "{kind}: {key} changed type: {e} for {text}"
            );
        }
        // an accepted body with its first key given twice (same value) is refused
        if let Some((key, value)) = first_key(&text).filter(|_| ok) {
            let twice = format!("{{{key}: {value}, {}", &text[1..]);
            let e = check_decode(kind, twice.as_bytes()).unwrap_err();
            assert!(
                e.contains("given twice") || e.contains("duplicate field"),
                "{e} for {twice}"
            );
        }
        // and cut short anywhere
        let cut = rng.random_range(0..text.len());
        if cut > 0 {
            let _ = check_decode(kind, &text.as_bytes()[..cut]);
        }
        // or with arbitrary bytes in it
        let _ = check_decode(kind, &mutate_bytes(&mut rng, text.as_bytes(), JSON_BYTES));
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// The first key of the outermost object and its value, as JSON.
fn first_key(text: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let (k, v) = v.as_object()?.iter().next()?;
    Some((Value::from(k.as_str()).to_string(), v.to_string()))
}

// ---- end to end ------------------------------------------------------------

fn sites(prod: &App, staging: &App) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{}"]
warmup_timeout_secs = 1
warmup_retries = 0
[sites.slots.settings]
A = "prod"
[[sites.slots]]
name = "staging"
traffic_percent = 10
build_version = "v2"
instances = ["{}"]
warmup_timeout_secs = 1
warmup_retries = 0
"#,
        prod.addr(),
        staging.addr()
    )
}

const SLOT: &str = "/api/v1/sites/shop/slots/staging";

/// (method, path, seed kind) of every endpoint that reads a body.
fn endpoints() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("PUT", "/api/v1/sites/shop/slots/qa".into(), "create_slot"),
        ("PUT", format!("{SLOT}/deployment"), "deploy"),
        ("PUT", format!("{SLOT}/settings"), "settings"),
        (
            "PUT",
            "/api/v1/sites/shop/traffic-routing".into(),
            "traffic_routing",
        ),
        ("PUT", format!("{SLOT}/auto-swap"), "auto_swap"),
        ("POST", format!("{SLOT}/swap"), "swap"),
        ("PUT", format!("{SLOT}/ramp"), "ramp"),
    ]
}

fn revision(proxy: &Proxy) -> u64 {
    let (code, v) = proxy.admin("GET", api::SITES, None);
    assert_eq!(code, 200, "{v}");
    v["revision"].as_u64().unwrap()
}

/// Follow a swap operation to its end.
fn finish(proxy: &Proxy, id: &str) {
    wait_for(30, "the swap operation to end", || {
        let (_, op) = proxy.admin("GET", &format!("/api/v1/operations/{id}"), None);
        (op["status"] != "running").then_some(())
    });
}

/// Undo what an accepted write left behind that could change the state by
/// itself later (an auto swap, a ramp, a swap in flight or in preview).
fn settle(proxy: &Proxy, staging_deploy: &str, kind: &str, answer: &Value) {
    match kind {
        "deploy" => {
            if let Some(id) = answer["auto_swap"]["operation_id"].as_str() {
                finish(proxy, id);
            }
            let (code, v) = proxy.admin("PUT", &format!("{SLOT}/deployment"), Some(staging_deploy));
            assert_eq!(code, 200, "{v}");
        }
        "auto_swap" => {
            let (code, v) = proxy.admin(
                "PUT",
                &format!("{SLOT}/auto-swap"),
                Some(r#"{"target_slot": null}"#),
            );
            assert_eq!(code, 200, "{v}");
        }
        "swap" => {
            if let Some(id) = answer["operation_id"].as_str() {
                finish(proxy, id);
            }
            // a preview waits for its completion or reset: reset it
            let (code, v) = proxy.admin(
                "POST",
                &format!("{SLOT}/swap"),
                Some(r#"{"action": "reset"}"#),
            );
            if let Some(id) = v["operation_id"].as_str() {
                finish(proxy, id);
            }
            assert!(code < 500, "{code} {v}");
        }
        "ramp" => {
            let (code, v) = proxy.admin("DELETE", &format!("{SLOT}/ramp"), None);
            assert!(code < 500, "{code} {v}");
        }
        _ => {}
    }
}

#[test]
fn admin_bodies_end_to_end_are_refused_with_a_message_and_change_nothing() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&sites(&prod, &staging));
    let staging_deploy = json!({"build_version": "v2", "instances": [staging.addr()]}).to_string();
    let mut rng = rng();
    let seeds = seeds();
    let per_endpoint = (cases(20_000) / 280).max(10);
    let mut seen = std::collections::BTreeMap::<(&str, u16), usize>::new();
    for _ in 0..per_endpoint {
        for (method, path, kind) in endpoints() {
            let seed = &seeds.iter().find(|(k, _)| *k == kind).unwrap().1;
            let body = match rng.random_range(0..4) {
                0 => String::from_utf8_lossy(&bytes(&mut rng, JSON_BYTES, 40)).into_owned(),
                1 => String::from_utf8_lossy(&mutate_bytes(
                    &mut rng,
                    seed.to_string().as_bytes(),
                    JSON_BYTES,
                ))
                .into_owned(),
                _ => {
                    let mut v = seed.clone();
                    mutate_json(&mut rng, &mut v);
                    v.to_string()
                }
            };
            let before = revision(&proxy);
            let (code, answer) = proxy.admin(method, &path, Some(&body));
            *seen.entry((kind, code)).or_default() += 1;
            assert!(
                code < 500,
                "{method} {path} {body:?} -> {code} {answer}\n{}",
                proxy.log()
            );
            if (200..300).contains(&code) {
                settle(&proxy, &staging_deploy, kind, &answer);
                continue;
            }
            let error = answer["error"].as_str().unwrap_or("");
            assert!(
                (400..500).contains(&code) && !error.trim().is_empty(),
                "{method} {path} {body:?} -> {code} {answer}"
            );
            assert_eq!(
                revision(&proxy),
                before,
                "{method} {path} {body:?} was refused ({code} {error}) but changed the state"
            );
        }
    }
    eprintln!("answers by body and status: {seen:?}");
    // the edits must reach both sides of every decoder
    for (_, _, kind) in endpoints() {
        let refused = seen.iter().any(|((k, c), _)| *k == kind && *c >= 400);
        assert!(refused, "{kind}: nothing refused: {seen:?}");
    }
    let accepted = seen.iter().filter(|((_, c), _)| *c < 300).count();
    assert!(accepted >= 4, "too little accepted: {seen:?}");
    // and the proxy still routes
    assert_eq!(
        get(
            &proxy,
            "shop.test",
            "/",
            &[("Cookie", "x-ms-routing-name=self")]
        )
        .status,
        200
    );
}
