//! Zero-downtime operations: a graceful binary upgrade (`serve --upgrade`
//! plus SIGQUIT to the old process) and a SIGTERM drain, both under
//! continuous load from several client threads using keep-alive and fresh
//! connections. No request may fail and no connection may be refused.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Counts {
    ok: AtomicUsize,
    /// A fresh connection was refused.
    refused: AtomicUsize,
    /// A fresh connection failed (reset, EOF) or a response was cut short.
    broken: AtomicUsize,
    /// A response other than 200.
    bad_status: AtomicUsize,
    /// An idle keep-alive connection was closed by the server just as the
    /// next request went out (before any response byte); the request was
    /// retried on a new connection, as HTTP clients do (RFC 9112 §9.3.1).
    keepalive_retries: AtomicUsize,
}

impl Counts {
    fn show(&self) -> String {
        format!(
            "ok={} refused={} broken={} bad_status={} keepalive_retries={}",
            self.ok.load(SeqCst),
            self.refused.load(SeqCst),
            self.broken.load(SeqCst),
            self.bad_status.load(SeqCst),
            self.keepalive_retries.load(SeqCst)
        )
    }
}

enum Failure {
    /// Nothing of a response arrived on a reused connection.
    StaleKeepAlive,
    Refused,
    Broken(String),
}

/// One HTTP/1.1 GET on `conn` (opened if `None`). Returns the status and
/// whether the server keeps the connection open.
fn request(
    conn: &mut Option<BufReader<TcpStream>>,
    port: u16,
    host: &str,
    keep_alive: bool,
) -> Result<u16, Failure> {
    let reused = conn.is_some();
    if conn.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                Failure::Refused
            } else {
                Failure::Broken(format!("connect: {e}"))
            }
        })?;
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        *conn = Some(BufReader::new(s));
    }
    let c = conn.as_mut().unwrap();
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let req = format!("GET /load HTTP/1.1\r\nHost: {host}\r\n{close}\r\n");
    let stale = |e: String| {
        if reused {
            Failure::StaleKeepAlive
        } else {
            Failure::Broken(e)
        }
    };
    c.get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| stale(format!("write: {e}")))?;
    let mut status_line = String::new();
    match c.read_line(&mut status_line) {
        Ok(0) => return Err(stale("EOF before the response".into())),
        Ok(_) => {}
        Err(e) => return Err(stale(format!("read: {e}"))),
    }
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Broken(format!("bad status line {status_line:?}")))?;
    let (mut len, mut server_closes) = (None, !keep_alive);
    loop {
        let mut line = String::new();
        match c.read_line(&mut line) {
            Ok(0) => return Err(Failure::Broken("EOF in headers".into())),
            Err(e) => return Err(Failure::Broken(format!("headers: {e}"))),
            Ok(_) => {}
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length:") {
            len = v.trim().parse::<usize>().ok();
        }
        if line == "connection: close" {
            server_closes = true;
        }
    }
    let len = len.ok_or_else(|| Failure::Broken("no content-length".into()))?;
    let mut body = vec![0; len];
    c.read_exact(&mut body)
        .map_err(|e| Failure::Broken(format!("body: {e}")))?;
    if server_closes {
        *conn = None;
    }
    Ok(status)
}

/// A client thread sending requests until `stop`.
fn load(port: u16, keep_alive: bool, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut conn = None;
    while !stop.load(SeqCst) {
        let mut result = request(&mut conn, port, "shop.test", keep_alive);
        if let Err(Failure::StaleKeepAlive) = result {
            counts.keepalive_retries.fetch_add(1, SeqCst);
            conn = None;
            result = request(&mut conn, port, "shop.test", keep_alive);
        }
        match result {
            Ok(200) => {
                counts.ok.fetch_add(1, SeqCst);
            }
            Ok(other) => {
                eprintln!("status {other}");
                counts.bad_status.fetch_add(1, SeqCst);
            }
            Err(Failure::Refused) => {
                counts.refused.fetch_add(1, SeqCst);
                conn = None;
            }
            Err(Failure::Broken(e)) => {
                eprintln!("broken: {e}");
                counts.broken.fetch_add(1, SeqCst);
                conn = None;
            }
            Err(Failure::StaleKeepAlive) => {
                counts.broken.fetch_add(1, SeqCst);
                conn = None;
            }
        }
    }
}

