//! What the cluster's Raft log holds, and the replicated state it builds.
//!
//! Every entry is a [`Command`]. Applying the log in order on every node
//! gives every node the same [`ClusterState`] (who is in the cluster, and
//! which node holds which slot of names) and the same data in RocksDB.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::rollout::RolloutStep;
use crate::distribution::NodeName;
pub use crate::process::Fence;
use crate::storage::Operation;

/// A node's identity in the Raft group: random, made when its data
/// directory first joins a cluster, so a node whose data was wiped comes
/// back as a new node rather than as a voter that forgot what it promised.
pub type NodeId = u64;

/// Slots of the name space: a name belongs to slot `hash(name) % SLOTS`,
/// and each slot is held by one node. Placement moves slots, not names, so
/// a new name costs no consensus round.
pub const SLOTS: u16 = 1024;

openraft::declare_raft_types!(
    /// The Raft type configuration of the cluster.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A member of the Raft group, as the group knows it: by name, so its
/// address is found through the port mapper each time it is dialled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// One entry of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// The cluster is created: the founder holds every slot.
    Found {
        cluster_id: u128,
        founder: NodeId,
        name: NodeName,
    },
    /// Storage writes, all or nothing.
    Write(Write),
    /// Nodes come, go, and slots move.
    Placement(PlacementChange),
    /// A step of a swap across the cluster (applied by the state machine's
    /// `Rollouts`, not by [`ClusterState`]).
    Rollout(RolloutStep),
}

/// A batch of storage writes (keys already carry their component's
/// namespace).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Write {
    pub operations: Vec<Operation>,
    /// Set for writes made by a process: they are applied only if the
    /// process's node still holds its name's slot, at the same epoch.
    pub fence: Option<Fence>,
}

/// A change of membership status and of slot owners, applied atomically.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlacementChange {
    /// The placement version it was computed from: applied only if it is
    /// still the current one, so two proposals never undo each other.
    pub based_on: u64,
    pub nodes: Vec<(NodeId, NodeChange)>,
    pub moves: Vec<(u16, NodeId)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeChange {
    /// Joined, or answering again.
    Up { name: NodeName },
    /// Silent past `--node-down-after`.
    Down,
    /// Left the cluster.
    Gone,
}

/// What applying an entry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    /// Not applied; says why (a fenced write, a stale placement change).
    Refused(String),
}

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: NodeName,
    pub up: bool,
}

/// Who holds a slot, since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub node: NodeId,
    /// The log index of the entry that gave it this owner: a process keeps
    /// it as its fence token.
    pub epoch: u64,
}

/// The replicated state besides the data: the same on every node once it
/// has applied the same log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster_id: Option<u128>,
    /// Log index of the last placement change.
    pub version: u64,
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Empty until the cluster is founded, then [`SLOTS`] long.
    pub slots: Vec<Slot>,
}

impl ClusterState {
    /// Whether a write's fence is current.
    pub fn fence_holds(&self, fence: &Fence) -> bool {
        self.slots
            .get(usize::from(fence.slot))
            .is_some_and(|slot| slot.node == fence.node && slot.epoch == fence.epoch)
    }

    /// The name of node `id`.
    pub fn name_of(&self, id: NodeId) -> Option<&NodeName> {
        self.nodes.get(&id).map(|record| &record.name)
    }

    /// The id of the node named `name`.
    pub fn id_of(&self, name: &NodeName) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, record)| record.name == *name)
            .map(|(id, _)| *id)
    }

    /// Applies `command` at log `index`, saying what it did.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::Found {
                cluster_id,
                founder,
                name,
            } => {
                if self.cluster_id.is_some() {
                    return Outcome::Refused("the cluster is already founded".into());
                }
                self.cluster_id = Some(*cluster_id);
                self.version = index;
                self.nodes.insert(
                    *founder,
                    NodeRecord {
                        name: name.clone(),
                        up: true,
                    },
                );
                self.slots = vec![
                    Slot {
                        node: *founder,
                        epoch: index,
                    };
                    usize::from(SLOTS)
                ];
                Outcome::Applied
            }
            Command::Write(write) => match &write.fence {
                Some(fence) if !self.fence_holds(fence) => Outcome::Refused(
                    "the writing process no longer holds its name (it moved to another node)"
                        .into(),
                ),
                _ => Outcome::Applied,
            },
            Command::Placement(change) => {
                if change.based_on != self.version {
                    return Outcome::Refused("placement changed meanwhile".into());
                }
                for (id, node_change) in &change.nodes {
                    match node_change {
                        NodeChange::Up { name } => {
                            self.nodes.insert(
                                *id,
                                NodeRecord {
                                    name: name.clone(),
                                    up: true,
                                },
                            );
                        }
                        NodeChange::Down => {
                            if let Some(record) = self.nodes.get_mut(id) {
                                record.up = false;
                            }
                        }
                        NodeChange::Gone => {
                            self.nodes.remove(id);
                        }
                    }
                }
                for (slot, node) in &change.moves {
                    if let Some(slot) = self.slots.get_mut(usize::from(*slot)) {
                        *slot = Slot {
                            node: *node,
                            epoch: index,
                        };
                    }
                }
                self.version = index;
                Outcome::Applied
            }
            // The state machine applies it to its rollouts.
            Command::Rollout(_) => Outcome::Applied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn founded() -> ClusterState {
        let mut state = ClusterState::default();
        let name = NodeName::parse("a@h").expect("name");
        let found = Command::Found {
            cluster_id: 7,
            founder: 1,
            name,
        };
        assert_eq!(state.apply(3, &found), Outcome::Applied);
        state
    }

    #[test]
    fn a_write_from_a_registration_that_moved_is_refused() {
        let mut state = founded();
        let fence = Fence {
            slot: 5,
            node: 1,
            epoch: 3,
        };
        let write = Command::Write(Write {
            operations: Vec::new(),
            fence: Some(fence),
        });
        assert_eq!(state.apply(4, &write), Outcome::Applied);
        let name = NodeName::parse("b@h").expect("name");
        let moved = Command::Placement(PlacementChange {
            based_on: 3,
            nodes: vec![(2, NodeChange::Up { name })],
            moves: vec![(5, 2)],
        });
        assert_eq!(state.apply(5, &moved), Outcome::Applied);
        assert!(matches!(state.apply(6, &write), Outcome::Refused(_)));
        // The new holder's fence carries the move's index.
        assert!(state.fence_holds(&Fence {
            slot: 5,
            node: 2,
            epoch: 5
        }));
        // Writes that are no process's are not fenced.
        let unfenced = Command::Write(Write {
            operations: Vec::new(),
            fence: None,
        });
        assert_eq!(state.apply(7, &unfenced), Outcome::Applied);
    }

    #[test]
    fn a_placement_change_computed_from_an_old_version_is_refused() {
        let mut state = founded();
        let stale = Command::Placement(PlacementChange {
            based_on: 1,
            nodes: Vec::new(),
            moves: vec![(0, 9)],
        });
        assert!(matches!(state.apply(4, &stale), Outcome::Refused(_)));
        assert_eq!(state.slots[0].node, 1);
    }
}
