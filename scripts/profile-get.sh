#!/usr/bin/env bash
# Profiles the Todo GET path under load: a `dist` node with --perfmap (so
# perf names guest functions), 1,000 prefilled lists, wrk's GET script, and
# `perf record` on the node for PERF_SECONDS. Prints perf's top entries
# (self time, by symbol) for BENCHMARKS.md.
#   PERF_SECONDS=8 TOP=25 bash scripts/profile-get.sh
#   HOST_BIN=/path/to/host bash scripts/profile-get.sh   # profile another build (no build step)
set -euo pipefail
cd "$(dirname "$0")/.."
PERF_SECONDS="${PERF_SECONDS:-8}"
TOP="${TOP:-25}"
PROFILE="${PROFILE:-dist}"
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

source scripts/lib.sh
target_dir="$(target_dir)"
if [ -z "${HOST_BIN:-}" ]; then
  bash scripts/build.sh >&2
  cargo build --profile "$PROFILE" -p host --bin host >&2
fi
host_bin="${HOST_BIN:-$target_dir/$PROFILE/host}"
work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT

port="$(start_server "$work/todo" "$host_bin" run "$target_dir/wasm32-wasip2/release/guest_todo.wasm" \
  --node profile --distribution none --no-observer --http-host 127.0.0.1 --http-port 0 \
  --data-dir "$work/data" --idle-timeout 1h --perfmap)"
pid="$(head -1 "$work/pids")"
python3 scripts/wrk/prefill.py "$port" 3
wrk -t2 -c64 -d"$((PERF_SECONDS + 4))s" -s scripts/wrk/get.lua "http://127.0.0.1:$port/" >"$work/wrk.out" &
wrk_pid=$!
echo "$wrk_pid" >>"$work/pids"
sleep 2
perf record -F 999 -g -o "$work/perf.data" -p "$pid" -- sleep "$PERF_SECONDS" >/dev/null 2>"$work/perf.err" || {
  cat "$work/perf.err" >&2; exit 1; }
for _ in $(seq 1 100); do kill -0 "$wrk_pid" 2>/dev/null || break; sleep 0.1; done
echo "wrk: $(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.out") req/s (while profiled)"
echo
perf report -i "$work/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' | head -n "$TOP"
