//! A replica: this node as a member of a cluster. It owns the Raft instance
//! (log and state machine on the node's RocksDB), and it is what the node's
//! call path and storage go through once the node is clustered:
//!
//! - as the node's [`Router`]: a call goes to the node holding the name's
//!   slot (this one, or another over its link), and is sent again elsewhere
//!   only when it certainly was not delivered (no link, or the other node
//!   says the name is not there);
//! - as storage's [`Replicator`]: a write goes to the leader, is committed
//!   by a majority, and returns once this node has applied it, so reads
//!   stay local and see the process's own writes;
//! - as the start barrier of processes: before `init`, a process waits until
//!   this node has applied everything committed when it started (the
//!   leader's read index, fetched once for all the processes starting at
//!   that moment).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use openraft::{Config, SnapshotPolicy};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::election::Campaigning;
use super::log_store::LogStore;
use super::network::{Answered, RaftNetworkOverLinks};
use super::placement::slot_of;
use super::state_machine::{Published, StateMachine};
use super::types::{ClusterState, Command, NodeId, Outcome, Raft, Write};
use super::wire::{self, CallReply, OneWay, Request, Response, WriteReply};
use crate::distribution::NodeName;
use crate::distribution::link::{Link, LinkError};
use crate::distribution::mesh::Mesh;
use crate::metrics::Series;
use crate::node::ClusterAccess;
use crate::process::{CallError, Fence, Router, StopReason};
use crate::storage::{Operation, Replicator, StorageError};

/// How often a caller waiting for a leader, a link or a new placement looks
/// again.
const RETRY_EVERY: Duration = Duration::from_millis(20);
/// Times a cast is passed on while chasing a name that moves.
const MAX_CAST_HOPS: u8 = 3;

/// Timing and sizes of a clustered node.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// A member silent this long is declared down (`--node-down-after`).
    pub node_down_after: Duration,
    /// Most voters (`--voters`): 3 by default, 5 at most.
    pub max_voters: usize,
    /// Longest a write waits for a leader and a majority.
    pub write_timeout: Duration,
}

impl Default for Settings {
    /// A member is down after 3 s of silence (Erlang's `net_ticktime` is
    /// 45 to 75 s); at most 3 voters.
    fn default() -> Self {
        Self::new(Duration::from_secs(3), 3)
    }
}

impl Settings {
    /// A clustered node's timing from `--node-down-after` (at least
    /// 200 ms) and `--voters`: a write waits for a leader and a majority
    /// twice the node-down time (at least a second).
    pub fn new(node_down_after: Duration, max_voters: usize) -> Self {
        let node_down_after = node_down_after.max(Duration::from_millis(200));
        Self {
            node_down_after,
            max_voters,
            write_timeout: (node_down_after * 2).max(Duration::from_secs(1)),
        }
    }

    /// A node that has not heard from a majority of voters for this long
    /// stops its processes and refuses writes: shorter than
    /// `node_down_after`, so it has stopped before its names are given to
    /// others.
    pub fn lease(&self) -> Duration {
        self.node_down_after / 2
    }

    /// How often liveness and placement are looked at.
    pub fn tick(&self) -> Duration {
        (self.node_down_after / 10).max(Duration::from_millis(20))
    }

    /// openraft's shortest election timeout: a quarter of the node-down
    /// time (at least 100 ms); its longest is twice that.
    fn election_timeout_min(&self) -> Duration {
        (self.node_down_after / 4).max(Duration::from_millis(100))
    }

    /// How long a voter that heard a leader refuses to vote for another
    /// (openraft's leader lease, its longest election timeout): a leader
    /// silent this long is gone for every voter, and an election can win.
    pub fn election_lease(&self) -> Duration {
        self.election_timeout_min() * 2
    }

