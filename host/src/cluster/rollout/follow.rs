//! Every node's part of a rollout: make this node's versions of each
//! component agree with the record, and say how its swap went. It runs the
//! node's own swap (`ClusterAccess::swap`) on the bytes in its own storage,
//! so a node swaps exactly as a lone node does, checks and dry run
//! included.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{NodeStep, Phase, Rollout, RolloutStep, bytes_key};
use crate::cluster::replica::Replica;
use crate::cluster::types::Command;
use crate::node::{LocalVersions, SwapOptions, VersionSource};
use crate::storage::Family;

/// How often a node looks at its swaps besides when a record changes (a
/// sweep ends, a swap rolls back by itself).
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Follows every rollout on this node until `stop`.
pub(in crate::cluster) async fn follow(replica: Arc<Replica>, stop: CancellationToken) {
    let mut records = replica.published.rollouts.subscribe();
    let mut follower = Follower {
        replica,
        started: HashMap::new(),
    };
    let mut ticks = tokio::time::interval(LOOK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = records.changed() => {}
            _ = ticks.tick() => {}
        }
        // Cut off, it could not report; its processes are stopped anyway.
        if follower.replica.cut_off().is_some() {
            continue;
        }
        let rollouts = records.borrow_and_update().clone();
        for rollout in rollouts.by_component.values() {
            let Some(report) = follower.follow(rollout).await else {
                continue;
            };
            let replica = &follower.replica;
            if let Err(error) = replica.propose(Command::Rollout(report)).await {
                tracing::warn!(node = %replica.name, component = %rollout.component, "cannot report this node's swap (it tries again): {error}");
            }
        }
    }
}

struct Follower {
    replica: Arc<Replica>,
    /// The rollout each component's local swap was started for, by this
    /// run of the node: a swap that is gone without reaching its version
    /// was refused or rolled back by itself.
    started: HashMap<String, u64>,
}

impl Follower {
    /// Makes this node's versions of `rollout`'s component agree with it;
    /// returns the report to make, if any.
    async fn follow(&mut self, rollout: &Rollout) -> Option<RolloutStep> {
        let node = &self.replica.node;
        let component = rollout.component.as_str();
        let local = node.local_versions(component)?;
        let to = rollout.to.hash;
        let step = rollout.step_of(self.replica.me);
        let report = |outcome| {
            Some(RolloutStep::Report {
                id: rollout.id,
                node: self.replica.me,
                outcome,
            })
        };
        let swapping = local.swap.as_ref().filter(|swap| swap.to == to);
        match &rollout.phase {
            Phase::RolledBack(reason) => {
                if swapping.is_some() {
                    let why = format!("the cluster's rollout rolled back: {reason}");
                    self.log(component, node.rollback(component, &why));
                }
                None
            }
            Phase::Committed => {
                if swapping.is_some() {
                    if swapping.is_some_and(|swap| swap.share < 100) {
                        self.log(component, node.promote(component));
                    }
                    self.log(component, node.commit(component));
                } else if local.current != to
                    && local.swap.is_none()
                    && self.started.get(component) != Some(&rollout.id)
                {
                    // A node that was away, or joined since: it takes the
                    // cluster's version over the one it was started with.
                    self.started.insert(component.to_string(), rollout.id);
                    let outcome = self.swap(rollout, true).await;
                    self.log(component, outcome.clone());
                    return asked(step).then(|| report(outcome)).flatten();
                }
                (local.current == to && asked(step))
                    .then(|| report(Ok("runs it".into())))
                    .flatten()
            }
            Phase::Rolling | Phase::Swapped => {
                if !matches!(
                    step,
                    Some(NodeStep::Asked | NodeStep::Deferred | NodeStep::Swapped(_))
                ) {
                    return None;
                }
                if let Some(swap) = swapping {
                    if rollout.options.canary == 100 && swap.share < 100 {
                        self.log(component, node.promote(component));
                        return None;
                    }
                    return (swap.swept && asked(step))
                        .then(|| report(Ok(swap.summary.clone())))
                        .flatten();
                }
                if local.current == to {
                    return asked(step)
                        .then(|| report(Ok("runs it already".into())))
                        .flatten();
                }
                if local.swap.is_some() {
                    // Its own swap to another version: it ends first.
                    return None;
                }
                if self.started.get(component) == Some(&rollout.id) {
                    return report(Err(ended(&local)));
                }
                self.started.insert(component.to_string(), rollout.id);
                match self.swap(rollout, false).await {
                    Ok(said) => {
                        tracing::info!(node = %self.replica.name, component, "{said}");
                        None
                    }
                    Err(reason) => report(Err(reason)),
                }
            }
        }
    }

    /// Runs this node's swap to `rollout`'s version, from the bytes in its
    /// own storage.
    async fn swap(&self, rollout: &Rollout, commit: bool) -> Result<String, String> {
        let key = bytes_key(&rollout.component, &rollout.to.hash);
        let bytes = match self.replica.node.store().get(Family::Data, &key) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(format!(
                    "the bytes of version {} are not in this node's storage",
                    rollout.to.label
                ));
            }
            Err(error) => return Err(format!("cannot read version {}: {error}", rollout.to.label)),
        };
        let options = SwapOptions {
            source: VersionSource::Bytes {
                bytes: Arc::from(bytes),
                origin: format!("version {} from the cluster's log", rollout.to.label),
            },
            label: Some(rollout.to.label.clone()),
            canary: rollout.options.canary,
            max_failures: rollout.options.max_failures,
            down: rollout.options.down,
            commit,
        };
        self.replica.node.swap(&rollout.component, options).await
    }

    fn log(&self, component: &str, outcome: Result<String, String>) {
        match outcome {
            Ok(said) => tracing::info!(node = %self.replica.name, component, "{said}"),
            Err(reason) => tracing::warn!(node = %self.replica.name, component, "{reason}"),
        }
    }
}

/// Whether the node's step awaits its report.
fn asked(step: Option<&NodeStep>) -> bool {
    matches!(step, Some(NodeStep::Asked | NodeStep::Deferred))
}

/// Why a local swap this node started is gone without reaching its version.
fn ended(local: &LocalVersions) -> String {
    local
        .last
        .clone()
        .unwrap_or_else(|| "its swap ended without reaching the version".into())
}
