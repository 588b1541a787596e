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
#[derive(Debug)]
pub struct RuntimeLag {
    average_us: AtomicU64,
    /// Each observation counts for at most this much: one long stall (a big rules document being
    /// compiled, say) moves the average by at most clip / 8, so only lateness that lasts trips it.
    clip_us: u64,
}

impl RuntimeLag {
    fn new(clip: Duration) -> Self {
        RuntimeLag { average_us: AtomicU64::new(0), clip_us: u64::try_from(clip.as_micros()).unwrap_or(u64::MAX) }
    }

    /// Starts the watcher on the current runtime, counting each late wake-up for at most `clip`;
    /// it stops when the returned value is dropped.
    pub fn watch(clip: Duration) -> Arc<RuntimeLag> {
        let lag = Arc::new(RuntimeLag::new(clip));
        tokio::spawn(watcher(Arc::downgrade(&lag)));
        lag
    }

    /// The current average lateness.
    pub fn current(&self) -> Duration {
        Duration::from_micros(self.average_us.load(Ordering::Relaxed))
    }

    /// Folds one observation into the average (weight 1/8: lateness that lasts shows within a few
    /// milliseconds; a single late wake-up, clipped, does not trip it).
    fn observe(&self, late: Duration) {
        let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX).min(self.clip_us);
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
    fn the_average_follows_lasting_lateness_and_decays() {
        let lag = RuntimeLag::new(Duration::from_millis(10));
        for _ in 0..64 {
            lag.observe(Duration::from_millis(8));
        }
        assert!(lag.current() > Duration::from_millis(7), "{:?}", lag.current());
        for _ in 0..64 {
            lag.observe(Duration::ZERO);
        }
        assert!(lag.current() < Duration::from_millis(1), "{:?}", lag.current());
    }

    #[test]
    fn one_long_stall_is_clipped() {
        let lag = RuntimeLag::new(Duration::from_millis(6));
        lag.observe(Duration::from_millis(500));
        assert!(lag.current() <= Duration::from_micros(750), "{:?}", lag.current());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_saturated_runtime_shows_as_lag() {
        let lag = RuntimeLag::watch(Duration::from_millis(20));
        // Real time: the probe measures the runtime's real lateness, here some idle wake-ups first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let idle = lag.current();
        // Two tasks take turns holding the only worker thread 5 ms at a time for 100 ms: the
        // watcher keeps waking late.
        let until = std::time::Instant::now() + Duration::from_millis(100);
        let blockers: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(async move {
                    while std::time::Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(5));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for blocker in blockers {
            blocker.await.expect("blocker");
        }
        assert!(lag.current() > idle + Duration::from_millis(2), "idle {idle:?}, saturated {:?}", lag.current());
    }
}
