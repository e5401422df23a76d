//! `slotproxy serve`: wires config, control plane, health checks, demo apps
//! and the pingora proxy service together and runs them.
//!
//! Two runtimes: pingora's own for the proxy (its worker threads serve only
//! requests), and a small "control" runtime on its own thread for everything
//! off the hot path — health checks, demo apps, SIGHUP reloads, swaps, the
//! admin API and the metrics listener.
//!
//! Signals: SIGHUP reloads the config; SIGTERM stops accepting and lets
//! requests in flight finish within `server.grace_period_secs`; SIGQUIT hands
//! the proxy's listening sockets to a process started with `serve --upgrade`
//! (pingora does the handover over `server.upgrade_sock`) and passes the
//! control listeners (metrics, admin, demo apps) over
//! `<upgrade_sock>.control` (`handover`), then stops accepting on them;
//! SIGUSR2 does the whole upgrade from inside: it starts
//! `<this binary> serve --config <same> --upgrade`, then SIGQUITs itself.
//! After SIGTERM or SIGQUIT, open client connections drain for
//! `server.drain_secs` (see `drain`) before idle ones are closed.
//!
//! Start-up: a taken proxy address ends it at once (`readiness`); the
//! process counts as up — `/healthz` ok, systemd `READY=1`, `pid_file`
//! written — once pingora's listeners exist, and removes its pid file when
//! it exits (unless a successor has written its own).
//!
//! The state directory has one writer (a `flock`): on SIGQUIT the old
//! process releases it and stops writing, and the new one, waiting for the
//! lock, opens the state then, so it reads what the old one last wrote.

use crate::admin;
use crate::config::StateBackend;
use crate::config::{Config, ServerSection};
use crate::control::swap::SwapEngine;
use crate::control::ControlPlane;
use crate::model::State;
use crate::store::{EtcdStore, FileStore};
use anyhow::Context;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a control listener (metrics, admin) keeps retrying to bind its
/// address while the process it replaces still holds it.
pub const BIND_PATIENCE: Duration = Duration::from_secs(60);

/// Bind `addr`, retrying with backoff for up to `patience` while it is in
/// use — during an upgrade the old process holds the control listeners
/// until it has handed over. With zero patience a clash fails at once.
pub async fn bind_with_retry(
    addr: &str,
    patience: Duration,
) -> std::io::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(20);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                log::debug!("{addr} still in use, retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Resolves when this process has been told to hand over to a successor
/// (SIGQUIT): control listeners should stop and free their address, e.g.
/// `axum::serve(l, app).with_graceful_shutdown(server::handed_over())`.
pub async fn handed_over() {
    let mut rx = handover().subscribe();
    let _ = rx.wait_for(|quit| *quit).await;
}

fn handover() -> &'static tokio::sync::watch::Sender<bool> {
    static TX: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();
    TX.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// How long the old process tries to reach the new one to pass its control
/// listeners on SIGQUIT (the new one listens for them from its start).
const HANDOVER_SEND_PATIENCE: Duration = Duration::from_secs(6);
/// How long the new process waits for them: from before pingora's own
/// hand-over (up to ~5 s), and then a little, for an old process that
/// passes none (an older version): its addresses are bound again then.
const HANDOVER_LISTEN_PATIENCE: Duration = Duration::from_secs(15);
const HANDOVER_TAKE_WAIT: Duration = Duration::from_secs(3);

/// On SIGQUIT pass the control listeners to the new process (pingora
/// itself sends the proxy's sockets), then set `handed_over`.
async fn watch_sigquit(upgrade_sock: String) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::quit()) {
        Ok(mut quit) => {
            if quit.recv().await.is_some() {
                log::info!("SIGQUIT: handing over to the new process");
                let path = crate::handover::sock_path(&upgrade_sock);
                let sent = tokio::task::spawn_blocking(move || {
                    crate::handover::send_offered(&path, HANDOVER_SEND_PATIENCE)
                })
                .await;
                match sent {
                    Ok(Ok(n)) => log::info!("passed {n} control listeners to the new process"),
                    Ok(Err(e)) => log::warn!(
                        "control listeners not passed on ({e}): a new process binds them again"
                    ),
                    Err(e) => log::warn!("control listeners not passed on: {e}"),
                }
                handover().send_replace(true);
            }
        }
        Err(e) => log::error!("cannot watch SIGQUIT: {e}"),
    }
}

