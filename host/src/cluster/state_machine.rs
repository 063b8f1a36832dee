//! The state machine: applies the committed log to this node's RocksDB.
//!
//! Each call to `apply` writes one RocksDB batch: the data of every write
//! whose fence holds, the cluster state if a placement entry changed it, and
//! the last applied log id, so a node that dies mid-way restarts exactly
//! where its data stands. Afterwards it publishes the cluster state (who
//! holds which slot) and the applied index, which the call path and the
//! writers waiting for their entry read.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use tokio::sync::watch;

use super::log_store::{encode, read_error, read_meta, write_error};
use super::rollout::{self, Rollouts};
use super::snapshot::{self, APPLIED, CLUSTER, CURRENT, INSTALLING, INSTALLING_FILE, MEMBERSHIP};
use super::types::{
    ClusterState, Command, Entry, LogId, Outcome, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};
use crate::storage::{ClusterStore, Family, Operation, StoreBatch};

/// What the state machine tells the rest of the node.
pub struct Published {
    /// The cluster state as of the last applied entry.
    pub view: watch::Sender<Arc<ClusterState>>,
    /// The index of the last applied entry (0 before any).
    pub applied: watch::Sender<u64>,
    /// Every component's latest rollout, as of the last applied entry.
    pub rollouts: watch::Sender<Arc<Rollouts>>,
}

pub struct StateMachine {
    store: ClusterStore,
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    cluster: ClusterState,
    rollouts: Rollouts,
    published: Arc<Published>,
    /// The file the snapshot being received is written to.
    incoming: Option<PathBuf>,
    /// Held while a snapshot file is written or installed.
    files: Arc<Mutex<()>>,
}

impl StateMachine {
    /// Opens the state machine kept in `store`, finishing a snapshot
    /// install a previous run left half done.
    pub fn open(
        store: ClusterStore,
        data_dir: &std::path::Path,
    ) -> Result<(Self, Arc<Published>), StorageError> {
        let dir = snapshot::directory(data_dir);
        if read_meta::<u8>(&store, INSTALLING)?.is_some() {
            tracing::warn!("finishing a snapshot install that a previous run left half done");
            snapshot::install(&store, &dir)?;
        }
        let last_applied: Option<LogId> = read_meta::<Option<LogId>>(&store, APPLIED)?.flatten();
        let membership: StoredMembership = read_meta(&store, MEMBERSHIP)?.unwrap_or_default();
        let cluster: ClusterState = read_meta(&store, CLUSTER)?.unwrap_or_default();
        let rollouts = read_rollouts(&store)?;
        let published = Arc::new(Published {
            view: watch::Sender::new(Arc::new(cluster.clone())),
            applied: watch::Sender::new(last_applied.map_or(0, |id| id.index)),
            rollouts: watch::Sender::new(Arc::new(rollouts.clone())),
        });
        Ok((
            Self {
                store,
                dir,
                last_applied,
                membership,
                cluster,
                rollouts,
                published: published.clone(),
                incoming: None,
                files: Arc::default(),
            },
            published,
        ))
    }

