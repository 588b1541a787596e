//! One log line per cause per interval. A fault that fails every call (a full disk, a store that
//! refuses writes) would otherwise write an ERROR line per call, thousands a second, burying the
//! first line that says what happened. The calls themselves are all counted by the metrics; the
//! log keeps one line a second per cause, each saying how many it stood for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lines written and held back, per cause.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    causes: Mutex<HashMap<&'static str, Window>>,
}

#[derive(Debug)]
struct Window {
    last_line: Instant,
    held_back: u64,
}

impl LogLimit {
    /// At most one line per cause each `every`.
    pub fn new(every: Duration) -> Self {
        LogLimit { every, causes: Mutex::new(HashMap::new()) }
    }

    /// Whether a line for `cause` at `now` is written: `Some(n)` with the `n` lines of the same
    /// cause held back since the last one written, or `None` (held back and counted).
    pub fn admit(&self, cause: &'static str, now: Instant) -> Option<u64> {
        let mut causes = self.causes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match causes.get_mut(cause) {
            Some(window) if now.saturating_duration_since(window.last_line) < self.every => {
                window.held_back += 1;
                None
            }
            Some(window) => {
                let held_back = std::mem::take(&mut window.held_back);
                window.last_line = now;
                Some(held_back)
            }
            None => {
                causes.insert(cause, Window { last_line: now, held_back: 0 });
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_cause_per_interval_and_the_next_line_counts_the_ones_held_back() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(limit.admit("store_io", at(0)), Some(0), "the first line is written");
        assert_eq!(limit.admit("store_io", at(10)), None);
        assert_eq!(limit.admit("store_io", at(999)), None);
        assert_eq!(limit.admit("invariant", at(500)), Some(0), "another cause has its own window");
        assert_eq!(limit.admit("store_io", at(1000)), Some(2), "a second on: written, with the two held back");
        assert_eq!(limit.admit("store_io", at(1500)), None);
        assert_eq!(limit.admit("store_io", at(5000)), Some(1));
        assert_eq!(limit.admit("store_io", at(7000)), Some(0), "nothing held back since");
    }
}
