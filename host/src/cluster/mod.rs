//! The cluster: nodes that share one registry and one replicated storage.
//!
//! It owns what the bytes on links mean: Raft's messages, calls and casts
//! to processes on other nodes, writes forwarded to the leader, joins and
//! leaves, and the tools' commands. It reaches the transport through
//! `crate::distribution` ([`Mesh`], [`Link`]), the node through
//! [`ClusterAccess`] alone (local calls and casts under a fence, stopping
//! processes, installing the [`crate::process::Router`] and the
//! [`crate::storage::Replicator`] it implements) and storage through
//! [`ClusterStore`]. Nothing below it (node, processes, storage) knows
//! about Raft, links or placement.
//!
//! - `types`: the log's commands and the replicated cluster state;
//! - `placement`: which node holds a name (slots, and spreading them);
//! - `log_store`, `state_machine`, `snapshot`, `identity`: Raft's storage,
//!   in the node's RocksDB;
//! - `network`: Raft's RPCs over links;
//! - `replica`: this node as a member (the call router, the write path, the
//!   start barrier);
//! - `controller`: liveness, the lease, failover and rebalancing;
//! - `election`: who may campaign, and when members were last heard;
//! - `membership`: found, join, admit, leave;
//! - `rollout`: a swap across the cluster, step by step through the log;
//! - `dispatch`: what arrives on links;
//! - `wire`, `tool`: what members and tools say to each other;
//! - this file: [`Cluster`], the life of a node in a cluster (start,
//!   resume, activate, shut down) and what it shows (nodes, placement,
//!   metrics).
//!
//! A node that never joins a cluster never starts Raft: its calls and
//! writes take the lone node's path, at the lone node's speed.

// openraft's storage traits return its `StorageError` (over 200 bytes); the
// helpers around them return the same so that `?` flows. It is only ever
// built on a failing disk, never on a hot path.
#![allow(clippy::result_large_err)]

mod controller;
mod dispatch;
mod election;
mod identity;
mod log_store;
mod membership;
mod network;
pub mod placement;
mod replica;
pub mod rollout;
mod snapshot;
mod state_machine;
#[cfg(test)]
mod storage_suite;
pub mod tool;
pub mod types;
pub mod wire;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::distribution::NodeName;
use crate::distribution::link::Link;
use crate::distribution::mesh::Mesh;
use crate::metrics::Series;
use crate::node::ClusterAccess;
use crate::storage::{ClusterStore, LocalWrites};
use replica::Replica;
pub use replica::Settings;
use types::NodeId;
use wire::{NodeInfo, Role, ToolReply, ToolRequest};

/// Longest a join may take: the joining node may have to receive a
/// snapshot of all the cluster's data first.
const JOIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a lone node asked to admit another waits for a join or leave of
/// its own to end.
const ADMIT_WAIT: Duration = Duration::from_secs(10);

/// This node's part in a cluster, from before it joins one to after it
/// leaves.
pub struct Cluster {
    /// Itself, for the link handler (which is called through `&self`) to
    /// hand requests to tasks.
    this: Weak<Cluster>,
    node: ClusterAccess,
    mesh: Arc<Mesh>,
    settings: Settings,
    /// The Raft instance, from the moment it is opened (a joining node's
    /// must answer the leader before the join completes).
    raft_instance: Mutex<Option<Arc<Replica>>>,
    /// Set once the node is a member: calls and writes go through it.
    active: OnceLock<Arc<Replica>>,
    /// One change of this node's own membership at a time.
    changing: tokio::sync::Mutex<()>,
    /// One admission (of another node) at a time, on the leader.
    admitting: tokio::sync::Mutex<()>,
    /// Stops the controller's tasks.
    stop: CancellationToken,
    /// Cancelled when a tool asked this node to leave its cluster and stop.
    stop_requested: CancellationToken,
    /// Set once the node has left its cluster (it is about to stop).
    left: AtomicBool,
    /// Who serves console requests arriving on links (set by the node's
    /// start; the cluster only carries them).
    console: OnceLock<Arc<dyn ConsoleService>>,
}

