//! The HTTP/1 request paths (docs/performance/README.md, "One request
//! engine"): plain requests take the lean path (`src/lean.rs`) as they
//! came, the rest after their header is written anew
//! (`src/head_rewrite.rs`). These tests hold them to the same behaviour
//! against a raw upstream that echoes the
//! request head it received, and check the lean path's own pool of idle
//! upstream connections against an upstream that drops kept-alive
//! connections the way apps do when their idle time-out fires.
mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// An upstream on its own threads, answering each request with its head
/// (request line and fields, as received) as the body. With
/// `one_per_conn`, a connection's second request is read and then the
/// connection is closed without an answer: the keep-alive race of an app
/// whose idle time-out fires as a request arrives.
/// Returns the port and the count of requests dropped that way.
fn echo_upstream(one_per_conn: bool) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dropped = Arc::new(AtomicUsize::new(0));
    let counter = dropped.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let dropped = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                for n in 0.. {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    if one_per_conn && n > 0 {
                        dropped.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{head}",
                        head.len()
                    );
                    if writer.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, dropped)
}

fn site(port: u16) -> String {
    format!(
        r#"
[[sites]]
name = "app"
hostnames = ["app.test"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:{port}"]
[[sites.slots]]
name = "staging"
traffic_percent = 50
instances = ["127.0.0.1:{port}"]
"#
    )
}

/// The head the upstream saw, as sorted lower-case field lines, without
/// `drop` (the fields the two requests differ in on purpose).
fn seen(body: &str, drop: &[&str]) -> Vec<String> {
    let mut lines = body.lines();
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut fields: Vec<String> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            format!("{}: {}", n.to_ascii_lowercase(), v.trim())
        })
        .filter(|l| !drop.iter().any(|d| l.starts_with(&format!("{d}:"))))
        .collect();
    fields.sort();
    fields.insert(0, request_line);
    fields
}

#[test]
fn both_paths_send_the_instance_the_same_request() {
    let (port, _) = echo_upstream(false);
    let proxy = Proxy::start(&site(port));
    let pin = ("cookie", "a=1; x-ms-routing-name=staging");
    // plain: the lean path
    let lean = get(
        &proxy,
        "app.test",
        "/p?q=1",
        &[
            pin,
            ("x-forwarded-for", "6.6.6.6"),
            ("connection", "keep-alive"),
        ],
    );
    // a field nominated by Connection: not plain, its header written anew
    // without the nominated field (`head_rewrite`)
    let full = get(
        &proxy,
        "app.test",
        "/p?q=1",
        &[
            pin,
            ("x-forwarded-for", "6.6.6.6"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
        ],
    );
    assert_eq!((lean.status, full.status), (200, 200));
    let lean_seen = seen(&lean.body, &[]);
    assert_eq!(
        lean_seen,
        seen(&full.body, &[]),
        "lean: {}\nfull: {}",
        lean.body,
        full.body
    );
    assert_eq!(lean_seen[0], "GET /p?q=1 HTTP/1.1");
    for field in [
        "host: app.test",
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: app.test",
        "x-slot-name: staging",
    ] {
        assert!(
            lean_seen.iter().any(|l| l == field),
            "{field} in {lean_seen:?}"
        );
    }
    assert!(!lean_seen.iter().any(|l| l.starts_with("connection:")));
    // neither pinned response re-sets the cookie; a cookieless one does
    assert_eq!((lean.pin(), full.pin()), (None, None));
    let fresh = get(&proxy, "app.test", "/", &[]);
    assert!(fresh.pin().is_some(), "{:?}", fresh.set_cookie);
}

#[test]
fn a_kept_alive_connection_the_app_dropped_is_retried_not_a_502() {
    // every pooled connection dies when reused: each request after the
    // first finds its connection closed and must go again on a new one
    let (port, dropped) = echo_upstream(true);
    let proxy = Proxy::start(&site(port));
    let c = client();
    for i in 0..20 {
        // plain and not plain (written anew) in turn
        let mut req = c
            .get(proxy.url(&format!("/r{i}")))
            .header("host", "app.test");
        if i % 2 == 1 {
            req = req
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "1");
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        assert!(body.starts_with(&format!("GET /r{i} HTTP/1.1")), "{body}");
    }
    // pooled connections were reused and found dropped (else this test
    // proves nothing about the retry)
    assert!(dropped.load(Ordering::SeqCst) > 0);
}

#[test]
fn a_post_the_app_may_have_acted_on_is_not_sent_twice() {
    // the app reads the POST on a reused connection, then drops it: it may
    // have acted on it, so the proxy answers 502 rather than sending it
    // again (a retry here would reach a fresh connection and get 200)
    let (port, dropped) = echo_upstream(true);
    let proxy = Proxy::start(&site(port));
    let c = client();
    let first = c
        .get(proxy.url("/warm"))
        .header("host", "app.test")
        .send()
        .unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let resp = c
        .post(proxy.url("/pay"))
        .header("host", "app.test")
        .header("content-length", "0")
        .send()
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        502,
        "{}",
        resp.text().unwrap_or_default()
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the app saw the POST once"
    );
}

