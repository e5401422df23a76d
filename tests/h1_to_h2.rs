//! HTTP/1 clients of a slot whose instances speak only HTTP/2 (README,
//! "Protocols"; issue 22): served by the one request engine and carried
//! over the instance's HTTP/2 connection (`src/edge/h1_h2.rs`). A real h2c
//! app (the `h2` crate's server) answers each request with what it saw;
//! the client is a raw socket, so framing is checked on the wire.

mod common;
use common::raw::{connect, read_head, read_response};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;

/// An h2c app on its own runtime: each request answered with its method,
/// target, fields and body length as the body. `/stream`: the body in
/// three DATA frames without a length, then trailers `x-done: yes`;
/// `/flaky`: every other stream refused (`REFUSED_STREAM`, counted in
/// [`REFUSED`]), as an app at its stream limit does; anything else with a
/// `content-length`.
fn h2c_app() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        tokio::spawn(answer(req, respond));
                    }
                });
            }
        });
    });
    port
}

static REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static FLAKY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
) {
    let (parts, mut body) = req.into_parts();
    let mut length = 0;
    while let Some(Ok(data)) = body.data().await {
        length += data.len();
        let _ = body.flow_control().release_capacity(data.len());
    }
    let mut text = format!("{} {}\n", parts.method, parts.uri);
    for (k, v) in &parts.headers {
        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    text.push_str(&format!("body: {length}\n"));
    if parts.uri.path() == "/flaky" && FLAKY.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
        REFUSED.fetch_add(1, Ordering::SeqCst);
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    if parts.uri.path() == "/stream" {
        let head = http::Response::builder().status(200).body(()).unwrap();
        let Ok(mut tx) = respond.send_response(head, false) else {
            return;
        };
        for part in [&text[..], "second\n", "third\n"] {
            let _ = tx.send_data(bytes::Bytes::from(part.to_string()), false);
        }
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-done", "yes".parse().unwrap());
        let _ = tx.send_trailers(trailers);
        return;
    }
    let head = http::Response::builder()
        .status(if parts.uri.path() == "/" { 200 } else { 201 })
        .header("content-length", text.len())
        .body(())
        .unwrap();
    if let Ok(mut tx) = respond.send_response(head, false) {
        let _ = tx.send_data(bytes::Bytes::from(text), true);
    }
}

fn proxy(port: u16) -> Proxy {
    Proxy::start(&format!(
        r#"
[[sites]]
name = "app"
hostnames = ["app.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["127.0.0.1:{port}"]
instances_protocol = "h2c"
"#
    ))
}

/// A chunked body off the wire: its data and its trailer lines.
fn read_chunked(s: &mut TcpStream) -> (String, String) {
    let mut r = BufReader::new(s);
    let mut data = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim_end(), 16).expect("a chunk size line");
        if size == 0 {
            break;
        }
        let mut chunk = vec![0u8; size + 2];
        r.read_exact(&mut chunk).unwrap();
        assert!(chunk.ends_with(b"\r\n"));
        data.extend_from_slice(&chunk[..size]);
    }
    let mut trailers = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        trailers.push_str(&line);
    }
    (String::from_utf8(data).unwrap(), trailers)
}

#[test]
fn http1_clients_reach_an_h2c_instance_with_bodies_trailers_and_keep_alive() {
    let port = h2c_app();
    let proxy = proxy(port);
    wait_for(20, "the h2c instance to be up", || {
        (get(&proxy, "app.test", "/", &[]).status == 200).then_some(())
    });
    let mut s = connect(&proxy);
    // a GET: the app sees an HTTP/2 request with the forwarded fields and
    // none of the HTTP/1 connection's own
    s.write_all(
        b"GET /a?b=1 HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive\r\nX-Kept: 1\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status(), 201, "{}", r.text());
    let seen = r.text();
    assert!(seen.starts_with("GET http://app.test/a?b=1\n"), "{seen}");
    for line in [
        "x-kept: 1\n",
        "x-forwarded-for: 127.0.0.1\n",
        "x-slot-name: production\n",
        "body: 0\n",
    ] {
        assert!(seen.contains(line), "{line:?} in {seen}");
    }
    assert!(!seen.contains("connection:"), "{seen}");
    assert!(r.header("set-cookie").is_some(), "{}", r.head);
    // a chunked upload on the same connection, and one with a length
    // after a 100-continue
    s.write_all(b"POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert!(r.text().contains("body: 11\n"), "{}", r.text());
    let big = vec![b'x'; 300_000];
    write!(
        s,
        "PUT /big HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .unwrap();
    let interim = read_head(&mut s).unwrap();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    s.write_all(&big).unwrap();
    let r = read_response(&mut s).unwrap();
    assert!(r.text().contains("body: 300000\n"), "{}", r.text());
    assert!(!r.text().contains("expect"), "{}", r.text());
    // no length from the app: chunked, with its trailers
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let (data, trailers) = read_chunked(&mut s);
    assert!(
        data.starts_with("GET http://app.test/stream\n") && data.ends_with("second\nthird\n"),
        "{data}"
    );
    assert_eq!(trailers, "x-done: yes\r\n");
    // and the connection still serves
    s.write_all(b"HEAD /h HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s).unwrap();
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    // an HTTP/1.0 client gets the unlengthed body bare, to the close
    let mut s = connect(&proxy);
    s.write_all(b"GET /stream HTTP/1.0\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s).unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.ends_with("second\nthird\n"), "{rest}");
}

#[test]
fn a_stream_the_instance_refused_goes_again_for_http1_and_http2_clients() {
    let port = h2c_app();
    let proxy = proxy(port);
    wait_for(20, "the h2c instance to be up", || {
        (get(&proxy, "app.test", "/", &[]).status == 200).then_some(())
    });
    // HTTP/1 clients (edge/h1_h2.rs): every request answered, though the
    // app refused every other stream
    for i in 0..6 {
        let r = get(&proxy, "app.test", "/flaky", &[]);
        assert_eq!(r.status, 200 + 1, "request {i}: {}", r.body);
    }
    assert!(
        REFUSED.load(Ordering::SeqCst) >= 6,
        "the app refused no stream"
    );
    // HTTP/2 clients (edge/h2_upstream.rs) likewise
    let before = REFUSED.load(Ordering::SeqCst);
    let client = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for i in 0..6 {
        let r = client
            .get(format!("http://127.0.0.1:{}/flaky", proxy.port))
            .header("host", "app.test")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "HTTP/2 request {i}");
    }
    assert!(REFUSED.load(Ordering::SeqCst) >= before + 6);
}
