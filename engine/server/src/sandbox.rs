//! Test clocks for sandbox programs. An integrator testing pending points, 24-month expiry,
//! win-back after 15 days or a birthday certificate cannot wait days; a program marked `sandbox`
//! in its configuration reads the engine's clock plus an offset that the admin call
//! `AdvanceClock` moves forward (never back), the way payment platforms offer test clocks.
//!
//! The offset is the program's own: every call of the program (checkout, sweep, rules versions)
//! reads [`Engine::now_in`], and no other program's time moves. A production program refuses the
//! call (`NOT_A_SANDBOX`), so no sandbox call can touch a production program's data. The offset is
//! stored as a versioned document `<program>#clock` (the store's rules-version rows, written with
//! compare-and-set), read at start and on every refresh, so every engine over one store agrees.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, Duration, Utc};
use loyalty_store::StoredRules;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};
use crate::programs::Program;
use crate::sweep::SweepReport;

/// Furthest a sandbox clock may run ahead of the engine's: ten years.
pub const OFFSET_MAX: Duration = Duration::days(3653);

/// The offsets of the sandbox programs this engine serves, with the version each was read at.
#[derive(Debug, Default)]
pub struct SandboxClocks {
    offsets: RwLock<HashMap<String, (u64, Duration)>>,
}

/// The stored document.
#[derive(Debug, Serialize, Deserialize)]
struct ClockDocument {
    offset_seconds: i64,
    /// The request IDs of the last advances, newest last: a retry does not move the clock again.
    #[serde(default)]
    recent_requests: Vec<String>,
}

/// Advances whose request IDs a clock remembers.
const RECENT_REQUESTS_MAX: usize = 32;

/// What advancing a sandbox clock did.
#[derive(Debug)]
pub struct Advanced {
    pub now: DateTime<Utc>,
    pub offset: Duration,
    /// The sweep run at the new time: the schedule awards and notices now due.
    pub sweep: SweepReport,
}

fn document_key(program_id: &str) -> String {
    format!("{program_id}#clock")
}

impl SandboxClocks {
    fn offset(&self, program_id: &str) -> Duration {
        self.offsets.read().ok().and_then(|offsets| offsets.get(program_id).map(|(_, offset)| *offset)).unwrap_or_else(Duration::zero)
    }

    fn version(&self, program_id: &str) -> u64 {
        self.offsets.read().ok().and_then(|offsets| offsets.get(program_id).map(|(version, _)| *version)).unwrap_or(0)
    }

    /// Installs a stored offset unless a newer one is already installed.
    fn install(&self, program_id: &str, version: u64, offset: Duration) {
        if let Ok(mut offsets) = self.offsets.write() {
            let current = offsets.entry(program_id.to_owned()).or_insert((0, Duration::zero()));
            if version > current.0 {
                *current = (version, offset);
            }
        }
    }
}

fn decode(program_id: &str, stored: &StoredRules) -> EngineResult<ClockDocument> {
    serde_json::from_str(&stored.document).map_err(|error| {
        EngineError::Internal(format!("program {program_id}: stored clock version {} unreadable: {error}", stored.version))
    })
}

impl Engine {
    /// The time as one program sees it: the engine's clock, plus its test clock's offset when the
    /// program is a sandbox. Every call of the program reads this.
    pub fn now_in(&self, program_id: &str) -> DateTime<Utc> {
        let now = self.now();
        if self.programs().is_sandbox(program_id) { now + self.sandbox_clocks().offset(program_id) } else { now }
    }

    /// Reads every sandbox program's stored offset (at start, and on each refresh).
    pub async fn refresh_clocks(&self) -> EngineResult<()> {
        for program_id in self.programs().ids().into_iter().filter(|id| self.programs().is_sandbox(id)) {
            let key = document_key(&program_id);
            if self.store().rules_head(&key).await? <= self.sandbox_clocks().version(&program_id) {
                continue;
            }
            if let Some(stored) = self.store().latest_rules(&key).await? {
                let offset = Duration::seconds(decode(&program_id, &stored)?.offset_seconds);
                self.sandbox_clocks().install(&program_id, stored.version, offset);
            }
        }
        Ok(())
    }

    /// Moves a sandbox program's clock forward by `by`, then sweeps the program at its new time
    /// (certificates and notices now due are issued, as the daily sweep would have).
    pub async fn advance_clock(
        &self,
        program: &std::sync::Arc<Program>,
        request_id: &str,
        by: Duration,
        actor: &str,
    ) -> EngineResult<Advanced> {
        let program_id = program.id();
        if !self.programs().is_sandbox(program_id) {
            return Err(EngineError::NotSandbox(program_id.to_owned()));
        }
        let key = document_key(program_id);
        // Compare-and-set on the document's version: two advances at once both apply, one after
        // the other, each on the offset the other left.
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > 8 {
                return Err(EngineError::Contention { attempts: 8 });
            }
            let latest = self.store().latest_rules(&key).await?;
            let (version, document) = match &latest {
                Some(stored) => (stored.version, decode(program_id, stored)?),
                None => (0, ClockDocument { offset_seconds: 0, recent_requests: Vec::new() }),
            };
            let offset = Duration::seconds(document.offset_seconds);
            // Remembered as `<request ID>=<seconds>`: a retry moves nothing, the same ID for
            // another distance is a conflict.
            let done = format!("{request_id}={}", by.num_seconds());
            if document.recent_requests.contains(&done) {
                self.sandbox_clocks().install(program_id, version, offset);
                break;
            }
            if document.recent_requests.iter().any(|recent| recent.split_once('=').is_some_and(|(id, _)| id == request_id)) {
                return Err(
                    loyalty_core::rejection::Rejection::IdempotencyConflict { kind: "request_id", key: request_id.to_owned() }.into()
                );
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
            let document = serde_json::to_string(&ClockDocument { offset_seconds: moved.num_seconds(), recent_requests })
                .map_err(|error| EngineError::Internal(error.to_string()))?;
            let stored = StoredRules {
                version: version + 1,
                document,
                created_at: self.now(),
                author: actor.to_owned(),
                comment: format!("sandbox clock advanced by {} s", by.num_seconds()),
            };
            if self.store().put_rules(&key, stored).await? {
                self.sandbox_clocks().install(program_id, version + 1, moved);
                break;
            }
        }
        let sweep = self.sweep(program).await?;
        Ok(Advanced { now: self.now_in(program_id), offset: self.sandbox_clocks().offset(program_id), sweep })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_read_later_never_replaces_a_newer_one() {
        let clocks = SandboxClocks::default();
        assert_eq!(clocks.offset("p"), Duration::zero());
        clocks.install("p", 2, Duration::days(2));
        clocks.install("p", 1, Duration::days(1));
        assert_eq!((clocks.version("p"), clocks.offset("p")), (2, Duration::days(2)));
        assert_eq!(clocks.offset("q"), Duration::zero(), "each program its own");
    }
}
