//! The interop matrix: grpcio, grpc-js and tonic clients × grpcio, grpc-js and tonic
//! backends, each pair directly, through the binary's quick mode and through the library
//! fallback, every check (see `interop/`); and the official grpc-web client (binary and
//! text) through both proxies, which serve gRPC-Web besides gRPC (`--grpc-web`, the
//! library's `GrpcWebLayer`). Prints the table and fails on any failure.
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
        let quick = support::start(&["--listen", "127.0.0.1:0", "--to", &url, "--grpc-web"], 1);
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
    // gRPC-Web clients reach backends only through a proxy.
    let proxied: Vec<(String, String)> = targets
        .iter()
        .filter(|(label, _)| !label.ends_with(Path::Direct.name()))
        .cloned()
        .collect();
    let from_web = run_client(Runtime::GrpcWeb, &proxied).await;
    let from_web_text = run_client(Runtime::GrpcWebText, &proxied).await;
    let report = Report::new(&[
        (Runtime::Grpcio, from_grpcio),
        (Runtime::GrpcJs, from_grpc_js),
        (Runtime::Tonic, from_tonic),
        (Runtime::GrpcWeb, from_web),
        (Runtime::GrpcWebText, from_web_text),
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
