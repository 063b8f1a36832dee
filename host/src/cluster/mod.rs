//! The cluster: nodes that share one registry and one replicated storage.
//!
//! It owns what the bytes on links mean: Raft's messages, calls and casts
//! to processes on other nodes, writes forwarded to the leader, joins and
//! leaves, and the tools' commands. It reaches the transport through
//! `crate::dist` ([`Mesh`], [`Link`]) and the node through the narrow
//! interfaces `NodeCore` gives it ([`crate::node::Router`], which it
//! implements, `NodeCore::call_local`/`cast_local`, `stop_processes_where`)
//! and storage's [`crate::storage::Replicator`]. Nothing below it (node,
//! registry, processes, storage) knows about Raft, links or placement.
//!
//! - `types`: the log's commands and the replicated cluster state;
//! - `placement`: which node holds a name (slots, and spreading them);
//! - `log_store`, `state_machine`, `snapshot`, `identity`: Raft's storage,
//!   in the node's RocksDB;
//! - `network`: Raft's RPCs over links;
//! - `replica`: this node as a member (the call router, the write path, the
//!   start barrier);
//! - `controller`: liveness, the lease, failover and rebalancing;
//! - `wire`: what members and tools say to each other;
//! - this file: the life of a node in a cluster (found, join, leave,
//!   resume) and the dispatch of what arrives on links.
//!
//! A node that never joins a cluster never starts Raft: its calls and
//! writes take the lone node's path, at the lone node's speed.

// openraft's storage traits return its `StorageError` (over 200 bytes); the
// helpers around them return the same so that `?` flows. It is only ever
// built on a failing disk, never on a hot path.
#![allow(clippy::result_large_err)]

mod controller;
mod identity;
mod log_store;
mod network;
pub mod placement;
mod replica;
mod snapshot;
mod state_machine;
pub mod tool;
pub mod types;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use openraft::{ChangeMembers, ServerState};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dist::NodeName;
use crate::dist::link::{Link, LinkHandler, MAX_BODY};
use crate::dist::mesh::{Mesh, MeshEvents};
use crate::node::NodeCore;
use crate::registry::StopReason;
use replica::Replica;
pub use replica::Settings;
use types::{Member, NodeChange, NodeId, PlacementChange};
use wire::{
    CallReply, DataState, JoinAccepted, JoinRequest, NodeInfo, OneWay, RaftRpc, Request, Response,
    Role, ToolReply, ToolRequest, WriteReply,
};

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
    node: Arc<NodeCore>,
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

