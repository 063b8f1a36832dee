//! What the benchmarks share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use host::config::{InstanceLayout, NodeConfig, ProcessLimits};
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
#[allow(dead_code, reason = "each bench uses its share of the support")]
pub fn minimal_node(name: &str, data_dir: &Path, limits: ProcessLimits) -> Arc<NodeCore> {
    node_running(name, data_dir, limits, COMPONENT, "minimal")
}

/// A node named `name` running the guest built as `GUEST.wasm` under the
/// component name `component`, its data in `data_dir`.
#[allow(dead_code, reason = "each bench uses its share of the support")]
pub fn node_running(
    name: &str,
    data_dir: &Path,
    limits: ProcessLimits,
    component: &str,
    guest: &str,
) -> Arc<NodeCore> {
    let source = ComponentSource {
        name: component.into(),
        path: guest_wasm(guest),
    };
    NodeCore::start(config(name, data_dir, limits), &[source]).expect("node starts")
}

/// The configuration of a benchmark's node named `name`: `limits`, the
/// pool's instance layout of [`instance_layout`], defaults otherwise.
pub fn config(name: &str, data_dir: &Path, limits: ProcessLimits) -> NodeConfig {
    NodeConfig {
        limits,
        instance_layout: instance_layout(),
        ..NodeConfig::new(name, data_dir.to_path_buf())
    }
}

/// The value of the metric `name` on `node`'s metrics page.
#[allow(dead_code, reason = "each bench uses its share of the support")]
pub fn gauge(node: &NodeCore, name: &str) -> u64 {
    node.series()
        .into_iter()
        .find(|series| series.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
        .value
}

/// The pool's instance layout: the node's default, with any field replaced
/// by an environment variable, so each option can be measured alone (see
/// BENCHMARKS.md, "What each pool option costs"): `POOL_MEMORY_RESERVATION`,
/// `POOL_MEMORY_GUARD`, `POOL_STACK_SIZE`, `POOL_KEEP_RESIDENT` (bytes) and
/// `POOL_STACK_ZEROING` (`true` or `false`).
pub fn instance_layout() -> InstanceLayout {
    fn read<T: std::str::FromStr>(name: &str, default: T) -> T {
        match std::env::var(name) {
            Ok(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("{name}=`{text}` is not a valid value")),
            Err(_) => default,
        }
    }
    let default = InstanceLayout::default();
    let layout = InstanceLayout {
        memory_reservation: read("POOL_MEMORY_RESERVATION", default.memory_reservation),
        memory_guard: read("POOL_MEMORY_GUARD", default.memory_guard),
        stack_size: read("POOL_STACK_SIZE", default.stack_size),
        keep_resident: read("POOL_KEEP_RESIDENT", default.keep_resident),
        stack_zeroing: read("POOL_STACK_ZEROING", default.stack_zeroing),
    };
    if layout != default {
        eprintln!("pool instance layout: {layout:?}");
    }
    layout
}

/// A guest built by `scripts/build-guests.sh`: `minimal`, `guest_todo`...
pub fn guest_wasm(guest: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(format!("wasm32-wasip2/release/{guest}.wasm"));
    assert!(
        path.exists(),
        "{} missing: run scripts/build-guests.sh first",
        path.display()
    );
    path
}

/// The Todo guest's `Request::Add`, encoded as postcard does (variant
/// index, the date as a YYYYMMDD varint, the title's length and bytes).
#[allow(dead_code, reason = "each bench uses its share of the support")]
pub fn add_entry(date: u32, title: &str) -> Vec<u8> {
    let mut bytes = vec![0];
    varint(&mut bytes, date);
    varint(&mut bytes, title.len() as u32);
    bytes.extend_from_slice(title.as_bytes());
    bytes
}

/// The Todo guest's `Request::Entries { date: Some(date) }`.
#[allow(dead_code, reason = "each bench uses its share of the support")]
pub fn entries_of(date: u32) -> Vec<u8> {
    let mut bytes = vec![1, 1];
    varint(&mut bytes, date);
    bytes
}

fn varint(bytes: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        bytes.push((value as u8) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}
