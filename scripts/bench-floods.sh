#!/usr/bin/env bash
# Hostile-input figures (BENCHMARKS.md, "Floods and slow readers"): runs the
# flood tests ROUNDS times each, one at a time, and prints what they print:
# the node's resident memory before, at most during, and after 150 clients
# that ask for a 4 MiB answer and never read it (--http-handler-memory
# 256MiB), and how long each flood test took.
#   ROUNDS=5 bash scripts/bench-floods.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-5}"
bash scripts/build-guests.sh >&2
source scripts/lib.sh
binary="$(integration_binary)"
cd host
for test in \
  floods::clients_that_do_not_read_large_answers_are_cut_and_hold_bounded_memory \
  floods::an_idle_connection_flood_leaves_tools_members_and_storage_working \
  floods::a_flood_of_half_open_handshakes_does_not_stop_tools_or_a_join \
  port_mapper::a_flood_of_idle_connections_does_not_stop_lookups_or_registrations; do
  for round in $(seq 1 "$ROUNDS"); do
    started=$(date +%s.%N)
    out="$(timeout 300 "$binary" "$test" --exact --nocapture 2>&1)" || echo "round $round of $test failed" >&2
    took=$(echo "$(date +%s.%N) - $started" | bc)
    printf '%s round %d: %.1f s %s\n' "${test#*::}" "$round" "$took" "$(grep -o 'resident: .*' <<<"$out" || true)"
  done
done
