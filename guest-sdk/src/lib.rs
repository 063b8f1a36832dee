//! The guest side of the platform, for Rust guests.
//!
//! Holds the bindings of the `otp:platform/service` world (generated once
//! here, so every guest shares them) and the plumbing to read an HTTP request
//! and send a response through `wasi:http`. A guest implements
//! [`Behaviour`] and [`HttpHandler`] and calls `guest_sdk::export!(MyType)`.

wit_bindgen::generate!({
    world: "otp:platform/service",
    path: "../wit",
    generate_all,
    pub_export_macro: true,
    default_bindings_module: "guest_sdk",
});

pub mod http;

pub use exports::otp::platform::behaviour::Guest as Behaviour;
pub use exports::wasi::http::incoming_handler::Guest as HttpHandler;
pub use otp::platform::log::{Level, log};
pub use otp::platform::process::{call, call_component, cast, component_name, self_name};
pub use otp::platform::storage;
pub use otp::platform::types::CallError;
