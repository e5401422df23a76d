//! Metrics end to end (docs/reference/metrics.md): real traffic through the real
//! binary, then a scrape of `/metrics` checked by `promtool check metrics`
//! and by value.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn requests(text: &str, site: &str, slot: &str, code: u16) -> f64 {
    value(
        text,
        &format!(r#"slotproxy_requests_total{{code="{code}",site="{site}",slot="{slot}"}}"#),
    )
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; ./dev test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn traffic_moves_the_right_series_and_hostile_requests_add_none() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    // Nothing listens here: connections are refused.
    let dead = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::start(&format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{prod}"]
[[sites.slots]]
name = "staging"
traffic_percent = 0
build_version = "v2"
instances = ["{staging}"]
[[sites.slots]]
name = "broken"
build_version = "v0"
instances = ["{dead}"]
[[sites.slots]]
name = "empty"
"#,
        prod = prod.addr(),
        staging = staging.addr(),
    ));

    let before = scrape(&proxy);
    // SPEC §14: every series with a fixed label set is there at 0 before
    // anything happened, so `rate()` and alerts see it from the start
    let at_zero = |series: String| {
        assert!(
            before.lines().any(|l| l == format!("{series} 0")),
            "{series} is not exported at 0:\n{before}"
        )
    };
    for p in ["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"] {
        at_zero(format!(
            r#"slotproxy_requests_by_protocol_total{{protocol="{p}"}}"#
        ));
    }
    for r in ["step", "hold", "wait", "breach", "callback"] {
        at_zero(format!(r#"slotproxy_ramp_verdicts_total{{result="{r}"}}"#));
    }
    for r in ["max_connections", "max_connections_per_ip"] {
        at_zero(format!(
            r#"slotproxy_connections_refused_total{{reason="{r}"}}"#
        ));
    }
    for k in [
        "connect_refused",
        "timeout",
        "no_instance",
        "closed",
        "other",
    ] {
        at_zero(format!(
            r#"slotproxy_upstream_errors_total{{kind="{k}",site="shop",slot="staging"}}"#
        ));
    }
    for result in ["succeeded", "failed"] {
        at_zero(format!(
            r#"slotproxy_swaps_total{{result="{result}",site="shop"}}"#
        ));
    }
    assert_eq!(value(&before, "slotproxy_state_store_up"), 1.0);
    for _ in 0..5 {
        let a = get(
            &proxy,
            "shop.test",
            "/",
            &[("cookie", "x-ms-routing-name=self")],
        );
        assert_eq!(a.slot(), "production");
    }
    for _ in 0..3 {
        let a = get(&proxy, "shop.test", "/?x-ms-routing-name=staging", &[]);
        assert_eq!(a.slot(), "staging");
    }
    assert_eq!(get(&proxy, "shop-empty.slots.test", "/", &[]).status, 503);
    assert_eq!(get(&proxy, "shop-broken.slots.test", "/", &[]).status, 502);
    // Hostile requests: made-up hosts and paths must not become labels.
    for i in 0..4 {
        let host = format!("evil-{i}-{}.example", "x".repeat(40));
        let a = get(&proxy, &host, &format!("/evil/{i}?q=\"}}\n"), &[]);
        assert_eq!(a.status, 404);
    }
    let a = get(
        &proxy,
        "shop.test",
        "/../../evil-path?x-ms-routing-name=evil-slot",
        &[],
    );
    assert_eq!(a.status, 200);

    let after = wait_for(10, "the last request to be counted", || {
        let t = scrape(&proxy);
        (requests(&t, "unknown", "unknown", 404) - requests(&before, "unknown", "unknown", 404)
            == 4.0)
            .then_some(t)
    });
    promtool_check(&after);

    let delta =
        |site, slot, code| requests(&after, site, slot, code) - requests(&before, site, slot, code);
    // The evil query names no slot with a rule, so it is a weighted pick of
    // production (staging has an explicit 0).
    assert_eq!(delta("shop", "production", 200), 6.0);
    assert_eq!(delta("shop", "staging", 200), 3.0);
    assert_eq!(delta("shop", "empty", 503), 1.0);
    assert_eq!(delta("shop", "broken", 502), 1.0);
    let count = |t: &str, slot: &str| {
        value(
            t,
            &format!(r#"slotproxy_request_duration_seconds_count{{site="shop",slot="{slot}"}}"#),
        )
    };
    assert_eq!(count(&after, "staging") - count(&before, "staging"), 3.0);
    assert_eq!(
        value(
            &after,
            r#"slotproxy_upstream_errors_total{kind="connect_refused",site="shop",slot="broken"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"slotproxy_routing_percent{site="shop",slot="production"}"#
        ),
        100.0
    );
    assert!(after.contains(r#"slotproxy_routing_percent{site="shop",slot="staging"} 0"#));
    assert!(value(&after, "slotproxy_routing_table_version") >= 1.0);
    assert!(value(&after, "process_resident_memory_bytes") > 0.0);
    assert!(after.contains("slotproxy_requests_in_flight"));
    assert!(after.contains("# TYPE slotproxy_swap_duration_seconds histogram"));
    assert!(after.contains(r#"slotproxy_swaps_total{result="failed",site="shop"} 0"#));

    for hostile in ["evil", "example", "\\\""] {
        assert!(
            !after.contains(hostile),
            "{hostile:?} leaked into a label:\n{after}"
        );
    }
    let series = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("slotproxy_requests_total{"))
            .count()
    };
    // production/200, staging/200, empty/503, broken/502, unknown/404
    assert_eq!(series(&after), 5, "{after}");

    // The dead instance is marked down by the health checks.
    let down = format!(r#"slotproxy_instance_up{{address="{dead}",site="shop",slot="broken"}} 0"#);
    wait_for(10, "the dead instance to show as down", || {
        scrape(&proxy).contains(&down).then_some(())
    });
    let up = format!(
        r#"slotproxy_instance_up{{address="{}",site="shop",slot="production"}} 1"#,
        prod.addr()
    );
    assert!(scrape(&proxy).contains(&up));
}
