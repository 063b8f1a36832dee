#!/usr/bin/env bash
# Failover times (BENCHMARKS.md, "Failover"): runs the integration tests
# that cut a node off silently (the leader, a follower) or kill one with -9
# (the holder of a busy list, the leader) ROUNDS times each, one at a time,
# and prints what each measured: from the cut or the kill to the moment the
# node's lists answer again on the others; for the leader's cut, how many
# elections it took; for the follower's return, the longest wait between
# two acknowledged adds through the leader; for a follower's cut with
# writers on both sides, how long the cut-off node took to refuse writes.
#   ROUNDS=10 bash scripts/bench-failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-10}"
bash scripts/build-guests.sh >&2
source scripts/lib.sh
binary="$(integration_binary)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd host
runs() { # runs TEST: ROUNDS runs of TEST, one at a time; their output in $work/TEST.N
  for round in $(seq 1 "$ROUNDS"); do
    timeout 300 "$binary" "$1" --exact --nocapture >"$work/$1.$round" 2>&1 || echo "round $round of $1 failed" >&2
  done
}
figures() { # figures TEST REGEX: the second word of REGEX's matches in TEST's outputs
  cat "$work/$1".* | grep -o "$2" | awk '{print $2}'
}
# seconds: "3.25s" or "812ms" to seconds.
seconds() { awk '{ v = $1; if (v ~ /ms$/) { sub("ms", "", v); v /= 1000 } else { sub("s", "", v) } print v }'; }
summary() { # summary NAME: p50 and worst of the values on stdin
  sort -g | awk -v name="$1" '{ v[NR] = $1 } END { printf "| %s | %d | %.2f s | %.2f s |\n", name, NR, v[int((NR + 1) / 2)], v[NR] }'
}
leader_cut=cluster_faults::a_silently_cut_off_leader_is_replaced_and_its_lists_answer_within_the_node_down_time
follower_cut=cluster_faults::a_follower_back_from_a_cut_deposes_nobody
leader_killed=cluster_failover::killing_the_raft_leader_loses_nothing
holder_killed=cluster_failover::killing_the_node_that_holds_a_busy_list_loses_nothing
partition=cluster_partition::a_cut_off_node_refuses_writes_and_catches_up_after_the_heal
for test in "$leader_cut" "$follower_cut" "$leader_killed" "$holder_killed" "$partition"; do runs "$test"; done
again='again [0-9.]*m\?s'
echo "| what | runs | p50 | worst |"
echo "|---|---|---|---|"
figures "$leader_cut" "$again" | seconds | summary "leader cut off silently: its lists answer on the majority"
figures "$follower_cut" "$again" | seconds | summary "follower cut off silently: its lists answer on the majority"
figures "$leader_killed" "$again" | seconds | summary "leader killed (-9): its busy list answers again"
figures "$holder_killed" "$again" | seconds | summary "holder of a busy list killed (-9, the leader in some runs): the list answers again"
echo
echo "Elections per leader cut: $(figures "$leader_cut" 'elections: [0-9]*' | tr '\n' ' ')"
echo "Longest wait between two acknowledged adds through the leader when a cut-off follower returns (ms): $(figures "$follower_cut" 'heal: [0-9]*' | tr '\n' ' ')"
echo
echo "Writes on a cut-off node (a follower, silently cut), per run:"
cat "$work/$partition".* | grep -o 'minority refusals: .*' | sed 's/^/- /'
