#!/usr/bin/env bash
# Builds the host (target/release/host) and the guests
# (target/wasm32-wasip2/release/*.wasm), after installing what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --target wasm32-wasip2 -p guest-todo -p minimal -p misbehave -p hello
cargo build --release -p host
