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

/// What a guest's storage call returns: its result, an error the guest
/// handles, or a trap. A write whose outcome is unknown traps: the process
/// cannot know whether its memory matches storage any more, so it ends and
/// its next start reads storage again (as Erlang lets a process crash
/// rather than go on with a state it cannot trust).
type Answer<T> = wasmtime::Result<Result<T, WitStorageError>>;

fn answer<T>(result: Result<T, StorageError>) -> Answer<T> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(StorageError::InvalidKey) => Ok(Err(WitStorageError::InvalidKey)),
        Err(StorageError::TooLarge) => Ok(Err(WitStorageError::TooLarge)),
        Err(StorageError::Io(message)) => Ok(Err(WitStorageError::Io(message))),
        Err(StorageError::Unavailable(reason)) => Ok(Err(WitStorageError::Unavailable(reason))),
        Err(error @ StorageError::Indeterminate(_)) => Err(wasmtime::Error::msg(error.to_string())),
    }
}

impl storage::Host for StorageCapability {
    async fn get(&mut self, key: Vec<u8>) -> Answer<Option<Vec<u8>>> {
        answer(self.namespace.get(&key))
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Answer<()> {
        answer(self.namespace.put(&key, &value).await)
    }

    async fn delete(&mut self, key: Vec<u8>) -> Answer<()> {
        answer(self.namespace.delete(&key).await)
    }

    async fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> Answer<Vec<db::Pair>> {
        let limit = usize::try_from(limit).unwrap_or(db::MAX_SCAN_PAIRS);
        answer(
            self.namespace
                .scan_prefix(&prefix, start_after.as_deref(), limit),
        )
    }

    async fn batch(&mut self, operations: Vec<Operation>) -> Answer<()> {
        let operations = operations
            .into_iter()
            .map(|operation| match operation {
                Operation::Put((key, value)) => db::Operation::Put(key, value),
                Operation::Delete(key) => db::Operation::Delete(key),
            })
            .collect();
        answer(self.namespace.batch(operations).await)
    }
}

struct Storage;

impl HasData for Storage {
    type Data<'a> = &'a mut StorageCapability;
}

pub(super) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    storage::add_to_linker::<InstanceState, Storage>(linker, |state| &mut state.storage)
}
