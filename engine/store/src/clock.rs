//! The time the store reads. No backend reads the wall clock itself: the engine hands every store
//! its own clock (`loyalty_engine::clock`, which implements this trait), so that there is one
//! source of time in the process and a test can replace it.
//!
//! What the ScyllaDB backend reads it for: relay marks (the minute a commit was marked in), outbox
//! seqs and the settle horizon of readers, the start of an arbiter's lease, the client timestamp of
//! deletes that must win over a lightweight transaction's write, and when a migration was applied.
//! The embedded backend reads no time at all.

use chrono::{DateTime, Utc};

/// Tells the time.
///
/// A clock given to the ScyllaDB backend is compared with the clocks of the cluster's nodes (write
/// timestamps) and of the other engine processes (relay minutes, arbiter leases, outbox seqs), so
/// outside of tests it is the system's wall clock. A test may move it forward of real time, to
/// let relayed events settle or a recovery pass see a minute as over, but never far behind: a
/// delete stamped with an old time would not delete a row written since.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}
