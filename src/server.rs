//! `slotproxy serve`: wires config, control plane, health checks, demo apps
//! and the pingora proxy service together and runs them.
//!
//! Two runtimes: pingora's own for the proxy (its worker threads serve only
//! requests), and a small "control" runtime on its own thread for everything
//! off the hot path — health checks, demo apps, SIGHUP reloads.

use crate::config::{Config, ServerSection};
use crate::control::ControlPlane;
use crate::proxy::SlotProxy;
use crate::store::FileStore;
use anyhow::Context;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct ServeArgs {
    pub config: PathBuf,
    /// Take the listening sockets over from a running slotproxy.
    pub upgrade: bool,
}

/// Everything started besides the proxy service.
pub struct Runtime {
    pub control: Arc<ControlPlane>,
    pub config: Config,
}

/// Validate the config, open the state, start the control runtime. Errors
/// here happen before anything listens.
pub fn start(args: &ServeArgs) -> anyhow::Result<Runtime> {
    let (config, seed) = Config::load(&args.config)?;
    let store = FileStore::open(&config.state.dir)?;
    let control = Arc::new(
        ControlPlane::open(&config, seed, Box::new(store))
            .with_context(|| format!("cannot apply {}", args.config.display()))?,
    );
    // Demo apps bind here, synchronously, so a port clash is reported now.
    let mut demo_listeners = Vec::new();
    for app in &config.demo.apps {
        let l = std::net::TcpListener::bind(&app.listen)
            .with_context(|| format!("demo app cannot listen on {}", app.listen))?;
        l.set_nonblocking(true)?;
        demo_listeners.push((l, app.version.clone()));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("slotproxy-control")
        .enable_all()
        .build()?;
    let (c, health, path) = (control.clone(), config.health.clone(), args.config.clone());
    std::thread::Builder::new()
        .name("slotproxy-control".into())
        .spawn(move || {
            rt.block_on(async move {
                for (l, version) in demo_listeners {
                    tokio::spawn(async move {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                if let Err(e) = crate::demo::serve(l, &version).await {
                                    log::error!("demo app stopped: {e}");
                                }
                            }
                            Err(e) => log::error!("demo app: {e}"),
                        }
                    });
                }
                tokio::spawn(crate::health::run(c.clone(), health));
                reload_on_sighup(c, path).await;
            })
        })?;
    Ok(Runtime { control, config })
}

/// Re-read the config on every SIGHUP; an invalid one keeps the running state.
async fn reload_on_sighup(control: Arc<ControlPlane>, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("SIGHUP reload unavailable: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    while hup.recv().await.is_some() {
        match reload(&control, &path) {
            Ok(()) => log::info!("reloaded {}", path.display()),
            Err(e) => log::error!("reload refused, running state kept: {e:#}"),
        }
    }
}

/// Apply the config file at `path` to the running control plane.
pub fn reload(control: &ControlPlane, path: &Path) -> anyhow::Result<()> {
    let (config, seed) = Config::load(path)?;
    control.apply_config(&config, seed)?;
    Ok(())
}

/// pingora's settings for `[server]`. Public so `examples/bare_pingora.rs`
/// runs with exactly the same ones when benchmarked against slotproxy.
pub fn server_conf(server: &ServerSection) -> ServerConf {
    ServerConf {
        threads: server.threads,
        grace_period_seconds: Some(server.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(server.graceful_shutdown_timeout_secs),
        upgrade_sock: server.upgrade_sock.clone(),
        pid_file: server.pid_file.clone(),
        // One thread has no one to steal from: pingora then runs a
        // current-thread tokio runtime, which skips the multi-thread
        // scheduler's cross-thread bookkeeping (measured: ~3% less CPU per
        // request, see BENCHMARKS.md).
        work_stealing: server.threads > 1,
        ..ServerConf::default()
    }
}

/// Run the proxy until a shutdown signal; SIGTERM drains, SIGQUIT hands the
/// sockets to a process started with `--upgrade`.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let rt = start(&args)?;
    let cfg = &rt.config;
    let conf = server_conf(&cfg.server);
    let opt = Opt {
        upgrade: args.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let proxy = SlotProxy::new(
        rt.control.table(),
        Duration::from_millis(cfg.server.connect_timeout_ms),
    );
    let mut service =
        pingora_proxy::http_proxy_service_with_name(&server.configuration, proxy, "slotproxy");
    for addr in &cfg.server.listen {
        service.add_tcp(addr);
    }
    server.add_service(service);
    log::info!(
        "slotproxy listening on {} (state {})",
        cfg.server.listen.join(", "),
        rt.control.store_description()
    );
    server.run_forever()
}
