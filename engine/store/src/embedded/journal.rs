//! The write-ahead journal in front of the redb file.
//!
//! A durable redb commit rewrites the copy-on-write B-tree pages of every table it touched and
//! fsyncs them: measured, that bounded durable calls (bench/analysis.md). With the journal, the
//! committer writes a batch's commits as one checksummed record, fdatasyncs it, and only then
//! makes the batch visible and answers; redb receives the batch later, from the applier thread,
//! and makes its pages durable at a *checkpoint* (one durable redb commit after `checkpoint_bytes`
//! of journal), off the callers' path.
//!
//! The journal is a run of *segments*, files named after the first record they hold
//! (`loyalty.journal.00000000000000000042`). The committer starts a new segment once the current
//! one holds `checkpoint_bytes`; a segment whose last record a checkpoint covers is *retired*,
//! and the next new segment reuses its file (renamed, so its blocks are already allocated).
//!
//! Each redb transaction of the applier records the sequence number of the last record it holds
//! (the store's `journal_seq`), so redb's durable state always says which records it already
//! holds. Reopening after a crash: redb comes back at its last checkpoint, the records after its
//! `journal_seq` are read from the segments (they must follow one another with no gap) and applied
//! again in order, and the journal starts again empty.
//!
//! File format: records one after another from the start of the file, each `len: u32 LE`, `crc32
//! of the body: u32 LE`, then the body of `len` bytes: `seq: u64 LE` and the payload; numbers go up
//! by one from record to record. A file is reused, not truncated, and grown ahead in zeroed
//! chunks, so an fdatasync writes the record and never the file's size (measured on ext4: the
//! size change cost a second synchronous write per fdatasync). The live records therefore end at
//! the first place that does not hold the record due next: zeros, an unfinished write (its batch
//! was never answered), or an older record left from the file's previous use (its number is
//! lower). A record that fails its checksum *followed by* the record due after it is damage to
//! acknowledged data: the store refuses to open rather than skip it. Builds before segments wrote
//! one file, `loyalty.journal`, reused from its start after each checkpoint; opening reads it too.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::StoreError;

const HEADER: usize = 8;
/// A record longer than this is damage, not a batch (a batch holds at most a few MiB).
const RECORD_MAX: usize = 1 << 30;
/// The file grows by zeroed chunks of this size, each made durable once.
const CHUNK: u64 = 4 << 20;

/// The open journal: where the next record goes and what it will be numbered.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    /// Where the next record goes: the bytes of live records in this file.
    len: u64,
    /// The file's size: zeros or stale records past `len`.
    allocated: u64,
    next_seq: u64,
}

/// A record's number and payload.
pub(super) type Numbered = (u64, Vec<u8>);

/// What reopening found: the records still to apply, in order.
#[derive(Debug)]
pub(super) struct Recovered {
    pub journal: Journal,
    pub records: Vec<Numbered>,
}

fn io(path: &Path, what: &str, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("journal {}: {what}: {error}", path.display()))
}

