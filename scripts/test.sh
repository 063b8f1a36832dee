#!/usr/bin/env bash
# Sets everything up, builds, and runs every test: the host's unit tests, the
# integration tests against the real binary and guests, and the Todo guest's
# unit tests (natively, both versions).
#
# The host is built once, by `cargo test` itself (the integration tests need
# its binary, which cargo builds for them): a separate `cargo build` first
# would build wasmtime and its dependents a second time, with the features
# the test build does not share.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-guests.sh
cargo test --release -p host -p guest-todo
# The Todo guest's version 2, natively.
cargo test --release -p guest-todo --features v2
