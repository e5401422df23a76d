//! End-to-end routing (docs/guide/routing.md): the real binary in
//! front of real demo-app processes, driven by a real HTTP client.

mod common;
use common::*;
use std::collections::HashMap;

/// production (v1) and staging (v2), plus an opt-in slot `qa` (explicit 0)
/// and `norule` (no rule), each on its own demo app.
struct Shop {
    prod: App,
    staging: App,
    qa: App,
    norule: App,
}

impl Shop {
    fn start() -> Shop {
        Shop {
            prod: App::start("v1"),
            staging: App::start("v2"),
            qa: App::start("v3"),
            norule: App::start("v4"),
        }
    }

    fn config(&self, staging_rule: &str) -> String {
        format!(
            r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
slot_domain = "slots.test"
trusted_proxies = ["10.9.9.9"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{}"]
[[sites.slots]]
name = "staging"
{staging_rule}
build_version = "v2"
instances = ["{}"]
[[sites.slots]]
name = "qa"
traffic_percent = 0
build_version = "v3"
instances = ["{}"]
[[sites.slots]]
name = "norule"
build_version = "v4"
instances = ["{}"]
"#,
            self.prod.addr(),
            self.staging.addr(),
            self.qa.addr(),
            self.norule.addr()
        )
    }
}

const PIN_STAGING: (&str, &str) = ("cookie", "x-ms-routing-name=staging");

#[test]
fn slot_host_reaches_its_slot_whatever_the_cookie() {
    let shop = Shop::start();
    let proxy = Proxy::start(&shop.config("traffic_percent = 0"));
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
        &[PIN_STAGING],
    );
    assert_eq!((a.slot(), a.version()), ("production", "v1"));
    // a slot without a rule is still reachable on its own host name
    let a = get(
        &proxy,
        "shop-norule.slots.test",
        "/?x-ms-routing-name=self",
        &[],
    );
    assert_eq!(a.slot(), "norule");
}

#[test]
fn cookieless_split_matches_the_rule_and_pins() {
    let shop = Shop::start();
    let proxy = Proxy::start(&shop.config("traffic_percent = 20"));
    let n = 1000;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..n {
        let a = get(&proxy, "shop.test", "/", &[]);
        assert_eq!(a.status, 200);
        let pin = a.pin().expect("a cookieless request is pinned").to_string();
        let expected_pin = if a.slot() == "production" {
            "self"
        } else {
            a.slot()
        };
        assert_eq!(pin, expected_pin, "the cookie names the slot that served");
        *seen.entry(a.slot().to_string()).or_default() += 1;
    }
    // Binomial(1000, 0.2): sd ≈ 12.6; ±6 sd fails about once in 10^9 runs.
    let staging = seen.get("staging").copied().unwrap_or(0);
    assert!(
        (124..=276).contains(&staging),
        "staging got {staging} of {n}: {seen:?}"
    );
    assert_eq!(
        staging + seen.get("production").copied().unwrap_or(0),
        n,
        "{seen:?}"
    );

    // a pin is honoured, without a new cookie
    for _ in 0..20 {
        let a = get(&proxy, "shop.test", "/", &[PIN_STAGING]);
        assert_eq!((a.slot(), a.pin()), ("staging", None));
        let a = get(
            &proxy,
            "shop.test",
            "/",
            &[("cookie", "x-ms-routing-name=self")],
        );
        assert_eq!((a.slot(), a.pin()), ("production", None));
    }
}

#[test]
fn query_parameter_opts_in_and_out() {
    let shop = Shop::start();
    let proxy = Proxy::start(&shop.config("traffic_percent = 0"));
    // explicit 0: opt-in works and pins
    let a = get(&proxy, "shop.test", "/cart?x-ms-routing-name=qa", &[]);
    assert_eq!((a.slot(), a.pin()), ("qa", Some("qa")));
    let a = get(
        &proxy,
        "shop.test",
        "/",
        &[("cookie", "x-ms-routing-name=qa")],
    );
    assert_eq!((a.slot(), a.pin()), ("qa", None));
    // the query parameter beats a cookie
    let a = get(
        &proxy,
        "shop.test",
        "/?x-ms-routing-name=staging",
        &[("cookie", "x-ms-routing-name=qa")],
    );
    assert_eq!((a.slot(), a.pin()), ("staging", Some("staging")));
    // self opts out
    let a = get(
        &proxy,
        "shop.test",
        "/?a=1&x-ms-routing-name=self",
        &[PIN_STAGING],
    );
    assert_eq!((a.slot(), a.pin()), ("production", Some("self")));
    // no rule: the parameter is ignored (all-0 rules: production)
    let a = get(&proxy, "shop.test", "/?x-ms-routing-name=norule", &[]);
    assert_eq!((a.slot(), a.pin()), ("production", Some("self")));
    let a = get(
        &proxy,
        "shop.test",
        "/?x-ms-routing-name=norule",
        &[PIN_STAGING],
    );
    assert_eq!(
        (a.slot(), a.pin()),
        ("staging", None),
        "ignored parameter, cookie decides"
    );
}

