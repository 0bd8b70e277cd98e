#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test in the workspace.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The suite needs only the Rust toolchain so far; peers (grpcio, grpc-js, nats-server)
# are installed here as the suites that use them land.
command -v cargo >/dev/null || { echo "scripts/test.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }

cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked

# The examples that run and exit on their own, as smoke tests of the public API.
cargo run --locked -q -p grpcproxy-examples --bin register-service
cargo run --locked -q -p grpcproxy-examples --bin route-by-metadata
