//! HTTP/2 clients end to end on slotproxy's own HTTP/2 front end (docs/
//! reference/protocols.md; `src/edge/`), over TLS with ALPN `h2` and over h2c with
//! prior knowledge: each stream routed, pinned and logged as an HTTP/1
//! request, the opt-in link, 431 for an oversized header list, GOAWAY when
//! the drain begins, a 10 MB upload checksummed by the app, 100 concurrent
//! streams on one connection.
//!
//! The app is a raw HTTP/1.1 server in a thread per connection: it reads
//! the body (Content-Length or chunked) and answers `METHOD PATH LEN SUM`
//! (SUM: FNV-1a of the body), the slot the proxy named in `x-seen-slot`;
//! `/slow/<ms>` answers after `ms` milliseconds; `/chunked` answers in
//! chunks, `/close` with a body that ends when it closes.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// FNV-1a, 64 bits: what the app and the test agree a body hashes to.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn start_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(conn);
            });
        }
    });
    port
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
        let (mut len, mut chunked, mut slot) = (0usize, false, String::from("-"));
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
                "transfer-encoding" => chunked = v.contains("chunked"),
                "x-slot-name" => slot = v.trim().to_string(),
                _ => {}
            }
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
        if path == "/chunked" {
            // three chunks with an extension, then a trailer field
            out.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")?;
            out.write_all(b"5;x=y\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nt: v\r\n\r\n")?;
            continue;
        }
        if path == "/close" {
            // no length: the body ends when the app closes
            out.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the close")?;
            return Ok(());
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
        }
        let text = format!("{method} {path} {} {:x}", body.len(), fnv(&body));
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-seen-slot: {slot}\r\n\r\n{text}",
            text.len()
        )?;
        out.flush()?;
    }
}

fn sites(prod: u16, staging: u16, log: &std::path::Path) -> String {
    format!(
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
instances = ["127.0.0.1:{prod}"]
[[sites.slots]]
name = "staging"
traffic_percent = 50
instances = ["127.0.0.1:{staging}"]
"#,
        log = log.display()
    )
}

/// A proxy with a TLS listener too and `server_keys` in `[server]`;
/// returns it and the TLS port.
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

/// Both ways in: (base URL, client) over TLS by ALPN and over h2c.
fn clients(proxy: &Proxy, tls_port: u16) -> Vec<(String, reqwest::blocking::Client)> {
    let make = |port: u16, tls: bool| {
        let b = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .resolve("shop.test", ([127, 0, 0, 1], port).into());
        if tls {
            b.danger_accept_invalid_certs(true)
        } else {
            b.http2_prior_knowledge()
        }
        .build()
        .unwrap()
    };
    vec![
        (
            format!("https://shop.test:{tls_port}"),
            make(tls_port, true),
        ),
        (
            format!("http://shop.test:{}", proxy.port),
            make(proxy.port, false),
        ),
    ]
}