#[test]
fn stale_pin_is_rebucketed_when_the_rule_is_removed() {
    let shop = Shop::start();
    let proxy = Proxy::start(&shop.config("traffic_percent = 0"));
    let a = get(&proxy, "shop.test", "/", &[PIN_STAGING]);
    assert_eq!((a.slot(), a.pin()), ("staging", None));
    // remove staging's rule and reload (SIGHUP)
    proxy.rewrite_sites(&shop.config(""));
    proxy.signal(libc::SIGHUP);
    let a = wait_for(10, "the reload to drop staging's rule", || {
        let a = get(&proxy, "shop.test", "/", &[PIN_STAGING]);
        (a.slot() == "production").then_some(a)
    });
    assert_eq!(a.pin(), Some("self"), "the stale cookie is overwritten");
    // the slot itself is still there on its host name
    assert_eq!(
        get(&proxy, "shop-staging.slots.test", "/", &[]).slot(),
        "staging"
    );
}

#[test]
fn stale_pin_is_rebucketed_when_its_instances_die() {
    let mut shop = Shop::start();
    let proxy = Proxy::start(&shop.config("traffic_percent = 0"));
    assert_eq!(
        get(&proxy, "shop.test", "/", &[PIN_STAGING]).slot(),
        "staging"
    );
    shop.staging.kill();
    let a = wait_for(10, "health checks to mark staging down", || {
        let a = get(&proxy, "shop.test", "/", &[PIN_STAGING]);
        (a.status == 200 && a.slot() == "production").then_some(a)
    });
    assert_eq!(a.pin(), Some("self"));
    // and it comes back when the instance answers again
    let _again = App::start_on(shop.staging.port, "v2");
    wait_for(10, "health checks to mark staging up", || {
        (get(&proxy, "shop.test", "/", &[PIN_STAGING]).slot() == "staging").then_some(())
    });
}

