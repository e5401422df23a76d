//! End-to-end routing (SPEC §2): the real binary in front of real demo-app
//! processes, driven by a real HTTP client.

mod common;
use common::*;

fn two_slots(prod: &App, staging: &App, staging_rule: &str) -> String {
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
[[sites.slots]]
name = "staging"
{staging_rule}
build_version = "v2"
instances = ["{}"]
"#,
        prod.addr(),
        staging.addr()
    )
}

#[test]
fn slot_host_reaches_its_slot_whatever_the_cookie() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start(&two_slots(&prod, &staging, "traffic_percent = 0"));
    let a = get(
        &proxy,
        "shop-staging.slots.test",
        "/",
        &[("cookie", "x-ms-routing-name=self")],
    );
    assert_eq!((a.status, a.slot(), a.version()), (200, "staging", "v2"));
    assert_eq!(a.pin(), None, "a slot host never pins");
    let a = get(
        &proxy,
        "SHOP-PRODUCTION.slots.test:8080",
        "/",
        &[("cookie", "x-ms-routing-name=staging")],
    );
    assert_eq!((a.slot(), a.version()), ("production", "v1"));
}
