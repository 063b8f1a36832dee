//! Who this data directory is in a cluster, kept in the cluster's metadata
//! (storage's [`Family::Meta`]): its node id and name while it is a member,
//! or which cluster it left (and that its data is unchanged since).
//!
//! That last mark also decides what a lone node's local writes do
//! ([`local_writes`]): the first one clears it, since the data is no longer
//! that cluster's copy.

use serde::{Deserialize, Serialize};

use super::log_store::{decode, encode, read_error, read_meta, write_error};
use super::snapshot;
use super::types::{NodeId, StorageError};
use super::wire::DataState;
use crate::distribution::NodeName;
use crate::storage::{ClusterStore, Family, LocalWrites};

const NODE_ID: &[u8] = b"node_id";
const NODE_NAME: &[u8] = b"node_name";
/// Present from the moment a node starts founding or joining a cluster
/// until that is complete: a node that finds it at start was interrupted
/// half way, and starts again as a lone node.
const PENDING: &[u8] = b"membership_pending";
/// In the metadata of a node that left a cluster: which one. Removed by the
/// first write it makes on its own, since its data is then no longer a copy
/// of that cluster's.
const LEFT_CLUSTER: &[u8] = b"left_cluster";

/// The id and name of the member this data directory belongs to, if it is
/// one.
pub fn stored(store: &ClusterStore) -> Result<Option<(NodeId, NodeName)>, StorageError> {
    let id: Option<NodeId> = read_meta(store, NODE_ID)?;
    let name: Option<NodeName> = read_meta(store, NODE_NAME)?;
    Ok(id.zip(name))
}

/// A new random node id (never 0).
pub fn new_id() -> Result<NodeId, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a node id: {e}"))?;
    Ok(u64::from_le_bytes(bytes).max(1))
}

/// A new random cluster id.
pub fn new_cluster_id() -> Result<u128, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a cluster id: {e}"))?;
    Ok(u128::from_le_bytes(bytes))
}

/// Forgets that this data was a copy of a cluster it left: it is now the
/// data of the cluster it founded. (Local writes are paused meanwhile, and
/// resuming them reads the mark again.)
pub fn clear_left_mark(store: &ClusterStore) -> Result<(), StorageError> {
    let mut batch = store.batch();
    batch.delete(Family::Meta, LEFT_CLUSTER);
    store.write(batch).map_err(write_error)
}

/// What a local write must do, as the data stands: clear the left-cluster
/// mark first if there is one.
pub fn local_writes(store: &ClusterStore) -> LocalWrites {
    match store.get(Family::Meta, LEFT_CLUSTER) {
        Ok(Some(_)) => LocalWrites::ClearMarkFirst(LEFT_CLUSTER.to_vec()),
        _ => LocalWrites::Open,
    }
}

/// The id of the cluster this node left, if its data is still that
/// cluster's copy.
fn left_cluster(store: &ClusterStore) -> Result<Option<u128>, StorageError> {
    match store.get(Family::Meta, LEFT_CLUSTER).map_err(read_error)? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

/// What a node was doing when it recorded its identity, so that an
/// interruption can be undone.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Pending {
    /// Founding a cluster with its own data (nothing of its data changes).
    Found,
    /// Joining, its data dir holding this (a snapshot of the cluster's data
    /// may have been half installed since).
    Join(DataState),
}

/// Records that this data directory is becoming member `id`, named
/// `name` (pending until [`confirm`]).
pub fn store(
    store: &ClusterStore,
    id: NodeId,
    name: &NodeName,
    pending: Pending,
) -> Result<(), StorageError> {
    let mut batch = store.batch();
    batch.put(Family::Meta, NODE_ID, encode(&id)?);
    batch.put(Family::Meta, NODE_NAME, encode(name)?);
    batch.put(Family::Meta, PENDING, encode(&pending)?);
    store.write_synced(batch).map_err(write_error)
}

/// The founding or joining recorded by [`store`] is complete.
pub fn confirm(store: &ClusterStore) -> Result<(), StorageError> {
    let mut batch = store.batch();
    batch.delete(Family::Meta, PENDING);
    store.write_synced(batch).map_err(write_error)
}

/// Undoes a founding or joining that was interrupted (the node stopped
/// before it completed), if there was one: the node is lone again, and its
/// data what it was before, as far as can be known. Returns whether it did.
pub fn undo_interrupted(
    store: &ClusterStore,
    data_dir: &std::path::Path,
) -> Result<bool, StorageError> {
    let Some(pending) = read_meta::<Pending>(store, PENDING)? else {
        return Ok(false);
    };
    match pending {
        Pending::Found | Pending::Join(DataState::OwnData) => forget(store, data_dir, None)?,
        Pending::Join(DataState::LeftCluster { cluster_id }) => {
            forget(store, data_dir, Some(cluster_id))?;
        }
        Pending::Join(DataState::Empty) => {
            // Whatever is there came from the cluster's snapshot, maybe
            // half of it: empty again, as it was.
            let mut batch = store.batch();
            batch.delete_range(Family::Data, [], [0xff]);
            store.write(batch).map_err(write_error)?;
            forget(store, data_dir, None)?;
        }
    }
    Ok(true)
}

/// What this data directory holds, for a join.
pub fn data_state(store: &ClusterStore) -> Result<DataState, StorageError> {
    if let Some(cluster_id) = left_cluster(store)? {
        return Ok(DataState::LeftCluster { cluster_id });
    }
    Ok(if store.has_data() {
        DataState::OwnData
    } else {
        DataState::Empty
    })
}

/// Forgets every trace of membership (the Raft log, vote, state machine
/// metadata, snapshots), keeping the data. With `left`, marks the data as
/// the copy of that cluster, so the node may rejoin it; without, a mark
/// made earlier stays.
pub fn forget(
    store: &ClusterStore,
    data_dir: &std::path::Path,
    left: Option<u128>,
) -> Result<(), StorageError> {
    let mut batch = store.batch();
    batch.delete_range(Family::Log, [], [0xff; 9]);
    let keys: Vec<Box<[u8]>> = store
        .scan_from(Family::Meta, &[])
        .map_err(read_error)?
        .filter_map(Result::ok)
        .map(|(key, _)| key)
        .collect();
    for key in keys.iter().filter(|key| &key[..] != LEFT_CLUSTER) {
        batch.delete(Family::Meta, key);
    }
    if let Some(cluster_id) = left {
        batch.put(Family::Meta, LEFT_CLUSTER, encode(&cluster_id)?);
    }
    store.write_synced(batch).map_err(write_error)?;
    store.set_local_writes(local_writes(store));
    let dir = snapshot::directory(data_dir);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(write_error)?;
    }
    Ok(())
}
