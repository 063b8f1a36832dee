//! Components: loading a `.wasm` file, caching its compiled form on disk, and
//! pre-linking it once so that every process and request handler is a cheap
//! instantiation.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre, Type};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::{ProcessComponent, ProcessComponentIndices, ProcessComponentPre};
use crate::registry::ProcessKey;
use crate::runtime::Runtime;
use crate::state::InstanceState;

/// The optional export that renders a process's state and messages.
const INTROSPECT: &str = "otp:platform/introspect@0.2.0";

/// A component loaded into the node, ready to instantiate.
pub struct LoadedComponent {
    /// Shared by the keys of its processes: one allocation, not one each.
    name: Arc<str>,
    /// Set when the component exports the process behaviour.
    process: Option<ProcessComponentPre<InstanceState>>,
    /// Set when the component exports `wasi:http/incoming-handler`.
    http: Option<ProxyPre<InstanceState>>,
    /// The component, pre-linked: for instances that are neither a process
    /// nor an HTTP handler (the console's calls, rendering a trace).
    instance_pre: InstancePre<InstanceState>,
    process_indices: Option<ProcessComponentIndices>,
    introspect: Option<IntrospectExports>,
    functions: Vec<ExportedFunction>,
    code: CodeOrigin,
}

/// Where `otp:platform/introspect`'s functions are, when exported.
#[derive(Clone)]
pub struct IntrospectExports {
    pub render_state: ComponentExportIndex,
    pub render_message: ComponentExportIndex,
}

/// A function of one of the component's own exported interfaces (not the
/// platform's, not WASI's): what the console can call with WAVE values.
#[derive(Clone)]
pub struct ExportedFunction {
    /// The interface's full name, `todo:app/todo@0.1.0`.
    pub interface: String,
    /// Its short name, `todo`: the console writes `todo.add-entry(...)`.
    pub interface_short: String,
    pub name: String,
    pub params: Vec<(String, Type)>,
    pub results: Vec<Type>,
    pub index: ComponentExportIndex,
}

impl ExportedFunction {
    /// `todo.add-entry(list: string, entry: new-entry) -> result<entry, string>`.
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {}", describe_type(ty)))
            .collect();
        let results: Vec<String> = self.results.iter().map(describe_type).collect();
        let arrow = match results.as_slice() {
            [] => String::new(),
            [one] => format!(" -> {one}"),
            many => format!(" -> ({})", many.join(", ")),
        };
        format!(
            "{}.{}({}){arrow}",
            self.interface_short,
            self.name,
            params.join(", ")
        )
    }
}

/// A WIT type as the console shows it in a signature.
fn describe_type(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", describe_type(&list.ty())),
        Type::Option(option) => format!("option<{}>", describe_type(&option.ty())),
        Type::Result(result) => {
            let ok = result.ok().map_or("_".to_string(), |t| describe_type(&t));
            let err = result.err().map_or("_".to_string(), |t| describe_type(&t));
            format!("result<{ok}, {err}>")
        }
        Type::Record(record) => {
            let fields: Vec<String> = record
                .fields()
                .map(|field| format!("{}: {}", field.name, describe_type(&field.ty)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Type::Tuple(tuple) => {
            let types: Vec<String> = tuple.types().map(|t| describe_type(&t)).collect();
            format!("tuple<{}>", types.join(", "))
        }
        Type::Enum(e) => {
            let names: Vec<&str> = e.names().collect();
            format!("enum {{{}}}", names.join(", "))
        }
        Type::Flags(f) => {
            let names: Vec<&str> = f.names().collect();
            format!("flags {{{}}}", names.join(", "))
        }
        Type::Variant(_) => "variant".into(),
        _ => "resource".into(),
    }
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
        let process_indices = ProcessComponentIndices::new(&instance_pre).ok();
        let http = ProxyPre::new(instance_pre.clone()).ok();
        let introspect = find_introspect(&component);
        let functions = find_functions(runtime, &component);
        if process.is_none() && http.is_none() {
            bail!(
                "{} exports neither the process behaviour (otp:platform/behaviour) \
                 nor wasi:http/incoming-handler: there is nothing to run",
                path.display()
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
            code,
        })
    }

    /// Instantiates the component as a process: the raw instance (for the
    /// optional exports) and its behaviour.
    pub async fn instantiate_process(
        &self,
        store: &mut Store<InstanceState>,
    ) -> wasmtime::Result<(Instance, ProcessComponent)> {
        let Some(indices) = &self.process_indices else {
            wasmtime::bail!("the component does not export the process behaviour");
        };
        let instance = self.instance_pre.instantiate_async(&mut *store).await?;
        let behaviour = indices.load(&mut *store, &instance)?;
        Ok((instance, behaviour))
    }

    /// Instantiates the component for a one-off use (a console call).
    pub async fn instantiate(
        &self,
        store: &mut Store<InstanceState>,
    ) -> wasmtime::Result<Instance> {
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

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key of this component's process `name`.
    pub fn process_key(&self, name: &str) -> ProcessKey {
        ProcessKey {
            component: self.name.clone(),
            name: Arc::from(name),
        }
    }

    pub fn process_pre(&self) -> Option<&ProcessComponentPre<InstanceState>> {
        self.process.as_ref()
    }

    pub fn http_pre(&self) -> Option<&ProxyPre<InstanceState>> {
        self.http.as_ref()
    }
}

fn find_introspect(component: &Component) -> Option<IntrospectExports> {
    let interface = component.get_export_index(None, INTROSPECT)?;
    Some(IntrospectExports {
        render_state: component.get_export_index(Some(&interface), "render-state")?,
        render_message: component.get_export_index(Some(&interface), "render-message")?,
    })
}

/// The functions of every exported interface that is the component's own.
fn find_functions(runtime: &Runtime, component: &Component) -> Vec<ExportedFunction> {
    let engine = runtime.engine();
    let ty = component.component_type();
    let mut functions = Vec::new();
    for (interface, item) in ty.exports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if interface.starts_with("otp:platform/") || interface.starts_with("wasi:") {
            continue;
        }
        let Some(interface_index) = component.get_export_index(None, interface) else {
            continue;
        };
        let short = interface
            .rsplit('/')
            .next()
            .unwrap_or(interface)
            .split('@')
            .next()
            .unwrap_or(interface)
            .to_string();
        for (name, export) in instance.exports(engine) {
            let ComponentItem::ComponentFunc(func) = export.ty else {
                continue;
            };
            let Some(index) = component.get_export_index(Some(&interface_index), name) else {
                continue;
            };
            functions.push(exported_function(interface, &short, name, &func, index));
        }
    }
    functions
}

fn exported_function(
    interface: &str,
    short: &str,
    name: &str,
    func: &ComponentFunc,
    index: ComponentExportIndex,
) -> ExportedFunction {
    ExportedFunction {
        interface: interface.to_string(),
        interface_short: short.to_string(),
        name: name.to_string(),
        params: func
            .params()
            .map(|(name, ty)| (name.to_string(), ty))
            .collect(),
        results: func.results().collect(),
        index,
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
