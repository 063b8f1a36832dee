//! What each store holds: the WASI contexts, the memory limiter, and the
//! capabilities granted to the instance, built from plain values.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::budget::MemoryBudget;
use crate::capabilities::{Capabilities, DenyOutgoingHttp, HasCapabilities};

/// Host-side resources (streams, fields, pollables...) one instance may hold
/// at once. They live in the host's memory, outside the guest's memory cap;
/// a Rust guest holds a handful.
const MAX_RESOURCES_PER_INSTANCE: usize = 4096;

/// The data of one store: one process, one HTTP request handler, or one
/// console call.
pub struct StoreData {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: DenyOutgoingHttp,
    table: ResourceTable,
    limits: MeteredLimits,
    capabilities: Capabilities,
}

impl StoreData {
    /// Data for an instance granted `capabilities`, whose linear memory may
    /// grow to `memory_cap` bytes; its size is kept in `memory` when given
    /// (a process's, for the console and observer), and taken from `shared`
    /// when given (an HTTP handler's, from the handlers' budget).
    pub fn new(
        capabilities: Capabilities,
        memory_cap: usize,
        memory: Option<Arc<AtomicUsize>>,
        shared: Option<Arc<MemoryBudget>>,
    ) -> Self {
        // No preopened directories, no environment, no arguments, no socket
        // address allowed: of WASI, only clocks, randomness and stdio
        // (which lands in the host's stdout/stderr) do anything.
        let wasi = WasiCtx::builder().inherit_stdout().inherit_stderr().build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_cap)
            .trap_on_grow_failure(true)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES_PER_INSTANCE);
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            http_hooks: DenyOutgoingHttp,
            table,
            limits: MeteredLimits {
                limits,
                memory,
                shared,
                grown: 0,
            },
            capabilities,
        }
    }

    pub(super) fn limits(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// Why the instance trapped, if a storage write's outcome was unknown.
    pub fn unknown_outcome(&self) -> Option<&str> {
        self.capabilities.unknown_outcome()
    }

    /// Bytes of linear memory the instance has grown to (memory never
    /// shrinks while the instance lives).
    pub fn linear_memory_bytes(&self) -> usize {
        self.limits.grown
    }

    /// Whether the guest has let go of every host resource: a request
    /// handler that kept one (an unanswered response, an unfinished body)
    /// is not clean enough to serve another request.
    pub fn holds_no_resources(&self) -> bool {
        self.table.is_empty()
    }
}

impl HasCapabilities for StoreData {
    fn capabilities(&mut self) -> &mut Capabilities {
        &mut self.capabilities
    }
}

/// The store's limits, and a gauge of its linear memory: wasmtime asks the
/// limiter before every growth (the first allocation included), which makes
/// it the one place that sees the size change, at no cost per call.
struct MeteredLimits {
    limits: StoreLimits,
    memory: Option<Arc<AtomicUsize>>,
    /// The budget growth is taken from, for an HTTP handler.
    shared: Option<Arc<MemoryBudget>>,
    /// Bytes of linear memory the store's instances have grown to.
    grown: usize,
}

impl Drop for MeteredLimits {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.give_back(self.grown);
        }
    }
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        if let Some(shared) = &self.shared
            && !shared.try_take(growth)
        {
            wasmtime::bail!(
                "HTTP request handlers hold {} MiB of memory, their budget \
                 (--http-handler-memory): this one cannot grow",
                shared.limit() >> 20
            );
        }
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true))
            && let Some(shared) = &self.shared
        {
            shared.give_back(growth);
        }
        let allowed = allowed?;
        if allowed {
            self.grown = self.grown.saturating_add(growth);
            if let Some(memory) = &self.memory {
                memory.fetch_add(growth, Ordering::Relaxed);
            }
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

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}
