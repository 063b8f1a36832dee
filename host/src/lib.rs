//! The host: runs Wasm components as supervised processes, OTP style.
//!
//! See `ARCHITECTURE.md` at the top of the repository for the map of these
//! modules and the invariants they keep. They are listed here from the
//! bottom layer up: each may use the ones before it, never one after it
//! (the `layering` test checks it: `cargo test -p host --lib layering`).
//! Each is its own group, so that formatting never reorders them.

// Leaves: what a node is told, its logs, the metrics page, signals.
pub mod config;

pub mod logs;

pub mod metrics;

pub mod budget;

pub mod shutdown;

// Links between nodes: names, the port mapper, handshakes, frames.
pub mod distribution;

// The process runtime: mailboxes, registry, supervisor, hibernation.
pub mod process;

// RocksDB: components' namespaces, and the cluster's seam.
pub mod storage;

// What guests may ask of the host, per instance.
pub mod capabilities;

// wasmtime: the engine and its pool, components, store data.
pub mod wasm;

// The node: all of the above, seen through three narrow surfaces.
pub mod node;

// HTTP ingress: guests' routes.
pub mod http;

// The cluster: Raft, placement, failover.
pub mod cluster;

// Operating a node: the console, the observer page, releases.
pub mod console;

pub mod observer;

pub mod release;

// Starting and stopping a node, as `host run` does.
pub mod boot;

// Entry points of the fuzz targets (`fuzz/`) and their corpora's replay.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

#[cfg(test)]
mod layering;
