#!/usr/bin/env bash
# Hot swap under load (BENCHMARKS.md, "Hot swap"): a Todo node holding
# LISTS lists of 3 entries, half of them hibernated at any moment (instance
# slots for half), under the book's mix (80% GET, 20% POST) over all of
# them. Four windows of DURATION seconds each, same node, same load:
#   before:   on 1.0.0, no swap;
#   swap:     `host swap` to Todo 2.0.0 three seconds in, committed once swept;
#   after:    on 2.0.0, no swap;
#   down:     a swap back to 1.0.0 (committed before, so kept: each list
#             hands its state down) three seconds in.
# For each: requests/s, p99, failed requests (non-2xx and socket errors),
# peak RSS; for the swaps: the time to sweep every live
# list, and the per-process pause (p50/p99/max) from `versions`.
#   LISTS=10000 DURATION=20 THREADS=2 CONNECTIONS=16 bash scripts/bench-swap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LISTS="${LISTS:-10000}"
DURATION="${DURATION:-20}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-16}"
PROFILE="${PROFILE:-release}"
bash scripts/build.sh >&2
[ "$PROFILE" = release ] || cargo build --profile "$PROFILE" -p host >&2
source scripts/lib.sh
target_dir="$(target_dir)"
host="$target_dir/$PROFILE/host"
guests="$target_dir/wasm32-wasip2/release"
work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT

start_epmd "$host"

node=bench_swap@127.0.0.1
start_server "$work/node" "$host" run "$guests/guest_todo.wasm" --node "$node" \
  --http-host 127.0.0.1 --http-port 0 --data-dir "$work/data" --no-observer \
  --idle-timeout 1h --hibernate-after off --max-instances "$((LISTS / 2))" \
  --max-processes "$((LISTS * 2))" >/dev/null
port="$(port_after "$work/node" "HTTP listening on http://127.0.0.1:")"
pid="$(head -2 "$work/pids" | tail -1)"
python3 scripts/wrk/prefill.py "$port" 3 "$LISTS"

versions() { "$host" rpc "$node" versions; }
# Seconds since the epoch, from bash's own clock.
now() { echo "$EPOCHREALTIME"; }
# Peak resident memory (KiB) of the node while $1 (a pid) runs.
watch_rss() {
  local peak=0 rss
  while kill -0 "$1" 2>/dev/null; do
    rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
    [ "$rss" -gt "$peak" ] && peak="$rss"
    sleep 0.2
  done
  echo "$peak"
}
# window NAME: wrk for DURATION seconds in the background; its pid.
window() {
  LISTS="$LISTS" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s scripts/wrk/mix.lua "http://127.0.0.1:$port/" >"$work/$1.wrk" &
  echo $!
}
# until_swept LINE: waits until `versions`' LINE (swap: or rollback:) says
# swept; prints the seconds it took.
until_swept() {
  local began="$1" line="$2"
  until versions | grep "  $line" | grep -q "swept"; do sleep 0.05; done
  awk -v a="$began" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'
}
# row NAME LABEL SWEEP PAUSES: one Markdown row from NAME's wrk output.
row() {
  local out="$work/$1.wrk" rps p99 failed
  shift
  rps="$(awk '/Requests\/sec/ {printf "%d", $2}' "$out")"
  p99="$(awk '$1 == "99%" {print $2}' "$out")"
  failed="$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$out")"
  echo "| $1 | $rps | $p99 | $failed | $(( $(cat "${out%.wrk}.rss") / 1024 )) MiB | $2 | $3 |"
}

wrk_pid="$(window before)"; watch_rss "$wrk_pid" >"$work/before.rss"

wrk_pid="$(window swap)"; watch_rss "$wrk_pid" >"$work/swap.rss" &
sleep 3
began="$(now)"
"$host" swap "$node" guest_todo "$guests/guest_todo_v2.wasm" >"$work/swap.out"
swap_time="$(until_swept "$began" "swap:")"
swap_line="$(versions | grep '  swap:')"
wait "$!" 2>/dev/null || true  # the RSS watcher (it ends with wrk)
"$host" rpc "$node" "commit guest_todo" >/dev/null

wrk_pid="$(window after)"; watch_rss "$wrk_pid" >"$work/after.rss"

# Back to 1.0.0, a kept version: processes hand their states down.
wrk_pid="$(window down)"; watch_rss "$wrk_pid" >"$work/down.rss" &
sleep 3
began="$(now)"
"$host" swap "$node" guest_todo "$guests/guest_todo.wasm" >/dev/null
back_time="$(until_swept "$began" "swap:")"
back_line="$(versions | grep '  swap:')"
wait "$!" 2>/dev/null || true

pauses() { grep -o 'pause p50 [^;]*' <<<"$1" | sed 's/pause //'; }
moved() { grep -o '[0-9]* moved, [0-9]* could not move' <<<"$1"; }
echo "$LISTS lists (instance slots for half), $THREADS wrk threads x $CONNECTIONS connections, ${DURATION} s windows, $PROFILE host"
echo
echo "| window | req/s | p99 | failed | peak RSS | sweep | per-process pause |"
echo "|---|---|---|---|---|---|---|"
row before "before (1.0.0)" "" ""
row swap "swap to 2.0.0" "${swap_time} s ($(moved "$swap_line"))" "$(pauses "$swap_line")"
row after "after (2.0.0)" "" ""
row down "down to 1.0.0" "${back_time} s ($(moved "$back_line"))" "$(pauses "$back_line")"
