//! slotproxy's own HTTP/2 front end: HTTP/2 clients (TLS with ALPN `h2`,
//! and h2c with prior knowledge on plain listeners) served with the `h2`
//! crate (pingora-proxy is off the request path).
//!
//! One path from accept to answer:
//! - `h2`: the connection — settings and limits, idle time-out, GOAWAY on
//!   the drain — handing each stream to
//! - `h2_exchange`: one stream as one request: routed, pinned, counted and
//!   logged with the same functions as an HTTP/1 request (`proxy`), local
//!   answers (gRPC's Trailers-Only for gRPC requests, `grpc`), then to
//! - `h2_h1`: an HTTP/1 instance, over the lean path's pooled connections
//!   (`lean::Lean`), or
//! - `h2_upstream`: an h2c / h2 (TLS) instance, over one shared HTTP/2
//!   connection per instance — which HTTP/1 clients reach too, through
//! - `h1_h2`: an HTTP/1 client's request (from `lean`) to such an
//!   instance, and its answer back as HTTP/1.
//!
//! Connection counting and the per-client limits stay where they are for
//! every protocol (`limits`).

mod h1_h2;
pub mod h2;
mod h2_exchange;
mod h2_h1;
pub(crate) mod h2_upstream;

pub(crate) use h1_h2::{forward as forward_h1_to_h2, parts as h2_parts};

use crate::lean::Lean;
use std::time::Duration;

/// `[server]` settings of HTTP/2 client connections.
#[derive(Debug, Clone, Copy)]
pub struct H2Settings {
    /// `h2_max_concurrent_streams`.
    pub max_streams: u32,
    /// `max_header_bytes`: the HPACK-decoded header list (RFC 9113 §6.5.2);
    /// more is answered 431 by the `h2` crate itself.
    pub max_header_bytes: usize,
    /// `max_uri_bytes`: a longer `:path` gets 414.
    pub max_uri_bytes: usize,
    /// `keepalive_timeout_secs`: a connection without streams this long
    /// gets GOAWAY and is closed.
    pub idle_timeout: Duration,
    /// `header_timeout_secs`: the connection preface and settings are due
    /// within this long.
    pub handshake_timeout: Duration,
}

impl H2Settings {
    pub fn from_config(s: &crate::config::ServerSection) -> H2Settings {
        H2Settings {
            max_streams: s.h2_max_concurrent_streams,
            max_header_bytes: s.max_header_bytes,
            max_uri_bytes: s.max_uri_bytes,
            idle_timeout: Duration::from_secs(s.keepalive_timeout_secs),
            handshake_timeout: Duration::from_secs(s.header_timeout_secs),
        }
    }
}

/// What the HTTP/2 front end shares across its connections: the lean
/// path's routing table, time-outs and pooled HTTP/1 connections, and the
/// HTTP/2 connections to h2c / h2 instances.
pub struct H2Front {
    pub(crate) lean: Lean,
    pub(crate) settings: H2Settings,
}

impl H2Front {
    pub fn new(lean: Lean, settings: H2Settings) -> H2Front {
        H2Front { lean, settings }
    }
}
