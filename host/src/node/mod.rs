//! The node: everything one running `host` holds (the engine, its
//! components, storage and processes), and the three narrow surfaces the
//! rest of the host sees it through:
//!
//! - calls for guests ([`crate::capabilities::GuestCalls`], `guest_calls`):
//!   calls and casts by name, within the operator's grants;
//! - what the cluster needs ([`ClusterAccess`]): local calls and casts under
//!   a fence, stopping processes where a predicate holds, installing the
//!   router and the replicator, and storage's [`ClusterStore`];
//! - what an operator sees and may do ([`OperatorAccess`]): a read-only
//!   view of processes, restarts and components, and the few actions the
//!   console and the observer offer (kill, trace, render a state).
//!
//! It may use everything below it (`process`, `storage`, `capabilities`,
//! `wasm`, `config`); it knows nothing of HTTP, links or Raft.

mod cluster_access;
mod guest_calls;
mod operator;
mod swap;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub use cluster_access::ClusterAccess;
pub use operator::OperatorAccess;
pub use swap::{
    CheckedVersion, LocalSwap, LocalVersions, SwapOptions, VersionSource, VersionsView,
};

use crate::capabilities::{Grant, GuestCalls, HostCallHook};
use crate::config::NodeConfig;
use crate::metrics::Series;
use crate::process::{CallError, ProcessSettings, Processes, Targets};
use crate::storage::Storage;
use crate::wasm::{Component, Engine, LoadedComponent, validate_name};
use guest_calls::NodeCalls;

/// A component to load: its name and its `.wasm` file.
#[derive(Debug, Clone)]
pub struct ComponentSource {
    pub name: String,
    pub path: PathBuf,
}

pub struct NodeCore {
    name: Arc<str>,
    config: NodeConfig,
    /// In load order; the first one serves HTTP at `/`.
    components: Vec<Arc<Component>>,
    storage: Storage,
    processes: Arc<Processes<Component>>,
    swaps: Arc<swap::Swaps>,
}

