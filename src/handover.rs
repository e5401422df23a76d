//! The control listeners (admin API, metrics, built-in demo apps) passed
//! to the new process on an upgrade, as pingora passes the proxy's.
//!
//! Why pass them instead of closing and binding again: between the old
//! process closing an address and the new one binding it, connections are
//! refused — for a built-in demo app that is every request the proxy sends
//! it then, answered 502 (92 of 2,768 in a second on the shipped config).
//! SO_REUSEPORT would not do: a connection waiting in the old socket's
//! queue is reset when that socket closes. A passed socket never closes:
//! the old process stops accepting on it, connections wait in its queue,
//! and the new process accepts them from the same queue — nothing is
//! refused or reset, only delayed by the moment the hand-over takes.
//!
//! How: the new process (`serve --upgrade`) listens on
//! `<upgrade_sock>.control` before it waits for pingora's sockets
//! ([`expect`]); on SIGQUIT the old process sends every control listener
//! it serves ([`offer`]ed as it started serving) in one message with
//! SCM_RIGHTS ([`send_offered`]), then stops accepting on them. The new
//! process serves those it was sent ([`Incoming::take`]) and binds the
//! others (new in its config, or when nothing came) as before.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most listeners one hand-over carries.
const MAX_LISTENERS: usize = 64;

/// Where the new process waits for the control listeners.
pub fn sock_path(upgrade_sock: &str) -> PathBuf {
    PathBuf::from(format!("{upgrade_sock}.control"))
}

/// The listeners this process serves, by configured address, to pass on.
fn offered() -> &'static Mutex<Vec<(String, OwnedFd)>> {
    static OFFERED: Mutex<Vec<(String, OwnedFd)>> = Mutex::new(Vec::new());
    &OFFERED
}

/// Pass the listener `fd` (serving `addr` as configured) to a successor
/// at the next hand-over. A duplicate is kept until then.
pub fn offer(addr: &str, fd: BorrowedFd<'_>) {
    match fd.try_clone_to_owned() {
        Ok(dup) => offered()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((addr.to_string(), dup)),
        Err(e) => log::warn!("{addr} cannot be passed on at an upgrade: {e}"),
    }
}

/// Send every offered listener to the process waiting on `path`, trying
/// to reach it for up to `patience` (it may still be starting). The
/// duplicates are closed either way: the caller stops accepting on the
/// listeners next, and a socket left open here with no one accepting
/// would hold its address and queue connections nobody answers.
pub fn send_offered(path: &Path, patience: Duration) -> std::io::Result<usize> {
    let listeners = std::mem::take(&mut *offered().lock().unwrap_or_else(|p| p.into_inner()));
    let deadline = Instant::now() + patience;
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                log::debug!("{} not ready ({e}), trying again", path.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    send(&stream, &listeners)?;
    Ok(listeners.len())
}

fn send(stream: &UnixStream, listeners: &[(String, OwnedFd)]) -> std::io::Result<()> {
    let names: Vec<&str> = listeners.iter().map(|(a, _)| a.as_str()).collect();
    // one name a line; an empty message says "nothing to pass"
    let payload = format!("{}\n", names.join("\n"));
    let fds: Vec<i32> = listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(payload.as_bytes())],
        cmsgs,
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Read one hand-over message: the listeners by configured address.
fn receive(stream: &UnixStream) -> std::io::Result<HashMap<String, TcpListener>> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; MAX_LISTENERS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let len = msg.bytes;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: the kernel just installed these descriptors in this
            // process for us; nothing else owns them.
            fds.extend(
                got.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
    let names: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if names.len() != fds.len() {
        return Err(std::io::Error::other(format!(
            "{} names for {} sockets",
            names.len(),
            fds.len()
        )));
    }
    Ok(names
        .into_iter()
        .map(String::from)
        .zip(fds.into_iter().map(TcpListener::from))
        .collect())
}

/// The control listeners on their way from the old process.
pub struct Incoming {
    rx: std::sync::mpsc::Receiver<HashMap<String, TcpListener>>,
}

/// Listen on `path` for the old process's control listeners, on a thread
/// of its own, for up to `patience`.
pub fn expect(path: PathBuf, patience: Duration) -> std::io::Result<Incoming> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("slotproxy-handover".into())
        .spawn(move || {
            let deadline = Instant::now() + patience;
            let got = loop {
                match listener.accept() {
                    Ok((s, _)) => {
                        break s.set_nonblocking(false).and_then(|()| receive(&s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            break Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "the old process sent none",
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => break Err(e),
                }
            };
            let _ = std::fs::remove_file(&path);
            match got {
                Ok(map) => {
                    let _ = tx.send(map);
                }
                Err(e) => log::warn!(
                    "control listeners not passed over ({e}): binding them again instead"
                ),
            }
        })?;
    Ok(Incoming { rx })
}

impl Incoming {
    /// The listeners passed over, waiting up to `wait` for them; none if
    /// nothing came.
    pub fn take(self, wait: Duration) -> HashMap<String, TcpListener> {
        self.rx.recv_timeout(wait).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn listeners_pass_over_with_their_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock.control");
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // a connection waiting in a's queue when it is handed over
        let mut waiting = std::net::TcpStream::connect(addr_a).unwrap();
        let incoming = expect(path.clone(), Duration::from_secs(10)).unwrap();
        let listeners = vec![
            ("a:1".to_string(), a.as_fd().try_clone_to_owned().unwrap()),
            ("b:2".to_string(), b.as_fd().try_clone_to_owned().unwrap()),
        ];
        let s = UnixStream::connect(&path).unwrap();
        send(&s, &listeners).unwrap();
        // the old process lets go of everything it had
        drop((a, b, listeners));
        let mut got = incoming.take(Duration::from_secs(10));
        assert_eq!(got.len(), 2);
        let a2 = got.remove("a:1").unwrap();
        assert_eq!(a2.local_addr().unwrap(), addr_a);
        assert_eq!(got["b:2"].local_addr().unwrap(), addr_b);
        let (mut served, _) = a2.accept().unwrap();
        waiting.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        served.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
        assert!(!path.exists(), "the socket file is cleaned up");
    }

    #[test]
    fn an_empty_hand_over_is_no_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock.control");
        let incoming = expect(path.clone(), Duration::from_secs(10)).unwrap();
        let sent = send_offered(&path, Duration::from_secs(10));
        // whatever another test of this process offered is sent here too
        assert!(sent.is_ok(), "{sent:?}");
        let _ = incoming.take(Duration::from_secs(10));
    }
}
