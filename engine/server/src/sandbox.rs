//! Test clocks for sandbox programs. An integrator testing pending points, 24-month expiry,
//! win-back after 15 days or a birthday certificate cannot wait days; a program marked `sandbox`
//! in its configuration reads the engine's clock plus an offset that the admin call
//! `AdvanceClock` moves forward (never back), the way payment platforms offer test clocks.
//!
//! The offset is the program's own: every call of the program (checkout, sweep, rules versions)
//! reads [`crate::context::Context::now_in`], and no other program's time moves. A production program refuses the
//! call (`NOT_A_SANDBOX`), so no sandbox call can touch a production program's data. The offset is
//! stored as a versioned document `<program>#clock` (`documents`), read at start and on every
//! refresh, so every engine over one store agrees. Advancing a clock also sweeps the program at its
//! new time: the engine does that ([`crate::engine::Engine::advance_clock`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::documents::{Changed, Documents, Edit};
use crate::error::{EngineError, EngineResult};
use crate::programs::Programs;

/// Furthest a sandbox clock may run ahead of the engine's: ten years.
pub const OFFSET_MAX: Duration = Duration::days(3653);

/// The test clocks of the sandbox programs this engine serves.
#[derive(Debug)]
pub struct SandboxClocks {
    offsets: Offsets,
    programs: Arc<Programs>,
    documents: Documents,
}

/// Each sandbox program's offset, with the version it was read at.
#[derive(Debug, Default)]
struct Offsets(RwLock<HashMap<String, (u64, Duration)>>);

/// The stored document.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ClockDocument {
    offset_seconds: i64,
    /// The request IDs of the last advances, newest last: a retry does not move the clock again.
    #[serde(default)]
    recent_requests: Vec<String>,
}

/// Advances whose request IDs a clock remembers.
const RECENT_REQUESTS_MAX: usize = 32;

fn document_key(program_id: &str) -> String {
    format!("{program_id}#clock")
}

impl SandboxClocks {
    /// Every clock at zero until read from the store ([`SandboxClocks::refresh`]).
    pub fn new(programs: Arc<Programs>, documents: Documents) -> Self {
        SandboxClocks { offsets: Offsets::default(), programs, documents }
    }

    /// How far a program's clock runs ahead of the engine's (zero for a production program).
    pub fn offset(&self, program_id: &str) -> Duration {
        self.offsets.offset(program_id)
    }

    fn version(&self, program_id: &str) -> u64 {
        self.offsets.version(program_id)
    }

    fn install(&self, program_id: &str, version: u64, offset: Duration) {
        self.offsets.install(program_id, version, offset);
    }
}

impl Offsets {
    fn offset(&self, program_id: &str) -> Duration {
        self.0.read().ok().and_then(|offsets| offsets.get(program_id).map(|(_, offset)| *offset)).unwrap_or_else(Duration::zero)
    }

    fn version(&self, program_id: &str) -> u64 {
        self.0.read().ok().and_then(|offsets| offsets.get(program_id).map(|(version, _)| *version)).unwrap_or(0)
    }

    /// Installs a stored offset unless a newer one is already installed.
    fn install(&self, program_id: &str, version: u64, offset: Duration) {
        if let Ok(mut offsets) = self.0.write() {
            let current = offsets.entry(program_id.to_owned()).or_insert((0, Duration::zero()));
            if version > current.0 {
                *current = (version, offset);
            }
        }
    }
}

impl SandboxClocks {
    /// Reads every sandbox program's stored offset (at start, and on each refresh).
    pub async fn refresh(&self) -> EngineResult<()> {
        for program_id in self.programs.ids().into_iter().filter(|id| self.programs.is_sandbox(id)) {
            self.refresh_one(&program_id).await?;
        }
        Ok(())
    }

    /// Reads one program's stored offset, if a newer one than this engine's is stored.
    async fn refresh_one(&self, program_id: &str) -> EngineResult<()> {
        if let Some(stored) = self.documents.newer::<ClockDocument>(&document_key(program_id), self.version(program_id)).await? {
            self.install(program_id, stored.version, Duration::seconds(stored.document.offset_seconds));
        }
        Ok(())
    }

    /// Moves a sandbox program's clock forward by `by` (at most once per request ID) and returns
    /// its offset now. A production program is refused (`NOT_A_SANDBOX`).
    pub async fn advance(
        &self,
        program_id: &str,
        request_id: &str,
        by: Duration,
        actor: &str,
        now: DateTime<Utc>,
    ) -> EngineResult<Duration> {
        if !self.programs.is_sandbox(program_id) {
            return Err(EngineError::NotSandbox(program_id.to_owned()));
        }
        let key = document_key(program_id);
        // Two advances at once both apply, one after the other, each on the offset the other left.
        for _ in 0..ADVANCE_ATTEMPTS_MAX {
            let changed = self
                .documents
                .change(&key, None, actor, now, |document: Option<ClockDocument>| advanced(document.unwrap_or_default(), request_id, by))
                .await?;
            match changed {
                Changed::Stored { version, document, .. } => {
                    self.install(program_id, version, Duration::seconds(document.offset_seconds));
                    return Ok(self.offset(program_id));
                }
                // A retry: the clock moved when it was first made.
                Changed::Kept(()) => {
                    self.refresh_one(program_id).await?;
                    return Ok(self.offset(program_id));
                }
                Changed::Conflict { .. } => {}
            }
        }
        Err(EngineError::Contention { attempts: ADVANCE_ATTEMPTS_MAX })
    }
}

/// Attempts of one advance against others made at once.
const ADVANCE_ATTEMPTS_MAX: u32 = 8;

/// The clock document after an advance by `by` under `request_id`: nothing to store for a retry,
/// a conflict for the same ID with another distance, a refusal past ten years ahead.
fn advanced(document: ClockDocument, request_id: &str, by: Duration) -> EngineResult<Edit<ClockDocument, ()>> {
    let offset = Duration::seconds(document.offset_seconds);
    // Remembered as `<request ID>=<seconds>`: a retry moves nothing, the same ID for another
    // distance is a conflict.
    let done = format!("{request_id}={}", by.num_seconds());
    if document.recent_requests.contains(&done) {
        return Ok(Edit::Keep(()));
    }
    if document.recent_requests.iter().any(|recent| recent.split_once('=').is_some_and(|(id, _)| id == request_id)) {
        return Err(loyalty_core::rejection::Rejection::IdempotencyConflict { kind: "request_id", key: request_id.to_owned() }.into());
    }
    let moved = offset + by;
    if moved > OFFSET_MAX {
        let days_left = (OFFSET_MAX - offset).num_days();
        return Err(loyalty_core::rejection::Rejection::invalid(
            "seconds",
            format!("a sandbox clock runs at most 10 years ahead; {days_left} days are left"),
        )
        .into());
    }
    let mut recent_requests = document.recent_requests;
    recent_requests.push(done);
    if recent_requests.len() > RECENT_REQUESTS_MAX {
        recent_requests.remove(0);
    }
    let comment = format!("sandbox clock advanced by {} s", by.num_seconds());
    Ok(Edit::Write { document: ClockDocument { offset_seconds: moved.num_seconds(), recent_requests }, comment, value: () })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_read_later_never_replaces_a_newer_one() {
        let clocks = Offsets::default();
        assert_eq!(clocks.offset("p"), Duration::zero());
        clocks.install("p", 2, Duration::days(2));
        clocks.install("p", 1, Duration::days(1));
        assert_eq!((clocks.version("p"), clocks.offset("p")), (2, Duration::days(2)));
        assert_eq!(clocks.offset("q"), Duration::zero(), "each program its own");
    }
}
