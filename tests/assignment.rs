//! End-to-end sticky buckets and user keys (docs/guide/buckets.md): the real
//! binary in front of real demo apps, real HTTP clients, and the admin API
//! raising a share between two rounds of the same clients.

mod common;
use common::*;
use slotproxy::routing::buckets::key_bucket;

fn sites(prod: &App, staging: &App) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["{p}"]
[[sites.slots]]
name = "staging"
traffic_percent = 10
instances = ["{s}"]

[[sites]]
name = "app"
hostnames = ["app.test"]
assignment_key = "header:X-User-Id"
[[sites.slots]]
name = "production"
instances = ["{p}"]
[[sites.slots]]
name = "staging"
traffic_percent = 50
instances = ["{s}"]
"#,
        p = prod.addr(),
        s = staging.addr()
    )
}

fn bucket_of(pin: &str) -> u32 {
    pin.strip_prefix("b.")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a bucket cookie: {pin:?}"))
}

#[test]
fn bucket_clients_stay_put_when_a_share_grows_and_only_the_next_share_moves() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let proxy = Proxy::start_edited(&sites(&prod, &staging), 1, |t| {
        t.replace("[health]", "[routing]\nassignment = \"bucket\"\n[health]")
    });
    // 300 new clients: each gets a bucket cookie, and the bucket says where
    let mut clients = Vec::new();
    for _ in 0..300 {
        let a = get(&proxy, "shop.test", "/", &[]);
        let b = bucket_of(a.pin().expect("a new client gets a bucket"));
        assert_eq!(a.slot() == "staging", b < 1000, "bucket {b} at 10%");
        clients.push((b, a.slot().to_string()));
    }
    assert!(clients.iter().any(|c| c.1 == "staging"));

    let (code, _) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/traffic-routing",
        Some(r#"{"distribution": {"staging": 20}}"#),
    );
    assert_eq!(code, 200);
    let mut moved = 0;
    for (b, was) in &clients {
        let cookie = format!("x-ms-routing-name=b.{b}");
        let a = get(&proxy, "shop.test", "/", &[("cookie", &cookie)]);
        assert_eq!(a.pin(), None, "a valid bucket is not set again");
        if was == "staging" {
            assert_eq!(a.slot(), "staging", "bucket {b} left staging when it grew");
        }
        assert_eq!(a.slot() == "staging", *b < 2000, "bucket {b} at 20%");
        moved += usize::from(a.slot() != was);
    }
    let expected = clients
        .iter()
        .filter(|c| (1000..2000).contains(&c.0))
        .count();
    assert_eq!(moved, expected, "exactly the buckets 1000-1999 moved");

    // lowering to 5% moves only the buckets above the new edge
    let (code, _) = proxy.admin(
        "PUT",
        "/api/v1/sites/shop/traffic-routing",
        Some(r#"{"distribution": {"staging": 5}}"#),
    );
    assert_eq!(code, 200);
    for (b, _) in &clients {
        let cookie = format!("x-ms-routing-name=b.{b}");
        let a = get(&proxy, "shop.test", "/", &[("cookie", &cookie)]);
        assert_eq!(a.slot() == "staging", *b < 500, "bucket {b} at 5%");
    }

    // garbage or out-of-range buckets are re-bucketed; names still pin
    for bad in ["b.10000", "b.x", "b.-1", "nosuchslot"] {
        let a = get(
            &proxy,
            "shop.test",
            "/",
            &[("cookie", &format!("x-ms-routing-name={bad}"))],
        );
        let b = bucket_of(a.pin().expect("re-bucketed"));
        assert_eq!(a.slot() == "staging", b < 500, "{bad} → bucket {b}");
    }
    let a = get(&proxy, "shop.test", "/?x-ms-routing-name=staging", &[]);
    assert_eq!((a.slot(), a.pin()), ("staging", Some("staging")));
    let a = get(
        &proxy,
        "shop.test",
        "/",
        &[("cookie", "x-ms-routing-name=self")],
    );
    assert_eq!((a.slot(), a.pin()), ("production", None));
}

#[test]
fn a_user_key_lands_on_the_same_slot_every_time_with_no_cookie() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    // slot assignment for the proxy; the keyed site is in bucket mode anyway
    let proxy = Proxy::start(&sites(&prod, &staging));
    let mut seen = [0usize; 2];
    for i in 0..60 {
        let user = format!("user-{i}");
        let want = if key_bucket(user.as_bytes(), "app") < 5000 {
            "staging"
        } else {
            "production"
        };
        for _ in 0..3 {
            let a = get(&proxy, "app.test", "/", &[("x-user-id", &user)]);
            assert_eq!(a.slot(), want, "{user}");
            assert_eq!(a.pin(), None, "a keyed client needs no cookie");
        }
        seen[usize::from(want == "staging")] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both slots get users: {seen:?}");
    // the query parameter still wins over the key, and pins by name
    let a = get(
        &proxy,
        "app.test",
        "/?x-ms-routing-name=self",
        &[("x-user-id", "user-1")],
    );
    assert_eq!((a.slot(), a.pin()), ("production", Some("self")));
    // without the key: a bucket cookie, as in bucket assignment
    let a = get(&proxy, "app.test", "/", &[]);
    let b = bucket_of(a.pin().expect("a keyless client gets a bucket"));
    assert_eq!(a.slot() == "staging", b < 5000);
    // the other site stays in slot assignment: the cookie holds the slot
    let a = get(&proxy, "shop.test", "/", &[]);
    assert_eq!(
        a.pin(),
        Some(if a.slot() == "staging" {
            "staging"
        } else {
            "self"
        })
    );
}

#[test]
fn a_bad_assignment_key_is_refused_naming_the_key() {
    let (code, err) = refused(
        r#"
[[sites]]
name = "app"
hostnames = ["app.test"]
assignment_key = "query:user"
[[sites.slots]]
name = "production"
"#,
    );
    assert_ne!(code, 0);
    assert!(err.contains("sites[app].assignment_key"), "{err}");
    let (code, err) = refused("[routing]\nassignment = \"random\"\n");
    assert_ne!(code, 0);
    assert!(err.contains("unknown variant `random`"), "{err}");
}
