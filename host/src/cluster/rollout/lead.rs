//! The leader's part of a rollout: one step at a time, every tick, from
//! the record alone, so a new leader goes on where the last one stopped.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{NodeStep, Phase, Rollout, RolloutStep};
use crate::cluster::replica::Replica;
use crate::cluster::types::{ClusterState, Command, NodeId};
use crate::cluster::wire::WriteReply;

/// On the leader, every tick: proposes each rollout's next step.
pub(in crate::cluster) async fn lead(replica: Arc<Replica>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(replica.settings.tick());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if !replica.is_leader() || replica.cut_off().is_some() {
            continue;
        }
        let view = replica.view();
        let rollouts = replica.published.rollouts.borrow().clone();
        for rollout in rollouts.by_component.values() {
            let Some(step) = next_step(rollout, |id| is_up(&view, id)) else {
                continue;
            };
            tracing::debug!(component = %rollout.component, "rollout step: {step:?}");
            match replica.submit(Command::Rollout(step)).await {
                WriteReply::Committed { .. } => {}
                other => {
                    tracing::debug!(component = %rollout.component, "rollout step not taken: {other:?}")
                }
            }
        }
    }
}

/// Whether member `id` is in the cluster and up.
fn is_up(view: &ClusterState, id: NodeId) -> bool {
    view.nodes.get(&id).is_some_and(|record| record.up)
}

/// What the leader proposes next for `rollout`, given which nodes are up:
/// roll back as soon as one node failed (also once every node swapped,
/// until it is committed); defer a node that is down (it
/// swaps when it is back); finish once every node swapped or is deferred;
/// otherwise ask the next node once no other is swapping (all pending ones
/// at once for an all-at-once rollout).
pub(super) fn next_step(rollout: &Rollout, up: impl Fn(NodeId) -> bool) -> Option<RolloutStep> {
    if !matches!(rollout.phase, Phase::Rolling | Phase::Swapped) {
        return None;
    }
    let id = rollout.id;
    if let Some((_, name, NodeStep::Failed(reason))) = rollout
        .nodes
        .iter()
        .find(|(_, _, step)| matches!(step, NodeStep::Failed(_)))
    {
        return Some(RolloutStep::RollBack {
            id,
            reason: format!("{name} could not swap: {reason}"),
        });
    }
    if rollout.phase == Phase::Swapped {
        return None;
    }
    if let Some((node, _, _)) = rollout
        .nodes
        .iter()
        .find(|(node, _, step)| matches!(step, NodeStep::Pending | NodeStep::Asked) && !up(*node))
    {
        return Some(RolloutStep::Defer { id, node: *node });
    }
    if rollout
        .nodes
        .iter()
        .all(|(_, _, step)| matches!(step, NodeStep::Swapped(_) | NodeStep::Deferred))
    {
        return Some(RolloutStep::Finish { id });
    }
    if rollout
        .nodes
        .iter()
        .any(|(_, _, step)| *step == NodeStep::Asked)
    {
        return None;
    }
    let pending = rollout
        .nodes
        .iter()
        .filter(|(_, _, step)| *step == NodeStep::Pending)
        .map(|(node, _, _)| *node);
    let nodes: Vec<NodeId> = if rollout.options.all_at_once {
        pending.collect()
    } else {
        pending.take(1).collect()
    };
    (!nodes.is_empty()).then_some(RolloutStep::Ask { id, nodes })
}
