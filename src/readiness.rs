//! When the proxy counts as up, and what keeps it from getting there.
//!
//! pingora binds the proxy's listeners itself, late (once its runtimes
//! run), and on a taken address it retries for 30 s and then panics in one
//! of its threads — the rest of the process (admin API, `/healthz`) would
//! go on as if all were well. So:
//!
//! * before anything starts, every proxy address is bound once and let go
//!   ([`check_free`]): a clash is one line naming the address and the fix;
//! * the process is *up* — `/healthz` ok, systemd told `READY=1`, the pid
//!   file written — only once a listening socket on every proxy address
//!   exists in this very process ([`watch`]: the kernel's own record, read
//!   from our file descriptors, not a guess from time or a connect that
//!   another process could answer);
//! * should pingora still fail to build its listeners (an address taken in
//!   the instant between the check and its bind), its panic ends the
//!   process with one line instead of leaving it half alive
//!   ([`exit_when_listeners_fail`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static PROXY_UP: AtomicBool = AtomicBool::new(false);

/// Whether every proxy listener exists (see [`watch`]).
pub fn proxy_up() -> bool {
    PROXY_UP.load(Ordering::Acquire)
}

/// The address a listener on `addr` binds: the first it resolves to, as
/// pingora takes it.
pub fn resolve(addr: &str) -> Option<SocketAddr> {
    addr.to_socket_addrs().ok()?.next()
}

/// Bind each of `addrs` (the config key `key`) and let go at once: an
/// address another process listens on is refused here, before anything
/// serves, with a message that names it and what to do.
pub fn check_free(key: &str, addrs: &[String]) -> anyhow::Result<()> {
    for addr in addrs {
        // std sets SO_REUSEADDR, as pingora does: a port in TIME_WAIT
        // passes, one with a listener does not
        if let Err(e) = std::net::TcpListener::bind(addr.as_str()) {
            anyhow::bail!("{}", clash_message(key, addr, &e));
        }
    }
    Ok(())
}

/// The one line for a proxy address that cannot be bound.
pub fn clash_message(key: &str, addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{key} {addr}: {e}: another process listens there; stop it, or set {key} to a free address"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{key} {addr}: {e}: ports below 1024 need root or CAP_NET_BIND_SERVICE; or set {key} to a higher port"
        ),
        _ => format!("{key} {addr}: {e}: set {key} to an address of this machine"),
    }
}

/// Whether `found`, a listening socket's address, is the listener
/// configured as `wanted` (port 0: any port on that address).
pub fn is_listener_for(wanted: SocketAddr, found: SocketAddr) -> bool {
    wanted == found || (wanted.port() == 0 && wanted.ip() == found.ip() && found.port() != 0)
}

/// Whether every address of `wanted` has a listening socket in `found`.
pub fn all_listening(wanted: &[SocketAddr], found: &[SocketAddr]) -> bool {
    wanted
        .iter()
        .all(|w| found.iter().any(|f| is_listener_for(*w, *f)))
}

/// The local addresses of the listening TCP sockets this process holds.
pub fn listening_sockets() -> Vec<SocketAddr> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(listening_addr)
        .collect()
}

/// The local address of `fd` if it is a listening TCP socket. `fd` may
/// have been closed (or reused) since it was listed: the calls below only
/// read its state, and fail harmlessly on a closed one.
fn listening_addr(fd: i32) -> Option<SocketAddr> {
    use std::mem::{size_of, zeroed};
    let mut on: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `on`, which we own.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut on as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 || on == 0 {
        return None;
    }
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `ss`, which we own.
    let r = unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in (family AF_INET).
            let a: &libc::sockaddr_in = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel filled a sockaddr_in6 (family AF_INET6).
            let a: &libc::sockaddr_in6 =
                unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

/// Wait on a thread of its own until a listening socket on every address
/// of `addrs` exists in this process, then mark the proxy up and run
/// `on_up` (notify systemd, write the pid file, say so in the log).
pub fn watch(addrs: Vec<String>, on_up: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let wanted: Vec<SocketAddr> = addrs.iter().filter_map(|a| resolve(a)).collect();
    std::thread::Builder::new()
        .name("slotproxy-ready".into())
        .spawn(move || {
            let mut pause = Duration::from_millis(2);
            while !all_listening(&wanted, &listening_sockets()) {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            PROXY_UP.store(true, Ordering::Release);
            on_up();
        })
        .map(drop)
}

/// End the process, with one line and exit code 2, when pingora panics
/// because it cannot build the proxy's listeners; other panics go to the
/// hook that was there before.
pub fn exit_when_listeners_fail() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.contains("Failed to build listeners") {
            let one_line = payload.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!(
                "slotproxy: the proxy cannot listen ({one_line}); check [server] listen and tls_listen"
            );
            std::process::exit(2);
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_listener_matches_its_address_or_any_port_for_port_zero() {
        assert!(is_listener_for(sa("127.0.0.1:8080"), sa("127.0.0.1:8080")));
        assert!(!is_listener_for(sa("127.0.0.1:8080"), sa("127.0.0.1:8081")));
        assert!(!is_listener_for(sa("0.0.0.0:8080"), sa("127.0.0.1:8080")));
        assert!(is_listener_for(sa("127.0.0.1:0"), sa("127.0.0.1:4000")));
        assert!(all_listening(
            &[sa("127.0.0.1:1"), sa("[::1]:2")],
            &[sa("[::1]:2"), sa("127.0.0.1:1"), sa("127.0.0.1:3")]
        ));
        assert!(!all_listening(&[sa("127.0.0.1:1")], &[sa("127.0.0.1:3")]));
        assert!(all_listening(&[], &[]));
    }

    #[test]
    fn this_processs_listeners_are_seen_and_only_while_they_listen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listening_sockets().contains(&addr));
        // a connected socket is not a listener
        let c = std::net::TcpStream::connect(addr).unwrap();
        assert!(!listening_sockets().contains(&c.local_addr().unwrap()));
        drop(l);
        assert!(!listening_sockets().contains(&addr));
    }

    #[test]
    fn a_taken_address_is_refused_naming_it_and_the_fix() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let err = check_free("server.listen", std::slice::from_ref(&addr))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("server.listen {addr}: ")), "{err}");
        assert!(
            err.contains("in use") && err.contains("free address"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        drop(l);
        check_free("server.listen", &[addr]).unwrap();
    }
}
