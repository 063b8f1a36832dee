//! `otp:platform/storage`: the component's private namespace of the node's
//! RocksDB. The namespace is fixed when the store is created; nothing a guest
//! passes can change it.

use wasmtime::component::{HasData, Linker};

use super::bindings::storage::{self, Operation, StorageError as WitStorageError};
use super::{HasCapabilities, HostCalls};
use crate::process::trace::render_bytes;
use crate::storage::{self as db, Namespace, StorageError};

pub struct StorageCapability {
    namespace: Namespace,
    calls: HostCalls,
    /// Set once a write's outcome was unknown: the instance trapped for the
    /// cluster's sake, not for its own (see [`Answer`]).
    unknown_outcome: Option<String>,
}

impl StorageCapability {
    pub fn new(namespace: Namespace, calls: HostCalls) -> Self {
        Self {
            namespace,
            calls,
            unknown_outcome: None,
        }
    }

    /// Why the instance trapped, if a storage write's outcome was unknown.
    pub fn unknown_outcome(&self) -> Option<&str> {
        self.unknown_outcome.as_deref()
    }

    fn answer<T>(&mut self, result: Result<T, StorageError>) -> Answer<T> {
        if let Err(error @ StorageError::Indeterminate(_)) = &result {
            self.unknown_outcome = Some(error.to_string());
        }
        answer(result)
    }
}

/// A key or value as a trace shows it.
fn shown(bytes: &[u8]) -> String {
    render_bytes(&bytes[..bytes.len().min(64)], bytes.len())
}

/// How a storage call ended, for a trace.
fn outcome<T>(result: &Result<T, StorageError>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(error) => format!("error: {error}"),
    }
}

/// What a guest's storage call returns: its result, an error the guest
/// handles, or a trap. A write whose outcome is unknown traps: the process
/// cannot know whether its memory matches storage any more, so it ends and
/// its next start reads storage again (as Erlang lets a process crash
/// rather than go on with a state it cannot trust). The process then ends
/// as *interrupted*, not crashed: its caller is told the outcome is
/// unknown, and it does not count against its restart intensity.
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
        let result = self
            .calls
            .traced(
                "storage.get",
                || shown(&key),
                |result| {
                    outcome(result, |value| match value {
                        Some(value) => format!("{} bytes", value.len()),
                        None => "none".into(),
                    })
                },
                async { self.namespace.get(&key) },
            )
            .await;
        self.answer(result)
    }

    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Answer<()> {
        let result = self
            .calls
            .traced(
                "storage.put",
                || format!("{}, {} bytes", shown(&key), value.len()),
                |result| outcome(result, |_| "ok".into()),
                self.namespace.put(&key, &value),
            )
            .await;
        self.answer(result)
    }

    async fn delete(&mut self, key: Vec<u8>) -> Answer<()> {
        let result = self
            .calls
            .traced(
                "storage.delete",
                || shown(&key),
                |result| outcome(result, |_| "ok".into()),
                self.namespace.delete(&key),
            )
            .await;
        self.answer(result)
    }

    async fn scan_prefix(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> Answer<Vec<db::Pair>> {
        let limit = usize::try_from(limit).unwrap_or(db::MAX_SCAN_PAIRS);
        let result = self
            .calls
            .traced(
                "storage.scan-prefix",
                || format!("{}, limit {limit}", shown(&prefix)),
                |result| outcome(result, |pairs| format!("{} pairs", pairs.len())),
                async {
                    self.namespace
                        .scan_prefix(&prefix, start_after.as_deref(), limit)
                },
            )
            .await;
        self.answer(result)
    }

    async fn batch(&mut self, operations: Vec<Operation>) -> Answer<()> {
        let operations = operations
            .into_iter()
            .map(|operation| match operation {
                Operation::Put((key, value)) => db::Operation::Put(key, value),
                Operation::Delete(key) => db::Operation::Delete(key),
            })
            .collect::<Vec<_>>();
        let count = operations.len();
        let result = self
            .calls
            .traced(
                "storage.batch",
                || format!("{count} operations"),
                |result| outcome(result, |_| "ok".into()),
                self.namespace.batch(operations),
            )
            .await;
        self.answer(result)
    }
}

struct Storage;

impl HasData for Storage {
    type Data<'a> = &'a mut StorageCapability;
}

pub(super) fn add_to_linker<T: HasCapabilities>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    storage::add_to_linker::<T, Storage>(linker, |state| &mut state.capabilities().storage)
}
