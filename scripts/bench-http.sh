#!/usr/bin/env bash
# Load benchmark: a Todo node under wrk, beside a plain hyper hello-world as
# the machine's ceiling. Prints a Markdown table for BENCHMARKS.md.
# The host is built with the `dist` profile (what ships; PROFILE=release to
# measure the development build).
#   DURATION=10s THREADS=4 CONNECTIONS=28 PREFILL_ENTRIES=3 PROFILE=dist bash scripts/bench-http.sh
# IDLE_PROCESSES=200000 (the default; 0 skips them) adds GET and POST rows on
# nodes that also hold that many idle, hibernated list processes.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
THREADS="${THREADS:-4}"
CONNECTIONS="${CONNECTIONS:-28}"
PROFILE="${PROFILE:-dist}"

bash scripts/build.sh >&2
cargo build --profile "$PROFILE" -p host --bin host --example hyper_hello >&2
source scripts/lib.sh
target_dir="$(target_dir)"

work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT


# A fresh Todo node whose 1,000 lists each hold the same entries (and whose
# list processes are all started), so no workload sees another's writes.
fresh_todo_node() {
  local name="$1"
  local port
  port="$(start_server "$work/$name" "$target_dir/$PROFILE/host" run "$target_dir/wasm32-wasip2/release/guest_todo.wasm" \
    --node bench --distribution none --no-observer --http-host 127.0.0.1 --http-port 0 --data-dir "$work/$name-data" --idle-timeout 1h)"
  python3 scripts/wrk/prefill.py "$port" "${PREFILL_ENTRIES:-3}"
  echo "$port"
}

# The same, also holding $IDLE_PROCESSES idle lists' processes, all
# hibernated (past the instance slots by pressure, the rest after
# --hibernate-after, waited out here).
crowded_todo_node() {
  local port
  port="$(fresh_todo_node "$1")"
  # wrk's thread stops at the count, but wrk itself runs for its whole -d:
  # give it about 5,000 starts a second, and check it made them all.
  IDLE_PROCESSES="$IDLE_PROCESSES" wrk -t1 -c64 -d"$((IDLE_PROCESSES / 5000 + 5))s" \
    -s scripts/wrk/idle.lua "http://127.0.0.1:$port/" >"$work/$1-idle.out"
  local made
  made="$(awk '/requests in/ {print $1}' "$work/$1-idle.out")"
  if grep -q 'Non-2xx' "$work/$1-idle.out" || [ "${made:-0}" -lt "$IDLE_PROCESSES" ]; then
    echo "filling the node with idle processes failed: $(cat "$work/$1-idle.out")" >&2
    return 1
  fi
  sleep 11
  echo "$port"
}

# A node running the smallest wasi:http component (examples/hello): what
# this host costs a request before any process is called.
hello_node() {
  start_server "$work/hello-node" "$target_dir/$PROFILE/host" run "$target_dir/wasm32-wasip2/release/hello.wasm" \
    --node bench_hello --distribution none --no-observer --http-host 127.0.0.1 --http-port 0 \
    --data-dir "$work/hello-data"
}

run() {
  local name="$1" port="$2" script="${3:-}"
  local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  local out
  out="$(wrk "${args[@]}" "http://127.0.0.1:$port/")"
  local rps avg p99 errors
  rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  avg="$(awk '/^ *Latency/ {print $2; exit}' <<<"$out")"
  p99="$(awk '/^ *99%/ {print $2}' <<<"$out")"
  errors="$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | paste -sd ';' - || true)"
  echo "$name|$rps|$avg|$p99|${errors:-none}"
}

# Each workload runs alone: the servers of the previous one are stopped
# first (idle nodes still wake up, and keep memory).
results=()
measure() {
  results+=("$1")
  stop_servers
  rm -f "$work/pids"
}
measure "$(run "hyper hello-world (ceiling)" "$(start_server "$work/hello" "$target_dir/$PROFILE/examples/hyper_hello" 0)")"
measure "$(run "wasi:http hello component on this host" "$(hello_node)")"
measure "$(run "GET /entries, 1,000 lists" "$(fresh_todo_node get)" scripts/wrk/get.lua)"
measure "$(run "POST /add_entry, 1,000 lists" "$(fresh_todo_node post)" scripts/wrk/post.lua)"
measure "$(run "book mix 80% GET / 20% POST, 1,000 lists" "$(fresh_todo_node mix)" scripts/wrk/mix.lua)"
IDLE_PROCESSES="${IDLE_PROCESSES:-200000}"
if [ "$IDLE_PROCESSES" -gt 0 ]; then
  measure "$(run "GET /entries, 1,000 lists, $IDLE_PROCESSES idle lists hibernated" "$(crowded_todo_node get-idle)" scripts/wrk/get.lua)"
  measure "$(run "POST /add_entry, 1,000 lists, $IDLE_PROCESSES idle lists hibernated" "$(crowded_todo_node post-idle)" scripts/wrk/post.lua)"
fi

ceiling="$(cut -d'|' -f2 <<<"${results[0]}")"
echo "host built with --profile $PROFILE; wrk -t$THREADS -c$CONNECTIONS -d$DURATION, lists prefilled with ${PREFILL_ENTRIES:-3} entries each, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| Workload | req/s | ratio to ceiling | latency avg | latency p99 | errors |"
echo "|---|---:|---:|---:|---:|---|"
for row in "${results[@]}"; do
  IFS='|' read -r name rps avg p99 errors <<<"$row"
  ratio="$(python3 -c "print(f'{$rps / $ceiling:.2f}')")"
  echo "| $name | $rps | $ratio | $avg | $p99 | $errors |"
done
