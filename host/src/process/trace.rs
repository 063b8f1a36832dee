//! Tracing a process's messages, safe by construction (as `recon_trace`,
//! not as `:dbg`): a [`Tracer`] is bounded in count and rate, and it never
//! makes the traced process wait.
//!
//! The process offers each message and reply to its tracer, if it has one
//! (one atomic load when it has none). The tracer copies at most
//! [`MAX_TRACED_BYTES`] of it into a bounded channel with `try_send`:
//! past the rate, or with the channel full, the event is dropped and
//! counted, never queued. Whoever started the trace (a console session)
//! reads the channel, renders the events and ends the trace by dropping
//! the receiver, which the next offered event notices.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;

use super::id::{Pid, ProcessKey};

/// Where a trace attaches: a process's messages, or a component's host
/// calls. Empty, it costs whoever would be traced one atomic load.
pub type TraceHook = ArcSwapOption<Tracer>;

/// Bytes of a message kept in a trace event; the rest is counted, not
/// copied.
pub const MAX_TRACED_BYTES: usize = 4096;

/// Events waiting for their reader, beyond which new ones are dropped.
const CHANNEL_CAPACITY: usize = 256;

/// What a trace event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A call the process took from its mailbox.
    Call,
    /// A cast the process took from its mailbox.
    Cast,
    /// The reply it sent to a call.
    Reply,
    /// A host call the component made (`trace-calls`); the event's bytes
    /// are its description.
    HostCall,
}

/// One traced message.
#[derive(Debug, Clone)]
pub struct TraceEvent {
    pub at: SystemTime,
    pub key: ProcessKey,
    pub pid: Pid,
    pub kind: EventKind,
    /// The message's first [`MAX_TRACED_BYTES`].
    pub bytes: Vec<u8>,
    /// Its whole length.
    pub len: usize,
}

/// The bounds of a trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceLimits {
    /// Events recorded before the trace stops by itself.
    pub count: u64,
    /// Events recorded per second at most; the rest are dropped.
    pub per_second: u64,
}

/// One running trace.
pub struct Tracer {
    events: mpsc::Sender<TraceEvent>,
    limits: TraceLimits,
    recorded: AtomicU64,
    dropped: AtomicU64,
    /// The current one-second window: its start (ms since `origin`) and the
    /// events recorded in it.
    window: AtomicU64,
    in_window: AtomicU64,
    origin: Instant,
    finished: AtomicBool,
    /// For host calls: only functions starting with it (`storage`,
    /// `process.call`).
    filter: Option<String>,
}

impl Tracer {
    /// A tracer and the receiving end of its events.
    pub fn new(limits: TraceLimits) -> (Self, mpsc::Receiver<TraceEvent>) {
        Self::filtered(limits, None)
    }

    /// A tracer of the host calls whose name starts with `filter`.
    pub fn filtered(
        limits: TraceLimits,
        filter: Option<String>,
    ) -> (Self, mpsc::Receiver<TraceEvent>) {
        let (events, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let tracer = Self {
            events,
            limits,
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            window: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            origin: Instant::now(),
            finished: AtomicBool::new(false),
            filter,
        };
        (tracer, receiver)
    }

    /// Offers one message. Returns false once the trace is over (its count
    /// reached, or its reader gone): the caller lets go of the tracer.
    pub fn offer(&self, key: &ProcessKey, pid: Pid, kind: EventKind, message: &[u8]) -> bool {
        if self.is_finished() {
            return false;
        }
        if !self.admit() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let event = TraceEvent {
            at: SystemTime::now(),
            key: key.clone(),
            pid,
            kind,
            bytes: message[..message.len().min(MAX_TRACED_BYTES)].to_vec(),
            len: message.len(),
        };
        match self.events.try_send(event) {
            Ok(()) => {
                let recorded = self.recorded.fetch_add(1, Ordering::Relaxed) + 1;
                if recorded >= self.limits.count {
                    self.finished.store(true, Ordering::Release);
                    return false;
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.finished.store(true, Ordering::Release);
                false
            }
        }
    }

    /// Whether this trace wants host call `function` (and is not over).
    pub fn wants(&self, function: &str) -> bool {
        !self.is_finished()
            && self
                .filter
                .as_deref()
                .is_none_or(|filter| function.starts_with(filter))
    }

    /// Whether the trace is over: its count reached, or its reader gone.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire) || self.events.is_closed()
    }

    /// Events dropped so far (over the rate, or the reader behind).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> TraceLimits {
        self.limits
    }

