//! Where a list keeps its entries: the host's storage in the component, an
//! in-memory map in native tests.
//!
//! Layout, per list `L` (list names never hold a zero byte):
//! - `list\0L\0e` + id as 8 big-endian bytes: one entry, as JSON, so an add
//!   writes one small key instead of rewriting the whole list (the book's
//!   database rewrites it on every add);
//! - `list\0L\0n`: the next id, as 8 big-endian bytes, so ids are never
//!   reused even after deletes;
//! - v2: `list\0L\0d` + id: present (empty) while entry `id` is done. A key
//!   of its own, so version 1 reads and writes exactly what it always did,
//!   and the marks outlive a rollback to it: back on version 2, they are
//!   there. A mark whose entry version 1 deleted is ignored (ids are never
//!   reused).

use crate::list::Entry;

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A key and its value, as a scan returns them.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Why a change could not be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The host could not make it durable where it must (in a cluster: on a
    /// majority of nodes). Nothing was written; later may work.
    Unavailable(String),
    /// Anything else.
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(reason) | StoreError::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Key-value storage as a list needs it.
pub trait Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// Up to `limit` pairs under `prefix`, after `start_after`, in key order.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<Pair>, String>;
    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError>;
}

fn list_prefix(list: &str) -> Vec<u8> {
    let mut key = b"list\0".to_vec();
    key.extend_from_slice(list.as_bytes());
    key.push(0);
    key
}

pub fn entries_prefix(list: &str) -> Vec<u8> {
    let mut key = list_prefix(list);
    key.push(b'e');
    key
}

pub fn entry_key(list: &str, id: u64) -> Vec<u8> {
    let mut key = entries_prefix(list);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn next_id_key(list: &str) -> Vec<u8> {
    let mut key = list_prefix(list);
    key.push(b'n');
    key
}

/// Where list `list` keeps its done marks.
#[cfg(feature = "v2")]
pub fn done_prefix(list: &str) -> Vec<u8> {
    let mut key = list_prefix(list);
    key.push(b'd');
    key
}

#[cfg(feature = "v2")]
pub fn done_key(list: &str, id: u64) -> Vec<u8> {
    let mut key = done_prefix(list);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The id a done mark's key ends with.
#[cfg(feature = "v2")]
pub fn done_id(key: &[u8]) -> Result<u64, String> {
    key.len()
        .checked_sub(8)
        .map(|at| &key[at..])
        .ok_or_else(|| "corrupt done mark in storage".to_string())
        .and_then(decode_id)
}

pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    // Serialising a struct of a number and two strings cannot fail.
    serde_json::to_vec(entry).unwrap_or_default()
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("corrupt entry in storage: {e}"))
}

pub fn decode_id(bytes: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| "corrupt next id in storage".to_string())?;
    Ok(u64::from_be_bytes(bytes))
}

/// The host's storage, through the platform's `storage` interface.
pub struct HostStore;

impl Store for HostStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        guest_sdk::storage::get(key).map_err(|e| format!("{e:?}"))
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<Pair>, String> {
        guest_sdk::storage::scan_prefix(prefix, start_after, limit).map_err(|e| format!("{e:?}"))
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        use guest_sdk::storage::{Operation, StorageError};
        let operations: Vec<Operation> = writes
            .into_iter()
            .map(|write| match write {
                Write::Put(key, value) => Operation::Put((key, value)),
                Write::Delete(key) => Operation::Delete(key),
            })
            .collect();
        guest_sdk::storage::batch(&operations).map_err(|e| match e {
            StorageError::Unavailable(reason) => StoreError::Unavailable(reason),
            other => StoreError::Failed(format!("{other:?}")),
        })
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub mod memory {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use super::{Pair, Store, StoreError, Write};

    /// A shared in-memory store for native tests.
    #[derive(Clone, Default)]
    pub struct MemoryStore {
        pub map: Rc<RefCell<BTreeMap<Vec<u8>, Vec<u8>>>>,
        /// When set, every write fails with this error.
        pub failing: Rc<RefCell<Option<StoreError>>>,
    }

    impl Store for MemoryStore {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
            Ok(self.map.borrow().get(key).cloned())
        }

        fn scan(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: u32,
        ) -> Result<Vec<Pair>, String> {
            Ok(self
                .map
                .borrow()
                .range(prefix.to_vec()..)
                .filter(|(k, _)| start_after.is_none_or(|after| k.as_slice() > after))
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit as usize)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        }

        fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
            if let Some(error) = self.failing.borrow().clone() {
                return Err(error);
            }
            let mut map = self.map.borrow_mut();
            for write in writes {
                match write {
                    Write::Put(k, v) => map.insert(k, v),
                    Write::Delete(k) => map.remove(&k),
                };
            }
            Ok(())
        }
    }
}