#[test]
fn dead_instance_is_skipped_and_round_robin_spreads_load() {
    let (a1, mut a2) = (App::start("v1"), App::start("v1"));
    // one instance given by name: resolved for the table, not per request
    let proxy = Proxy::start(&format!(
        r#"
[[sites]]
name = "app"
hostnames = ["app.test"]
[[sites.slots]]
name = "production"
instances = ["{}", "localhost:{}"]
"#,
        a1.addr(),
        a2.port
    ));
    let mut by_instance: HashMap<String, u32> = HashMap::new();
    for _ in 0..10 {
        let a = get(&proxy, "app.test", "/", &[]);
        *by_instance
            .entry(a.field("instance").unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        by_instance.len(),
        2,
        "both instances serve: {by_instance:?}"
    );
    // kill one: not a single request fails, before or after health checks notice
    a2.kill();
    for _ in 0..50 {
        let a = get(&proxy, "app.test", "/", &[]);
        assert_eq!(
            (a.status, a.field("instance")),
            (200, Some(a1.addr().as_str()))
        );
    }
}

#[test]
fn local_answers_404_503_403_502() {
    let dead_port = free_port();
    let app = App::start("v1");
    let proxy = Proxy::start(&format!(
        r#"
[[sites]]
name = "app"
hostnames = ["app.test"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
instances = ["{app}"]
[[sites.slots]]
name = "empty"
traffic_percent = 0
[[sites.slots]]
name = "private"
ip_allow = ["192.0.2.0/24"]
instances = ["{app}"]
[[sites.slots]]
name = "broken"
traffic_percent = 0
instances = ["127.0.0.1:{dead_port}"]
"#,
        app = app.addr()
    ));
    let a = get(&proxy, "unknown.test", "/", &[]);
    assert_eq!(a.status, 404);
    assert_eq!(
        a.body,
        "404 Not Found: no site is configured for host \"unknown.test\"\n"
    );
    let a = get(&proxy, "app.test", "/?x-ms-routing-name=empty", &[]);
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body,
        "503 Service Unavailable: slot empty of site app has no deployment\n"
    );
    let a = get(&proxy, "app-private.slots.test", "/", &[]);
    assert_eq!(a.status, 403);
    assert_eq!(
        a.body,
        "403 Forbidden: client 127.0.0.1 is not allowed to reach slot private of site app\n"
    );
    // a spoofed X-Forwarded-For from an untrusted peer does not get in
    let a = get(
        &proxy,
        "app-private.slots.test",
        "/",
        &[("x-forwarded-for", "192.0.2.7")],
    );
    assert_eq!(a.status, 403);
    let a = get(&proxy, "app.test", "/?x-ms-routing-name=broken", &[]);
    assert_eq!(a.status, 502);
    assert_eq!(
        a.body,
        "502 Bad Gateway: no instance of slot broken of site app answered (1 tried)\n"
    );
    // a request is never sent to another slot
    assert_eq!(a.field("slot"), None);
}

#[test]
fn forwarded_headers_are_replaced_unless_the_peer_is_trusted() {
    let shop = Shop::start();
    let proxy = Proxy::start(&shop.config("traffic_percent = 0"));
    let a = get(
        &proxy,
        "shop.test",
        "/",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("x-slot-name", "forged"),
        ],
    );
    assert_eq!(a.field("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(a.field("x-forwarded-proto"), Some("http"));
    assert_eq!(a.field("x-forwarded-host"), Some("shop.test"));
    assert_eq!(a.slot(), "production");
    assert!(!a.set_cookie[0].contains("Secure"), "{:?}", a.set_cookie);
}

#[test]
fn trusted_proxy_headers_are_kept_and_secure_cookies_set() {
    let shop = Shop::start();
    // trust loopback for this site: the test client plays the load balancer
    let config = shop
        .config("traffic_percent = 0")
        .replace("10.9.9.9", "127.0.0.0/8");
    let proxy = Proxy::start(&config);
    let a = get(
        &proxy,
        "shop.test",
        "/",
        &[
            ("x-forwarded-for", "198.51.100.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "www.shop.example"),
        ],
    );
    assert_eq!(a.field("x-forwarded-for"), Some("198.51.100.4, 127.0.0.1"));
    // a chain split over two headers is one chain
    let resp = client()
        .get(proxy.url("/"))
        .header("host", "shop.test")
        .header("x-forwarded-for", "203.0.113.1")
        .header("x-forwarded-for", "198.51.100.4")
        .send()
        .unwrap();
    let body = resp.text().unwrap();
    assert!(
        body.contains("x-forwarded-for: 203.0.113.1, 198.51.100.4, 127.0.0.1"),
        "{body}"
    );
    assert_eq!(a.field("x-forwarded-proto"), Some("https"));
    assert_eq!(a.field("x-forwarded-host"), Some("www.shop.example"));
    assert_eq!(
        a.set_cookie,
        vec!["x-ms-routing-name=self; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600"]
    );
}

#[test]
fn garbage_routing_input_never_fails_a_request() {
    let shop = Shop::start();
    let proxy = Proxy::start(&shop.config("traffic_percent = 0"));
    let long = "a".repeat(5000);
    let cookies = [
        "x-ms-routing-name=".to_string(),
        "x-ms-routing-name".to_string(),
        format!("x-ms-routing-name={long}"),
        "x-ms-routing-name=staging; x-ms-routing-name=qa".to_string(),
        "x-ms-routing-name=%00%ff\"';=;;".to_string(),
        ";;;==;".to_string(),
        "x-ms-routing-name=../../etc".to_string(),
    ];
    for c in &cookies {
        let a = get(&proxy, "shop.test", "/", &[("cookie", c)]);
        assert_eq!((a.status, a.slot()), (200, "production"), "cookie {c:?}");
        assert_eq!(
            a.pin(),
            Some("self"),
            "an unusable cookie is overwritten: {c:?}"
        );
    }
    // the same cookie in two Cookie headers is ambiguous: treated as absent
    let resp = client()
        .get(proxy.url("/"))
        .header("host", "shop.test")
        .header("cookie", "x-ms-routing-name=qa")
        .header("cookie", "x-ms-routing-name=staging")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().unwrap().contains("slot: production"));
    let queries = [
        "/?x-ms-routing-name=qa&x-ms-routing-name=staging".to_string(),
        format!("/?x-ms-routing-name={long}"),
        "/?x-ms-routing-name=%71a".to_string(),
        "/?x-ms-routing-name&&==&".to_string(),
    ];
    for q in &queries {
        let a = get(&proxy, "shop.test", q, &[]);
        assert_eq!((a.status, a.slot()), (200, "production"), "query {q:?}");
    }
}

#[test]
fn invalid_config_is_refused_with_file_key_and_reason() {
    let base = r#"
[server]
listen = ["127.0.0.1:0"]
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:1"]
[[sites.slots]]
name = "staging"
traffic_percent = 30
"#;
    let cases = [
        (
            "traffic_percent = 30",
            "trafic_percent = 30",
            "unknown field `trafic_percent`",
        ),
        (
            "traffic_percent = 30",
            "traffic_percent = 130",
            "sites[shop].slots[staging].traffic_percent: 130 is out of range 0-100",
        ),
        (
            "traffic_percent = 30",
            "traffic_percent = 30\nip_allow = [\"10.0.0.0/99\"]",
            "sites[shop].slots[staging].ip_allow[0]",
        ),
        (
            "traffic_percent = 30",
            "traffic_percent = 30\nauto_swap_target = \"prod\"",
            "names slot \"prod\"",
        ),
        (
            "traffic_percent = 30",
            "traffic_percent = 30\nhostnames = [\"shop.test\"]",
            "already used by site \"shop\"",
        ),
        ("127.0.0.1:0", "127.0.0.1", "server.listen[0]"),
    ];
    for (from, to, expected) in cases {
        let (code, err) = refused(&base.replace(from, to));
        assert_ne!(code, 0);
        assert!(
            err.contains("invalid config") && err.contains("bad.toml"),
            "{err}"
        );
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
}

#[test]
fn an_address_that_comes_back_is_healthy_again() {
    let (prod, other) = (App::start("v1"), App::start("v2"));
    let dead_port = free_port();
    let proxy = Proxy::start(&format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["{}"]
[[sites.slots]]
name = "staging"
traffic_percent = 0
instances = ["127.0.0.1:{dead_port}"]
"#,
        prod.addr()
    ));
    let pinned = || {
        get(
            &proxy,
            "shop.test",
            "/",
            &[("cookie", "x-ms-routing-name=staging")],
        )
    };
    wait_for(10, "the dead instance to be marked down", || {
        (pinned().pin() == Some("self")).then_some(())
    });
    let deploy = |addr: &str| {
        let body = format!(r#"{{"build_version": "v2", "instances": ["{addr}"]}}"#);
        let (code, v) = proxy.admin(
            "PUT",
            "/api/v1/sites/shop/slots/staging/deployment",
            Some(&body),
        );
        assert_eq!(code, 200, "{v}");
    };
    deploy(&other.addr());
    assert_eq!(pinned().slot(), "staging");
    // let a few 100 ms health ticks pass, so the checker forgets the old
    // address (a lower bound on elapsed time, not an assertion on it)
    std::thread::sleep(std::time::Duration::from_millis(600));
    // the old address comes back to life and is deployed again
    let _revived = App::start_on(dead_port, "v3");
    deploy(&format!("127.0.0.1:{dead_port}"));
    let a = wait_for(10, "the revived instance to serve", || {
        let a = pinned();
        (a.slot() == "staging").then_some(a)
    });
    assert_eq!(a.version(), "v3");
}

/// An upstream that starts a chunked body and hangs up mid-way.
fn truncating_upstream() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            // dropped: the connection closes before the last chunk
        }
    });
    port
}