    fn raft_config(&self) -> anyhow::Result<Config> {
        let election_min = self.election_timeout_min();
        let config = Config {
            cluster_name: "otp-wasm".into(),
            heartbeat_interval: (election_min / 4).as_millis() as u64,
            election_timeout_min: election_min.as_millis() as u64,
            election_timeout_max: self.election_lease().as_millis() as u64,
            // Who campaigns is decided by `election::steer`, every tick.
            enable_elect: false,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 512,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
            max_in_snapshot_log_to_keep: 1_000,
            purge_batch_size: 256,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid Raft configuration: {e}"))
    }
}

pub struct Replica {
    pub(super) me: NodeId,
    pub(super) name: NodeName,
    pub(super) node: ClusterAccess,
    pub(super) mesh: Arc<Mesh>,
    pub(super) raft: Raft,
    pub(super) settings: Settings,
    pub(super) published: Arc<Published>,
    view: watch::Receiver<Arc<ClusterState>>,
    applied: watch::Receiver<u64>,
    /// Set, with the reason, while the node is cut off from the majority.
    cut_off: watch::Sender<Option<String>>,
    barrier: Mutex<BarrierState>,
    /// When each member last answered Raft as itself (on the leader).
    answered: Arc<Answered>,
    /// Times another member was declared down, as this node applied it.
    pub(super) nodes_down: AtomicU64,
    /// Who may campaign, and when members were last heard.
    campaigning: Mutex<Campaigning>,
}

#[derive(Default)]
struct BarrierState {
    running: bool,
    waiters: Vec<oneshot::Sender<Result<u64, String>>>,
}

impl Replica {
    /// Opens this node's Raft instance (resuming whatever its data
    /// directory holds) as node `me`.
    pub async fn open(
        node: ClusterAccess,
        mesh: Arc<Mesh>,
        me: NodeId,
        settings: Settings,
    ) -> anyhow::Result<Arc<Self>> {
        let store = node.store();
        let (state_machine, published) = StateMachine::open(store.clone(), node.data_dir())
            .map_err(|e| anyhow::anyhow!("cannot open the cluster state: {e}"))?;
        let answered = Arc::new(Answered::default());
        let network = RaftNetworkOverLinks {
            me,
            mesh: mesh.clone(),
            answered: answered.clone(),
        };
        let config = Arc::new(settings.raft_config()?);
        let raft = Raft::new(me, config, network, LogStore::new(store), state_machine)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start Raft: {e}"))?;
        // Until it hears from a majority of the voters, a node serves
        // nothing: it may have been cut off before it stopped.
        let (cut_off, _) = watch::channel(Some(format!(
            "{} is starting: it has not heard from a majority of its cluster's voters yet",
            mesh.me()
        )));
        Ok(Arc::new(Self {
            me,
            name: mesh.me().clone(),
            view: published.view.subscribe(),
            applied: published.applied.subscribe(),
            node,
            mesh,
            raft,
            settings,
            published,
            cut_off,
            barrier: Mutex::default(),
            answered,
            nodes_down: AtomicU64::new(0),
            campaigning: Mutex::default(),
        }))
    }

    pub(super) fn campaigning(&self) -> std::sync::MutexGuard<'_, Campaigning> {
        self.campaigning.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When member `id` last answered this node's Raft messages as itself
    /// (this node sends them while it leads).
    pub(super) fn last_answer(&self, id: NodeId) -> Option<Instant> {
        self.answered.last(id)
    }

    /// Whether member `id` answered Raft as itself within `within`.
    pub(super) fn answered_within(&self, id: NodeId, within: Duration) -> bool {
        self.last_answer(id).is_some_and(|at| at.elapsed() < within)
    }

    /// The cluster state as of the last applied entry.
    pub fn view(&self) -> Arc<ClusterState> {
        self.view.borrow().clone()
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The leader, as Raft last knew it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.me)
    }

    /// Why the node is cut off, while it is.
    pub fn cut_off(&self) -> Option<String> {
        self.cut_off.borrow().clone()
    }

    pub(super) fn set_cut_off(&self, reason: Option<String>) {
        self.cut_off.send_replace(reason);
    }

    /// The open link to node `id`.
    pub(super) fn link_to(&self, id: NodeId) -> Option<Arc<Link>> {
        let view = self.view();
        let name = view.name_of(id)?;
        self.mesh.link(name)
    }