#[test]
fn a_body_ended_by_the_app_closing_is_sent_on_chunked() {
    // an HTTP/1.0 app: no length, the body ends when it closes
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = conn
                .write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the close");
        }
    });
    let proxy = Proxy::start(&site(port));
    let mut s = common::raw::connect(&proxy);
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .unwrap();
        let head = common::raw::read_head(&mut s).unwrap().to_ascii_lowercase();
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        // the chunked body, read to its last chunk: the connection stays
        let mut body = Vec::new();
        let mut byte = [0u8; 1];
        while !body.ends_with(b"0\r\n\r\n") {
            std::io::Read::read_exact(&mut s, &mut byte).unwrap();
            body.push(byte[0]);
        }
        assert!(String::from_utf8_lossy(&body).contains("until the close"));
    }
}

/// An upstream that answers by path, each answer framed its own way, on
/// kept-alive connections. What the lean path's own codec must pass
/// through exactly and still know where each response ends. Returns the
/// port and the (connection number, path) of every request.
type Served = Arc<std::sync::Mutex<Vec<(usize, String)>>>;
fn scripted_upstream() -> (u16, Served) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let served = Served::default();
    let log = served.clone();
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(conn) = conn else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let mut parts = request_line.split(' ');
                    let (method, path) = (parts.next().unwrap(), parts.next().unwrap_or("/"));
                    log.lock().unwrap().push((n, path.to_string()));
                    let ok = match (method, path) {
                        (_, "/chunked") => {
                            let _ = w.write_all(
                                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                            );
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            w.write_all(b"6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n")
                        }
                        (_, "/hints") => {
                            let _ = w.write_all(
                                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
                            );
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        }
                        (_, "/big") => {
                            let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
                            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
                            body.chunks(65536).try_for_each(|c| w.write_all(c))
                        }
                        ("HEAD", "/head") => {
                            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                        }
                        (_, "/slow") => {
                            std::thread::sleep(std::time::Duration::from_millis(1500));
                            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        }
                        (_, "/framed-by-nominee") => w.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: content-length\r\n\r\nok",
                        ),
                        (_, "/hop") => w.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-Kept: 1\r\n\r\nok",
                        ),
                        (_, "/te-gzip") => {
                            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx");
                            return;
                        }
                        (_, "/garbage") => {
                            let _ = w.write_all(b"nonsense\r\n\r\n");
                            return;
                        }
                        _ => w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                    };
                    if ok.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, served)
}

/// Read from `s` until what was read ends with `suffix`.
fn read_until(s: &mut std::net::TcpStream, suffix: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(suffix) {
        std::io::Read::read_exact(s, &mut byte).unwrap();
        got.push(byte[0]);
    }
    got
}