#[test]
fn streams_are_pinned_opted_in_logged_and_counted_like_http1_requests() {
    let (prod, staging) = (start_app(), start_app());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (proxy, tls_port) = proxy_with_tls(&sites(prod, staging, &log), "");
    let mut sent = 0;
    for (base, c) in clients(&proxy, tls_port) {
        // a new visitor is bucketed and gets the pin cookie
        let r = c.get(format!("{base}/first")).send().unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status().as_u16(), 200);
        let slot = r.headers()["x-seen-slot"].to_str().unwrap().to_string();
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("x-ms-routing-name="), "{cookie}");
        let pin = cookie.split(';').next().unwrap().to_string();
        assert_eq!(r.text().unwrap(), format!("GET /first 0 {:x}", fnv(b"")));
        // the pin holds, with no new cookie
        for i in 0..10 {
            let r = c
                .get(format!("{base}/again/{i}"))
                .header("cookie", pin.as_str())
                .send()
                .unwrap();
            assert_eq!(r.headers()["x-seen-slot"], slot.as_str(), "the pin holds");
            assert!(r.headers().get("set-cookie").is_none());
        }
        // the opt-in link sets the slot and pins it
        let r = c
            .get(format!("{base}/link?x-ms-routing-name=staging"))
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-seen-slot"], "staging");
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        assert!(cookie.starts_with("x-ms-routing-name=staging;"), "{cookie}");
        let r = c
            .get(format!("{base}/after"))
            .header("cookie", "x-ms-routing-name=staging")
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-seen-slot"], "staging");
        // every framing of the app's answer reaches the client whole
        let r = c.get(format!("{base}/chunked")).send().unwrap();
        assert_eq!(r.text().unwrap(), "hello world");
        let r = c.get(format!("{base}/close")).send().unwrap();
        assert_eq!(r.text().unwrap(), "until the close");
        // an unknown host is the proxy's own 404, logged as well
        let r = c
            .get(format!("{base}/"))
            .header("host", "nowhere.test")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        assert!(r.text().unwrap().contains("no site is configured"));
        sent += 16;
    }
    // one access-log line per stream, protocol HTTP/2.0
    let lines: Vec<serde_json::Value> = wait_for(10, "an access-log line per stream", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= sent).then_some(lines)
    });
    assert_eq!(lines.len(), sent);
    assert!(
        lines.iter().all(|l| l["protocol"] == "HTTP/2.0"),
        "{lines:#?}"
    );
    let link = lines
        .iter()
        .find(|l| l["path"] == "/link?x-ms-routing-name=staging")
        .unwrap();
    assert_eq!(
        (&link["slot"], &link["status"]),
        (&"staging".into(), &200.into())
    );
    assert!(lines.iter().any(|l| l["status"] == 404 && l["site"] == "-"));
    let text = scrape(&proxy);
    assert_eq!(
        value(
            &text,
            r#"slotproxy_requests_by_protocol_total{protocol="HTTP/2.0"}"#
        ),
        sent as f64,
        "{text}"
    );
}

#[test]
fn an_oversized_header_list_gets_431_and_a_10_mb_upload_arrives_whole() {
    let (prod, staging) = (start_app(), start_app());
    let dir = tempfile::tempdir().unwrap();
    let sites = sites(prod, staging, &dir.path().join("access.log"));
    let (proxy, tls_port) = proxy_with_tls(&sites, "max_header_bytes = 4096\nmax_uri_bytes = 1024");
    let upload: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for (base, c) in clients(&proxy, tls_port) {
        let r = c
            .get(format!("{base}/big"))
            .header("x-big", "a".repeat(8000))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 431, "{base}");
        // the connection goes on
        assert_eq!(c.get(format!("{base}/ok")).send().unwrap().status(), 200);
        // with a length, and without one (chunked to the app)
        let r = c
            .post(format!("{base}/up"))
            .body(upload.clone())
            .send()
            .unwrap();
        assert_eq!(
            r.text().unwrap(),
            format!("POST /up {} {:x}", upload.len(), fnv(&upload))
        );
        let stream = std::io::Cursor::new(upload.clone());
        let r = c
            .post(format!("{base}/streamed"))
            .body(reqwest::blocking::Body::new(stream))
            .send()
            .unwrap();
        assert_eq!(
            r.text().unwrap(),
            format!("POST /streamed {} {:x}", upload.len(), fnv(&upload))
        );
    }
}