/// SIGUSR2: start the new binary with `--upgrade`, then SIGQUIT ourselves so
/// it receives the sockets. Works where the binary path was replaced in place
/// (systemd: `systemctl kill -s USR2 slotproxy`).
async fn upgrade_on_sigusr2(config: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr2 = match signal(SignalKind::user_defined2()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("SIGUSR2 upgrade unavailable: {e}");
            return;
        }
    };
    while usr2.recv().await.is_some() {
        let exe = std::env::args_os()
            .next()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("slotproxy"));
        log::info!("SIGUSR2: starting {} --upgrade", exe.display());
        match std::process::Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--upgrade")
            .spawn()
        {
            Ok(child) => {
                log::info!("new process {} started; handing over", child.id());
                // The child is not waited for: it outlives us.
                drop(child);
                // SAFETY: kill(2) on our own pid has no memory effects.
                unsafe {
                    libc::kill(std::process::id() as i32, libc::SIGQUIT);
                }
                return;
            }
            Err(e) => log::error!(
                "upgrade failed, still serving: cannot start {}: {e}",
                exe.display()
            ),
        }
    }
}

/// Tell systemd (`Type=notify`, `NotifyAccess=all`) that this process is
/// ready and is the service's main process — after an upgrade that moves the
/// service over to the new pid. A no-op outside systemd.
fn notify_systemd() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent = (|| -> std::io::Result<()> {
        use std::os::unix::net::UnixDatagram;
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg.as_bytes(), &addr)?;
        } else {
            sock.send_to(msg.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        log::warn!("cannot notify systemd: {e}");
    }
}

pub struct ServeArgs {
    pub config: PathBuf,
    /// Take the listening sockets over from a running slotproxy.
    pub upgrade: bool,
}

/// Everything started besides the proxy service.
pub struct Runtime {
    pub control: Arc<ControlPlane>,
    pub swaps: Arc<SwapEngine>,
    pub config: Config,
}

