//! The engine's only source of time. The domain core takes time as an input; the engine reads it
//! here, so tests replace it with a [`ManualClock`] and move time by hand. The store's [`Clock`]
//! trait is this one: the engine passes its clock to the ScyllaDB backend, which reads no other.
//!
//! [`SystemClock::now`] is the one place in the engine and its store that reads the wall clock
//! for time: clippy refuses `Utc::now`, `Local::now` and `SystemTime::now` everywhere else
//! (`clippy.toml`). (The production ID source, `ids::UuidIds`, mints time-ordered UUIDs from the
//! wall clock too: IDs, never a time the engine decides by.)

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

pub use loyalty_store::clock::Clock;

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one wall clock read of the engine and its store: everything else asks a `Clock`.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told: for tests of pending periods, expiry and hold lifetimes.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock that says `start` until moved.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock { now: Mutex::new(start) }
    }

    /// Moves the clock forward by `by` (back, if negative).
    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += by;
        }
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = to;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now.lock().map(|now| *now).unwrap_or_else(|poisoned| *poisoned.into_inner())
    }
}
