//! `loyalty-engine import`: a chain's customer base brought from the platform it moves from.
//!
//! The file has one JSON object per line (`docs/import.md`, example `deploy/import-example.jsonl`).
//! Each row becomes one account ([`loyalty_core::import`]) in one commit that also claims the
//! request `import/<row id>`: a row already imported answers from that record, so a rerun after a
//! crash halfway changes nothing twice, on either store. A row that cannot be imported is written
//! to the rejects file with its line, field and reason; every row is counted in the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use loyalty_core::Origin;
use loyalty_core::identity;
use loyalty_core::import::{ImportOutcome, Opening, OpeningBucket};
use loyalty_core::rejection::Rejection;
use loyalty_core::{Decimal, profile::Gender};
use serde::{Deserialize, Serialize};
use std::io::Write;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::grpc::convert;
use crate::programs::Program;

/// Longest row ID (it becomes part of a request key).
const ROW_ID_LEN_MAX: usize = 64;
/// Longest line read; a longer one is refused without being parsed.
const LINE_LEN_MAX: usize = 64 * 1024;

/// One line of the file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    id: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    cards: Vec<String>,
    #[serde(default)]
    app_tokens: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    birth_date: Option<String>,
    #[serde(default)]
    gender: Option<RowGender>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    purchases: u32,
    #[serde(default)]
    last_purchase_at: Option<DateTime<Utc>>,
    #[serde(default)]
    buckets: Vec<RowBucket>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RowGender {
    Female,
    Male,
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowBucket {
    /// A decimal string ("120", "12.50"), so that no float ever touches a balance.
    points: String,
    #[serde(default)]
    available_from: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
}

/// A row refused, as written to the rejects file.
#[derive(Debug, Serialize)]
pub struct Rejected {
    /// 1-based line of the file.
    pub line: u64,
    /// The row's ID, when it could be read.
    pub id: Option<String>,
    /// The rejection's code (INVALID_ARGUMENT, PHONE_ALREADY_REGISTERED, ...).
    pub code: String,
    pub field: Option<String>,
    pub reason: String,
}

/// What an import did with every row of the file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    /// Accounts opened by this run.
    pub imported: u64,
    /// Rows imported by an earlier run (same row, same content): nothing done twice.
    pub already: u64,
    pub rejected: u64,
    /// Points opened by this run (rows imported before are not counted again).
    pub points: Decimal,
}

/// How one row ended.
enum RowOutcome {
    Imported(ImportOutcome),
    Already,
    Rejected(Rejected),
}

/// Reads a line into an [`Opening`], field by field: JSON shape, then each value's format as the
/// gRPC API checks it. What the domain asks of a row ([`Opening::check`]) depends on the clock, so
/// it is checked only once the row is known not to be imported already.
fn parse(line: &str, program: &Program, now: DateTime<Utc>) -> Result<Opening, (Option<String>, Rejection)> {
    let mut deserializer = serde_json::Deserializer::from_str(line);
    let row: Row = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let field = error.path().to_string();
        (None, Rejection::invalid(if field == "." { "line".to_owned() } else { field }, error.inner().to_string()))
    })?;
    let id = row.id.clone();
    let policy = &program.policy;
    let opening = (|| {
        let id = convert::id("id", &row.id, ROW_ID_LEN_MAX)?;
        let phone = row.phone.as_deref().map(|raw| identity::normalize_phone("phone", raw, &policy.phone_plan)).transpose()?;
        let cards = (row.cards.iter().enumerate())
            .map(|(index, raw)| identity::normalize_card(&format!("cards[{index}]"), raw))
            .collect::<Result<Vec<_>, _>>()?;
        let app_tokens = (row.app_tokens.iter().enumerate())
            .map(|(index, raw)| identity::normalize_app_token(&format!("app_tokens[{index}]"), raw))
            .collect::<Result<Vec<_>, _>>()?;
        let today = now.with_timezone(&policy.time_zone).date_naive();
        let buckets = (row.buckets.iter().enumerate())
            .map(|(index, bucket)| {
                Ok(OpeningBucket {
                    points: convert::decimal(&format!("buckets[{index}].points"), &bucket.points)?,
                    available_from: bucket.available_from,
                    expires_at: bucket.expires_at,
                })
            })
            .collect::<Result<Vec<_>, Rejection>>()?;
        let opening = Opening {
            id,
            phone,
            cards,
            app_tokens,
            name: row.name.as_deref().map(convert::name).transpose()?.flatten(),
            birth_date: row.birth_date.as_deref().map(|raw| convert::birth_date(raw, today)).transpose()?.flatten(),
            gender: row.gender.map(|gender| match gender {
                RowGender::Female => Gender::Female,
                RowGender::Male => Gender::Male,
                RowGender::Other => Gender::Other,
            }),
            tags: convert::tags("tags", &row.tags)?,
            tier: row.tier.clone(),
            purchases: row.purchases,
            last_purchase_at: row.last_purchase_at,
            buckets,
        };
        Ok::<_, Rejection>(opening)
    })();
    opening.map_err(|rejection| (Some(id), rejection))
}