impl Journal {
    /// Opens (or creates) the journal and returns the live records numbered after `applied`, the
    /// last record redb already holds.
    pub(super) fn open(path: &Path, applied: u64) -> Result<Recovered, StoreError> {
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| io(path, "open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, "read", e))?;
        let mut records = Vec::new();
        let mut at = 0usize;
        let mut previous: Option<u64> = None;
        while at < bytes.len() {
            let Some((seq, body_len)) = parse(&bytes[at..]) else {
                let due = previous.map_or(applied + 1, |previous| previous + 1);
                if damaged_before(&bytes[at..], due) {
                    return Err(StoreError::Corrupt(format!(
                        "journal {}: the record at byte {at} fails its checksum but the one after it is whole; \
                         acknowledged calls are in it: restore from a backup",
                        path.display()
                    )));
                }
                break;
            };
            if previous.is_some_and(|previous| seq != previous + 1) {
                break; // a record from before the last checkpoint
            }
            if seq > applied {
                let due = previous.filter(|previous| *previous > applied).map_or(applied + 1, |previous| previous + 1);
                if seq != due {
                    return Err(StoreError::Corrupt(format!(
                        "journal {}: record {seq} where {due} was due (the database file holds up to {applied}): \
                         the file and the journal are not from the same store",
                        path.display()
                    )));
                }
                records.push((seq, bytes[at + HEADER + 8..at + HEADER + body_len].to_vec()));
            }
            previous = Some(seq);
            at += HEADER + body_len;
        }
        let next_seq = previous.map_or(applied, |seq| seq.max(applied)) + 1;
        let journal = Journal { file, path: path.to_owned(), len: at as u64, allocated: bytes.len() as u64, next_seq };
        Ok(Recovered { journal, records })
    }

    /// The number the next record will get.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of live records in this file.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Writes one record after the live ones and returns once it is on disk (fdatasync).
    pub(super) fn append(&mut self, payload: &[u8]) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let body_len = 8 + payload.len();
        if body_len > RECORD_MAX {
            return Err(StoreError::Io(format!("journal: a record of {body_len} bytes")));
        }
        let mut record = Vec::with_capacity(HEADER + body_len + HEADER);
        record.extend_from_slice(&(body_len as u32).to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(payload);
        let crc = crc32fast::hash(&record[HEADER..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        let end = self.len + record.len() as u64;
        if end > self.allocated {
            self.grow(end)?;
        }
        self.file.write_all_at(&record, self.len).map_err(|e| io(&self.path, "write", e))?;
        self.file.sync_data().map_err(|e| io(&self.path, "fdatasync", e))?;
        self.len = end;
        self.next_seq += 1;
        metrics::counter!("loyalty_store_journal_bytes_total").increment(record.len() as u64);
        Ok(seq)
    }

    /// Extends the file with zeros to past `end`, size and contents durable, so that later
    /// fdatasyncs there write data only.
    fn grow(&mut self, end: u64) -> Result<(), StoreError> {
        let target = end.div_ceil(CHUNK) * CHUNK;
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.allocated;
        while at < target {
            let chunk = (target - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..chunk], at).map_err(|e| io(&self.path, "grow", e))?;
            at += chunk as u64;
        }
        self.file.sync_all().map_err(|e| io(&self.path, "sync", e))?;
        self.allocated = target;
        Ok(())
    }

    /// Starts the journal again from its beginning after a checkpoint made everything in it
    /// durable in the database file. Nothing is written: the records left behind are numbered
    /// below the database file's `journal_seq` and below every record written from now on.
    #[cfg(test)]
    pub(super) fn restart(&mut self) {
        self.len = 0;
    }

    /// Opens a retired segment's file, renamed to `path`, to be written again from its start with
    /// records numbered from `first`: the records left in it are older, so they are not live.
    fn reuse(path: &Path, first: u64) -> Result<Journal, StoreError> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| io(path, "open", e))?;
        let allocated = file.metadata().map_err(|e| io(path, "size", e))?.len();
        Ok(Journal { file, path: path.to_owned(), len: 0, allocated, next_seq: first })
    }
}

/// The file of the segment whose first record is `first`, beside `base` (`loyalty.journal`).
fn segment_path(base: &Path, first: u64) -> PathBuf {
    let mut name = base.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{first:020}"));
    base.with_file_name(name)
}

/// The segments beside `base`, by their first record.
fn segment_files(base: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let dir = base.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(prefix) = base.file_name().and_then(|name| name.to_str()).map(|name| format!("{name}.")) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(dir, "list", error)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| io(dir, "list", error))?;
        let name = entry.file_name();
        let first = name.to_str().and_then(|name| name.strip_prefix(&prefix)).and_then(|digits| digits.parse::<u64>().ok());
        if let Some(first) = first {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Reads every record numbered after `applied` (the last one the database file holds) from the
/// journal beside `base`: the single file of older builds, then the segments. They must follow one
/// another from `applied + 1` with no gap; the numbers of the last record is the second result
/// (`applied` if there is none).
pub(super) fn recover(base: &Path, applied: u64) -> Result<(Vec<Numbered>, u64), StoreError> {
    let mut records: Vec<Numbered> = Vec::new();
    if base.exists() {
        records = Journal::open(base, applied)?.records;
    }
    for (first, path) in segment_files(base)? {
        let last = records.last().map_or(applied, |(seq, _)| *seq);
        // Records up to `last` are held already (a segment reused since holds older ones).
        let found = Journal::open(&path, last.max(first.saturating_sub(1)))?.records;
        if let Some((seq, _)) = found.first()
            && *seq != last + 1
        {
            return Err(StoreError::Corrupt(format!(
                "journal {}: record {seq} where {} was due: records acknowledged before it are missing",
                path.display(),
                last + 1
            )));
        }
        records.extend(found);
    }
    let last = records.last().map_or(applied, |(seq, _)| *seq);
    Ok((records, last))
}

/// Removes the journal beside `base`, every segment and the older single file: for a database file
/// that holds all of it, or that it does not belong to (a restore).
pub(super) fn remove(base: &Path) -> Result<(), StoreError> {
    let mut paths: Vec<PathBuf> = segment_files(base)?.into_iter().map(|(_, path)| path).collect();
    paths.push(base.to_owned());
    for path in paths {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(&path, "remove", error)),
        }
    }
    Ok(())
}

