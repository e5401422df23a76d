//! End-to-end downstream limits (docs/reference/limits.md): what one hostile or
//! broken client can cost. Raw sockets, because a well-behaved HTTP client
//! cannot hold a header half-sent or a body short.

mod common;
use common::raw::connect;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn site(app: &App) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{}"]
"#,
        app.addr()
    )
}

/// Start a proxy in front of `app` with extra `[server]` keys.
fn proxy_with(app: &App, server_keys: &str) -> Proxy {
    let keys = server_keys.to_string();
    Proxy::start_edited(&site(app), 1, move |t| {
        t.replacen("threads = 1", &format!("threads = 1\n{keys}"), 1)
    })
}

/// A connection from another loopback address, so per-client limits can
/// tell it from the test's normal client on 127.0.0.1.
fn connect_from(source: &str, proxy: &Proxy) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&from.into())?;
    let to: SocketAddr = format!("127.0.0.1:{}", proxy.port).parse().unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Read one response: (status, body). Errors if the connection ends first.
fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, String)> {
    common::raw::read_response(s).map(|r| (r.status(), r.text()))
}

/// Whether the peer has closed: a read returns EOF or a reset. A read that
/// times out (the socket's read time-out) means the connection is still
/// open, so this is false.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n";

#[test]
fn idle_keepalive_connection_is_closed_after_the_timeout() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "keepalive_timeout_secs = 1");
    let mut s = connect(&proxy);
    s.write_all(GET).unwrap();
    let (status, _) = read_response(&mut s).unwrap();
    assert_eq!(status, 200);
    // the connection stays usable for a next request...
    s.write_all(GET).unwrap();
    assert_eq!(read_response(&mut s).unwrap().0, 200);
    // ...and is closed once idle (within the 10 s read time-out of
    // `connect`, or `closed` says it is still open)
    assert!(closed(&mut s), "the idle connection was not closed");
}

#[test]
fn oversized_header_gets_431_before_the_client_finishes() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "");
    let mut s = connect(&proxy);
    s.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\nCookie: ")
        .unwrap();
    // 40 KB of one cookie, never finished: above the 32 KB default
    s.write_all(&vec![b'a'; 40 * 1024]).unwrap();
    let (status, body) = read_response(&mut s).expect("an answer while the header is unfinished");
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("server.max_header_bytes"), "{body}");
    let text = scrape(&proxy);
    assert_eq!(
        value(
            &text,
            r#"slotproxy_requests_total{code="431",site="unknown",slot="unknown"}"#
        ),
        1.0
    );
}

#[test]
fn long_uri_gets_414() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "max_uri_bytes = 1000");
    let mut s = connect(&proxy);
    let uri = format!("/{}", "u".repeat(1000));
    write!(s, "GET {uri} HTTP/1.1\r\nHost: shop.test\r\n\r\n").unwrap();
    let (status, body) = read_response(&mut s).unwrap();
    assert_eq!(status, 414, "{body}");
    // just under the limit still reaches the app
    let mut s = connect(&proxy);
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        &uri[..1000]
    )
    .unwrap();
    assert_eq!(read_response(&mut s).unwrap().0, 200);
}

#[test]
fn unfinished_header_gets_408_after_the_header_timeout() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "header_timeout_secs = 1");
    let mut s = connect(&proxy);
    // a slow client: a byte at a time, never the blank line
    s.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
        .unwrap();
    let trickle = std::thread::spawn({
        let mut s = s.try_clone().unwrap();
        move || {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(100));
                if s.write_all(b"X").is_err() {
                    break;
                }
            }
        }
    });
    let (status, _) = read_response(&mut s).expect("408 before the trickle ends");
    assert_eq!(status, 408);
    trickle.join().unwrap();
}

