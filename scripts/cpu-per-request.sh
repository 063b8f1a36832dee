#!/usr/bin/env bash
# Node CPU time per request (from /proc/PID/stat over a wrk run): steadier
# than req/s on a shared VM, whose speed swings between runs. For each
# round: a hello node, then a Todo node with 1,000 prefilled lists, hit on a
# route it answers 404 without calling a process, with GET, then with POST.
#   ROUNDS=3 bash scripts/cpu-per-request.sh
#   HOST_BIN=/path/to/host bash scripts/cpu-per-request.sh   # another build (no build step)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
source scripts/lib.sh
target_dir="$(target_dir)"
if [ -z "${HOST_BIN:-}" ]; then
  bash scripts/build.sh >&2
  cargo build --profile dist -p host --bin host >&2
fi
host_bin="${HOST_BIN:-$target_dir/dist/host}"
work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT
guests="$target_dir/wasm32-wasip2/release"

# measure NAME PORT [SCRIPT] [PATH]: one wrk run against the newest server.
measure() {
  local pid; pid="$(tail -1 "$work/pids")"
  local before; before="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
  local out; out="$(wrk -t2 -c64 -d8s ${3:+-s "$3"} "http://127.0.0.1:$2/${4:-}")"
  local after; after="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
  local requests rps
  requests="$(awk '/requests in/ {print $1}' <<<"$out")"
  rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  python3 -c "print(f'| $1 | {$rps:.0f} | {($after - $before) / $(getconf CLK_TCK) / $requests * 1e6:.1f} |')"
}

echo "| Workload | req/s | node CPU per request (µs) |"
echo "|---|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
  port="$(start_server "$work/hello-$round" "$host_bin" run "$guests/hello.wasm" --node hello \
    --distribution none --no-observer --http-host 127.0.0.1 --http-port 0 --data-dir "$work/hello-$round-data")"
  measure "hello component (round $round)" "$port"
  stop_servers; rm -f "$work/pids"
  port="$(start_server "$work/todo-$round" "$host_bin" run "$guests/guest_todo.wasm" --node todo \
    --distribution none --no-observer --http-host 127.0.0.1 --http-port 0 --data-dir "$work/todo-$round-data" \
    --idle-timeout 1h)"
  python3 scripts/wrk/prefill.py "$port" 3
  measure "Todo 404, no process call (round $round)" "$port" "" nothing
  measure "Todo GET /entries (round $round)" "$port" scripts/wrk/get.lua
  measure "Todo POST /add_entry (round $round)" "$port" scripts/wrk/post.lua
  stop_servers; rm -f "$work/pids"
done
