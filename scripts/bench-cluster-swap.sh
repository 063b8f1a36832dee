#!/usr/bin/env bash
# Hot swap across a 3-node cluster under load (BENCHMARKS.md, "Hot swap
# across a cluster"): LISTS lists of 2 entries spread over the nodes by
# name, half of each node's hibernated at any moment (instance slots for
# half), under the book's mix (80% GET, 20% POST) through all three nodes
# (one wrk per node). Four windows of DURATION seconds each, same cluster:
#   before:   on 1.0.0, no swap;
#   rollout:  `host swap n1 ... --commit` to Todo 2.0.0 three seconds in:
#             rolling, one node after another, committed once all swapped;
#   after:    on 2.0.0, no swap;
#   rollback: a rolling swap to another 2.0.0 build (2.0.0-faulty, which
#             moves these lists like 2.0.0) three seconds in, then
#             `rollback` once every node has swapped.
# For each: requests/s (the three wrk together), the worst p99, failed
# requests (non-2xx and socket errors), the nodes' peak RSS summed; for the
# rollout, its time (command to committed) and each node's swap; for the
# rollback, the time from `rollback` until every node's processes are back.
#   LISTS=10000 DURATION=20 CONNECTIONS=6 bash scripts/bench-cluster-swap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LISTS="${LISTS:-10000}"
DURATION="${DURATION:-20}"
CONNECTIONS="${CONNECTIONS:-6}"   # per wrk; three wrk processes
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

# node NAME: a Todo node on 1.0.0's file; prints its HTTP port.
node() {
  start_server "$work/$1" "$host" run "$guests/guest_todo.wasm" --node "$1@127.0.0.1" \
    --http-host 127.0.0.1 --http-port 0 --data-dir "$work/$1-data" --no-observer \
    --idle-timeout 1h --hibernate-after off --max-instances "$((LISTS / 6))" \
    --max-processes "$((LISTS * 2))" >/dev/null
  port_after "$work/$1" "HTTP listening on http://127.0.0.1:"
}
ports=("$(node n1)" "$(node n2)" "$(node n3)")
pids=($(head -4 "$work/pids" | tail -3))
"$host" connect n2@127.0.0.1 n1@127.0.0.1 >/dev/null
"$host" connect n3@127.0.0.1 n2@127.0.0.1 >/dev/null
python3 scripts/wrk/prefill.py "${ports[0]}" 2 "$LISTS"

versions() { "$host" rpc "n$1@127.0.0.1" versions; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Peak of the three nodes' resident memory summed (KiB), while $1 runs.
watch_rss() {
  local peak=0 sum pid
  while kill -0 "$1" 2>/dev/null; do
    sum=0
    for pid in "${pids[@]}"; do
      sum=$((sum + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status")))
    done
    [ "$sum" -gt "$peak" ] && peak="$sum"
    sleep 0.2
  done
  echo "$peak"
}
# window NAME: one wrk per node for DURATION seconds, in the background;
# prints the pid of a waiter that ends with them.
window() {
  local i=0 port
  for port in "${ports[@]}"; do
    LISTS="$LISTS" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
      -s scripts/wrk/mix.lua "http://127.0.0.1:$port/" >"$work/$1.$i.wrk" &
    i=$((i + 1))
  done
  sleep "$((DURATION + 1))" &
  echo $!
}
# row NAME LABEL EXTRA: one Markdown row from NAME's three wrk outputs.
row() {
  local name="$1" rps p99 failed
  rps="$(cat "$work/$name".*.wrk | awk '/Requests\/sec/ {n += $2} END {printf "%d", n}')"
  p99="$(cat "$work/$name".*.wrk | awk '$1 == "99%" {print $2}' | sort -h | tail -1)"
  failed="$(cat "$work/$name".*.wrk | awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}')"
  echo "| $2 | $rps | $p99 | $failed | $(( $(cat "$work/$name.rss") / 1024 )) MiB | $3 |"
}
# all_back: every node runs 2.0.0 again, its rollback swept.
all_back() {
  local n
  for n in 1 2 3; do
    versions "$n" | grep -q '  swap:' && return 1
    versions "$n" | grep '  rollback:' | grep -q 'swept' || return 1
  done
}

waiter="$(window before)"; watch_rss "$waiter" >"$work/before.rss"

waiter="$(window rollout)"; watch_rss "$waiter" >"$work/rollout.rss" &
sleep 3
began="$(now)"
"$host" swap n1@127.0.0.1 guest_todo "$guests/guest_todo_v2.wasm" --commit >"$work/rollout.out"
rollout_time="$(since "$began")"
rollout_nodes="$(versions 1 | grep -E '^    n[0-9]@')"
wait "$!" 2>/dev/null || true   # the RSS watcher (it ends with the window)

waiter="$(window after)"; watch_rss "$waiter" >"$work/after.rss"

waiter="$(window rollback)"; watch_rss "$waiter" >"$work/rollback.rss" &
sleep 3
"$host" swap n1@127.0.0.1 guest_todo "$guests/guest_todo_v2_faulty.wasm" >/dev/null
until versions 1 | grep -q 'every node swapped; awaiting commit'; do sleep 0.05; done
began="$(now)"
"$host" rpc n1@127.0.0.1 "rollback guest_todo" >/dev/null
until all_back; do sleep 0.05; done
rollback_time="$(since "$began")"
rollback_lines="$(for n in 1 2 3; do versions "$n" | grep '  rollback:'; done)"
wait "$!" 2>/dev/null || true

# moved LINES: the processes moved and not, summed over the lines.
moved() {
  grep -oE '[0-9]+ moved( back)?, [0-9]+ could not' <<<"$1" |
    awk '{m += $1; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) { f += $i; break }}
         END {printf "%d moved, %d could not move", m, f}'
}
echo "$LISTS lists over 3 nodes (instance slots for half of each node's), 3 wrk x 1 thread x $CONNECTIONS connections, ${DURATION} s windows, $PROFILE host"
echo
echo "| window | req/s | worst p99 | failed | peak RSS (3 nodes) | swap |"
echo "|---|---|---|---|---|---|"
row before "before (1.0.0)" ""
row rollout "rolling swap to 2.0.0" "${rollout_time} s from the command to committed ($(moved "$rollout_nodes"))"
row after "after (2.0.0)" ""
row rollback "swap to 2.0.0-faulty, rollback" "${rollback_time} s from \`rollback\` to every node back ($(moved "$rollback_lines") back)"
echo
echo "Each node's swap, as the rollout recorded it:"
echo
echo '```'
echo "$rollout_nodes" | sed 's/^ *//'
echo '```'