#[test]
fn idle_connection_attack_does_not_fail_normal_traffic() {
    let app = App::start("v1");
    let proxy = proxy_with(
        &app,
        "max_connections = 60\nmax_connections_per_ip = 10\nkeepalive_timeout_secs = 30",
    );
    // The attacker on 127.0.0.2: connections that make one request, then hold.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let Ok(mut s) = connect_from("127.0.0.2", &proxy) else {
            refused += 1;
            continue;
        };
        match s.write_all(GET).and_then(|_| read_response(&mut s)) {
            Ok((200, _)) => held.push(s),
            _ => refused += 1,
        }
    }
    assert_eq!(held.len(), 10, "only max_connections_per_ip are admitted");
    assert_eq!(refused, 70);
    // Normal traffic, while the attacker holds its connections: no errors.
    let mut errors = 0;
    for _ in 0..100 {
        let a = get(&proxy, "shop.test", "/", &[]);
        if a.status != 200 {
            errors += 1;
        }
    }
    assert_eq!(errors, 0);
    let text = scrape(&proxy);
    assert_eq!(
        value(
            &text,
            r#"slotproxy_connections_refused_total{reason="max_connections_per_ip"}"#
        ),
        70.0
    );
    assert!(text.contains(r#"slotproxy_connections_refused_total{reason="max_connections"} 0"#));
    assert!(value(&text, "slotproxy_connections_open") >= 10.0, "{text}");
    drop(held);
}

#[test]
fn connections_beyond_max_connections_are_closed_at_once() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "max_connections = 5\nmax_connections_per_ip = 0");
    // connections yet to send their first request are not idle keep-alive
    // ones: none of them is closed to make room
    let mut held: Vec<TcpStream> = (0..5).map(|_| connect(&proxy)).collect();
    wait_for(10, "five connections to be admitted", || {
        (value(&scrape(&proxy), "slotproxy_connections_open") >= 5.0).then_some(())
    });
    let mut extra = connect(&proxy);
    let _ = extra.write_all(GET);
    assert!(closed(&mut extra), "the sixth connection was not closed");
    // once one closes, a new one is admitted
    held.pop();
    let ok = wait_for(10, "a connection slot to free", || {
        let mut s = connect(&proxy);
        s.write_all(GET).ok()?;
        read_response(&mut s).ok().filter(|r| r.0 == 200)
    });
    assert_eq!(ok.0, 200);
    let text = scrape(&proxy);
    assert!(
        value(
            &text,
            r#"slotproxy_connections_refused_total{reason="max_connections"}"#
        ) >= 1.0
    );
}

