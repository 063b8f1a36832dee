#!/usr/bin/env bash
# Builds the guests (target/wasm32-wasip2/release/*.wasm), after installing
# what is missing. The host is built by whoever needs it: scripts/build.sh for
# running it, `cargo test` (scripts/test.sh) for testing it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
guests="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release"
# Version 2.0.0 of the Todo component first, kept as guest_todo_v2.wasm
# (cargo caches both builds: their features differ), then version 1.0.0,
# which is guest_todo.wasm.
cargo build --release --target wasm32-wasip2 -p guest-todo --features v2
cp "$guests/guest_todo.wasm" "$guests/guest_todo_v2.wasm"
# A broken 2.0.0, for the hot-swap tests only.
cargo build --release --target wasm32-wasip2 -p guest-todo --features faulty-upgrade
cp "$guests/guest_todo.wasm" "$guests/guest_todo_v2_faulty.wasm"
cargo build --release --target wasm32-wasip2 -p guest-todo -p minimal -p misbehave -p hello
