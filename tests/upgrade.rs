//! Zero-downtime operations: a graceful binary upgrade (`serve --upgrade`
//! plus SIGQUIT to the old process) and a SIGTERM with a successor, both
//! under continuous GET and POST load on kept-alive and fresh HTTP/1.1
//! connections, and kept-alive scrapes of the metrics listener; the pid
//! file across an upgrade and a SIGTERM; and docs/operations/upgrade.md's `kill -USR2
//! $(cat <pid_file>)` on the shipped `config.toml`, whose built-in demo apps
//! live in the proxy process and must pass over too.
//!
//! No request may fail — a kept-alive connection closed under a request
//! ("stale keep-alive") is a failure like any other and is never retried:
//! the drain (`[server] drain_secs`) must tell clients to leave with
//! `Connection: close` instead.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// Short, so the old process is gone within seconds; long enough that a
/// client sending continuously always crosses it with a request.
const DRAIN_SECS: u64 = 2;

/// Client threads that open a fresh connection for every request.
const FRESH_CLIENTS: usize = 2;

#[derive(Default)]
struct Counts {
    ok: AtomicUsize,
    /// Answers on a kept-alive connection that said `Connection: close`:
    /// the drain telling the client to move (not a failure).
    told_to_close: AtomicUsize,
    /// A fresh connection was refused.
    refused: AtomicUsize,
    /// A fresh connection failed (reset, EOF) or a response was cut short.
    broken: AtomicUsize,
    /// A reused connection was closed before any byte of the response.
    stale_keepalive: AtomicUsize,
    /// A response other than 200.
    bad_status: AtomicUsize,
}

impl Counts {
    fn show(&self) -> String {
        format!(
            "ok={} told_to_close={} refused={} broken={} stale_keepalive={} bad_status={}",
            self.ok.load(SeqCst),
            self.told_to_close.load(SeqCst),
            self.refused.load(SeqCst),
            self.broken.load(SeqCst),
            self.stale_keepalive.load(SeqCst),
            self.bad_status.load(SeqCst)
        )
    }

    fn failures(&self) -> (usize, usize, usize, usize) {
        (
            self.refused.load(SeqCst),
            self.broken.load(SeqCst),
            self.stale_keepalive.load(SeqCst),
            self.bad_status.load(SeqCst),
        )
    }
}

enum Failure {
    /// Nothing of a response arrived on a reused connection.
    StaleKeepAlive(String),
    Refused,
    Broken(String),
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
}

/// Where a client sends its requests: a fresh connection goes to
/// `ports[live]`; `live` moves on when the test retires the process at
/// `ports[0]` (what a load balancer does before a SIGTERM).
struct Target {
    ports: Vec<u16>,
    live: Arc<AtomicUsize>,
    host: &'static str,
    path: &'static str,
    /// Counts the clients that opened a connection past `ports[0]`.
    moved: Arc<AtomicUsize>,
    counted_move: AtomicBool,
}

impl Target {
    fn new(
        ports: &[u16],
        live: &Arc<AtomicUsize>,
        moved: &Arc<AtomicUsize>,
        host: &'static str,
        path: &'static str,
    ) -> Target {
        Target {
            ports: ports.to_vec(),
            live: live.clone(),
            host,
            path,
            moved: moved.clone(),
            counted_move: AtomicBool::new(false),
        }
    }
}

struct Answer {
    status: u16,
    /// The server closes the connection after this response.
    closes: bool,
}

/// One HTTP/1.1 request on `conn` (opened if `None`).
fn request(
    conn: &mut Option<BufReader<TcpStream>>,
    target: &Target,
    method: Method,
    keep_alive: bool,
) -> Result<Answer, Failure> {
    let reused = conn.is_some();
    if conn.is_none() {
        let i = target.live.load(SeqCst).min(target.ports.len() - 1);
        if i > 0 && !target.counted_move.swap(true, SeqCst) {
            target.moved.fetch_add(1, SeqCst);
        }
        let port = target.ports[i];
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
    let (host, path) = (target.host, target.path);
    let req = match method {
        Method::Get => format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{close}\r\n"),
        Method::Post => format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\n{close}Content-Type: text/plain\r\nContent-Length: 12\r\n\r\norder=42&q=1"
        ),
    };
    let before_response = |e: String| {
        if reused {
            Failure::StaleKeepAlive(e)
        } else {
            Failure::Broken(e)
        }
    };
    c.get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| before_response(format!("write: {e}")))?;
    let mut status_line = String::new();
    match c.read_line(&mut status_line) {
        Ok(0) => return Err(before_response("EOF before the response".into())),
        Ok(_) => {}
        Err(e) => return Err(before_response(format!("read: {e}"))),
    }
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Broken(format!("bad status line {status_line:?}")))?;
    let (mut len, mut closes) = (None, false);
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
            closes = true;
        }
    }
    let len = len.ok_or_else(|| Failure::Broken("no content-length".into()))?;
    let mut body = vec![0; len];
    c.read_exact(&mut body)
        .map_err(|e| Failure::Broken(format!("body: {e}")))?;
    if closes || !keep_alive {
        *conn = None;
    }
    Ok(Answer { status, closes })
}

