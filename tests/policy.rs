//! Traffic policy end to end (SPEC §16): request matches route by header,
//! cookie and regex over HTTP/1.1 and HTTP/2, after the query link and
//! before the pin, without pinning; outlier ejection takes an instance
//! that answers 500 out of its slot's pool, keeps at least half of the
//! pool in, returns it after its time once its health check passes, and
//! doubles the time on the next ejection. Real proxy, real demo apps.

mod common;

use common::*;
use std::time::Duration;

const HOST: &str = "shop.test";

fn match_sites(prod: &App, staging: &App, beta: &App, qa: &App) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["{HOST}"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
instances = ["{}"]
[[sites.slots]]
name = "staging"
traffic_percent = 30
instances = ["{}"]
[[sites.slots]]
name = "beta"
traffic_percent = 0
instances = ["{}"]
[[sites.slots.match]]
header = "x-beta"
value = "true"
[[sites.slots.match]]
header = "user-agent"
regex = '^Internal/\d+'
[[sites.slots]]
name = "qa"
instances = ["{}"]
[[sites.slots.match]]
cookie = "plan"
value = "enterprise"
"#,
        prod.addr(),
        staging.addr(),
        beta.addr(),
        qa.addr()
    )
}

fn with_access_log(dir_hint: &str) -> impl Fn(String) -> String + '_ {
    move |t: String| {
        format!("{t}\n[access_log]\nenabled = true\nformat = \"json\"\npath = \"{dir_hint}\"\n")
    }
}

#[test]
fn matches_route_by_header_cookie_and_regex_and_never_pin() {
    let (prod, staging, beta, qa) = (
        App::start("v1"),
        App::start("v2"),
        App::start("beta1"),
        App::start("qa1"),
    );
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("access.log");
    let log_text = log_path.display().to_string();
    let proxy = Proxy::start_edited(
        &match_sites(&prod, &staging, &beta, &qa),
        1,
        with_access_log(&log_text),
    );

    // a header match, its name in any case
    for h in ["x-beta", "X-Beta"] {
        let a = get(&proxy, HOST, "/", &[(h, "true")]);
        assert_eq!((a.status, a.slot()), (200, "beta"), "{a:?}");
        assert!(a.set_cookie.is_empty(), "a match is never pinned: {a:?}");
    }
    // the value is exact
    let a = get(
        &proxy,
        HOST,
        "/",
        &[("x-beta", "TRUE"), ("cookie", "x-ms-routing-name=self")],
    );
    assert_eq!(a.slot(), "production");
    // a regex match
    let a = get(
        &proxy,
        HOST,
        "/",
        &[("user-agent", "Internal/42 (build bot)")],
    );
    assert_eq!(a.slot(), "beta", "{a:?}");
    assert!(a.set_cookie.is_empty());
    let a = get(
        &proxy,
        HOST,
        "/",
        &[
            ("user-agent", "Mozilla/5.0 Internal/42"),
            ("cookie", "x-ms-routing-name=self"),
        ],
    );
    assert_eq!(a.slot(), "production", "the regex is anchored at the start");
    // a cookie match, and it comes before the pin cookie
    let a = get(&proxy, HOST, "/", &[("cookie", "a=1; plan=enterprise")]);
    assert_eq!(a.slot(), "qa", "{a:?}");
    assert!(a.set_cookie.is_empty());
    let a = get(
        &proxy,
        HOST,
        "/",
        &[("cookie", "x-ms-routing-name=staging; plan=enterprise")],
    );
    assert_eq!(a.slot(), "qa", "a match comes before the pin");
    assert!(a.set_cookie.is_empty(), "and leaves the pin alone: {a:?}");

    // the query link wins over a match, and pins as always
    let a = get(
        &proxy,
        HOST,
        "/?x-ms-routing-name=self",
        &[("x-beta", "true")],
    );
    assert_eq!((a.slot(), a.pin()), ("production", Some("self")), "{a:?}");
    let a = get(
        &proxy,
        HOST,
        "/?x-ms-routing-name=staging",
        &[("cookie", "plan=enterprise")],
    );
    assert_eq!((a.slot(), a.pin()), ("staging", Some("staging")));
    // an unusable link value is ignored: the match applies
    let a = get(
        &proxy,
        HOST,
        "/?x-ms-routing-name=nosuch",
        &[("x-beta", "true")],
    );
    assert_eq!(a.slot(), "beta");
    // a slot host name is not a production host name: no matches there
    let a = get(
        &proxy,
        "shop-staging.slots.test",
        "/",
        &[("x-beta", "true")],
    );
    assert_eq!(a.slot(), "staging");

    // fitting no match: the split as before, pinned
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..120 {
        let a = get(
            &proxy,
            HOST,
            "/",
            &[("x-beta", "false"), ("cookie", "plan=free")],
        );
        let want = if a.slot() == "production" {
            "self"
        } else {
            a.slot()
        };
        assert_eq!(a.pin(), Some(want), "{a:?}");
        seen.insert(a.slot().to_string());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["production", "staging"],
        "the split sends no one to a slot with matches only"
    );

    // over HTTP/2 (h2c) too
    // (HTTP/2 has no Host header: the name goes in :authority)
    let h2 = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .resolve(HOST, ([127, 0, 0, 1], proxy.port).into())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (name, value, slot) in [
        ("x-beta", "true", "beta"),
        ("cookie", "plan=enterprise", "qa"),
        ("user-agent", "Internal/7", "beta"),
    ] {
        let resp = h2
            .get(format!("http://{HOST}:{}/", proxy.port))
            .header(name, value)
            .send()
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.headers().get("set-cookie").is_none());
        let body = resp.text().unwrap();
        assert!(body.contains(&format!("slot: {slot}\n")), "{name}: {body}");
    }

    // the access log says why
    let line = wait_for(10, "an access-log line with reason match", || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("\"reason\":\"match\""))
            .map(str::to_string)
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        ["beta", "qa"].contains(&v["slot"].as_str().unwrap()),
        "{line}"
    );
}