#[test]
fn responses_framed_every_way_pass_through_one_kept_alive_connection() {
    let (port, served) = scripted_upstream();
    let proxy = Proxy::start(&site(port));
    let mut s = common::raw::connect(&proxy);
    let ask = |s: &mut std::net::TcpStream, method: &str, path: &str| {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: app.test\r\nCookie: x-ms-routing-name=self\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
    };
    // chunked, with a trailer, in two pieces: passed through as it came
    ask(&mut s, "GET", "/chunked");
    let head = common::raw::read_head(&mut s).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let body = read_until(&mut s, b"0\r\nX-Sum: 11\r\n\r\n");
    assert_eq!(body, b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n");
    // an interim response first, then the final one
    ask(&mut s, "GET", "/hints");
    let hints = common::raw::read_head(&mut s).unwrap();
    assert!(hints.starts_with("HTTP/1.1 103"), "{hints}");
    assert!(hints.contains("Link: </s.css>"), "{hints}");
    let r = common::raw::read_response(&mut s).unwrap();
    assert_eq!((r.status(), r.text().as_str()), (200, "ok"));
    // a body larger than any buffer, byte for byte
    ask(&mut s, "GET", "/big");
    let r = common::raw::read_response(&mut s).unwrap();
    assert_eq!(r.body.len(), 1 << 20);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8));
    // HEAD: the length of the body it would have, and no body
    ask(&mut s, "HEAD", "/head");
    let head = common::raw::read_head(&mut s).unwrap();
    assert!(head.contains("Content-Length: 1000"), "{head}");
    // the response's own Connection stays behind; a field it names passes,
    // as on pingora-proxy's path — even a framing one, which still frames
    ask(&mut s, "GET", "/hop");
    let r = common::raw::read_response(&mut s).unwrap();
    assert_eq!(r.header("x-kept"), Some("1"));
    assert_eq!(r.header("x-hop"), Some("1"), "{}", r.head);
    assert_eq!(r.header("connection"), None, "{}", r.head);
    assert!(r.header("date").is_some(), "{}", r.head);
    ask(&mut s, "GET", "/framed-by-nominee");
    let r = common::raw::read_response(&mut s).unwrap();
    assert_eq!(
        (r.header("content-length"), r.text().as_str()),
        (Some("2"), "ok")
    );
    // every response above was framed right: one client connection, one
    // upstream connection (health checks have their own)
    let conns: std::collections::BTreeSet<usize> = served
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p)| {
            [
                "/chunked",
                "/hints",
                "/big",
                "/head",
                "/hop",
                "/framed-by-nominee",
            ]
            .contains(&p.as_str())
        })
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(conns.len(), 1, "{:?}", served.lock().unwrap());

    // the pin cookie goes on the final response only
    let mut s = common::raw::connect(&proxy);
    s.write_all(b"GET /hints HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let hints = common::raw::read_head(&mut s).unwrap();
    assert!(
        !hints.to_ascii_lowercase().contains("set-cookie"),
        "{hints}"
    );
    let r = common::raw::read_response(&mut s).unwrap();
    assert!(r.header("set-cookie").is_some(), "{}", r.head);
}

#[test]
fn responses_that_cannot_be_framed_are_a_502() {
    let (port, _) = scripted_upstream();
    let proxy = Proxy::start(&site(port));
    for path in ["/te-gzip", "/garbage"] {
        let mut s = common::raw::connect(&proxy);
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
            .unwrap();
        let r = common::raw::read_response(&mut s).unwrap();
        assert_eq!(r.status(), 502, "{path}: {}", r.head);
        assert!(
            r.text().starts_with("502 Bad Gateway: no instance of slot"),
            "{}",
            r.text()
        );
        assert_eq!(r.header("connection"), Some("close"));
    }
    let text = scrape(&proxy);
    assert!(
        sample(
            &text,
            r#"slotproxy_requests_total{code="502",site="app",slot="production"}"#
        )
        .unwrap_or(0.0)
            + sample(
                &text,
                r#"slotproxy_requests_total{code="502",site="app",slot="staging"}"#
            )
            .unwrap_or(0.0)
            >= 2.0,
        "{text}"
    );
}