/// Validate the config, open the state, start the control runtime. Errors
/// here happen before anything listens.
///
/// After `--upgrade`, `incoming` brings the old process's control listeners
/// (`handover`); those it does not bring are bound once the old process
/// lets go of them.
pub fn start(
    args: &ServeArgs,
    config: Config,
    seed: State,
    incoming: Option<crate::handover::Incoming>,
) -> anyhow::Result<Runtime> {
    let token = admin::resolve_token(&config.admin, std::env::var(crate::api::TOKEN_ENV).ok())?;
    admin::check_exposure(&config.admin.listen, token.as_deref())?;
    crate::access_log::init(&config.access_log)?;
    crate::metrics::metrics();
    crate::metrics::ramp_init(
        crate::ramp::VerdictResult::ALL.map(crate::ramp::VerdictResult::as_str),
    );
    crate::drain::configure(config.server.drain_secs);
    // Control listeners bind here, synchronously, so a port clash is
    // reported before anything serves or the state is touched; after
    // `--upgrade` they are bound later, once the old process lets go.
    let admin_now = bind_now(&config.admin.listen, args.upgrade, "admin API")?;
    let metrics_now = bind_now(&config.metrics.listen, args.upgrade, "metrics")?;
    let mut demo_listeners = Vec::new();
    for app in &config.demo.apps {
        let l = bind_now(&app.listen, args.upgrade, "demo app")?;
        demo_listeners.push((l, app.listen.clone(), app.version.clone()));
    }
    // One writer per state directory: a second slotproxy on it is refused;
    // an upgrading one waits for its predecessor to hand the state over.
    let patience = if args.upgrade {
        BIND_PATIENCE
    } else {
        Duration::ZERO
    };
    crate::metrics::set_state_store_up(true);
    let (control, fleet) = match config.state.backend {
        StateBackend::File => {
            let store = FileStore::open(&config.state.dir, patience)?;
            let control = ControlPlane::open(&config, seed, Box::new(store))
                .with_context(|| format!("cannot apply {}", args.config.display()))?;
            (Arc::new(control), None)
        }
        StateBackend::Etcd => {
            let address = config
                .server
                .listen
                .first()
                .or(config.server.tls_listen.first())
                .cloned()
                .unwrap_or_default();
            let store = EtcdStore::open(&config.state, &node_id(&address), &address, patience)?;
            let control = ControlPlane::open(&config, seed, Box::new(store.clone()))
                .with_context(|| format!("cannot apply {}", args.config.display()))?;
            let control = Arc::new(control);
            // every node, the writing one included, follows the store
            store.follow(control.clone());
            (control, Some(store))
        }
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        // two workers: a slow disk (fsync) or a long compile on one must
        // not stall health checks, swap timers and the admin API together
        .worker_threads(2)
        .thread_name("slotproxy-control")
        .enable_all()
        .build()?;
    let swaps = SwapEngine::new(control.clone(), rt.handle().clone());
    // Repair what an interrupted swap left, then the declarative swap of
    // production's target_build_version.
    let s = swaps.clone();
    let on_start = control.seeded_here();
    rt.spawn(async move {
        s.recover().await;
        // a fleet's declarative swap on start: by the node that seeded only
        if on_start {
            s.reconcile();
        }
        // then the swaps a dead node of the fleet leaves behind
        s.recover_forever().await;
    });
    let upgrade_sock = config.server.upgrade_sock.clone();
    let (c, health, path) = (control.clone(), config.health.clone(), args.config.clone());
    let s = swaps.clone();
    let (admin_addr, metrics_addr) = (config.admin.listen.clone(), config.metrics.listen.clone());
    let admin_state =
        admin::AdminState::new(control.clone(), swaps.clone(), token, args.config.clone())
            .with_listeners(
                config.server.listen.clone(),
                config.server.tls_listen.clone(),
            )
            .with_fleet(fleet);
    std::thread::Builder::new()
        .name("slotproxy-control".into())
        .spawn(move || {
            rt.block_on(async move {
                // the old process's listeners, passed over within moments
                // of its SIGQUIT (which came before pingora's bootstrap
                // returned); off this thread, the proxy serves meanwhile
                let mut passed = match incoming {
                    Some(i) => tokio::task::spawn_blocking(move || i.take(HANDOVER_TAKE_WAIT))
                        .await
                        .unwrap_or_default(),
                    None => Default::default(),
                };
                let mut passed_or = |now: Option<std::net::TcpListener>, addr: &str| {
                    now.or_else(|| passed.remove(addr))
                };
                for (l, addr, version) in demo_listeners {
                    let app = crate::demo::router(&version, &addr);
                    let l = passed_or(l, &addr);
                    tokio::spawn(serve_control("demo app", l, addr, app));
                }
                tokio::spawn(serve_control(
                    "metrics",
                    passed_or(metrics_now, &metrics_addr),
                    metrics_addr,
                    crate::metrics::router(),
                ));
                tokio::spawn(serve_control(
                    "admin API",
                    passed_or(admin_now, &admin_addr),
                    admin_addr,
                    admin::router(admin_state),
                ));
                // a socket passed over but no longer in the config closes
                drop(passed);
                tokio::spawn(watch_sigquit(upgrade_sock));
                tokio::spawn(crate::drain::start_on_signals());
                let handing = c.clone();
                tokio::spawn(async move {
                    handed_over().await;
                    // the successor becomes the one writer of the state
                    handing.release_store();
                });
                tokio::spawn(upgrade_on_sigusr2(path.clone()));
                tokio::spawn(crate::health::run(c.clone(), health));
                if let Some(events) = c.outlier_events() {
                    let c = c.clone();
                    // the activity log's writes are durable (fsync): off the runtime
                    let _ = std::thread::Builder::new()
                        .name("slotproxy-outlier-log".into())
                        .spawn(move || c.record_outlier_events(events));
                }
                tokio::spawn(crate::control::ramp::run(c.clone()));
                reload_on_sighup(c, s, path).await;
            })
        })?;
    Ok(Runtime {
        control,
        swaps,
        config,
    })
}

/// This node's name in the fleet list: host name and proxy address, which
/// stay the same across restarts and upgrades of the node.
fn node_id(address: &str) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if r == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "node".into()
    };
    format!("{host}/{address}")
}

