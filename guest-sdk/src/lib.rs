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

/// Labels this build of the component for people: `guest_sdk::version!("2.0.0")`
/// at the crate's root writes the label into the custom section
/// `otp-version`, which the host shows in `versions`, `ps` and its logs,
/// and hands to `otp:platform/upgrade` as the version a state comes from.
/// A version is its bytes (a rebuild that differs is another version); the
/// label only names it, so keep one label per release of the component.
#[macro_export]
macro_rules! version {
    ($label:expr) => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "otp-version")]
        #[used]
        static OTP_VERSION: [u8; $label.len()] = $crate::label_bytes($label);
    };
}

/// The bytes of a label, as an array `version!` can place in a section.
#[doc(hidden)]
pub const fn label_bytes<const N: usize>(label: &str) -> [u8; N] {
    let bytes = label.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}
