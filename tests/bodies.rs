//! Request bodies end to end (docs/reference/protocols.md; issue 22): what the
//! client sends arrives whole at the app, framed one unambiguous way,
//! with raw sockets on the client side and a raw HTTP/1.1 app server that
//! tells what it received:
//!
//! - anything but `/early`: reads the body as framed (Content-Length, or
//!   chunked — noting any chunk extension or trailer it was sent), then
//!   answers `METHOD PATH framing length digest` (an FNV-1a digest of the
//!   body);
//! - `/early`: answers `413` at once, without reading the body, and
//!   closes, as an app refusing an upload does.
//!
//! Every request the app reads is counted (but the health checks' `GET /`),
//! so a test can say "the app saw nothing of it".

mod common;
use common::raw::{connect, read_head, read_response};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// FNV-1a, 64 bits: enough to tell a misplaced, lost or repeated byte.
fn digest(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
const FNV_START: u64 = 0xcbf29ce484222325;

struct BodyApp {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl BodyApp {
    fn start() -> BodyApp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &seen);
                });
            }
        });
        BodyApp { port, requests }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(conn: TcpStream, seen: &AtomicUsize) -> std::io::Result<()> {
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
        // the proxy's health checks ask for `/`; the tests never do
        if path != "/" {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        let (mut len, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        if path == "/early" {
            out.write_all(
                b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
            )?;
            return Ok(());
        }
        let (mut n, mut h) = (0usize, FNV_START);
        let framing = if chunked {
            // what the proxy sends must be plain chunks: any extension or
            // trailer reaching the app is reported
            let mut plain = true;
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                plain &= !size.contains(';') && size.ends_with("\r\n");
                let size = usize::from_str_radix(size.trim_end(), 16).unwrap_or(0);
                if size == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end)?;
                    plain &= end == "\r\n";
                    break;
                }
                let mut chunk = vec![0u8; size + 2];
                r.read_exact(&mut chunk)?;
                h = digest(&chunk[..size], h);
                n += size;
            }
            if plain {
                "chunked"
            } else {
                "chunked-with-extras"
            }
        } else {
            let mut left = len;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let k = r.read(&mut buf[..left.min(64 * 1024)])?;
                if k == 0 {
                    return Ok(());
                }
                h = digest(&buf[..k], h);
                left -= k;
                n += k;
            }
            "length"
        };
        let text = format!("{method} {path} {framing} {n} {h:016x}");
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        )?;
    }
}

fn site(app: &BodyApp) -> String {
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["{}"]
"#,
        app.addr()
    )
}

/// `n` bytes that tell a misplaced or repeated byte from the right one.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn expect(method: &str, path: &str, framing: &str, body: &[u8]) -> String {
    let h = digest(body, FNV_START);
    format!("{method} {path} {framing} {} {h:016x}", body.len())
}

/// Chunk `data` in uneven chunks, with extensions and a trailer the proxy
/// must not pass on.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut size = 1;
    while !rest.is_empty() {
        let n = size.min(rest.len());
        write!(out, "{n:x};ext=\"v\"\r\n").unwrap();
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        size = size * 3 + 1;
    }
    out.extend_from_slice(b"0\r\nX-Trailer: dropped\r\n\r\n");
    out
}

#[test]
fn a_50_mb_upload_and_a_chunked_one_arrive_whole_on_one_connection() {
    let app = BodyApp::start();
    let proxy = Proxy::start(&site(&app));
    let mut s = connect(&proxy);
    let big = payload(50 * 1024 * 1024);
    write!(
        s,
        "PUT /big HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .unwrap();
    // in pieces, as a client streams a file
    for part in big.chunks(1 << 20) {
        s.write_all(part).unwrap();
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.text(), expect("PUT", "/big", "length", &big));

    // the same connection: a chunked body with extensions and a trailer,
    // framed anew for the app without either
    let data = payload(5 * 1024 * 1024 + 17);
    s.write_all(b"POST /chunked HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for part in chunked(&data).chunks(100_000) {
        s.write_all(part).unwrap();
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.text(), expect("POST", "/chunked", "chunked", &data));
    assert_ne!(r.header("connection"), Some("close"), "{}", r.head);
}

#[test]
fn requests_pipelined_behind_bodies_are_answered_in_order() {
    let app = BodyApp::start();
    let proxy = Proxy::start(&site(&app));
    let mut s = connect(&proxy);
    let mut all = Vec::new();
    all.extend_from_slice(b"POST /a HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\r\nhello");
    all.extend_from_slice(
        b"POST /b HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    all.extend_from_slice(&chunked(b"chunked body"));
    all.extend_from_slice(b"GET /c HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    s.write_all(&all).unwrap();
    for want in [
        expect("POST", "/a", "length", b"hello"),
        expect("POST", "/b", "chunked", b"chunked body"),
        expect("GET", "/c", "length", b""),
    ] {
        assert_eq!(read_response(&mut s).unwrap().text(), want);
    }
}

#[test]
fn a_malformed_chunked_body_is_400_and_nothing_of_it_reaches_the_app() {
    let app = BodyApp::start();
    let proxy = Proxy::start(&site(&app));
    for bad in [
        // a bare LF after the size: a lenient parser reads other chunks
        &b"5\nhello\r\n0\r\n\r\n"[..],
        // data longer than its size, hiding a request
        b"3\r\nabcGET /smuggled HTTP/1.1\r\nHost: shop.test\r\n\r\n\r\n0\r\n\r\n",
        // a size that overflows 64 bits
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut s = connect(&proxy);
        let mut req =
            b"POST /x HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(bad);
        s.write_all(&req).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(
            r.status(),
            400,
            "{:?}: {}",
            String::from_utf8_lossy(bad),
            r.head
        );
        assert!(r.text().starts_with("400 Bad Request: "), "{}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    }
    assert_eq!(app.requests(), 0, "the app was sent a request");
    let text = scrape(&proxy);
    let series = r#"slotproxy_requests_total{code="400",site="shop",slot="production"}"#;
    assert_eq!(value(&text, series), 3.0, "{text}");
}

#[test]
fn an_app_that_refuses_the_body_early_is_answered_through_not_a_502() {
    let app = BodyApp::start();
    let proxy = Proxy::start(&site(&app));
    let mut s = connect(&proxy);
    // the client announces 20 MB but the app answers after the header
    s.write_all(b"POST /early HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 20000000\r\n\r\n")
        .unwrap();
    let sender = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let part = vec![b'x'; 1 << 16];
            // stops when the proxy closes the connection
            for _ in 0..300 {
                if s.write_all(&part).is_err() {
                    break;
                }
            }
        })
    };
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status(), 413, "{}", r.head);
    assert_eq!(r.text(), "too large");
    // the rest of the body is not read: the connection ends after it
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    let _ = sender.join();
}

#[test]
fn expect_100_continue_waits_for_the_apps_word_and_an_early_refusal_is_passed_on() {
    let app = BodyApp::start();
    let proxy = Proxy::start(&site(&app));
    // the app refuses before any 100: the client sends no body at all
    let mut s = connect(&proxy);
    s.write_all(
        b"POST /early HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut s).unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // a request for an unknown host is answered without its body being
    // read, and the connection closes after it (the client may send it)
    let mut s = connect(&proxy);
    s.write_all(
        b"PUT /x HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status(), 404, "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}
