//! Host-side bindings of the platform's WIT package (`wit/platform.wit`).
//!
//! Calls and casts await other processes, and storage may wait for an fsync
//! or the cluster, so those imports are async; logging is a plain function.
//! Storage may also trap its caller (a write of unknown outcome, see
//! `capabilities::storage`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "otp:platform/process-component",
    imports: {
        "otp:platform/process": async,
        "otp:platform/storage": async | trappable,
    },
    exports: { default: async },
});

pub use exports::otp::platform::behaviour;
pub use otp::platform::{log, process, storage, types};