/// Bind a control listener (admin, metrics, demo app) now, unless this
/// process is taking over from another one, which still holds it.
fn bind_now(
    addr: &str,
    upgrade: bool,
    what: &str,
) -> anyhow::Result<Option<std::net::TcpListener>> {
    if upgrade {
        return Ok(None);
    }
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("{what} cannot listen on {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(Some(l))
}

/// Serve `router` on the listener bound at start, or (after `--upgrade`)
/// on `addr` once it is free; free the address when the sockets are handed
/// over to a successor, and drain the open connections (`drain`).
async fn serve_control(
    what: &'static str,
    now: Option<std::net::TcpListener>,
    addr: String,
    router: axum::Router,
) {
    let listener = match now {
        Some(l) => l
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l)),
        None => bind_with_retry(&addr, BIND_PATIENCE).await,
    };
    match listener {
        Ok(l) => {
            log::info!("{what} on http://{addr}");
            // passed to the successor at an upgrade (`handover`)
            crate::handover::offer(&addr, std::os::fd::AsFd::as_fd(&l));
            let router = router.layer(axum::middleware::map_response(
                crate::drain::close_when_draining,
            ));
            let served = match crate::drain::ReleasingListener::new(l, handed_over()) {
                Ok(l) => {
                    axum::serve(l, router)
                        .with_graceful_shutdown(crate::drain::window_over())
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                log::error!("{what} stopped: {e}");
            }
        }
        Err(e) => log::error!("{what} cannot listen on {addr}: {e}"),
    }
}

/// Re-read the config on every SIGHUP; an invalid one keeps the running state.
async fn reload_on_sighup(control: Arc<ControlPlane>, swaps: Arc<SwapEngine>, path: PathBuf) {
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
        let (c, s, p) = (control.clone(), swaps.clone(), path.clone());
        // reading, validating and persisting: off the runtime's workers
        match tokio::task::spawn_blocking(move || crate::control::reload::reload(&c, &s, &p)).await
        {
            Ok(Ok(())) => log::info!("reloaded {}", path.display()),
            Ok(Err(e)) => log::error!("reload refused, running state kept: {e}"),
            Err(e) => log::error!("reload failed: {e}"),
        }
    }
}

/// A bootstrapped pingora server for the load benchmark's stand-ins
/// (`examples/bare_pingora.rs`, `examples/floors.rs`): slotproxy's server
/// settings and allocator collector, `threads` workers, listening on
/// `listen` (the caller adds it to its service), its upgrade socket and pid
/// file in the temp dir under `name`.
pub fn bench_server(name: &str, listen: &str, threads: usize) -> Server {
    let dir = std::env::temp_dir();
    let file = |ext: &str| {
        dir.join(format!("{name}_{}.{ext}", std::process::id()))
            .display()
            .to_string()
    };
    let section = ServerSection {
        listen: vec![listen.to_string()],
        threads,
        upgrade_sock: file("sock"),
        pid_file: file("pid"),
        ..ServerSection::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), server_conf(&section));
    server.bootstrap();
    crate::allocator::start_collector();
    server
}

/// pingora's settings for `[server]`. Public so `examples/bare_pingora.rs`
/// runs with exactly the same ones when benchmarked against slotproxy.
pub fn server_conf(server: &ServerSection) -> ServerConf {
    ServerConf {
        threads: server.threads,
        // the drain window runs inside pingora's grace period
        grace_period_seconds: Some(crate::drain::pingora_grace_secs(
            server.grace_period_secs,
            server.drain_secs,
        )),
        graceful_shutdown_timeout_seconds: Some(server.graceful_shutdown_timeout_secs),
        upgrade_sock: server.upgrade_sock.clone(),
        pid_file: server.pid_file.clone(),
        // No work stealing: pingora runs a current-thread tokio runtime per
        // worker thread, each connection on one of them for its life. It
        // skips the multi-thread scheduler's cross-thread bookkeeping
        // (measured: ~3% less CPU per request with one thread, far less
        // with two sharing a core), and tasks that stay on their thread let
        // each worker give its freed memory back when idle (allocator.rs;
        // with stealing ~26 MiB stayed after 10,000 connections closed).
        // docs/performance/history.md, "Purge delay with collectors".
        work_stealing: false,
        ..ServerConf::default()
    }
}

