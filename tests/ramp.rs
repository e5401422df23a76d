//! End-to-end ramps (docs/guide/ramps.md): the real binary, real upstream
//! servers that start failing or slow down on command, a real decision
//! callback server, steady real traffic, and the admin API and CLI.
//!
//! Intervals are one second (sub-second intervals are allowed for this);
//! every wait polls with a deadline.

mod common;
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An app instance whose answers the test controls: 500s from `fail`,
/// `delay_ms` of latency on every request.
struct Upstream {
    port: u16,
    fail: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl Upstream {
    fn start() -> Upstream {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let fail = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (f, d) = (fail.clone(), delay_ms.clone());
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let (f, d) = (f.clone(), d.clone());
            async move {
                let ms = d.load(Ordering::Relaxed);
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let slot = headers
                    .get("x-slot-name")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                let status = if f.load(Ordering::Relaxed) {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                };
                (status, format!("slot: {slot}\n"))
            }
        });
        rt.spawn(async move { axum::serve(listener, app).await });
        Upstream {
            port,
            fail,
            delay_ms,
            _rt: rt,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Steady traffic through the proxy until dropped: `threads` clients, each
/// sending `cookie` (or none) to the production host.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &Proxy, threads: usize, cookie: Option<&str>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let (stop, url, cookie) =
                    (stop.clone(), proxy.url("/"), cookie.map(str::to_string));
                std::thread::spawn(move || {
                    let c = client();
                    while !stop.load(Ordering::Relaxed) {
                        let mut req = c.get(&url).header("host", "shop.test");
                        if let Some(v) = &cookie {
                            req = req.header("cookie", v.as_str());
                        }
                        let _ = req.send().and_then(|r| r.bytes());
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads: handles,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn sites(prod: &Upstream, staging: &Upstream, staging_rule: &str) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["{}"]
[[sites.slots]]
name = "staging"
traffic_percent = {staging_rule}
instances = ["{}"]
"#,
        prod.addr(),
        staging.addr()
    )
}

const RAMP: &str = "/api/v1/sites/shop/slots/staging/ramp";

fn ramp(proxy: &Proxy) -> Value {
    let (code, v) = proxy.admin("GET", RAMP, None);
    assert_eq!(code, 200, "{v}");
    v
}

/// Poll the ramp until `pred` holds.
fn wait_ramp(proxy: &Proxy, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(secs, what, || {
        let v = ramp(proxy);
        pred(&v).then_some(v)
    })
}

fn operation(proxy: &Proxy, id: &str) -> Value {
    let (code, op) = proxy.admin("GET", &format!("/api/v1/operations/{id}"), None);
    assert_eq!(code, 200, "{op}");
    op
}

fn phase_names(op: &Value) -> Vec<String> {
    op["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_slot_that_starts_failing_is_rolled_back_within_one_interval() {
    let (prod, staging) = (Upstream::start(), Upstream::start());
    let proxy = Proxy::start(&sites(&prod, &staging, "0"));
    let _load = Load::start(&proxy, 3, None);
    let (code, out, err) = proxy.cli(&[
        "traffic-routing",
        "ramp",
        "start",
        "--site",
        "shop",
        "--slot",
        "staging",
        "--step",
        "20",
        "--interval-secs",
        "1",
        "--max-error-ratio",
        "0.1",
        "--min-requests",
        "20",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ramp of shop/staging: running at 0%"), "{out}");

    // healthy: it steps up by 20 each interval (the step from 0% unjudged)
    let v = wait_ramp(&proxy, 30, "the ramp to reach 40%", |v| {
        v["percent"].as_f64().unwrap() >= 40.0
    });
    let op_id = v["operation_id"].as_str().unwrap().to_string();
    let steps_before = phase_names(&operation(&proxy, &op_id)).len();
    staging.fail.store(true, Ordering::Relaxed);
    let v = wait_ramp(&proxy, 30, "the ramp to roll back", |v| {
        v["status"] != "running" && v["status"] != "holding"
    });
    assert_eq!(v["status"], "rolled_back", "{v}");
    assert_eq!(v["percent"], 0.0, "the rule is back at min_percent");
    let verdict = &v["last_verdict"];
    assert_eq!(verdict["result"], "breach", "{v}");
    assert!(verdict["error_ratio"].as_f64().unwrap() > 0.1, "{v}");
    assert!(verdict["responses"].as_u64().unwrap() >= 20, "{v}");

    // within one interval: after the failure began, at most the verdict of
    // the interval already under way went by before the breach
    let op = operation(&proxy, &op_id);
    let after: Vec<String> = phase_names(&op).split_off(steps_before);
    assert_eq!(after.last().map(String::as_str), Some("breach"), "{op}");
    assert!(
        after.len() <= 2,
        "more than one interval went by: {after:?}"
    );
    assert_eq!(op["action"], "ramp");
    assert_eq!(op["status"], "failed");
    assert!(phase_names(&op).starts_with(&["start".into(), "step".into(), "step".into()]));

    // production serves everyone again
    let (_, rules) = proxy.admin("GET", "/api/v1/sites/shop/traffic-routing", None);
    assert_eq!(rules["distribution"]["staging"], 0.0);

    // the CLI shows every step of it
    let (code, out, err) = proxy.cli(&["activity", "--site", "shop"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ramp") && out.contains("production -> staging"),
        "{out}"
    );
    assert!(
        out.contains("0% → 20%") && out.contains("20% → 40%"),
        "{out}"
    );
    assert!(
        out.contains("rolled back") && out.contains("breach"),
        "{out}"
    );

    let text = scrape(&proxy);
    assert!(value(&text, r#"slotproxy_ramp_verdicts_total{result="breach"}"#) >= 1.0);
    assert!(value(&text, r#"slotproxy_ramp_verdicts_total{result="step"}"#) >= 2.0);
    assert!(
        text.contains(r#"slotproxy_ramp_verdicts_total{result="callback"} 0"#),
        "every result exported at 0"
    );
    assert_eq!(
        value(
            &text,
            r#"slotproxy_ramp_percent{site="shop",slot="staging"}"#
        ),
        0.0
    );
}

#[test]
fn a_slow_slot_trips_the_latency_gate_and_pauses() {
    let (prod, staging) = (Upstream::start(), Upstream::start());
    let proxy = Proxy::start(&sites(&prod, &staging, "10"));
    // pinned clients keep the slot busy whatever its share
    let _load = Load::start(&proxy, 4, Some("x-ms-routing-name=staging"));
    let (code, v) = proxy.admin(
        "PUT",
        RAMP,
        Some(
            r#"{"step": 10, "interval_secs": 1, "max_percent": 60, "on_breach": "pause",
                "gates": {"max_error_ratio": null, "max_p99_ms": 100, "min_requests": 5}}"#,
        ),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["percent"].as_f64()),
        (Some("running"), Some(10.0))
    );
    // fast: the gate passes and it steps
    wait_ramp(&proxy, 30, "a step while fast", |v| {
        v["percent"].as_f64().unwrap() >= 20.0
    });
    staging.delay_ms.store(250, Ordering::Relaxed);
    let v = wait_ramp(&proxy, 30, "the ramp to pause", |v| v["status"] == "paused");
    let verdict = &v["last_verdict"];
    assert_eq!(verdict["result"], "breach", "{v}");
    assert!(verdict["p99_ms"].as_f64().unwrap() > 100.0, "{v}");
    assert!(verdict["detail"].as_str().unwrap().contains("p99"), "{v}");
    assert_eq!(v["percent"], verdict["from_percent"], "paused where it was");
    // paused means no more steps
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ramp(&proxy)["percent"], v["percent"]);

    // DELETE stops a ramp; GET still shows it
    let (code, v) = proxy.admin("DELETE", RAMP, None);
    assert_eq!((code, v["status"].as_str()), (200, Some("paused")));
    let (code, _) = proxy.admin("DELETE", "/api/v1/sites/shop/slots/production/ramp", None);
    assert_eq!(code, 404);
}

/// A decision callback server: records every body, answers `answer`, or
/// hangs past the time-out while `hang` is set.
struct Callback {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    hang: Arc<AtomicBool>,
    _rt: tokio::runtime::Runtime,
}

impl Callback {
    fn start(answer: &'static str) -> Callback {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let hang = Arc::new(AtomicBool::new(false));
        let (b, h) = (bodies.clone(), hang.clone());
        let app = axum::Router::new().route(
            "/decide",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (b, h) = (b.clone(), h.clone());
                async move {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        b.lock().unwrap().push(v);
                    }
                    if h.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    answer
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await });
        Callback {
            port,
            bodies,
            hang,
            _rt: rt,
        }
    }
}

#[test]
fn a_decision_callback_chooses_the_percent_and_its_silence_is_a_breach() {
    let (prod, staging) = (Upstream::start(), Upstream::start());
    let callback = Callback::start(r#"{"percent": 35}"#);
    let proxy = Proxy::start(&sites(&prod, &staging, "10"));
    let _load = Load::start(&proxy, 3, Some("x-ms-routing-name=staging"));
    let body = format!(
        r#"{{"step": 10, "interval_secs": 1, "max_percent": 50,
            "gates": {{"min_requests": 5}},
            "decision_callback_url": "http://127.0.0.1:{}/decide"}}"#,
        callback.port
    );
    let (code, v) = proxy.admin("PUT", RAMP, Some(&body));
    assert_eq!(code, 200, "{v}");
    let v = wait_ramp(&proxy, 30, "the callback's percent", |v| {
        v["last_verdict"]["result"] == "callback"
    });
    assert_eq!(v["percent"], 35.0, "{v}");
    let first = callback.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        (first["site"].as_str(), first["slot"].as_str()),
        (Some("shop"), Some("staging"))
    );
    assert_eq!(first["percent"], 10.0, "{first}");
    assert_eq!(first["proposed_percent"], 20.0, "{first}");
    assert!(first["responses"].as_u64().unwrap() >= 5, "{first}");
    assert_eq!(first["errors_5xx"], 0);

    callback.hang.store(true, Ordering::Relaxed);
    let v = wait_ramp(&proxy, 30, "the time-out breach", |v| {
        v["status"] == "rolled_back"
    });
    assert_eq!(v["percent"], 0.0);
    let detail = v["last_verdict"]["detail"].as_str().unwrap();
    assert!(detail.contains("did not answer within 1.0s"), "{detail}");
}

#[test]
fn bad_ramps_are_refused_naming_what_is_wrong() {
    let (prod, staging) = (Upstream::start(), Upstream::start());
    let proxy = Proxy::start(&sites(&prod, &staging, "10"));
    let (code, v) = proxy.admin("PUT", RAMP, Some(r#"{"step": 0, "interval_secs": 0.01}"#));
    assert_eq!(code, 400);
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("step: 0 is out of range") && e.contains("interval_secs"),
        "{e}"
    );
    let (code, v) = proxy.admin("PUT", RAMP, Some(r#"{"gates": {"p99": 1}}"#));
    assert_eq!(code, 400);
    assert!(
        v["error"].as_str().unwrap().contains("unknown field `p99`"),
        "{v}"
    );
    let (code, _) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/production/ramp",
        Some("{}"),
    );
    assert_eq!(code, 400);
    let (code, _) = proxy.admin("GET", RAMP, None);
    assert_eq!(code, 404, "no ramp yet");
}

#[test]
fn a_holding_ramp_keeps_judging_and_rolls_back_a_later_breach() {
    let (prod, staging) = (Upstream::start(), Upstream::start());
    let proxy = Proxy::start(&sites(&prod, &staging, "0"));
    let _load = Load::start(&proxy, 3, None);
    let body = r#"{"step": 50, "interval_secs": 1, "max_percent": 50,
        "gates": {"max_error_ratio": 0.1, "min_requests": 20}}"#;
    let (code, v) = proxy.admin("PUT", RAMP, Some(body));
    assert_eq!(code, 200, "{v}");

    // one unjudged step from 0% reaches max_percent: it holds there...
    let v = wait_ramp(&proxy, 30, "the ramp to hold at 50%", |v| {
        v["status"] == "holding"
    });
    assert_eq!(v["percent"], 50.0, "{v}");
    // ...and goes on judging: healthy intervals keep it holding
    let op_id = v["operation_id"].as_str().unwrap().to_string();
    let judged = |op: &Value| {
        phase_names(op)
            .iter()
            .filter(|p| p.as_str() == "hold")
            .count()
    };
    wait_for(30, "a healthy verdict while holding", || {
        (judged(&operation(&proxy, &op_id)) >= 1).then_some(())
    });
    assert_eq!(ramp(&proxy)["status"], "holding");

    // a breach while holding still rolls the slot back
    staging.fail.store(true, Ordering::Relaxed);
    let v = wait_ramp(&proxy, 30, "the held ramp to roll back", |v| {
        v["status"] != "holding"
    });
    assert_eq!(v["status"], "rolled_back", "{v}");
    assert_eq!(v["percent"], 0.0, "{v}");
    assert_eq!(v["last_verdict"]["result"], "breach", "{v}");
    let (_, rules) = proxy.admin("GET", "/api/v1/sites/shop/traffic-routing", None);
    assert_eq!(rules["distribution"]["staging"], 0.0);
    assert_eq!(operation(&proxy, &op_id)["status"], "failed");
}
