//! The `grpcproxy` binary: the `grpcproxy_cli` library does the work.

fn main() -> std::process::ExitCode {
    grpcproxy_cli::cli::main()
}
