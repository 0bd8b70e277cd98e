#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test in the workspace.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "scripts/test.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }

# Real peers the tests and the benchmark harness use. A missing one fails the run: tests
# never skip.
source scripts/peers.sh
install_peers nats-server nginx-light haproxy nghttp2-client openssl curl chromium
# The interop suite's grpcio and grpc-js peers (pinned, in interop/).
bash interop/install.sh

# The examples that run and exit on their own, as smoke tests of the public API.
cargo run --locked -q -p grpcproxy-examples --bin register-service
cargo run --locked -q -p grpcproxy-examples --bin route-by-metadata

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets --all-features --locked 2>&1 | tee "$log"
cargo test --workspace --doc --all-features --locked 2>&1 | tee -a "$log"
# The fuzz targets' checks over their seed corpus (stable Rust; fuzzing itself is
# `cargo +nightly fuzz run`, see README).
cargo test --manifest-path fuzz/Cargo.toml --locked 2>&1 | tee -a "$log"
# The benchmark harness end to end on a short run: every target started, every scenario
# driven, the report written (no timing is asserted; debug builds).
cargo build --locked -q -p grpcproxy-cli -p grpcproxy-bench --bins --examples
# The Kubernetes manifests: schema-valid (pinned validator) and their configuration
# accepted by check-config.
bash deploy/kubernetes/validate.sh target/debug/grpcproxy
bench_out=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$bench_out"' EXIT
target/debug/grpcproxy-bench compare --quick --out "$bench_out" 2>&1 | tail -n 3
grep -q "unary 8×32 16 B" "$bench_out/BENCHMARKS.md"
grep -q "| h2 floor |" "$bench_out/BENCHMARKS.md"

awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed; exit failed > 0 }' "$log"
