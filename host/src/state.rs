//! What each store holds: the WASI contexts, the memory limiter, and the
//! capabilities granted to the instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::{
    DenyOutgoingHttp, HostCalls, LogCapability, ProcessCapability, StorageCapability,
};
use crate::node::NodeCore;
use crate::registry::Fence;

/// Host-side resources (streams, fields, pollables...) one instance may hold
/// at once. They live in the host's memory, outside the guest's memory cap;
/// a Rust guest holds a handful.
const MAX_RESOURCES_PER_INSTANCE: usize = 4096;

/// The data of one store: one process, or one HTTP request handler.
pub struct InstanceState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: DenyOutgoingHttp,
    table: ResourceTable,
    limits: MeteredLimits,
    pub(crate) process: ProcessCapability,
    pub(crate) storage: StorageCapability,
    pub(crate) log: LogCapability,
}

impl InstanceState {
    /// State for an instance of `component`, running process `process_name`
    /// (none for an HTTP request handler) registered under `fence` (in a
    /// cluster).
    pub fn new(
        node: &Arc<NodeCore>,
        component: &str,
        process_name: Option<&str>,
        fence: Option<Fence>,
    ) -> Self {
        Self::metered(node, component, process_name, fence, None)
    }

    /// Like [`InstanceState::new`], keeping the instance's linear memory
    /// size in `memory` (a process's, for the console and observer).
    pub fn metered(
        node: &Arc<NodeCore>,
        component: &str,
        process_name: Option<&str>,
        fence: Option<Fence>,
        memory: Option<Arc<AtomicUsize>>,
    ) -> Self {
        // No preopened directories, no sockets, no environment: WASI is
        // granted for clocks, randomness and stdio (which lands in the host's
        // stdout/stderr) only.
        let wasi = WasiCtx::builder().inherit_stdout().inherit_stderr().build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(node.config().limits.max_memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let component: Arc<str> = Arc::from(component);
        let process_name: Option<Arc<str>> = process_name.map(Arc::from);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES_PER_INSTANCE);
        let slot = node.host_call_slot(&component).cloned().unwrap_or_default();
        let host_calls = || HostCalls::new(slot.clone(), component.clone(), process_name.clone());
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            http_hooks: DenyOutgoingHttp,
            table,
            limits: MeteredLimits { limits, memory },
            process: ProcessCapability::new(
                node.clone(),
                component.clone(),
                process_name.clone(),
                host_calls(),
            ),
            storage: StorageCapability::new(
                node.storage().namespace(&component).fenced(fence),
                host_calls(),
            ),
            log: LogCapability::new(node.name(), component, process_name),
        }
    }

    pub(crate) fn limits(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// Whether the guest has let go of every host resource: a request
    /// handler that kept one (an unanswered response, an unfinished body)
    /// is not clean enough to serve another request.
    pub(crate) fn holds_no_resources(&self) -> bool {
        self.table.is_empty()
    }
}

/// The store's limits, and a gauge of its linear memory: wasmtime asks the
/// limiter before every growth (the first allocation included), which makes
/// it the one place that sees the size change, at no cost per call.
struct MeteredLimits {
    limits: StoreLimits,
    memory: Option<Arc<AtomicUsize>>,
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed && let Some(memory) = &self.memory {
            memory.fetch_add(desired.saturating_sub(current), Ordering::Relaxed);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}
