//! End-to-end protocol behaviour (docs/reference/protocols.md; SPEC §12): the
//! HTTP/1 edge cases nginx gets right, with raw sockets on the client side
//! (a well-behaved client library hides exactly what is tested here) and a
//! raw HTTP/1.1 app server that answers by path:
//!
//! - `/chunked/<n>`: `n` bytes in a chunked body, in 3 chunks;
//! - `/early`: a `103 Early Hints` interim response, then 200;
//! - `/slow/<ms>`: answers after `ms` milliseconds;
//! - `/ws`: `101 Switching Protocols`, then `slot@port:` (the slot the
//!   proxy named, the app's own port) and an echo of every byte;
//! - `/events/<n>`: `n` server-sent events, each sent only once the test
//!   has read the one before;
//! - anything else: 200 with the method, path and body length as its body,
//!   and the slot the proxy named (`X-Slot-Name`) in `x-seen-slot`.
//!
//! It reads `Expect: 100-continue` requests as a real server does: it sends
//! `100 Continue` before reading the body.

mod common;
use common::raw::{connect, read_head, read_response};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Server-sent events the client has read so far (see `/events/` below).
static EVENTS_READ: AtomicUsize = AtomicUsize::new(0);

/// A raw HTTP/1.1 app server in a thread per connection, keep-alive.
struct RawApp {
    port: u16,
}

impl RawApp {
    fn start() -> RawApp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = serve(conn);
                });
            }
        });
        RawApp { port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn serve(conn: TcpStream) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let (mut len, mut expect, mut chunked) = (0usize, false, false);
        let mut slot = String::from("-");
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "expect" => expect = v == "100-continue",
                "transfer-encoding" => chunked = v.contains("chunked"),
                "x-slot-name" => slot = v,
                _ => {}
            }
        }
        if expect {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                r.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        } else {
            body.resize(len, 0);
            r.read_exact(&mut body)?;
        }
        if let Some(n) = path.strip_prefix("/chunked/") {
            let n: usize = n.parse().unwrap();
            let data = payload(n);
            out.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")?;
            for part in [&data[..n / 3], &data[n / 3..2 * n / 3], &data[2 * n / 3..]] {
                write!(out, "{:x}\r\n", part.len())?;
                out.write_all(part)?;
                out.write_all(b"\r\n")?;
                out.flush()?;
            }
            out.write_all(b"0\r\n\r\n")?;
            continue;
        }
        if path.split('?').next() == Some("/ws") {
            // an upgrade: 101, then the raw bytes echoed until the close,
            // prefixed with the slot the proxy named and this app's port
            let me = out.local_addr()?.port();
            write!(
                out,
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n{slot}@{me}:"
            )?;
            out.flush()?;
            let mut buf = [0u8; 1024];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                out.write_all(&buf[..n])?;
            }
        }
        if let Some(n) = path.strip_prefix("/events/") {
            // server-sent events: event i+1 is written only once the client
            // said (EVENTS_READ) it has read event i, so a proxy that holds
            // events back makes the client wait for ever
            let n: usize = n.parse().unwrap();
            out.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            )?;
            for i in 0..n {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while EVENTS_READ.load(Ordering::SeqCst) < i && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let event = format!("id: {i}\ndata: event {i}\n\n");
                write!(out, "{:x}\r\n{event}\r\n", event.len())?;
                out.flush()?;
            }
            out.write_all(b"0\r\n\r\n")?;
            continue;
        }
        if path == "/early" {
            out.write_all(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")?;
            out.flush()?;
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            let ms = ms.split('?').next().unwrap_or(ms);
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        }
        let text = format!("{method} {path} {}", body.len());
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\nx-seen-slot: {slot}\r\n\r\n{text}",
            text.len()
        )?;
    }
}

/// `n` bytes that tell a misplaced or repeated chunk from the right one.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Site `shop` (`shop.test`): production v1 on `prod`, staging v2 on
/// `staging` with `staging_keys` (its traffic rule and the like).
fn shop(prod: &RawApp, staging: &RawApp, staging_keys: &str) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{}"]
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["{}"]
{staging_keys}
"#,
        prod.addr(),
        staging.addr()
    )
}

/// Production and staging (50%) both on `app`, so new visitors get a pin
/// cookie.
fn site(app: &RawApp) -> String {
    shop(app, app, "traffic_percent = 50")
}

