//! The gate in front of the distribution listener: who may start a
//! handshake, how many at once, and what a failure costs its address.
//!
//! A handshake in progress holds a descriptor and a slot until it ends, so
//! strangers must not be able to hold them all (OpenSSH's `MaxStartups`
//! and per-source penalties are the model):
//! - **Slots.** At most 64 handshakes at once: 48 for anyone, 16 more only
//!   for addresses that have authenticated before (members, the operator's
//!   tools), so a flood of strangers cannot lock the cluster out.
//! - **Per address.** 8 at once; 1 once the address has failed 3 times
//!   (a stall, garbage, a wrong cookie) without a success in between.
//! - **Penalty.** Each wrong cookie past the third is answered only after
//!   a delay that doubles (0.25 s, 0.5 s, ... up to 5 s), with one handshake
//!   at a time from that address: guessing a cookie online runs at a few
//!   guesses a second at first and one per 5 s soon after. A success
//!   clears the address's record; a quiet minute does too.
//!
//! Refusals are answered with a `Refused` frame saying why ("busy"), so a
//! tool tells the operator what happened instead of "garbage".

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Series;

/// Handshakes in progress at once that any address may hold.
const STRANGER_SLOTS: usize = 48;
/// More slots, only for addresses that have authenticated before.
const KNOWN_SLOTS: usize = 16;
/// Handshakes in progress at once from one address in good standing.
const PER_ADDRESS: usize = 8;
/// Failures from an address before it is held to one handshake at a time,
/// and before wrong cookies are answered late.
const FREE_FAILURES: u32 = 3;
/// The first delay before a wrong cookie is answered; it doubles per
/// failure, up to `MAX_FAILURE_DELAY`.
const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(250);
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);
/// A failure record is forgotten after this long without a failure.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// A known address is forgotten after this long without authenticating.
const KNOWN_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Addresses remembered at once, known or failing (each map), so that the
/// gate's own memory is bounded too.
const MAX_REMEMBERED: usize = 4096;

/// How every refusal for want of a slot begins.
pub const BUSY: &str = "busy: ";

/// How a handshake that did not finish went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It sent nothing, or not enough, in time.
    Stalled,
    /// It sent what is not our protocol.
    Garbage,
    /// It proved a different cookie.
    WrongCookie,
}

/// The gate's state, shared with the slots it hands out.
#[derive(Default)]
pub struct HandshakeGate {
    state: Mutex<GateState>,
    refused_busy: AtomicU64,
    failed: AtomicU64,
    delayed: AtomicU64,
}

#[derive(Default)]
struct GateState {
    /// Slots held now: by anyone, and by known addresses past the first
    /// pool.
    strangers: usize,
    known_extra: usize,
    in_progress: HashMap<IpAddr, usize>,
    failures: HashMap<IpAddr, FailureRecord>,
    /// Addresses that authenticated, and when they last did.
    known: HashMap<IpAddr, Instant>,
}

#[derive(Debug, Clone, Copy)]
struct FailureRecord {
    count: u32,
    last: Instant,
}

/// One handshake's place at the gate; given back when dropped.
pub struct HandshakeSlot {
    gate: Arc<HandshakeGate>,
    address: IpAddr,
    extra: bool,
}

impl HandshakeGate {
    /// A slot for a handshake from `address`, or why not (said to the
    /// peer, and counted).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<HandshakeSlot, String> {
        let now = Instant::now();
        let mut state = self.lock();
        let failures = state.failures_of(address, now);
        let per_address = if failures >= FREE_FAILURES {
            1
        } else {
            PER_ADDRESS
        };
        let busy = |why: String| {
            self.refused_busy.fetch_add(1, Ordering::Relaxed);
            Err(format!("{BUSY}{why}; try again shortly"))
        };
        let here = state.in_progress.get(&address).copied().unwrap_or(0);
        if here >= per_address {
            return busy(format!(
                "{here} handshake(s) from {address} already in progress"
            ));
        }
        let extra = if state.strangers < STRANGER_SLOTS {
            false
        } else if state.is_known(address, now) && state.known_extra < KNOWN_SLOTS {
            true
        } else {
            return busy(format!(
                "{} handshakes already in progress",
                state.strangers + state.known_extra
            ));
        };
        if extra {
            state.known_extra += 1;
        } else {
            state.strangers += 1;
        }
        *state.in_progress.entry(address).or_insert(0) += 1;
        Ok(HandshakeSlot {
            gate: self.clone(),
            address,
            extra,
        })
    }

    /// Its metrics.
    pub fn series(&self) -> Vec<Series> {
        vec![
            Series::counter(
                "host_handshakes_refused_busy_total",
                "Distribution connections refused at once: every handshake slot (or every \
                 slot of their address) was taken.",
                self.refused_busy.load(Ordering::Relaxed),
            ),
            Series::counter(
                "host_handshakes_failed_total",
                "Distribution handshakes that failed: stalled, garbage or a wrong cookie.",
                self.failed.load(Ordering::Relaxed),
            ),
            Series::counter(
                "host_handshakes_delayed_total",
                "Wrong cookies answered late, past their address's free failures.",
                self.delayed.load(Ordering::Relaxed),
            ),
        ]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl GateState {
    /// The address's failures, forgetting them after a quiet minute.
    fn failures_of(&mut self, address: IpAddr, now: Instant) -> u32 {
        match self.failures.get(&address) {
            Some(record) if now.duration_since(record.last) < FAILURE_MEMORY => record.count,
            Some(_) => {
                self.failures.remove(&address);
                0
            }
            None => 0,
        }
    }

    fn is_known(&self, address: IpAddr, now: Instant) -> bool {
        self.known
            .get(&address)
            .is_some_and(|since| now.duration_since(*since) < KNOWN_MEMORY)
    }

    /// Makes room in `map` for one more address: the stale entries go
    /// first, then the oldest.
    fn make_room<V>(map: &mut HashMap<IpAddr, V>, last: impl Fn(&V) -> Instant, keep: Duration) {
        if map.len() < MAX_REMEMBERED {
            return;
        }
        let now = Instant::now();
        map.retain(|_, value| now.duration_since(last(value)) < keep);
        if map.len() >= MAX_REMEMBERED
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, value)| last(value))
                .map(|(address, _)| *address)
        {
            map.remove(&oldest);
        }
    }
}

