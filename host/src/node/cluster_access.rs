//! What the cluster may do with this node: the whole of its interface to
//! the node (`crate::cluster` holds a [`ClusterAccess`], never the node).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::NodeCore;
use super::swap::{LocalVersions, SwapOptions};
use crate::process::{CallError, Fence, ProcessKey, Router, StopReason};
use crate::storage::{ClusterStore, Replicator};

#[derive(Clone)]
pub struct ClusterAccess {
    node: Arc<NodeCore>,
}

impl ClusterAccess {
    pub(super) fn new(node: Arc<NodeCore>) -> Self {
        Self { node }
    }

    /// Where the node keeps its data (the cluster keeps its snapshots
    /// there).
    pub fn data_dir(&self) -> &Path {
        &self.node.config.data_dir
    }

    /// The names of the components the node runs, sorted: members of one
    /// cluster run the same ones.
    pub fn component_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .node
            .components
            .iter()
            .map(|component| component.name().to_string())
            .collect();
        names.sort();
        names
    }

    /// Routes calls through `router` and writes through `replicator` from
    /// now on. Processes started before hold no fence, so they are stopped:
    /// their next message starts them again, registered with the cluster.
    pub fn join(&self, router: Arc<dyn Router>, replicator: Arc<dyn Replicator>) {
        self.node.processes.join_cluster(router);
        self.node
            .storage
            .cluster_store()
            .replicate_through(replicator);
    }

    /// A call to process `name` of `component` on this node, registered
    /// under `fence`.
    pub async fn call_local(
        &self,
        component: &str,
        name: &str,
        message: Vec<u8>,
        timeout: Duration,
        fence: Option<Fence>,
    ) -> Result<Vec<u8>, CallError> {
        self.node
            .processes
            .call_local(component, name, message, timeout, fence)
            .await
    }

    /// A cast to process `name` of `component` on this node, registered
    /// under `fence`.
    pub fn cast_local(
        &self,
        component: &str,
        name: &str,
        message: Vec<u8>,
        fence: Option<Fence>,
    ) -> Result<(), CallError> {
        self.node
            .processes
            .cast_local(component, name, message, fence)
    }

    /// Stops this node's processes whose registration matches; returns how
    /// many.
    pub fn stop_where(
        &self,
        reason: &StopReason,
        matches: impl Fn(&ProcessKey, Option<&Fence>) -> bool,
    ) -> usize {
        self.node.processes.stop_where(reason, matches)
    }

    /// `component`'s versions on this node (none if it runs no such
    /// component).
    pub fn local_versions(&self, component: &str) -> Option<LocalVersions> {
        self.node.swaps.local(component)
    }

    /// Swaps `component` on this node, as the cluster's rollout asks.
    pub async fn swap(&self, component: &str, options: SwapOptions) -> Result<String, String> {
        self.node.swaps.swap(component, options).await
    }

    /// Widens `component`'s canary on this node to every process.
    pub fn promote(&self, component: &str) -> Result<String, String> {
        self.node.swaps.promote(component)
    }

    /// Puts `component`'s processes on this node back on the version its
    /// swap started from.
    pub fn rollback(&self, component: &str, why: &str) -> Result<String, String> {
        self.node.swaps.roll_back(component, why, None)
    }

    /// Ends `component`'s swap on this node.
    pub fn commit(&self, component: &str) -> Result<String, String> {
        self.node.swaps.commit(component)
    }

    /// What the cluster may do with the node's storage.
    pub fn store(&self) -> ClusterStore {
        self.node.storage.cluster_store()
    }
}
