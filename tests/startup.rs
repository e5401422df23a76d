//! Starting up (issue 23, item 1): a proxy address another process holds
//! ends the start at once with one line naming it — not a "listening" log,
//! 30 s of retries and a panicking thread in a process that goes on
//! answering `/healthz` ok — and `/healthz` says ok only once the proxy's
//! own listener serves.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const SITES: &str = r#"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
instances = ["127.0.0.1:9"]
"#;

#[test]
fn a_taken_proxy_port_ends_the_start_with_one_line_naming_it() {
    // another process's listener on the proxy's address
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (admin, metrics) = (free_port(), free_port());
    let text = config_text(port, admin, metrics, &dir.path().join("state"), SITES);
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // pingora alone retries for 30 s (then a thread panics and the process
    // lives on): the deadline is well under that
    let status = wait_for(15, "slotproxy to give up on the taken port", || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(
        status.code().is_some(),
        "killed by a signal: {status}\n{err}"
    );
    let addr = format!("127.0.0.1:{port}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("slotproxy: server.listen ")
            && last.contains(&addr)
            && last.contains("Address already in use")
            && last.contains("free address"),
        "the last line names the key, the address, why and the fix:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
    assert!(!err.contains("slotproxy listening"), "{err}");
    // nothing else was started: the admin and metrics ports are free
    TcpListener::bind(("127.0.0.1", admin)).unwrap();
    TcpListener::bind(("127.0.0.1", metrics)).unwrap();
    drop(taken);
}

/// `GET /healthz` on `admin`: its status and whether the body says ok.
fn healthz(admin: u16) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    Some((status, out))
}

#[test]
fn healthz_says_ok_only_once_the_proxy_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin, metrics) = (free_port(), free_port(), free_port());
    let text = config_text(port, admin, metrics, &dir.path().join("state"), SITES);
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // from the first answer of the admin API on: every ok must come from
    // a node whose proxy answers
    let mut starting = 0;
    let seen = wait_for(30, "/healthz to say ok", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("slotproxy exited with {status}");
        }
        match healthz(admin) {
            Some((200, body)) => Some(body),
            Some((503, body)) => {
                assert!(body.contains(r#""status":"starting""#), "{body}");
                starting += 1;
                None
            }
            Some((other, body)) => panic!("/healthz answered {other}: {body}"),
            None => None,
        }
    });
    assert!(seen.contains(r#""status":"ok""#), "{seen}");
    // the proxy's own answer (an unknown host is its 404), at once
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the proxy listens");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    println!("/healthz said starting {starting} times before ok");
    let _ = child.kill();
    let _ = child.wait();
}