#[test]
fn truncated_upstream_response_is_not_passed_off_as_complete() {
    let port = truncating_upstream();
    let proxy = Proxy::start(&format!(
        r#"
[[sites]]
name = "app"
hostnames = ["app.test"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:{port}"]
[[sites.slots]]
name = "ghost"
traffic_percent = 0
instances = ["no-such-host.invalid:80"]
"#
    ));
    let resp = client()
        .get(proxy.url("/"))
        .header("host", "app.test")
        .send()
        .expect("the header arrives");
    assert_eq!(resp.status().as_u16(), 200);
    match resp.bytes() {
        Ok(body) => panic!("a cut-off body read as complete: {body:?}"),
        Err(e) => assert!(!e.to_string().contains("502"), "{e}"),
    }
    // an instance whose name does not resolve: a 502 that says so
    let a = get(&proxy, "app.test", "/?x-ms-routing-name=ghost", &[]);
    assert_eq!(a.status, 502);
    assert_eq!(
        a.body,
        "502 Bad Gateway: no instance of slot ghost of site app answered (0 tried)\n"
    );
}

#[test]
fn a_second_slotproxy_on_the_same_state_is_refused() {
    let app = App::start("v1");
    let sites = format!(
        "[[sites]]\nname = \"app\"\nhostnames = [\"app.test\"]\n[[sites.slots]]\nname = \"production\"\ninstances = [\"{}\"]\n",
        app.addr()
    );
    let proxy = Proxy::start(&sites);
    let state = proxy.dir.path().join("state");
    let (code, err) = refused(&config_text(
        free_port(),
        free_port(),
        free_port(),
        &state,
        &sites,
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains("is in use by another slotproxy")
            && err.contains(&format!("pid {}", proxy.pid())),
        "{err}"
    );
    assert_eq!(get(&proxy, "app.test", "/", &[]).status, 200);
}

#[test]
fn tls_listener_terminates_https_with_secure_cookies() {
    let shop = Shop::start();
    let tls_port = free_port();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let proxy = Proxy::start_edited(&shop.config("traffic_percent = 0"), 1, |text| {
        text.replacen(
            "threads = 1\n",
            &format!(
                "threads = 1\ntls_listen = [\"127.0.0.1:{tls_port}\"]\ntls_cert_path = \"{}\"\ntls_key_path = \"{}\"\n",
                fixtures.join("tls-cert.pem").display(),
                fixtures.join("tls-key.pem").display()
            ),
            1,
        )
    });
    let https = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("shop.test", ([127, 0, 0, 1], tls_port).into())
        .build()
        .unwrap();
    let resp = https
        .get(format!(
            "https://shop.test:{tls_port}/?x-ms-routing-name=staging"
        ))
        .header("x-forwarded-proto", "http")
        .send()
        .expect("HTTPS through the proxy");
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert_eq!(
        cookie,
        "x-ms-routing-name=staging; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600"
    );
    let body = resp.text().unwrap();
    assert!(body.contains("slot: staging"), "{body}");
    // the client's own X-Forwarded-Proto is not trusted; ours says https
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    // plain HTTP on the other listener: no Secure
    let a = get(&proxy, "shop.test", "/?x-ms-routing-name=staging", &[]);
    assert!(!a.set_cookie[0].contains("Secure"), "{:?}", a.set_cookie);
}

#[test]
fn cookie_and_parameter_names_are_configurable_and_reloadable() {
    let shop = Shop::start();
    let routing = |name: &str| {
        format!(
            "[routing]\ncookie_name = \"{name}\"\nquery_param = \"slot\"\ncookie_max_age_secs = 60\n{}",
            shop.config("traffic_percent = 0")
        )
    };
    let proxy = Proxy::start(&routing("pin"));
    let a = get(&proxy, "shop.test", "/?slot=qa", &[]);
    assert_eq!(a.slot(), "qa");
    assert_eq!(
        a.set_cookie,
        vec!["pin=qa; HttpOnly; SameSite=Lax; Path=/; Max-Age=60"]
    );
    assert_eq!(
        get(&proxy, "shop.test", "/", &[("cookie", "pin=qa")]).slot(),
        "qa"
    );
    // the default names mean nothing now
    let a = get(
        &proxy,
        "shop.test",
        "/?x-ms-routing-name=qa",
        &[("cookie", "x-ms-routing-name=qa")],
    );
    assert_eq!(a.slot(), "production");

    // [routing] applies on reload too
    proxy.rewrite_sites(&routing("pin2"));
    let (code, body) = proxy.admin("POST", "/api/v1/reload", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        get(&proxy, "shop.test", "/", &[("cookie", "pin=qa")]).slot(),
        "production"
    );
    assert_eq!(
        get(&proxy, "shop.test", "/", &[("cookie", "pin2=qa")]).slot(),
        "qa"
    );
}

#[test]
fn trailing_dot_host_routes_like_the_name_without_it() {
    let shop = Shop::start();
    let proxy = Proxy::start(&shop.config("traffic_percent = 0"));
    let a = get(&proxy, "shop.test.", "/", &[]);
    assert_eq!((a.status, a.slot()), (200, "production"), "{a:?}");
    let a = get(&proxy, "shop-staging.slots.test.:8080", "/", &[]);
    assert_eq!((a.status, a.slot()), (200, "staging"), "{a:?}");
}
