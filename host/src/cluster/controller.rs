//! Keeping the cluster in shape. Two loops run on every member, every tick
//! (`--node-down-after` / 10), independent of each other so that a Raft
//! proposal that cannot commit never delays the lease:
//!
//! - **The lease** (`lease_loop`): a node that has not heard from a majority
//!   of voters (itself included, if it votes) within the lease
//!   (`--node-down-after` / 2) over their links is cut off: it stops every
//!   process and refuses writes and calls until it hears from them again.
//!   The leader declares a node down only after `--node-down-after` of
//!   silence, so a cut-off node has stopped its processes before its names
//!   are given to another node.
//! - **Leading** (`tick_loop`, on the leader only), one change per tick,
//!   through Raft, each bounded in time: declare members down that have not
//!   answered Raft as themselves for `--node-down-after` (a link that stays
//!   up to a process that is no longer that member does not count), and give
//!   their slots to the others; bring members back up once they answer and
//!   have caught up with the log; keep an odd number of voters (at most
//!   `--voters`), preferring members that are up; spread the slots evenly.
//! - **Following the placement** (`follow_placement`): when the applied
//!   placement moves slots away from this node, their processes stop (their
//!   waiting callers send again, to the new holder); the mesh is told which
//!   members to keep linked; changes of members are logged on every node.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::election;
use super::placement::balance;
use super::replica::Replica;
use super::rollout;
use super::types::{ClusterState, Command, NodeChange, NodeId, Outcome, PlacementChange};
use crate::distribution::NodeName;
use crate::process::StopReason;

/// Proposals retried when the placement changed under them.
const PROPOSAL_ATTEMPTS: usize = 5;
/// How far behind the leader's log a member may be and still count as
/// caught up when it comes back (about one Raft message of entries).
const CAUGHT_UP_SLACK: u64 = 512;

/// Starts the controller's tasks for `replica`, until `stop`.
pub(super) fn start(replica: Arc<Replica>, stop: CancellationToken) {
    tokio::spawn(follow_placement(replica.clone(), stop.clone()));
    tokio::spawn(lease_loop(replica.clone(), stop.clone()));
    tokio::spawn(rollout::lead(replica.clone(), stop.clone()));
    tokio::spawn(rollout::follow(replica.clone(), stop.clone()));
    tokio::spawn(tick_loop(replica, stop));
}

fn ticks(replica: &Replica) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(replica.settings.tick());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

async fn lease_loop(replica: Arc<Replica>, stop: CancellationToken) {
    let mut ticks = ticks(&replica);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => check_lease(&replica),
        }
    }
}

async fn tick_loop(replica: Arc<Replica>, stop: CancellationToken) {
    let mut ticks = ticks(&replica);
    // Members are judged from when this node became leader: before, it sent
    // them nothing, so their silence says nothing.
    let mut leading_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if !replica.is_leader() || replica.cut_off().is_some() {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let view = replica.view();
        let step =
            tokio::time::timeout(replica.settings.write_timeout, lead(&replica, &view, since));
        match step.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(node = %replica.name, "leader's step: {error}"),
            Err(_) => tracing::warn!(
                node = %replica.name,
                "the leader's step did not commit within {:?}; trying again",
                replica.settings.write_timeout
            ),
        }
    }
}

/// Whether this node hears from a majority of the voters; and so who may
/// campaign (`election::steer`).
pub(super) fn check_lease(replica: &Replica) {
    let metrics = replica.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let lease = replica.settings.lease();
    let mut fresh = BTreeSet::new();
    for (id, member) in membership.nodes() {
        let link = NodeName::parse(&member.name)
            .ok()
            .and_then(|name| replica.mesh.link(&name));
        if let Some(link) = link {
            let silent = link.silent_for();
            election::heard(replica, *id, silent);
            if silent < lease {
                fresh.insert(*id);
            }
        }
    }
    let heard = voters
        .iter()
        .filter(|id| **id == replica.me || fresh.contains(id))
        .count();
    let in_contact = !voters.is_empty() && heard * 2 > voters.len();
    election::steer(replica, &voters, in_contact, metrics.current_leader);
    match (in_contact, replica.cut_off()) {
        (true, Some(_)) => {
            tracing::info!(node = %replica.name, "in contact with a majority of the cluster's voters: serving");
            replica.set_cut_off(None);
        }
        (false, None) => {
            let reason = format!(
                "{} is cut off from the cluster's majority (it heard from {heard} of {} voters \
                 within {:.1}s): its names are served by the other side",
                replica.name,
                voters.len(),
                lease.as_secs_f64()
            );
            tracing::error!(node = %replica.name, "{reason}; stopping its processes and refusing writes until it is back");
            replica.set_cut_off(Some(reason.clone()));
            let stopped = replica
                .node
                .stop_where(&StopReason::CutOff(reason), |_, _| true);
            tracing::info!(node = %replica.name, "stopped {stopped} processes");
        }
        _ => {}
    }
}