impl HandshakeSlot {
    /// The peer authenticated: its address is known from now on, and its
    /// failures are forgiven.
    pub fn succeeded(&self) {
        let mut state = self.gate.lock();
        state.failures.remove(&self.address);
        GateState::make_room(&mut state.known, |since| *since, KNOWN_MEMORY);
        state.known.insert(self.address, Instant::now());
    }

    /// How long to wait before telling the peer that `failure` ended its
    /// handshake: zero, but for a wrong cookie past its address's free
    /// failures. Call it before [`HandshakeSlot::failed`] records it.
    pub fn refusal_delay(&self, failure: Failure) -> Duration {
        let count = {
            let mut state = self.gate.lock();
            state.failures_of(self.address, Instant::now()) + 1
        };
        if failure != Failure::WrongCookie || count <= FREE_FAILURES {
            return Duration::ZERO;
        }
        self.gate.delayed.fetch_add(1, Ordering::Relaxed);
        let doublings = (count - FREE_FAILURES - 1).min(16);
        (FIRST_FAILURE_DELAY * 2u32.pow(doublings)).min(MAX_FAILURE_DELAY)
    }

    /// The handshake failed: its address's record grows.
    pub fn failed(&self) {
        self.gate.failed.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut state = self.gate.lock();
        let count = state.failures_of(self.address, now) + 1;
        GateState::make_room(&mut state.failures, |record| record.last, FAILURE_MEMORY);
        state
            .failures
            .insert(self.address, FailureRecord { count, last: now });
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        if self.extra {
            state.known_extra -= 1;
        } else {
            state.strangers -= 1;
        }
        if let Some(count) = state.in_progress.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                state.in_progress.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn strangers_cannot_take_the_slots_of_known_addresses() {
        let gate = Arc::new(HandshakeGate::default());
        let member = ip(1);
        gate.admit(member).expect("room").succeeded();
        let mut held = Vec::new();
        for attacker in 2..=7 {
            for _ in 0..PER_ADDRESS {
                held.push(gate.admit(ip(attacker)).expect("room"));
            }
        }
        assert_eq!(held.len(), STRANGER_SLOTS);
        let refused = gate.admit(ip(8)).err().expect("strangers are full");
        assert!(refused.starts_with("busy: 48 handshakes"), "{refused}");
        let slots: Vec<_> = (0..PER_ADDRESS)
            .map(|_| gate.admit(member).expect("a known address's slot"))
            .collect();
        assert!(gate.admit(member).is_err(), "its own limit still holds");
        drop(held);
        assert!(gate.admit(ip(8)).is_ok());
        drop(slots);
    }

    #[test]
    fn an_address_that_keeps_failing_gets_one_slot_and_late_answers() {
        let gate = Arc::new(HandshakeGate::default());
        let guesser = ip(7);
        let mut delays = Vec::new();
        for _ in 0..8 {
            let slot = gate.admit(guesser).expect("one at a time");
            delays.push(slot.refusal_delay(Failure::WrongCookie));
            slot.failed();
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 250, 500, 1000, 2000, 4000]);
        let first = gate.admit(guesser).expect("one");
        assert!(gate.admit(guesser).is_err(), "only one at a time now");
        assert_eq!(first.refusal_delay(Failure::WrongCookie), MAX_FAILURE_DELAY);
        first.failed();
        drop(first);
        // Stalls and garbage count, but are not answered late.
        let other = ip(8);
        for _ in 0..5 {
            let slot = gate.admit(other).expect("slot");
            assert_eq!(slot.refusal_delay(Failure::Stalled), Duration::ZERO);
            slot.failed();
        }
        let _one = gate.admit(other).expect("one");
        assert!(gate.admit(other).is_err());
        // A success forgives.
        let good = gate.admit(guesser).expect("slot");
        good.succeeded();
        drop(good);
        let many: Vec<_> = (0..PER_ADDRESS).map(|_| gate.admit(guesser)).collect();
        assert!(many.iter().all(Result::is_ok));
    }
}
