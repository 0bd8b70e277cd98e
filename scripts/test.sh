#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test in the workspace.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "scripts/test.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }

# Real peers the tests use. A missing one fails the run: tests never skip.
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server) >/dev/null
  else
    sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server' >/dev/null
  fi
fi

# The examples that run and exit on their own, as smoke tests of the public API.
cargo run --locked -q -p grpcproxy-examples --bin register-service
cargo run --locked -q -p grpcproxy-examples --bin route-by-metadata

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets --all-features --locked 2>&1 | tee "$log"
cargo test --workspace --doc --all-features --locked 2>&1 | tee -a "$log"
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed; exit failed > 0 }' "$log"
