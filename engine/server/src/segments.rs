//! A program's customers by RFM segment and score (`loyalty_core::rfm`), as the sweep last counted
//! them. Segments move with time even without purchases (recency decays), so they cannot be kept
//! as commits happen the way the figures are: the sweep, which reads every account anyway, scores
//! each customer as of its start and stores the counts.
//!
//! The counts are a versioned document `<program>#segments` (`documents`), one version per sweep:
//! every engine over one store answers the same counts (`ListSegments`), a sweep that started
//! before the stored one never replaces it (two engines sweeping at once store one version each
//! round at most, the later start winning), and earlier sweeps stay readable by version, which
//! is how a CRM manager sees segments move from week to week. A version is about 1 KB: hourly
//! sweeps add about 9 MB a year per program.

use chrono::{DateTime, Utc};
use loyalty_core::rfm::SegmentCounts;
use serde::{Deserialize, Serialize};

use crate::documents::{Changed, Documents, Edit, Version};
use crate::error::EngineResult;

/// How often a store is tried again when another engine stored a version meanwhile.
const STORE_ATTEMPTS_MAX: usize = 3;
/// Who the versions are noted as written by.
const AUTHOR: &str = "system:sweep";

/// One sweep's counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentsDocument {
    /// The instant every customer was scored as of (the start of the sweep).
    pub computed_at: DateTime<Utc>,
    /// The rules version whose thresholds scored them.
    pub rules_version: u64,
    pub counts: SegmentCounts,
}

/// The stored counts of every program (see the module documentation).
#[derive(Clone, Debug)]
pub struct Segments {
    documents: Documents,
}

fn document_key(program_id: &str) -> String {
    format!("{program_id}#segments")
}

impl Segments {
    pub fn new(documents: Documents) -> Self {
        Segments { documents }
    }

    /// Stores a sweep's counts as the program's next version, unless counts computed as of the
    /// same instant or later are stored already. The version stored, if any.
    pub async fn store(&self, program_id: &str, document: &SegmentsDocument, now: DateTime<Utc>) -> EngineResult<Option<u64>> {
        let key = document_key(program_id);
        for _ in 0..STORE_ATTEMPTS_MAX {
            let changed = self
                .documents
                .change(&key, None, AUTHOR, now, |latest: Option<SegmentsDocument>| {
                    Ok(match latest {
                        Some(latest) if latest.computed_at >= document.computed_at => Edit::Keep(()),
                        _ => Edit::Write { document: document.clone(), comment: "segment counts of the sweep".to_owned(), value: () },
                    })
                })
                .await?;
            match changed {
                Changed::Stored { version, .. } => return Ok(Some(version)),
                Changed::Kept(()) => return Ok(None),
                Changed::Conflict { .. } => continue,
            }
        }
        Ok(None)
    }

    /// The latest version's number (0: no sweep stored counts yet).
    pub async fn latest_version(&self, program_id: &str) -> EngineResult<u64> {
        self.documents.head(&document_key(program_id)).await
    }

    /// The counts of `version` (0: the latest), if stored.
    pub async fn read(&self, program_id: &str, version: u64) -> EngineResult<Option<Version<SegmentsDocument>>> {
        let key = document_key(program_id);
        match version {
            0 => self.documents.latest(&key).await,
            version => self.documents.at(&key, version).await,
        }
    }
}
