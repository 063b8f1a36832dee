//! A swap across the cluster: a *rollout*, recorded in the Raft log
//! (ARCHITECTURE.md, "Hot swap", "On a cluster").
//!
//! Every step of a rollout is a [`RolloutStep`] in the log, and applying
//! the log gives every node the same [`Rollout`] record per component:
//! the version it moves to (its bytes are in the `Start` entry, stored by
//! hash in the data column family under the host's own keys, so snapshots
//! carry them to a node that joins late), each node's step, and the phase.
//! The rules of which step may follow which are here, pure, and decide
//! alike on every node; who proposes them is elsewhere:
//!
//! - `lead`: the leader advances a rolling rollout one node at a time (or
//!   all at once), defers nodes that are down, and rolls back every node
//!   when one fails;
//! - `follow`: every node makes its own versions agree with the record (it
//!   runs the local swap from the bytes in its own storage, promotes,
//!   rolls back, commits) and reports how its swap went;
//! - `operate`: what the operator's `swap`, `promote`, `rollback`,
//!   `commit` and `versions` do in a cluster.

mod follow;
mod lead;
mod operate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub(super) use follow::follow;
pub(super) use lead::lead;
pub use operate::RolloutView;

use super::types::NodeId;
use crate::storage::Operation;

/// Where the rollout records are kept in the data column family: no
/// component's key starts with `\0` (a component's name is never empty),
/// so no guest can read or write them.
const RECORD_PREFIX: &[u8] = b"\0rollout\0";
/// Where the versions' bytes are kept: `\0version\0COMPONENT\0HASH`.
const BYTES_PREFIX: &[u8] = b"\0version\0";
/// Versions whose bytes the cluster keeps per component: the one rolled
/// out last and three before it, as a node keeps three committed ones.
const BYTES_KEPT: usize = 4;
/// Largest version a rollout carries through the log.
pub const MAX_VERSION_BYTES: usize = 16 << 20;

/// A version as the cluster names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRef {
    pub hash: [u8; 32],
    pub label: String,
}

/// What the operator asked of the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutOptions {
    /// Percent of names (and of HTTP requests) on each node that move
    /// first; 100: all.
    pub canary: u8,
    /// A node's swap rolls back by itself past this percent of failures.
    pub max_failures: u8,
    /// The version is older: states are handed down.
    pub down: bool,
    /// Every node at once rather than one after another.
    pub all_at_once: bool,
    /// Committed as soon as every node has swapped.
    pub commit: bool,
}

/// Where one node is in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStep {
    /// Not asked yet: it runs the old version.
    Pending,
    /// Asked to swap; its answer is awaited.
    Asked,
    /// Down when its turn came (or while asked): it swaps when it is back.
    Deferred,
    /// Swapped, with what its swap did.
    Swapped(String),
    /// Its swap was refused or rolled back by itself, with the reason.
    Failed(String),
}

/// Where the rollout as a whole is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Nodes are being swapped.
    Rolling,
    /// Every node swapped (or will when back): awaiting `commit`.
    Swapped,
    /// Done: the version is the cluster's; a node that starts later takes
    /// it over the file it was given.
    Committed,
    /// Every node went back to the version it ran, with the reason.
    RolledBack(String),
}

/// A rollout of one component, as every node has applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The log index of its `Start`.
    pub id: u64,
    pub component: String,
    pub to: VersionRef,
    /// The label of the version the node that issued it ran.
    pub from_label: String,
    pub issued_on: String,
    pub options: RolloutOptions,
    /// In rollout order: id, name, step.
    pub nodes: Vec<(NodeId, String, NodeStep)>,
    pub phase: Phase,
    /// The hashes of the versions whose bytes the cluster keeps for this
    /// component, newest first.
    pub kept_bytes: Vec<[u8; 32]>,
}

/// One step of a rollout: an entry of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RolloutStep {
    /// A rollout begins, carrying its version's bytes.
    Start {
        component: String,
        to: VersionRef,
        from_label: String,
        issued_on: String,
        bytes: Vec<u8>,
        options: RolloutOptions,
        nodes: Vec<(NodeId, String)>,
    },
    /// These nodes swap now.
    Ask { id: u64, nodes: Vec<NodeId> },
    /// This node is down: it swaps when it is back.
    Defer { id: u64, node: NodeId },
    /// A node says how its swap went.
    Report {
        id: u64,
        node: NodeId,
        outcome: Result<String, String>,
    },
    /// Every node swapped or deferred.
    Finish { id: u64 },
    /// A canary widens to every process.
    Promote { id: u64 },
    /// The version becomes the cluster's.
    Commit { id: u64 },
    /// Every node goes back.
    RollBack { id: u64, reason: String },
}

