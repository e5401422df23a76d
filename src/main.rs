//! The `slotproxy` binary: `serve` runs the proxy; `demo-app` runs one demo
//! app instance on its own; the other verbs are clients of the admin API
//! (see `slotproxy::cli`).

use clap::{Parser, Subcommand};

// pingora allocates several small buffers per request; glibc's malloc showed
// up as ~15% of the proxy's CPU under load (docs/performance/history.md). Its options and
// idle purge: `slotproxy::allocator`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;

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
    slotproxy::allocator::tune();
    slotproxy::logging::init();
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
