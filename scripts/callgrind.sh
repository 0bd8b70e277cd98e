#!/usr/bin/env bash
# Instructions per proxied unary call, counted exactly with callgrind (BENCHMARKS.md, "What
# the profile says"): grpcproxy with one worker thread runs under valgrind, the bench
# backend and load generator run natively, unary 16 B at 8 connections x 32 streams (or the
# load SHAPE, CONNECTIONS and STREAMS ask for).
# Counters are zeroed after a warm-up, so start-up is not counted.
# Usage: [ROUTE_EXTRA='retry = {...}'] [TOP_EXTRA='[limits] ...'] [QUICK=1 | FLOOR=1]
#        [SHAPE=unary] [CONNECTIONS=8] [STREAMS=32] [RATE=calls/s] [CACHE=1] [ATOMICS=1]
#        [INSTR=1]
#        bash scripts/callgrind.sh [GRPCPROXY_BINARY] [SECONDS]
# (ROUTE_EXTRA: TOML added to the route's table, to count what a policy costs; TOP_EXTRA:
# TOML added at the end of the file, a table such as [limits]; QUICK=1:
# quick mode, `--listen/--to`, with its default two workers, instead of the file; FLOOR=1:
# the h2 floor, target/release/examples/h2_floor or GRPCPROXY_BINARY, instead of grpcproxy
# (its two threads, which valgrind runs one at a time);
# SHAPE, CONNECTIONS, STREAMS: the load, as `grpcproxy-bench load` takes them: ping-pong
# and push count a message as a call; RATE: an open loop of unary calls at that rate
# instead of CONNECTIONS x STREAMS; CACHE=1: valgrind also simulates the caches and the
# branch predictor, and the simulated misses per call are printed; ATOMICS=1: the atomic
# read-modify-write instructions per call are printed, by function; both with
# scripts/callgrind-costs.py; INSTR=1: instruction addresses in the profile, nothing
# printed, for scripts/symbol-order.py)
# Prints: `<instructions> instructions / <calls> calls = <per call> per call` and leaves
# the profile in $OUT (default /tmp/grpcproxy-callgrind) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
proxy=${1:-target/release/grpcproxy}
seconds=${2:-8}
bench=${BENCH:-target/release/grpcproxy-bench}
out=${OUT:-/tmp/grpcproxy-callgrind}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend_port=$(port)
proxy_port=$(port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$bench" backend --listen "127.0.0.1:$backend_port" >"$out/backend.log" 2>&1 &
pids+=($!)
cat >"$out/proxy.toml" <<EOF
[server]
worker_threads = 1
[[listeners]]
address = "127.0.0.1:$proxy_port"
[[routes]]
cluster = "backend"
${ROUTE_EXTRA:-}
[clusters.backend]
endpoints = ["127.0.0.1:$backend_port"]
${TOP_EXTRA:-}
EOF
if [ -n "${FLOOR:-}" ]; then # the h2 floor: its listener and its backend, nothing else
  proxy=${1:-target/release/examples/h2_floor}
  run=("127.0.0.1:$proxy_port" "127.0.0.1:$backend_port")
elif [ -n "${QUICK:-}" ]; then # quick mode: no file, the same listener, route and cluster
  run=(--log-level warn --listen "127.0.0.1:$proxy_port" --to "http://127.0.0.1:$backend_port")
else
  run=(--log-level warn --config "$out/proxy.toml")
fi
extra=()
[ -n "${CACHE:-}" ] && extra+=(--cache-sim=yes --branch-sim=yes)
[ -n "${ATOMICS:-}${INSTR:-}" ] && extra+=(--dump-instr=yes)
valgrind --tool=callgrind "${extra[@]}" --callgrind-out-file="$out/callgrind.out" \
  "$proxy" "${run[@]}" >"$out/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$proxy_port),1)" 2>/dev/null; then break; fi
  sleep 0.2
done
load() {
  "$bench" load --target "127.0.0.1:$proxy_port" --shape "${SHAPE:-unary}" \
    --connections "${CONNECTIONS:-8}" --streams "${STREAMS:-32}" ${RATE:+--rate "$RATE"} \
    --warmup 0s --duration "$1"
}
load 3s >/dev/null # warm-up: connections, caches, the allocator's arenas
callgrind_control -z "${pids[1]}" >/dev/null 2>&1
report=$(load "${seconds}s")
callgrind_control -d "${pids[1]}" >/dev/null 2>&1
calls=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ops"])' <<<"$report")
instructions=$(cat "$out"/callgrind.out.* 2>/dev/null | awk '/^(summary|totals):/ {print $2}' | sort -n | tail -1)
python3 -c "print(f'{$instructions:,} instructions / {$calls:,} calls = {$instructions/$calls:,.0f} per call')"
if [ -n "${CACHE:-}${ATOMICS:-}" ]; then
  python3 scripts/callgrind-costs.py "$(ls "$out"/callgrind.out.* | tail -1)" "$calls" "$proxy"
fi
