//! The `slotproxy` binary: `serve` runs the proxy; `demo-app` runs one demo
//! app instance on its own; the other verbs are clients of the admin API
//! (see `slotproxy::cli`).

use clap::{Parser, Subcommand};

// pingora allocates several small buffers per request; glibc's malloc showed
// up as ~15% of the proxy's CPU under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;

/// mimalloc's defaults commit arenas eagerly and keep freed memory: 10,000
/// idle keep-alive clients cost 88 KiB each and the memory stayed after they
/// left. Lazily committed arenas and immediate purging return it on close
/// (with pingora's read buffer gone too, an idle connection now holds
/// ~15 KiB: BENCHMARKS.md, memory). Immediate purging costs CPU per request
/// (~21 % under the load bench, BENCHMARKS.md "Issue 11"); a delay with a
/// periodic collect is the open alternative. mimalloc reads these
/// options when it starts, before `main`, so the process re-executes itself
/// once with them set; a `MIMALLOC_*` variable the operator set still wins.
fn tune_allocator() {
    use std::os::unix::process::CommandExt;
    const MARK: &str = "SLOTPROXY_ALLOCATOR_TUNED";
    if std::env::var_os(MARK).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(MARK, "1");
    for (name, value) in [
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        ("MIMALLOC_PURGE_DELAY", "0"),
        ("MIMALLOC_PURGE_DECOMMITS", "1"),
    ] {
        if std::env::var_os(name).is_none() {
            cmd.env(name, value);
        }
    }
    // exec only returns on failure (e.g. the binary was replaced on disk):
    // then run as we are, with mimalloc's defaults.
    let _ = cmd.exec();
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
    Client(Box<slotproxy::cli::ClientCommand>),
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
            if let Err(e) = slotproxy::cli::run(*cmd) {
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
