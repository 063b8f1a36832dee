//! The compile cache: a component's machine code, kept on disk under a key
//! of its bytes, the host version and the engine's compatibility hash, so a
//! start reuses it and a changed guest or a new host never runs stale code.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::version::{VersionId, hex};

/// Where a component's machine code came from when it was loaded: the log
/// says so, because a start that compiles is tens of milliseconds per
/// component slower than one that reuses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOrigin {
    Cache,
    Compiled(Duration),
}

impl fmt::Display for CodeOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeOrigin::Cache => write!(f, "from the compile cache"),
            CodeOrigin::Compiled(took) => write!(f, "compiled in {} ms", took.as_millis()),
        }
    }
}

/// Compiles `bytes`, the component in `path` (whose version `version`
/// is), or loads the machine code a previous start left in `cache_dir`. The
/// cache key covers the bytes (through the version's hash of them) and the
/// engine's configuration and version, so a changed guest or a new host
/// never runs stale code.
pub(super) fn compile_cached(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    version: &VersionId,
    origin: &str,
    cache_dir: &Path,
) -> anyhow::Result<(Component, CodeOrigin)> {
    let cached = cache_dir.join(format!("{}.cwasm", cache_key(engine, version)));
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine
        // with the same compatibility hash (it is in the file's name), in a
        // directory owned by this node.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => return Ok((component, CodeOrigin::Cache)),
            Err(e) => tracing::warn!(
                cache = %cached.display(),
                "compiled component cache unusable, compiling again: {e}"
            ),
        }
    }
    let started = Instant::now();
    let component = Component::new(engine, bytes)
        .map_err(|e| anyhow::anyhow!("{origin} is not a valid component: {e:#}"))?;
    let code = CodeOrigin::Compiled(started.elapsed());
    if let Err(e) = write_cache(&component, cache_dir, &cached) {
        tracing::warn!(cache = %cached.display(), "cannot cache the compiled component: {e:#}");
    }
    Ok((component, code))
}

fn cache_key(engine: &wasmtime::Engine, version: &VersionId) -> String {
    let mut engine_hasher = DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hasher);
    let mut digest = Sha256::new();
    digest.update(engine_hasher.finish().to_le_bytes());
    digest.update(env!("CARGO_PKG_VERSION").as_bytes());
    digest.update(version.hash);
    hex(&digest.finalize())
}

/// Writes to a temporary file and renames it, so a crash mid-write never
/// leaves a truncated cache entry behind.
fn write_cache(component: &Component, cache_dir: &Path, target: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(cache_dir)?;
    let serialized = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("serialize: {e}"))?;
    let temporary = target.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, serialized)?;
    std::fs::rename(&temporary, target)?;
    Ok(())
}