/// A segment the committer wrote to and left for a newer one.
#[derive(Debug)]
struct Finished {
    path: PathBuf,
    last: u64,
    bytes: u64,
}

/// The journal as the committer writes it: the current segment and the finished ones a
/// checkpoint has not covered yet (or that wait to be reused).
#[derive(Debug)]
pub(super) struct Segments {
    base: PathBuf,
    current: Journal,
    finished: std::collections::VecDeque<Finished>,
    /// The size at which the current segment is left for a new one.
    segment_bytes: u64,
}

impl Segments {
    /// Starts an empty journal beside `base` whose first record is numbered `next_seq`: the
    /// database file holds every record before it (opening has applied them), so no file of the
    /// journal is needed any more and every one is removed first.
    pub(super) fn start(base: &Path, next_seq: u64, segment_bytes: u64) -> Result<Self, StoreError> {
        remove(base)?;
        let current = Journal::open(&segment_path(base, next_seq), next_seq - 1)?.journal;
        sync_dir(base)?;
        Ok(Segments { base: base.to_owned(), current, finished: Default::default(), segment_bytes: segment_bytes.max(1) })
    }

    /// Writes one record and returns its number once it is on disk (fdatasync).
    pub(super) fn append(&mut self, payload: &[u8]) -> Result<u64, StoreError> {
        self.current.append(payload)
    }

    /// The number the next record will get.
    pub(super) fn next_seq(&self) -> u64 {
        self.current.next_seq()
    }

    /// Bytes of the segments not wholly covered by the checkpoint `checkpointed` (the current one
    /// always counts): about what a reopen after a crash would read again.
    pub(super) fn unsettled_bytes(&self, checkpointed: u64) -> u64 {
        self.finished.iter().filter(|segment| segment.last > checkpointed).map(|segment| segment.bytes).sum::<u64>() + self.current.len()
    }

    /// Leaves a full current segment for a new one, reusing the file of a retired segment (one
    /// whose records the checkpoint `checkpointed` covers) if there is one; removes other retired
    /// segments but one, kept for the next time.
    pub(super) fn rotate_if_full(&mut self, checkpointed: u64) -> Result<(), StoreError> {
        if self.current.len() < self.segment_bytes {
            return Ok(());
        }
        let first = self.current.next_seq();
        let path = segment_path(&self.base, first);
        let reused = match self.finished.front() {
            Some(oldest) if oldest.last <= checkpointed => self.finished.pop_front(),
            _ => None,
        };
        let next = match reused {
            Some(retired) => {
                std::fs::rename(&retired.path, &path).map_err(|error| io(&retired.path, "rename", error))?;
                // Durable before a record goes in, so that a crash never finds the record under the
                // file's old name (where it would not be due).
                sync_dir(&self.base)?;
                Journal::reuse(&path, first)?
            }
            None => {
                let journal = Journal::open(&path, first - 1)?.journal;
                sync_dir(&self.base)?;
                journal
            }
        };
        let left = std::mem::replace(&mut self.current, next);
        self.finished.push_back(Finished { path: left.path, last: left.next_seq - 1, bytes: left.len });
        let retired = self.finished.iter().filter(|segment| segment.last <= checkpointed).count();
        for _ in 1..retired {
            if let Some(segment) = self.finished.pop_front() {
                std::fs::remove_file(&segment.path).map_err(|error| io(&segment.path, "remove", error))?;
            }
        }
        Ok(())
    }

    /// After a clean stop's checkpoint: the database file holds everything, the journal goes.
    pub(super) fn close(self) -> Result<(), StoreError> {
        let base = self.base;
        drop(self.current);
        remove(&base)
    }
}

/// Makes a file's creation, rename or removal beside `base` durable.
fn sync_dir(base: &Path) -> Result<(), StoreError> {
    let dir = base.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|error| io(dir, "sync", error))
}

