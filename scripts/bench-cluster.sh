#!/usr/bin/env bash
# Cluster load benchmarks, in one run:
#  1. HTTP on a 3-node cluster: the Todo workloads over 1,000 lists (spread
#     over the nodes by their names), one wrk per node so requests are
#     spread over the nodes' HTTP ports; beside it a lone node (never
#     clustered) under the same three wrk processes, and, with OLD_HOST set,
#     a lone node of another build (the code before the cluster) likewise.
#  2. Node-down to the first acknowledged add to a list that lived on a node
#     killed with -9.
#  3. Catch-up: a fourth node joins after all of that; time until it has
#     applied the whole log, and entries per second.
# Prints Markdown for BENCHMARKS.md.
# OLD_HOST runs with OLD_TODO, the Todo guest built with that code (default:
# next to OLD_HOST's target dir), since the contract may differ. LONE_ONLY=1
# runs only the lone-node comparison, ROUNDS times, alternating the builds
# (the machine's run-to-run noise is about ±10%).
#   PROFILE=dist DURATION=10s CONNECTIONS=21 OLD_HOST=/path/to/old/target/dist/host bash scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-21}"   # per wrk; three wrk processes
PROFILE="${PROFILE:-dist}"
OLD_HOST="${OLD_HOST:-}"
LONE_ONLY="${LONE_ONLY:-}"
ROUNDS="${ROUNDS:-1}"
OLD_TODO="${OLD_TODO:-${OLD_HOST%/*/host}/wasm32-wasip2/release/guest_todo.wasm}"

bash scripts/build.sh >&2
cargo build --profile "$PROFILE" -p host --bin host >&2
source scripts/lib.sh
target_dir="$(target_dir)"
host="$target_dir/$PROFILE/host"
todo="$target_dir/wasm32-wasip2/release/guest_todo.wasm"

work="$(mktemp -d)"
trap 'stop_servers; rm -rf "$work"' EXIT
export RELEASE_COOKIE=bench
ERL_EPMD_PORT="$(free_port)"
export ERL_EPMD_PORT
"$host" epmd --address 127.0.0.1 --port "$ERL_EPMD_PORT" >"$work/epmd.log" 2>&1 &
echo $! >>"$work/pids"
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $ERL_EPMD_PORT))" 2>/dev/null && break
  sleep 0.1
done

# node NAME [ARGS...]: starts a Todo node; prints "HTTP_PORT METRICS_PORT".
node() {
  local name="$1"; shift
  start_server "$work/$name" "$host" run "$todo" --node "$name@127.0.0.1" --http-host 127.0.0.1 \
    --http-port 0 --metrics-port 0 --data-dir "$work/$name-data" --idle-timeout 1h "$@" >/dev/null
  echo "$(port_after "$work/$name" 'HTTP listening on http://127.0.0.1:') $(port_after "$work/$name" 'metrics on http://127.0.0.1:')"
}

metric() { # metric PORT NAME
  curl -s "http://127.0.0.1:$1/metrics" | awk -v name="$2" 'index($0, name "{") == 1 {print $2}'
}

wait_members() { # wait_members METRICS_PORT COUNT
  for _ in $(seq 1 300); do
    [ "$(metric "$1" host_cluster_members_up)" = "$2" ] && [ "$(metric "$1" host_cluster_cut_off)" = "0" ] && return
    sleep 0.1
  done
  echo "the cluster did not form" >&2
  return 1
}

# load SCRIPT PORT PORT PORT: three wrk processes at once, one per port;
# prints "req/s|worst p99|errors".
load() {
  local script="$1"; shift
  local i=0 clients=()
  for port in "$@"; do
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "http://127.0.0.1:$port/" >"$work/wrk.$i" &
    clients+=($!)
    i=$((i + 1))
  done
  wait "${clients[@]}"   # the wrk processes only, never the nodes
  python3 - "$work" "$i" <<'PY'
import re, sys
work, count = sys.argv[1], int(sys.argv[2])
total, p99s, errors = 0.0, [], []
def ms(text):
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]", "", text)
    return value * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]
for i in range(count):
    out = open(f"{work}/wrk.{i}").read()
    try:
        total += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p99s.append(ms(re.search(r"99%\s+(\S+)", out).group(1)))
    except (AttributeError, KeyError, ValueError):
        sys.exit(f"cannot read this wrk output:\n{out}")
    errors += re.findall(r"(Non-2xx.*|Socket errors.*)", out)
print(f"{total:.0f}|{max(p99s):.2f}ms|{'; '.join(e.strip() for e in errors) or 'none'}")
PY
}

rows=()
workloads=("GET /entries|scripts/wrk/get.lua" "POST /add_entry|scripts/wrk/post.lua" "book mix 80/20|scripts/wrk/mix.lua")

