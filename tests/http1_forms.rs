//! HTTP/1 requests in the forms clients send besides the plain one
//! (README, "Protocols"; issue 22): HTTP/1.0 (ApacheBench, old health
//! checkers), absolute targets, bare-LF lines, hop-by-hop fields, `OPTIONS
//! *` — written anew by `head_rewrite` and served by the one request
//! engine — and the forms refused with one line (CONNECT, more than 128
//! fields, an unknown expectation). A raw app echoes the request header
//! exactly as it arrived, so what the app reads is checked byte for byte.

mod common;
use common::raw::{connect, read_head, read_response};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// An app that answers each request with the raw header it received as
/// the body: chunked for `/chunked`, delimited by closing for `/close`,
/// with a Content-Length otherwise (and `ok` for the health check on `/`).
fn echo_app() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

fn serve(conn: TcpStream) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let length = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        r.read_exact(&mut body)?;
        let path = text.split(' ').nth(1).unwrap_or("");
        if path == "/" {
            out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")?;
        } else if path == "/chunked" {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{text}\r\n0\r\n\r\n",
                text.len()
            )?;
        } else if path == "/close" {
            write!(out, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{text}")?;
            return Ok(());
        } else {
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            )?;
        }
    }
}

fn proxy() -> Proxy {
    let addr = echo_app();
    Proxy::start(&format!(
        r#"
[[sites]]
name = "app"
hostnames = ["app.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["{addr}"]
"#
    ))
}

/// What the app read for `request`, and the response's head.
fn ask(proxy: &Proxy, request: &str) -> (String, String) {
    let mut s = connect(proxy);
    s.write_all(request.as_bytes()).unwrap();
    let r = read_response(&mut s).unwrap();
    (r.text(), r.head)
}

/// The app's view without the fields the proxy adds.
fn as_app_saw(echo: &str) -> String {
    echo.split_inclusive('\n')
        .filter(|l| !l.starts_with("x-forwarded-") && !l.starts_with("x-slot-name"))
        .collect()
}

#[test]
fn an_http10_client_gets_bodies_it_can_frame_and_keep_alive_when_it_asks() {
    let proxy = proxy();
    // no keep-alive asked for: the app gets HTTP/1.1 closing; a chunked
    // answer reaches the client bare, delimited by the close
    let mut s = connect(&proxy);
    s.write_all(b"GET /chunked HTTP/1.0\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s).unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    let body = String::from_utf8(body).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(
        as_app_saw(&body),
        "GET /chunked HTTP/1.1\r\nhost: app.test\r\n\r\n"
    );
    // one delimited by the app's close, likewise
    let mut s = connect(&proxy);
    s.write_all(b"GET /close HTTP/1.0\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let head = read_head(&mut s).unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(String::from_utf8(body)
        .unwrap()
        .starts_with("GET /close HTTP/1.1\r\n"));
    // keep-alive asked for: answers with a length say keep-alive, and the
    // connection takes the next request (ApacheBench -k)
    let mut s = connect(&proxy);
    for i in 0..3 {
        write!(
            s,
            "GET /k{i} HTTP/1.0\r\nHost: app.test\r\nConnection: Keep-Alive\r\n\r\n"
        )
        .unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
        assert!(r.text().starts_with(&format!("GET /k{i} HTTP/1.1\r\n")));
    }
    // the proxy's own answers too
    write!(
        s,
        "GET / HTTP/1.0\r\nHost: nowhere.test\r\nConnection: keep-alive\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.header("connection"), Some("keep-alive"), "{}", r.head);
    // no interim answer for an HTTP/1.0 client, whose Expect is ignored
    let (echo, head) = ask(
        &proxy,
        "POST /e HTTP/1.0\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!echo.to_ascii_lowercase().contains("expect"), "{echo}");
}

#[test]
fn absolute_targets_bare_lfs_and_hop_by_hop_fields_reach_the_app_in_plain_form() {
    let proxy = proxy();
    let (echo, _) = ask(
        &proxy,
        "GET http://app.test/p?q=1 HTTP/1.1\r\nHost: other.test\r\nX-Kept: 1\r\n\r\n",
    );
    assert_eq!(
        as_app_saw(&echo),
        "GET /p?q=1 HTTP/1.1\r\nhost: app.test\r\nX-Kept: 1\r\n\r\n"
    );
    // bare LFs: every line reaches the app with CRLF
    let (echo, _) = ask(&proxy, "GET /lf HTTP/1.1\nHost: app.test\nX-A: 1\n\n");
    assert!(
        echo.starts_with("GET /lf HTTP/1.1\r\nhost: app.test\r\nX-A: 1\r\n"),
        "{echo:?}"
    );
    assert!(!echo.replace("\r\n", "").contains('\n'), "{echo:?}");
    // the fields Connection names, TE, Proxy-*, and an h2c upgrade stay behind
    let (echo, head) = ask(
        &proxy,
        "GET /hop HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Secret, Upgrade, HTTP2-Settings\r\n\
         X-Secret: 1\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Kept: 2\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        as_app_saw(&echo),
        "GET /hop HTTP/1.1\r\nhost: app.test\r\nX-Kept: 2\r\n\r\n"
    );
    // OPTIONS * goes on as it came
    let (echo, _) = ask(&proxy, "OPTIONS * HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert!(echo.starts_with("OPTIONS * HTTP/1.1\r\n"), "{echo}");
}

#[test]
fn forms_a_reverse_proxy_does_not_serve_are_refused_with_one_line() {
    let proxy = proxy();
    let many: String = (0..130).map(|i| format!("X-{i}: v\r\n")).collect();
    for (request, status) in [
        (
            "CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n".to_string(),
            405,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: app.test\r\n{many}\r\n"),
            431,
        ),
        (
            "PUT /x HTTP/1.1\r\nHost: app.test\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx"
                .to_string(),
            417,
        ),
        (
            "GET http://u:p@app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n".to_string(),
            400,
        ),
    ] {
        let mut s = connect(&proxy);
        s.write_all(request.as_bytes()).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status(), status, "{request:.40?}: {}", r.text());
        assert_eq!(r.text().lines().count(), 1, "{}", r.text());
    }
}
