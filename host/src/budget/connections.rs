//! A listener's connection cap: how many of its connections may be open at
//! once (in all, and from one address), how many are, and how many were
//! refused at the cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// A cap on connections in all and from each address, for a listener that
/// strangers reach and whose clients each need a moment only (the port
/// mapper): one address cannot take every place.
#[derive(Debug)]
pub struct PerAddressCap {
    max: usize,
    per_address: usize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

/// One connection's place under a [`PerAddressCap`], given back when
/// dropped.
#[derive(Debug)]
pub struct AddressAdmitted {
    cap: Arc<PerAddressCap>,
    address: IpAddr,
}

impl PerAddressCap {
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_address,
            by_address: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for one more connection from `address`, or why not
    /// (counted).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<AddressAdmitted, String> {
        let mut by_address = self.lock();
        let total: usize = by_address.values().sum();
        let here = by_address.get(&address).copied().unwrap_or(0);
        let refusal = if total >= self.max {
            Some(format!("{total} connections open, the cap"))
        } else if here >= self.per_address {
            Some(format!("{here} connections open from {address}, its cap"))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(why);
        }
        *by_address.entry(address).or_insert(0) += 1;
        Ok(AddressAdmitted {
            cap: self.clone(),
            address,
        })
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for AddressAdmitted {
    fn drop(&mut self) {
        let mut by_address = self.cap.lock();
        if let Some(count) = by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

/// Answers a connection turned away at a cap with `answer` and lets it go:
/// one non-blocking write, no task, no buffer, so refusing costs less than
/// the stranger spent connecting. What the peer already sent is read and
/// dropped first (16 KiB at most): closing a socket with unread bytes
/// resets it, and the reset could reach the peer before the answer.
pub fn refuse_now(stream: &tokio::net::TcpStream, answer: &[u8]) {
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = stream.try_write(answer);
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

    #[test]
    fn one_address_cannot_take_every_place() {
        let cap = PerAddressCap::new(3, 2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = cap.admit(a).expect("room");
        let _second = cap.admit(a).expect("room");
        assert!(cap.admit(a).unwrap_err().contains("from 10.0.0.1"));
        let _third = cap.admit(b).expect("room for another address");
        assert!(cap.admit(b).unwrap_err().contains("the cap"));
        drop(first);
        assert!(cap.admit(b).is_ok());
        assert_eq!(cap.refused(), 2);
    }
}
