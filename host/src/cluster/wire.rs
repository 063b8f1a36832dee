//! What members and tools say to each other over links: the bodies of link
//! requests, responses and one-way messages, encoded with postcard.
//!
//! Every body comes from an authenticated peer and arrives in a frame of
//! bounded size; decoding one that is malformed answers `Refused` (or, for
//! a one-way message, drops it with a log line), never panics.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::types::{Command, NodeId, Outcome, TypeConfig, Write};
use crate::distribution::NodeName;
use crate::process::CallError;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft's messages, with the id of the node they are for: a node whose
    /// data was wiped comes back under its old name with a new id, and must
    /// not take what was meant for the node it used to be.
    Raft { to: NodeId, rpc: RaftRpc },
    /// A call to a process this node should hold.
    Call {
        component: String,
        name: String,
        message: Vec<u8>,
        timeout_ms: u32,
    },
    /// A write, forwarded to the leader.
    Write(Write),
    /// "What index must I have applied to have seen every acknowledged
    /// write?", asked of the leader.
    ReadIndex,
    /// A node asks to join (sent to any member, forwarded to the leader).
    Join(JoinRequest),
    /// A member leaves (sent to the leader).
    Leave { node: NodeId },
    /// "Join my cluster": sent by a member to a lone node that a tool asked
    /// to connect to it, so the lone node joins (as `Join` does).
    Invite,
    /// A tool's command (on a hidden link).
    Tool(ToolRequest),
    /// A command other than a write, proposed to the leader (a rollout's
    /// steps); answered as a write.
    Propose(Command),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Call(CallReply),
    Write(WriteReply),
    ReadIndex(Result<u64, String>),
    Join(Result<JoinAccepted, String>),
    Leave(Result<(), String>),
    Invite(Result<String, String>),
    Tool(ToolReply),
    /// Not served here: says why (malformed, or this node is not in a
    /// cluster, or not the leader).
    Refused(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum CallReply {
    Answer(Result<Vec<u8>, CallError>),
    /// This node does not hold the name (its view of the placement is
    /// newer, or older): the message was not delivered.
    NotHere,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum WriteReply {
    /// Committed at `index`, with what applying it did.
    Committed { index: u64, outcome: Outcome },
    /// Not the leader: not written. Names the leader if known.
    NotLeader(Option<NodeName>),
    /// Not written, and it will not be: says why (the leader is cut off
    /// from the majority).
    Refused(String),
    /// Failed; it may or may not have been committed.
    Failed(String),
}

/// What a node joining brings with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: NodeId,
    pub name: NodeName,
    /// The names of the components it runs: a cluster runs the same ones
    /// everywhere.
    pub components: Vec<String>,
    pub data: DataState,
}

/// What a node's data directory holds, for the join check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataState {
    /// No data: it takes the cluster's.
    Empty,
    /// Data of its own, never part of a cluster (or changed since it left
    /// one): it may found a cluster, not join one that has data.
    OwnData,
    /// The copy it kept when it left cluster `cluster_id`, unchanged since:
    /// it may rejoin that cluster (its copy is replaced).
    LeftCluster { cluster_id: u128 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAccepted {
    pub cluster_id: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToolRequest {
    /// The cluster as this node sees it.
    Nodes,
    /// This node joins `other`'s cluster.
    Connect { other: NodeName },
    /// This node leaves its cluster, then stops.
    Leave,
    /// A console request (`crate::console`), opaque to the cluster; also
    /// sent member to member (a console gathering the whole cluster's
    /// processes).
    Console(Vec<u8>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToolReply {
    Nodes(Vec<NodeInfo>),
    Done(String),
    Failed(String),
    Console(Vec<u8>),
}

/// One node of the cluster, as a member sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: NodeName,
    pub id: NodeId,
    pub role: Role,
    /// Up in the replicated state (not declared down).
    pub up: bool,
    /// Whether the node asked has a link to it (always true for itself).
    pub linked: bool,
    pub leader: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Voter,
    Learner,
    /// Known to the cluster's placement but not (yet, or any more) in the
    /// Raft group.
    Joining,
    /// A node that is not part of a cluster.
    Alone,
}

/// One-way messages.
#[derive(Debug, Serialize, Deserialize)]
pub enum OneWay {
    Cast {
        component: String,
        name: String,
        message: Vec<u8>,
        /// Times it was forwarded: a cast chasing a name that keeps moving
        /// is dropped after a few.
        hops: u8,
    },
}

pub fn encode(value: &impl Serialize) -> Vec<u8> {
    // Plain data into a growable buffer: cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("malformed message: {e}"))
}
