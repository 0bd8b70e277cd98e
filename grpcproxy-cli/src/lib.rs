//! The `grpcproxy` binary as a library (its `main.rs` only calls [`cli::main`]): the
//! configuration file and its checks, the router and clusters built from it, telemetry,
//! the admin endpoints, the tap, replay, and the per-core workers that serve it all.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     grpcproxy_cli::cli::main()
//! }
//! ```

mod admin;
#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod cli;
mod cluster;
pub mod config;
#[cfg(feature = "demo")]
mod demo;
mod logging;
mod quick;
mod replay;
mod router;
mod run;
mod signals;
mod tap;
mod telemetry;
mod workers;
