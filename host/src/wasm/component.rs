//! Components: a `.wasm` file loaded into the node (compiled once, then
//! from the compile cache, and pre-linked so that every instance is a cheap
//! instantiation), and what the node runs of it: its code with what its
//! instances are granted.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::{Context as _, bail};
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::compile_cache::{CodeOrigin, compile_cached};
use super::engine::Engine;
use super::exports::{
    ExportedFunction, IntrospectExports, UpgradeExports, find_functions, find_introspect,
    find_upgrade,
};
use super::guard::guarded;
use super::store::StoreData;
use super::version::VersionId;
use crate::budget::MemoryBudget;
use crate::capabilities::bindings::{
    ProcessComponent, ProcessComponentIndices, ProcessComponentPre,
};
use crate::capabilities::{Capabilities, Grant, HostCallHook};
use crate::process::{Fence, VersionStats};

/// A component's code, loaded into the node, ready to instantiate.
pub struct LoadedComponent {
    /// Shared by the keys of its processes: one allocation, not one each.
    name: Arc<str>,
    /// Set when the component exports the process behaviour.
    process: Option<ProcessComponentPre<StoreData>>,
    /// Set when the component exports `wasi:http/incoming-handler`.
    http: Option<ProxyPre<StoreData>>,
    /// The component, pre-linked: for instances that are neither a process
    /// nor an HTTP handler (the console's calls, rendering a trace).
    instance_pre: InstancePre<StoreData>,
    process_indices: Option<ProcessComponentIndices>,
    introspect: Option<IntrospectExports>,
    functions: Vec<ExportedFunction>,
    upgrade: Option<UpgradeExports>,
    version: VersionId,
    /// What its processes did (for comparing versions during a swap).
    stats: VersionStats,
    code: CodeOrigin,
}

impl LoadedComponent {
    /// Loads `path` under `name`, compiling it or taking it from the cache in
    /// `cache_dir`.
    pub fn load(
        engine: &Engine,
        name: &str,
        path: &Path,
        cache_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::load_labelled(engine, name, path, cache_dir, None)
    }

    /// Like [`LoadedComponent::load`], its version labelled `label` when
    /// given (else by its `otp-version` section, else by its hash).
    pub fn load_labelled(
        engine: &Engine,
        name: &str,
        path: &Path,
        cache_dir: &Path,
        label: Option<&str>,
    ) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read component {}", path.display()))?;
        Self::from_bytes(
            engine,
            name,
            &bytes,
            &path.display().to_string(),
            cache_dir,
            label,
        )
    }

    /// Loads a component from its `bytes` (`origin` says where they came
    /// from, for errors: a file, or the cluster's log).
    pub fn from_bytes(
        engine: &Engine,
        name: &str,
        bytes: &[u8],
        origin: &str,
        cache_dir: &Path,
        label: Option<&str>,
    ) -> anyhow::Result<Self> {
        validate_name(name)?;
        if !bytes.starts_with(b"\0asm") {
            bail!("{origin} is not a WebAssembly file");
        }
        let version = VersionId::of(bytes, label);
        let (component, code) =
            compile_cached(engine.wasmtime(), bytes, &version, origin, cache_dir)?;
        let instance_pre = engine.linker().instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!("{origin} asks for something this host does not provide: {e}")
        })?;
        let process = ProcessComponentPre::new(instance_pre.clone()).ok();
        let process_indices = ProcessComponentIndices::new(&instance_pre).ok();
        let http = ProxyPre::new(instance_pre.clone()).ok();
        let introspect = find_introspect(&component);
        let upgrade = find_upgrade(&component);
        let functions = find_functions(engine.wasmtime(), &component);
        if process.is_none() && http.is_none() {
            bail!(
                "{origin} exports neither the process behaviour (otp:platform/behaviour) \
                 nor wasi:http/incoming-handler: there is nothing to run"
            );
        }
        Ok(Self {
            name: Arc::from(name),
            process,
            http,
            instance_pre,
            process_indices,
            introspect,
            functions,
            upgrade,
            version,
            stats: VersionStats::default(),
            code,
        })
    }

    /// Which version of the component this is.
    pub fn version(&self) -> &VersionId {
        &self.version
    }

    pub fn stats(&self) -> &VersionStats {
        &self.stats
    }

    /// `otp:platform/upgrade`'s functions, when it exports them.
    pub fn upgrade(&self) -> Option<&UpgradeExports> {
        self.upgrade.as_ref()
    }

    /// Instantiates the component as a process: the raw instance (for the
    /// optional exports) and its behaviour.
    pub async fn instantiate_process(
        &self,
        store: &mut Store<StoreData>,
    ) -> wasmtime::Result<(Instance, ProcessComponent)> {
        let Some(indices) = &self.process_indices else {
            wasmtime::bail!("the component does not export the process behaviour");
        };
        let instance = self.instance_pre.instantiate_async(&mut *store).await?;
        let behaviour = indices.load(&mut *store, &instance)?;
        Ok((instance, behaviour))
    }

    /// Instantiates the component for a one-off use (a console call).
    pub async fn instantiate(&self, store: &mut Store<StoreData>) -> wasmtime::Result<Instance> {
        self.instance_pre.instantiate_async(store).await
    }

    pub fn introspect(&self) -> Option<&IntrospectExports> {
        self.introspect.as_ref()
    }

    /// The functions of its own exported interfaces.
    pub fn functions(&self) -> &[ExportedFunction] {
        &self.functions
    }

    pub fn code_origin(&self) -> CodeOrigin {
        self.code
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn process_pre(&self) -> Option<&ProcessComponentPre<StoreData>> {
        self.process.as_ref()
    }

    pub fn http_pre(&self) -> Option<&ProxyPre<StoreData>> {
        self.http.as_ref()
    }
}