/// Run the proxy until a shutdown signal; SIGTERM drains, SIGQUIT hands the
/// sockets to a process started with `--upgrade`, then drains.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Refuse a bad config before taking anything over from a running
    // process; the same reading configures pingora and the control plane.
    let (cfg, seed) = Config::load(&args.config)?;
    crate::readiness::exit_when_listeners_fail();
    let tls_listen: &[String] = match (&cfg.server.tls_cert_path, &cfg.server.tls_key_path) {
        (Some(_), Some(_)) => &cfg.server.tls_listen,
        _ => &[],
    };
    // A taken proxy address is refused now, in one line; pingora would
    // retry it for 30 s and then panic in a thread of its own. After
    // `--upgrade` the sockets come from the old process instead.
    if !args.upgrade {
        crate::readiness::check_free("server.listen", &cfg.server.listen)?;
        crate::readiness::check_free("server.tls_listen", tls_listen)?;
    }
    let proxy_addrs: Vec<String> = cfg
        .server
        .listen
        .iter()
        .chain(tls_listen)
        .cloned()
        .collect();
    // Before pingora's bootstrap waits for the proxy's sockets: the old
    // process sends its control listeners alongside them.
    let incoming = if args.upgrade {
        let path = crate::handover::sock_path(&cfg.server.upgrade_sock);
        Some(
            crate::handover::expect(path.clone(), HANDOVER_LISTEN_PATIENCE)
                .with_context(|| format!("cannot listen on {}", path.display()))?,
        )
    } else {
        None
    };
    let conf = server_conf(&cfg.server);
    let opt = Opt {
        upgrade: args.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // With --upgrade this waits (up to 5 s) for the old process's sockets,
    // which it sends on SIGQUIT; only then is the shared state opened.
    server.bootstrap();
    crate::allocator::start_collector();
    let rt = start(&args, cfg, seed, incoming)?;
    let cfg = &rt.config;
    // Connection limits, idle and header time-outs, header size (limits.rs),
    // around slotproxy's one request engine: HTTP/1 clients on the lean
    // path (lean.rs), HTTP/2 clients on its HTTP/2 front end (edge/),
    // sharing the pooled connections to the instances.
    crate::request_check::allow_underscores(cfg.server.underscores_in_headers);
    let limits = crate::limits::Limits::from_config(&cfg.server);
    log::info!(
        "at most {} client connections, {} per client address",
        limits.max_connections,
        limits.max_connections_per_ip
    );
    if !(cfg.server.lean_http1 && cfg.server.lean_http2) {
        log::warn!(
            "server.lean_http1 and server.lean_http2 no longer turn anything off: \
             every request is served by slotproxy's own engine (remove them from the config)"
        );
    }
    let engine = crate::lean::Lean::new(rt.control.table(), &cfg.server);
    let h2 = crate::edge::H2Front::new(
        engine.clone(),
        crate::edge::H2Settings::from_config(&cfg.server),
    );
    let mut service = pingora_core::services::listening::Service::new(
        "slotproxy".into(),
        crate::limits::Limited::new(engine, h2, limits),
    );
    for addr in &cfg.server.listen {
        service.add_listener(crate::limits::plain_listener(addr));
    }
    if let (Some(cert), Some(key)) = (&cfg.server.tls_cert_path, &cfg.server.tls_key_path) {
        for addr in &cfg.server.tls_listen {
            let mut tls = pingora_core::listeners::tls::TlsSettings::intermediate(
                &cert.to_string_lossy(),
                &key.to_string_lossy(),
            )
            .map_err(|e| anyhow::anyhow!("server.tls_listen {addr}: {e}"))?;
            // ALPN: h2 first, http/1.1 for clients without it
            tls.enable_h2();
            service.add_tls_with_settings(addr, None, tls);
        }
    }
    server.add_service(service);
    let pid_file = PathBuf::from(&cfg.server.pid_file);
    let pid = std::process::id();
    let serving = format!(
        "slotproxy listening on {} (state {}, pid {pid})",
        proxy_addrs.join(", "),
        rt.control.store_description()
    );
    let written = pid_file.clone();
    // Up once pingora's listeners exist: only then does `/healthz` say ok,
    // systemd hear READY=1 and the pid file name this process.
    crate::readiness::watch(proxy_addrs, move || {
        notify_systemd();
        if let Err(e) = crate::pid_file::write(&written, pid) {
            log::error!("cannot write pid_file {}: {e}", written.display());
        }
        log::info!("{serving}");
    })?;
    // SIGTERM (drained), SIGINT, or SIGQUIT (handed over, drained)
    server.run(pingora_core::server::RunArgs::default());
    // After an upgrade the successor has written its own pid: leave it.
    crate::pid_file::remove_if_ours(&pid_file, pid);
    std::process::exit(0)
}
