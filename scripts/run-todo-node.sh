#!/usr/bin/env bash
# Sets everything up, builds, and starts a Todo node in the foreground:
# HTTP on port ${TODO_PORT:-5454}, data in ./data/node_a (RocksDB), node
# name node_a@127.0.0.1 (distribution on loopback only; other nodes on this
# machine can join it with --join node_a@127.0.0.1).
# Extra arguments go to `host run` (see `target/release/host run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
source scripts/lib.sh
target="$(target_dir)"
exec "$target/release/host" run "$target/wasm32-wasip2/release/guest_todo.wasm" --node node_a@127.0.0.1 "$@"
