//! What arrives on links: the dispatch of members' and tools' requests
//! (Raft's messages, calls, writes, joins, leaves, the tools' commands) and
//! one-way messages (casts).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::Cluster;
use super::membership::remove_member;
use super::replica::Replica;
use super::types::Command;
use super::wire::{
    self, CallReply, OneWay, RaftRpc, Request, Response, ToolReply, ToolRequest, WriteReply,
};
use crate::distribution::link::{Link, LinkHandler, MAX_BODY};
use crate::distribution::mesh::MeshEvents;

impl Cluster {
    /// Submits `command` if this node leads, else says who does.
    async fn submit_here(&self, command: Command) -> Response {
        match self.active.get() {
            Some(replica) if replica.is_leader() => Response::Write(replica.submit(command).await),
            Some(replica) => {
                let leader = replica
                    .leader()
                    .and_then(|id| replica.view().name_of(id).cloned());
                Response::Write(WriteReply::NotLeader(leader))
            }
            None => Response::Refused(format!("{} is not in a cluster", self.mesh.me())),
        }
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
            Request::Write(write) => self.submit_here(Command::Write(write)).await,
            // Members propose a rollout's steps; placement and founding are
            // the leader's own.
            Request::Propose(command @ Command::Rollout(_)) => self.submit_here(command).await,
            Request::Propose(_) => Response::Write(WriteReply::Refused(
                "only a rollout's steps are proposed by members".into(),
            )),
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
