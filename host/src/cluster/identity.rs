//! Who this data directory is in a cluster, kept in `raft_meta`: its node
//! id and name while it is a member, or which cluster it left (and that its
//! data is unchanged since).

use rocksdb::WriteBatch;

use super::log_store::{decode, encode, read_meta, write_error};
use super::snapshot;
use super::types::{NodeId, StorageError};
use super::wire::DataState;
use crate::dist::NodeName;
use serde::{Deserialize, Serialize};

use crate::storage::{DATA_CF, LEFT_CLUSTER, RAFT_LOG_CF, RAFT_META_CF, Storage};

const NODE_ID: &[u8] = b"node_id";
const NODE_NAME: &[u8] = b"node_name";
/// Present from the moment a node starts founding or joining a cluster
/// until that is complete: a node that finds it at start was interrupted
/// half way, and starts again as a lone node.
const PENDING: &[u8] = b"membership_pending";

/// The id and name of the member this data directory belongs to, if it is
/// one.
pub fn stored(storage: &Storage) -> Result<Option<(NodeId, NodeName)>, StorageError> {
    let id: Option<NodeId> = read_meta(storage, NODE_ID)?;
    let name: Option<NodeName> = read_meta(storage, NODE_NAME)?;
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
pub fn clear_left_mark(storage: &Storage) -> Result<(), StorageError> {
    let meta = storage.column_family(RAFT_META_CF).map_err(write_error)?;
    storage
        .db()
        .delete_cf(meta, LEFT_CLUSTER)
        .map_err(write_error)
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
    storage: &Storage,
    id: NodeId,
    name: &NodeName,
    pending: Pending,
) -> Result<(), StorageError> {
    let meta = storage.column_family(RAFT_META_CF).map_err(write_error)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(meta, NODE_ID, encode(&id)?);
    batch.put_cf(meta, NODE_NAME, encode(name)?);
    batch.put_cf(meta, PENDING, encode(&pending)?);
    storage.db().write(batch).map_err(write_error)?;
    storage.db().flush_wal(true).map_err(write_error)
}

/// The founding or joining recorded by [`store`] is complete.
pub fn confirm(storage: &Storage) -> Result<(), StorageError> {
    let meta = storage.column_family(RAFT_META_CF).map_err(write_error)?;
    storage.db().delete_cf(meta, PENDING).map_err(write_error)?;
    storage.db().flush_wal(true).map_err(write_error)
}

/// Undoes a founding or joining that was interrupted (the node stopped
/// before it completed), if there was one: the node is lone again, and its
/// data what it was before, as far as can be known. Returns whether it did.
pub fn undo_interrupted(
    storage: &Storage,
    data_dir: &std::path::Path,
) -> Result<bool, StorageError> {
    let Some(pending) = read_meta::<Pending>(storage, PENDING)? else {
        return Ok(false);
    };
    match pending {
        Pending::Found | Pending::Join(DataState::OwnData) => forget(storage, data_dir, None)?,
        Pending::Join(DataState::LeftCluster { cluster_id }) => {
            forget(storage, data_dir, Some(cluster_id))?;
        }
        Pending::Join(DataState::Empty) => {
            // Whatever is there came from the cluster's snapshot, maybe
            // half of it: empty again, as it was.
            let data = storage.column_family(DATA_CF).map_err(write_error)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(data, &[][..], &[0xff][..]);
            storage.db().write(batch).map_err(write_error)?;
            forget(storage, data_dir, None)?;
        }
    }
    Ok(true)
}

/// What this data directory holds, for a join.
pub fn data_state(storage: &Storage) -> Result<DataState, StorageError> {
    if let Some(bytes) = storage.left_cluster_marker() {
        return Ok(DataState::LeftCluster {
            cluster_id: decode(&bytes)?,
        });
    }
    Ok(if storage.has_data() {
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
    storage: &Storage,
    data_dir: &std::path::Path,
    left: Option<u128>,
) -> Result<(), StorageError> {
    let log = storage.column_family(RAFT_LOG_CF).map_err(write_error)?;
    let meta = storage.column_family(RAFT_META_CF).map_err(write_error)?;
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(log, &[][..], &[0xff; 9][..]);
    let keys: Vec<Box<[u8]>> = storage
        .db()
        .iterator_cf(meta, rocksdb::IteratorMode::Start)
        .filter_map(Result::ok)
        .map(|(key, _)| key)
        .collect();
    for key in keys.iter().filter(|key| &key[..] != LEFT_CLUSTER) {
        batch.delete_cf(meta, key);
    }
    if let Some(cluster_id) = left {
        batch.put_cf(meta, LEFT_CLUSTER, encode(&cluster_id)?);
    }
    storage.db().write(batch).map_err(write_error)?;
    storage.db().flush_wal(true).map_err(write_error)?;
    storage.reload_left_cluster_marker();
    let dir = snapshot::directory(data_dir);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(write_error)?;
    }
    Ok(())
}
