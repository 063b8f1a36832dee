//! Budgets: how much of the machine a stranger can make the node spend.
//!
//! Every port of a node is reachable by someone hostile, and each
//! connection costs a file descriptor. A process has a fixed number of them
//! (`RLIMIT_NOFILE`), and RocksDB needs new ones at moments nobody chooses
//! (a memtable switch, a new write-ahead log, a compaction): if strangers
//! hold them all then, storage fails. So the node splits its descriptors up
//! front ([`FileBudget`]): a reserve that storage and the node's own links
//! always have, and a cap per listener ([`ConnectionCap`]) that refuses the
//! connection past it at once, cheaply, and counts it.
//!
//! - `connections`: the per-listener caps and their counters;
//! - `memory`: a budget of bytes many holders share (HTTP handlers' linear
//!   memories);
//! - `summary`: one log line per source and interval for repeated failures,
//!   so a flood cannot rotate the log's history away.
//!
//! `ARCHITECTURE.md`, "Limits and budgets", lists every budget of the node.
//! This module is a leaf: it may use `crate::metrics` only.

mod connections;
mod memory;
mod summary;

pub use connections::{
    AddressAdmitted, Admitted, ConnectionCap, Listener, PerAddressCap, refuse_now,
};
pub use memory::MemoryBudget;
pub use summary::{FailureSummary, and_more};

/// The highest soft limit the node asks for, even when the hard limit is
/// unlimited: Linux's default `fs.nr_open`.
const HIGHEST_FILE_LIMIT: u64 = 1 << 20;
/// Descriptors kept for the node itself, outside RocksDB's table cache: its
/// write-ahead logs, manifest and compaction outputs, the log files, the
/// runtime's, the distribution handshakes in progress (at most 64), member
/// links and the links it dials.
const RESERVED_FOR_THE_NODE: u64 = 256;
/// Below this limit the node warns at start: its listeners get little.
pub const LOW_FILE_LIMIT: u64 = 1024;

/// The process's open-file limit, before and after [`raise_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped at 2^20), as
/// servers do at start: the soft limit is often 1024 while the hard one
/// allows far more. Call it before any thread starts.
pub fn raise_file_limit() -> FileLimit {
    let Some(mut limit) = read_file_limit() else {
        return FileLimit { before: 0, now: 0 };
    };
    let before = limit.rlim_cur;
    let wanted = limit.rlim_max.min(HIGHEST_FILE_LIMIT).max(before);
    if wanted > before {
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit reads the struct it is given, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
            return FileLimit {
                before,
                now: wanted,
            };
        }
    }
    FileLimit {
        before,
        now: before,
    }
}

fn read_file_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// How a node spends its file descriptors: derived from the process's
/// limit alone, so every part computes the same split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileBudget {
    /// The soft open-file limit the node runs with.
    pub limit: u64,
    /// Files RocksDB keeps open for reading (its `max_open_files`).
    pub storage_files: u32,
    /// Descriptors no listener can take: storage's and the node's own.
    pub reserve: u64,
    /// Connections at once to the guests' HTTP routes.
    pub http_connections: usize,
    /// Connections at once to the metrics page.
    pub metrics_connections: usize,
    /// Connections at once to the observer page.
    pub observer_connections: usize,
}

impl FileBudget {
    /// The budget of this process, from its current open-file limit.
    pub fn of_this_process() -> Self {
        let limit = read_file_limit().map_or(LOW_FILE_LIMIT, |limit| limit.rlim_cur);
        Self::for_limit(limit)
    }

    /// The split of `limit` descriptors:
    /// - RocksDB's table cache: an eighth, between 64 and 8,192;
    /// - the node's own: 256 more (see `RESERVED_FOR_THE_NODE`);
    /// - the metrics and observer pages: a sixteenth of what is left each,
    ///   between 8 and 256;
    /// - the guests' HTTP routes: the rest, at least 16.
    pub fn for_limit(limit: u64) -> Self {
        let storage_files = (limit / 8).clamp(64, 8192);
        let reserve = storage_files + RESERVED_FOR_THE_NODE;
        let for_listeners = limit.saturating_sub(reserve);
        let small = (for_listeners / 16).clamp(8, 256);
        let http = for_listeners.saturating_sub(2 * small).max(16);
        Self {
            limit,
            storage_files: u32::try_from(storage_files).unwrap_or(u32::MAX),
            reserve,
            http_connections: usize::try_from(http).unwrap_or(usize::MAX),
            metrics_connections: usize::try_from(small).unwrap_or(usize::MAX),
            observer_connections: usize::try_from(small).unwrap_or(usize::MAX),
        }
    }

    /// Whether the limit leaves the listeners less than they should have
    /// (the node warns at start).
    pub fn is_low(&self) -> bool {
        self.limit < LOW_FILE_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_never_gives_listeners_the_reserve() {
        for limit in [256, 1024, 4096, 20_000, 65_536, 1 << 20] {
            let budget = FileBudget::for_limit(limit);
            let listeners =
                budget.http_connections + budget.metrics_connections + budget.observer_connections;
            if limit >= LOW_FILE_LIMIT {
                assert!(
                    listeners as u64 + budget.reserve <= limit,
                    "{budget:?} overspends"
                );
                assert!(!budget.is_low());
            } else {
                assert!(budget.is_low(), "{budget:?} should say it is low");
            }
            assert!(budget.http_connections >= 16);
            assert!(u64::from(budget.storage_files) < budget.reserve);
        }
    }

    #[test]
    fn a_common_limit_splits_as_documented() {
        let budget = FileBudget::for_limit(1024);
        assert_eq!(budget.storage_files, 128);
        assert_eq!(budget.reserve, 384);
        assert_eq!(budget.metrics_connections, 40);
        assert_eq!(budget.http_connections, 560);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_file_limit();
        let now = read_file_limit().expect("a limit");
        assert_eq!(raised.now, now.rlim_cur);
        assert!(raised.now >= raised.before);
        assert_eq!(
            now.rlim_cur,
            now.rlim_max.min(HIGHEST_FILE_LIMIT).max(raised.before)
        );
    }
}
