//! The interop matrix: grpcio, grpc-js and tonic clients × grpcio, grpc-js and tonic
//! backends, each pair directly, through the binary's quick mode and through the library
//! fallback, every check (see `interop/`). Prints the table and fails on any failure.
//!
//! The grpcio and grpc-js peers come from `bash interop/install.sh` (scripts/test.sh runs
//! it); without them this test fails, it does not skip.

mod support;

use std::io::Write as _;
use std::time::Instant;

use grpcproxy_interop::matrix::{target_label, Path, Report};
use grpcproxy_interop::peers::{run_client, start_backend, Runtime};
use grpcproxy_interop::{backend, client, library_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_and_backend_through_the_proxy() {
    let started = Instant::now();
    let (grpcio, grpc_js) = tokio::join!(
        start_backend(Runtime::Grpcio),
        start_backend(Runtime::GrpcJs)
    );
    let tonic = backend::serve().await;
    let backends = [
        (Runtime::Grpcio, grpcio.addr()),
        (Runtime::GrpcJs, grpc_js.addr()),
        (Runtime::Tonic, tonic.addr()),
    ];

    let (mut proxies, mut libraries, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for (runtime, addr) in backends {
        let url = format!("http://{addr}");
        let quick = support::start(&["--listen", "127.0.0.1:0", "--to", &url], 1);
        let library = library_proxy(&url).await;
        targets.push((target_label(runtime, Path::Direct), addr.to_string()));
        targets.push((
            target_label(runtime, Path::Quick),
            quick.listening[0].to_string(),
        ));
        targets.push((
            target_label(runtime, Path::Library),
            library.addr().to_string(),
        ));
        proxies.push(quick);
        libraries.push(library);
    }

    // One client at a time: the deadline and cancellation checks time things.
    let from_grpcio = run_client(Runtime::Grpcio, &targets).await;
    let from_grpc_js = run_client(Runtime::GrpcJs, &targets).await;
    let from_tonic = client::run(&targets).await;
    let report = Report::new(&[
        (Runtime::Grpcio, from_grpcio),
        (Runtime::GrpcJs, from_grpc_js),
        (Runtime::Tonic, from_tonic),
    ]);
    let table = report.table();
    // Straight to stderr, past the test harness's capture: the table is the suite's output.
    let _ = writeln!(
        std::io::stderr(),
        "\ninterop matrix ({:.1} s):\n{table}",
        started.elapsed().as_secs_f64()
    );
    assert!(report.failures().is_empty(), "interop failures:\n{table}");
}
