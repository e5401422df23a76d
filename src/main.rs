//! The `slotproxy` binary: `serve` runs the proxy; `demo-app` runs one demo
//! app instance on its own; the other verbs are clients of the admin API
//! (see `slotproxy::cli`).

use clap::{Parser, Subcommand};

// pingora allocates several small buffers per request; glibc's malloc showed
// up as ~15% of the proxy's CPU under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;

/// mimalloc's defaults keep freed memory committed: after 10,000 idle
/// keep-alive clients came and went, slotproxy kept ~880 MiB. An edge proxy
/// sees such bursts, so commit arenas lazily and give purged memory back to
/// the OS at once (BENCHMARKS.md, memory). A `MIMALLOC_*` variable set by
/// the operator still wins.
fn tune_allocator() {
    // mimalloc v2's option numbers (mimalloc.h, enum mi_option_e)
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    for (option, env, value) in [
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (PURGE_DECOMMITS, "MIMALLOC_PURGE_DECOMMITS", 1),
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: sets a plain integer option; mimalloc synchronizes it.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

#[derive(Parser)]
#[command(
    name = "slotproxy",
    version,
    about = "Deployment slots for self-hosted apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Take over the listening sockets of a running slotproxy (then
        /// send it SIGQUIT).
        #[arg(long)]
        upgrade: bool,
    },
    /// Run one demo app instance (what the shipped config.toml starts).
    DemoApp {
        #[arg(long)]
        listen: String,
        #[arg(long, default_value = "v1")]
        version: String,
    },
    #[command(flatten)]
    Client(slotproxy::cli::ClientCommand),
}

fn main() {
    tune_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, upgrade } => {
            slotproxy::server::serve(slotproxy::server::ServeArgs { config, upgrade })
        }
        Command::DemoApp { listen, version } => demo_app(&listen, &version),
        Command::Client(cmd) => {
            if let Err(e) = slotproxy::cli::run(cmd) {
                eprintln!("slotproxy: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("slotproxy: {e:#}");
        std::process::exit(2);
    }
}

fn demo_app(listen: &str, version: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("demo app {version} listening on {}", listener.local_addr()?);
        slotproxy::demo::serve(listener, version).await?;
        Ok(())
    })
}
