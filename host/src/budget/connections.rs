//! A listener's connection cap: how many of its connections may be open at
//! once, how many are, and how many were refused at the cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::metrics::Series;

/// The listeners that have a cap, each with its metrics' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Http,
    Metrics,
    Observer,
}

impl Listener {
    /// `(open, refused)` series names.
    fn series_names(self) -> (&'static str, &'static str) {
        match self {
            Listener::Http => (
                "host_http_connections",
                "host_http_connections_refused_total",
            ),
            Listener::Metrics => (
                "host_metrics_connections",
                "host_metrics_connections_refused_total",
            ),
            Listener::Observer => (
                "host_observer_connections",
                "host_observer_connections_refused_total",
            ),
        }
    }
}

/// How many connections a listener may hold at once.
#[derive(Debug)]
pub struct ConnectionCap {
    listener: Listener,
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
}

/// One admitted connection's place under its cap, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    cap: Arc<ConnectionCap>,
}

impl ConnectionCap {
    pub fn new(listener: Listener, max: usize) -> Arc<Self> {
        Arc::new(Self {
            listener,
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for one more connection, or `None` (counted) at the cap.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            });
        match taken {
            Ok(_) => Some(Admitted { cap: self.clone() }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Its metrics: connections open now, and refused at the cap so far.
    pub fn series(&self) -> Vec<Series> {
        let (open, refused) = self.listener.series_names();
        vec![
            Series::gauge(
                open,
                "Connections open now on this listener.",
                self.open() as u64,
            ),
            Series::counter(
                refused,
                "Connections closed at once because the listener was at its cap.",
                self.refused(),
            ),
        ]
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.cap.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_refuses_past_its_max_and_counts_it() {
        let cap = ConnectionCap::new(Listener::Http, 2);
        let first = cap.admit().expect("room");
        let _second = cap.admit().expect("room");
        assert!(cap.admit().is_none());
        assert!(cap.admit().is_none());
        assert_eq!((cap.open(), cap.refused()), (2, 2));
        drop(first);
        assert!(cap.admit().is_some());
        assert_eq!(cap.refused(), 2);
    }
}
