//! The command line: its arguments, and what each way of running does (serve a config
//! file, quick mode, `demo`, `check-config`, `replay`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{config, logging, quick, replay, run};

/// A transparent gRPC reverse proxy.
#[derive(Debug, Parser)]
#[command(
    name = "grpcproxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run with this configuration file (see grpcproxy.example.toml).
    #[arg(long, conflicts_with_all = ["listen", "to"])]
    config: Option<PathBuf>,
    /// Address to listen on (quick mode), e.g. 127.0.0.1:50051 or localhost:50051 (a name
    /// is resolved, and its first address used).
    #[arg(long, requires = "to")]
    listen: Option<String>,
    /// Backend every call is forwarded to (quick mode), e.g. http://127.0.0.1:50052.
    #[arg(long, requires = "listen")]
    to: Option<String>,
    /// Serve /metrics, /healthz, /ready, /clusters and /config here (quick mode), e.g.
    /// 127.0.0.1:9901.
    #[arg(long, requires = "listen")]
    admin: Option<String>,
    /// Write one JSON line per call to this file, or `-` for standard output (quick mode).
    #[arg(long, requires = "listen")]
    access_log: Option<String>,
    /// Serve gRPC-Web too (quick mode), from browsers of any origin (CORS `*`): see README,
    /// "From a browser".
    #[arg(long, requires = "listen")]
    grpc_web: bool,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Human)]
    log_format: logging::Format,
    /// This process's name in the tap's events (wins over tap.instance; default: the host
    /// name, which is the pod's name on Kubernetes, the process id and the start time):
    /// replicas publishing to one stream each say who they are.
    #[arg(long, global = true)]
    instance: Option<String>,
    /// Threads that run calls (default: server.worker_threads, else one per core).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an in-process ping backend and the proxy, run every RPC kind through it, print
    /// the results and exit (in builds with the `demo` feature).
    Demo,
    /// Check a configuration file without binding anything; exit 2 if it is invalid.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Send recorded calls (a tap file or JetStream stream) to a target again and report,
    /// per call, whether status and response bytes match the recording. Exits 0 if all
    /// match, 1 if any differ or fail, 2 if the recording cannot be read.
    Replay(replay::ReplayArgs),
}

/// Runs the `grpcproxy` command with the process's arguments; the exit code says how it
/// went (2: a usage or configuration error).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     grpcproxy_cli::cli::main()
/// }
/// ```
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(&cli.log_level, cli.log_format) {
        eprintln!("grpcproxy: {e:#}");
        return std::process::ExitCode::from(2);
    }
    // A bad configuration file exits 2, like a usage error, naming file, line and field.
    let loaded = match (&cli.command, &cli.config) {
        (Some(Command::CheckConfig { file }), _) | (None, Some(file)) => match config::load(file) {
            Ok(loaded) => match run::prepare(&loaded, cli.command.is_none()) {
                Ok(prepared) => Some((loaded, prepared)),
                Err(e) => {
                    eprintln!("grpcproxy: {}: {e:#}", file.display());
                    return std::process::ExitCode::from(2);
                }
            },
            Err(e) => {
                for line in e.to_string().lines() {
                    eprintln!("grpcproxy: {line}");
                }
                return std::process::ExitCode::from(2);
            }
        },
        (None, None) => match (&cli.listen, &cli.to) {
            (Some(listen), Some(to)) => {
                let args = quick::QuickArgs {
                    listen,
                    to,
                    admin: cli.admin.as_deref(),
                    access_log: cli.access_log.as_deref(),
                    grpc_web: cli.grpc_web,
                };
                let prepared = quick::config(&args)
                    .and_then(|loaded| Ok((run::prepare(&loaded, true)?, loaded)));
                match prepared {
                    Ok((prepared, loaded)) => Some((loaded, prepared)),
                    Err(e) => {
                        eprintln!("grpcproxy: {e:#}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
            _ => None,
        },
        _ => None,
    };
    let workers = cli.worker_threads.map(usize::from).or_else(|| {
        loaded
            .as_ref()
            .and_then(|(loaded, _)| loaded.config.server.worker_threads)
    });
    // Serving (a config file or quick mode), calls run on per-core worker threads of their
    // own and the main thread runs the rest (admin, reloads, health checks, tap); otherwise
    // one runtime with a worker per core runs everything.
    let serving_config = cli.command.is_none() && loaded.is_some();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut builder = if serving_config {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers.unwrap_or(cores));
        builder
    };
    let threads = workers.unwrap_or(cores);
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("grpcproxy: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        use std::process::ExitCode;
        let done = |_: ()| ExitCode::SUCCESS;
        match (cli.command, cli.listen, cli.to, loaded) {
            #[cfg(feature = "demo")]
            (Some(Command::Demo), ..) => crate::demo::run().await.map(done),
            #[cfg(not(feature = "demo"))]
            (Some(Command::Demo), ..) => {
                eprintln!("grpcproxy: this build has no demo; build it with `--features demo`:");
                eprintln!("  cargo run --release --bin grpcproxy --features demo -- demo");
                Ok(ExitCode::from(2))
            }
            (Some(Command::Replay(args)), ..) => Ok(match replay::run(args).await {
                Ok(summary) if summary.all_matched() => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("grpcproxy replay: {e:#}");
                    ExitCode::from(2)
                }
            }),
            (Some(Command::CheckConfig { file }), .., loaded) => {
                for warning in loaded.iter().flat_map(|(l, _)| &l.warnings) {
                    eprintln!("grpcproxy: warning: {warning}");
                }
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            (None, _, _, Some((loaded, prepared))) => {
                let configured = loaded.config.tap.as_ref();
                let configured = configured.and_then(|t| t.get_ref().instance.clone());
                let instance = match cli.instance.or(configured) {
                    Some(name) if !crate::config::valid_instance(&name) => anyhow::bail!(
                        "--instance {name:?} is not {}",
                        crate::config::INSTANCE_RULE
                    ),
                    Some(name) => name,
                    None => crate::tap::default_instance(),
                };
                run::run(loaded, prepared, threads, instance)
                    .await
                    .map(done)
            }
            _ => {
                use clap::CommandFactory;
                let _ = Cli::command().print_help();
                anyhow::bail!("give --config FILE, --listen ADDR --to URL, or a command")
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("grpcproxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