#[test]
fn http10_clients_get_a_close_delimited_body_never_chunked() {
    let app = RawApp::start();
    let proxy = Proxy::start(&site(&app));
    for version in ["1.0", "1.1"] {
        let mut s = connect(&proxy);
        write!(
            s,
            "GET /chunked/30000 HTTP/{version}\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut s).unwrap();
        let mut body = Vec::new();
        s.read_to_end(&mut body).unwrap();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        if version == "1.0" {
            assert!(!chunked, "HTTP/1.0 got a chunked answer:\n{head}");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(
                body,
                payload(30000),
                "the body is the app's bytes, unframed"
            );
        } else {
            // an HTTP/1.1 client still gets the app's chunked framing
            assert!(chunked, "{head}");
            assert!(body.ends_with(b"0\r\n\r\n"));
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let app = RawApp::start();
    let proxy = Proxy::start(&site(&app));
    let mut s = connect(&proxy);
    // three requests in one write: a GET, a POST with a body, a GET
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: shop.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    )
    .unwrap();
    for want in ["GET /one 0", "POST /two 5", "GET /three 0"] {
        let r = read_response(&mut s).unwrap_or_else(|e| panic!("{want}: {e}"));
        assert_eq!(r.status(), 200, "{}", r.head);
        assert_eq!(String::from_utf8_lossy(&r.body), want);
    }
    // a request sent while the previous one is still being answered
    s.write_all(b"GET /slow/300 HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"GET /after HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    for want in ["GET /slow/300 0", "GET /after 0"] {
        let r = read_response(&mut s).unwrap_or_else(|e| panic!("{want}: {e}"));
        assert_eq!(String::from_utf8_lossy(&r.body), want);
    }
    // and the connection is still usable
    s.write_all(b"GET /last HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().body, b"GET /last 0");
}

#[test]
fn interim_responses_carry_no_cookie() {
    let app = RawApp::start();
    let proxy = Proxy::start(&site(&app));
    let mut s = connect(&proxy);
    s.write_all(b"GET /early HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    let early = read_head(&mut s).unwrap();
    assert!(early.starts_with("HTTP/1.1 103"), "{early}");
    assert!(
        early.to_ascii_lowercase().contains("link: </style.css>"),
        "{early}"
    );
    assert!(
        !early.to_ascii_lowercase().contains("set-cookie"),
        "a 1xx response carried a cookie:\n{early}"
    );
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.starts_with("x-ms-routing-name=")),
        "the final response pins the visitor:\n{}",
        r.head
    );
}

#[test]
fn keep_alive_survives_expect_100_continue() {
    let app = RawApp::start();
    let proxy = Proxy::start(&site(&app));
    let mut s = connect(&proxy);
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let cont = read_head(&mut s).unwrap();
    assert!(cont.starts_with("HTTP/1.1 100"), "{cont}");
    s.write_all(b"hello world").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.body, b"POST /upload 11");
    assert_ne!(r.header("connection"), Some("close"), "{}", r.head);
    // the same connection takes the next request
    s.write_all(b"GET /next HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s).expect("the connection was kept");
    assert_eq!(r.body, b"GET /next 0");
}

/// A proxy with a TLS listener too; returns it and the TLS port.
fn proxy_with_tls(sites: &str, server_keys: &str) -> (Proxy, u16) {
    let tls_port = free_port();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let keys = format!(
        "threads = 1\ntls_listen = [\"127.0.0.1:{tls_port}\"]\ntls_cert_path = \"{}\"\ntls_key_path = \"{}\"\n{server_keys}\n",
        fixtures.join("tls-cert.pem").display(),
        fixtures.join("tls-key.pem").display()
    );
    let proxy = Proxy::start_edited(sites, 1, move |t| t.replacen("threads = 1\n", &keys, 1));
    (proxy, tls_port)
}

/// An HTTP/2 client for `shop.test` on `port`: by ALPN over TLS, or with
/// prior knowledge (h2c) over plain TCP.
fn h2_client(port: u16, tls: bool) -> reqwest::blocking::Client {
    let b = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .resolve("shop.test", ([127, 0, 0, 1], port).into());
    if tls {
        b.danger_accept_invalid_certs(true)
    } else {
        b.http2_prior_knowledge()
    }
    .build()
    .unwrap()
}

/// The same routing over HTTP/2 as over HTTP/1.1: a new visitor is
/// bucketed and pinned, the pin is honoured, the opt-in link wins, and
/// the answer's protocol is HTTP/2.
fn routes_over_h2(client: &reqwest::blocking::Client, base: &str) {
    let r = client
        .get(format!("{base}/h2"))
        .send()
        .expect("an HTTP/2 answer");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let slot = r.headers()["x-seen-slot"].to_str().unwrap().to_string();
    // production's pin is "self", as Azure's
    let pin = if slot == "production" { "self" } else { &slot };
    assert!(
        cookie.starts_with(&format!("x-ms-routing-name={pin};")),
        "{cookie}"
    );
    assert_eq!(r.text().unwrap(), "GET /h2 0");
    for _ in 0..10 {
        let r = client
            .get(format!("{base}/again"))
            .header("cookie", format!("x-ms-routing-name={pin}"))
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-seen-slot"], slot.as_str(), "the pin holds");
        assert!(r.headers().get("set-cookie").is_none());
    }
    let r = client
        .post(format!("{base}/upload?x-ms-routing-name=staging"))
        .body(vec![7u8; 100_000])
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-seen-slot"], "staging");
    assert_eq!(
        r.text().unwrap(),
        "POST /upload?x-ms-routing-name=staging 100000"
    );
}

#[test]
fn http2_by_alpn_on_tls_and_by_prior_knowledge_on_plain_listeners() {
    let app = RawApp::start();
    let (proxy, tls_port) = proxy_with_tls(&site(&app), "");
    routes_over_h2(
        &h2_client(tls_port, true),
        &format!("https://shop.test:{tls_port}"),
    );
    let port = proxy.port;
    routes_over_h2(&h2_client(port, false), &format!("http://shop.test:{port}"));
    // HTTP/1.1 clients still get HTTP/1.1 on both listeners
    let h1 = reqwest::blocking::Client::builder()
        .http1_only()
        .danger_accept_invalid_certs(true)
        .resolve("shop.test", ([127, 0, 0, 1], tls_port).into())
        .build()
        .unwrap();
    let r = h1
        .get(format!("https://shop.test:{tls_port}/one"))
        .send()
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let mut s = connect(&proxy);
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().body, b"GET /plain 0");
    // the protocol is counted
    let text = scrape(&proxy);
    assert!(
        value(
            &text,
            r#"slotproxy_requests_by_protocol_total{protocol="HTTP/2.0"}"#
        ) >= 24.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            r#"slotproxy_requests_by_protocol_total{protocol="HTTP/1.1"}"#
        ) >= 2.0
    );
}

#[test]
fn h2c_can_be_turned_off() {
    let app = RawApp::start();
    let proxy = Proxy::start_edited(&site(&app), 1, |t| {
        t.replacen("threads = 1\n", "threads = 1\nh2c = false\n", 1)
    });
    let err = h2_client(proxy.port, false)
        .get(format!("http://shop.test:{}/", proxy.port))
        .send();
    assert!(err.is_err(), "h2c answered though server.h2c = false");
    // HTTP/1.1 is unaffected
    let mut s = connect(&proxy);
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().body, b"GET /plain 0");
}

