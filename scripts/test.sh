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
# The paired table, in the report and printed again from the run's JSON.
grep -q "| unary 1×1 16 B | grpcproxy / nginx |" "$bench_out/BENCHMARKS.md"
target/debug/grpcproxy-bench paired "$bench_out/bench/results/compare.json" |
  grep -q "| unary 8×32 16 B | grpcproxy quick / grpcproxy |"
# Stopped by a signal mid-run (SIGTERM: a background job ignores SIGINT), the harness
# stops every server it started.
stop_log="$bench_out/stop.log"
target/debug/grpcproxy-bench compare --quick --out "$bench_out/stopped" >"$stop_log" 2>&1 &
harness=$!
for _ in $(seq 1 600); do grep -q "^round 1" "$stop_log" && break; sleep 0.1; done
children=$(ps -o pid= --ppid "$harness" | tr -d ' ')
[ -n "$children" ] || { echo "bench stop check: the harness started no servers" >&2; exit 1; }
kill -TERM "$harness"
if wait "$harness"; then echo "bench stop check: the harness ignored SIGTERM" >&2; exit 1; fi
sleep 1
outlived=0
for pid in $children; do
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
  if [ -n "$state" ] && [ "$state" != Z ]; then
    echo "bench stop check: server $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline")) outlived the harness" >&2
    kill "$pid" || true
    outlived=1
  fi
done
[ "$outlived" = 0 ] || exit 1
echo "bench stop check: SIGTERM stopped the harness and its $(echo "$children" | wc -l) servers"

awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed; exit failed > 0 }' "$log"
