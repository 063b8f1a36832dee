#!/usr/bin/env bash
# Installs what building needs on a fresh Debian/Ubuntu machine with rustup:
# RocksDB (Debian's librocksdb-dev, linked statically into the host), libclang
# for RocksDB's bindings, wrk and python3 for the load benchmark, Erlang's
# epmd (erlang-base: the port-mapper tests check ours against it), Chromium
# (the observer page is tested in a headless browser), and the
# wasm32-wasip2 target for the guests. Safe to run again: it installs only
# what is missing.
set -euo pipefail

packages=(librocksdb-dev libclang-dev wrk curl erlang-base chromium)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# The load benchmarks' helpers are Python; any python3 on the PATH will do.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
