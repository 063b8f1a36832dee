//! The wasmtime engine: how it is configured, and the clock that keeps
//! guests from holding a thread.
//!
//! Instances come from the pooling allocator, sized once at start for the
//! node's process and HTTP limits, so a spawn is a slot reuse, not a round of
//! `mmap` calls. Epoch interruption makes every running guest yield to tokio
//! on each tick: a guest stuck in a loop costs one time slice per tick, never
//! a whole worker thread, and the deadline set around every call can fire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    ProfilingStrategy, Store,
};

use crate::config::NodeConfig;
use crate::state::InstanceState;

/// How often the epoch advances: the time slice a guest runs before it
/// yields to the scheduler.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Core instances, memories and tables a component instance may use. A Rust
/// guest built for `wasm32-wasip2` has one memory and a handful of small
/// adapter modules; these leave room for larger guests.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 8;

/// Instances beyond processes and HTTP handlers: the console's calls and
/// the renderers of running traces (both bounded by the console).
pub const CONSOLE_INSTANCES: u32 = 48;

/// Bytes of linear memory and of tables a freed pool slot keeps resident,
/// reset in place for the next instance.
const KEEP_RESIDENT_MEMORY: usize = 128 * 1024;
const KEEP_RESIDENT_TABLE: usize = 64 * 1024;

pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds an engine with room for the node's processes plus its HTTP
    /// request handlers alive at once.
    pub fn new(config: &NodeConfig) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(config))
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        crate::capabilities::add_to_linker(&mut linker)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<InstanceState> {
        &self.linker
    }

    /// A store for one instance, with its memory cap and time slicing set.
    pub fn new_store(&self, state: InstanceState) -> Store<InstanceState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state.limits());
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }
}

fn engine_config(node: &NodeConfig) -> Config {
    let limits = &node.limits;
    let instances = limits
        .max_processes
        .saturating_add(node.http.max_concurrent_requests)
        .saturating_add(CONSOLE_INSTANCES);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(
            instances
                .saturating_mul(MEMORIES_PER_COMPONENT)
                .min(instances + 1024),
        )
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(limits.max_memory_bytes)
        // Reset a freed slot by rewriting the pages it dirtied (found with
        // the PAGEMAP_SCAN ioctl, Linux 6.7+) instead of `madvise`: every
        // `madvise` in a multi-threaded process is a TLB shootdown on every
        // core, and those dominated the profile. This doubled HTTP
        // throughput (BENCHMARKS.md). Each used slot keeps at most this much
        // resident after its instance is gone.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE);

    let mut config = Config::new();
    if node.perfmap {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own,
/// so ticks keep coming even when every runtime worker is busy with guests.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
