//! The Raft log store and state machine against openraft's own storage
//! test suite (`openraft::testing::Suite`): votes, log reads, purges and
//! truncations, membership recovered from the log and the state machine,
//! snapshots built, transferred and installed. Each case runs on a fresh
//! RocksDB in a temp dir, through storage's [`ClusterStore`] as the node's
//! cluster runs it.

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{StorageError, TypeConfig};
use crate::config::Durability;
use crate::storage::Storage;

struct OnRocksDb;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnRocksDb {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let storage = Storage::open(&dir.path().join("db"), Durability::Wal).expect("storage");
        let store = storage.cluster_store();
        let (state_machine, _published) = StateMachine::open(store.clone(), dir.path())?;
        Ok((dir, LogStore::new(store), state_machine))
    }
}

#[test]
fn the_log_store_and_state_machine_pass_openrafts_suite() {
    Suite::test_all(OnRocksDb).expect("openraft's storage suite");
}
