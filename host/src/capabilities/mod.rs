//! Host capabilities: each is its own module that links its part of the WIT
//! contract and owns its per-instance state, in the spirit of Spin's factors.
//!
//! - `process`: call and cast to processes by name, identity.
//! - `storage`: the component's private key-value namespace.
//! - `log`: logging into the host's logs.
//! - `http`: `wasi:http` for incoming requests; outgoing requests are denied.
//! - `host_calls`: the trace of a component's storage and process calls.
//!
//! Plain WASI (clocks, random, stdio) comes from `wasmtime-wasi`, with no
//! filesystem and no network granted (see `state::InstanceState::new`).

mod host_calls;
mod http;
mod log;
mod process;
mod storage;

pub use self::host_calls::{HostCallSlot, HostCalls};
pub use self::http::DenyOutgoingHttp;
pub use self::log::LogCapability;
pub use self::process::{CallError, ProcessCapability};
pub use self::storage::StorageCapability;

use wasmtime::component::Linker;

use crate::state::InstanceState;

/// Links every capability into `linker`.
pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    let wasm_error = |e: wasmtime::Error| anyhow::anyhow!("cannot link host capabilities: {e}");
    wasmtime_wasi::p2::add_to_linker_async(linker).map_err(wasm_error)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker).map_err(wasm_error)?;
    process::add_to_linker(linker).map_err(wasm_error)?;
    storage::add_to_linker(linker).map_err(wasm_error)?;
    log::add_to_linker(linker).map_err(wasm_error)?;
    Ok(())
}
