//! What an operator sees of the node and may do to it, through the console
//! and the observer: a read-only view of processes, restarts and components,
//! and the few actions they offer (kill, trace, render a state). Nothing
//! here starts a process or writes to storage.

use std::sync::Arc;

use super::NodeCore;
use super::swap::{CheckedVersion, SwapOptions, VersionsView};
use crate::capabilities::HostCallHook;
use crate::config::{ProcessLimits, RestartIntensity};
use crate::process::trace::Tracer;
use crate::process::{ProcessInfo, ProcessKey, Restarts};
use crate::wasm::Component;

#[derive(Clone)]
pub struct OperatorAccess {
    node: Arc<NodeCore>,
}

impl OperatorAccess {
    pub(super) fn new(node: Arc<NodeCore>) -> Self {
        Self { node }
    }

    pub fn name(&self) -> Arc<str> {
        self.node.name()
    }

    pub fn limits(&self) -> &ProcessLimits {
        &self.node.config.limits
    }

    /// Why storage takes no more writes, once it has failed one.
    pub fn storage_failure(&self) -> Option<String> {
        self.node.storage_failure()
    }

    /// In load order.
    pub fn components(&self) -> &[Arc<Component>] {
        &self.node.components
    }

    pub fn component(&self, name: &str) -> Option<&Arc<Component>> {
        self.node.component(name)
    }

    /// Every live process of this node.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        self.node.processes.snapshot()
    }

    /// The restart history of `key`, if it ever crashed.
    pub fn restarts_of(&self, key: &ProcessKey) -> Option<Restarts> {
        self.node.processes.supervisor().restarts_of(key)
    }

    /// How many crashes a name may have before it is refused for a while.
    pub fn restart_intensity(&self) -> &RestartIntensity {
        &self.node.config.restarts
    }

    /// Every remembered restart history.
    pub fn all_restarts(&self) -> Vec<(ProcessKey, Restarts)> {
        self.node.processes.supervisor().all_restarts()
    }

    /// Processes' crashes since the node started.
    pub fn crashes(&self) -> u64 {
        self.node.processes.counters().values().crashed
    }

    /// Asks the live process holding `key` to render its state (as
    /// `:sys.get_state`); never starts one.
    pub async fn render_state(&self, key: &ProcessKey) -> Result<String, String> {
        self.node.processes.render_state(key, &self.node.name).await
    }

    /// Kills the live process holding `key` after its current message (as
    /// `Process.exit(pid, :kill)`); its next message starts it again.
    /// Returns whether one was running.
    pub fn kill(&self, key: &ProcessKey) -> bool {
        self.node.processes.kill(key)
    }

    /// Traces the process holding `key` (and those holding it later) until
    /// `tracer` is finished; one trace per name.
    pub fn trace(&self, key: &ProcessKey, tracer: Arc<Tracer>) -> Result<(), String> {
        self.node.processes.trace(key, tracer)
    }

    /// Ends `tracer`'s trace of `key` (and only that trace).
    pub fn untrace(&self, key: &ProcessKey, tracer: &Arc<Tracer>) {
        self.node.processes.untrace(key, tracer)
    }

    /// Where the trace of `component`'s host calls attaches.
    pub fn host_call_hook(&self, component: &str) -> Option<&HostCallHook> {
        self.node
            .component(component)
            .map(|component| component.host_call_hook())
    }

    /// Swaps `component` to a new version (ARCHITECTURE.md, "Hot swap").
    pub async fn swap(&self, component: &str, options: SwapOptions) -> Result<String, String> {
        self.node.swaps.swap(component, options).await
    }

    /// Reads the version in `path` and checks it against `component`'s
    /// current one, changing nothing (a cluster records it next).
    pub async fn check_version(
        &self,
        component: &str,
        path: &std::path::Path,
        label: Option<String>,
    ) -> Result<CheckedVersion, String> {
        self.node.swaps.check(component, path, label).await
    }

    /// Widens `component`'s canary to every process.
    pub fn promote(&self, component: &str) -> Result<String, String> {
        self.node.swaps.promote(component)
    }

    /// Puts `component`'s processes back on the version its swap started
    /// from.
    pub fn rollback(&self, component: &str) -> Result<String, String> {
        self.node.swaps.rollback(component)
    }

    /// Ends `component`'s swap: the new version is current.
    pub fn commit(&self, component: &str) -> Result<String, String> {
        self.node.swaps.commit(component)
    }

    /// Every component's versions, and its swap's progress.
    pub fn versions(&self) -> Vec<VersionsView> {
        self.node.swaps.view(&self.node.components)
    }

    /// Traces running on this node: of processes, and of host calls.
    pub fn traces_running(&self) -> usize {
        self.node.traces_running()
    }
}