    /// Within the rate? A fixed one-second window, shared by every
    /// process the tracer watches.
    fn admit(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window = now / 1000;
        if self.window.swap(window, Ordering::AcqRel) != window {
            self.in_window.store(0, Ordering::Release);
        }
        self.in_window.fetch_add(1, Ordering::AcqRel) < self.limits.per_second
    }
}

/// Bytes as a trace shows them when nothing can render them: printable
/// ASCII as is, the rest as `\xNN`, cut at 120 characters, and the length
/// when it was cut.
pub fn render_bytes(bytes: &[u8], len: usize) -> String {
    let mut out = String::new();
    for &byte in bytes {
        if out.len() >= 120 {
            break;
        }
        match byte {
            b' '..=b'~' => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    if out.len() >= 120 || bytes.len() < len {
        out.push_str(&format!("... ({len} bytes)"));
    }
    format!("<<{out}>>")
}

/// How long a trace runs when not told.
pub const DEFAULT_TRACE_DURATION: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ProcessKey {
        ProcessKey::new("c", "p")
    }

    #[test]
    fn a_trace_stops_after_its_count() {
        let (tracer, mut events) = Tracer::new(TraceLimits {
            count: 2,
            per_second: 100,
        });
        assert!(tracer.offer(&key(), 1, EventKind::Call, b"one"));
        assert!(!tracer.offer(&key(), 1, EventKind::Reply, b"two"));
        assert!(!tracer.offer(&key(), 1, EventKind::Call, b"three"));
        assert_eq!(
            events.try_recv().map(|e| e.bytes).ok(),
            Some(b"one".to_vec())
        );
        assert_eq!(
            events.try_recv().map(|e| e.kind).ok(),
            Some(EventKind::Reply)
        );
        assert!(events.try_recv().is_err(), "nothing past the count");
    }

    #[test]
    fn past_the_rate_events_are_dropped_and_counted() {
        let (tracer, mut events) = Tracer::new(TraceLimits {
            count: 1000,
            per_second: 3,
        });
        for _ in 0..10 {
            assert!(tracer.offer(&key(), 1, EventKind::Cast, b"x"));
        }
        let mut received = 0;
        while events.try_recv().is_ok() {
            received += 1;
        }
        // The window may roll over once during the loop.
        assert!((3..=6).contains(&received), "{received}");
        assert_eq!(tracer.dropped(), 10 - received);
    }

    #[test]
    fn bytes_render_readably_and_bounded() {
        assert_eq!(render_bytes(b"ok\x01", 3), "<<ok\\x01>>");
        let long = vec![b'a'; 300];
        let shown = render_bytes(&long, 300);
        assert!(shown.ends_with("... (300 bytes)>>"), "{shown}");
        assert!(shown.len() < 160);
    }

    #[test]
    fn a_filtered_tracer_wants_only_its_functions() {
        let limits = TraceLimits {
            count: 10,
            per_second: 10,
        };
        let (tracer, _events) = Tracer::filtered(limits, Some("storage".into()));
        assert!(tracer.wants("storage.put"));
        assert!(!tracer.wants("process.call"));
        let (all, _events) = Tracer::new(limits);
        assert!(all.wants("process.call"));
    }

    #[test]
    fn a_trace_whose_reader_left_is_over_and_large_messages_are_cut() {
        let (tracer, mut events) = Tracer::new(TraceLimits {
            count: 10,
            per_second: 10,
        });
        assert!(tracer.offer(&key(), 1, EventKind::Call, &vec![7; 10_000]));
        let event = events.try_recv().expect("an event");
        assert_eq!((event.bytes.len(), event.len), (MAX_TRACED_BYTES, 10_000));
        drop(events);
        assert!(!tracer.offer(&key(), 1, EventKind::Call, b"x"));
        assert!(tracer.is_finished());
    }
}
