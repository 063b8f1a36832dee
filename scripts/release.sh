#!/usr/bin/env bash
# Builds the Todo release, as `MIX_ENV=prod mix release` does: the `dist`
# host (whole-program optimised) and the guests, then `host release`, which
# lays out _build/prod/rel/todo (bin/todo, the host, the components as .wasm
# and precompiled for this machine, releases/COOKIE, env.sh, vm.args) and
# says where it is.
#
#   bash scripts/release.sh            # _build/prod/rel/todo
#   OUT=/opt/todo bash scripts/release.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --target wasm32-wasip2 -p guest-todo
cargo build --profile dist -p host
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/dist/host" release \
  --out "${OUT:-_build/prod/rel/todo}" \
  "guest_todo=$target_dir/wasm32-wasip2/release/guest_todo.wasm"
