//! A pingora pass-through with no slot logic: every request goes to one fixed
//! upstream. The load benchmark (`benches/load/run.sh`) runs it beside
//! slotproxy, with the same pingora settings (`server::server_conf`), to show
//! what slotproxy's routing costs on top of pingora itself.
//!
//! `cargo run --release --example bare_pingora -- LISTEN UPSTREAM [THREADS]`

use async_trait::async_trait;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;

// Same allocator as slotproxy's binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    /// Same as slotproxy: no response-compression module.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> anyhow::Result<()> {
    // and the same allocator options and idle purge
    slotproxy::allocator::tune();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare_pingora LISTEN UPSTREAM [THREADS]");
    };
    let threads = match args.next() {
        Some(t) => t.parse()?,
        None => 1,
    };
    let mut server = slotproxy::server::bench_server("bare_pingora", &listen, threads);
    let proxy = Bare {
        upstream: upstream.parse()?,
    };
    let mut service =
        pingora_proxy::http_proxy_service_with_name(&server.configuration, proxy, "bare");
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever()
}
