//! What an operator's `swap`, `promote`, `rollback`, `commit` and
//! `versions` do on a member: each is one step proposed to the log,
//! whichever node it is typed on.

use std::time::Duration;

use tokio::time::Instant;

use super::{MAX_VERSION_BYTES, NodeStep, Phase, Rollout, RolloutOptions, RolloutStep, VersionRef};
use crate::cluster::Cluster;
use crate::cluster::types::Command;
use crate::node::CheckedVersion;

/// Longest `swap --commit` waits for a rollout to be committed or rolled
/// back.
const COMMIT_WAIT: Duration = Duration::from_secs(900);

/// A component's latest rollout, as `versions` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutView {
    pub component: String,
    /// Its lines: the rollout, then each node.
    pub lines: Vec<String>,
}

impl Cluster {
    /// Records a swap of `component` to `version` (read and checked on this
    /// node) for every member, and says what it started; with `commit`,
    /// waits until the rollout is committed or rolled back.
    pub async fn roll_out(
        &self,
        component: &str,
        version: CheckedVersion,
        options: RolloutOptions,
    ) -> Result<String, String> {
        let replica = self.active.get().ok_or("not in a cluster")?;
        if version.bytes.len() > MAX_VERSION_BYTES {
            return Err(format!(
                "the version is {} bytes: a cluster rolls out at most {MAX_VERSION_BYTES} \
                 (it travels in the Raft log)",
                version.bytes.len()
            ));
        }
        let mut nodes: Vec<(u64, String)> = replica
            .view()
            .nodes
            .iter()
            .map(|(id, record)| (*id, record.name.to_string()))
            .collect();
        nodes.sort_by(|a, b| a.1.cmp(&b.1));
        let to = VersionRef {
            hash: version.hash,
            label: version.label.clone(),
        };
        let start = RolloutStep::Start {
            component: component.to_string(),
            to,
            from_label: version.from_label.clone(),
            issued_on: replica.name.to_string(),
            bytes: version.bytes,
            options,
            nodes: nodes.clone(),
        };
        replica
            .propose(Command::Rollout(start))
            .await
            .map_err(|e| format!("the rollout was not recorded: {e}"))?;
        let mode = if options.all_at_once {
            "every node at once"
        } else {
            "one node at a time, the next once the last has swapped"
        };
        let names: Vec<&str> = nodes.iter().map(|(_, name)| name.as_str()).collect();
        let started = format!(
            "rolling {component} out from {} to {} on {} ({mode}); `versions` on any node \
             shows where it is",
            version.from_label,
            version.label,
            names.join(", ")
        );
        if !options.commit {
            return Ok(started);
        }
        let ended = self.wait_for_end(component).await?;
        match ended.phase {
            Phase::Committed => Ok(format!(
                "{started}\ncommitted: every node runs {}",
                ended.to.label
            )),
            Phase::RolledBack(reason) => Err(format!("{started}\nrolled back: {reason}")),
            _ => Err(format!(
                "{started}\nnot committed within {COMMIT_WAIT:?}: `versions` shows where it is"
            )),
        }
    }

    /// `component`'s rollout once it is over (or as it is at the deadline).
    async fn wait_for_end(&self, component: &str) -> Result<Rollout, String> {
        let replica = self.active.get().ok_or("not in a cluster")?;
        let mut records = replica.published.rollouts.subscribe();
        let deadline = Instant::now() + COMMIT_WAIT;
        loop {
            let latest = records
                .borrow_and_update()
                .by_component
                .get(component)
                .cloned()
                .ok_or_else(|| format!("no rollout of `{component}` is recorded"))?;
            if latest.is_over() {
                return Ok(latest);
            }
            if tokio::time::timeout_at(deadline, records.changed())
                .await
                .is_err()
            {
                return Ok(latest);
            }
        }
    }

    /// Whether a rollout of `component` is under way in the cluster.
    pub fn rolling_out(&self, component: &str) -> bool {
        self.latest_rollout(component)
            .is_some_and(|rollout| !rollout.is_over())
    }

    fn latest_rollout(&self, component: &str) -> Option<Rollout> {
        let replica = self.active.get()?;
        let rollouts = replica.published.rollouts.borrow();
        rollouts.by_component.get(component).cloned()
    }

    /// Proposes the step `make` builds for `component`'s rollout under way.
    async fn step(
        &self,
        component: &str,
        make: impl FnOnce(u64) -> RolloutStep,
        done: &str,
    ) -> Result<String, String> {
        let replica = self.active.get().ok_or("not in a cluster")?;
        let rollout = self
            .latest_rollout(component)
            .filter(|rollout| !rollout.is_over())
            .ok_or_else(|| format!("no rollout of `{component}` is under way"))?;
        replica
            .propose(Command::Rollout(make(rollout.id)))
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "{component}'s rollout to {}: {done}",
            rollout.to.label
        ))
    }

    /// Widens a canary rollout to every process on every node.
    pub async fn promote_rollout(&self, component: &str) -> Result<String, String> {
        self.step(
            component,
            |id| RolloutStep::Promote { id },
            "every process moves, on every node",
        )
        .await
    }

    /// Every node goes back to the version it ran.
    pub async fn roll_back_rollout(&self, component: &str) -> Result<String, String> {
        let reason = format!("rolled back by an operator on {}", self.me());
        self.step(
            component,
            |id| RolloutStep::RollBack { id, reason },
            "rolled back: every node moves its processes back",
        )
        .await
    }

    /// The version becomes the cluster's.
    pub async fn commit_rollout(&self, component: &str) -> Result<String, String> {
        self.step(
            component,
            |id| RolloutStep::Commit { id },
            "committed: every node runs it, and so will a node that starts later",
        )
        .await
    }

    /// Every component's latest rollout, for `versions`.
    pub fn rollouts(&self) -> Vec<RolloutView> {
        let Some(replica) = self.active.get() else {
            return Vec::new();
        };
        let rollouts = replica.published.rollouts.borrow().clone();
        rollouts.by_component.values().map(describe).collect()
    }
}

/// A rollout as `versions` shows it.
fn describe(rollout: &Rollout) -> RolloutView {
    let phase = match &rollout.phase {
        Phase::Rolling => "rolling".to_string(),
        Phase::Swapped => "every node swapped; awaiting commit (or rollback)".to_string(),
        Phase::Committed => "committed".to_string(),
        Phase::RolledBack(reason) => format!("rolled back: {reason}"),
    };
    let options = &rollout.options;
    let mut how = vec![
        if options.all_at_once {
            "all at once"
        } else {
            "one node at a time"
        }
        .to_string(),
    ];
    if options.canary < 100 {
        how.push(format!("canary {}%", options.canary));
    }
    if options.down {
        how.push("down".into());
    }
    let mut lines = vec![format!(
        "cluster: {} to {}, issued on {} ({}): {phase}",
        rollout.from_label,
        rollout.to.label,
        rollout.issued_on,
        how.join(", ")
    )];
    lines.extend(rollout.nodes.iter().map(|(_, name, step)| {
        let step = match step {
            NodeStep::Pending => "pending".to_string(),
            NodeStep::Asked => "swapping".to_string(),
            NodeStep::Deferred => "down when its turn came: swaps when it is back".to_string(),
            NodeStep::Swapped(summary) => format!("swapped: {summary}"),
            NodeStep::Failed(reason) => format!("failed: {reason}"),
        };
        format!("  {name}: {step}")
    }));
    RolloutView {
        component: rollout.component.clone(),
        lines,
    }
}
