//! Membership: founding a cluster, joining one, admitting a node (on the
//! leader), leaving, and taking a member out of the Raft group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};
use tokio::time::Instant;

use super::replica::Replica;
use super::types::{self, Member, NodeChange, NodeId, PlacementChange};
use super::wire::{self, DataState, JoinAccepted, JoinRequest, Request, Response};
use super::{ADMIT_WAIT, Cluster, JOIN_TIMEOUT, controller, identity, placement};
use crate::distribution::NodeName;
use crate::distribution::link::Link;
use crate::process::StopReason;

impl Cluster {
    /// Makes this lone node the first member of a new cluster, its data the
    /// cluster's data.
    async fn found(&self) -> Result<Arc<Replica>, String> {
        let _paused = self.pause_local_writes();
        let result = self.found_paused().await;
        if result.is_err() {
            self.discard_raft().await;
        }
        result
    }

    async fn found_paused(&self) -> Result<Arc<Replica>, String> {
        let me = self.mesh.me().clone();
        let store = self.node.store();
        let id = identity::new_id()?;
        identity::store(&store, id, &me, identity::Pending::Found)
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
        identity::clear_left_mark(&store).map_err(|e| e.to_string())?;
        if store.has_data() {
            // The data written before the cluster existed is in no log
            // entry: a snapshot carries it to every node that joins. Until
            // it is made and the log purged, the founding is not complete
            // (a node stopped meanwhile starts again as a lone node).
            snapshot_now(&replica, written.log_id.index, JOIN_TIMEOUT).await?;
        }
        identity::confirm(&store).map_err(|e| e.to_string())?;
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
        let data = identity::data_state(&self.node.store()).map_err(|e| e.to_string())?;
        let paused = self.pause_local_writes();
        let result = self.join_paused(&link, data).await;
        drop(paused);
        if result.is_err() {
            self.discard_raft().await;
        }
        result.map_err(|reason| {
            let data_dir = self.node.data_dir().display();
            let error = format!(
                "{me} cannot join the cluster of {other}: {reason} (this node's data is in {data_dir})"
            );
            tracing::warn!(node = %me, "{error}");
            error
        })
    }

    pub(super) async fn join_paused(
        &self,
        link: &Arc<Link>,
        data: DataState,
    ) -> Result<String, String> {
        let me = self.mesh.me().clone();
        let id = identity::new_id()?;
        identity::store(&self.node.store(), id, &me, identity::Pending::Join(data))
            .map_err(|e| format!("cannot record the node's id: {e}"))?;
        let replica = self.open_raft(id).await.map_err(|e| format!("{e:#}"))?;
        let request = Request::Join(JoinRequest {
            id,
            name: me.clone(),
            components: self.node.component_names(),
            data,
        });
        let answer = link
            .request(&wire::encode(&request), JOIN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        match wire::decode::<Response>(&answer)? {
            Response::Join(Ok(JoinAccepted { .. })) => {
                identity::confirm(&self.node.store()).map_err(|e| e.to_string())?;
                self.activate(replica).await;
                let other = link.peer();
                tracing::info!(node = %me, "joined the cluster of {other}");
                Ok(format!("{me} joined the cluster of {other}"))
            }
            Response::Join(Err(reason)) | Response::Refused(reason) => Err(reason),
            other => Err(format!("unexpected answer to a join: {other:?}")),
        }
    }

    /// Lets `request.name` in, on the leader (founding the cluster first if
    /// this node is lone; forwarding to the leader if it is not it).
    pub(super) async fn admit(
        self: &Arc<Self>,
        request: JoinRequest,
    ) -> Result<JoinAccepted, String> {
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
    pub(super) fn check_joiner(
        &self,
        request: &JoinRequest,
        cluster_id: u128,
    ) -> Result<(), String> {
        let ours = self.node.component_names();
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
        if self.node.store().has_data() {
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

    pub(super) async fn forward_join(
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
        self.node.stop_where(&StopReason::Moved, |_, _| true);
        self.mesh.want(Vec::new());
        let _ = replica.raft.shutdown().await;
        identity::forget(&self.node.store(), self.node.data_dir(), Some(cluster_id))
            .map_err(|e| format!("left, but cannot record it: {e}"))?;
        self.left.store(true, Ordering::Release);
        tracing::info!(node = %me, "left the cluster; its data stays as a copy of the cluster's");
        Ok(format!("{me} left its cluster"))
    }
}

/// Sends `request` to the leader until one answers it (or `deadline`).
pub(super) async fn ask_leader<T>(
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
pub(super) async fn remove_member(replica: &Replica, id: NodeId) -> Result<(), String> {
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
