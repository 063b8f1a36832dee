#!/usr/bin/env bash
# Sets everything up, builds, and runs every test: the host's unit tests, the
# integration tests against the real binary and guests, and the Todo guest's
# unit tests (natively).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cargo test --release -p host -p guest-todo