/// A component as the node runs it: its code, and what its instances are
/// granted. Processes run it (`crate::process::Code`, in `process_code`),
/// HTTP handlers and console calls instantiate it.
pub struct Component {
    code: Arc<LoadedComponent>,
    /// Where this version stands among the component's versions (higher:
    /// newer); the first loaded is 0, a swap gives the next its own.
    generation: i64,
    engine: Arc<Engine>,
    grant: Grant,
    /// Largest linear memory an instance may grow to.
    memory_cap: usize,
}

impl Component {
    pub fn new(
        code: LoadedComponent,
        engine: Arc<Engine>,
        grant: Grant,
        memory_cap: usize,
    ) -> Self {
        Self {
            code: Arc::new(code),
            generation: 0,
            engine,
            grant,
            memory_cap,
        }
    }

    /// Another version of this component, `code` at `generation`, granted
    /// what this one is.
    pub fn with_code(&self, code: LoadedComponent, generation: i64) -> Self {
        Self {
            code: Arc::new(code),
            generation,
            engine: self.engine.clone(),
            grant: self.grant.clone(),
            memory_cap: self.memory_cap,
        }
    }

    /// The same code granted `grant` instead (a swap's dry run runs it
    /// with nothing to write to and nobody to call).
    pub fn granted(&self, grant: Grant) -> Self {
        Self {
            code: self.code.clone(),
            generation: self.generation,
            engine: self.engine.clone(),
            grant,
            memory_cap: self.memory_cap,
        }
    }

    /// What its instances are granted.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The engine it runs on (a new version is loaded with it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn name(&self) -> &Arc<str> {
        self.code.name()
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }

    pub fn code(&self) -> &LoadedComponent {
        &self.code
    }

    /// Where the trace of this component's host calls attaches.
    pub fn host_call_hook(&self) -> &HostCallHook {
        &self.grant.host_calls
    }

    /// A store for one instance: of process `process` (its name, fence and
    /// memory gauge), or of no process (an HTTP handler, a console call).
    pub fn new_store(&self, process: Option<ProcessStore<'_>>) -> Store<StoreData> {
        let (name, fence, memory) = match process {
            Some(process) => (Some(process.name), process.fence, Some(process.memory)),
            None => (None, None, None),
        };
        let capabilities = Capabilities::new(&self.grant, name, fence);
        self.engine
            .new_store(StoreData::new(capabilities, self.memory_cap, memory, None))
    }

    /// A store for an HTTP request handler, whose linear memory is taken
    /// from the handlers' `budget`.
    pub fn new_handler_store(&self, budget: Arc<MemoryBudget>) -> Store<StoreData> {
        let capabilities = Capabilities::new(&self.grant, None, None);
        self.engine.new_store(StoreData::new(
            capabilities,
            self.memory_cap,
            None,
            Some(budget),
        ))
    }

    /// An instance of no process, for a one-off use (a console call, the
    /// renderer of a trace), in a store of its own.
    pub async fn one_off_instance(
        &self,
        deadline: Duration,
    ) -> Result<(Store<StoreData>, Instance), String> {
        let mut store = self.new_store(None);
        let instance = guarded(deadline, self.code.instantiate(&mut store)).await?;
        Ok((store, instance))
    }
}

/// What a process's store is told of it.
pub struct ProcessStore<'a> {
    pub name: &'a str,
    pub fence: Option<Fence>,
    pub memory: Arc<AtomicUsize>,
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
