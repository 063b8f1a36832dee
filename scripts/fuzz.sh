#!/usr/bin/env bash
# Fuzzes what strangers send a node and its guest: builds the targets in
# fuzz/ (cargo-fuzz: libFuzzer with AddressSanitizer) and runs each for
# SECONDS (default 60) from its corpus, fuzz/corpus/TARGET.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (no TARGET: every target)
#
# The corpus in the repository is only read: what a run finds goes to a
# temporary folder, and with KEEP=1 the inputs that add coverage are merged
# into fuzz/corpus/TARGET, to commit. A crash stops the script with a
# failure and leaves its input in fuzz/artifacts/TARGET/: copy it into the
# target's corpus (the test suite replays every corpus: it is a regression
# test from then on), then fix the code.
#
# libFuzzer needs rustc's sanitizer flags, which are unstable: this
# machine's one toolchain is stable, and RUSTC_BOOTSTRAP=1 lets it take
# them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
seconds="${1:-60}"
shift || true
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
bash scripts/build-guests.sh
# wave_call reads the Todo guest's exported functions.
export GUEST_TODO_WASM="$(target_dir)/wasm32-wasip2/release/guest_todo.wasm"
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
cargo fuzz build --fuzz-dir fuzz -O

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '%-13s %10s %8s %6s %6s %7s\n' target runs "exec/s" cov corpus "rss MB"
for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  if ! cargo fuzz run --fuzz-dir fuzz -O "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096 \
    >"$work/$target.log" 2>&1; then
    grep -A 3 "panicked at" "$work/$target.log" || true
    grep -E "^(SUMMARY|MS:|0x|artifact_prefix)" "$work/$target.log" || tail -n 40 "$work/$target.log"
    echo "fuzz target $target failed: its input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  python3 - "$target" "$work/$target.log" <<'PY'
import re, sys
target, log = sys.argv[1], open(sys.argv[2], errors="replace").read()
stat = lambda name: (re.findall(rf"stat::{name}:\s+(\d+)", log) or ["?"])[-1]
done = re.findall(r"#\d+\s+DONE\s+cov: (\d+) ft: \d+ corp: (\d+)", log)
cov, corpus = done[-1] if done else ("?", "?")
print(f"{target:<13} {stat('number_of_executed_units'):>10} "
      f"{stat('average_exec_per_sec'):>8} {cov:>6} {corpus:>6} {stat('peak_rss_mb'):>7}")
PY
  if [ "${KEEP:-0}" = 1 ]; then
    cargo fuzz run --fuzz-dir fuzz -O "$target" "fuzz/corpus/$target" "$work/$target" -- \
      -set_cover_merge=1 -use_counters=0 >"$work/$target.merge.log" 2>&1
  fi
done
