#!/usr/bin/env bash
# Builds the host (target/release/host) and the guests
# (target/wasm32-wasip2/release/*.wasm), after installing what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-guests.sh
cargo build --release -p host
