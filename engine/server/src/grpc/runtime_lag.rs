//! How late the engine's own tasks run: the overload signal that counts the work queued in front
//! of the handlers.
//!
//! Why: the in-flight bound only sees calls that reached a handler. When the CPU is saturated the
//! queue forms earlier, in tokio's run queue (HTTP/2 frames, decoding, every wake-up of a running
//! call), where no semaphore can see it, and every admitted call waits in it at each step. A task
//! here asks to wake every millisecond and records how late it woke (a moving average); while
//! that lateness is above `limits.scheduling_delay_max_ms`, new calls are refused at once with
//! OVERLOADED, which costs a fraction of serving them, so the queue drains and the admitted calls
//! keep their latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

/// How often the watcher wakes.
const TICK: Duration = Duration::from_millis(1);

/// The moving average of the watcher's lateness, in microseconds.
#[derive(Debug, Default)]
pub struct RuntimeLag {
    average_us: AtomicU64,
}

impl RuntimeLag {
    /// Starts the watcher on the current runtime; it stops when the returned value is dropped.
    pub fn watch() -> Arc<RuntimeLag> {
        let lag = Arc::new(RuntimeLag::default());
        tokio::spawn(watcher(Arc::downgrade(&lag)));
        lag
    }

    /// The current average lateness.
    pub fn current(&self) -> Duration {
        Duration::from_micros(self.average_us.load(Ordering::Relaxed))
    }

    /// Folds one observation into the average (weight 1/8: a burst of lateness shows within a
    /// few milliseconds, and one late wake-up does not trip it).
    fn observe(&self, late: Duration) {
        let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let old = self.average_us.load(Ordering::Relaxed);
        self.average_us.store(old - old / 8 + late / 8, Ordering::Relaxed);
    }
}

async fn watcher(lag: Weak<RuntimeLag>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let gauge = metrics::gauge!("loyalty_runtime_lag_seconds");
    loop {
        let due = ticks.tick().await;
        let late = Instant::now().saturating_duration_since(due);
        let Some(lag) = lag.upgrade() else { return };
        lag.observe(late);
        gauge.set(lag.current().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_lateness_and_decays() {
        let lag = RuntimeLag::default();
        for _ in 0..64 {
            lag.observe(Duration::from_millis(8));
        }
        assert!(lag.current() > Duration::from_millis(7), "{:?}", lag.current());
        for _ in 0..64 {
            lag.observe(Duration::ZERO);
        }
        assert!(lag.current() < Duration::from_millis(1), "{:?}", lag.current());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocked_runtime_shows_as_lag() {
        let lag = RuntimeLag::watch();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let idle = lag.current();
        // Hold the only worker thread for 30 ms at a time: the watcher wakes late.
        for _ in 0..5 {
            tokio::task::spawn(async { std::thread::sleep(Duration::from_millis(30)) }).await.expect("blocker");
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(lag.current() > idle + Duration::from_millis(2), "idle {idle:?}, blocked {:?}", lag.current());
    }
}