/// A client sending requests until `stop`, `pause` apart; every outcome
/// is counted once, nothing is retried.
fn load(
    target: Target,
    method: Method,
    keep_alive: bool,
    pause: Duration,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let what = target.path;
    let mut conn = None;
    while !stop.load(SeqCst) {
        match request(&mut conn, &target, method, keep_alive) {
            Ok(Answer {
                status: 200,
                closes,
            }) => {
                counts.ok.fetch_add(1, SeqCst);
                if closes && keep_alive {
                    counts.told_to_close.fetch_add(1, SeqCst);
                }
            }
            Ok(other) => {
                eprintln!("{what}: status {}", other.status);
                counts.bad_status.fetch_add(1, SeqCst);
                conn = None;
            }
            Err(Failure::Refused) => {
                counts.refused.fetch_add(1, SeqCst);
                conn = None;
            }
            Err(Failure::Broken(e)) => {
                eprintln!("{what}: broken: {e}");
                counts.broken.fetch_add(1, SeqCst);
                conn = None;
            }
            Err(Failure::StaleKeepAlive(e)) => {
                eprintln!("{what}: stale keep-alive: {e}");
                counts.stale_keepalive.fetch_add(1, SeqCst);
                conn = None;
            }
        }
        std::thread::sleep(pause);
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

fn start_proxy(sites: &str) -> Proxy {
    Proxy::start_edited(sites, 4, |text| {
        text.replacen(
            "[server]\n",
            &format!("[server]\ndrain_secs = {DRAIN_SECS}\n"),
            1,
        )
    })
}

/// Client threads for every kind of request: GET and POST, kept-alive and
/// fresh connections.
fn start_load(
    ports: &[u16],
    live: &Arc<AtomicUsize>,
    moved: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
    counts: &Arc<Counts>,
) -> Vec<std::thread::JoinHandle<()>> {
    let kinds: [_; 4 + FRESH_CLIENTS] = [
        (Method::Get, true),
        (Method::Post, true),
        (Method::Get, true),
        (Method::Post, true),
        (Method::Get, false),
        (Method::Post, false),
    ];
    kinds
        .into_iter()
        .map(|(method, keep_alive)| {
            let target = Target::new(ports, live, moved, "shop.test", "/load");
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || {
                load(target, method, keep_alive, Duration::ZERO, stop, counts)
            })
        })
        .collect()
}

fn slow_request(port: u16, keep_alive: bool) -> std::thread::JoinHandle<Result<Answer, Failure>> {
    std::thread::spawn(move || {
        let none = Arc::new(AtomicUsize::new(0));
        let target = Target::new(&[port], &none, &none, "slow.test", "/load");
        request(&mut None, &target, Method::Get, keep_alive)
    })
}

fn served(r: &Result<Answer, Failure>) -> bool {
    matches!(r, Ok(Answer { status: 200, .. }))
}

#[test]
fn upgrade_fails_no_request_on_kept_alive_or_fresh_connections() {
    let (a, b) = (App::start("v1"), App::start("v1"));
    let (slow, arrived) = slow_upstream(Duration::from_millis(1500));
    let mut proxy = start_proxy(&sites(&[&a, &b], &slow));

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let (live, moved) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = start_load(&[proxy.port], &live, &moved, &stop, &counts);
    let scrapes = Arc::new(Counts::default());
    {
        let target = Target::new(&[proxy.metrics_port], &live, &moved, "metrics", "/metrics");
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        clients.push(std::thread::spawn(move || {
            // Kept-alive scrapes of a control listener: its socket is
            // passed to the new process (handover.rs) like the proxy's, so
            // neither a fresh connection nor a request on an open one may
            // fail.
            load(
                target,
                Method::Get,
                true,
                Duration::from_millis(20),
                stop,
                scrapes,
            )
        }));
    }
    let ok_now = || counts.ok.load(SeqCst);
    wait_for(20, "load to flow", || (ok_now() > 200).then_some(()));
    wait_for(20, "scrapes to flow", || {
        (scrapes.ok.load(SeqCst) > 3).then_some(())
    });

    // A slow request in flight on the old process across the upgrade.
    let across_upgrade = slow_request(proxy.port, false);
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
    let after_upgrade = ok_now();
    wait_for(20, "load to flow through the new process", || {
        (ok_now() > after_upgrade + 200).then_some(())
    });
    assert!(served(&across_upgrade.join().unwrap()), "{}", proxy.log());
    let scraped = scrapes.ok.load(SeqCst);
    wait_for(30, "the new process to serve /metrics", || {
        (scrapes.ok.load(SeqCst) > scraped + 3).then_some(())
    });

    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    println!("proxy across the upgrade: {}", counts.show());
    println!("metrics scrapes across the upgrade: {}", scrapes.show());
    assert_eq!(
        counts.failures(),
        (0, 0, 0, 0),
        "(refused, broken, stale_keepalive, bad_status)\n{}\n{}",
        counts.show(),
        proxy.log()
    );
    // The drain announced itself on the kept-alive connections.
    assert!(counts.told_to_close.load(SeqCst) > 0, "{}", counts.show());
    // Scrapes: none failed, on an open connection or a fresh one (the
    // metrics socket was passed over, not closed and bound again).
    assert_eq!(
        scrapes.failures(),
        (0, 0, 0, 0),
        "(refused, broken, stale_keepalive, bad_status)\n{}\n{}",
        scrapes.show(),
        proxy.log()
    );
    assert!(scrapes.told_to_close.load(SeqCst) > 0, "{}", scrapes.show());
}

#[test]
fn sigterm_with_a_successor_fails_no_request() {
    let (a, b) = (App::start("v1"), App::start("v1"));
    let (slow, arrived) = slow_upstream(Duration::from_millis(1500));
    let mut old = start_proxy(&sites(&[&a, &b], &slow));
    // The successor: another slotproxy on its own address, as behind a load
    // balancer (or a Kubernetes Service) that moves fresh connections to it
    // before the old one gets SIGTERM.
    let successor = start_proxy(&sites(&[&a, &b], &slow));

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let (live, moved) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients = start_load(&[old.port, successor.port], &live, &moved, &stop, &counts);
    let ok_now = || counts.ok.load(SeqCst);
    wait_for(20, "load to flow", || (ok_now() > 200).then_some(()));

    // Slow requests in flight on the old process across the SIGTERM, on
    // kept-alive and fresh connections.
    let before = arrived.load(SeqCst);
    let in_flight: Vec<_> = [true, false, true]
        .into_iter()
        .map(|ka| slow_request(old.port, ka))
        .collect();
    wait_for(10, "the slow requests to reach the upstream", || {
        (arrived.load(SeqCst) == before + 3).then_some(())
    });

    // Fresh connections go to the successor from now on (the two clients
    // that open one per request have moved before the SIGTERM, as a load
    // balancer drains an endpoint first: a connection still in the old
    // listener's backlog when it closes would be reset, drain or not); the
    // kept-alive ones stay on the old process until it tells them to leave.
    live.store(1, SeqCst);
    wait_for(20, "the fresh-connection clients to move", || {
        (moved.load(SeqCst) >= FRESH_CLIENTS).then_some(())
    });
    old.signal(libc::SIGTERM);
    let drained: Vec<_> = in_flight.into_iter().map(|t| t.join().unwrap()).collect();
    let slow_served = drained.into_iter().filter(served).count();
    println!("SIGTERM: {slow_served} of 3 slow requests in flight completed");
    assert_eq!(slow_served, 3, "{}", old.log());
    let status = old.wait_exit(60);
    assert!(status.success(), "exit {status}:\n{}", old.log());
    let after = ok_now();
    wait_for(20, "load to flow through the successor", || {
        (ok_now() > after + 200).then_some(())
    });

    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    println!("across the SIGTERM: {}", counts.show());
    assert_eq!(
        counts.failures(),
        (0, 0, 0, 0),
        "(refused, broken, stale_keepalive, bad_status)\n{}\n{}",
        counts.show(),
        old.log()
    );
    assert!(counts.told_to_close.load(SeqCst) > 0, "{}", counts.show());
}

/// Wait until `path` names a pid other than `not` (a new process wrote it).
fn pid_in(path: &std::path::Path, not: Option<u32>) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (Some(pid) != not).then_some(pid)
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn pid_file_names_the_serving_process_and_goes_with_it() {
    let a = App::start("v1");
    let sites = format!(
        "[[sites]]\nname = \"shop\"\nhostnames = [\"shop.test\"]\n[[sites.slots]]\nname = \"production\"\ninstances = [\"{}\"]\n",
        a.addr()
    );
    let mut proxy = start_proxy(&sites);
    let pid_file = proxy.dir.path().join("state/slotproxy.pid");
    let first = wait_for(20, "the pid file", || pid_in(&pid_file, None));
    assert_eq!(first, proxy.pid());
    // an upgrade: the new process writes its own pid, and the old one,
    // exiting after it, leaves it there
    let old = proxy.upgrade();
    let new = wait_for(30, "the new process's pid", || pid_in(&pid_file, Some(old)));
    assert_eq!(new, proxy.pid(), "{}", proxy.log());
    proxy.wait_retired(60);
    assert_eq!(pid_in(&pid_file, None), Some(new), "{}", proxy.log());
    assert_eq!(get(&proxy, "shop.test", "/", &[]).status, 200);
    // SIGTERM: drained, exited, and the pid file is gone with it
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(60);
    assert!(status.success(), "{status}\n{}", proxy.log());
    assert!(!pid_file.exists(), "{}", proxy.log());
}

/// The shipped `config.toml` with every port moved to a free one, its
/// state, upgrade socket and pid file in `dir`, and a short drain.
fn shipped_config(dir: &std::path::Path) -> (String, u16, u16) {
    let mut text = include_str!("../config.toml").to_string();
    let (proxy, admin) = (free_port(), free_port());
    for (from, to) in [
        ("127.0.0.1:8080", proxy),
        ("127.0.0.1:9080", admin),
        ("127.0.0.1:9091", free_port()),
        ("127.0.0.1:9101", free_port()),
        ("127.0.0.1:9102", free_port()),
        ("127.0.0.1:9201", free_port()),
        ("127.0.0.1:9202", free_port()),
    ] {
        assert!(text.contains(from), "the shipped config has {from}");
        text = text.replace(from, &format!("127.0.0.1:{to}"));
    }
    let state = dir.join("state");
    text = text.replace(
        "dir = \"./state\"",
        &format!("dir = \"{}\"", state.display()),
    );
    text = text.replacen(
        "[server]\n",
        &format!(
            "[server]\ndrain_secs = {DRAIN_SECS}\ngrace_period_secs = 1\ngraceful_shutdown_timeout_secs = 1\nupgrade_sock = \"{d}/upgrade.sock\"\npid_file = \"{d}/slotproxy.pid\"\n",
            d = dir.display()
        ),
        1,
    );
    (text, proxy, admin)
}

#[test]
fn usr2_on_the_shipped_demo_config_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (text, port, _) = shipped_config(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let log_path = dir.path().join("slotproxy.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut old = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let show_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let pid_file = dir.path().join("slotproxy.pid");
    let old_pid = wait_for(30, "the proxy to serve", || pid_in(&pid_file, None));
    assert_eq!(old_pid, old.id());
    // the new process is the old one's child, not ours: stopped by pid
    struct Stop(Option<u32>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
    let mut new_guard = Stop(None);

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let (live, moved) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // GET and POST on kept-alive and fresh connections, through the
    // built-in demo apps (the shipped site: shop.localhost)
    let clients: Vec<_> = [
        (Method::Get, true),
        (Method::Post, true),
        (Method::Get, false),
    ]
    .into_iter()
    .map(|(method, keep_alive)| {
        let target = Target::new(&[port], &live, &moved, "shop.localhost", "/load");
        let (stop, counts) = (stop.clone(), counts.clone());
        std::thread::spawn(move || load(target, method, keep_alive, Duration::ZERO, stop, counts))
    })
    .collect();
    let ok_now = || counts.ok.load(SeqCst);
    wait_for(20, "load to flow", || (ok_now() > 200).then_some(()));

    // docs/operations/upgrade.md: kill -USR2 $(cat <pid_file>)
    unsafe { libc::kill(old_pid as i32, libc::SIGUSR2) };
    let new_pid = wait_for(60, "the new process to serve", || {
        pid_in(&pid_file, Some(old_pid))
    });
    new_guard.0 = Some(new_pid);
    let status = wait_for(60, "the old process to exit", || old.try_wait().unwrap());
    assert!(status.success(), "old process exited with {status}");
    let after = ok_now();
    wait_for(20, "load to flow through the new process", || {
        (ok_now() > after + 200).then_some(())
    });
    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    println!("the shipped config across SIGUSR2: {}", counts.show());
    let log = show_log();
    assert_eq!(
        counts.failures(),
        (0, 0, 0, 0),
        "(refused, broken, stale_keepalive, bad_status)\n{}\n{log}",
        counts.show()
    );
    assert!(log.contains("passed 6 control listeners"), "{log}");
    // a normal upgrade logs no error (pingora's "No incoming socket
    // transfer" is only the new process waiting for the old one's SIGQUIT)
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:#?}");

    unsafe { libc::kill(new_pid as i32, libc::SIGTERM) };
    wait_for(60, "the new process to exit", || {
        (!alive(new_pid)).then_some(())
    });
    new_guard.0 = None;
    assert!(!pid_file.exists(), "{}", show_log());
}