/// How long member `id` has been silent, as this leader judges it: since
/// it last answered Raft as itself while this node leads; before that, the
/// link is the only witness, so a member that went quiet before this node
/// was elected (a cut-off leader) is silent since then, not since the
/// election. A link that carries bytes while this node leads but no Raft
/// answer (a process that is no longer that member) does not count.
fn silent_for(replica: &Replica, id: NodeId, leading_since: Instant, now: Instant) -> Duration {
    let heard = match replica.last_answer(id) {
        Some(at) if at >= leading_since => at,
        _ => election::last_heard(replica, id).map_or(leading_since, |at| at.min(leading_since)),
    };
    now.saturating_duration_since(heard)
}

/// Whether member `id`'s log is within a message of the leader's.
pub(super) fn caught_up(replica: &Replica, id: NodeId) -> bool {
    let metrics = replica.raft.metrics().borrow().clone();
    let last = metrics.last_log_index.unwrap_or(0);
    metrics
        .replication
        .as_ref()
        .and_then(|replication| replication.get(&id))
        .and_then(|matched| matched.map(|log_id| log_id.index))
        .is_some_and(|matched| matched + CAUGHT_UP_SLACK >= last)
}

/// The leader's step: at most one change.
async fn lead(
    replica: &Replica,
    view: &ClusterState,
    leading_since: Instant,
) -> Result<(), String> {
    let now = Instant::now();
    // Looked at once a tick: declared down after `--node-down-after` less a
    // tick of silence, it is declared down within `--node-down-after`. The
    // lease (half of it) still ends well before.
    let down_after = replica
        .settings
        .node_down_after
        .saturating_sub(replica.settings.tick());
    let recently = replica.settings.tick() * 3;
    let mut down = BTreeSet::new();
    let mut back = BTreeMap::new();
    for (id, record) in &view.nodes {
        if *id == replica.me {
            continue;
        }
        let silent = silent_for(replica, *id, leading_since, now);
        if record.up && silent > down_after {
            tracing::warn!(
                node = %replica.name,
                peer = %record.name,
                "declaring {} down: it has not answered for {:.1}s",
                record.name,
                silent.as_secs_f64()
            );
            down.insert(*id);
        } else if !record.up && silent < recently && caught_up(replica, *id) {
            back.insert(*id, record.name.clone());
        }
    }
    if !down.is_empty() || !back.is_empty() {
        propose_placement(replica, |state| {
            let mut nodes: Vec<(NodeId, NodeChange)> =
                down.iter().map(|id| (*id, NodeChange::Down)).collect();
            nodes.extend(
                back.iter()
                    .map(|(id, name)| (*id, NodeChange::Up { name: name.clone() })),
            );
            let up: Vec<NodeId> = state
                .nodes
                .iter()
                .filter(|(id, record)| (record.up && !down.contains(id)) || back.contains_key(id))
                .map(|(id, _)| *id)
                .collect();
            Some(PlacementChange {
                based_on: state.version,
                nodes,
                moves: balance(&state.slots, &up),
            })
        })
        .await?;
        return Ok(());
    }
    if let Some(voters) = desired_voters(replica, view) {
        tracing::info!(node = %replica.name, "voters become {}", names(view, &voters));
        replica
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
            .await
            .map_err(|e| format!("cannot change the voters: {e}"))?;
        return Ok(());
    }
    let up = up_nodes(view);
    if !balance(&view.slots, &up).is_empty() {
        propose_placement(replica, |state| {
            let moves = balance(&state.slots, &up_nodes(state));
            (!moves.is_empty()).then(|| PlacementChange {
                based_on: state.version,
                nodes: Vec::new(),
                moves,
            })
        })
        .await?;
    }
    Ok(())
}

fn up_nodes(state: &ClusterState) -> Vec<NodeId> {
    state
        .nodes
        .iter()
        .filter(|(_, record)| record.up)
        .map(|(id, _)| *id)
        .collect()
}