/// POST with `Content-Length: 100` and 2 bytes of body, then silence.
fn short_body(proxy: &Proxy) -> (u16, String) {
    let mut s = connect(proxy);
    s.write_all(b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 100\r\n\r\nab")
        .unwrap();
    read_response(&mut s).expect("an answer to the stalled body")
}

fn assert_client_error_not_upstream(proxy: &Proxy) {
    let text = scrape(proxy);
    assert_eq!(
        value(
            &text,
            r#"slotproxy_requests_total{code="408",site="shop",slot="production"}"#
        ),
        1.0,
        "{text}"
    );
    assert!(
        !text.contains(r#"slotproxy_requests_total{code="502""#),
        "{text}"
    );
    let upstream_errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("slotproxy_upstream_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(upstream_errors, 0.0, "{text}");
}

#[test]
fn short_body_is_408_and_a_client_error() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "body_timeout_secs = 1");
    let (status, body) = short_body(&proxy);
    assert_eq!(status, 408, "{body}");
    assert_client_error_not_upstream(&proxy);
}

#[test]
fn short_body_is_408_even_when_the_app_times_out_first() {
    // The app waits for the body the client never sends; its read time-out
    // fires first. Still the client's fault.
    let app = App::start("v1");
    let proxy = proxy_with(
        &app,
        "body_timeout_secs = 30\nupstream_read_timeout_secs = 1",
    );
    let (status, body) = short_body(&proxy);
    assert_eq!(status, 408, "{body}");
    assert_client_error_not_upstream(&proxy);
}

#[test]
fn at_max_connections_the_oldest_idle_connection_makes_room() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "max_connections = 20\nmax_connections_per_ip = 0");
    // 20 idle keep-alive connections from 127.0.0.2 take every place
    let mut idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect_from("127.0.0.2", &proxy).unwrap();
            s.write_all(GET).unwrap();
            assert_eq!(read_response(&mut s).unwrap().0, 200);
            s
        })
        .collect();
    // new clients are served all the same, and keep their connections:
    // each takes the place of the one that has idled longest — first all
    // of the old ones, then the new ones in the order they went idle
    let mut new: Vec<TcpStream> = (0..25)
        .map(|i| {
            let mut s = connect(&proxy);
            s.write_all(GET).unwrap();
            assert_eq!(read_response(&mut s).unwrap().0, 200, "client {i}");
            s
        })
        .collect();
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(closed(s), "old idle connection {i} is still open");
    }
    for (i, s) in new.iter_mut().enumerate().take(5) {
        assert!(closed(s), "new connection {i} is still open");
    }
    let mut newest = new.pop().unwrap();
    newest.write_all(GET).unwrap();
    assert_eq!(read_response(&mut newest).unwrap().0, 200);
    let text = scrape(&proxy);
    assert_eq!(
        value(&text, "slotproxy_connections_evicted_total"),
        25.0,
        "{text}"
    );
    assert!(text.contains(r#"slotproxy_connections_refused_total{reason="max_connections"} 0"#));
}

#[test]
fn one_address_cannot_take_every_connection_on_the_default_config() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "");
    // what the defaults came to on this machine (half the open-file limit;
    // a quarter of that, at least 64, per address)
    let log = wait_for(10, "the connection limits in the log", || {
        let log = proxy.log();
        log.contains("client connections").then_some(log)
    });
    let line = log
        .lines()
        .find(|l| l.contains("client connections"))
        .unwrap();
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let per_ip = *numbers.last().unwrap();
    assert!(per_ip < numbers[numbers.len() - 2], "{line}");
    if per_ip > 3000 {
        eprintln!("skipped: {per_ip} per address is more than this test opens");
        return;
    }
    // one address opens more than its share, each renewed by a request
    let mut held = Vec::new();
    for _ in 0..per_ip + 20 {
        let Ok(mut s) = connect_from("127.0.0.2", &proxy) else {
            continue;
        };
        if let Ok((200, _)) = s.write_all(GET).and_then(|_| read_response(&mut s)) {
            held.push(s);
        }
    }
    assert_eq!(held.len(), per_ip, "{line}");
    // everyone else: served
    for i in 0..50 {
        assert_eq!(
            get(&proxy, "shop.test", "/", &[]).status,
            200,
            "request {i}"
        );
    }
}

#[test]
fn at_max_connections_an_http2_connection_makes_room_too() {
    let app = App::start("v1");
    let proxy = proxy_with(&app, "max_connections = 4\nmax_connections_per_ip = 0");
    let port = proxy.port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // four h2c connections, one answered stream each, take every place
        let mut conns = Vec::new();
        for i in 0..4 {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
            let ended = tokio::spawn(conn);
            let req = http::Request::get("http://shop.test/").body(()).unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            assert_eq!(resp.await.unwrap().status(), 200, "h2c connection {i}");
            conns.push((send, ended));
        }
        // a new HTTP/1 client is served all the same: the HTTP/2
        // connection whose last stream began longest ago is told to go
        let status = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(GET).unwrap();
            read_response(&mut s).unwrap().0
        })
        .await
        .unwrap();
        assert_eq!(status, 200);
        // its handle kept: the client alone would not end it
        let (_kept, first) = conns.remove(0);
        tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .expect("the oldest HTTP/2 connection was closed")
            .unwrap()
            .ok();
        // the others still serve
        for (send, _) in &mut conns {
            let req = http::Request::get("http://shop.test/").body(()).unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            assert_eq!(resp.await.unwrap().status(), 200);
        }
    });
    let text = scrape(&proxy);
    assert_eq!(
        value(&text, "slotproxy_connections_evicted_total"),
        1.0,
        "{text}"
    );
}
