#!/usr/bin/env bash
# Soak (BENCHMARKS.md, "Soak"): a 3-node cluster under the book's mix (one
# wrk per node, scripts/wrk/mix.lua over 1,000 lists) for DURATION seconds.
# Every FLOOD_EVERY seconds, FLOOD idle connections are held against n1's
# HTTP port and FLOOD/4 against its distribution port for 20 s; every
# RESTART_EVERY seconds, n3 is stopped (SIGTERM) and started again on its
# data. Every 10 s, each node's resident memory and open descriptors are
# sampled into $OUT (CSV); at the end, a Markdown table of them per
# window of WINDOW seconds, and the load's totals.
# LOAD=reads first fills the lists (the mix for PREFILL seconds), then
# reads only, so the data stops growing and memory should hold a band.
#   DURATION=1800 OUT=soak.csv bash scripts/soak.sh
#   LOAD=reads DURATION=1800 OUT=soak-reads.csv bash scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-1800}"
FLOOD_EVERY="${FLOOD_EVERY:-120}"
FLOOD="${FLOOD:-800}"
RESTART_EVERY="${RESTART_EVERY:-300}"
WINDOW="${WINDOW:-300}"
OUT="${OUT:-soak.csv}"
LOAD="${LOAD:-mix}"
PREFILL="${PREFILL:-60}"
source scripts/lib.sh
target="$(target_dir)"
host="$target/release/host"
todo="$target/wasm32-wasip2/release/guest_todo.wasm"
[ -x "$host" ] || cargo build --release -p host --bin host >&2
[ -f "$todo" ] || bash scripts/build-guests.sh >&2

work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT
start_epmd "$host"
declare -A http dist metrics
for name in n1 n2 n3; do
  http[$name]="$(free_port)"; dist[$name]="$(free_port)"; metrics[$name]="$(free_port)"
done

# node NAME: starts node NAME on its ports and data; its pid in $work/NAME.pid.
node() {
  local name="$1"
  start_server "$work/$name" "$host" run "$todo" --node "$name@127.0.0.1" \
    --http-host 127.0.0.1 --http-port "${http[$name]}" --metrics-port "${metrics[$name]}" \
    --dist-port "${dist[$name]}" --data-dir "$work/$name-data" >/dev/null
  tail -1 "$work/pids" >"$work/$name.pid"
}

for name in n1 n2 n3; do node "$name"; done
"$host" connect n2@127.0.0.1 n1@127.0.0.1 >/dev/null
"$host" connect n3@127.0.0.1 n1@127.0.0.1 >/dev/null

echo "t,node,rss_mib,fds" >"$OUT"
sample() { # sample T: one row per node
  for name in n1 n2 n3; do
    local pid; pid="$(cat "$work/$name.pid")"
    local rss fds
    rss="$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null || echo "")"
    fds="$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)"
    echo "$1,$name,${rss:-},$fds" >>"$OUT"
  done
}

# flood PORT COUNT: COUNT idle connections to PORT, held 20 s, in the background.
flood() {
  (
    for _ in $(seq 1 "$2"); do exec {fd}<>"/dev/tcp/127.0.0.1/$1" || true; done 2>/dev/null
    sleep 20
  ) &
}

script=scripts/wrk/mix.lua
if [ "$LOAD" = reads ]; then
  fill=()
  for name in n1 n2 n3; do
    LISTS=1000 wrk -t1 -c8 -d"${PREFILL}s" -s scripts/wrk/mix.lua \
      "http://127.0.0.1:${http[$name]}/" >/dev/null 2>&1 &
    fill+=($!)
  done
  wait "${fill[@]}"   # the wrk processes only, never the nodes
  script=scripts/wrk/get.lua
fi
clients=()
for name in n1 n2 n3; do
  LISTS=1000 wrk -t1 -c8 -d"${DURATION}s" --timeout 10s -s "$script" \
    "http://127.0.0.1:${http[$name]}/" >"$work/wrk.$name" 2>&1 &
  clients+=($!)
done

start=$(date +%s)
next_flood=$FLOOD_EVERY
next_restart=$RESTART_EVERY
while :; do
  t=$(( $(date +%s) - start ))
  [ "$t" -ge "$DURATION" ] && break
  sample "$t"
  if [ "$t" -ge "$next_flood" ]; then
    flood "${http[n1]}" "$FLOOD"
    flood "${dist[n1]}" "$((FLOOD / 4))"
    next_flood=$((next_flood + FLOOD_EVERY))
  fi
  if [ "$t" -ge "$next_restart" ]; then
    kill "$(cat "$work/n3.pid")"
    while kill -0 "$(cat "$work/n3.pid")" 2>/dev/null; do sleep 0.2; done
    node n3
    next_restart=$((next_restart + RESTART_EVERY))
  fi
  sleep 10
done
wait "${clients[@]}"   # the wrk processes only, never the nodes

echo "### Per ${WINDOW} s window: resident MiB (min-max) and open descriptors (min-max)"
python3 - "$OUT" "$WINDOW" <<'PY'
import csv, sys
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1])))
window = int(sys.argv[2])
cells = defaultdict(lambda: {"rss": [], "fds": []})
for row in rows:
    if not row["rss_mib"]:
        continue
    key = (int(row["t"]) // window, row["node"])
    cells[key]["rss"].append(int(row["rss_mib"]))
    cells[key]["fds"].append(int(row["fds"]))
nodes = ["n1", "n2", "n3"]
print("| window | " + " | ".join(f"{n} MiB | {n} fds" for n in nodes) + " |")
print("|---" * (1 + 2 * len(nodes)) + "|")
for w in sorted({k[0] for k in cells}):
    out = []
    for n in nodes:
        c = cells[(w, n)]
        out.append(f"{min(c['rss'])}-{max(c['rss'])}" if c["rss"] else "-")
        out.append(f"{min(c['fds'])}-{max(c['fds'])}" if c["fds"] else "-")
    print(f"| {w * window}-{(w + 1) * window} s | " + " | ".join(out) + " |")
PY
echo
echo "### Load"
for name in n1 n2 n3; do
  printf '%s: %s; %s\n' "$name" "$(grep -o '[0-9]* requests in [^,]*' "$work/wrk.$name")" \
    "$(grep -E 'Non-2xx|Socket errors' "$work/wrk.$name" | tr '\n' ' ' || true)"
done
