//! Raft's network: its RPCs as requests on the links of the mesh.
//!
//! A peer with no link is dialled (and `Unreachable` if that fails: Raft
//! backs off), a link that breaks under a request is a network error, and a
//! batch of entries too large for one frame asks Raft for fewer.
//!
//! Every answer a peer gives as the node Raft meant is recorded in
//! [`Answered`]: the controller judges members alive by it, not by their
//! links, since a link can stay up to a process that is no longer that
//! member (its data was wiped, or its join was undone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, RPCTypes};

use super::types::{Member, NodeId, TypeConfig};
use super::wire::{self, RaftRpc, Request, Response};
use crate::distribution::NodeName;
use crate::distribution::frame::MAX_FRAME;
use crate::distribution::link::LinkError;
use crate::distribution::mesh::Mesh;

/// Room left in a frame for the envelope around a request.
const FRAME_MARGIN: usize = 64 * 1024;

type RpcError<E = RaftError<NodeId>> = RPCError<NodeId, Member, E>;

/// When each member last answered a Raft message as itself.
#[derive(Default)]
pub struct Answered(Mutex<HashMap<NodeId, Instant>>);

impl Answered {
    pub fn last(&self, id: NodeId) -> Option<Instant> {
        self.lock().get(&id).copied()
    }

    fn record(&self, id: NodeId) {
        self.lock().insert(id, Instant::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes a [`RaftPeer`] for each node Raft talks to.
pub struct RaftNetworkOverLinks {
    pub me: NodeId,
    pub mesh: Arc<Mesh>,
    pub answered: Arc<Answered>,
}

impl RaftNetworkFactory<TypeConfig> for RaftNetworkOverLinks {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> RaftPeer {
        RaftPeer {
            me: self.me,
            target,
            name: NodeName::parse(&node.name).ok(),
            mesh: self.mesh.clone(),
            answered: self.answered.clone(),
        }
    }
}

pub struct RaftPeer {
    me: NodeId,
    target: NodeId,
    name: Option<NodeName>,
    mesh: Arc<Mesh>,
    answered: Arc<Answered>,
}

impl RaftPeer {
    /// Sends an encoded request and decodes the answer.
    async fn ask<E: std::error::Error>(
        &self,
        kind: RPCTypes,
        body: &[u8],
        option: &RPCOption,
    ) -> Result<Response, RpcError<E>> {
        let unreachable =
            |reason: String| RPCError::Unreachable(Unreachable::new(&AnyError::error(reason)));
        let Some(name) = &self.name else {
            return Err(unreachable(format!(
                "node {} has no valid name",
                self.target
            )));
        };
        let timeout = option.hard_ttl();
        // A member the mesh has no link to yet (one joining through
        // another node) is dialled now; one that is down fails fast.
        let link = match self.mesh.link(name) {
            Some(link) => link,
            None => match tokio::time::timeout(timeout, self.mesh.connect(name)).await {
                Ok(Ok(link)) => link,
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => return Err(unreachable(format!("no link to {name}"))),
            },
        };
        match link.request(body, timeout).await {
            Ok(answer) => {
                let response = wire::decode::<Response>(&answer)
                    .map_err(|e| RPCError::Network(NetworkError::new(&AnyError::error(e))))?;
                if !matches!(response, Response::Refused(_)) {
                    self.answered.record(self.target);
                }
                Ok(response)
            }
            Err(LinkError::NotSent(_)) => Err(unreachable(format!("no link to {name}"))),
            Err(LinkError::TimedOut(..)) => Err(RPCError::Timeout(Timeout {
                action: kind,
                id: self.me,
                target: self.target,
                timeout,
            })),
            Err(error @ (LinkError::Lost(_) | LinkError::TooLarge(_))) => {
                Err(RPCError::Network(NetworkError::new(&error)))
            }
        }
    }

    fn encode(&self, rpc: RaftRpc) -> Vec<u8> {
        wire::encode(&Request::Raft {
            to: self.target,
            rpc,
        })
    }

    fn unexpected<E: std::error::Error>(&self, response: Response) -> RpcError<E> {
        let reason = match response {
            Response::Refused(reason) => reason,
            other => format!("unexpected answer: {other:?}"),
        };
        RPCError::Network(NetworkError::new(&AnyError::error(reason)))
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let entries = rpc.entries.len() as u64;
        let body = self.encode(RaftRpc::AppendEntries(rpc));
        if entries > 1 && body.len() > MAX_FRAME - FRAME_MARGIN {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        match self.ask(RPCTypes::AppendEntries, &body, &option).await? {
            Response::AppendEntries(Ok(answer)) => Ok(answer),
            Response::AppendEntries(Err(error)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<RaftError<NodeId, InstallSnapshotError>>>
    {
        let body = self.encode(RaftRpc::InstallSnapshot(rpc));
        match self.ask(RPCTypes::InstallSnapshot, &body, &option).await? {
            Response::InstallSnapshot(Ok(answer)) => Ok(answer),
            Response::InstallSnapshot(Err(error)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let body = self.encode(RaftRpc::Vote(rpc));
        match self.ask(RPCTypes::Vote, &body, &option).await? {
            Response::Vote(Ok(answer)) => Ok(answer),
            Response::Vote(Err(error)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }
}