/// The sequence number and body length of a whole record at the start of `bytes`.
fn parse(bytes: &[u8]) -> Option<(u64, usize)> {
    let body_len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if !(8..=RECORD_MAX).contains(&body_len) {
        return None;
    }
    let body = bytes.get(HEADER..HEADER + body_len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((u64::from_le_bytes(body[..8].try_into().ok()?), body_len))
}

/// Whether a record that fails its checks is followed, where its length says the next one starts,
/// by the record due after it (`due + 1`): then it is damage, not an unfinished write (a batch's
/// record is written only once the one before it is on disk).
fn damaged_before(bytes: &[u8], due: u64) -> bool {
    let Some(raw) = bytes.get(0..4) else { return false };
    let body_len = u32::from_le_bytes(raw.try_into().unwrap_or_default()) as usize;
    if !(8..=RECORD_MAX).contains(&body_len) {
        return false;
    }
    bytes.get(HEADER + body_len..).and_then(parse).is_some_and(|(seq, _)| seq == due + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(path: &Path, applied: u64) -> Result<Recovered, StoreError> {
        Journal::open(path, applied)
    }

    fn written(dir: &Path, payloads: &[&[u8]]) -> PathBuf {
        let path = dir.join("journal");
        let mut journal = reopen(&path, 0).expect("open").journal;
        for payload in payloads {
            journal.append(payload).expect("append");
        }
        path
    }

    #[test]
    fn records_after_the_applied_one_come_back_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let path = written(dir.path(), &[b"one", b"two", b"three"]);
        let recovered = reopen(&path, 1).expect("reopen");
        assert_eq!(recovered.records, vec![(2, b"two".to_vec()), (3, b"three".to_vec())]);
        assert_eq!(recovered.journal.next_seq(), 4);
        assert_eq!(reopen(&path, 0).expect("reopen").records.len(), 3);
        // Grown ahead in zeroed chunks: the size did not change with each record.
        assert_eq!(std::fs::metadata(&path).expect("size").len(), CHUNK);
    }

    #[test]
    fn an_unfinished_record_ends_the_journal_and_numbering_goes_on() {
        let dir = tempfile::tempdir().expect("dir");
        let path = written(dir.path(), &[b"one", b"two"]);
        let end = 2 * (HEADER + 8 + 3) as u64;
        // Half of a third record: its write never completed.
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.write_all_at(&[40, 0, 0, 0, 1, 2, 3, 4, 3, 0], end).expect("write");
        drop(file);
        let mut recovered = reopen(&path, 0).expect("reopen");
        assert_eq!(recovered.records.len(), 2);
        assert_eq!(recovered.journal.len(), end);
        assert_eq!(recovered.journal.append(b"three").expect("append"), 3);
        assert_eq!(reopen(&path, 0).expect("reopen").records.last(), Some(&(3, b"three".to_vec())));
    }

    #[test]
    fn a_damaged_record_before_a_whole_one_refuses_to_open() {
        let dir = tempfile::tempdir().expect("dir");
        let path = written(dir.path(), &[b"one", b"two", b"three"]);
        let mut bytes = std::fs::read(&path).expect("read");
        // Flip a bit in the second record's payload.
        let second = HEADER + 8 + 3;
        bytes[second + HEADER + 8] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        let error = reopen(&path, 0).expect_err("damage refused");
        assert!(matches!(&error, StoreError::Corrupt(message) if message.contains("checksum")), "{error:?}");
        // The same damage to the first record, when the file holds up to 0 and 1 is due.
        let path = written(&dir.path().join("first").tap_dir(), &[b"one", b"two"]);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER + 8] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        assert!(reopen(&path, 0).is_err());
    }

    #[test]
    fn after_a_restart_older_records_left_in_the_file_are_not_read_as_live() {
        let dir = tempfile::tempdir().expect("dir");
        let path = written(dir.path(), &[b"one-long-payload", b"two-long-payload", b"three-long-payload"]);
        let mut journal = reopen(&path, 3).expect("reopen").journal;
        assert_eq!(journal.next_seq(), 4);
        journal.restart();
        // Nothing written since the checkpoint: nothing to apply.
        assert!(reopen(&path, 3).expect("reopen").records.is_empty());
        journal.append(b"four").expect("append");
        let recovered = reopen(&path, 3).expect("reopen");
        assert_eq!(recovered.records, vec![(4, b"four".to_vec())]);
        assert_eq!(recovered.journal.next_seq(), 5);
        // A record of the same length as the one it replaced: the stale one after it is older.
        let mut journal = recovered.journal;
        journal.restart();
        journal.append(b"five-long-payload").expect("append");
        assert_eq!(reopen(&path, 4).expect("reopen").records, vec![(5, b"five-long-payload".to_vec())]);
    }

    #[test]
    fn a_database_file_behind_the_journal_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = written(dir.path(), &[b"one", b"two"]);
        let mut journal = reopen(&path, 6).expect("reopen").journal;
        journal.restart();
        journal.append(b"seven").expect("append");
        // A database file that holds only up to 2 (an older copy) would miss 3..=6.
        let error = reopen(&path, 2).expect_err("gap");
        assert!(matches!(&error, StoreError::Corrupt(message) if message.contains("was due")), "{error:?}");
    }

    /// Appends `count` records numbered on from the journal's next, each followed by a rotation
    /// check with `checkpointed` as the checkpoint's cover.
    fn fill(segments: &mut Segments, count: usize, checkpointed: u64) -> Vec<(u64, Vec<u8>)> {
        (0..count)
            .map(|_| {
                let payload = format!("record {:04}", segments.next_seq()).into_bytes();
                let seq = segments.append(&payload).expect("append");
                segments.rotate_if_full(checkpointed).expect("rotate");
                (seq, payload)
            })
            .collect()
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).expect("list").count()
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().expect("dir");
        let base = dir.path().join("loyalty.journal");
        // Three records a segment (each is 8 + 8 + 11 bytes).
        let mut segments = Segments::start(&base, 1, 3 * 27).expect("start");
        let written = fill(&mut segments, 10, 0);
        assert_eq!(files(dir.path()), 4, "nothing retired: 1-3, 4-6, 7-9, 10");
        assert_eq!(recover(&base, 0).expect("recover"), (written.clone(), 10));
        assert_eq!(recover(&base, 4).expect("recover"), (written[4..].to_vec(), 10));
        assert_eq!(recover(&base, 10).expect("recover"), (Vec::new(), 10));
        assert_eq!(segments.unsettled_bytes(0), 10 * 27);
        assert_eq!(segments.unsettled_bytes(6), 4 * 27);
    }

    #[test]
    fn retired_segments_are_reused_and_their_old_records_are_not_live() {
        let dir = tempfile::tempdir().expect("dir");
        let base = dir.path().join("loyalty.journal");
        let mut segments = Segments::start(&base, 1, 3 * 27).expect("start");
        let mut written = fill(&mut segments, 6, 0);
        // A checkpoint covers 1..=6: the next rotations reuse those files, and a third retired
        // segment would be removed rather than kept.
        written.extend(fill(&mut segments, 7, 6));
        assert!(files(dir.path()) <= 4, "{} files", files(dir.path()));
        let (records, last) = recover(&base, 6).expect("recover");
        assert_eq!(last, 13);
        assert_eq!(records, written[6..].to_vec());
        // A reused file holds newer records at its start and older ones after them: only the
        // newer ones are read.
        let (records, _) = recover(&base, 12).expect("recover");
        assert_eq!(records, written[12..].to_vec());
    }

    #[test]
    fn a_missing_segment_refuses_to_open() {
        let dir = tempfile::tempdir().expect("dir");
        let base = dir.path().join("loyalty.journal");
        let mut segments = Segments::start(&base, 1, 3 * 27).expect("start");
        fill(&mut segments, 9, 0);
        std::fs::remove_file(segment_path(&base, 4)).expect("remove 4-6");
        let error = recover(&base, 0).expect_err("a gap");
        assert!(matches!(&error, StoreError::Corrupt(message) if message.contains("record 7 where 4 was due")), "{error:?}");
        // A database file that holds up to 6 needs nothing from the missing segment.
        assert_eq!(recover(&base, 6).expect("recover").0.len(), 3);
    }

    #[test]
    fn the_single_file_of_older_builds_is_read_before_the_segments_and_removed_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let base = dir.path().join("loyalty.journal");
        let mut legacy = reopen(&base, 0).expect("open").journal;
        legacy.append(b"one").expect("append");
        legacy.append(b"two").expect("append");
        drop(legacy);
        assert_eq!(recover(&base, 1).expect("recover"), (vec![(2, b"two".to_vec())], 2));
        let segments = Segments::start(&base, 3, 1 << 20).expect("start");
        assert!(!base.exists(), "the old file goes once the database file holds it");
        assert_eq!(recover(&base, 2).expect("recover"), (Vec::new(), 2));
        segments.close().expect("close");
        assert_eq!(files(dir.path()), 0);
    }

    trait TapDir {
        fn tap_dir(self) -> Self;
    }

    impl TapDir for PathBuf {
        fn tap_dir(self) -> Self {
            std::fs::create_dir_all(&self).expect("dir");
            self
        }
    }
}
