//! What a process counts about itself, and how the console and the
//! observer see a live process.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::id::{Pid, ProcessKey};
use super::trace::{EventKind, TraceHook};

/// A process's counters, kept while it lives (through hibernation).
/// Updated with relaxed atomics on the message path; read by `ps`.
pub struct ProcessStats {
    pub started: SystemTime,
    /// Messages handled.
    pub messages: AtomicU64,
    /// Linear memory, in bytes (kept by the store's limiter); while it
    /// hibernates, the bytes of its handed-over state.
    pub memory: Arc<AtomicUsize>,
    /// The trace on this process, if any: one atomic load per message when
    /// there is none.
    pub trace: TraceHook,
    /// The version of its component's code it runs (changed by a swap).
    version: Mutex<Arc<str>>,
}

impl ProcessStats {
    /// The counters of a process starting on code of version `version`.
    pub fn running(version: &Arc<str>) -> Self {
        Self {
            started: SystemTime::now(),
            messages: AtomicU64::new(0),
            memory: Arc::new(AtomicUsize::new(0)),
            trace: TraceHook::empty(),
            version: Mutex::new(version.clone()),
        }
    }

    /// The version the process runs now.
    pub fn version(&self) -> Arc<str> {
        self.version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_version(&self, version: &Arc<str>) {
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = version.clone();
    }

    pub(super) fn counted(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Offers a message of process `key` (`pid`) to its trace, if it has
    /// one.
    pub(super) fn traced(&self, key: &ProcessKey, pid: Pid, kind: EventKind, message: &[u8]) {
        let trace = self.trace.load();
        if let Some(tracer) = trace.as_ref()
            && !tracer.offer(key, pid, kind, message)
        {
            // Only this tracer: a newer one may have been set meanwhile.
            let _ = self.trace.compare_and_swap(&trace, None);
        }
    }

    /// The process as the console shows it; `queued` is its mailbox's
    /// messages and bytes.
    pub(super) fn info(&self, key: &ProcessKey, pid: Pid, queued: (usize, usize)) -> ProcessInfo {
        ProcessInfo {
            component: key.component.to_string(),
            name: key.name.to_string(),
            pid,
            started: self.started,
            messages: self.messages.load(Ordering::Relaxed),
            memory: self.memory.load(Ordering::Relaxed),
            queued_messages: queued.0,
            queued_bytes: queued.1,
            traced: self.trace.load().is_some(),
            version: self.version().to_string(),
        }
    }
}

/// A live process as the console and the observer see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub component: String,
    pub name: String,
    pub pid: Pid,
    pub started: SystemTime,
    /// Messages it has handled.
    pub messages: u64,
    /// Its linear memory, in bytes.
    pub memory: usize,
    /// Messages and bytes waiting in its mailbox.
    pub queued_messages: usize,
    pub queued_bytes: usize,
    pub traced: bool,
    /// The version of its component's code it runs.
    pub version: String,
}

/// Buckets of [`VersionStats`]' call times: bucket `i` holds calls that
/// took under 2^i microseconds (the last, everything longer: over 35 min).
const CALL_TIME_BUCKETS: usize = 32;

/// What the processes on one version of a component did while a swap
/// involved it: the console and the observer set the new version's figures
/// beside the old one's, both counted from the swap's start. Outside a
/// swap a message costs one relaxed load here; during one, a clock read
/// and two relaxed adds.
pub struct VersionStats {
    counting: std::sync::atomic::AtomicBool,
    messages: AtomicU64,
    crashes: AtomicU64,
    call_times: [AtomicU64; CALL_TIME_BUCKETS],
}

impl Default for VersionStats {
    fn default() -> Self {
        Self {
            counting: std::sync::atomic::AtomicBool::new(false),
            messages: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            call_times: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A version's figures, as `versions` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VersionFigures {
    pub messages: u64,
    pub crashes: u64,
    /// Calls handled, and the median and 99th percentile of their time
    /// (upper bounds: powers of two of microseconds).
    pub calls: u64,
    pub call_p50: std::time::Duration,
    pub call_p99: std::time::Duration,
}

impl VersionStats {
    /// Counts from zero, from now on (a swap that involves the version
    /// starts).
    pub fn start_counting(&self) {
        self.messages.store(0, Ordering::Relaxed);
        self.crashes.store(0, Ordering::Relaxed);
        for count in &self.call_times {
            count.store(0, Ordering::Relaxed);
        }
        self.counting.store(true, Ordering::Relaxed);
    }

    /// Stops counting; the figures stay as they are.
    pub fn stop_counting(&self) {
        self.counting.store(false, Ordering::Relaxed);
    }

    /// Whether messages are counted now.
    pub(super) fn counting(&self) -> bool {
        self.counting.load(Ordering::Relaxed)
    }

    pub(super) fn cast(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn call(&self, took: std::time::Duration) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        self.call_times[bucket.min(CALL_TIME_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn crashed(&self) {
        self.crashes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn figures(&self) -> VersionFigures {
        let counts: Vec<u64> = self
            .call_times
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        let calls: u64 = counts.iter().sum();
        let percentile = |share: u64| {
            let rank = (calls * share).div_ceil(100).max(1);
            let mut seen = 0;
            for (bucket, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return std::time::Duration::from_micros(1 << bucket);
                }
            }
            std::time::Duration::ZERO
        };
        VersionFigures {
            messages: self.messages.load(Ordering::Relaxed),
            crashes: self.crashes.load(Ordering::Relaxed),
            calls,
            call_p50: if calls == 0 {
                Default::default()
            } else {
                percentile(50)
            },
            call_p99: if calls == 0 {
                Default::default()
            } else {
                percentile(99)
            },
        }
    }
}

#[cfg(test)]
mod version_stats_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn call_times_give_percentiles_as_powers_of_two() {
        let stats = VersionStats::default();
        assert!(!stats.counting());
        stats.start_counting();
        assert_eq!(stats.figures(), VersionFigures::default());
        for _ in 0..98 {
            stats.call(Duration::from_micros(100)); // under 128 µs
        }
        stats.call(Duration::from_millis(3)); // under 4096 µs
        stats.call(Duration::from_secs(1));
        stats.cast();
        stats.crashed();
        let figures = stats.figures();
        assert_eq!(
            (figures.messages, figures.calls, figures.crashes),
            (101, 100, 1)
        );
        assert_eq!(figures.call_p50, Duration::from_micros(128));
        assert_eq!(figures.call_p99, Duration::from_micros(4096));
        stats.call(Duration::MAX);
        assert!(stats.figures().call_p99 <= Duration::from_micros(1 << 31));
        stats.stop_counting();
        assert!(!stats.counting());
        stats.start_counting();
        assert_eq!(stats.figures(), VersionFigures::default(), "from zero");
    }
}
