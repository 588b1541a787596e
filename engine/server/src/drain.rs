//! The calls inside the engine, counted so that a stopping engine closes its store only after the
//! last of them has finished.
//!
//! tonic's graceful shutdown waits for connections, not for calls: hyper runs each HTTP/2 stream as
//! a task of its own, so a call can still be committing after `serve` has returned (a connection
//! that went away under it, say). Every call holds a [`CallPass`] from admission to its answer;
//! stopping is [`InFlight::close`] (new calls are refused, [`crate::error::EngineError::ShuttingDown`])
//! and then [`InFlight::close_and_drain`] before the store is shut. A call that reached the store is thus
//! committed and answered, never refused by a closed store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The calls in flight, and whether new ones are still taken.
#[derive(Debug, Default)]
pub struct InFlight {
    calls: AtomicUsize,
    closed: AtomicBool,
    /// Woken when the last call of a closed engine finishes.
    idle: Notify,
}

/// A call's place in [`InFlight`]; dropping it (the answer, or the call's future dropped) frees it.
#[derive(Debug)]
#[must_use = "a call counts only while its pass is held"]
pub struct CallPass<'a> {
    in_flight: &'a InFlight,
}

impl InFlight {
    /// A place for one call, or `None` once the engine is closed.
    pub fn enter(&self) -> Option<CallPass<'_>> {
        // Counted first, then the flag read: `close` stores the flag, then reads the count, so
        // either this call sees the flag, or `idle` sees this call (both SeqCst).
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.leave();
            return None;
        }
        Some(CallPass { in_flight: self })
    }

    /// Takes no new call from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Calls now inside the engine.
    pub fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Closes, then waits until no call is left, for at most `grace`. Returns how many calls were
    /// still inside when the wait ended (0: drained).
    pub async fn close_and_drain(&self, grace: Duration) -> usize {
        self.close();
        let drained = tokio::time::timeout(grace, async {
            loop {
                // Registered before the count is read, so a wake-up between the two is not lost.
                let woken = self.idle.notified();
                if self.count() == 0 {
                    return;
                }
                woken.await;
            }
        })
        .await;
        if drained.is_ok() { 0 } else { self.count() }
    }

    fn leave(&self) {
        if self.calls.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_closed() {
            self.idle.notify_waiters();
        }
    }
}

impl Drop for CallPass<'_> {
    fn drop(&mut self) {
        self.in_flight.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_engine_takes_no_call_and_drains_when_the_last_one_leaves() {
        let in_flight = std::sync::Arc::new(InFlight::default());
        let pass = in_flight.enter().expect("open: a call is taken");
        assert_eq!(in_flight.count(), 1);
        let draining = {
            let in_flight = std::sync::Arc::clone(&in_flight);
            tokio::spawn(async move { in_flight.close_and_drain(Duration::from_secs(30)).await })
        };
        while !in_flight.is_closed() {
            tokio::task::yield_now().await;
        }
        assert!(in_flight.enter().is_none(), "closed: no new call");
        assert_eq!(in_flight.count(), 1, "the refused call is not counted");
        assert!(!draining.is_finished(), "still one call inside");
        drop(pass);
        assert_eq!(draining.await.expect("drain task"), 0, "drained");
    }

    #[tokio::test]
    async fn a_call_that_outlives_the_grace_is_reported() {
        let in_flight = InFlight::default();
        let _pass = in_flight.enter().expect("open");
        assert_eq!(in_flight.close_and_drain(Duration::from_millis(20)).await, 1);
    }

    #[tokio::test]
    async fn an_idle_engine_drains_at_once() {
        let in_flight = InFlight::default();
        drop(in_flight.enter());
        assert_eq!(in_flight.close_and_drain(Duration::from_secs(30)).await, 0);
    }
}