/// An h2c connection to the proxy with the `h2` crate: the request sender,
/// and the connection's task (it ends when the proxy closes it).
async fn h2c(
    port: u16,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

/// GET `path` on `send`; the status and body.
async fn h2_get(send: &mut h2::client::SendRequest<bytes::Bytes>, path: &str) -> (u16, String) {
    h2_try_get(send, path).await.unwrap()
}

/// [`h2_get`], or the stream's error (a connection told to go away may
/// refuse a stream sent as the GOAWAY crossed it: a client sends it again).
async fn h2_try_get(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    path: &str,
) -> Result<(u16, String), h2::Error> {
    let req = http::Request::get(format!("http://shop.test{path}"))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true)?;
    let resp = resp.await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(d) = body.data().await {
        let d = d?;
        let _ = body.flow_control().release_capacity(d.len());
        text.extend_from_slice(&d);
    }
    Ok((status, String::from_utf8(text).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_streams_on_one_connection_are_all_answered_right() {
    let (prod, staging) = (start_app(), start_app());
    let dir = tempfile::tempdir().unwrap();
    let sites = sites(prod, staging, &dir.path().join("access.log"));
    let proxy = tokio::task::block_in_place(|| Proxy::start(&sites));
    let (send, _task) = h2c(proxy.port).await;
    let mut send = send.ready().await.unwrap();
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let mut send = send.clone();
            tokio::spawn(async move { (i, h2_get(&mut send, &format!("/slow/50?n={i}")).await) })
        })
        .collect();
    for call in calls {
        let (i, (status, body)) = call.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, format!("GET /slow/50?n={i} 0 {:x}", fnv(b"")));
    }
    assert_eq!(h2_get(&mut send, "/last").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_sends_goaway_and_clients_move_to_a_new_connection() {
    let (prod, staging) = (start_app(), start_app());
    let dir = tempfile::tempdir().unwrap();
    let sites = sites(prod, staging, &dir.path().join("access.log"));
    let mut proxy = tokio::task::block_in_place(|| {
        Proxy::start_edited(&sites, 4, |t| {
            t.replacen("[server]\n", "[server]\ndrain_secs = 30\n", 1)
        })
    });
    let (send, task) = h2c(proxy.port).await;
    let mut send = send.ready().await.unwrap();
    assert_eq!(h2_get(&mut send, "/before").await.0, 200);
    // a request in flight when the drain begins is answered
    let mut in_flight = send.clone();
    let slow = tokio::spawn(async move { h2_get(&mut in_flight, "/slow/1500").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old = tokio::task::block_in_place(|| proxy.upgrade());
    // GOAWAY: the old process closes the connection once the slow stream
    // is done, long before its 30 s drain window ends
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the connection was told to go away during the drain")
        .unwrap();
    let alive = unsafe { libc::kill(old as i32, 0) } == 0;
    assert!(alive, "the old process is still draining: GOAWAY, not exit");
    assert_eq!(slow.await.unwrap().0, 200, "the stream in flight completed");
    let req = http::Request::get("http://shop.test/late")
        .body(())
        .unwrap();
    assert!(
        send.send_request(req, true).is_err(),
        "the old connection takes no new stream"
    );
    // a new connection is served (by the new process)
    let fresh = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (send, _task) = h2c(proxy.port).await;
            if let Ok(mut send) = send.ready().await {
                if let Ok(got) = h2_try_get(&mut send, "/after").await {
                    if got.0 == 200 {
                        return got;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a new connection answered");
    assert!(fresh.1.starts_with("GET /after 0"));
    tokio::task::block_in_place(|| proxy.kill());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408() {
    let (prod, staging) = (start_app(), start_app());
    let dir = tempfile::tempdir().unwrap();
    let sites = sites(prod, staging, &dir.path().join("access.log"));
    let proxy = tokio::task::block_in_place(|| {
        Proxy::start_edited(&sites, 1, |t| {
            t.replacen("threads = 1\n", "threads = 1\nbody_timeout_secs = 1\n", 1)
        })
    });
    let (send, _task) = h2c(proxy.port).await;
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post("http://shop.test/upload")
        .header("content-length", "10")
        .body(())
        .unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"abc"), false)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), resp)
        .await
        .expect("an answer to the stalled body")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 408);
    // counted as the client's 408, whichever slot the visitor landed on
    let series =
        |slot: &str| format!(r#"slotproxy_requests_total{{code="408",site="shop",slot="{slot}"}}"#);
    tokio::task::block_in_place(|| {
        wait_for(10, "the 408 to be counted", || {
            let text = scrape(&proxy);
            let n: f64 = ["production", "staging"]
                .iter()
                .filter_map(|s| sample(&text, &series(s)))
                .sum();
            (n == 1.0).then_some(())
        })
    });
}
