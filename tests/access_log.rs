//! The access log end to end: one JSON line per request, with the routing
//! reason, written by the real binary to a file.

mod common;
use common::*;

#[test]
fn json_access_log_has_one_parsable_line_per_request() {
    let (prod, staging) = (App::start("v1"), App::start("v2"));
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("access.log");
    let proxy = Proxy::start(&format!(
        r#"
[access_log]
enabled = true
format = "json"
path = "{log}"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
slot_domain = "slots.test"
[[sites.slots]]
name = "production"
instances = ["{prod}"]
[[sites.slots]]
name = "staging"
traffic_percent = 0
instances = ["{staging}"]
"#,
        log = log_path.display(),
        prod = prod.addr(),
        staging = staging.addr(),
    ));

    let a = get(&proxy, "shop.test", "/cart?x-ms-routing-name=staging", &[]);
    assert_eq!(a.slot(), "staging");
    get(
        &proxy,
        "shop.test",
        "/",
        &[("cookie", "x-ms-routing-name=staging")],
    );
    get(&proxy, "SHOP-PRODUCTION.slots.test", "/p", &[]);
    get(&proxy, "shop.test", "/w", &[]);
    get(&proxy, "nowhere.test", "/x \"y\"", &[]);

    let lines: Vec<serde_json::Value> = wait_for(10, "five access log lines", || {
        let text = std::fs::read_to_string(&log_path).ok()?;
        let lines: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= 5).then_some(lines)
    });
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let find = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().unwrap().starts_with(path))
            .unwrap_or_else(|| panic!("no line for {path}: {lines:#?}"))
    };

    let q = find("/cart");
    assert_eq!(q["path"], "/cart?x-ms-routing-name=staging");
    assert_eq!(q["site"], "shop");
    assert_eq!(q["slot"], "staging");
    assert_eq!(q["instance"], staging.addr());
    assert_eq!(q["reason"], "query");
    assert_eq!(q["method"], "GET");
    assert_eq!(q["protocol"], "HTTP/1.1");
    assert_eq!(q["status"], 200);
    assert_eq!(q["host"], "shop.test");
    assert_eq!(q["client"], "127.0.0.1");
    assert_eq!(q["bytes"].as_u64().unwrap() as usize, a.body.len());
    assert!(q["duration"].as_f64().unwrap() >= 0.0);
    assert!(chrono_like(q["time"].as_str().unwrap()), "{q}");

    let c = lines.iter().find(|l| l["path"] == "/").unwrap();
    assert_eq!(
        (c["slot"].as_str(), c["reason"].as_str()),
        (Some("staging"), Some("cookie"))
    );
    let h = find("/p");
    assert_eq!(
        (h["slot"].as_str(), h["reason"].as_str()),
        (Some("production"), Some("slot-host"))
    );
    assert_eq!(h["instance"], prod.addr());
    let w = find("/w");
    assert_eq!(
        (w["slot"].as_str(), w["reason"].as_str()),
        (Some("production"), Some("weighted"))
    );
    let n = find("/x");
    assert_eq!(n["status"], 404);
    assert_eq!(
        (n["site"].as_str(), n["slot"].as_str(), n["reason"].as_str()),
        (Some("-"), Some("-"), Some("-"))
    );
}

/// `2024-05-01T10:00:00.123Z`
fn chrono_like(t: &str) -> bool {
    t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T'
}

#[test]
fn requests_refused_before_routing_are_logged_too() {
    use std::io::{Read, Write};
    let app = App::start("v1");
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("access.log");
    let proxy = Proxy::start(&format!(
        r#"
[access_log]
enabled = true
format = "json"
path = "{log}"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["{app}"]
"#,
        log = log_path.display(),
        app = app.addr(),
    ));
    // a request line over max_uri_bytes (8192): 414 before any routing
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    write!(
        s,
        "GET /{} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        "u".repeat(9000)
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    let line: serde_json::Value = wait_for(10, "the refusal's access log line", || {
        let text = std::fs::read_to_string(&log_path).ok()?;
        serde_json::from_str(text.lines().next()?).ok()
    });
    assert_eq!(line["status"], 414);
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["site"], "-");
}

/// Two `Host` fields (h2load `-H Host:` sends its own and pingora's): a
/// one-line 400 in the proxy's words, logged — not pingora's bare 400
/// with an empty body and no log line.
#[test]
fn two_host_fields_get_a_logged_one_line_400() {
    use std::io::{Read, Write};
    let app = App::start("v1");
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("access.log");
    let proxy = Proxy::start(&format!(
        r#"
[access_log]
enabled = true
format = "json"
path = "{log}"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["{app}"]
"#,
        log = log_path.display(),
        app = app.addr(),
    ));
    // a plain request, then one written anew (a TE field is not plain)
    for extra in ["", "TE: trailers\r\n"] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: shop.test\r\n{extra}Host: shop.test\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            !head.to_ascii_lowercase().contains("server: pingora"),
            "{answer}"
        );
        assert_eq!(body.lines().count(), 1, "{answer}");
        assert!(body.contains("more than one Host field"), "{answer}");
    }
    let lines: Vec<serde_json::Value> = wait_for(10, "both refusals' log lines", || {
        let text = std::fs::read_to_string(&log_path).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.len() == 2).then_some(lines)
    });
    for line in lines {
        assert_eq!(line["status"], 400, "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    // the proxy goes on serving
    assert_eq!(get(&proxy, "shop.test", "/", &[]).status, 200);
}
