#!/usr/bin/env bash
# Todo 1.0.0 against 2.0.0 on fresh nodes, alternating (BENCHMARKS.md, "Hot
# swap under load"): each round starts a node on one version with LISTS
# lists of 3 entries and instance slots for half, and runs the book's mix
# over them for DURATION; prints req/s and p99 per run.
#   LISTS=10000 DURATION=15s ROUNDS=2 bash scripts/bench-versions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LISTS="${LISTS:-10000}"
DURATION="${DURATION:-15s}"
ROUNDS="${ROUNDS:-2}"
bash scripts/build.sh >&2
source scripts/lib.sh
target_dir="$(target_dir)"
work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT

for round in $(seq 1 "$ROUNDS"); do
  for guest in guest_todo guest_todo_v2; do
    port="$(start_server "$work/$guest$round" "$target_dir/release/host" run \
      "$target_dir/wasm32-wasip2/release/$guest.wasm" --node bench --distribution none \
      --no-observer --http-host 127.0.0.1 --http-port 0 --data-dir "$work/$guest$round-data" \
      --idle-timeout 1h --hibernate-after off --max-instances "$((LISTS / 2))" \
      --max-processes "$((LISTS * 2))")"
    python3 scripts/wrk/prefill.py "$port" 3 "$LISTS"
    LISTS="$LISTS" wrk -t2 -c16 -d"$DURATION" --latency -s scripts/wrk/mix.lua \
      "http://127.0.0.1:$port/" >"$work/$guest$round.wrk"
    echo "round $round, $guest: $(awk '/Requests\/sec/ {print $2}' "$work/$guest$round.wrk") req/s, p99 $(awk '$1 == "99%" {print $2}' "$work/$guest$round.wrk")"
    stop_servers; : >"$work/pids"
  done
done
