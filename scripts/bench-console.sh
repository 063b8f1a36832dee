#!/usr/bin/env bash
# Operating figures (BENCHMARKS.md, "Operating a node"):
#  1. `bin/todo daemon` to the first HTTP 200, components precompiled in the
#     release (and, for comparison, compiled at start);
#  2. the time `ps` (and `tree`) takes to answer over `host rpc` on a node
#     holding COUNT live processes of the minimal guest.
#   PROFILE=dist ROUNDS=10 COUNT=10000 bash scripts/bench-console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-dist}"
ROUNDS="${ROUNDS:-10}"
COUNT="${COUNT:-10000}"
bash scripts/build.sh >&2
[ "$PROFILE" = release ] || cargo build --profile "$PROFILE" -p host >&2
source scripts/lib.sh
target_dir="$(target_dir)"
host="$target_dir/$PROFILE/host"
work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT

start_epmd "$host"

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# Milliseconds, from bash's own clock (spawning a program to read the time
# would add its start-up to every figure).
now_ms() { awk -v t="$EPOCHREALTIME" 'BEGIN { printf "%.1f", t * 1000 }'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f\n", b - a }'; }

daemon_to_200() {
  local release="$1" port
  port="$(free_port)"
  local start end
  start="$(now_ms)"
  RELEASE_NODE=bench_d@127.0.0.1 TODO_PORT="$port" "$release/bin/todo" daemon >/dev/null
  until curl -sf -o /dev/null "http://127.0.0.1:$port/entries?list=a&date=2023-01-01"; do sleep 0.001; done
  end="$(now_ms)"
  RELEASE_NODE=bench_d@127.0.0.1 "$release/bin/todo" stop >/dev/null
  elapsed "$start" "$end"
}

"$host" release --out "$work/rel/todo" \
  "guest_todo=$target_dir/wasm32-wasip2/release/guest_todo.wasm" >/dev/null
for _ in $(seq 1 "$ROUNDS"); do daemon_to_200 "$work/rel/todo"; done >"$work/precompiled"
echo "daemon to first 200, precompiled ($PROFILE host, $ROUNDS rounds): median $(median <"$work/precompiled") ms, all: $(tr '\n' ' ' <"$work/precompiled")"
rm -rf "$work/rel/todo/lib/compiled"/*
for _ in $(seq 1 "$ROUNDS"); do
  rm -rf "$work/rel/todo/lib/compiled"/* "$work/rel/todo/data"/*/compiled
  daemon_to_200 "$work/rel/todo"
done >"$work/compiled"
echo "daemon to first 200, compiled at start: median $(median <"$work/compiled") ms"

start_server "$work/node" "$host" run "$target_dir/wasm32-wasip2/release/minimal.wasm" \
  --node bench_ps@127.0.0.1 --http-host 127.0.0.1 --http-port 0 --data-dir "$work/data" \
  --idle-timeout 1h --max-processes "$((COUNT + 100))" >/dev/null
# (The node's name holds 127.0.0.1 too: take the port after HTTP's address.)
port="$(port_after "$work/node" "HTTP listening on http://127.0.0.1:")"
python3 scripts/wrk/spawn.py "$port" "$COUNT"
time_rpc() {
  local start end
  start="$(now_ms)"
  "$host" rpc --node bench_ps@127.0.0.1 "$1" >"$work/rpc.out"
  end="$(now_ms)"
  elapsed "$start" "$end"
}
for command in "ps --limit 20" "ps --limit 100000" "tree --limit 20" "memory"; do
  for _ in $(seq 1 5); do time_rpc "$command"; done >"$work/times"
  echo "\`$command\` with $(grep -c . "$work/rpc.out") lines out, $COUNT live processes: median $(median <"$work/times") ms (whole rpc: connect, handshake, answer)"
done
for _ in $(seq 1 5); do time_rpc "pid"; done >"$work/times"
echo "\`pid\` (the rpc's own cost): median $(median <"$work/times") ms"
