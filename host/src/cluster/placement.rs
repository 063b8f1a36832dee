//! Placement: which node runs the process of a name.
//!
//! A name (`component/name`) hashes to one of [`SLOTS`] slots, and the
//! replicated [`ClusterState`] says which node holds each slot. So the node
//! of a name is known everywhere without asking anyone, a new name costs no
//! consensus round (its slot already has an owner), and only membership
//! changes (a node joins, leaves, goes down or comes back) go through Raft,
//! as slot moves. This is how Orleans and Akka sharding place actors, with
//! the slot table as the shard coordinator's state.

use std::collections::BTreeMap;

use super::types::{NodeId, SLOTS, Slot};

/// The slot of process `name` of `component`: FNV-1a over both, so every
/// node and every version of the host agree.
pub fn slot_of(component: &str, name: &str) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in component.bytes().chain([0]).chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    (hash % u64::from(SLOTS)) as u16
}

/// The slot moves that spread the slots evenly over the nodes in `up`,
/// moving as few as possible: slots of nodes not in `up` all move, and a
/// node holding more than its share gives the excess away.
pub fn balance(slots: &[Slot], up: &[NodeId]) -> Vec<(u16, NodeId)> {
    if up.is_empty() || slots.is_empty() {
        return Vec::new();
    }
    let mut held: BTreeMap<NodeId, Vec<u16>> = up.iter().map(|id| (*id, Vec::new())).collect();
    let mut free = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        let index = index as u16;
        match held.get_mut(&slot.node) {
            Some(list) => list.push(index),
            None => free.push(index),
        }
    }
    // Quotas: the nodes holding the most keep the larger shares.
    let base = slots.len() / up.len();
    let extra = slots.len() % up.len();
    let mut by_load: Vec<NodeId> = held.keys().copied().collect();
    by_load.sort_by_key(|id| (std::cmp::Reverse(held[id].len()), *id));
    let quota: BTreeMap<NodeId, usize> = by_load
        .iter()
        .enumerate()
        .map(|(rank, id)| (*id, base + usize::from(rank < extra)))
        .collect();
    for (id, list) in held.iter_mut() {
        while list.len() > quota[id] {
            if let Some(slot) = list.pop() {
                free.push(slot);
            }
        }
    }
    free.sort_unstable();
    let mut moves = Vec::new();
    let mut free = free.into_iter();
    for (id, list) in &held {
        for _ in list.len()..quota[id] {
            if let Some(slot) = free.next() {
                moves.push((slot, *id));
            }
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_by(node: NodeId) -> Vec<Slot> {
        vec![Slot { node, epoch: 1 }; usize::from(SLOTS)]
    }

    fn apply(slots: &mut [Slot], moves: &[(u16, NodeId)]) {
        for (slot, node) in moves {
            slots[usize::from(*slot)].node = *node;
        }
    }

    fn count(slots: &[Slot], node: NodeId) -> usize {
        slots.iter().filter(|slot| slot.node == node).count()
    }

    #[test]
    fn slots_are_stable_and_spread() {
        assert_eq!(slot_of("todo", "bob"), slot_of("todo", "bob"));
        assert_ne!(slot_of("todo", "bob"), slot_of("other", "bob"));
        let mut used = std::collections::HashSet::new();
        for i in 0..5000 {
            used.insert(slot_of("todo", &format!("list-{i}")));
        }
        assert!(
            used.len() > 950,
            "5,000 names cover most of the 1,024 slots"
        );
    }

    #[test]
    fn a_joining_node_takes_its_share_and_nothing_else_moves() {
        let mut slots = owned_by(1);
        let moves = balance(&slots, &[1, 2]);
        assert_eq!(moves.len(), 512);
        apply(&mut slots, &moves);
        let moves = balance(&slots, &[1, 2, 3]);
        assert_eq!(moves.len(), 341, "only the new node's share moves");
        assert!(moves.iter().all(|(_, to)| *to == 3));
        apply(&mut slots, &moves);
        for node in [1, 2, 3] {
            assert!((341..=342).contains(&count(&slots, node)));
        }
        assert!(balance(&slots, &[1, 2, 3]).is_empty(), "balanced stays put");
    }

    #[test]
    fn a_down_nodes_slots_go_to_the_others() {
        let mut slots = owned_by(1);
        let moves = balance(&slots, &[1, 2, 3]);
        apply(&mut slots, &moves);
        let held_by_two = count(&slots, 2);
        let moves = balance(&slots, &[1, 3]);
        assert_eq!(moves.len(), held_by_two);
        apply(&mut slots, &moves);
        assert_eq!(count(&slots, 2), 0);
        assert_eq!(count(&slots, 1) + count(&slots, 3), usize::from(SLOTS));
    }
}
