//! Which code each process should run: a component's *target*.
//!
//! Normally a component has one version, its current code. During a hot
//! swap it has a second, `next`, which new processes start on and live ones
//! move to, all of them or a sticky share by name (a canary). A process
//! compares its code with its target at every message boundary; the
//! table's epoch says in one atomic load whether anything changed since it
//! last looked.
//!
//! A swap's progress (moves made and failed, crashes on the new code, the
//! pause of each move) is counted here, where the processes see it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

/// Moves whose pause is kept, for the percentiles: past it, the oldest go.
const PAUSES_KEPT: usize = 100_000;

/// Which way a swap moves processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// To a newer version: it reads the states the current one hands over
    /// (`take-over-from`).
    Up,
    /// Back to an older one: the current code hands its state down in the
    /// older one's format (`hand-over-to`), or the process restarts from
    /// storage.
    Down,
}

impl Direction {
    /// Which way a process moves from `from` to `to`: down to an older
    /// generation, else up.
    pub fn between<C: super::Code>(from: &C, to: &C) -> Self {
        if to.generation() < from.generation() {
            Direction::Down
        } else {
            Direction::Up
        }
    }
}

/// A component's target: its current code and, during a swap, the next;
/// after a rollback, the code processes are leaving and how.
pub struct Target<C> {
    pub current: Arc<C>,
    pub next: Option<Next<C>>,
    pub leaving: Option<Next<C>>,
}

/// The code a swap moves processes to (or, as `leaving`, from).
pub struct Next<C> {
    pub code: Arc<C>,
    /// Percent of the names (by a hash of the name: sticky) that run it.
    pub share: u8,
    pub progress: Arc<SwapProgress>,
}

impl<C> Clone for Next<C> {
    fn clone(&self) -> Self {
        Self {
            code: self.code.clone(),
            share: self.share,
            progress: self.progress.clone(),
        }
    }
}

impl<C> Target<C> {
    /// One version, no swap.
    pub fn only(code: Arc<C>) -> Self {
        Self {
            current: code,
            next: None,
            leaving: None,
        }
    }

    /// The code process `name` should run.
    pub fn for_name(&self, name: &str) -> &Arc<C> {
        match &self.next {
            Some(next) if in_share(name, next.share) => &next.code,
            _ => &self.current,
        }
    }

    /// How a process on `from` moves to `to` (by their generations: down
    /// to an older one), and whose progress counts it: the swap's, into the
    /// next code; the rollback's, out of code being left.
    pub fn move_to(&self, to: &Arc<C>, from: &Arc<C>) -> (Direction, Option<Arc<SwapProgress>>)
    where
        C: super::Code,
    {
        let direction = Direction::between(from.as_ref(), to.as_ref());
        let progress = self
            .next
            .as_ref()
            .filter(|next| Arc::ptr_eq(&next.code, to))
            .or_else(|| {
                self.leaving
                    .as_ref()
                    .filter(|leaving| Arc::ptr_eq(&leaving.code, from))
            })
            .map(|next| next.progress.clone());
        (direction, progress)
    }

    /// The swap's progress, when `code` is the code it moves processes to.
    pub fn progress_of(&self, code: &Arc<C>) -> Option<&Arc<SwapProgress>> {
        self.next
            .as_ref()
            .filter(|next| Arc::ptr_eq(&next.code, code))
            .map(|next| &next.progress)
    }
}

