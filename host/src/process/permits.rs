//! Instance permits: how a node keeps far more processes alive than it
//! holds component instances.
//!
//! A process holds one of the node's instance permits (`--max-instances`)
//! only while it has an instance, running or parked. When a process needs
//! one and none is free, the oldest holders are asked to make room (a
//! parked one hibernates: its state is handed over and its instance
//! dropped, `crate::process::resting::make_room`). The pool of the wasm
//! engine has an instance for each permit, plus those of HTTP handlers and
//! the console, which are not counted here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::mailbox::Mailbox;

/// Processes asked to make room each time a process finds no permit free:
/// a few at once, so a burst of starts does not ask one at a time.
const ASKED_PER_SHORTAGE: usize = 8;

/// How often a process still waiting for a permit asks again.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(20);

/// The instance permits processes may hold at once, and the processes
/// holding them, oldest first.
pub struct InstancePermits<R> {
    permits: Arc<Semaphore>,
    total: u32,
    /// Processes that got a permit, oldest first: whom to ask to make room.
    /// Entries of processes that have since hibernated or ended are skipped
    /// when met, and swept out when the queue grows past twice the permits.
    holders: Mutex<VecDeque<Mailbox<R>>>,
}

/// A held permit; dropping it frees it. Drop it after the instance.
pub type InstancePermit = OwnedSemaphorePermit;

impl<R> InstancePermits<R> {
    pub fn new(total: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            holders: Mutex::new(VecDeque::new()),
        }
    }

    fn holders(&self) -> MutexGuard<'_, VecDeque<Mailbox<R>>> {
        // Pushes and pops only: a poisoned lock is safe to keep using.
        self.holders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// Permits held now.
    pub fn held(&self) -> u32 {
        self.total
            .saturating_sub(u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX))
    }

    /// A permit, at once if one is free. Otherwise holders, oldest first,
    /// are offered to `make_room` (which hibernates the idle ones and says
    /// whether it did), and this waits up to `within` for a permit.
    pub async fn acquire(
        &self,
        within: Duration,
        make_room: impl Fn(&Mailbox<R>) -> bool,
    ) -> Result<InstancePermit, String> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let give_up = Instant::now() + within;
        loop {
            self.ask(ASKED_PER_SHORTAGE, &make_room);
            let wait = ASK_AGAIN_AFTER.min(give_up.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => return Ok(permit),
                Ok(Err(_)) => return Err("the node is shutting down".into()),
                Err(_) if Instant::now() >= give_up => {
                    return Err(format!(
                        "no instance came free within {within:?}: all {} are held by \
                         processes busy with messages (--max-instances)",
                        self.total
                    ));
                }
                Err(_) => {}
            }
        }
    }

    /// Records that the process of `mailbox` now holds a permit;
    /// `still_holds` tells, when the list is swept, which holders still do.
    pub fn held_by(&self, mailbox: Mailbox<R>, still_holds: impl Fn(&Mailbox<R>) -> bool) {
        let mut holders = self.holders();
        holders.push_back(mailbox);
        if holders.len() > 2 * self.total as usize + 64 {
            holders.retain(still_holds);
        }
    }

    /// Offers up to `count` holders, oldest first, to `make_room`, until
    /// `count` of them have made room (or were asked to, once done).
    fn ask(&self, count: usize, make_room: &impl Fn(&Mailbox<R>) -> bool) {
        let mut asked = 0;
        let mut offered = 0;
        let mut holders = self.holders();
        let held = holders.len();
        while asked < count && offered < held {
            let Some(mailbox) = holders.pop_front() else {
                break;
            };
            offered += 1;
            if make_room(&mailbox) {
                asked += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::process::mailbox::{self, Idle};

    #[tokio::test]
    async fn a_shortage_asks_the_oldest_holders_first_and_waits_for_a_permit() {
        let permits = Arc::new(InstancePermits::<Idle>::new(2));
        let (first, _first_inbox) = mailbox::new::<Idle>(1024);
        let (second, _second_inbox) = mailbox::new::<Idle>(1024);
        let a = permits
            .acquire(Duration::ZERO, |_| false)
            .await
            .expect("free");
        permits.held_by(first.clone(), |_| true);
        let _b = permits
            .acquire(Duration::ZERO, |_| false)
            .await
            .expect("free");
        permits.held_by(second, |_| true);
        assert_eq!(permits.held(), 2);

        // The oldest holder is asked, and makes room by letting go.
        let asked = AtomicUsize::new(0);
        let held = std::sync::Mutex::new(Some(a));
        let oldest = first.clone();
        let got = permits
            .acquire(Duration::from_secs(5), |mailbox| {
                asked.fetch_add(1, Ordering::SeqCst);
                if mailbox.same_as(&oldest) {
                    held.lock().expect("held").take();
                    return true;
                }
                false
            })
            .await;
        assert!(got.is_ok(), "the freed permit is taken");
        assert_eq!(asked.load(Ordering::SeqCst), 2, "both holders offered");
    }

    #[tokio::test]
    async fn without_room_the_wait_ends_with_the_reason() {
        let permits = InstancePermits::<Idle>::new(1);
        let _held = permits
            .acquire(Duration::ZERO, |_| false)
            .await
            .expect("free");
        let error = permits
            .acquire(Duration::from_millis(30), |_| false)
            .await
            .expect_err("none comes free");
        assert!(error.contains("--max-instances"), "{error}");
    }
}
