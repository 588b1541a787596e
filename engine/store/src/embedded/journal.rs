//! The write-ahead journal in front of the redb file.
//!
//! A durable redb commit rewrites the copy-on-write B-tree pages of every table it touched and
//! fsyncs them: measured, that bounded durable calls (bench/analysis.md). With the journal, the
//! writer applies a batch to redb *without* an fsync, writes the batch's commits to this file as
//! one checksummed record, fdatasyncs it, and only then makes the batch visible and answers. redb
//! makes its pages durable at a *checkpoint* (one durable commit after `checkpoint_bytes` of
//! journal, and at shutdown), after which the journal is written again from its start.
//!
//! Each batch's redb transaction records the sequence number of its journal record (the store's
//! `journal_seq`), so redb's durable state always says which records it already holds. Reopening
//! after a crash: redb comes back at its last checkpoint, and the records after its `journal_seq`
//! are applied again in order.
//!
//! File format: records one after another from the start of the file, each `len: u32 LE`, `crc32
//! of the body: u32 LE`, then the body of `len` bytes: `seq: u64 LE` and the payload; numbers go up
//! by one from record to record. The file is reused, not truncated, and grown ahead in zeroed
//! chunks, so an fdatasync writes the record and never the file's size (measured on ext4: the
//! size change cost a second synchronous write per fdatasync). The live records therefore end at
//! the first place that does not hold the record due next: zeros, an unfinished write (its batch
//! was never answered), or an older record left from before the last checkpoint (its number is
//! lower). A record that fails its checksum *followed by* the record due after it is damage to
//! acknowledged data: the store refuses to open rather than skip it.

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
    /// Where the next record goes: the bytes of live records since the last checkpoint.
    len: u64,
    /// The file's size: zeros or stale records past `len`.
    allocated: u64,
    next_seq: u64,
}

/// What reopening found: the records still to apply, in order.
#[derive(Debug)]
pub(super) struct Recovered {
    pub journal: Journal,
    pub records: Vec<(u64, Vec<u8>)>,
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

    /// Bytes of live records since the last checkpoint.
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
    pub(super) fn restart(&mut self) {
        self.len = 0;
    }
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
