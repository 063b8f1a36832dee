//! The wasmtime side: the engine and its instance pool, components and
//! their compile cache, the data of every store, and guest calls under a
//! deadline.
//!
//! - `engine`: [`Engine`], one per node (pooling allocator, epoch ticker,
//!   the linker with every capability);
//! - `pool`: sizing the pool from the node's limits and the machine;
//! - `component`: [`LoadedComponent`] (compiled, pre-linked code) and
//!   [`Component`] (code plus what its instances are granted);
//! - `compile_cache`, `exports`: machine code kept on disk, and what a
//!   component exports beyond the platform's behaviour;
//! - `store`: [`StoreData`], built from plain values;
//! - `process_code`: what processes run ([`crate::process::Code`]);
//! - `guard`: [`guarded`] guest calls and [`describe_trap`].
//!
//! It may use `crate::config`, `crate::process` (the seam it implements),
//! `crate::capabilities` and `crate::storage`; it knows nothing of the
//! node, HTTP or the cluster.

mod compile_cache;
mod component;
mod engine;
mod exports;
mod guard;
mod pool;
mod process_code;
mod store;
mod version;

pub use compile_cache::CodeOrigin;
pub use component::{Component, LoadedComponent, ProcessStore, name_from_path, validate_name};
pub use engine::Engine;
pub use exports::{ExportedFunction, IntrospectExports, UpgradeExports};
pub use guard::{describe_trap, guarded};
pub use pool::{DEFAULT_PROCESS_INSTANCES, MachineLimits, PoolPlan};
pub use process_code::ProcessInstance;
pub use store::StoreData;
pub use version::VersionId;

/// What the console may call of the component in `bytes`, read without a
/// node: for the fuzz target `wave_call`.
#[cfg(any(test, feature = "fuzzing"))]
pub fn exported_functions(bytes: &[u8]) -> anyhow::Result<Vec<ExportedFunction>> {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, bytes)
        .map_err(|e| anyhow::anyhow!("not a component: {e}"))?;
    Ok(exports::find_functions(&engine, &component))
}
