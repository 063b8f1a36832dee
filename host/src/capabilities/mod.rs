//! Host capabilities: each is its own module that links its part of the WIT
//! contract and owns its per-instance state, in the spirit of Spin's factors.
//!
//! - `bindings`: the contract (`wit/platform.wit`) as the host sees it;
//! - `process`: call and cast to processes by name, identity, through the
//!   [`GuestCalls`] the node gives;
//! - `storage`: the component's private key-value namespace;
//! - `log`: logging into the host's logs;
//! - `http`: `wasi:http` for incoming requests; outgoing requests are denied;
//! - `host_calls`: the trace of a component's storage and process calls.
//!
//! What a component's instances are granted is a [`Grant`], built once per
//! component from plain values; each instance gets its [`Capabilities`]
//! from it. This module may use `crate::process` (ids, errors, traces) and
//! `crate::storage` (namespaces); it knows nothing of the node, the engine
//! or the cluster. The store data that holds the capabilities is the wasm
//! side's (`crate::wasm`), which links them with [`add_to_linker`].
//!
//! Plain WASI 0.2 is linked in full, because a Rust guest's standard library
//! imports all of it (filesystem, sockets, environment...), but its context
//! grants nothing: no preopened directory, no environment variable, no
//! argument, no socket address; clocks, randomness and stdio work.

pub mod bindings;
mod host_calls;
mod http;
mod log;
mod process;
mod storage;

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

pub use self::host_calls::{HostCallHook, HostCalls};
pub use self::http::DenyOutgoingHttp;
pub use self::log::LogCapability;
pub use self::process::{GuestCalls, ProcessCapability};
pub use self::storage::StorageCapability;
use crate::process::Fence;
use crate::storage::Namespace;

/// What every instance of one component is given.
#[derive(Clone)]
pub struct Grant {
    /// The node's name, in the component's log lines.
    pub node: Arc<str>,
    pub component: Arc<str>,
    pub calls: Arc<dyn GuestCalls>,
    /// The component's namespace, not yet fenced to a process.
    pub storage: Namespace,
    pub host_calls: HostCallHook,
}

/// The capabilities of one instance.
pub struct Capabilities {
    process: ProcessCapability,
    storage: StorageCapability,
    log: LogCapability,
}

impl Capabilities {
    /// For an instance of `grant`'s component running process
    /// `process_name` registered under `fence` (none for an HTTP handler or
    /// a console call).
    pub fn new(grant: &Grant, process_name: Option<&str>, fence: Option<Fence>) -> Self {
        let process_name: Option<Arc<str>> = process_name.map(Arc::from);
        let host_calls = || {
            HostCalls::new(
                grant.host_calls.clone(),
                grant.component.clone(),
                process_name.clone(),
            )
        };
        Self {
            process: ProcessCapability::new(
                grant.calls.clone(),
                grant.component.clone(),
                process_name.clone(),
                host_calls(),
            ),
            storage: StorageCapability::new(grant.storage.clone().fenced(fence), host_calls()),
            log: LogCapability::new(grant.node.clone(), grant.component.clone(), process_name),
        }
    }
}

impl Capabilities {
    /// Why the instance trapped, if a storage write's outcome was unknown.
    pub fn unknown_outcome(&self) -> Option<&str> {
        self.storage.unknown_outcome()
    }
}

/// A store's data that holds an instance's [`Capabilities`].
pub trait HasCapabilities: Send + 'static {
    fn capabilities(&mut self) -> &mut Capabilities;
}

/// Links WASI, `wasi:http` and every capability into `linker`.
pub fn add_to_linker<T>(linker: &mut Linker<T>) -> anyhow::Result<()>
where
    T: HasCapabilities + WasiView + WasiHttpView,
{
    let wasm_error = |e: wasmtime::Error| anyhow::anyhow!("cannot link host capabilities: {e}");
    wasmtime_wasi::p2::add_to_linker_async(linker).map_err(wasm_error)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker).map_err(wasm_error)?;
    process::add_to_linker(linker).map_err(wasm_error)?;
    storage::add_to_linker(linker).map_err(wasm_error)?;
    log::add_to_linker(linker).map_err(wasm_error)?;
    Ok(())
}
