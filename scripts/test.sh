#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test in the workspace.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The suite needs only the Rust toolchain so far; peers (grpcio, grpc-js, nats-server)
# are installed here as the suites that use them land.
command -v cargo >/dev/null || { echo "scripts/test.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }

# The examples that run and exit on their own, as smoke tests of the public API.
cargo run --locked -q -p grpcproxy-examples --bin register-service
cargo run --locked -q -p grpcproxy-examples --bin route-by-metadata

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
cargo test --workspace --doc --locked 2>&1 | tee -a "$log"
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed; exit failed > 0 }' "$log"
