//! One HTTP/2 client connection (`edge`): the `h2` server handshake with
//! slotproxy's settings, the accept loop that hands each stream to its own
//! task (`h2_exchange`), and the connection's end: after
//! `keepalive_timeout_secs` without a stream, GOAWAY and the close; when
//! the drain begins (so clients move to a new connection, as `Connection:
//! close` makes HTTP/1 clients do) or at shutdown, the graceful GOAWAY
//! (RFC 9113 §6.8: one for all streams, a PING, then one naming the last
//! stream taken), the streams in flight finish, then the close.
//!
//! Flow-control windows: the `h2` crate's default (RFC 9113's 65,535
//! bytes) caps an upload at one window per round trip. Envoy's edge
//! guidance is 64 KiB–1 MiB per stream and 1 MiB per connection, HAProxy
//! grows its windows as buffers allow; slotproxy announces 256 KiB per
//! stream and 2 MiB per connection. A window is given back only as the
//! bytes it let in have been written to the instance, so a slow instance
//! slows its client down rather than filling the proxy's memory.

use super::H2Front;
use bytes::Bytes;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::Arc;

/// Per-stream receive window announced to clients.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// Connection receive window announced to clients.
pub const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;

/// What every stream of a connection shares.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer_ip: Option<IpAddr>,
    /// The connection came over our own TLS listener.
    pub tls_here: bool,
}

/// The `h2` server settings for `front`'s configuration.
pub fn builder(front: &H2Front) -> h2::server::Builder {
    let s = &front.settings;
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(s.max_streams)
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    b
}

/// Why the connection is being closed gracefully, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Idle,
    Drain,
    Shutdown,
    /// Closed to make room for a new connection at `max_connections`
    /// (`admission`): the one whose last stream began longest ago goes.
    Evicted,
}

/// Whether an idle-timer tick ends the connection: only when no stream is
/// open (a long upload or a gRPC stream keeps it).
pub fn idle_ends(has_streams: bool) -> Option<Ending> {
    (!has_streams).then_some(Ending::Idle)
}

/// Serve the HTTP/2 connection `stream` (its preface not yet read, or
/// replayed to it) until it ends. With `admitted`, the connection may be
/// chosen to make room at `max_connections` as an idle HTTP/1 one is: it
/// counts as idle since its last stream began, and is then told to go
/// (GOAWAY; streams in flight finish).
pub async fn serve(
    front: &Arc<H2Front>,
    stream: Stream,
    shutdown: &ShutdownWatch,
    admitted: Option<&crate::admission::Admitted>,
) {
    let info = ConnInfo {
        peer_ip: stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip())),
        tls_here: stream.get_ssl_digest().is_some(),
    };
    let handshake = builder(front).handshake::<_, Bytes>(stream);
    let mut conn = match tokio::time::timeout(front.settings.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            log::debug!("HTTP/2 handshake with {:?} failed: {e}", info.peer_ip);
            return;
        }
        Err(_) => {
            log::debug!("HTTP/2 preface from {:?} timed out", info.peer_ip);
            return;
        }
    };
    let idle = front.settings.idle_timeout;
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let drain = crate::drain::begun();
    tokio::pin!(drain);
    let mut down = shutdown.clone();
    let mut ending: Option<Ending> = None;
    if let Some(a) = admitted {
        a.idle_begins(std::time::Instant::now());
    }
    let evicted = async {
        match admitted {
            Some(a) => a.evicted().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(evicted);
    if crate::drain::draining() || *down.borrow() {
        // a connection opened during the drain is told to go at once
        conn.graceful_shutdown();
        ending = Some(Ending::Drain);
    }
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    sleep.as_mut().reset(tokio::time::Instant::now() + idle);
                    if let Some(a) = admitted {
                        // idle, as eviction sees it, since this stream began
                        a.idle_ends();
                        a.idle_begins(std::time::Instant::now());
                    }
                    let front = front.clone();
                    tokio::spawn(super::h2_exchange::serve(front, info, req, respond));
                }
                Some(Err(e)) => {
                    log::debug!("HTTP/2 connection from {:?} ended: {e}", info.peer_ip);
                    break;
                }
                None => break,
            },
            _ = &mut sleep, if ending.is_none() => match idle_ends(conn.has_streams()) {
                Some(why) => {
                    // nothing in flight: GOAWAY naming the last stream
                    // taken, then the close (nginx's idle close too); the
                    // graceful form would wait for a PING answer an idle
                    // client may never send
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    ending = Some(why);
                }
                None => sleep.as_mut().reset(tokio::time::Instant::now() + idle),
            },
            _ = &mut evicted, if ending.is_none() => {
                match conn.has_streams() {
                    true => conn.graceful_shutdown(),
                    false => conn.abrupt_shutdown(h2::Reason::NO_ERROR),
                }
                ending = Some(Ending::Evicted);
            }
            _ = &mut drain, if ending.is_none() => {
                conn.graceful_shutdown();
                ending = Some(Ending::Drain);
            }
            changed = down.changed(), if ending.is_none() => {
                if changed.is_err() || *down.borrow() {
                    conn.graceful_shutdown();
                    ending = Some(Ending::Shutdown);
                }
            }
        }
    }
    log::trace!(
        "HTTP/2 connection from {:?} closed ({ending:?})",
        info.peer_ip
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connection_without_streams_is_idle() {
        assert_eq!(idle_ends(false), Some(Ending::Idle));
        assert_eq!(idle_ends(true), None);
    }
}
