//! The wasmtime engine: how it is configured, and the clock that keeps
//! guests from holding a thread.
//!
//! Instances come from the pooling allocator, sized once at start (see
//! `pool`), so a spawn is a reuse of a pool instance, not a round of `mmap`
//! calls. Epoch interruption makes every running guest yield to tokio on
//! each tick: a guest stuck in a loop costs one time slice per tick, never a
//! whole worker thread, and the deadline set around every call can fire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, InstanceAllocationStrategy, ProfilingStrategy, Store};

use super::pool::{MachineLimits, PoolPlan, pooling_config};
use super::store::StoreData;
use crate::config::NodeConfig;

/// How often the epoch advances: the time slice a guest runs before it
/// yields to the scheduler.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The node's wasm engine: one per node, shared by every component.
pub struct Engine {
    engine: wasmtime::Engine,
    plan: PoolPlan,
    linker: Linker<StoreData>,
    _ticker: EpochTicker,
}

impl Engine {
    /// Builds an engine whose pool has room for the node's processes, HTTP
    /// request handlers and console instances alive at once, or says why
    /// the machine has no room for it.
    pub fn new(config: &NodeConfig) -> anyhow::Result<Self> {
        let plan = PoolPlan::new(config, &MachineLimits::read()).map_err(anyhow::Error::msg)?;
        let engine = wasmtime::Engine::new(&engine_config(config, &plan))
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        crate::capabilities::add_to_linker(&mut linker)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            plan,
            linker,
            _ticker: ticker,
        })
    }

    /// Instances processes may hold at once.
    pub fn process_instances(&self) -> u32 {
        self.plan.process_instances
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<StoreData> {
        &self.linker
    }

    /// A store for one instance, with its memory cap and time slicing set.
    pub fn new_store(&self, data: StoreData) -> Store<StoreData> {
        let mut store = Store::new(&self.engine, data);
        store.limiter(|data| data.limits());
        // The deadline moves only when reached, so a store idle across ticks
        // yields at the first check of its next call. Resetting it before
        // each call was tried: calls to 1,000 lists in turn got 2-3x faster
        // in criterion, but POST under HTTP load 10% slower (BENCHMARKS.md,
        // "A fresh time slice per call, tried and not kept").
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }
}

fn engine_config(node: &NodeConfig, plan: &PoolPlan) -> Config {
    let layout = &node.instance_layout;
    let mut config = Config::new();
    if node.perfmap {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_reservation(layout.memory_reservation)
        .memory_guard_size(layout.memory_guard)
        .async_stack_size(layout.stack_size)
        .max_wasm_stack(layout.stack_size / 4)
        .async_stack_zeroing(layout.stack_zeroing)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            node, plan,
        )));
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own,
/// so ticks keep coming even when every runtime worker is busy with guests.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine) -> Self {
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
