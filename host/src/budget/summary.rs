//! Repeated failures summarised: the first failure from a source in an
//! interval is logged; the ones after it are counted, and the count goes
//! out with the next line from that source. A flood of failed handshakes
//! or accepts then writes a line per source per interval, not one per
//! attempt, and cannot rotate the log's history away.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources tracked at once; failures from any more are summarised under
/// one shared entry.
const MAX_SOURCES: usize = 1024;
/// The entry every source past `MAX_SOURCES` shares.
const OTHER_SOURCES: &str = "other sources";

/// One kind of failure, summarised per source.
#[derive(Debug)]
pub struct FailureSummary {
    interval: Duration,
    sources: Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Failures since the last line logged.
    unlogged: u64,
}

impl FailureSummary {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure from `source`. `Some(n)` says to log it now, with
    /// `n` failures from that source not logged since its last line;
    /// `None`, to count it only.
    pub fn record(&self, source: &str) -> Option<u64> {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= MAX_SOURCES {
            let interval = self.interval;
            sources.retain(|_, window| now.duration_since(window.started) < interval);
        }
        let key = if sources.len() >= MAX_SOURCES && !sources.contains_key(source) {
            OTHER_SOURCES
        } else {
            source
        };
        match sources.get_mut(key) {
            Some(window) if now.duration_since(window.started) < self.interval => {
                window.unlogged += 1;
                None
            }
            Some(window) => {
                let unlogged = window.unlogged;
                *window = Window {
                    started: now,
                    unlogged: 0,
                };
                Some(unlogged)
            }
            None => {
                sources.insert(
                    key.to_string(),
                    Window {
                        started: now,
                        unlogged: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// What a logged line adds about the failures it stood for: nothing, or
/// " (and N more like it since the last line)".
pub fn and_more(unlogged: u64) -> String {
    match unlogged {
        0 => String::new(),
        1 => " (and 1 more like it since the last line)".to_string(),
        n => format!(" (and {n} more like it since the last line)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_interval_with_the_count() {
        let summary = FailureSummary::new(Duration::from_millis(200));
        assert_eq!(summary.record("10.0.0.1"), Some(0));
        assert_eq!(summary.record("10.0.0.2"), Some(0));
        for _ in 0..5 {
            assert_eq!(summary.record("10.0.0.1"), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(summary.record("10.0.0.1"), Some(5));
        assert_eq!(summary.record("10.0.0.1"), None);
    }

    #[test]
    fn many_sources_share_one_entry_past_the_bound() {
        let summary = FailureSummary::new(Duration::from_secs(3600));
        let logged = (0..MAX_SOURCES + 500)
            .filter(|n| summary.record(&format!("source {n}")).is_some())
            .count();
        assert_eq!(logged, MAX_SOURCES + 1);
        let sources = summary.sources.lock().expect("lock");
        assert_eq!(sources.len(), MAX_SOURCES + 1);
        assert_eq!(sources[OTHER_SOURCES].unlogged, 499);
    }
}