/// Tells storage what a local write must do on this node's data, at every
/// start (with distribution or not): a member's data run `outside` its
/// cluster (`eval`) refuses writes, since one would make this copy differ
/// from the others'; a copy of a cluster the node left clears that mark on
/// its first write; other data takes writes as they come.
pub fn set_local_writes(store: &ClusterStore, outside: bool) {
    let member = matches!(identity::stored(store), Ok(Some(_)));
    let policy = if member && outside {
        LocalWrites::Refused(
            "this data belongs to a cluster and eval runs outside it: it reads, it does not \
             write (use rpc on the running node)"
                .into(),
        )
    } else {
        identity::local_writes(store)
    };
    store.set_local_writes(policy);
}

/// Serves console requests, opaque to the cluster. `link` is the link the
/// request came on: a console session lasts as long as it.
pub trait ConsoleService: Send + Sync {
    fn serve(&self, link: Arc<Link>, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>>;
}

impl Cluster {
    /// Starts this node's part: resumes membership if its data directory
    /// belongs to a cluster, and hears what arrives on `mesh`'s links.
    pub async fn start(
        node: ClusterAccess,
        mesh: Arc<Mesh>,
        settings: Settings,
    ) -> anyhow::Result<Arc<Self>> {
        let cluster = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            node,
            mesh,
            settings,
            raft_instance: Mutex::new(None),
            active: OnceLock::new(),
            changing: tokio::sync::Mutex::new(()),
            admitting: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
            stop_requested: CancellationToken::new(),
            left: AtomicBool::new(false),
            console: OnceLock::new(),
        });
        cluster.mesh.set_events(cluster.clone());
        let store = cluster.node.store();
        if identity::undo_interrupted(&store, cluster.node.data_dir())
            .map_err(|e| anyhow::anyhow!("cannot undo an interrupted join: {e}"))?
        {
            tracing::warn!(
                node = %cluster.mesh.me(),
                "this node stopped while founding or joining a cluster: it starts as a lone \
                 node again (join again with --join or host connect)"
            );
        }
        let stored = identity::stored(&store)
            .map_err(|e| anyhow::anyhow!("cannot read this node's cluster identity: {e}"))?;
        if let Some((id, name)) = stored {
            let me = cluster.mesh.me();
            if name != *me {
                anyhow::bail!(
                    "the data in {} belongs to cluster member {name}, not to {me}: start it as \
                     --node {name}, or give this node another --data-dir",
                    cluster.node.data_dir().display()
                );
            }
            let replica = cluster.open_raft(id).await?;
            cluster.activate(replica).await;
            tracing::info!(node = %me, "resuming as a member of its cluster");
        }
        Ok(cluster)
    }

    /// Hands console requests arriving on links to `service` from now on.
    pub fn serve_console(&self, service: Arc<dyn ConsoleService>) {
        let _ = self.console.set(service);
    }

    pub fn me(&self) -> &NodeName {
        self.mesh.me()
    }

    /// Sends a console request to member `node`'s console over the link
    /// between them.
    pub async fn ask_console(
        &self,
        node: &NodeName,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let link = self
            .mesh
            .link(node)
            .ok_or_else(|| format!("no link to {node}"))?;
        match tool::request_on(&link, ToolRequest::Console(request), timeout).await? {
            ToolReply::Console(reply) => Ok(reply),
            ToolReply::Failed(reason) => Err(reason),
            other => Err(format!("unexpected answer from {node}: {other:?}")),
        }
    }

    /// Resolves when a tool asked this node to leave and stop.
    pub async fn stop_requested(&self) {
        self.stop_requested.cancelled().await;
    }

    pub fn is_member(&self) -> bool {
        self.active.get().is_some() && !self.left.load(Ordering::Acquire)
    }

    /// Stops Raft and the links; the node is going away.
    pub async fn shut_down(&self) {
        self.stop.cancel();
        // A node that left has shut its Raft down already.
        if let Some(replica) = self.raft().filter(|_| !self.left.load(Ordering::Acquire)) {
            let _ = replica.raft.shutdown().await;
        }
        self.mesh.shut_down("the node is stopping");
    }

    fn raft(&self) -> Option<Arc<Replica>> {
        self.raft_instance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn open_raft(&self, id: NodeId) -> anyhow::Result<Arc<Replica>> {
        let replica = Replica::open(
            self.node.clone(),
            self.mesh.clone(),
            id,
            self.settings.clone(),
        )
        .await?;
        *self.raft_instance.lock().unwrap_or_else(|p| p.into_inner()) = Some(replica.clone());
        Ok(replica)
    }

    /// Undoes a Raft instance opened for a found or join that failed.
    async fn discard_raft(&self) {
        let replica = self
            .raft_instance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(replica) = replica {
            let _ = replica.raft.shutdown().await;
        }
        if let Err(e) = identity::undo_interrupted(&self.node.store(), self.node.data_dir()) {
            tracing::error!(node = %self.mesh.me(), "cannot undo a failed join: {e}");
        }
    }

    /// From now on, calls and writes go through `replica`.
    /// Returns once the node is in contact with a majority of the voters
    /// (or after `--node-down-after`, still cut off): a node that says it
    /// is ready should not refuse its first request for want of a tick.
    async fn activate(&self, replica: Arc<Replica>) {
        if self.active.set(replica.clone()).is_err() {
            return;
        }
        self.node.join(replica.clone(), replica.clone());
        controller::start(replica.clone(), self.stop.clone());
        let deadline = Instant::now() + self.settings.node_down_after;
        loop {
            controller::check_lease(&replica);
            if replica.cut_off().is_none() || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The node that holds process `name` of `component`, as this node
    /// sees the placement (none while it is not a member).
    pub fn holder_of(&self, component: &str, name: &str) -> Option<NodeName> {
        let replica = self.active.get()?;
        let view = replica.view();
        let slot = view
            .slots
            .get(usize::from(placement::slot_of(component, name)))?;
        view.name_of(slot.node).cloned()
    }

    /// The cluster as this node sees it.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let me = self.mesh.me().clone();
        let Some(replica) = self.active.get() else {
            return vec![NodeInfo {
                name: me,
                id: 0,
                role: Role::Alone,
                up: true,
                linked: true,
                leader: false,
            }];
        };
        let view = replica.view();
        let metrics = replica.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        view.nodes
            .iter()
            .map(|(id, record)| NodeInfo {
                name: record.name.clone(),
                id: *id,
                role: if voters.contains(id) {
                    Role::Voter
                } else if learners.contains(id) {
                    Role::Learner
                } else {
                    Role::Joining
                },
                up: record.up,
                linked: record.name == me || self.mesh.link(&record.name).is_some(),
                leader: metrics.current_leader == Some(*id),
            })
            .collect()
    }

    /// The cluster's series for the metrics page.
    pub fn series(&self) -> Vec<Series> {
        let replica = self.active.get();
        let nodes_down = replica.map_or(0, |replica| replica.nodes_down.load(Ordering::Relaxed));
        let mut series = vec![Series::counter(
            "host_cluster_nodes_down_total",
            "Times another member of the cluster was declared down (silent past --node-down-after).",
            nodes_down,
        )];
        if let Some(replica) = replica {
            series.extend(replica.series());
        }
        series.extend(self.mesh.series());
        series
    }

    /// Refuses local writes until the guard is dropped: the node is
    /// founding or joining a cluster, whose data will be its own.
    fn pause_local_writes(&self) -> PausedWrites {
        let store = self.node.store();
        store.set_local_writes(LocalWrites::Refused(
            "this node is joining a cluster; writes resume once it has".into(),
        ));
        PausedWrites { store }
    }
}

/// Local writes refused while it lives; then what the data says.
struct PausedWrites {
    store: ClusterStore,
}

impl Drop for PausedWrites {
    fn drop(&mut self) {
        self.store
            .set_local_writes(identity::local_writes(&self.store));
    }
}
