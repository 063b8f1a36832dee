//! Room on the disk that holds the database.
//!
//! A write that finds the disk full fails inside RocksDB, which then takes
//! no more writes until it is reopened (`health`); and the RocksDB this
//! host links (Debian's 7.8) is built with its assertions on, and aborts
//! the process on the next write to a log that failed one. So guests'
//! writes stop short of a full disk: under a floor of free space, each is
//! refused up front, "not applied", and they are taken again as soon as
//! there is room. The free space is read at most every 250 ms, by a write.
//!
//! Raft's own writes (its log, its state) are not refused: refusing them
//! would stop the node's Raft for good. The floor is checked where a
//! guest's write enters storage, on the node that makes it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::StorageError;
use crate::metrics::Series;

/// Free space under which guests' writes are refused, and the room failed
/// storage wants before it is reopened: two memtables' worth (RocksDB's
/// write buffer is 64 MiB), for a flush to write out.
const FLOOR: u64 = 128 * 1024 * 1024;
/// How often a write reads the free space again, in milliseconds.
const READ_EVERY_MS: u64 = 250;

/// The disk under the database, as writes see it.
pub struct DiskRoom {
    dir: Arc<Path>,
    started: Instant,
    /// When (in ms since `started`) the free space is next read.
    next_read_ms: AtomicU64,
    /// The free space last read; `u64::MAX` while it cannot be read.
    free: AtomicU64,
    refused: AtomicU64,
}

impl DiskRoom {
    pub fn new(dir: Arc<Path>) -> Self {
        let free = free_bytes(&dir).unwrap_or(u64::MAX);
        Self {
            dir,
            started: Instant::now(),
            next_read_ms: AtomicU64::new(0),
            free: AtomicU64::new(free),
            refused: AtomicU64::new(0),
        }
    }

    /// Refuses a guest's write while the disk is under its floor.
    pub fn check(&self) -> Result<(), StorageError> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_read_ms.load(Ordering::Relaxed);
        // One writer reads it; the others use what it read last.
        if now >= next
            && self
                .next_read_ms
                .compare_exchange(
                    next,
                    now + READ_EVERY_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let free = free_bytes(&self.dir).unwrap_or(u64::MAX);
            self.free.store(free, Ordering::Relaxed);
        }
        let free = self.free.load(Ordering::Relaxed);
        if free >= FLOOR {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(StorageError::Unavailable(format!(
            "the disk holding storage has {} MiB free, under its floor of {} MiB: writes are \
             taken again once it has room",
            free >> 20,
            FLOOR >> 20
        )))
    }

    /// Whether the cause of a storage failure looks gone, so that reopening
    /// the database would work: a file can be created in its folder,
    /// written, synced and removed, and the disk is over its floor. Says
    /// what is still wrong otherwise.
    pub fn can_reopen(&self) -> Result<(), String> {
        let dir = self.dir.display();
        let probe = self.dir.join("reopen-probe");
        let written = std::fs::File::create(&probe).and_then(|mut file| {
            std::io::Write::write_all(&mut file, &[0; 4096])?;
            file.sync_all()
        });
        let removed = std::fs::remove_file(&probe);
        written
            .and(removed)
            .map_err(|e| format!("cannot write a file in {dir}: {e}"))?;
        let free = free_bytes(&self.dir)
            .map_err(|e| format!("cannot read the free space of {dir}: {e}"))?;
        if free < FLOOR {
            return Err(format!(
                "{dir} has {} MiB free; reopening wants {} MiB",
                free >> 20,
                FLOOR >> 20
            ));
        }
        Ok(())
    }

    pub fn series(&self) -> Vec<Series> {
        vec![
            Series::gauge(
                "host_storage_disk_free_bytes",
                "Free space on the disk holding storage, as writes last read it.",
                self.free.load(Ordering::Relaxed),
            ),
            Series::counter(
                "host_storage_writes_refused_disk_full_total",
                "Guests' writes refused because the disk holding storage was under its floor \
                 of free space (128 MiB).",
                self.refused.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// Bytes an unprivileged process may still write on `dir`'s file system.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and outlives the call; statvfs
    // fills `stats` when it returns 0, and only then is it read.
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stats.assume_init()
    };
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}