#[test]
fn a_slot_can_wait_longer_for_quiet_responses_than_the_server_default() {
    let app = RawApp::start();
    let sites = shop(
        &app,
        &app,
        "traffic_percent = 0\nupstream_read_timeout_secs = 10",
    );
    let proxy = Proxy::start_edited(&sites, 1, |t| {
        t.replacen(
            "threads = 1\n",
            "threads = 1\nupstream_read_timeout_secs = 1\n",
            1,
        )
    });
    let ask = |query: &str| {
        let mut s = connect(&proxy);
        write!(
            s,
            "GET /slow/2000{query} HTTP/1.1\r\nHost: shop.test\r\n\r\n"
        )
        .unwrap();
        read_response(&mut s).unwrap()
    };
    // production keeps the server's 1 s: the app's 2 s silence is a 502
    assert_eq!(ask("").status(), 502);
    // staging waits up to its own 10 s
    let r = ask("?x-ms-routing-name=staging");
    assert_eq!(r.status(), 200, "{}", r.head);
    assert_eq!(r.header("x-seen-slot"), Some("staging"));
}

#[test]
fn http2_connections_get_the_same_limits_as_http1() {
    let app = RawApp::start();
    let proxy = Proxy::start_edited(&site(&app), 1, |t| {
        t.replacen(
            "threads = 1\n",
            "threads = 1\nkeepalive_timeout_secs = 1\nmax_header_bytes = 4096\nmax_uri_bytes = 1024\n",
            1,
        )
    });
    // a header list over max_header_bytes is refused with 431
    let c = h2_client(proxy.port, false);
    let url = format!("http://shop.test:{}/big", proxy.port);
    let r = c
        .get(&url)
        .header("x-big", "a".repeat(8000))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    assert_eq!(c.get(&url).send().unwrap().status().as_u16(), 200);
    // a request target over max_uri_bytes is refused with 414, as over HTTP/1
    let long = format!("{url}?q={}", "u".repeat(2000));
    let r = c.get(&long).send().unwrap();
    assert_eq!(r.status().as_u16(), 414);
    assert!(r.text().unwrap().contains("server.max_uri_bytes"));

    // an idle HTTP/2 connection is closed after keepalive_timeout_secs
    let mut s = connect(&proxy);
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // empty SETTINGS
    let started = std::time::Instant::now();
    let mut sink = [0u8; 1024];
    loop {
        match s.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => panic!("the idle HTTP/2 connection was not closed: {e}"),
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn upgraded_connections_pass_through_to_the_routed_slot() {
    let app = RawApp::start();
    let proxy = Proxy::start(&site(&app));
    let mut s = connect(&proxy);
    // the opt-in link routes the upgrade, as any request
    s.write_all(
        b"GET /ws?x-ms-routing-name=staging HTTP/1.1\r\nHost: shop.test\r\n\
          Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut s).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // bytes flow both ways through the proxy after the 101, in several
    // writes (the connection loop must not fence an upgraded connection)
    let mut got = Vec::new();
    for msg in [&b"ping"[..], b"pong-and-more", b"GET / HTTP/1.1\r\n\r\n"] {
        s.write_all(msg).unwrap();
        let want = if got.is_empty() {
            [format!("staging@{}:", app.port).as_bytes(), msg].concat()
        } else {
            msg.to_vec()
        };
        let mut buf = vec![0u8; want.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, want, "{}", String::from_utf8_lossy(&buf));
        got.extend_from_slice(&buf);
    }
}

/// An upgrade request for `/ws` on `s`; returns what the app put in front
/// of the echo (`slot@port:`).
fn open_ws(s: &mut TcpStream, prefix_len: usize) -> String {
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: shop.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .unwrap();
    let head = read_head(s).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut prefix = vec![0u8; prefix_len];
    s.read_exact(&mut prefix).unwrap();
    String::from_utf8(prefix).unwrap()
}

fn echo(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn an_open_websocket_stays_on_its_instance_across_a_swap() {
    let (a, b) = (RawApp::start(), RawApp::start());
    let sites = shop(&a, &b, "traffic_percent = 0\nwarmup_timeout_secs = 2");
    let proxy = Proxy::start(&sites);
    let prefix = |app: &RawApp| format!("production@{}:", app.port);
    let mut old = connect(&proxy);
    assert_eq!(open_ws(&mut old, prefix(&a).len()), prefix(&a));
    assert_eq!(echo(&mut old, b"before"), b"before");

    let (code, body) = proxy.admin(
        "POST",
        "/api/v1/sites/shop/slots/staging/swap",
        Some(r#"{"target_slot": "production", "action": "swap"}"#),
    );
    assert_eq!(code, 202, "{body}");
    let id = body["operation_id"].as_str().unwrap().to_string();
    let op = wait_for(60, "the swap to settle", || {
        let (_, op) = proxy.admin("GET", &format!("/api/v1/operations/{id}"), None);
        (op["status"] != "running").then_some(op)
    });
    assert_eq!(op["status"], "succeeded", "{op:#}");

    // a new socket goes to the new production (b)...
    let mut new = connect(&proxy);
    assert_eq!(open_ws(&mut new, prefix(&b).len()), prefix(&b));
    assert_eq!(echo(&mut new, b"new"), b"new");
    // ...while the one opened before the swap still talks to a, both ways
    for msg in [&b"after the swap"[..], b"and again"] {
        assert_eq!(echo(&mut old, msg), msg);
    }
}

#[test]
fn server_sent_events_are_passed_on_as_they_come() {
    let app = RawApp::start();
    let proxy = Proxy::start(&site(&app));
    let mut s = connect(&proxy);
    s.write_all(b"GET /events/3 HTTP/1.1\r\nHost: shop.test\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    // each event must arrive before the app sends the next (it waits for
    // EVENTS_READ): nothing may sit in a buffer of the proxy
    let mut r = BufReader::new(s);
    for i in 0..3 {
        let want = format!("data: event {i}");
        let mut seen = String::new();
        while !seen.contains(&want) {
            let mut line = String::new();
            assert!(
                r.read_line(&mut line).unwrap() > 0,
                "stream ended before event {i}"
            );
            seen.push_str(&line);
        }
        EVENTS_READ.store(i + 1, Ordering::SeqCst);
    }
}
