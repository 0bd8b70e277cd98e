//! `grpcproxy-bench`: the benchmark harness. `backend` serves the benchmark services,
//! `load` drives one shape against a server, `compare` measures grpcproxy against a direct
//! connection, nginx, HAProxy and an L4 relay side by side and writes BENCHMARKS.md, `paired`
//! prints a stored comparison's grpcproxy-against-each-peer table again.

mod backend;
mod compare;
mod load;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

/// The generated protobuf types.
mod pb {
    pub(crate) mod helloworld {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        tonic::include_proto!("helloworld");
    }
    pub(crate) mod bench {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        tonic::include_proto!("grpcproxy.bench");
    }
}

/// grpcproxy's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "grpcproxy-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve helloworld.Greeter and the streaming shapes (prints `listening ADDR`).
    Backend {
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: SocketAddr,
    },
    /// Drive one shape against a server and print a JSON report.
    Load(load::LoadArgs),
    /// Compare direct, grpcproxy, grpcproxy with its tap, nginx, HAProxy and an L4 relay.
    Compare(compare::CompareArgs),
    /// Print grpcproxy against each peer, paired by round, from a stored compare.json.
    Paired {
        /// A `compare.json` that `compare` wrote.
        #[arg(default_value = "bench/results/compare.json")]
        json: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Backend { listen } => backend::run(listen).await,
            Command::Paired { json } => {
                print!("{}", compare::paired::from_file(&json)?);
                Ok(())
            }
            Command::Load(args) => {
                let report = load::run(&args).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            // Stopped by a signal, the run is dropped where it waits: the servers it
            // started are stopped with it (they are killed when dropped).
            Command::Compare(args) => tokio::select! {
                result = compare::run(args) => result,
                signal = stop_signal() => {
                    signal?;
                    anyhow::bail!("stopped by a signal; the servers it started are stopped")
                }
            },
        }
    })
}

/// Completes at the first SIGINT or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = terminate.recv() => Ok(()),
    }
}
