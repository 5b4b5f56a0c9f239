//! The `hyperty` binary: a messaging node with everything embedded.
//!
//! `hyperty` (no arguments) serves domain `localhost` on `127.0.0.1:9090`. On start it
//! prints exactly one line to stdout, `listening on ws://HOST:PORT/ws`; logs go to
//! stderr. SIGINT/SIGTERM stop it gracefully.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hyperty::config::{NodeConfig, DEFAULT_TOML};

/// Frames are allocated on the worker that read them and freed on the one that wrote
/// them out; mimalloc's per-thread free lists take that without the lock contention
/// of glibc's arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "hyperty",
    version,
    about = "Messaging node for hyperties (reTHINK wire over WebSocket)"
)]
struct Cli {
    /// TOML configuration file (defaults: `hyperty --print-config`).
    #[arg(long, env = "HYPERTY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:9090 (port 0 picks a free port).
    #[arg(long, env = "HYPERTY_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// The domain this node serves.
    #[arg(long, env = "HYPERTY_DOMAIN", global = true)]
    domain: Option<String>,
    /// `required` (default): every session must open with a token from the node's
    /// identity provider; `optional`: sessions without one are anonymous.
    #[arg(long, env = "HYPERTY_AUTH", global = true)]
    auth: Option<hyperty::config::AuthMode>,
    /// The Redis this domain's nodes share (`redis://127.0.0.1:6379`): run this node
    /// as one of many serving the domain (sets `[cluster] redis`).
    #[arg(long, env = "HYPERTY_CLUSTER", global = true)]
    cluster: Option<String>,
    /// Print the configuration and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a messaging node (the default).
    Serve,
    /// Read webinos events in their JSON form, one per line on stdin, and print
    /// each one's id (or `invalid: <reason>`), one per line.
    EventId,
}

fn load(cli: &Cli) -> Result<NodeConfig, String> {
    let mut cfg = match &cli.config {
        Some(path) => NodeConfig::from_file(path).map_err(|e| e.to_string())?,
        None => NodeConfig::default(),
    };
    if let Some(l) = cli.listen {
        cfg.node.listen = l;
    }
    if let Some(d) = &cli.domain {
        cfg.node.domain = d.clone();
    }
    if let Some(a) = cli.auth {
        cfg.auth.mode = a;
    }
    if let Some(url) = &cli.cluster {
        cfg.cluster.redis = Some(url.clone());
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn serve(cfg: NodeConfig) -> Result<(), String> {
    let listener = TcpListener::bind(cfg.node.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.node.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    actix_rt::System::new().block_on(async move {
        // handlers are in place before anyone can learn the address and signal us
        let shutdown = shutdown_signal()?;
        let node = hyperty::node::start(listener, cfg).map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on ws://{addr}/ws").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        drop(out);
        shutdown.await;
        tracing::info!("signal received, shutting down");
        node.stop().await;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM; the handlers are registered when this is called.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if matches!(cli.command, Some(Command::EventId)) {
        let stdin = std::io::stdin().lock();
        let stdout = std::io::stdout().lock();
        return match hyperty::actors::events::event_id_lines(stdin, stdout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hyperty: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hyperty: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        let untouched = cli.config.is_none()
            && cli.listen.is_none()
            && cli.domain.is_none()
            && cli.auth.is_none()
            && cli.cluster.is_none();
        print!(
            "{}",
            if untouched {
                DEFAULT_TOML.to_owned()
            } else {
                cfg.to_toml()
            }
        );
        return ExitCode::SUCCESS;
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve | Command::EventId => serve(cfg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyperty: {e}");
            ExitCode::FAILURE
        }
    }
}
