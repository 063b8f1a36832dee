//! The supervisor: OTP's one-for-one strategy with restart intensity, per
//! process name.
//!
//! A crashed process is not restarted eagerly: the next message to its name
//! starts a fresh one, which loads its state from storage in `init` (that
//! is the restart). What the supervisor keeps is the crash history: more than
//! `max_restarts` crashes of one name within `period`, and the name is
//! refused for `cooldown`, so a poisoned message or a broken `init` cannot
//! burn the node's CPU in a crash loop.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::error::CallError;
use super::id::ProcessKey;
use crate::config::RestartIntensity;

/// Names whose restarts are remembered for the console; past it, the name
/// whose last crash is oldest is forgotten.
const REMEMBERED_NAMES: usize = 10_000;

/// Crashes kept per name, newest last.
const REMEMBERED_CRASHES: usize = 5;

/// Bytes of a crash's reason kept (a guest chooses its `init` error).
const REMEMBERED_REASON_BYTES: usize = 1024;

pub struct Supervisor {
    intensity: RestartIntensity,
    history: Mutex<HashMap<ProcessKey, CrashHistory>>,
    restarts: Mutex<HashMap<ProcessKey, Restarts>>,
}

/// One name's restart history, as `tree` and `info` show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Restarts {
    /// Crashes since the node started (each one a restart on the next
    /// message).
    pub count: u64,
    /// The last few: when, and why.
    pub recent: VecDeque<(SystemTime, String)>,
}

#[derive(Default)]
struct CrashHistory {
    crashes: VecDeque<Instant>,
    refused_until: Option<Instant>,
}

impl Supervisor {
    pub fn new(intensity: RestartIntensity) -> Self {
        Self {
            intensity,
            history: Mutex::new(HashMap::new()),
            restarts: Mutex::new(HashMap::new()),
        }
    }

    pub fn intensity(&self) -> &RestartIntensity {
        &self.intensity
    }

    /// The restart history of `key`, if it ever crashed.
    pub fn restarts_of(&self, key: &ProcessKey) -> Option<Restarts> {
        let restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        restarts.get(key).cloned()
    }

    /// Every remembered restart history.
    pub fn all_restarts(&self) -> Vec<(ProcessKey, Restarts)> {
        let restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        restarts
            .iter()
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect()
    }

    fn remember(&self, key: &ProcessKey, reason: &str) {
        let mut restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        if !restarts.contains_key(key) && restarts.len() >= REMEMBERED_NAMES {
            let oldest = restarts
                .iter()
                .min_by_key(|(_, record)| record.recent.back().map(|(at, _)| *at))
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                restarts.remove(&oldest);
            }
        }
        let record = restarts.entry(key.clone()).or_default();
        record.count += 1;
        let mut reason = reason.to_string();
        if reason.len() > REMEMBERED_REASON_BYTES {
            reason.truncate(reason.floor_char_boundary(REMEMBERED_REASON_BYTES));
            reason.push_str("...");
        }
        record.recent.push_back((SystemTime::now(), reason));
        if record.recent.len() > REMEMBERED_CRASHES {
            record.recent.pop_front();
        }
    }

    /// May `key` be started now?
    pub fn admit(&self, key: &ProcessKey) -> Result<(), CallError> {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = history.get_mut(key) else {
            return Ok(());
        };
        let now = Instant::now();
        if let Some(until) = entry.refused_until {
            if now < until {
                let left = until - now;
                return Err(CallError::Refused(format!(
                    "`{key}` crashed more than {} times in {:?}; refused for another {:.1}s",
                    self.intensity.max_restarts,
                    self.intensity.period,
                    left.as_secs_f64()
                )));
            }
            entry.refused_until = None;
            entry.crashes.clear();
        }
        self.forget_old_crashes(entry, now);
        if entry.crashes.is_empty() {
            history.remove(key);
        }
        Ok(())
    }

    /// Records that `key` crashed, and why; returns true when this crash
    /// used up its restart intensity and the name is now cooling down.
    pub fn record_crash(&self, key: &ProcessKey, reason: &str) -> bool {
        self.remember(key, reason);
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let entry = history.entry(key.clone()).or_default();
        let now = Instant::now();
        self.forget_old_crashes(entry, now);
        entry.crashes.push_back(now);
        let too_many = entry.crashes.len() > self.intensity.max_restarts as usize;
        if too_many {
            entry.refused_until = Some(now + self.intensity.cooldown);
        }
        too_many
    }

    fn forget_old_crashes(&self, entry: &mut CrashHistory, now: Instant) {
        while entry
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.intensity.period)
        {
            entry.crashes.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn supervisor(cooldown: Duration) -> Supervisor {
        Supervisor::new(RestartIntensity {
            max_restarts: 2,
            period: Duration::from_secs(60),
            cooldown,
        })
    }

    #[test]
    fn a_name_is_refused_once_it_crashes_past_its_intensity() {
        let supervisor = supervisor(Duration::from_secs(60));
        let key = ProcessKey::new("c", "p");
        assert!(!supervisor.record_crash(&key, "test"));
        assert!(!supervisor.record_crash(&key, "test"));
        assert!(supervisor.admit(&key).is_ok());
        assert!(supervisor.record_crash(&key, "test"));
        assert!(matches!(supervisor.admit(&key), Err(CallError::Refused(_))));
        // Other names are unaffected.
        assert!(supervisor.admit(&ProcessKey::new("c", "q")).is_ok());
    }

    #[test]
    fn the_cooldown_ends() {
        let supervisor = supervisor(Duration::from_millis(20));
        let key = ProcessKey::new("c", "p");
        for _ in 0..3 {
            supervisor.record_crash(&key, "test");
        }
        assert!(supervisor.admit(&key).is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(supervisor.admit(&key).is_ok());
    }
}
