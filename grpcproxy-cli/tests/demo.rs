//! `grpcproxy demo` runs every RPC kind through the proxy and exits 0.

use std::process::Command;

#[test]
fn demo_runs_every_rpc_kind_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_grpcproxy"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for row in [
        "PingEmpty",
        "PingError",
        "PingList",
        "PingClientStream",
        "PingStream",
        "Ping (sleeps 2 s)",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(row) && l.contains(" ok ")),
            "row {row}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("all 7 calls behaved as expected"),
        "{stdout}"
    );
    assert!(stdout.contains("0 live streams left"), "{stdout}");
}
