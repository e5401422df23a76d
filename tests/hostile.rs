//! Hostile clients and misbehaving apps end to end (docs/reference/limits.md;
//! issue 26), with raw sockets on both sides:
//!
//! - a client that stops reading a large answer is let go after
//!   `send_timeout_secs`, and so is the app connection it held;
//! - an app that writes past its responses (a second answer a moment
//!   later, a body after a HEAD answer, more than its Content-Length) never
//!   hands those bytes to another site's requests, though both sites run
//!   on the same app server;
//! - a body trickled a byte at a time after its `100 Continue` is cut off
//!   with 408 at `body_min_bytes_per_sec`, though no pause reaches a
//!   time-out.

mod common;
use common::raw::{read_head, read_request, read_response};
use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A raw app server: each connection served by `serve` on its own thread.
fn raw_app(
    serve: fn(TcpStream, &AtomicUsize) -> std::io::Result<()>,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, &seen);
            });
        }
    });
    (addr, count)
}

fn sites(addr: &str, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                r#"
[[sites]]
name = "{n}"
hostnames = ["{n}.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{addr}"]
"#
            )
        })
        .collect()
}

fn proxy_with(sites: &str, server_keys: &str) -> Proxy {
    let keys = server_keys.to_string();
    Proxy::start_edited(sites, 1, move |t| {
        t.replacen("threads = 1", &format!("threads = 1\n{keys}"), 1)
    })
}

/// Answers `/` (the health checks) with `ok`; anything else with a
/// 100 MB body written until the proxy stops taking it, then counts one
/// connection cut.
fn endless(conn: TcpStream, cut: &AtomicUsize) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        let mut body = vec![0u8; req.length()];
        r.read_exact(&mut body)?;
        if req.path == "/" {
            out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")?;
            continue;
        }
        out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 104857600\r\n\r\n")?;
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..1600 {
            if out.write_all(&block).is_err() {
                cut.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A client with a 4 KiB receive buffer that sends `request`, reads 1 KiB
/// of the answer and then stops reading.
fn slow_reader(proxy: &Proxy, request: &[u8]) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let to: SocketAddr = format!("127.0.0.1:{}", proxy.port).parse().unwrap();
    sock.connect(&to.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    s
}

fn assert_slow_readers_let_go(request: &'static [u8]) {
    let (addr, cut) = raw_app(endless);
    let proxy = proxy_with(&sites(&addr, &["shop"]), "send_timeout_secs = 1");
    let mut readers: Vec<TcpStream> = (0..3).map(|_| slow_reader(&proxy, request)).collect();
    // the proxy stops reading the app while the client takes nothing; the
    // send time-out lets both go (without it, they are held for good)
    wait_for(30, "the app connections to be let go", || {
        (cut.load(Ordering::SeqCst) == 3).then_some(())
    });
    // the clients get the end of their connection after what was buffered
    for s in &mut readers {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("the connection is closed");
        assert!(rest.len() < 100 << 20, "the whole body arrived");
    }
}

#[test]
fn a_client_that_stops_reading_is_let_go_with_its_app_connection() {
    assert_slow_readers_let_go(b"GET /big HTTP/1.1\r\nHost: shop.test\r\n\r\n");
}

#[test]
fn a_post_whose_client_stops_reading_is_let_go_too() {
    assert_slow_readers_let_go(
        b"POST /big HTTP/1.1\r\nHost: shop.test\r\ncontent-length: 5\r\n\r\nhello",
    );
}

/// For `a.test`: each answer followed by bytes nobody asked for — a second
/// answer 5 ms later (`/late`), a body 5 ms after a HEAD answer (`/head`),
/// more than the Content-Length in the same write (`/over`). For any other
/// host: `B:<path>`, as asked.
fn writes_past_its_answers(conn: TcpStream, _: &AtomicUsize) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        let host = req.field("host").unwrap_or("").to_string();
        let answer = |text: &str| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            )
        };
        if host != "a.test" || req.path == "/" {
            out.write_all(answer(&format!("B:{}", req.path)).as_bytes())?;
            continue;
        }
        let leak = answer(&format!("LEAK:{}", req.path));
        match req.path.as_str() {
            "/late" => {
                out.write_all(answer("A:/late").as_bytes())?;
                std::thread::sleep(Duration::from_millis(5));
                out.write_all(leak.as_bytes())?;
            }
            "/head" => {
                out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")?;
                std::thread::sleep(Duration::from_millis(5));
                out.write_all(b"LEAK:head!")?;
            }
            _ => out.write_all(format!("{}{leak}", answer("A:")).as_bytes())?,
        }
    }
    Ok(())
}

/// Send `request` on `conn` (connecting anew if it was closed) and read
/// the answer: its head only for a HEAD request.
fn ask(proxy: &Proxy, conn: &mut Option<TcpStream>, request: &str) -> Option<(String, String)> {
    for _ in 0..2 {
        let s = conn.get_or_insert_with(|| common::raw::connect(proxy));
        let read = s.write_all(request.as_bytes()).and_then(|_| {
            if request.starts_with("HEAD") {
                read_head(s).map(|h| (h, String::new()))
            } else {
                read_response(s).map(|r| (r.head.clone(), r.text()))
            }
        });
        match read {
            Ok(answer) => {
                if answer.0.to_ascii_lowercase().contains("connection: close") {
                    *conn = None;
                }
                return Some(answer);
            }
            Err(_) => *conn = None,
        }
    }
    None
}

