#!/usr/bin/env bash
# Compares two builds of the host in alternating runs (A, B, A, B...), so
# that whatever else the machine does weighs on both alike:
# - the `core` criterion bench (spawn, a store, call round trips): each
#   build's bench binary, filtered to those;
# - HTTP: a Todo node of each build under wrk, the book's GET then POST on
#   1,000 lists of 3 entries.
#
#   bash scripts/compare-builds.sh HOST_A CORE_BENCH_A HOST_B CORE_BENCH_B [ROUNDS]
#
# A bench binary is what `cargo bench -p host --bench core --no-run` names
# (copy it away before building the other tree into the same target dir).
# The guests are taken from $CARGO_TARGET_DIR (or target/).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { sed -n 2,14p "$0" >&2; exit 2; }
hosts=("$1" "$3")
benches=("$2" "$4")
rounds="${5:-3}"
source scripts/lib.sh
target_dir="$(target_dir)"
export CARGO_TARGET_DIR="$target_dir"
work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT
wasm="$target_dir/wasm32-wasip2/release/guest_todo.wasm"

for round in $(seq 1 "$rounds"); do
  for which in 0 1; do
    label=$([ "$which" = 0 ] && echo A || echo B)
    (cd "$work" && timeout 600 "${benches[$which]}" --bench --noplot --warm-up-time 2 \
      --measurement-time 5 '^(spawn: instantiate|spawn part: store and its state$|call round trip)' 2>&1) \
      | grep -E "^(spawn|call)|time:" | paste - - | sed "s/^/$label $round: /"
  done
  for which in 0 1; do
    label=$([ "$which" = 0 ] && echo A || echo B)
    port="$(start_server "$work/$label$round" "${hosts[$which]}" run "$wasm" --node bench \
      --distribution none --no-observer --http-host 127.0.0.1 --http-port 0 \
      --data-dir "$work/$label$round-data" --idle-timeout 1h)"
    python3 scripts/wrk/prefill.py "$port" 3 >/dev/null
    get=$(wrk -t4 -c28 -d10s -s scripts/wrk/get.lua "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
    post=$(wrk -t4 -c28 -d10s -s scripts/wrk/post.lua "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
    echo "$label $round: HTTP GET $get req/s, POST $post req/s"
    stop_servers
    : >"$work/pids"
  done
done