/// Whether `name` falls in the first `share` percent of names: a stable
/// hash (FNV-1a), so a canary keeps the same processes.
pub fn in_share(name: &str, share: u8) -> bool {
    if share >= 100 {
        return true;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 100 < u64::from(share)
}

/// The targets of a node's components, by name.
pub struct Targets<C> {
    targets: HashMap<Arc<str>, ArcSwap<Target<C>>>,
    /// Moves on every change of any target.
    epoch: AtomicU64,
}

impl<C> Targets<C> {
    /// Every component running its one version.
    pub fn new(components: impl IntoIterator<Item = (Arc<str>, Arc<C>)>) -> Self {
        Self {
            targets: components
                .into_iter()
                .map(|(name, code)| (name, ArcSwap::from_pointee(Target::only(code))))
                .collect(),
            epoch: AtomicU64::new(0),
        }
    }

    /// The epoch: it changes whenever a target does.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The target of `component`, with the component's name as the table
    /// holds it (`load` it: a read costs no reference count).
    pub fn get(&self, component: &str) -> Option<(&Arc<str>, &ArcSwap<Target<C>>)> {
        self.targets.get_key_value(component)
    }

    /// Sets `component`'s target; false if no such component is loaded.
    pub fn set(&self, component: &str, target: Target<C>) -> bool {
        let Some(slot) = self.targets.get(component) else {
            return false;
        };
        slot.store(Arc::new(target));
        self.epoch.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// What a swap has done so far, counted where it happens.
#[derive(Default)]
pub struct SwapProgress {
    /// Processes moved to the new code (started on it, not counted).
    pub moved: AtomicU64,
    /// Moves whose take-over failed: those processes stay on the old code.
    pub failed: AtomicU64,
    /// Processes moved back (a rollback) by a restart from storage, their
    /// state not handed down.
    pub restarted: AtomicU64,
    /// Processes on the new code that crashed.
    pub crashed: AtomicU64,
    /// Processes started on the new code (not moved to it): with the
    /// moves, what the crashes are a share of.
    pub started: AtomicU64,
    /// Why the last move failed.
    pub last_failure: Mutex<Option<String>>,
    /// The pause of each move (hand-over to take-over), in microseconds.
    pauses: Mutex<std::collections::VecDeque<u32>>,
}

impl SwapProgress {
    pub(super) fn moved(&self, pause: Duration) {
        self.moved.fetch_add(1, Ordering::Relaxed);
        let mut pauses = self.pauses.lock().unwrap_or_else(|p| p.into_inner());
        if pauses.len() == PAUSES_KEPT {
            pauses.pop_front();
        }
        pauses.push_back(u32::try_from(pause.as_micros()).unwrap_or(u32::MAX));
    }

    pub(super) fn failed(&self, reason: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// The pauses' 50th and 99th percentiles and maximum.
    pub fn pauses(&self) -> Option<(Duration, Duration, Duration)> {
        let mut pauses = self
            .pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect::<Vec<u32>>();
        if pauses.is_empty() {
            return None;
        }
        pauses.sort_unstable();
        let at = |q: f64| {
            let index = ((pauses.len() - 1) as f64 * q).round() as usize;
            Duration::from_micros(u64::from(pauses[index]))
        };
        Some((at(0.5), at(0.99), at(1.0)))
    }

    pub fn load(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_sticky_and_about_its_size() {
        let names: Vec<String> = (0..10_000).map(|i| format!("list-{i}")).collect();
        let in_ten = names.iter().filter(|name| in_share(name, 10)).count();
        assert!((800..1200).contains(&in_ten), "{in_ten}");
        for name in &names {
            assert_eq!(in_share(name, 10), in_share(name, 10));
            if in_share(name, 10) {
                assert!(in_share(name, 50), "a wider share keeps the narrower");
            }
        }
        assert!(names.iter().all(|name| in_share(name, 100)));
        assert!(!names.iter().any(|name| in_share(name, 0)));
    }

    #[test]
    fn a_changed_target_moves_the_epoch() {
        let targets = Targets::new([(Arc::from("c"), Arc::new(1))]);
        let before = targets.epoch();
        let progress = Arc::new(SwapProgress::default());
        assert!(targets.set(
            "c",
            Target {
                current: Arc::new(1),
                next: Some(Next {
                    code: Arc::new(2),
                    share: 100,
                    progress,
                }),
                leaving: None,
            }
        ));
        assert_ne!(targets.epoch(), before);
        let (_, target) = targets.get("c").expect("c");
        assert_eq!(**target.load().for_name("anyone"), 2);
        assert!(!targets.set("nobody", Target::only(Arc::new(3))));
    }
}
