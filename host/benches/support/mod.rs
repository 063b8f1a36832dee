//! What the benchmarks share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use host::config::{NodeConfig, ProcessLimits};
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
    let config = NodeConfig {
        limits,
        ..NodeConfig::new(name, data_dir.to_path_buf())
    };
    let source = ComponentSource {
        name: COMPONENT.into(),
        path: minimal_wasm(),
    };
    NodeCore::start(config, &[source]).expect("node starts")
}

/// The minimal guest, built by `scripts/build.sh`.
pub fn minimal_wasm() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("wasm32-wasip2/release/minimal.wasm");
    assert!(
        path.exists(),
        "{} missing: run scripts/build.sh first",
        path.display()
    );
    path
}