impl NodeCore {
    /// Creates the engine, opens storage, compiles (or loads from cache)
    /// every component and starts the process runtime. Must be called
    /// within a tokio runtime.
    pub fn start(config: NodeConfig, sources: &[ComponentSource]) -> anyhow::Result<Arc<Self>> {
        check_sources(&config, sources)?;
        let engine = Arc::new(Engine::new(&config)?);
        let cache_dir = config
            .compile_cache
            .clone()
            .unwrap_or_else(|| config.data_dir.join("compiled"));
        private_dir(&config.data_dir)?;
        // Every component loads before storage opens: a bad one fails the
        // start before anything of the data dir is touched.
        let loaded = sources
            .iter()
            .map(|source| LoadedComponent::load(&engine, &source.name, &source.path, &cache_dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let storage = Storage::open(&config.data_dir.join("db"), config.durability)
            .context("cannot open storage")?;
        let name: Arc<str> = Arc::from(config.node_name.as_str());
        let calls = Arc::new(NodeCalls::new(config.call_grants.clone()));
        let guest_calls: Arc<dyn GuestCalls> = calls.clone();
        let mut components = Vec::new();
        for code in loaded {
            let grant = Grant {
                node: name.clone(),
                component: code.name().clone(),
                calls: guest_calls.clone(),
                storage: storage.namespace(code.name()),
                host_calls: HostCallHook::default(),
            };
            let memory_cap = config.limits.max_memory_bytes;
            components.push(Arc::new(Component::new(
                code,
                engine.clone(),
                grant,
                memory_cap,
            )));
        }
        let targets = Arc::new(Targets::new(
            components
                .iter()
                .map(|component| (component.name().clone(), component.clone())),
        ));
        let settings = ProcessSettings {
            limits: config.limits.clone(),
            restarts: config.restarts.clone(),
            instance_permits: engine.process_instances(),
        };
        let processes = Processes::start(settings, targets, Arc::new(storage.hibernated_spill()))?;
        calls.attach(&processes);
        let swaps = swap::Swaps::new(processes.clone(), cache_dir);
        Ok(Arc::new(Self {
            name,
            config,
            components,
            storage,
            processes,
            swaps,
        }))
    }

    pub fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// In load order; the first one serves HTTP at `/`. (The versions
    /// they started with: what each runs now is its target.)
    pub fn components(&self) -> &[Arc<Component>] {
        &self.components
    }

    /// Which version of each component runs now (HTTP routes by it).
    pub fn targets(&self) -> &Arc<Targets<Component>> {
        self.processes.targets()
    }

    /// Sends `message` to process `name` of `component` (wherever the
    /// cluster places it), starting it if needed, and waits up to
    /// `timeout` for the reply: what a guest's `process.call` does.
    pub async fn call(
        &self,
        component: &str,
        name: &str,
        message: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        self.processes.call(component, name, message, timeout).await
    }

    /// What the cluster may do with this node.
    pub fn cluster_access(self: &Arc<Self>) -> ClusterAccess {
        ClusterAccess::new(self.clone())
    }

    /// What an operator (the console, the observer) sees and may do.
    pub fn operator(self: &Arc<Self>) -> OperatorAccess {
        OperatorAccess::new(self.clone())
    }

    /// Traces running on this node: of processes, and of host calls.
    pub fn traces_running(&self) -> usize {
        let host_calls = self
            .components
            .iter()
            .filter(|component| {
                component
                    .host_call_hook()
                    .load()
                    .as_ref()
                    .is_some_and(|tracer| !tracer.is_finished())
            })
            .count();
        self.processes.traces_running() + host_calls
    }

    /// Stops every process: no new ones start, each finishes what is in its
    /// mailbox. Waits up to `grace` for them.
    pub async fn stop_processes(&self, grace: Duration) {
        self.processes.stop_all(grace).await;
    }

    /// Makes everything written durable (the node is stopping).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.storage.flush()
    }

    /// The node's series for the metrics page.
    pub fn series(&self) -> Vec<Series> {
        let processes = &self.processes;
        let counted = processes.counters().values();
        let hibernated = processes.hibernated();
        let permits = processes.permits();
        let mut series = self.storage.series();
        series.extend([
            Series::gauge(
                "host_processes",
                "Processes alive now.",
                processes.len() as u64,
            ),
            Series::counter(
                "host_processes_started_total",
                "Processes started.",
                counted.started,
            ),
            Series::counter(
                "host_processes_crashed_total",
                "Processes ended by a trap, deadline, memory cap or failed init.",
                counted.crashed,
            ),
            Series::counter(
                "host_processes_interrupted_total",
                "Processes ended because a storage write's outcome was unknown (the cluster \
                 lost its leader or a link under it): not crashes, and not counted against \
                 restart intensity.",
                counted.interrupted,
            ),
            Series::counter(
                "host_processes_expired_total",
                "Processes stopped after being idle.",
                counted.expired,
            ),
            Series::counter(
                "host_processes_hibernated_total",
                "Times a process handed its state over and freed its instance (idle, or to make room).",
                counted.hibernated,
            ),
            Series::counter(
                "host_processes_woken_total",
                "Times a hibernated process was started again from its handed-over state.",
                counted.woken,
            ),
            Series::counter(
                "host_hand_overs_failed_total",
                "Hand-overs that trapped or failed: the process expired instead of hibernating.",
                counted.hand_overs_failed,
            ),
            Series::gauge(
                "host_hibernated_state_bytes",
                "Bytes of hibernated processes' states kept in memory (--hibernate-memory).",
                hibernated.in_memory() as u64,
            ),
            Series::counter(
                "host_hibernated_states_spilled_total",
                "Hibernated processes' states written to storage, past --hibernate-memory.",
                hibernated.spilled(),
            ),
            Series::gauge(
                "host_instance_slots",
                "Instances processes may hold at once (--max-instances).",
                u64::from(permits.total()),
            ),
            Series::gauge(
                "host_instance_slots_held",
                "Instances held by running processes now; the rest of the processes hibernate.",
                u64::from(permits.held()),
            ),
            Series::counter(
                "host_process_starts_refused_total",
                "Starts refused by restart intensity, or for want of an instance.",
                counted.refused,
            ),
            Series::counter(
                "host_messages_refused_mailbox_full_total",
                "Messages refused because the receiving mailbox was full.",
                counted.mailbox_full,
            ),
            Series::gauge(
                "host_traces_running",
                "Traces running: of processes' messages and of components' host calls.",
                self.traces_running() as u64,
            ),
        ]);
        series
    }

    /// Why storage takes no more writes, once it has failed one.
    pub fn storage_failure(&self) -> Option<String> {
        self.storage.failure()
    }

    /// Whether failed storage could be reopened now, or what is still
    /// wrong.
    pub fn storage_can_reopen(&self) -> Result<(), String> {
        self.storage.can_reopen()
    }

    fn component(&self, name: &str) -> Option<&Arc<Component>> {
        self.components
            .iter()
            .find(|component| &**component.name() == name)
    }
}

/// Component names are valid and distinct, and every grant names loaded
/// components: checked before anything is compiled.
fn check_sources(config: &NodeConfig, sources: &[ComponentSource]) -> anyhow::Result<()> {
    let mut seen = HashMap::new();
    for source in sources {
        validate_name(&source.name)?;
        if seen.insert(source.name.as_str(), ()).is_some() {
            anyhow::bail!(
                "two components are named `{}`: name one with NAME=PATH",
                source.name
            );
        }
    }
    for (from, to) in &config.call_grants {
        for name in [from, to] {
            if !seen.contains_key(name.as_str()) {
                anyhow::bail!("--allow-call {from}={to}: no component named `{name}` is loaded");
            }
        }
    }
    Ok(())
}

/// Creates `dir` if needed and makes it its owner's alone (0700): it holds
/// every guest's data and the cluster's log, which nobody else may read.
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "cannot make the data directory {} private (0700): run the node as its owner",
            dir.display()
        )
    })
}
