//! `otp:platform/storage`: the component's private namespace of the node's
//! RocksDB. The namespace is fixed when the store is created; nothing a guest
//! passes can change it.

use wasmtime::component::{HasData, Linker};

use crate::bindings::storage::{self, Operation, StorageError as WitStorageError};
use crate::state::InstanceState;
use crate::storage::{self as db, Namespace, StorageError};

pub struct StorageCapability {
    namespace: Namespace,
}

impl StorageCapability {
    pub fn new(namespace: Namespace) -> Self {
        Self { namespace }
    }
}

impl From<StorageError> for WitStorageError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::InvalidKey => WitStorageError::InvalidKey,
            StorageError::TooLarge => WitStorageError::TooLarge,
            StorageError::Io(message) => WitStorageError::Io(message),
            StorageError::Unavailable(reason) => WitStorageError::Unavailable(reason),
        }
    }
}

impl storage::Host for StorageCapability {
    async fn get(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, WitStorageError> {
        Ok(self.namespace.get(&key)?)
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), WitStorageError> {
        Ok(self.namespace.put(&key, &value).await?)
    }

    async fn delete(&mut self, key: Vec<u8>) -> Result<(), WitStorageError> {
        Ok(self.namespace.delete(&key).await?)
    }

    async fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<Vec<db::Pair>, WitStorageError> {
        let limit = usize::try_from(limit).unwrap_or(db::MAX_SCAN_PAIRS);
        Ok(self
            .namespace
            .scan_prefix(&prefix, start_after.as_deref(), limit)?)
    }

    async fn batch(&mut self, operations: Vec<Operation>) -> Result<(), WitStorageError> {
        let operations = operations
            .into_iter()
            .map(|operation| match operation {
                Operation::Put((key, value)) => db::Operation::Put(key, value),
                Operation::Delete(key) => db::Operation::Delete(key),
            })
            .collect();
        Ok(self.namespace.batch(operations).await?)
    }
}

struct Storage;

impl HasData for Storage {
    type Data<'a> = &'a mut StorageCapability;
}

pub(super) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    storage::add_to_linker::<InstanceState, Storage>(linker, |state| &mut state.storage)
}
