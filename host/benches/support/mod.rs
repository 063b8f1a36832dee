//! What the benchmarks share.

use std::path::PathBuf;

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
