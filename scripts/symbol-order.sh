#!/usr/bin/env bash
# Writes grpcproxy-cli/hot-functions.ld: a linker script that places the functions a
# proxied call runs side by side, most executed first, which grpcproxy-cli/build.rs links
# release builds with (BENCHMARKS.md, "#24, eleventh slice"). Profiles a release grpcproxy under
# callgrind in three loads: an open loop of unary calls, ping-pong on one stream, and
# unary at 8 connections x 32 streams.
# Usage: bash scripts/symbol-order.sh [GRPCPROXY_BINARY]
# Run it again after changes to the call path (scripts/bench.sh says when fewer than 90 %
# of its patterns still match): a new function is linked where it would be anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
proxy=${1:-target/release/grpcproxy}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
INSTR=1 RATE=300 CONNECTIONS=1 STREAMS=1 OUT="$work/open" bash scripts/callgrind.sh "$proxy" 4
INSTR=1 SHAPE=ping-pong CONNECTIONS=1 STREAMS=1 OUT="$work/ping" bash scripts/callgrind.sh "$proxy" 4
INSTR=1 OUT="$work/busy" bash scripts/callgrind.sh "$proxy" 4
python3 scripts/symbol-order.py "$proxy" grpcproxy-cli/hot-functions.ld \
  "$(ls "$work"/open/callgrind.out.* | tail -1)" \
  "$(ls "$work"/ping/callgrind.out.* | tail -1)" \
  "$(ls "$work"/busy/callgrind.out.* | tail -1)"
