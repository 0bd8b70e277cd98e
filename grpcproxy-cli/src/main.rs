//! The `grpcproxy` binary: wires configuration to the grpcproxy library.

mod demo;
mod logging;
mod quick;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

/// A transparent gRPC reverse proxy.
#[derive(Debug, Parser)]
#[command(
    name = "grpcproxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Address to listen on (quick mode), e.g. 127.0.0.1:50051.
    #[arg(long, requires = "to")]
    listen: Option<SocketAddr>,
    /// Backend every call is forwarded to (quick mode), e.g. http://127.0.0.1:50052.
    #[arg(long, requires = "listen")]
    to: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Human)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an in-process ping backend and the proxy, run every RPC kind through it, print
    /// the results and exit.
    Demo,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(&cli.log_level, cli.log_format) {
        eprintln!("grpcproxy: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("grpcproxy: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match (cli.command, cli.listen, cli.to) {
            (Some(Command::Demo), _, _) => demo::run().await,
            (None, Some(listen), Some(to)) => quick::run(listen, &to).await,
            _ => {
                use clap::CommandFactory;
                let _ = Cli::command().print_help();
                anyhow::bail!("give --listen ADDR --to URL, or a command")
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpcproxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