#[test]
fn a_head_answered_by_the_proxy_has_no_body_and_the_connection_goes_on() {
    let (port, _) = scripted_upstream();
    let proxy = Proxy::start(&site(port));
    let mut s = common::raw::connect(&proxy);
    // 404 from the proxy itself, then a proxied request on the same
    // connection: a body after the HEAD's header would be read as the
    // start of the next response
    s.write_all(
        b"HEAD / HTTP/1.1\r\nHost: nowhere.test\r\n\r\nGET /hop HTTP/1.1\r\nHost: app.test\r\n\r\n",
    )
    .unwrap();
    let head = common::raw::read_head(&mut s).unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: "),
        "{head}"
    );
    let next = common::raw::read_response(&mut s).unwrap();
    assert_eq!(
        (next.status(), next.text().as_str()),
        (200, "ok"),
        "{}",
        next.head
    );
}

/// A connection whose request for `/slow` (pinned to production) the
/// scripted upstream has received and is working on (it answers after
/// 1.5 s).
fn slow_request_in_flight(proxy: &Proxy, served: &Served) -> std::net::TcpStream {
    let mut s = common::raw::connect(proxy);
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: app.test\r\nCookie: x-ms-routing-name=self\r\n\r\n")
        .unwrap();
    wait_for(10, "the app to get the request", || {
        served
            .lock()
            .unwrap()
            .iter()
            .any(|(_, p)| p == "/slow")
            .then_some(())
    });
    s
}

#[test]
fn a_client_that_leaves_while_the_app_works_is_counted_as_gone() {
    let (port, served) = scripted_upstream();
    let proxy = Proxy::start(&site(port));
    drop(slow_request_in_flight(&proxy, &served));
    // seen while the app still works (it answers after 1.5 s), not at the
    // first write: 499, as on pingora-proxy's path
    let series = r#"slotproxy_requests_total{code="499",site="app",slot="production"}"#;
    wait_for(10, "a 499", || {
        (sample(&scrape(&proxy), series).unwrap_or(0.0) >= 1.0).then_some(())
    });
    let ok = r#"slotproxy_requests_total{code="200",site="app",slot="production"}"#;
    assert_eq!(sample(&scrape(&proxy), ok).unwrap_or(0.0), 0.0);
}

#[test]
fn a_response_that_outlives_the_start_of_the_drain_says_close() {
    let (port, served) = scripted_upstream();
    let proxy = Proxy::start_graceful(&site(port), 10);
    let mut s = slow_request_in_flight(&proxy, &served);
    // the request was read before the drain began, answered after it
    proxy.signal(libc::SIGTERM);
    let r = common::raw::read_response(&mut s).unwrap();
    assert_eq!(r.status(), 200, "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    // and the connection does end
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn a_trusted_proxys_forwarded_fields_are_kept_and_extended_on_both_paths() {
    let (port, _) = echo_upstream(false);
    // the test client connects from 127.0.0.1: here a trusted proxy
    let sites = site(port).replace(
        "hostnames = [\"app.test\"]",
        "hostnames = [\"app.test\"]\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let proxy = Proxy::start(&sites);
    let fields = [
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example"),
        ("cookie", "x-ms-routing-name=self"),
    ];
    let lean = get(&proxy, "app.test", "/t", &fields);
    let mut not_plain = fields.to_vec();
    not_plain.extend([("connection", "keep-alive, x-hop"), ("x-hop", "1")]);
    let full = get(&proxy, "app.test", "/t", &not_plain);
    for answer in [&lean, &full] {
        let seen = seen(&answer.body, &[]);
        for field in [
            "x-forwarded-for: 1.2.3.4, 127.0.0.1",
            "x-forwarded-proto: https",
            "x-forwarded-host: shop.example",
        ] {
            assert!(seen.iter().any(|l| l == field), "{field} in {seen:?}");
        }
    }
    assert_eq!(seen(&lean.body, &[]), seen(&full.body, &[]));
}
