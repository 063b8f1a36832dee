#!/usr/bin/env bash
# What each option of the instance pool's slot layout costs, one at a time:
# for each variant below, the `density` bench (PROCESSES live processes of
# the minimal guest: RSS, page tables, memory mappings, wake) and the `core`
# bench's spawn and call round trip. Prints a Markdown table for
# BENCHMARKS.md ("What each pool option costs").
#   PROCESSES=250000 bash scripts/bench-pool.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PROCESSES="${PROCESSES:-250000}"
bash scripts/build.sh >&2
cargo build --release -p host --benches >&2
source scripts/lib.sh
target_dir="$(target_dir)"
bench_binary() {
  ls -t "$target_dir"/release/deps/"$1"-* | grep -v '\.d$' | head -1
}
density="$(bench_binary density)"
core="$(bench_binary core)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# name|VAR=value ... (empty: the default layout)
variants=(
  "default (4 GiB reservation, 32 MiB guard, 1 MiB stack, 128 KiB kept, no zeroing)|"
  "reservation 64 MiB (bounds checks in code)|POOL_MEMORY_RESERVATION=67108864"
  "reservation 64 MiB, no guard|POOL_MEMORY_RESERVATION=67108864 POOL_MEMORY_GUARD=0"
  "guard 2 MiB|POOL_MEMORY_GUARD=2097152"
  "stack 512 KiB (guest 128 KiB)|POOL_STACK_SIZE=524288"
  "stack 2 MiB (guest 512 KiB: wasmtime's default)|POOL_STACK_SIZE=2097152"
  "keep resident 0|POOL_KEEP_RESIDENT=0"
  "keep resident 16 KiB|POOL_KEEP_RESIDENT=16384"
  "keep resident 1 MiB|POOL_KEEP_RESIDENT=1048576"
  "stack zeroing|POOL_STACK_ZEROING=true"
)

echo "| Variant | mappings at start | RSS at start | page tables, $PROCESSES live | RSS per process | mappings added by the processes | start all (s) | spawn | call | wake p50 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for variant in "${variants[@]}"; do
  name="${variant%%|*}"
  settings="${variant#*|}"
  # shellcheck disable=SC2086
  env $settings DENSITY_PROCESSES="$PROCESSES" timeout 600 "$density" >"$work/density" 2>&1
  # shellcheck disable=SC2086
  env $settings timeout 600 "$core" --bench 'spawn: instantiate|call round trip' \
    --warm-up-time 2 --measurement-time 5 >"$work/core" 2>&1
  middle() { grep -A1 "^$1" "$work/core" | grep -o 'time: *\[[^]]*\]' | awk '{print $4, $5}'; }
  start_maps="$(grep -o '[0-9]* memory mappings$' "$work/density" | grep -o '^[0-9]*')"
  start_rss="$(grep -o 'node up: .*RSS [0-9]* MiB' "$work/density" | grep -o '[0-9]* MiB$')"
  pte="$(grep -o 'page tables [0-9]* MiB$' "$work/density" | grep -o '[0-9]* MiB')"
  per_process="$(grep -o '([0-9.]* KiB per process' "$work/density" | grep -o '[0-9.]* KiB')"
  added_maps="$(grep -o '(+[0-9]* since the node was up' "$work/density" | grep -o '[0-9]*')"
  started="$(grep -o 'started [0-9]* processes in [0-9.]* s' "$work/density" | grep -o '[0-9.]* s$' | grep -o '[0-9.]*')"
  wake="$(grep -o 'p50 [0-9.]* µs' "$work/density" | awk '{print $2, $3}')"
  echo "| $name | $start_maps | $start_rss | $pte | $per_process | $added_maps | $started | $(middle 'spawn: instantiate') | $(middle 'call round trip') | $wake |"
done
