//! End-to-end protocol behaviour (README, "Protocols"; SPEC §12): the
//! HTTP/1 edge cases nginx gets right, with raw sockets on the client side
//! (a well-behaved client library hides exactly what is tested here) and a
//! raw HTTP/1.1 app server that answers by path:
//!
//! - `/chunked/<n>`: `n` bytes in a chunked body, in 3 chunks;
//! - `/early`: a `103 Early Hints` interim response, then 200;
//! - `/slow/<ms>`: answers after `ms` milliseconds;
//! - anything else: 200 with the method, path and body length as its body.
//!
//! It reads `Expect: 100-continue` requests as a real server does: it sends
//! `100 Continue` before reading the body.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

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
        if path == "/early" {
            out.write_all(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")?;
            out.flush()?;
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        }
        let text = format!("{method} {path} {}", body.len());
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{text}",
            text.len()
        )?;
    }
}

/// `n` bytes that tell a misplaced or repeated chunk from the right one.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A site whose production and staging (50%) both run on `app`, so new
/// visitors get a pin cookie.
fn site(app: &RawApp) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{a}"]
[[sites.slots]]
name = "staging"
build_version = "v2"
instances = ["{a}"]
traffic_percent = 50
"#,
        a = app.addr()
    )
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One response as read off the wire: the raw head, and the body as
/// framed by Content-Length (None: read to the close).
struct Response {
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn read_head(s: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Read one response whose body has a Content-Length (or none, to close).
fn read_response(s: &mut TcpStream) -> std::io::Result<Response> {
    let head = read_head(s)?;
    let mut r = Response {
        head,
        body: Vec::new(),
    };
    match r.header("content-length").map(|v| v.parse::<usize>().unwrap()) {
        Some(len) => {
            r.body.resize(len, 0);
            s.read_exact(&mut r.body)?;
        }
        None => {
            s.read_to_end(&mut r.body)?;
        }
    }
    Ok(r)
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
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        if version == "1.0" {
            assert!(!chunked, "HTTP/1.0 got a chunked answer:\n{head}");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, payload(30000), "the body is the app's bytes, unframed");
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
    assert!(early.to_ascii_lowercase().contains("link: </style.css>"), "{early}");
    assert!(
        !early.to_ascii_lowercase().contains("set-cookie"),
        "a 1xx response carried a cookie:\n{early}"
    );
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.header("set-cookie").is_some_and(|c| c.starts_with("x-ms-routing-name=")),
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