impl RolloutStep {
    /// The component it is about, and the rollout (none for a start).
    fn target(&self) -> (Option<&str>, Option<u64>) {
        match self {
            Self::Start { component, .. } => (Some(component), None),
            Self::Ask { id, .. }
            | Self::Defer { id, .. }
            | Self::Report { id, .. }
            | Self::Finish { id }
            | Self::Promote { id }
            | Self::Commit { id }
            | Self::RollBack { id, .. } => (None, Some(*id)),
        }
    }
}

/// Every component's latest rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollouts {
    pub by_component: BTreeMap<String, Rollout>,
}

impl Rollouts {
    /// The rollouts stored in the data column family, from its `\0rollout\0`
    /// keys.
    pub fn from_records(records: impl IntoIterator<Item = Vec<u8>>) -> Result<Self, String> {
        let mut by_component = BTreeMap::new();
        for record in records {
            let rollout: Rollout = postcard::from_bytes(&record)
                .map_err(|e| format!("a rollout record is unreadable: {e}"))?;
            by_component.insert(rollout.component.clone(), rollout);
        }
        Ok(Self { by_component })
    }

    /// The rollout `id`.
    pub fn by_id(&self, id: u64) -> Option<&Rollout> {
        self.by_component.values().find(|rollout| rollout.id == id)
    }

    /// Applies `step` at log `index`: the storage writes it makes (the
    /// record, and bytes stored or dropped), or why it is refused (a step
    /// that does not follow from the record changes nothing).
    pub fn apply(&mut self, index: u64, step: &RolloutStep) -> Result<Vec<Operation>, String> {
        let rollout = match step.target() {
            (Some(component), _) => {
                let previous = self.by_component.get(component);
                if let Some(previous) = previous.filter(|p| !p.is_over()) {
                    return Err(format!(
                        "a rollout of `{component}` to {} is under way: promote, roll back or \
                         commit it first",
                        previous.to.label
                    ));
                }
                let RolloutStep::Start {
                    component,
                    to,
                    from_label,
                    issued_on,
                    bytes,
                    options,
                    nodes,
                } = step
                else {
                    return Err("not a start".into());
                };
                let mut kept_bytes = vec![to.hash];
                if let Some(previous) = previous {
                    kept_bytes.extend(previous.kept_bytes.iter().filter(|h| **h != to.hash));
                }
                let dropped = kept_bytes.split_off(kept_bytes.len().min(BYTES_KEPT));
                let first = if options.all_at_once {
                    NodeStep::Asked
                } else {
                    NodeStep::Pending
                };
                let rollout = Rollout {
                    id: index,
                    component: component.clone(),
                    to: to.clone(),
                    from_label: from_label.clone(),
                    issued_on: issued_on.clone(),
                    options: *options,
                    nodes: nodes
                        .iter()
                        .map(|(id, name)| (*id, name.clone(), first.clone()))
                        .collect(),
                    phase: Phase::Rolling,
                    kept_bytes,
                };
                let mut writes = vec![Operation::Put(
                    bytes_key(component, &to.hash),
                    bytes.clone(),
                )];
                writes.extend(
                    dropped
                        .iter()
                        .map(|hash| Operation::Delete(bytes_key(component, hash))),
                );
                return Ok(self.store(rollout, writes));
            }
            (None, Some(id)) => self
                .by_id(id)
                .cloned()
                .ok_or_else(|| format!("rollout {id} is not the latest of its component"))?,
            (None, None) => return Err("a step that names no rollout".into()),
        };
        let mut rollout = rollout;
        advance(&mut rollout, step)?;
        Ok(self.store(rollout, Vec::new()))
    }

    /// Keeps `rollout` as its component's, adding its record to `writes`.
    fn store(&mut self, rollout: Rollout, mut writes: Vec<Operation>) -> Vec<Operation> {
        writes.push(Operation::Put(
            record_key(&rollout.component),
            postcard::to_allocvec(&rollout).unwrap_or_default(),
        ));
        self.by_component.insert(rollout.component.clone(), rollout);
        writes
    }
}

