//! Components: loading a `.wasm` file, caching its compiled form on disk, and
//! pre-linking it once so that every process and request handler is a cheap
//! instantiation.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::ProcessComponentPre;
use crate::runtime::Runtime;
use crate::state::InstanceState;

/// A component loaded into the node, ready to instantiate.
pub struct LoadedComponent {
    name: String,
    /// Set when the component exports the process behaviour.
    process: Option<ProcessComponentPre<InstanceState>>,
    /// Set when the component exports `wasi:http/incoming-handler`.
    http: Option<ProxyPre<InstanceState>>,
    code: CodeOrigin,
}

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

impl LoadedComponent {
    /// Loads `path` under `name`, compiling it or taking it from the cache in
    /// `cache_dir`.
    pub fn load(
        runtime: &Runtime,
        name: &str,
        path: &Path,
        cache_dir: &Path,
    ) -> anyhow::Result<Self> {
        validate_name(name)?;
        let (component, code) = compile_cached(runtime, path, cache_dir)?;
        let instance_pre = runtime.linker().instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!(
                "{} asks for something this host does not provide: {e}",
                path.display()
            )
        })?;
        let process = ProcessComponentPre::new(instance_pre.clone()).ok();
        let http = ProxyPre::new(instance_pre).ok();
        if process.is_none() && http.is_none() {
            bail!(
                "{} exports neither the process behaviour (otp:platform/behaviour) \
                 nor wasi:http/incoming-handler: there is nothing to run",
                path.display()
            );
        }
        Ok(Self {
            name: name.to_string(),
            process,
            http,
            code,
        })
    }

    pub fn code_origin(&self) -> CodeOrigin {
        self.code
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn process_pre(&self) -> Option<&ProcessComponentPre<InstanceState>> {
        self.process.as_ref()
    }

    pub fn http_pre(&self) -> Option<&ProxyPre<InstanceState>> {
        self.http.as_ref()
    }
}

/// Component names appear in storage keys, logs and HTTP paths: keep them to
/// letters, digits, `_` and `-`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        bail!("`{name}` is not a valid component name: use 1 to 64 letters, digits, `_` or `-`");
    }
    Ok(())
}

/// The name a component gets from its file: `guest_todo.wasm` is `guest_todo`.
pub fn name_from_path(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Compiles the component in `path`, or loads the machine code a previous
/// start left in `cache_dir`. The cache key covers the file's bytes and the
/// engine's configuration and version, so a changed guest or a new host never
/// runs stale code.
fn compile_cached(
    runtime: &Runtime,
    path: &Path,
    cache_dir: &Path,
) -> anyhow::Result<(Component, CodeOrigin)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read component {}", path.display()))?;
    if !bytes.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly file", path.display());
    }
    let cached = cache_dir.join(format!("{}.cwasm", cache_key(runtime, &bytes)));
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine
        // with the same compatibility hash (it is in the file's name), in a
        // directory owned by this node.
        match unsafe { Component::deserialize_file(runtime.engine(), &cached) } {
            Ok(component) => return Ok((component, CodeOrigin::Cache)),
            Err(e) => tracing::warn!(
                cache = %cached.display(),
                "compiled component cache unusable, compiling again: {e}"
            ),
        }
    }
    let started = Instant::now();
    let component = Component::new(runtime.engine(), &bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid component: {e:#}", path.display()))?;
    let code = CodeOrigin::Compiled(started.elapsed());
    if let Err(e) = write_cache(&component, cache_dir, &cached) {
        tracing::warn!(cache = %cached.display(), "cannot cache the compiled component: {e:#}");
    }
    Ok((component, code))
}

fn cache_key(runtime: &Runtime, bytes: &[u8]) -> String {
    let mut engine_hasher = DefaultHasher::new();
    runtime
        .engine()
        .precompile_compatibility_hash()
        .hash(&mut engine_hasher);
    let mut digest = Sha256::new();
    digest.update(engine_hasher.finish().to_le_bytes());
    digest.update(env!("CARGO_PKG_VERSION").as_bytes());
    digest.update(bytes);
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
