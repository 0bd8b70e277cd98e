//! The `grpcproxy` binary: the `grpcproxy_cli` library does the work.

/// mimalloc rather than the system allocator (the `mimalloc` feature, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: grpcproxy_cli::allocator::MiMalloc = grpcproxy_cli::allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    grpcproxy_cli::cli::main()
}