/// An upstream that answers every request after `delay`, counting the
/// arrivals of the test's own requests (`/load`; the proxy's health probes
/// to `/` arrive too and must not be counted).
fn slow_upstream(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let arrived = Arc::new(AtomicUsize::new(0));
    let a = arrived.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let a = a.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut request_line = String::new();
                if r.read_line(&mut request_line).unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                if request_line.starts_with("GET /load ") {
                    a.fetch_add(1, SeqCst);
                }
                std::thread::sleep(delay);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nslow\n",
                );
            });
        }
    });
    (addr, arrived)
}

fn sites(prod: &[&App], slow: &str) -> String {
    let instances: Vec<String> = prod.iter().map(|a| format!("\"{}\"", a.addr())).collect();
    format!(
        r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = [{}]
[[sites]]
name = "slow"
hostnames = ["slow.test"]
[[sites.slots]]
name = "production"
instances = ["{slow}"]
"#,
        instances.join(", ")
    )
}

#[test]
fn upgrade_and_sigterm_drain_lose_no_request() {
    let (a, b) = (App::start("v1"), App::start("v1"));
    let delay = Duration::from_millis(1500);
    let (slow, arrived) = slow_upstream(delay);
    let mut proxy = Proxy::start_graceful(&sites(&[&a, &b], &slow), 4);

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let (stop, counts, port) = (stop.clone(), counts.clone(), proxy.port);
            std::thread::spawn(move || load(port, i % 2 == 0, stop, counts))
        })
        .collect();
    let ok_now = |counts: &Counts| counts.ok.load(SeqCst);
    wait_for(20, "load to flow", || (ok_now(&counts) > 200).then_some(()));

    // A slow request in flight on the old process across the upgrade.
    let slow_port = proxy.port;
    let across_upgrade = std::thread::spawn(move || {
        let mut c = None;
        request(&mut c, slow_port, "slow.test", false)
    });
    wait_for(10, "the slow request to reach the upstream", || {
        (arrived.load(SeqCst) == 1).then_some(())
    });

    let old_pid = proxy.upgrade();
    println!(
        "upgrade: SIGQUIT sent to {old_pid}, new process {}",
        proxy.pid()
    );
    // The old process hands over, drains and exits; load goes on meanwhile.
    proxy.wait_retired(60);
    let after_upgrade = ok_now(&counts);
    wait_for(20, "load to flow through the new process", || {
        (ok_now(&counts) > after_upgrade + 200).then_some(())
    });
    assert!(matches!(across_upgrade.join().unwrap(), Ok(200)));
    // The new process serves metrics once the old one released the port.
    wait_for(30, "the new process to serve /metrics", || {
        client()
            .get(format!("http://127.0.0.1:{}/metrics", proxy.metrics_port))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    println!("across the upgrade: {}", counts.show());

    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let c = &counts;
    assert_eq!(
        (
            c.refused.load(SeqCst),
            c.broken.load(SeqCst),
            c.bad_status.load(SeqCst)
        ),
        (0, 0, 0),
        "{}\n{}",
        c.show(),
        proxy.log()
    );

    // SIGTERM: requests in flight (on fresh and keep-alive connections)
    // finish within the grace period, then the process exits cleanly.
    let before = arrived.load(SeqCst);
    let slow_port = proxy.port;
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = None;
                request(&mut c, slow_port, "slow.test", true)
            })
        })
        .collect();
    wait_for(10, "the slow requests to reach the upstream", || {
        (arrived.load(SeqCst) == before + 3).then_some(())
    });
    proxy.signal(libc::SIGTERM);
    let drained: Vec<_> = in_flight.into_iter().map(|t| t.join().unwrap()).collect();
    let served = drained.iter().filter(|r| matches!(r, Ok(200))).count();
    println!("SIGTERM drain: {served} of 3 slow requests in flight completed");
    assert_eq!(served, 3, "{}", proxy.log());
    let status = proxy.wait_exit(30);
    assert!(status.success(), "exit {status}:\n{}", proxy.log());
}
