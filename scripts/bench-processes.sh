#!/usr/bin/env bash
# Memory per instantiated process: starts COUNT processes of the minimal
# guest, none hibernating (--hibernate-after off, enough instance slots),
# and reports the node's resident memory and memory mappings before and
# after. (Hibernated processes: the `density` bench.)
#   COUNT=5000 bash scripts/bench-processes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${COUNT:-5000}"
bash scripts/build.sh >&2
source scripts/lib.sh
target_dir="$(target_dir)"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$target_dir/release/host" run "$target_dir/wasm32-wasip2/release/minimal.wasm" --node bench \
  --distribution none --http-host 127.0.0.1 --http-port 0 --data-dir "$work/data" --idle-timeout 1h \
  --max-processes "$((COUNT + 100))" --max-instances "$((COUNT + 100))" --hibernate-after off >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 600); do grep -q '127.0.0.1:' "$work/out" 2>/dev/null && break; sleep 0.1; done
port="$(grep -o '127.0.0.1:[0-9]*' "$work/out" | head -1 | cut -d: -f2)"
python3 scripts/wrk/spawn.py "$port" 10   # the first handler instance and processes
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
maps() { wc -l <"/proc/$pid/maps"; }
rss_before="$(rss)"; maps_before="$(maps)"
start="$(date +%s.%N)"
python3 scripts/wrk/spawn.py "$port" "$COUNT"
end="$(date +%s.%N)"
rss_after="$(rss)"; maps_after="$(maps)"
echo "processes: $COUNT (minimal guest), started over HTTP in $(python3 -c "print(f'{$end - $start:.2f}')") s"
echo "RSS: ${rss_before} KiB -> ${rss_after} KiB: $(( (rss_after - rss_before) / COUNT )) KiB per live process"
echo "memory mappings: ${maps_before} -> ${maps_after}: $(python3 -c "print(f'{($maps_after - $maps_before) / $COUNT:.1f}')") per live process (vm.max_map_count: $(cat /proc/sys/vm/max_map_count))"