/// Applies a step other than a start to `rollout`.
fn advance(rollout: &mut Rollout, step: &RolloutStep) -> Result<(), String> {
    let phase = rollout.phase.clone();
    match step {
        RolloutStep::Start { .. } => return Err("not a step of a rollout under way".into()),
        RolloutStep::Ask { nodes, .. } => {
            require(phase == Phase::Rolling, "only a rolling rollout asks nodes")?;
            for node in nodes {
                let step = rollout.step_mut(*node)?;
                require(*step == NodeStep::Pending, "only a pending node is asked")?;
                *step = NodeStep::Asked;
            }
        }
        RolloutStep::Defer { node, .. } => {
            require(
                phase == Phase::Rolling,
                "only a rolling rollout defers nodes",
            )?;
            let step = rollout.step_mut(*node)?;
            require(
                matches!(step, NodeStep::Pending | NodeStep::Asked),
                "only a pending or asked node is deferred",
            )?;
            *step = NodeStep::Deferred;
        }
        RolloutStep::Report { node, outcome, .. } => {
            require(
                !matches!(phase, Phase::RolledBack(_)),
                "the rollout was rolled back",
            )?;
            let step = rollout.step_mut(*node)?;
            match outcome {
                Ok(summary) => {
                    require(
                        matches!(step, NodeStep::Asked | NodeStep::Deferred),
                        "only an asked or deferred node reports a swap",
                    )?;
                    *step = NodeStep::Swapped(summary.clone());
                }
                Err(reason) => {
                    require(
                        !matches!(step, NodeStep::Pending | NodeStep::Failed(_)),
                        "a node reports a failure of a swap it was asked for",
                    )?;
                    *step = NodeStep::Failed(reason.clone());
                }
            }
        }
        RolloutStep::Finish { .. } => {
            require(phase == Phase::Rolling, "only a rolling rollout finishes")?;
            require(
                rollout
                    .nodes
                    .iter()
                    .all(|(_, _, step)| matches!(step, NodeStep::Swapped(_) | NodeStep::Deferred)),
                "every node has not swapped yet",
            )?;
            rollout.phase = if rollout.options.commit && rollout.options.canary == 100 {
                Phase::Committed
            } else {
                Phase::Swapped
            };
        }
        RolloutStep::Promote { .. } => {
            require(
                matches!(phase, Phase::Rolling | Phase::Swapped),
                "only a rollout under way is promoted",
            )?;
            require(
                rollout.options.canary < 100,
                "it moves every process already",
            )?;
            rollout.options.canary = 100;
        }
        RolloutStep::Commit { .. } => {
            require(
                phase == Phase::Swapped,
                "only a rollout every node has swapped is committed",
            )?;
            require(
                rollout.options.canary == 100,
                "it is a canary: promote it first, or roll it back",
            )?;
            rollout.phase = Phase::Committed;
        }
        RolloutStep::RollBack { reason, .. } => {
            require(
                matches!(phase, Phase::Rolling | Phase::Swapped),
                "only a rollout under way is rolled back",
            )?;
            rollout.phase = Phase::RolledBack(reason.clone());
        }
    }
    Ok(())
}

fn require(condition: bool, otherwise: &str) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(otherwise.to_string())
    }
}

impl Rollout {
    /// Committed or rolled back: another may start.
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Committed | Phase::RolledBack(_))
    }

    /// Node `id`'s step.
    pub fn step_of(&self, id: NodeId) -> Option<&NodeStep> {
        self.nodes
            .iter()
            .find(|(node, _, _)| *node == id)
            .map(|(_, _, step)| step)
    }

    fn step_mut(&mut self, id: NodeId) -> Result<&mut NodeStep, String> {
        self.nodes
            .iter_mut()
            .find(|(node, _, _)| *node == id)
            .map(|(_, _, step)| step)
            .ok_or_else(|| format!("node {id} is not part of the rollout"))
    }
}

/// The key of `component`'s rollout record.
fn record_key(component: &str) -> Vec<u8> {
    [RECORD_PREFIX, component.as_bytes()].concat()
}

/// The prefix of every rollout record.
pub(super) fn record_prefix() -> &'static [u8] {
    RECORD_PREFIX
}

/// The key of the bytes of `component`'s version `hash`.
pub(super) fn bytes_key(component: &str, hash: &[u8; 32]) -> Vec<u8> {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    [BYTES_PREFIX, component.as_bytes(), b"\0", hex.as_bytes()].concat()
}

#[cfg(test)]
mod tests;