/// Whether `storage` holds the data of a cluster member (a node that runs
/// outside its cluster must not write to it).
pub fn belongs_to_cluster(storage: &crate::storage::Storage) -> bool {
    matches!(identity::stored(storage), Ok(Some(_)))
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
        node: Arc<NodeCore>,
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
        let storage = cluster.node.storage();
        if identity::undo_interrupted(storage, &cluster.node.config().data_dir)
            .map_err(|e| anyhow::anyhow!("cannot undo an interrupted join: {e}"))?
        {
            tracing::warn!(
                node = %cluster.mesh.me(),
                "this node stopped while founding or joining a cluster: it starts as a lone \
                 node again (join again with --join or host connect)"
            );
        }
        let stored = identity::stored(storage)
            .map_err(|e| anyhow::anyhow!("cannot read this node's cluster identity: {e}"))?;
        if let Some((id, name)) = stored {
            let me = cluster.mesh.me();
            if name != *me {
                anyhow::bail!(
                    "the data in {} belongs to cluster member {name}, not to {me}: start it as \
                     --node {name}, or give this node another --data-dir",
                    cluster.node.config().data_dir.display()
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
        let storage = self.node.storage();
        if let Err(e) = identity::undo_interrupted(storage, &self.node.config().data_dir) {
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
        self.node.join_cluster(replica.clone());
        self.node.storage().replicate_through(replica.clone());
        controller::start(replica.clone(), self.stop.clone());
        let deadline = Instant::now() + self.settings.node_down_after;
        loop {
            controller::check_lease(&replica);
            if replica.fenced().is_none() || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes this lone node the first member of a new cluster, its data the
    /// cluster's data.
    async fn found(&self) -> Result<Arc<Replica>, String> {
        let storage = self.node.storage().clone();
        storage.pause_local_writes(true);
        let result = self.found_paused().await;
        storage.pause_local_writes(false);
        if result.is_err() {
            self.discard_raft().await;
        }
        result
    }

    async fn found_paused(&self) -> Result<Arc<Replica>, String> {
        let me = self.mesh.me().clone();
        let storage = self.node.storage();
        let id = identity::new_id()?;
        identity::store(storage, id, &me, identity::Pending::Found)
            .map_err(|e| format!("cannot record the node's id: {e}"))?;
        let replica = self.open_raft(id).await.map_err(|e| format!("{e:#}"))?;
        let member = Member {
            name: me.to_string(),
        };
        replica
            .raft
            .initialize(BTreeMap::from([(id, member)]))
            .await
            .map_err(|e| format!("cannot start the cluster's log: {e}"))?;
        replica
            .raft
            .wait(Some(self.settings.write_timeout))
            .state(ServerState::Leader, "founding a cluster")
            .await
            .map_err(|e| format!("did not become the new cluster's leader: {e}"))?;
        let cluster_id = identity::new_cluster_id()?;
        let written = replica
            .raft
            .client_write(types::Command::Found {
                cluster_id,
                founder: id,
                name: me.clone(),
            })
            .await
            .map_err(|e| format!("cannot found the cluster: {e}"))?;
        identity::clear_left_mark(storage).map_err(|e| e.to_string())?;
        if storage.has_data() {
            // The data written before the cluster existed is in no log
            // entry: a snapshot carries it to every node that joins. Until
            // it is made and the log purged, the founding is not complete
            // (a node stopped meanwhile starts again as a lone node).
            snapshot_now(&replica, written.log_id.index, JOIN_TIMEOUT).await?;
        }
        identity::confirm(storage).map_err(|e| e.to_string())?;
        self.activate(replica.clone()).await;
        tracing::info!(node = %me, "founded a cluster with this node's data");
        Ok(replica)
    }

    /// This node joins `other`'s cluster (or, if this node is a member and
    /// `other` is lone, `other` joins this one). Joining one member joins
    /// the whole cluster: the others are found through the replicated
    /// membership.
    pub async fn join(self: &Arc<Self>, other: &NodeName) -> Result<String, String> {
        let _changing = self.changing.lock().await;
        let me = self.mesh.me().clone();
        if *other == me {
            return Err(format!("{me} cannot join itself"));
        }
        let link = self.mesh.connect(other).await.map_err(|e| {
            let error = format!("{me} cannot join the cluster of {other}: {e}");
            tracing::warn!(node = %me, "{error}");
            error
        })?;
        if let Some(replica) = self.active.get() {
            if replica.view().id_of(other).is_some() {
                return Ok(format!("{other} is already in the cluster of {me}"));
            }
            let answer = link
                .request(&wire::encode(&Request::Invite), JOIN_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            return match wire::decode::<Response>(&answer)? {
                Response::Invite(result) => result,
                Response::Refused(reason) => Err(reason),
                other => Err(format!("unexpected answer to an invitation: {other:?}")),
            };
        }
        let storage = self.node.storage().clone();
        let data = identity::data_state(&storage).map_err(|e| e.to_string())?;
        storage.pause_local_writes(true);
        let result = self.join_paused(&link, data).await;
        storage.pause_local_writes(false);
        if result.is_err() {
            self.discard_raft().await;
        }
        result.map_err(|reason| {
            let data_dir = self.node.config().data_dir.display();
            let error = format!(
                "{me} cannot join the cluster of {other}: {reason} (this node's data is in {data_dir})"
            );
            tracing::warn!(node = %me, "{error}");
            error
        })
    }

    async fn join_paused(&self, link: &Arc<Link>, data: DataState) -> Result<String, String> {
        let me = self.mesh.me().clone();
        let id = identity::new_id()?;
        identity::store(self.node.storage(), id, &me, identity::Pending::Join(data))
            .map_err(|e| format!("cannot record the node's id: {e}"))?;
        let replica = self.open_raft(id).await.map_err(|e| format!("{e:#}"))?;
        let request = Request::Join(JoinRequest {
            id,
            name: me.clone(),
            components: self.component_names(),
            data,
        });
        let answer = link
            .request(&wire::encode(&request), JOIN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        match wire::decode::<Response>(&answer)? {
            Response::Join(Ok(JoinAccepted { .. })) => {
                identity::confirm(self.node.storage()).map_err(|e| e.to_string())?;
                self.activate(replica).await;
                let other = link.peer();
                tracing::info!(node = %me, "joined the cluster of {other}");
                Ok(format!("{me} joined the cluster of {other}"))
            }
            Response::Join(Err(reason)) | Response::Refused(reason) => Err(reason),
            other => Err(format!("unexpected answer to a join: {other:?}")),
        }
    }

    fn component_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .node
            .components()
            .iter()
            .map(|component| component.name().to_string())
            .collect();
        names.sort();
        names
    }

    /// Lets `request.name` in, on the leader (founding the cluster first if
    /// this node is lone; forwarding to the leader if it is not it).
    async fn admit(self: &Arc<Self>, request: JoinRequest) -> Result<JoinAccepted, String> {
        let replica = match self.active.get() {
            Some(replica) => replica.clone(),
            None => {
                // Bounded: two lone nodes told to join each other at once
                // would otherwise each wait for the other's join to end.
                let Ok(_changing) = tokio::time::timeout(ADMIT_WAIT, self.changing.lock()).await
                else {
                    return Err(format!(
                        "{} is busy joining or leaving a cluster itself; try again",
                        self.mesh.me()
                    ));
                };
                match self.active.get() {
                    Some(replica) => replica.clone(),
                    None => self.found().await?,
                }
            }
        };
        if !replica.is_leader() {
            return self.forward_join(&replica, request).await;
        }
        let _admitting = self.admitting.lock().await;
        let view = replica.view();
        let cluster_id = view
            .cluster_id
            .ok_or("the cluster is not founded yet; try again")?;
        self.check_joiner(&request, cluster_id)?;
        if let Some(old) = view.id_of(&request.name).filter(|old| *old != request.id) {
            // The member of that name answers Raft as itself: it runs.
            // Otherwise the joiner is its new incarnation (its data dir
            // was replaced), and the old membership ends.
            if replica.answered_within(old, self.settings.lease()) {
                return Err(format!(
                    "a node named {} is already a member and running; stop it first",
                    request.name
                ));
            }
            tracing::info!(node = %self.mesh.me(), "{} comes back with new data: its old membership ends", request.name);
            remove_member(&replica, old).await?;
        }
        // The leader replicates to the joiner: make sure it can reach it
        // (it may have come in through another member).
        self.mesh
            .connect(&request.name)
            .await
            .map_err(|e| format!("the leader cannot reach it: {e}"))?;
        let member = Member {
            name: request.name.to_string(),
        };
        let adding = replica.raft.add_learner(request.id, member, false);
        let added = tokio::time::timeout(self.settings.write_timeout, adding)
            .await
            .map_err(|_| "adding it to the cluster's log did not commit in time".to_string())?
            .map_err(|e| format!("cannot add it to the cluster's log: {e}"))?;
        let (id, since) = (request.id, added.log_id);
        replica
            .raft
            .wait(Some(JOIN_TIMEOUT))
            .metrics(
                |metrics| {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&id))
                        .is_some_and(|matched| *matched >= Some(since))
                },
                "the new node catches up",
            )
            .await
            .map_err(|e| format!("it did not catch up with the cluster's log: {e}"))?;
        let name = request.name.clone();
        controller::propose_placement(&replica, |state| {
            let mut up: Vec<NodeId> = state
                .nodes
                .iter()
                .filter(|(_, record)| record.up)
                .map(|(id, _)| *id)
                .collect();
            up.push(id);
            Some(PlacementChange {
                based_on: state.version,
                nodes: vec![(id, NodeChange::Up { name: name.clone() })],
                moves: placement::balance(&state.slots, &up),
            })
        })
        .await?;
        Ok(JoinAccepted { cluster_id })
    }

    /// Refuses a joiner that runs other components, or whose data would be
    /// lost.
    fn check_joiner(&self, request: &JoinRequest, cluster_id: u128) -> Result<(), String> {
        let ours = self.component_names();
        if request.components != ours {
            return Err(format!(
                "it runs components [{}] and the cluster runs [{}]: every node of a cluster \
                 runs the same components",
                request.components.join(", "),
                ours.join(", ")
            ));
        }
        let own_data = match request.data {
            DataState::Empty => false,
            DataState::LeftCluster { cluster_id: left } => left != cluster_id,
            DataState::OwnData => true,
        };
        if !own_data {
            return Ok(());
        }
        let me = self.mesh.me();
        if self.node.storage().has_data() {
            Err(format!(
                "{} and the cluster of {me} both hold data of their own, and two sets of data \
                 are never merged: empty the data dir of the node whose data may go, then join",
                request.name
            ))
        } else {
            Err(format!(
                "{} holds data and the cluster of {me} holds none: join them the other way round \
                 (`host connect {me} {}`), so the cluster starts from that data",
                request.name, request.name
            ))
        }
    }

    async fn forward_join(
        &self,
        replica: &Replica,
        request: JoinRequest,
    ) -> Result<JoinAccepted, String> {
        let deadline = Instant::now() + self.settings.write_timeout;
        let link = loop {
            if let Some(link) = replica.leader().and_then(|leader| replica.link_to(leader)) {
                break link;
            }
            if Instant::now() >= deadline {
                return Err("the cluster has no reachable leader".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let answer = link
            .request(&wire::encode(&Request::Join(request)), JOIN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        match wire::decode::<Response>(&answer)? {
            Response::Join(result) => result,
            Response::Refused(reason) => Err(reason),
            other => Err(format!("unexpected answer from the leader: {other:?}")),
        }
    }

    /// This node leaves its cluster: its names move to the others, it
    /// leaves the Raft group, and its data stays behind as a copy of the
    /// cluster's (so it may join again later without merging).
    pub async fn leave(&self) -> Result<String, String> {
        let _changing = self.changing.lock().await;
        let me = self.mesh.me().clone();
        let Some(replica) = self.active.get().cloned().filter(|_| self.is_member()) else {
            return Err(format!("{me} is not a member of a cluster"));
        };
        let view = replica.view();
        if view.nodes.len() <= 1 {
            return Ok(format!(
                "{me} is the only node of its cluster: nothing to leave"
            ));
        }
        let cluster_id = view.cluster_id.unwrap_or_default();
        let patience = self.settings.write_timeout * 3;
        let deadline = Instant::now() + patience;
        let removal = async {
            if replica.is_leader() {
                // The leader takes itself out; once the new configuration
                // is committed it steps down and the others elect a leader.
                remove_member(&replica, replica.me).await
            } else {
                ask_leader(
                    &replica,
                    deadline,
                    Request::Leave { node: replica.me },
                    |response| match response {
                        Response::Leave(result) => Some(result),
                        _ => None,
                    },
                )
                .await
            }
        };
        tokio::time::timeout(patience, removal)
            .await
            .map_err(|_| format!("the cluster did not confirm the leave within {patience:?}"))??;
        // Take what is left of the log up to our removal, then stop.
        let left = replica
            .wait_view(deadline, |view| !view.nodes.contains_key(&replica.me))
            .await;
        if !left {
            tracing::warn!(node = %me, "left the cluster before applying its own removal");
        }
        self.node
            .stop_processes_where(&StopReason::Moved, |_, _| true);
        self.mesh.want(Vec::new());
        let _ = replica.raft.shutdown().await;
        identity::forget(
            self.node.storage(),
            &self.node.config().data_dir,
            Some(cluster_id),
        )
        .map_err(|e| format!("left, but cannot record it: {e}"))?;
        self.left.store(true, Ordering::Release);
        tracing::info!(node = %me, "left the cluster; its data stays as a copy of the cluster's");
        Ok(format!("{me} left its cluster"))
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

    async fn serve_tool(self: &Arc<Self>, link: Arc<Link>, request: ToolRequest) -> ToolReply {
        match request {
            ToolRequest::Console(request) => match self.console.get() {
                Some(console) => ToolReply::Console(console.serve(link, request).await),
                None => ToolReply::Failed(format!("{} serves no console", self.mesh.me())),
            },
            ToolRequest::Nodes => ToolReply::Nodes(self.nodes()),
            ToolRequest::Connect { other } => match self.join(&other).await {
                Ok(done) => ToolReply::Done(done),
                Err(reason) => ToolReply::Failed(reason),
            },
            ToolRequest::Leave => match self.leave().await {
                Ok(done) => {
                    let stop = self.stop_requested.clone();
                    // Answer first, then stop.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        stop.cancel();
                    });
                    ToolReply::Done(format!("{done}; stopping"))
                }
                Err(reason) => ToolReply::Failed(reason),
            },
        }
    }

    async fn serve_request(self: Arc<Self>, link: Arc<Link>, body: Bytes) -> Response {
        let request = match wire::decode::<Request>(&body) {
            Ok(request) => request,
            Err(reason) => return Response::Refused(reason),
        };
        let not_member = || Response::Refused(format!("{} is not in a cluster", self.mesh.me()));
        match request {
            Request::Raft { to, rpc } => match self.raft().filter(|replica| replica.me == to) {
                Some(replica) => serve_raft(&replica, rpc).await,
                None => Response::Refused(format!(
                    "{} is not node {to} of a cluster (its data was replaced?)",
                    self.mesh.me()
                )),
            },
            Request::Call {
                component,
                name,
                message,
                timeout_ms,
            } => match self.active.get() {
                Some(replica) => {
                    let timeout = Duration::from_millis(u64::from(timeout_ms));
                    Response::Call(replica.serve_call(component, name, message, timeout).await)
                }
                None => Response::Call(CallReply::NotHere),
            },
            Request::Write(write) => match self.active.get() {
                Some(replica) if replica.is_leader() => {
                    Response::Write(replica.submit(write).await)
                }
                Some(replica) => {
                    let leader = replica
                        .leader()
                        .and_then(|id| replica.view().name_of(id).cloned());
                    Response::Write(WriteReply::NotLeader(leader))
                }
                None => not_member(),
            },
            Request::ReadIndex => match self.active.get() {
                Some(replica) => Response::ReadIndex(replica.local_read_index().await),
                None => not_member(),
            },
            Request::Join(request) => Response::Join(self.admit(request).await),
            Request::Leave { node } => match self.active.get() {
                Some(replica) if replica.is_leader() => {
                    Response::Leave(remove_member(replica, node).await)
                }
                Some(_) => Response::Leave(Err("not the leader".into())),
                None => not_member(),
            },
            Request::Invite => {
                if self.is_member() {
                    Response::Invite(Err(format!(
                        "{} is a member of another cluster: a node joins another cluster only \
                         after leaving its own (`host leave`)",
                        self.mesh.me()
                    )))
                } else {
                    Response::Invite(self.join(link.peer()).await)
                }
            }
            Request::Tool(request) => Response::Tool(self.serve_tool(link, request).await),
        }
    }
}

/// Sends `request` to the leader until one answers it (or `deadline`).
async fn ask_leader<T>(
    replica: &Replica,
    deadline: Instant,
    request: Request,
    answer: impl Fn(Response) -> Option<Result<T, String>>,
) -> Result<T, String> {
    let body = wire::encode(&request);
    loop {
        if let Some(link) = replica.leader().and_then(|leader| replica.link_to(leader)) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Ok(bytes) = link.request(&body, remaining).await {
                match wire::decode::<Response>(&bytes).map(&answer) {
                    Ok(Some(Ok(value))) => return Ok(value),
                    Ok(Some(Err(reason))) if reason != "not the leader" => return Err(reason),
                    Ok(Some(Err(_)) | None) | Err(_) => {}
                }
            }
        } else if replica.is_leader() {
            return Err("this node is the leader: ask it directly".into());
        }
        if Instant::now() >= deadline {
            return Err("no leader answered in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On the leader: takes node `id` out of the cluster (its names first,
/// then its place in the Raft group).
async fn remove_member(replica: &Replica, id: NodeId) -> Result<(), String> {
    let lease = replica.settings.lease();
    // Who is there to take over: this leader, and members answering it.
    let alive = |other: NodeId| other == replica.me || replica.answered_within(other, lease);
    let view = replica.view();
    if !view
        .nodes
        .iter()
        .any(|(other, record)| *other != id && record.up && alive(*other))
    {
        return Err(
            "it is the last node up in its cluster: its names would have nowhere to go".into(),
        );
    }
    // Decided before anything changes: the last voter hands its vote only
    // to a learner that answers and has caught up (waiting a moment for
    // one), or a joint configuration with a dead node would never commit.
    let deadline = Instant::now() + replica.settings.write_timeout;
    let change = loop {
        let metrics = replica.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if !voters.contains(&id) {
            break ChangeMembers::RemoveNodes(BTreeSet::from([id]));
        }
        let mut remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
        if remaining.is_empty() {
            let heir = membership.learner_ids().find(|learner| {
                *learner != id && alive(*learner) && controller::caught_up(replica, *learner)
            });
            match heir {
                Some(heir) => {
                    remaining.insert(heir);
                }
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => {
                    return Err(
                        "it holds the only vote, and no other node is up and caught \
                                up to take it"
                            .into(),
                    );
                }
            }
        }
        break ChangeMembers::ReplaceAllVoters(remaining);
    };
    controller::propose_placement(replica, |state| {
        if !state.nodes.contains_key(&id) {
            return None;
        }
        let up: Vec<NodeId> = state
            .nodes
            .iter()
            .filter(|(other, record)| **other != id && record.up)
            .map(|(other, _)| *other)
            .collect();
        Some(PlacementChange {
            based_on: state.version,
            nodes: vec![(id, NodeChange::Gone)],
            moves: placement::balance(&state.slots, &up),
        })
    })
    .await?;
    let changing = replica.raft.change_membership(change, false);
    tokio::time::timeout(replica.settings.write_timeout, changing)
        .await
        .map_err(|_| "taking it out of the Raft group did not commit in time".to_string())?
        .map_err(|e| format!("cannot take it out of the Raft group: {e}"))?;
    Ok(())
}

/// Builds a snapshot covering `index` and purges the log up to it, so that
/// nodes joining later receive the data as a snapshot.
async fn snapshot_now(replica: &Replica, index: u64, timeout: Duration) -> Result<(), String> {
    replica
        .raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| format!("cannot snapshot the data: {e}"))?;
    replica
        .raft
        .wait(Some(timeout))
        .metrics(
            |metrics| {
                metrics
                    .snapshot
                    .is_some_and(|snapshot| snapshot.index >= index)
            },
            "a snapshot of the founding data",
        )
        .await
        .map_err(|e| format!("the snapshot of the data was not made in time: {e}"))?;
    replica
        .raft
        .trigger()
        .purge_log(index)
        .await
        .map_err(|e| format!("cannot purge the log: {e}"))?;
    replica
        .raft
        .wait(Some(timeout))
        .metrics(
            |metrics| metrics.purged.is_some_and(|purged| purged.index >= index),
            "the log purged up to the founding snapshot",
        )
        .await
        .map_err(|e| format!("the log was not purged in time: {e}"))?;
    Ok(())
}

async fn serve_raft(replica: &Replica, rpc: RaftRpc) -> Response {
    match rpc {
        RaftRpc::AppendEntries(rpc) => {
            Response::AppendEntries(replica.raft.append_entries(rpc).await)
        }
        RaftRpc::Vote(rpc) => Response::Vote(replica.raft.vote(rpc).await),
        RaftRpc::InstallSnapshot(rpc) => {
            Response::InstallSnapshot(replica.raft.install_snapshot(rpc).await)
        }
    }
}

impl LinkHandler for Cluster {
    fn request(&self, link: Arc<Link>, body: Bytes) -> BoxFuture<'static, Vec<u8>> {
        let Some(cluster) = self.this.upgrade() else {
            return Box::pin(async { wire::encode(&Response::Refused("stopping".into())) });
        };
        Box::pin(async move {
            let answer = wire::encode(&cluster.serve_request(link, body).await);
            if answer.len() > MAX_BODY {
                // A reply (a guest's answer to a call) longer than a link
                // carries: the caller is told, the link stays up.
                return wire::encode(&Response::Refused(format!(
                    "the answer is {} bytes, more than a link carries in one message ({MAX_BODY})",
                    answer.len()
                )));
            }
            answer
        })
    }

    fn message(&self, link: &Arc<Link>, body: Bytes) {
        match wire::decode::<OneWay>(&body) {
            Ok(OneWay::Cast {
                component,
                name,
                message,
                hops,
            }) => match self.active.get() {
                Some(replica) => replica.serve_cast(component, name, message, hops),
                None => tracing::warn!(
                    node = %self.mesh.me(),
                    "dropped a cast from {} to {component}/{name}: this node is not in a cluster",
                    link.peer()
                ),
            },
            Err(reason) => tracing::warn!(
                node = %self.mesh.me(),
                "dropped a one-way message from {}: {reason}",
                link.peer()
            ),
        }
    }

    fn link_down(&self, _link: &Arc<Link>) {}
}

impl MeshEvents for Cluster {
    fn link_up(&self, link: &Arc<Link>) {
        tracing::debug!(node = %self.mesh.me(), peer = %link.peer(), "link up");
    }
}
