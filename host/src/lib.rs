//! The host: runs Wasm components as supervised processes, OTP style.
//!
//! See `ARCHITECTURE.md` at the top of the repository for the map of these
//! modules and the invariants they keep.

pub mod bindings;
pub mod capabilities;
pub mod cluster;
pub mod component;
pub mod config;
pub mod console;
pub mod dist;
pub mod hibernation;
pub mod http;
pub mod logs;
pub mod mailbox;
pub mod metrics;
pub mod node;
pub mod observer;
pub mod process;
pub mod registry;
pub mod release;
pub mod runtime;
pub mod shutdown;
pub mod state;
pub mod storage;
pub mod supervisor;
pub mod trace;