    /// Waits until this node has applied the log up to `index`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> bool {
        let mut applied = self.applied.clone();
        loop {
            if *applied.borrow_and_update() >= index {
                return true;
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => continue,
                _ => return false,
            }
        }
    }

    /// Waits until the applied cluster state satisfies `condition`; false
    /// at `deadline`.
    pub async fn wait_view(
        &self,
        deadline: Instant,
        condition: impl Fn(&ClusterState) -> bool,
    ) -> bool {
        let mut view = self.view.clone();
        loop {
            if condition(&view.borrow_and_update()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, view.changed()).await {
                Ok(Ok(())) => continue,
                _ => return false,
            }
        }
    }

    /// Waits a moment before trying again; `Err` once past `deadline` or
    /// cut off.
    async fn pause(&self, deadline: Instant, what: &str) -> Result<(), String> {
        if let Some(reason) = self.cut_off() {
            return Err(reason);
        }
        if Instant::now() + RETRY_EVERY > deadline {
            return Err(format!("{what} within the time allowed"));
        }
        tokio::time::sleep(RETRY_EVERY).await;
        Ok(())
    }

    /// Submits a write on this node, as the leader. Bounded by the fence:
    /// a leader cut off from the majority gives up instead of waiting.
    pub(super) async fn submit(&self, command: Command) -> WriteReply {
        if let Some(reason) = self.cut_off() {
            return WriteReply::Refused(reason);
        }
        let mut cut_off = self.cut_off.subscribe();
        let submitted = self.raft.client_write(command);
        tokio::select! {
            result = submitted => match result {
                Ok(response) => WriteReply::Committed {
                    index: response.log_id.index,
                    outcome: response.data,
                },
                Err(error) => match error.forward_to_leader() {
                    Some(forward) => {
                        let leader = forward
                            .leader_node
                            .as_ref()
                            .and_then(|member| NodeName::parse(&member.name).ok());
                        WriteReply::NotLeader(leader)
                    }
                    None => WriteReply::Failed(error.to_string()),
                },
            },
            _ = cut_off.wait_for(Option::is_some) => WriteReply::Failed(
                "this node was cut off from the cluster's majority before the write was confirmed".into(),
            ),
            _ = tokio::time::sleep(self.settings.write_timeout) => WriteReply::Failed(format!(
                "the write was not confirmed within {:?}",
                self.settings.write_timeout
            )),
        }
    }

    /// Replicates `write` through the leader and waits until this node has
    /// applied it.
    async fn replicate(&self, write: Write) -> Result<(), StorageError> {
        self.propose(Command::Write(write)).await
    }

    /// Proposes `command` through the leader and waits until this node has
    /// applied it: `Ok` if it was applied, `Unavailable` if it was not
    /// (refused, or no leader), `Indeterminate` if nobody can tell.
    pub(super) async fn propose(&self, command: Command) -> Result<(), StorageError> {
        let deadline = Instant::now() + self.settings.write_timeout;
        let forwarded = match &command {
            Command::Write(write) => Request::Write(write.clone()),
            other => Request::Propose(other.clone()),
        };
        loop {
            let reply = match self.leader() {
                Some(leader) if leader == self.me => Some(self.submit(command.clone()).await),
                Some(leader) => match self.link_to(leader) {
                    Some(link) => {
                        let body = wire::encode(&forwarded);
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        let mut cut_off = self.cut_off.subscribe();
                        let answered = tokio::select! {
                            answered = link.request(&body, remaining) => answered,
                            // Cut off with the write at the leader: its
                            // fate is unknown, and waiting will not tell.
                            _ = cut_off.wait_for(Option::is_some) => Err(LinkError::Lost(link.peer().clone())),
                        };
                        match answered {
                            Ok(answer) => match wire::decode::<Response>(&answer) {
                                Ok(Response::Write(reply)) => Some(reply),
                                Ok(other) => {
                                    Some(WriteReply::Failed(format!("unexpected answer {other:?}")))
                                }
                                Err(e) => Some(WriteReply::Failed(e)),
                            },
                            Err(LinkError::NotSent(_)) => None,
                            Err(error) => Some(WriteReply::Failed(error.to_string())),
                        }
                    }
                    None => None,
                },
                None => None,
            };
            match reply {
                Some(WriteReply::Committed { index, outcome }) => {
                    if !self.wait_applied(index, deadline).await {
                        return Err(StorageError::Indeterminate(format!(
                            "the write was committed at index {index} but this node did not apply it in time"
                        )));
                    }
                    return match outcome {
                        Outcome::Applied => Ok(()),
                        Outcome::Refused(reason) => Err(StorageError::Unavailable(reason)),
                    };
                }
                Some(WriteReply::Refused(reason)) => return Err(StorageError::Unavailable(reason)),
                Some(WriteReply::Failed(reason)) => {
                    return Err(StorageError::Indeterminate(format!(
                        "the write may or may not have been made: {reason}"
                    )));
                }
                Some(WriteReply::NotLeader(_)) | None => self
                    .pause(deadline, "no leader was reachable")
                    .await
                    .map_err(StorageError::Unavailable)?,
            }
        }
    }

    /// On the leader: the index every write acknowledged until now is at
    /// or below (Raft's read index: leadership confirmed by a quorum).
    pub(super) async fn local_read_index(&self) -> Result<u64, String> {
        let timeout = self.settings.write_timeout;
        match tokio::time::timeout(timeout, self.raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => Ok(read.map_or(0, |id| id.index)),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no quorum confirmed the leader within {timeout:?}")),
        }
    }

    /// The index this node must have applied to have seen every write
    /// acknowledged until now: the leader's read index.
    async fn read_index(&self) -> Result<u64, String> {
        let deadline = Instant::now() + self.settings.write_timeout;
        loop {
            match self.leader() {
                Some(leader) if leader == self.me => {
                    if let Ok(index) = self.local_read_index().await {
                        return Ok(index);
                    }
                }
                Some(leader) => {
                    if let Some(link) = self.link_to(leader) {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        // Asking again is harmless: it reads, it writes nothing.
                        if let Ok(answer) = link
                            .request(&wire::encode(&Request::ReadIndex), remaining)
                            .await
                            && let Ok(Response::ReadIndex(Ok(index))) =
                                wire::decode::<Response>(&answer)
                        {
                            return Ok(index);
                        }
                    }
                }
                None => {}
            }
            self.pause(deadline, "no leader confirmed the cluster's state")
                .await?;
        }
    }

    /// The read index, asked once for every caller waiting at the moment.
    async fn shared_read_index(self: &Arc<Self>) -> Result<u64, String> {
        let (answer, receiver) = oneshot::channel();
        let start = {
            let mut state = self.barrier.lock().unwrap_or_else(|p| p.into_inner());
            state.waiters.push(answer);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let replica = self.clone();
            tokio::spawn(async move {
                loop {
                    let waiters = {
                        let mut state = replica.barrier.lock().unwrap_or_else(|p| p.into_inner());
                        if state.waiters.is_empty() {
                            state.running = false;
                            return;
                        }
                        std::mem::take(&mut state.waiters)
                    };
                    let index = replica.read_index().await;
                    for waiter in waiters {
                        let _ = waiter.send(index.clone());
                    }
                }
            });
        }
        receiver
            .await
            .unwrap_or_else(|_| Err("the node is stopping".into()))
    }

    /// The fence a process of slot `slot` gets on this node, if this node
    /// holds the slot.
    fn fence_here(&self, view: &ClusterState, slot: u16) -> Option<Fence> {
        let held = view.slots.get(usize::from(slot))?;
        (held.node == self.me).then_some(Fence {
            slot,
            node: self.me,
            epoch: held.epoch,
        })
    }

    /// Answers a call sent here by another node.
    pub(super) async fn serve_call(
        &self,
        component: String,
        name: String,
        message: Vec<u8>,
        timeout: Duration,
    ) -> CallReply {
        let view = self.view();
        let Some(fence) = self.fence_here(&view, slot_of(&component, &name)) else {
            return CallReply::NotHere;
        };
        if let Some(reason) = self.cut_off() {
            return CallReply::Answer(Err(CallError::Refused(reason)));
        }
        match self
            .node
            .call_local(&component, &name, message, timeout, Some(fence))
            .await
        {
            Err(CallError::Moved) => CallReply::NotHere,
            answer => CallReply::Answer(answer),
        }
    }

    /// Takes a cast sent here by another node, passing it on if the name
    /// is elsewhere now.
    pub(super) fn serve_cast(&self, component: String, name: String, message: Vec<u8>, hops: u8) {
        let view = self.view();
        match self.fence_here(&view, slot_of(&component, &name)) {
            Some(fence) => {
                if let Err(error) = self
                    .node
                    .cast_local(&component, &name, message, Some(fence))
                {
                    tracing::debug!(node = %self.name, "cast to {component}/{name} refused: {error}");
                }
            }
            None if hops < MAX_CAST_HOPS => {
                if let Err(error) = self.send_cast(&view, &component, &name, message, hops + 1) {
                    tracing::warn!(node = %self.name, "cast to {component}/{name} dropped: {error}");
                }
            }
            None => {
                tracing::warn!(node = %self.name, "cast to {component}/{name} dropped after {hops} hops: its name keeps moving")
            }
        }
    }

    fn send_cast(
        &self,
        view: &ClusterState,
        component: &str,
        name: &str,
        message: Vec<u8>,
        hops: u8,
    ) -> Result<(), CallError> {
        let slot = slot_of(component, name);
        if let Some(fence) = self.fence_here(view, slot) {
            return self.node.cast_local(component, name, message, Some(fence));
        }
        let owner = view
            .slots
            .get(usize::from(slot))
            .ok_or_else(|| CallError::Refused("the cluster has no placement yet".into()))?;
        let peer = view
            .name_of(owner.node)
            .ok_or_else(|| CallError::Refused(format!("node {} is unknown", owner.node)))?;
        let link = self.mesh.link(peer).ok_or_else(|| {
            CallError::Refused(format!(
                "no link to {peer}, which holds `{component}/{name}`"
            ))
        })?;
        let cast = OneWay::Cast {
            component: component.to_string(),
            name: name.to_string(),
            message,
            hops,
        };
        link.send(&wire::encode(&cast))
            .map_err(|e| CallError::Refused(format!("the cast cannot go to {peer}: {e}")))
    }

    /// Routes a call to wherever the name's slot is held, again while it
    /// certainly was not delivered (the name moved, its node is out of
    /// reach), until `timeout`.
    async fn route_call(
        self: Arc<Self>,
        component: String,
        name: String,
        message: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let deadline = Instant::now() + timeout;
        let slot = slot_of(&component, &name);
        loop {
            if let Some(reason) = self.cut_off() {
                return Err(CallError::Refused(reason));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(CallError::TimedOut);
            }
            let view = self.view();
            let Some(owner) = view.slots.get(usize::from(slot)).copied() else {
                return Err(CallError::Refused(
                    "the cluster has no placement yet".into(),
                ));
            };
            let delivered = if owner.node == self.me {
                let fence = Fence {
                    slot,
                    node: self.me,
                    epoch: owner.epoch,
                };
                match self
                    .node
                    .call_local(&component, &name, message.clone(), remaining, Some(fence))
                    .await
                {
                    Err(CallError::Moved) => None,
                    answer => Some(answer),
                }
            } else if let Some(link) = view
                .name_of(owner.node)
                .and_then(|peer| self.mesh.link(peer))
            {
                let request = Request::Call {
                    component: component.clone(),
                    name: name.clone(),
                    message: message.clone(),
                    timeout_ms: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
                };
                // Cut off with the call at the other node: its fate is
                // unknown, and waiting for the link to give up (the
                // node-down time) would not tell more than the lease did.
                let mut cut_off = self.cut_off.subscribe();
                tokio::select! {
                    answer = call_over(&link, &request, remaining) => answer,
                    _ = cut_off.wait_for(Option::is_some) => Some(Err(CallError::Crashed(format!(
                        "outcome unknown: {} was cut off from the cluster while the call was at \
                         {}: it may or may not have been handled",
                        self.name,
                        link.peer()
                    )))),
                }
            } else {
                None
            };
            if let Some(answer) = delivered {
                return answer;
            }
            if Instant::now() + RETRY_EVERY > deadline {
                return Err(CallError::TimedOut);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Waits for the barrier (see the module doc), then checks that
    /// `fence` is still this node's.
    async fn barrier(self: Arc<Self>, fence: Option<Fence>) -> Result<(), StopReason> {
        let unavailable =
            |reason: String| StopReason::CutOff(format!("the process could not start: {reason}"));
        let index = self.shared_read_index().await.map_err(unavailable)?;
        let deadline = Instant::now() + self.settings.write_timeout;
        if !self.wait_applied(index, deadline).await {
            return Err(unavailable(format!(
                "this node has not applied the cluster's log up to {index} in time"
            )));
        }
        match fence {
            Some(fence) if !self.view().fence_holds(&fence) => Err(StopReason::Moved),
            _ => Ok(()),
        }
    }
}

/// Sends a call over `link`. `None` when it certainly was not handled
/// there (no link, or the peer does not hold the name): it may go elsewhere.
async fn call_over(
    link: &Link,
    request: &Request,
    timeout: Duration,
) -> Option<Result<Vec<u8>, CallError>> {
    match link.request(&wire::encode(request), timeout).await {
        Ok(answer) => match wire::decode::<Response>(&answer) {
            Ok(Response::Call(CallReply::Answer(answer))) => Some(answer),
            Ok(Response::Call(CallReply::NotHere)) => None,
            Ok(other) => Some(Err(CallError::Refused(format!(
                "{} answered the call with {other:?}",
                link.peer()
            )))),
            Err(e) => Some(Err(CallError::Refused(e))),
        },
        Err(LinkError::NotSent(_)) => None,
        Err(LinkError::TimedOut(..)) => Some(Err(CallError::TimedOut)),
        Err(error @ LinkError::TooLarge(_)) => Some(Err(CallError::Refused(format!(
            "the call cannot go to {}: {error}",
            link.peer()
        )))),
        Err(LinkError::Lost(peer)) => Some(Err(CallError::Crashed(format!(
            "the link to {peer} broke while the call was there: it may or may not have been handled"
        )))),
    }
}

impl Router for Replica {
    fn call(
        self: Arc<Self>,
        component: &str,
        name: &str,
        message: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        Box::pin(self.route_call(component.to_string(), name.to_string(), message, timeout))
    }

    fn cast(&self, component: &str, name: &str, message: Vec<u8>) -> Result<(), CallError> {
        if let Some(reason) = self.cut_off() {
            return Err(CallError::Refused(reason));
        }
        self.send_cast(&self.view(), component, name, message, 0)
    }

    fn start_barrier(
        self: Arc<Self>,
        fence: Option<Fence>,
    ) -> BoxFuture<'static, Result<(), StopReason>> {
        Box::pin(self.barrier(fence))
    }
}

fn raft_state_code(state: &openraft::ServerState) -> u64 {
    match state {
        openraft::ServerState::Follower => 0,
        openraft::ServerState::Candidate => 1,
        openraft::ServerState::Leader => 2,
        openraft::ServerState::Learner => 3,
        openraft::ServerState::Shutdown => 4,
    }
}

impl Replica {
    /// The cluster's series for the metrics page.
    pub fn series(&self) -> Vec<Series> {
        let view = self.view();
        let metrics = self.raft.metrics().borrow().clone();
        let last_log = metrics.last_log_index.unwrap_or(0);
        let applied = metrics.last_applied.map_or(0, |log_id| log_id.index);
        let lag = match &metrics.replication {
            Some(replication) => replication
                .values()
                .map(|matched| last_log.saturating_sub(matched.map_or(0, |log_id| log_id.index)))
                .max()
                .unwrap_or(0),
            None => last_log.saturating_sub(applied),
        };
        let up = view.nodes.values().filter(|record| record.up).count();
        let linked = view
            .nodes
            .values()
            .filter(|record| record.name != self.name && self.mesh.link(&record.name).is_some())
            .count();
        let slots = view
            .slots
            .iter()
            .filter(|slot| slot.node == self.me)
            .count();
        vec![
            Series::gauge(
                "host_cluster_members",
                "Members of the cluster, up or down.",
                view.nodes.len() as u64,
            ),
            Series::gauge(
                "host_cluster_members_up",
                "Members of the cluster not declared down.",
                up as u64,
            ),
            Series::gauge(
                "host_cluster_links",
                "Open links to other members.",
                linked as u64,
            ),
            Series::gauge(
                "host_cluster_slots_held",
                "Slots of the name space this node holds.",
                slots as u64,
            ),
            Series::gauge(
                "host_cluster_leader",
                "1 while this node is the Raft leader.",
                u64::from(self.is_leader()),
            ),
            Series::gauge(
                "host_cluster_term",
                "The Raft term this node is in: it rises with every election.",
                metrics.current_term,
            ),
            Series::gauge(
                "host_cluster_cut_off",
                "1 while this node is cut off from the majority.",
                u64::from(self.cut_off().is_some()),
            ),
            Series::gauge(
                "host_cluster_applied_index",
                "Last log index applied on this node.",
                self.applied_index(),
            ),
            Series::gauge(
                "host_cluster_raft_state",
                "This node's Raft state: 0 follower, 1 candidate, 2 leader, 3 learner, 4 shut down.",
                raft_state_code(&metrics.state),
            ),
            Series::gauge(
                "host_cluster_replication_lag",
                "Log entries this node has but has not applied; on the leader, entries the \
                 slowest member still lacks.",
                lag,
            ),
        ]
    }
}

impl Replicator for Replica {
    fn write(
        self: Arc<Self>,
        operations: Vec<Operation>,
        fence: Option<Fence>,
    ) -> BoxFuture<'static, Result<(), StorageError>> {
        let replica = self;
        Box::pin(async move {
            if let Some(reason) = replica.cut_off() {
                return Err(StorageError::Unavailable(reason));
            }
            replica.replicate(Write { operations, fence }).await
        })
    }
}