#[test]
fn matches_through_the_api_and_cli() {
    let (prod, staging, beta, qa) = (
        App::start("v1"),
        App::start("v2"),
        App::start("beta1"),
        App::start("qa1"),
    );
    let proxy = Proxy::start(&match_sites(&prod, &staging, &beta, &qa));
    let (code, site) = proxy.admin("GET", "/api/v1/sites/shop", None);
    assert_eq!(code, 200);
    let slots = site["slots"].as_array().unwrap();
    let beta_view = slots.iter().find(|s| s["name"] == "beta").unwrap();
    assert_eq!(beta_view["match"][0]["header"], "x-beta");
    assert_eq!(beta_view["match"][1]["regex"], "^Internal/\\d+");
    assert!(beta_view["outlier"].is_null());

    // an invalid regex is refused, naming the entry and the regex
    let (code, err) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/qa/match",
        Some(
            r#"{"match": [{"header": "x-a", "value": "1"}, {"header": "x-b", "regex": "(oops"}]}"#,
        ),
    );
    assert_eq!(code, 400, "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(msg.contains("match[1]") && msg.contains("(oops"), "{msg}");
    let (code, err) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/qa/match",
        Some(r#"{"match": [{"header": "x-a"}]}"#),
    );
    assert_eq!(code, 400);
    assert!(err["error"].as_str().unwrap().contains("match[0]"), "{err}");

    // the CLI: an entry of two conditions, then listed, then removed
    let (code, out, errs) = proxy.cli(&[
        "slot",
        "match",
        "add",
        "--site",
        "shop",
        "--slot",
        "staging",
        "--header",
        "x-team=qa",
        "--cookie",
        "tier=gold",
    ]);
    assert_eq!(code, 0, "{out}{errs}");
    let both = [("x-team", "qa"), ("cookie", "tier=gold")];
    let a = wait_for(10, "the new match to route", || {
        let a = get(&proxy, HOST, "/", &both);
        (a.slot() == "staging" && a.set_cookie.is_empty()).then_some(a)
    });
    assert_eq!(a.status, 200);
    // one condition alone does not fit: production by pin
    let a = get(
        &proxy,
        HOST,
        "/",
        &[("x-team", "qa"), ("cookie", "x-ms-routing-name=self")],
    );
    assert_eq!(a.slot(), "production");
    let (code, out, _) = proxy.cli(&[
        "slot", "match", "list", "--site", "shop", "--slot", "staging",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("header x-team = \"qa\" and cookie tier = \"gold\""),
        "{out}"
    );
    let (code, out, errs) = proxy.cli(&[
        "slot", "match", "remove", "--site", "shop", "--slot", "staging", "--index", "0",
    ]);
    assert_eq!(code, 0, "{out}{errs}");
    assert!(out.contains("no match entries"), "{out}");
    let (code, _, errs) = proxy.cli(&[
        "slot", "match", "remove", "--site", "shop", "--slot", "staging", "--index", "0",
    ]);
    assert_ne!(code, 0);
    assert!(errs.contains("no number 0"), "{errs}");
    let a = get(
        &proxy,
        HOST,
        "/",
        &[
            ("x-team", "qa"),
            ("cookie", "tier=gold; x-ms-routing-name=self"),
        ],
    );
    assert_eq!(a.slot(), "production");
}

fn outlier_sites(apps: &[&App], outlier: &str) -> String {
    let list: Vec<String> = apps.iter().map(|a| format!("\"{}\"", a.addr())).collect();
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["{HOST}"]
[[sites.slots]]
name = "production"
instances = [{}]
[sites.slots.outlier]
{outlier}
"#,
        list.join(", ")
    )
}

/// Health checks on `/demo/health`, which passes while the demo app's
/// other paths answer 500 (`/demo/fail`): only passive ejection sees them.
fn checked_on_demo_health(t: String) -> String {
    t.replacen(
        "interval_ms = 100\n",
        "interval_ms = 100\npath = \"/demo/health\"\n",
        1,
    )
}

fn app_post(app: &App, path: &str) {
    let r = client()
        .post(format!("http://{}{path}", app.addr()))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn ejected_series(app: &App) -> String {
    format!(
        r#"slotproxy_instance_ejected{{address="{}",site="shop",slot="production"}}"#,
        app.addr()
    )
}

const EJECTIONS: &str = r#"slotproxy_ejections_total{site="shop",slot="production"}"#;

/// Requests until `app` is ejected; how many 5xx answers they got.
fn fail_until_ejected(proxy: &Proxy, app: &App) -> usize {
    let mut errors = 0;
    wait_for(20, "the failing instance to be ejected", || {
        let a = get(proxy, HOST, "/", &[]);
        if a.status >= 500 {
            errors += 1;
        }
        (value(&scrape(proxy), &ejected_series(app)) == 1.0).then_some(())
    });
    errors
}

/// The activity log's outlier entries, oldest first.
fn outlier_entries(proxy: &Proxy) -> Vec<serde_json::Value> {
    let (code, ops) = proxy.admin("GET", "/api/v1/sites/shop/activity", None);
    assert_eq!(code, 200);
    let mut out: Vec<serde_json::Value> = ops["operations"]
        .as_array()
        .or(ops.as_array())
        .unwrap_or_else(|| panic!("activity: {ops}"))
        .iter()
        .filter(|o| o["action"] == "outlier")
        .cloned()
        .collect();
    out.reverse();
    out
}

fn at(op: &serde_json::Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(op["started_at"].as_str().unwrap()).unwrap()
}

#[test]
fn a_failing_instance_is_ejected_returns_on_a_passing_check_and_stays_out_longer_next_time() {
    let (a, b) = (App::start("v1"), App::start("v1"));
    let sites = outlier_sites(&[&a, &b], "consecutive_5xx = 3\nbase_ejection_secs = 1\n");
    let proxy = Proxy::start_edited(&sites, 1, checked_on_demo_health);
    let m = scrape(&proxy);
    assert_eq!(sample(&m, &ejected_series(&a)), Some(0.0), "exported at 0");
    assert_eq!(sample(&m, EJECTIONS), Some(0.0));
    for _ in 0..4 {
        assert_eq!(get(&proxy, HOST, "/", &[]).status, 200);
    }

    app_post(&a, "/demo/fail");
    let errors = fail_until_ejected(&proxy, &a);
    assert_eq!(errors, 3, "ejected on its third 5xx in a row");
    // its health check still passes, but it gets no more requests
    app_post(&a, "/demo/fail-health");
    for _ in 0..40 {
        let r = get(&proxy, HOST, "/", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.field("instance"), Some(b.addr().as_str()));
    }
    assert_eq!(value(&scrape(&proxy), EJECTIONS), 1.0);
    // its time (1 s) is up, but its check fails: it stays out
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(value(&scrape(&proxy), &ejected_series(&a)), 1.0);
    // the check passes: back in, and it serves again
    app_post(&a, "/demo/recover");
    wait_for(10, "the instance to return", || {
        (value(&scrape(&proxy), &ejected_series(&a)) == 0.0).then_some(())
    });
    wait_for(10, "requests to reach it again", || {
        let r = get(&proxy, HOST, "/", &[]);
        (r.field("instance") == Some(a.addr().as_str())).then_some(())
    });

    // the second ejection lasts twice as long
    app_post(&a, "/demo/fail");
    let errors = fail_until_ejected(&proxy, &a);
    assert!(errors <= 3, "{errors} 5xx before the second ejection");
    wait_for(15, "the instance to return again", || {
        (value(&scrape(&proxy), &ejected_series(&a)) == 0.0).then_some(())
    });
    assert_eq!(value(&scrape(&proxy), EJECTIONS), 2.0);
    let entries = wait_for(10, "four outlier entries in the activity log", || {
        let e = outlier_entries(&proxy);
        (e.len() >= 4).then_some(e)
    });
    let phases: Vec<&str> = entries
        .iter()
        .map(|o| o["phases"][0]["name"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["eject", "return", "eject", "return"]);
    assert_eq!(entries[0]["target"], a.addr().as_str());
    let detail = |i: usize| {
        entries[i]["phases"][0]["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        detail(0).contains("3 5xx answers in a row"),
        "{}",
        detail(0)
    );
    assert!(
        detail(0).contains("ejected for 1s (ejection 1"),
        "{}",
        detail(0)
    );
    assert!(
        detail(2).contains("ejected for 2s (ejection 2"),
        "{}",
        detail(2)
    );
    let second_out = at(&entries[3]).duration_since(at(&entries[2])).unwrap();
    assert!(second_out >= Duration::from_secs(2), "{second_out:?}");
}

#[test]
fn max_ejection_percent_keeps_half_the_instances_in() {
    let (a, b) = (App::start("v1"), App::start("v1"));
    let sites = outlier_sites(&[&a, &b], "consecutive_5xx = 2\nbase_ejection_secs = 30\n");
    let proxy = Proxy::start_edited(&sites, 1, checked_on_demo_health);
    app_post(&a, "/demo/fail");
    app_post(&b, "/demo/fail");
    wait_for(20, "one of the two to be ejected", || {
        get(&proxy, HOST, "/", &[]);
        (value(&scrape(&proxy), EJECTIONS) == 1.0).then_some(())
    });
    // the other fails just as much but stays: 50% of 2 is one instance
    let m = scrape(&proxy);
    let out = value(&m, &ejected_series(&a)) + value(&m, &ejected_series(&b));
    assert_eq!(out, 1.0);
    let kept = if value(&m, &ejected_series(&a)) == 0.0 {
        &a
    } else {
        &b
    };
    for _ in 0..10 {
        let r = get(&proxy, HOST, "/", &[]);
        assert_eq!(r.status, 500);
        assert_eq!(r.field("instance"), Some(kept.addr().as_str()));
    }
    assert_eq!(value(&scrape(&proxy), EJECTIONS), 1.0);
}

#[test]
fn outlier_settings_through_the_api() {
    let a = App::start("v1");
    let proxy = Proxy::start(&outlier_sites(&[&a], ""));
    let (code, site) = proxy.admin("GET", "/api/v1/sites/shop", None);
    assert_eq!(code, 200);
    assert_eq!(
        site["slots"][0]["outlier"],
        serde_json::json!({"consecutive_5xx": 5, "consecutive_connect_errors": 3,
            "base_ejection_secs": 30, "max_ejection_percent": 50})
    );
    let (code, err) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/production/outlier",
        Some(r#"{"max_ejection_percent": 150}"#),
    );
    assert_eq!(code, 400);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("outlier.max_ejection_percent"),
        "{err}"
    );
    let (code, v) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/slots/production/outlier",
        Some(r#"{"consecutive_5xx": 2}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["outlier"]["consecutive_5xx"], 2);
    assert_eq!(v["outlier"]["base_ejection_secs"], 30);
    let (code, v) = proxy.admin(
        "DELETE",
        "/api/v1/sites/shop/slots/production/outlier",
        None,
    );
    assert_eq!(code, 200);
    assert!(v["outlier"].is_null());
    // off: the gauge goes away with it
    wait_for(10, "the ejection gauge to go", || {
        sample(&scrape(&proxy), &ejected_series(&a))
            .is_none()
            .then_some(())
    });
}

#[test]
fn ejection_counts_http2_requests_too() {
    let (a, b) = (App::start("v1"), App::start("v1"));
    let sites = outlier_sites(&[&a, &b], "consecutive_5xx = 3\nbase_ejection_secs = 30\n");
    let proxy = Proxy::start_edited(&sites, 1, checked_on_demo_health);
    let h2 = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .resolve(HOST, ([127, 0, 0, 1], proxy.port).into())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("http://{HOST}:{}/", proxy.port);
    app_post(&a, "/demo/fail");
    let mut errors = 0;
    wait_for(20, "the failing instance to be ejected", || {
        let r = h2.get(&url).send().unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        if r.status().as_u16() >= 500 {
            errors += 1;
        }
        (value(&scrape(&proxy), &ejected_series(&a)) == 1.0).then_some(())
    });
    assert_eq!(errors, 3);
    for _ in 0..20 {
        let r = h2.get(&url).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body = r.text().unwrap();
        assert!(
            body.contains(&format!("instance: {}\n", b.addr())),
            "{body}"
        );
    }
}