/// Where the rejects of `file` go unless told: beside it, `<file>.rejects.jsonl`.
pub fn default_rejects_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".rejects.jsonl");
    file.with_file_name(name)
}

/// Imports every row of `file` into `program_id`, `concurrency` rows at a time (they share group
/// commits), writing refused rows to `rejects` (replaced). Progress goes to the log every 10 s.
pub async fn import_file(
    engine: Arc<Engine>,
    program_id: &str,
    file: &Path,
    rejects: &Path,
    concurrency: usize,
) -> anyhow::Result<ImportReport> {
    use anyhow::Context;
    let program = engine.program(program_id).map_err(|error| anyhow::anyhow!("program {program_id}: {error}"))?;
    let input = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut rejects_out =
        std::io::BufWriter::new(std::fs::File::create(rejects).with_context(|| format!("creating {}", rejects.display()))?);
    let origin = Origin { store_id: "import".into(), till_id: "import".into(), actor: "system:import".into() };
    // Lines are read on their own thread as the rows before them are committed: memory stays
    // bounded by `concurrency`.
    let (lines_tx, lines_rx) = tokio::sync::mpsc::channel::<std::io::Result<(u64, Option<Vec<u8>>)>>(concurrency.max(1) * 2);
    let reader = std::thread::Builder::new().name("import-reader".into()).spawn(move || {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, input);
        let mut index = 0u64;
        loop {
            let line = match next_line(&mut reader, LINE_LEN_MAX) {
                Ok(Some(line)) => Ok((index + 1, line)),
                Ok(None) => break,
                Err(error) => Err(error),
            };
            index += 1;
            let failed = line.is_err();
            if lines_tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    })?;
    let rows = tokio_stream::wrappers::ReceiverStream::new(lines_rx);
    let (engine, program, origin) = (&engine, &program, &origin);
    let mut outcomes = rows
        .map(|row| async move {
            let (line, bytes) = row?;
            Ok::<_, std::io::Error>(row_outcome(engine, program, origin, line, bytes.as_deref()).await)
        })
        .buffer_unordered(concurrency.max(1));
    let mut report = ImportReport::default();
    let (started, mut logged) = (Instant::now(), Instant::now());
    while let Some(outcome) = outcomes.next().await {
        let outcome = outcome.with_context(|| format!("reading {}", file.display()))?;
        report.rows += 1;
        match outcome? {
            RowOutcome::Imported(outcome) => {
                report.imported += 1;
                report.points += outcome.points;
            }
            RowOutcome::Already => report.already += 1,
            RowOutcome::Rejected(rejected) => {
                report.rejected += 1;
                serde_json::to_writer(&mut rejects_out, &rejected)?;
                rejects_out.write_all(b"\n").with_context(|| format!("writing {}", rejects.display()))?;
            }
        }
        if logged.elapsed() >= Duration::from_secs(10) {
            logged = Instant::now();
            let rate = report.rows as f64 / started.elapsed().as_secs_f64();
            tracing::info!(
                rows = report.rows,
                imported = report.imported,
                already = report.already,
                rejected = report.rejected,
                rows_per_second = rate as u64,
                "importing"
            );
        }
    }
    rejects_out.flush().with_context(|| format!("writing {}", rejects.display()))?;
    drop(outcomes);
    let _ = reader.join();
    Ok(report)
}

