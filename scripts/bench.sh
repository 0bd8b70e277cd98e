#!/usr/bin/env bash
# The full benchmark comparison: installs nginx, HAProxy and h2load if missing, builds the
# release binaries, runs `grpcproxy-bench compare` and rewrites BENCHMARKS.md's results,
# bench/results/compare.json and bench/results/ratios.svg.
# Usage: bash scripts/bench.sh [compare options, e.g. --rounds 5 --duration 10s | --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/peers.sh
install_peers nginx-light haproxy nghttp2-client
cargo build --release --locked -p grpcproxy-cli -p grpcproxy-bench --bins --examples
# The hot functions' link order (grpcproxy-cli/build.rs): said when the build did not use
# it or it no longer matches the call path.
python3 scripts/symbol-order.py --check target/release/grpcproxy grpcproxy-cli/hot-functions.ld ||
  echo "warning: the hot functions are not in their order: see grpcproxy-cli/build.rs, or run scripts/symbol-order.sh and build again" >&2
exec target/release/grpcproxy-bench compare "$@"