#[test]
fn an_app_writing_past_its_answers_never_reaches_another_sites_requests() {
    let (addr, _) = raw_app(writes_past_its_answers);
    let proxy = proxy_with(&sites(&addr, &["a", "b"]), "");
    let leaks = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (proxy, leaks, rounds) = (&proxy, leaks.clone(), rounds.clone());
            scope.spawn(move || {
                let (mut a, mut b) = (None, None);
                for i in 0..250 {
                    let bad = ["/late", "/head", "/over"][i % 3];
                    let method = if bad == "/head" { "HEAD" } else { "GET" };
                    let _ = ask(
                        proxy,
                        &mut a,
                        &format!("{method} {bad} HTTP/1.1\r\nHost: a.test\r\n\r\n"),
                    );
                    let path = format!("/b-{t}-{i}");
                    let got = ask(
                        proxy,
                        &mut b,
                        &format!("GET {path} HTTP/1.1\r\nHost: b.test\r\n\r\n"),
                    );
                    match got {
                        Some((head, body)) if head.starts_with("HTTP/1.1 200") => {
                            if body != format!("B:{path}") {
                                leaks.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        other => panic!("b.test {path}: {other:?}"),
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(rounds.load(Ordering::SeqCst), 1000);
    assert_eq!(leaks.load(Ordering::SeqCst), 0, "b.test got a.test's bytes");
    // and the operator sees that the app writes past its answers
    let text = scrape(&proxy);
    let discarded: f64 = text
        .lines()
        .filter(|l| l.starts_with("slotproxy_upstream_connections_discarded_total{"))
        .filter(|l| l.contains(r#"site="a""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(discarded >= 1.0, "{text}");
}

/// Malformed or dangerous answers, by path: what the client must not get
/// as it came.
fn malformed(conn: TcpStream, _: &AtomicUsize) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        let answer: Vec<u8> = match req.path.as_str() {
            "/bare-lf" => b"HTTP/1.1 200 OK\nContent-Length: 2\nX-App: 1\n\nok".to_vec(),
            "/chunk-junk" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2x\r\nok\r\n0\r\n\r\n"
                    .to_vec()
            }
            "/long-extension" => format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;{}\r\nok\r\n0\r\n\r\n",
                "e".repeat(200 * 1024)
            )
            .into_bytes(),
            "/trailers" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\
                Content-Length: 99\r\nSet-Cookie: s=1\r\nHost: evil\r\nno colon here\r\n\r\n"
                .to_vec(),
            "/huge-head" => format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
                "b".repeat(900 * 1024)
            )
            .into_bytes(),
            "/early-hints" => {
                b"HTTP/1.1 103 Early Hints\r\nSet-Cookie: s=1\r\nLink: </a.css>\r\n\r\n\
                HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    .to_vec()
            }
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        };
        out.write_all(&answer)?;
    }
    Ok(())
}

/// Everything the proxy sends for one request of `path`, to its close.
fn raw_answer(proxy: &Proxy, path: &str) -> String {
    let mut s = common::raw::connect(proxy);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn malformed_answers_are_written_anew_or_refused() {
    let (addr, _) = raw_app(malformed);
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let logged = format!(
        "[access_log]\nenabled = true\npath = \"{}\"\n{}",
        log_path.display(),
        sites(&addr, &["shop"])
    );
    let proxy = proxy_with(&logged, "");
    // bare LFs: passed on with CRLFs only
    let a = raw_answer(&proxy, "/bare-lf");
    assert!(
        a.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App: 1\r\n"),
        "{a:?}"
    );
    assert!(!a.replace("\r\n", "").contains('\n'), "{a:?}");
    // trailer fields never reach the client
    let a = raw_answer(&proxy, "/trailers");
    assert!(a.ends_with("2\r\nok\r\n0\r\n\r\n"), "{a:?}");
    for bad in ["Content-Length: 99", "s=1", "evil", "no colon"] {
        assert!(!a.contains(bad), "{bad} in {a:?}");
    }
    // a cookie is not set by an interim answer
    let a = raw_answer(&proxy, "/early-hints");
    assert!(
        a.starts_with("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200"),
        "{a:?}"
    );
    assert!(!a.contains("s=1"), "{a:?}");
    // what cannot be framed one way, or is too large: 502, one line
    for path in ["/chunk-junk", "/long-extension", "/huge-head"] {
        let a = raw_answer(&proxy, path);
        assert!(a.starts_with("HTTP/1.1 502"), "{path}: {a:?}");
        let body = a.split("\r\n\r\n").nth(1).unwrap_or("");
        assert_eq!(body.lines().count(), 1, "{path}: {body:?}");
    }
    let log = wait_for(10, "the access log lines", || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        (log.matches(" 502 ").count() >= 3).then_some(log)
    });
    assert!(log.contains("/huge-head"), "{log}");
}

/// Answers with the names of the fields it received, one per line.
fn echo_names(conn: TcpStream, _: &AtomicUsize) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        let mut body = vec![0u8; req.length()];
        r.read_exact(&mut body)?;
        let names: String = req.fields.iter().map(|(k, _)| format!("{k}\n")).collect();
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{names}",
            names.len()
        )?;
    }
    Ok(())
}

