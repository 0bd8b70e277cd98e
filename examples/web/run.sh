#!/usr/bin/env bash
# The browser example, all of it on this machine: the tonic interop backend
# (127.0.0.1:50052), grpcproxy with a gRPC-Web listener (127.0.0.1:8080, see
# grpcproxy.toml) and a static server for the page (127.0.0.1:8000). Open the URL it
# prints; Ctrl-C stops everything.
# Usage: bash examples/web/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p grpcproxy-cli -p grpcproxy-interop --bin grpcproxy --bin interop-backend
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
target/debug/interop-backend 127.0.0.1:50052 &
pids+=($!)
target/debug/grpcproxy --config examples/web/grpcproxy.toml &
pids+=($!)
echo "open http://127.0.0.1:8000/index.html?proxy=http://127.0.0.1:8080"
python3 -m http.server 8000 --bind 127.0.0.1 --directory examples/web
