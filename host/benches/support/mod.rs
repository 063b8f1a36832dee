//! What the benchmarks share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use host::config::{NodeConfig, ProcessLimits, SlotLayout};
use host::node::{ComponentSource, NodeCore};

/// The runtime the benchmarks run nodes on: two workers, as the project's
/// machines have two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The name the benchmarks load the minimal guest under.
pub const COMPONENT: &str = "minimal";

/// A node named `name` running the minimal guest, its data in `data_dir`.
pub fn minimal_node(name: &str, data_dir: &Path, limits: ProcessLimits) -> Arc<NodeCore> {
    node_running(name, data_dir, limits, COMPONENT, "minimal")
}

/// A node named `name` running the guest built as `GUEST.wasm` under the
/// component name `component`, its data in `data_dir`.
pub fn node_running(
    name: &str,
    data_dir: &Path,
    limits: ProcessLimits,
    component: &str,
    guest: &str,
) -> Arc<NodeCore> {
    let config = NodeConfig {
        limits,
        slot_layout: slot_layout(),
        ..NodeConfig::new(name, data_dir.to_path_buf())
    };
    let source = ComponentSource {
        name: component.into(),
        path: guest_wasm(guest),
    };
    NodeCore::start(config, &[source]).expect("node starts")
}

/// The pool's slot layout: the node's default, with any field replaced by
/// an environment variable, so each option can be measured alone (see
/// BENCHMARKS.md, "What each pool option costs"): `POOL_MEMORY_RESERVATION`,
/// `POOL_MEMORY_GUARD`, `POOL_STACK_SIZE`, `POOL_KEEP_RESIDENT` (bytes) and
/// `POOL_STACK_ZEROING` (`true` or `false`).
pub fn slot_layout() -> SlotLayout {
    fn read<T: std::str::FromStr>(name: &str, default: T) -> T {
        match std::env::var(name) {
            Ok(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("{name}=`{text}` is not a valid value")),
            Err(_) => default,
        }
    }
    let default = SlotLayout::default();
    let layout = SlotLayout {
        memory_reservation: read("POOL_MEMORY_RESERVATION", default.memory_reservation),
        memory_guard: read("POOL_MEMORY_GUARD", default.memory_guard),
        stack_size: read("POOL_STACK_SIZE", default.stack_size),
        keep_resident: read("POOL_KEEP_RESIDENT", default.keep_resident),
        stack_zeroing: read("POOL_STACK_ZEROING", default.stack_zeroing),
    };
    if layout != default {
        eprintln!("pool slot layout: {layout:?}");
    }
    layout
}

/// A guest built by `scripts/build.sh`: `minimal`, `guest_todo`...
pub fn guest_wasm(guest: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(format!("wasm32-wasip2/release/{guest}.wasm"));
    assert!(
        path.exists(),
        "{} missing: run scripts/build.sh first",
        path.display()
    );
    path
}
