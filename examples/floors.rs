//! The floors of pingora's layers, for the load benchmark
//! (`benches/load/run.sh` with `FLOORS=1`): how fast each layer under
//! pingora-proxy can go on its own, with the same pingora settings
//! (`server::server_conf`), listener and allocator as slotproxy.
//!
//! * `memory`: a pingora-core `HttpServerApp` answering every request with
//!   a fixed 20-byte body from memory — pingora's HTTP/1 server session and
//!   keep-alive loop, nothing else (nginx `return 200` is its peer);
//! * `forward`: the same app forwarding each request to one upstream through
//!   pingora-core's HTTP/1 client session and connector (its connection
//!   pool), body streamed back — no pingora-proxy;
//! * `h2c-memory`: an h2c server with the `h2` crate and slotproxy's
//!   HTTP/2 settings (`edge::h2`'s windows and stream limit), each stream
//!   spawned as slotproxy spawns it and answered with the same body from
//!   memory — what HTTP/2 itself costs per request on this runtime, before
//!   any proxying (the floor under `slotproxy-h2c`).
//!
//! Bare pingora-proxy is `examples/bare_pingora.rs`.
//!
//! `cargo run --release --example floors -- memory LISTEN [THREADS]`
//! `cargo run --release --example floors -- forward LISTEN UPSTREAM [THREADS]`
//! `cargo run --release --example floors -- h2c-memory LISTEN [THREADS]`

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use std::net::SocketAddr;
use std::sync::Arc;

// Same allocator as slotproxy's binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = b"hello from upstream\n";

enum Floor {
    Memory,
    Forward(Box<Upstream>),
}

struct Upstream {
    peer: HttpPeer,
    connector: Connector,
}

impl Floor {
    async fn answer(&self, http: &mut ServerSession) -> pingora_error::Result<()> {
        match self {
            Floor::Memory => {
                let mut resp = ResponseHeader::build(200, Some(2))?;
                resp.insert_header("content-type", "text/plain")?;
                resp.insert_header("content-length", BODY.len())?;
                http.write_response_header(Box::new(resp)).await?;
                http.write_response_body(Bytes::from_static(BODY), true)
                    .await
            }
            Floor::Forward(up) => {
                let (peer, connector) = (&up.peer, &up.connector);
                let (mut up, _reused) = connector.get_http_session(peer).await?;
                up.write_request_header(Box::new(http.req_header().clone()))
                    .await?;
                up.read_response().await?;
                let resp = up
                    .resp_header()
                    .cloned()
                    .unwrap_or_else(|| ResponseHeader::build(502, None).expect("a valid status"));
                http.write_response_header(Box::new(resp)).await?;
                while let Some(chunk) = up.read_body_bytes().await? {
                    http.write_response_body(chunk, false).await?;
                }
                http.finish_body().await?;
                connector.release_http_session(up, peer, None).await;
                Ok(())
            }
        }
    }
}

/// The `h2c-memory` floor (see the top of the file).
struct H2Memory;

#[async_trait]
impl pingora_core::apps::ServerApp for H2Memory {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora_core::protocols::Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<pingora_core::protocols::Stream> {
        let mut b = h2::server::Builder::new();
        b.max_concurrent_streams(100)
            .initial_window_size(256 * 1024)
            .initial_connection_window_size(2 * 1024 * 1024);
        let Ok(mut conn) = b.handshake::<_, Bytes>(stream).await else {
            return None;
        };
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            tokio::spawn(async move {
                let resp = http::Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .header("content-length", BODY.len())
                    .body(())
                    .expect("a valid response");
                if let Ok(mut tx) = respond.send_response(resp, false) {
                    let _ = tx.send_data(Bytes::from_static(BODY), true);
                }
            });
        }
        None
    }
}

#[async_trait]
impl HttpServerApp for Floor {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(http.read_request().await, Ok(true)) {
            return None;
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(0) });
        if let Err(e) = self.answer(&mut http).await {
            log::debug!("floor request failed: {e}");
            return None;
        }
        let persisted = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(s) => s.map(|s| ReusedHttpStream::from_reusable_stream(s, persisted)),
            Err(_) => None,
        }
    }
}

fn main() -> anyhow::Result<()> {
    // and the same allocator options and idle purge
    slotproxy::allocator::tune();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: floors memory LISTEN [THREADS] | floors forward LISTEN UPSTREAM [THREADS] \
                 | floors h2c-memory LISTEN [THREADS]";
    if let ["h2c-memory", listen, ref rest @ ..] =
        args.iter().map(String::as_str).collect::<Vec<_>>()[..]
    {
        let threads = rest.first().copied().map_or(Ok(1), str::parse)?;
        let mut server = slotproxy::server::bench_server("floors", listen, threads);
        let mut service =
            pingora_core::services::listening::Service::new("floor".to_string(), H2Memory);
        service.add_listener(slotproxy::limits::plain_listener(listen));
        server.add_service(service);
        server.run_forever()
    }
    let (floor, listen, threads) = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["memory", listen, ref rest @ ..] => (Floor::Memory, listen, rest.first().copied()),
        ["forward", listen, upstream, ref rest @ ..] => {
            let upstream: SocketAddr = upstream
                .parse()
                .map_err(|e| anyhow::anyhow!("UPSTREAM {upstream:?} is not host:port: {e}"))?;
            let floor = Floor::Forward(Box::new(Upstream {
                peer: HttpPeer::new(upstream, false, String::new()),
                connector: Connector::new(None),
            }));
            (floor, listen, rest.first().copied())
        }
        _ => anyhow::bail!("{usage}"),
    };
    let threads = threads.map_or(Ok(1), str::parse)?;
    let mut server = slotproxy::server::bench_server("floors", listen, threads);
    let mut service = pingora_core::services::listening::Service::new("floor".to_string(), floor);
    service.add_listener(slotproxy::limits::plain_listener(listen));
    server.add_service(service);
    server.run_forever()
}