# --- lone nodes, same clients as the cluster gets ---------------------------
lone() { # lone LABEL BINARY GUEST [ARGS...]
  local label="$1" binary="$2" guest="$3"; shift 3
  for workload in "${workloads[@]}"; do
    IFS='|' read -r name script <<<"$workload"
    local dir="$work/lone-$RANDOM"
    local port
    port="$(start_server "$dir" "$binary" run "$guest" --node lone --http-host 127.0.0.1 --http-port 0 \
      --data-dir "$dir-data" --idle-timeout 1h "$@")"
    python3 scripts/wrk/prefill.py "$port" 3
    rows+=("$label: $name|$(load "$script" "$port" "$port" "$port")")
    kill "$(tail -1 "$work/pids")" 2>/dev/null || true
  done
}

lone_comparison() {
  for round in $(seq 1 "$ROUNDS"); do
    local suffix=""
    [ "$ROUNDS" -gt 1 ] && suffix=" (round $round)"
    lone "lone node, this code$suffix" "$host" "$todo" --distribution none
    if [ -n "$OLD_HOST" ]; then
      lone "lone node, previous code$suffix" "$OLD_HOST" "$OLD_TODO"
    fi
  done
}

print_rows() {
  echo
  echo "| Workload | req/s | worst p99 of the three | errors |"
  echo "|---|---:|---:|---|"
  for row in "${rows[@]}"; do
    IFS='|' read -r name rps p99 errors <<<"$row"
    echo "| $name | $rps | $p99 | $errors |"
  done
}

header="host built with --profile $PROFILE; three wrk -t1 -c$CONNECTIONS -d$DURATION at once (one per node, or all three at the lone node), 1,000 lists prefilled with 3 entries; $(nproc) cores, $(date -u +%Y-%m-%d)"
if [ -n "$LONE_ONLY" ]; then
  lone_comparison
  echo "$header"
  print_rows
  exit 0
fi

# --- 1. A 3-node cluster --------------------------------------------------
read -r c1 m1 <<<"$(node n1)"
read -r c2 m2 <<<"$(node n2 --join n1@127.0.0.1)"
read -r c3 m3 <<<"$(node n3 --join n1@127.0.0.1)"
wait_members "$m1" 3
python3 scripts/wrk/prefill.py "$c1" 3
held="$(metric "$m1" host_processes)/$(metric "$m2" host_processes)/$(metric "$m3" host_processes)"
for workload in "${workloads[@]}"; do
  IFS='|' read -r name script <<<"$workload"
  rows+=("3-node cluster: $name|$(load "$script" "$c1" "$c2" "$c3")")
done

lone_comparison

# --- 2. Node-down to first acknowledged add -------------------------------
# A list started through n1; the node whose process count grew holds it.
counts() { echo "$(metric "$m1" host_processes) $(metric "$m2" host_processes) $(metric "$m3" host_processes)"; }
read -r -a before <<<"$(counts)"
curl -s -o /dev/null -X POST "http://127.0.0.1:$c1/add_entry?list=failover&date=2024-01-01&title=first"
read -r -a after <<<"$(counts)"
http_ports=("$c1" "$c2" "$c3")
metric_ports=("$m1" "$m2" "$m3")
victim=0
for i in 0 1 2; do [ "${after[$i]}" -gt "${before[$i]}" ] && victim=$i; done
survivor=$(( (victim + 1) % 3 ))
victim_pid="$(pgrep -f -- "--node n$((victim + 1))@127.0.0.1" | head -1)"
failover="$(python3 - "${http_ports[$survivor]}" "$victim_pid" <<'PY'
import http.client, os, signal, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
os.kill(pid, signal.SIGKILL)
killed = time.monotonic()
while time.monotonic() - killed < 60:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/add_entry?list=failover&date=2024-01-01&title=after")
        if c.getresponse().status == 200:
            print(f"{time.monotonic() - killed:.2f}")
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
print("none in 60 s")
PY
)"

# --- 3. Catch-up of a late joiner ------------------------------------------
applied="$(metric "${metric_ports[$survivor]}" host_cluster_applied_index)"
started="$(date +%s.%N)"
read -r _ m4 <<<"$(node n4 --join "n$((survivor + 1))@127.0.0.1")"
while [ "$(metric "$m4" host_cluster_applied_index)" -lt "$applied" ]; do sleep 0.05; done
ended="$(date +%s.%N)"
catch_up="$(python3 -c "print(f'{$ended - $started:.2f} s for {$applied} log entries: {$applied / ($ended - $started):.0f} entries/s')")"

echo "$header"
echo "list processes per node after the prefill: $held"
print_rows
echo
echo "- node-down (n$((victim + 1)), holding the list, killed with -9) to the first acknowledged add to its list through another node: $failover s"
echo "- catch-up of a node joining afterwards (node start included): $catch_up"