fn names(view: &ClusterState, ids: &BTreeSet<NodeId>) -> String {
    ids.iter()
        .map(|id| {
            view.name_of(*id)
                .map_or_else(|| id.to_string(), NodeName::to_string)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The voters the cluster should have, when they differ from the current
/// ones: an odd number, at most `--voters`, preferring members that are up,
/// then those that vote already (no churn), then the oldest ids.
fn desired_voters(replica: &Replica, view: &ClusterState) -> Option<BTreeSet<NodeId>> {
    let metrics = replica.raft.metrics().borrow().clone();
    if metrics.state != ServerState::Leader {
        return None;
    }
    let membership = metrics.membership_config.membership();
    // A change left half done (its leader lost, or its step timed out)
    // leaves a joint configuration: finish it first (openraft moves from
    // the joint configuration to its last one).
    if membership.get_joint_config().len() > 1 {
        return membership.get_joint_config().last().cloned();
    }
    let current: BTreeSet<NodeId> = membership.voter_ids().collect();
    let up = |id: &NodeId| view.nodes.get(id).is_some_and(|record| record.up);
    // A member that is down is never made a voter: a vote held by a dead
    // node counts against the majority (with it, the last live voter could
    // not leave). One that votes already may keep its vote while down.
    let mut candidates: Vec<NodeId> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| view.nodes.contains_key(id) && (up(id) || current.contains(id)))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let mut target = replica.settings.max_voters.min(candidates.len()).max(1);
    if target.is_multiple_of(2) {
        target -= 1;
    }
    candidates.sort_by_key(|id| (!up(id), !current.contains(id), *id));
    let desired: BTreeSet<NodeId> = candidates.into_iter().take(target).collect();
    (desired != current).then_some(desired)
}

/// Proposes the placement change `compute` makes from the current state,
/// again if the state changed meanwhile. `Ok(false)` when there was nothing
/// to change.
pub(super) async fn propose_placement(
    replica: &Replica,
    compute: impl Fn(&ClusterState) -> Option<PlacementChange>,
) -> Result<bool, String> {
    for _ in 0..PROPOSAL_ATTEMPTS {
        let Some(change) = compute(&replica.view()) else {
            return Ok(false);
        };
        let write = replica.raft.client_write(Command::Placement(change));
        let response = tokio::time::timeout(replica.settings.write_timeout, write)
            .await
            .map_err(|_| "the placement change did not commit in time".to_string())?
            .map_err(|e| format!("cannot change the placement: {e}"))?;
        match response.data {
            Outcome::Applied => {
                let deadline = Instant::now() + replica.settings.write_timeout;
                replica.wait_applied(response.log_id.index, deadline).await;
                return Ok(true);
            }
            Outcome::Refused(_) => {
                let deadline = Instant::now() + replica.settings.write_timeout;
                replica.wait_applied(response.log_id.index, deadline).await;
            }
        }
    }
    Err("the placement kept changing; will try again".into())
}

/// Acts on each newly applied placement: stops the processes of slots that
/// moved away, keeps the mesh linked to the members, logs member changes.
async fn follow_placement(replica: Arc<Replica>, stop: CancellationToken) {
    let mut view = replica.published.view.subscribe();
    let mut previous = view.borrow_and_update().clone();
    want_members(&replica, &previous);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
        }
        let current = view.borrow_and_update().clone();
        let lost: HashSet<u16> = previous
            .slots
            .iter()
            .enumerate()
            .filter(|(index, before)| {
                before.node == replica.me && current.slots.get(*index) != Some(before)
            })
            .map(|(index, _)| index as u16)
            .collect();
        if !lost.is_empty() {
            let stopped = replica.node.stop_where(&StopReason::Moved, |_, fence| {
                fence.is_some_and(|fence| lost.contains(&fence.slot))
            });
            tracing::debug!(node = %replica.name, "{} slots moved away; {stopped} processes stopped", lost.len());
        }
        log_member_changes(&replica, &previous, &current);
        want_members(&replica, &current);
        previous = current;
    }
}

fn want_members(replica: &Replica, state: &ClusterState) {
    replica
        .mesh
        .want(state.nodes.values().map(|record| record.name.clone()));
}

fn log_member_changes(replica: &Replica, before: &ClusterState, after: &ClusterState) {
    for (id, record) in &after.nodes {
        match before.nodes.get(id) {
            None => {
                tracing::info!(node = %replica.name, peer = %record.name, "{} joined the cluster", record.name)
            }
            // Applied by the node itself once it is back (it was cut off
            // meanwhile): not another member's death.
            Some(old) if old.up && !record.up && *id == replica.me => {
                tracing::warn!(node = %replica.name, "the others declared this node down while it was cut off: its names started on them");
            }
            Some(old) if old.up && !record.up => {
                replica.nodes_down.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %replica.name, peer = %record.name, "{} is down: its names start on the other nodes", record.name);
            }
            Some(old) if !old.up && record.up && *id == replica.me => {
                tracing::info!(node = %replica.name, "this node is up again in the cluster")
            }
            Some(old) if !old.up && record.up => {
                tracing::info!(node = %replica.name, peer = %record.name, "{} is back up", record.name)
            }
            _ => {}
        }
    }
    for (id, record) in &before.nodes {
        if !after.nodes.contains_key(id) {
            tracing::info!(node = %replica.name, peer = %record.name, "{} left the cluster", record.name);
        }
    }
}
