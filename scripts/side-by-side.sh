#!/usr/bin/env bash
# Two proxy configurations side by side against one bench backend: grpcproxy-bench load
# alternates between them (unary 16 B, 8 connections x 32 streams by default), ROUNDS times, and
# prints each round and the medians of calls/s and CPU per call (the proxy's utime+stime
# over the round, divided by its calls). Release binaries.
# Usage: [SHADOW_BACKEND=1] bash scripts/side-by-side.sh EXTRA_A EXTRA_B [ROUNDS] [SECONDS]
#   EXTRA_x: TOML added to the route table ("" for none), e.g.
#   'retry = { on = ["unavailable"], attempts = 3 }'
#   SHADOW_BACKEND=1: a second bench backend, as cluster "shadow" in both configs (for
#   'mirror = { cluster = "shadow", percent = 100 }').
#   LISTENER_A / LISTENER_B: TOML added to that side's listener table (e.g. 'grpc_web = true').
#   TOP_A / TOP_B: TOML added at the end of that side's file (a table such as [tracing]).
#   SHAPE_A / SHAPE_B: that side's load shape (default unary; web-unary is the same call as
#   gRPC-Web, which needs grpc_web = true on the listener).
#   GRPCPROXY_B: another build for side b (two builds side by side: GRPCPROXY for a).
#   QUICK_B=1: side b runs quick mode (`--listen/--to`, with `--admin`) instead of a file.
#   CONNECTIONS / STREAMS: the load's shape (default 8 x 32).
#   RATE: an open loop of unary calls at that rate instead (p50 latency is the figure).
# At the end: each proxy's peak RSS (VmHWM) and its grpcproxy_mirror_calls_total lines.
set -euo pipefail
cd "$(dirname "$0")/.."
extra_a=$1
extra_b=$2
rounds=${3:-5}
seconds=${4:-5}
proxy=${GRPCPROXY:-target/release/grpcproxy}
bench=${BENCH:-target/release/grpcproxy-bench}
dir=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; exit 1
}
backend_port=$(port)
"$bench" backend --listen "127.0.0.1:$backend_port" >"$dir/backend.log" 2>&1 &
pids+=($!)
wait_port "$backend_port"
shadow_cluster=""
if [ "${SHADOW_BACKEND:-}" = 1 ]; then
  shadow_port=$(port)
  "$bench" backend --listen "127.0.0.1:$shadow_port" >"$dir/shadow.log" 2>&1 &
  pids+=($!)
  wait_port "$shadow_port"
  shadow_cluster="[clusters.shadow]
endpoints = [\"127.0.0.1:$shadow_port\"]"
fi
declare -A addr pid admin
for side in a b; do
  p=$(port)
  a=$(port)
  extra=$extra_a
  listener=${LISTENER_A:-}
  top=${TOP_A:-}
  if [ "$side" = b ]; then extra=$extra_b; listener=${LISTENER_B:-}; top=${TOP_B:-}; fi
  cat >"$dir/$side.toml" <<EOF
[admin]
address = "127.0.0.1:$a"
[[listeners]]
address = "127.0.0.1:$p"
$listener
[[routes]]
cluster = "backend"
$extra
[clusters.backend]
endpoints = ["127.0.0.1:$backend_port"]
$shadow_cluster
$top
EOF
  binary=$proxy
  [ "$side" = b ] && binary=${GRPCPROXY_B:-$proxy}
  if [ "$side" = b ] && [ "${QUICK_B:-}" = 1 ]; then
    "$binary" --log-level warn --listen "127.0.0.1:$p" --to "http://127.0.0.1:$backend_port" \
      --admin "127.0.0.1:$a" >"$dir/$side.log" 2>&1 &
  else
    "$binary" --log-level warn --config "$dir/$side.toml" >"$dir/$side.log" 2>&1 &
  fi
  pids+=($!)
  pid[$side]=$!
  addr[$side]="127.0.0.1:$p"
  admin[$side]="127.0.0.1:$a"
  wait_port "$p"
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
for side in a b; do : >"$dir/$side.results"; done
for round in $(seq 1 "$rounds"); do
  for side in a b; do
    before=$(cpu "${pid[$side]}")
    shape=${SHAPE_A:-unary}
    [ "$side" = b ] && shape=${SHAPE_B:-unary}
    report=$("$bench" load --target "${addr[$side]}" --shape "$shape" --connections "${CONNECTIONS:-8}" --streams "${STREAMS:-32}" ${RATE:+--rate "$RATE"} --warmup 1s --duration "${seconds}s")
    after=$(cpu "${pid[$side]}")
    python3 - "$side" "$round" "$before" "$after" "$ticks" "$report" >>"$dir/$side.results" <<'PY'
import json, sys
side, rnd, before, after, ticks, report = sys.argv[1:]
r = json.loads(report)
calls = r["ops"] + r["ops_per_sec"] * 1.0  # the warm-up second's calls count towards CPU
cpu_us = (float(after) - float(before)) / float(ticks) * 1e6 / calls
print(f"{r['ops_per_sec']:.0f} {cpu_us:.2f} {r['errors']} {r['latency_us']['p50']}")
PY
    echo "round $round $side: $(tail -1 "$dir/$side.results")" >&2
  done
done
for side in a b; do
  echo "$side: peak RSS $(awk '/VmHWM/ {print $2, $3}' "/proc/${pid[$side]}/status")" >&2
  python3 -c "import urllib.request,sys; [print('$side:', l) for l in urllib.request.urlopen('http://${admin[$side]}/metrics').read().decode().splitlines() if l.startswith(('grpcproxy_mirror_calls_total', 'grpcproxy_tracing_spans_total', 'grpcproxy_tap_events_'))]" >&2
done
python3 - "$dir/a.results" "$dir/b.results" <<'PY'
import statistics, sys
rows = [[list(map(float, l.split())) for l in open(p)] for p in sys.argv[1:]]
med = [[statistics.median(r[i] for r in side) for i in (0, 1, 3)] for side in rows]
for name, (ops, cpu, p50) in zip("ab", med):
    print(f"{name}: median {ops:,.0f} calls/s, {cpu:.2f} us CPU per call, p50 {p50:.0f} us, errors {sum(r[2] for r in rows['ab'.index(name)]):.0f}")
print(f"b/a: {med[1][0] / med[0][0]:.3f} calls/s, {med[1][1] / med[0][1]:.3f} CPU per call, p50 {med[1][2] - med[0][2]:+.0f} us")
PY
