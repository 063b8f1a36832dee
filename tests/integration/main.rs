//! Integration tests: the real `host` binary, the real guests built from this
//! repository for wasm32-wasip2, real RocksDB in temporary directories, real
//! HTTP on 127.0.0.1 with ephemeral ports.
//!
//! Build the guests first (`scripts/build-guests.sh` does): the tests look for them
//! next to the host binary's target directory, or in `$GUEST_WASM_DIR`.

mod support;

mod bad_input;
mod book_routes;
mod cluster_catch_up;
mod cluster_failover;
mod cluster_faults;
mod cluster_membership;
mod cluster_partition;
mod cluster_seed;
mod cluster_swap;
mod concurrency;
mod console;
mod dist_bad_input;
mod floods;
mod hibernation;
mod hot_swap;
mod isolation;
mod json_api;
mod lifecycle;
mod observer;
mod persistence;
mod port_mapper;
mod release_ops;
mod release_seed;
mod release_upgrade;
mod shutdown;
mod storage_failure;
