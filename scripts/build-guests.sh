#!/usr/bin/env bash
# Builds the guests (target/wasm32-wasip2/release/*.wasm), after installing
# what is missing. The host is built by whoever needs it: scripts/build.sh for
# running it, `cargo test` (scripts/test.sh) for testing it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --target wasm32-wasip2 -p guest-todo -p minimal -p misbehave -p hello