#[test]
fn inputs_nginx_refuses_are_refused_with_one_line_and_logged() {
    let (addr, _) = raw_app(echo_names);
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let logged = format!(
        "[access_log]\nenabled = true\npath = \"{}\"\n{}",
        log_path.display(),
        sites(&addr, &["shop"])
    );
    let proxy = proxy_with(&logged, "");
    let cases: Vec<(String, u16)> = [
        ("GET / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 0\u{a0}\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: \u{2003}0\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
        ("POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
        ("POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 18446744073709551615\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding:\tchunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("GET * HTTP/1.1\r\nHost: shop.test\r\n\r\n", 400),
        ("GET nothing HTTP/1.1\r\nHost: shop.test\r\n\r\n", 400),
        ("get / HTTP/1.1\r\nHost: shop.test\r\n\r\n", 400),
        ("GET https://shop.test/ HTTP/1.1\r\nHost: shop.test\r\n\r\n", 400),
        ("GET /a\0b HTTP/1.1\r\nHost: shop.test\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: shop.test\r\nHost: shop.test\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: shop.test evil\r\n\r\n", 400),
    ]
    .into_iter()
    .map(|(h, s)| (h.to_string(), s))
    .chain([(
        format!("{} / HTTP/1.1\r\nHost: shop.test\r\n\r\n", "A".repeat(20_000)),
        400,
    )])
    .collect();
    for (head, want) in &cases {
        let mut s = common::raw::connect(&proxy);
        s.write_all(head.as_bytes()).unwrap();
        let r = read_response(&mut s).unwrap_or_else(|e| panic!("{head:.60?}: {e}"));
        assert_eq!(r.status(), *want, "{head:.80?}: {}", r.text());
        assert_eq!(r.text().lines().count(), 1, "{head:.60?}: {}", r.text());
        assert!(r.text().starts_with(&want.to_string()), "{}", r.text());
    }
    let log = wait_for(10, "an access-log line per refusal", || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        (log.lines().count() >= cases.len()).then_some(log)
    });
    assert!(log.contains(" 501 "), "{log}");
    // field names with `_` never reach the app; the rest do
    let mut s = common::raw::connect(&proxy);
    s.write_all(
        b"GET /names HTTP/1.1\r\nHost: shop.test\r\nX_Forwarded_For: 6.6.6.6\r\n\
          Transfer_Encoding: chunked\r\nX_Slot_Name: staging\r\nX-Kept: 1\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status(), 200);
    let names = r.text();
    assert!(names.contains("x-kept\n"), "{names}");
    assert!(!names.contains('_'), "{names}");
}

/// Passes `Expect: 100-continue` on with a `100`, then takes the whole
/// body before it answers; counts the bodies it got whole.
fn takes_bodies(conn: TcpStream, whole: &AtomicUsize) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        if req.field("expect").is_some() {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut body = vec![0u8; req.length()];
        r.read_exact(&mut body)?;
        if !body.is_empty() {
            whole.fetch_add(1, Ordering::SeqCst);
        }
        out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")?;
    }
    Ok(())
}

#[test]
fn a_body_trickled_after_its_100_is_cut_off_at_the_minimum_rate() {
    let (addr, whole) = raw_app(takes_bodies);
    // the pause between bytes (300 ms) never reaches the body or read
    // time-outs: only the mean rate (default 240 bytes/s) ends it
    let proxy = proxy_with(
        &sites(&addr, &["shop"]),
        "upstream_read_timeout_secs = 2\nbody_timeout_secs = 2",
    );
    let mut s = common::raw::connect(&proxy);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: shop.test\r\ncontent-length: 1000\r\n\
          expect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut sent = 0;
    // a byte every 300 ms, reading between them; 1,000 bytes would take 5 min
    let answer = loop {
        match s.read(&mut buf) {
            Ok(0) => break String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break String::from_utf8_lossy(&got).into_owned(),
        }
        if String::from_utf8_lossy(&got).contains("\r\n\r\n408") {
            break String::from_utf8_lossy(&got).into_owned();
        }
        assert!(
            sent < 120,
            "still taking the body after {sent} bytes: {got:?}"
        );
        if String::from_utf8_lossy(&got).starts_with("HTTP/1.1 100") && s.write_all(b"x").is_ok() {
            sent += 1;
        }
    };
    assert!(
        answer.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{answer}"
    );
    assert!(answer.contains("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_min_bytes_per_sec"), "{answer}");
    assert_eq!(whole.load(Ordering::SeqCst), 0);
    // a body at a normal pace on the same proxy goes through
    let mut s = common::raw::connect(&proxy);
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: shop.test\r\ncontent-length: 5\r\n\r\nhello")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().status(), 200);
    assert_eq!(whole.load(Ordering::SeqCst), 1);
}