/// The next line of `reader` without its newline: `Some(None)` for a line longer than `max`
/// bytes, which is skipped without being held in memory; `None` at the end.
fn next_line(reader: &mut impl std::io::BufRead, max: usize) -> std::io::Result<Option<Option<Vec<u8>>>> {
    let mut line = Some(Vec::new());
    let mut read_any = false;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(read_any.then_some(line));
        }
        read_any = true;
        let newline = buffer.iter().position(|&byte| byte == b'\n');
        let chunk = &buffer[..newline.unwrap_or(buffer.len())];
        if let Some(kept) = &mut line {
            if kept.len() + chunk.len() <= max {
                kept.extend_from_slice(chunk);
            } else {
                line = None;
            }
        }
        let used = newline.map_or(buffer.len(), |at| at + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(line));
        }
    }
}

/// One line's outcome; `Err` only for what stops the whole import (the store failing).
async fn row_outcome(engine: &Engine, program: &Program, origin: &Origin, line: u64, bytes: Option<&[u8]>) -> anyhow::Result<RowOutcome> {
    let rejected = |id: Option<String>, rejection: Rejection| {
        let (field, reason) = match &rejection {
            Rejection::InvalidArgument { field, reason } => (Some(field.clone()), reason.clone()),
            Rejection::IdempotencyConflict { key, .. } => {
                (Some("id".to_owned()), format!("row {key} was imported before with other content"))
            }
            Rejection::PhoneAlreadyRegistered => (Some("phone".to_owned()), rejection.to_string()),
            Rejection::IdentifierTaken { kind: "card" } => (Some("cards".to_owned()), rejection.to_string()),
            Rejection::IdentifierTaken { kind: "app token" } => (Some("app_tokens".to_owned()), rejection.to_string()),
            other => (None, other.to_string()),
        };
        RowOutcome::Rejected(Rejected { line, id, code: rejection.code().to_owned(), field, reason })
    };
    let Some(bytes) = bytes else {
        return Ok(rejected(None, Rejection::invalid("line", format!("longer than {LINE_LEN_MAX} bytes"))));
    };
    let Ok(text) = std::str::from_utf8(bytes.strip_suffix(b"\r").unwrap_or(bytes)) else {
        return Ok(rejected(None, Rejection::invalid("line", "not UTF-8")));
    };
    if text.trim().is_empty() {
        return Ok(rejected(None, Rejection::invalid("line", "empty")));
    }
    let now = engine.now_in(&program.policy.program_id);
    let opening = match parse(text, program, now) {
        Ok(opening) => opening,
        Err((id, rejection)) => return Ok(rejected(id, rejection)),
    };
    match engine.customers.import(program, origin, &opening).await {
        Ok((outcome, true)) => Ok(RowOutcome::Imported(outcome)),
        Ok((_, false)) => Ok(RowOutcome::Already),
        Err(EngineError::Rejected(rejection)) => Ok(rejected(Some(opening.id), rejection)),
        // Other writers kept winning this account's or identifier's compare-and-set: nothing was
        // written for the row, and a rerun imports it.
        Err(EngineError::Contention { attempts }) => Ok(RowOutcome::Rejected(Rejected {
            line,
            id: Some(opening.id),
            code: "ABORTED".into(),
            field: None,
            reason: format!("lost {attempts} compare-and-sets to other writers; run the import again"),
        })),
        Err(error) => Err(anyhow::anyhow!("row {} (line {line}): {error}", opening.id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_whole_up_to_the_limit_and_longer_ones_skipped() {
        let text = b"ab\n\nabcdef\nxyz";
        let mut reader = std::io::BufReader::with_capacity(2, &text[..]);
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut reader, 4).expect("read") {
            lines.push(line);
        }
        assert_eq!(lines, vec![Some(b"ab".to_vec()), Some(Vec::new()), None, Some(b"xyz".to_vec())]);
    }
}