    /// The file holding the snapshot handed to `install_snapshot`, synced.
    /// Openraft writes what it receives into the file
    /// `begin_receiving_snapshot` made, and hands that back; a snapshot
    /// handed over in another file (as openraft's own test suite does) is
    /// copied into one of ours first.
    async fn received_file(
        &mut self,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<PathBuf, StorageError> {
        use std::os::unix::fs::MetadataExt as _;
        use tokio::io::AsyncSeekExt as _;

        snapshot.sync_all().await.map_err(write_error)?;
        let given = snapshot.metadata().await.map_err(read_error)?;
        let incoming = match self.incoming.take() {
            Some(path) => path,
            None => self
                .dir
                .join(format!("incoming-{}.snapshot", std::process::id())),
        };
        let ours = tokio::fs::metadata(&incoming).await.ok();
        if ours.is_some_and(|ours| ours.dev() == given.dev() && ours.ino() == given.ino()) {
            return Ok(incoming);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(write_error)?;
        let mut copy = tokio::fs::File::create(&incoming)
            .await
            .map_err(write_error)?;
        snapshot
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(read_error)?;
        tokio::io::copy(&mut *snapshot, &mut copy)
            .await
            .map_err(write_error)?;
        copy.sync_all().await.map_err(write_error)?;
        Ok(incoming)
    }

    fn publish(&self, cluster_changed: bool, rollouts_changed: bool) {
        if cluster_changed {
            self.published
                .view
                .send_replace(Arc::new(self.cluster.clone()));
        }
        if rollouts_changed {
            self.published
                .rollouts
                .send_replace(Arc::new(self.rollouts.clone()));
        }
        let applied = self.last_applied.map_or(0, |id| id.index);
        self.published.applied.send_replace(applied);
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = self.store.batch();
        let mut outcomes = Vec::new();
        let (mut membership_changed, mut cluster_changed, mut rollouts_changed) =
            (false, false, false);
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Applied,
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    membership_changed = true;
                    Outcome::Applied
                }
                EntryPayload::Normal(Command::Rollout(step)) => {
                    match self.rollouts.apply(entry.log_id.index, &step) {
                        Ok(writes) => {
                            put_all(&mut batch, writes);
                            rollouts_changed = true;
                            Outcome::Applied
                        }
                        Err(reason) => Outcome::Refused(reason),
                    }
                }
                EntryPayload::Normal(command) => {
                    let outcome = self.cluster.apply(entry.log_id.index, &command);
                    match (&outcome, command) {
                        (Outcome::Applied, Command::Write(write)) => {
                            put_all(&mut batch, write.operations)
                        }
                        (Outcome::Applied, _) => cluster_changed = true,
                        (Outcome::Refused(_), _) => {}
                    }
                    outcome
                }
            };
            outcomes.push(outcome);
        }
        batch.put(Family::Meta, APPLIED, encode(&self.last_applied)?);
        if membership_changed {
            batch.put(Family::Meta, MEMBERSHIP, encode(&self.membership)?);
        }
        if cluster_changed {
            batch.put(Family::Meta, CLUSTER, encode(&self.cluster)?);
        }
        self.store.write_durably(batch).await.map_err(write_error)?;
        self.publish(cluster_changed, rollouts_changed);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            dir: self.dir.clone(),
            files: self.files.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(write_error)?;
        let path = self
            .dir
            .join(format!("incoming-{}.snapshot", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(write_error)?;
        self.incoming = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let incoming = self.received_file(snapshot).await?;
        let (store, dir, files) = (self.store.clone(), self.dir.clone(), self.files.clone());
        let expected = meta.snapshot_id.clone();
        let header = tokio::task::spawn_blocking(move || {
            let _files = files.lock().unwrap_or_else(|p| p.into_inner());
            let received = snapshot::read_header(&incoming)?;
            if received.meta.snapshot_id != expected {
                return Err(write_error(format!(
                    "received snapshot {} but was asked to install {expected}",
                    received.meta.snapshot_id
                )));
            }
            std::fs::rename(&incoming, dir.join(INSTALLING_FILE)).map_err(write_error)?;
            let mut mark = store.batch();
            mark.put(Family::Meta, INSTALLING, encode(&1u8)?);
            store.write_synced(mark).map_err(write_error)?;
            snapshot::install(&store, &dir)
        })
        .await
        .map_err(write_error)??;
        tracing::info!(
            snapshot = %header.meta.snapshot_id,
            "installed a snapshot of the cluster's state"
        );
        self.last_applied = header.meta.last_log_id;
        self.membership = header.meta.last_membership;
        self.cluster = header.cluster;
        self.rollouts = read_rollouts(&self.store)?;
        self.publish(true, true);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let (dir, files) = (self.dir.clone(), self.files.clone());
        tokio::task::spawn_blocking(move || {
            let _files = files.lock().unwrap_or_else(|p| p.into_inner());
            let path = dir.join(CURRENT);
            if !path.exists() {
                return Ok(None);
            }
            let header = snapshot::read_header(&path)?;
            let file = std::fs::File::open(&path).map_err(read_error)?;
            Ok(Some(Snapshot {
                meta: header.meta,
                snapshot: Box::new(tokio::fs::File::from_std(file)),
            }))
        })
        .await
        .map_err(read_error)?
    }
}

/// Adds `operations` on the data column family to `batch`.
fn put_all(batch: &mut StoreBatch, operations: Vec<Operation>) {
    for operation in operations {
        match operation {
            Operation::Put(key, value) => batch.put(Family::Data, key, value),
            Operation::Delete(key) => batch.delete(Family::Data, key),
        }
    }
}

/// The rollout records in `store`'s data.
fn read_rollouts(store: &ClusterStore) -> Result<Rollouts, StorageError> {
    let prefix = rollout::record_prefix();
    let mut records = Vec::new();
    for pair in store.scan_from(Family::Data, prefix).map_err(read_error)? {
        let (key, value) = pair.map_err(read_error)?;
        if !key.starts_with(prefix) {
            break;
        }
        records.push(value.into_vec());
    }
    Rollouts::from_records(records).map_err(read_error)
}

/// Writes a snapshot off the state machine's task (from a RocksDB snapshot,
/// so applying goes on meanwhile).
pub struct SnapshotBuilder {
    store: ClusterStore,
    dir: PathBuf,
    files: Arc<Mutex<()>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (store, dir, files) = (self.store.clone(), self.dir.clone(), self.files.clone());
        let made = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (header, file) = tokio::task::spawn_blocking(move || {
            let _files = files.lock().unwrap_or_else(|p| p.into_inner());
            let header = snapshot::build(&store, &dir, format!("snapshot-{made}"))?;
            let file = std::fs::File::open(dir.join(CURRENT)).map_err(read_error)?;
            Ok::<_, StorageError>((header, file))
        })
        .await
        .map_err(write_error)??;
        tracing::debug!(snapshot = %header.meta.snapshot_id, "built a snapshot");
        Ok(Snapshot {
            meta: header.meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::testing::log_id;
    use openraft::{EntryPayload, RaftSnapshotBuilder};

    use super::StateMachine;
    use crate::cluster::rollout::{RolloutOptions, RolloutStep, VersionRef, bytes_key};
    use crate::cluster::types::{Command, Entry, Outcome};
    use crate::config::Durability;
    use crate::storage::{Family, Storage};

    fn start() -> RolloutStep {
        RolloutStep::Start {
            component: "todo".into(),
            to: VersionRef {
                hash: [7; 32],
                label: "2.0.0".into(),
            },
            from_label: "1.0.0".into(),
            issued_on: "a@h".into(),
            bytes: b"\0asm version two".to_vec(),
            options: RolloutOptions {
                canary: 100,
                max_failures: 10,
                down: false,
                all_at_once: false,
                commit: true,
            },
            nodes: vec![(1, "a@h".into())],
        }
    }

    #[tokio::test]
    async fn a_rollout_outlives_a_restart_and_travels_in_a_snapshot() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let storage = Storage::open(&dir.path().join("db"), Durability::Wal).expect("storage");
        let store = storage.cluster_store();
        let (mut machine, published) = StateMachine::open(store.clone(), dir.path()).expect("open");
        let entry = Entry {
            log_id: log_id(1, 1, 5),
            payload: EntryPayload::Normal(Command::Rollout(start())),
        };
        let outcomes = machine.apply([entry]).await.expect("apply");
        assert_eq!(outcomes, [Outcome::Applied]);
        let applied = published.rollouts.borrow().clone();
        assert_eq!(applied.by_component["todo"].id, 5);
        // A second start while the first is under way changes nothing.
        let again = Entry {
            log_id: log_id(1, 1, 6),
            payload: EntryPayload::Normal(Command::Rollout(start())),
        };
        let outcomes = machine.apply([again]).await.expect("apply");
        assert!(
            matches!(&outcomes[..], [Outcome::Refused(_)]),
            "{outcomes:?}"
        );
        assert_eq!(*published.rollouts.borrow().clone(), *applied);

        // Read back at the next start.
        let (_, reopened) = StateMachine::open(store.clone(), dir.path()).expect("reopen");
        assert_eq!(*reopened.rollouts.borrow().clone(), *applied);

        // Carried by a snapshot to a node with no data, bytes included.
        let snapshot = machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        let other_dir = tempfile::tempdir().expect("a temp dir");
        let other = Storage::open(&other_dir.path().join("db"), Durability::Wal).expect("storage");
        let other_store = other.cluster_store();
        let (mut joiner, joined) =
            StateMachine::open(other_store.clone(), other_dir.path()).expect("open");
        joiner
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        assert_eq!(*joined.rollouts.borrow().clone(), *applied);
        let bytes = other_store
            .get(Family::Data, &bytes_key("todo", &[7; 32]))
            .expect("read");
        assert_eq!(bytes.as_deref(), Some(&b"\0asm version two"[..]));
    }
}
