//! The write-ahead journal in front of the redb file.
//!
//! A durable redb commit rewrites the copy-on-write B-tree pages of every table it touched and
//! fsyncs them: measured, that bounded durable calls (bench/analysis.md). With the journal, the
//! writer applies a batch to redb *without* an fsync, appends the batch's commits to this file as
//! one checksummed record, fdatasyncs it, and only then makes the batch visible and answers. redb
//! makes its pages durable at a *checkpoint* (one durable commit after the journal has grown to
//! `checkpoint_bytes`, and at shutdown), after which the journal is emptied.
//!
//! Each batch's redb transaction records the sequence number of its journal record (the store's
//! `journal_seq`), so redb's durable state always says which records it already holds. Reopening
//! after a crash: redb comes back at its last checkpoint, and the records after its `journal_seq`
//! are applied again in order.
//!
//! File format: records one after another, each `len: u32 LE`, `crc32 of the body: u32 LE`, then
//! the body of `len` bytes: `seq: u64 LE` and the payload. A record that does not check out at the
//! end of the file is a write that never completed (its batch was never answered): it is cut off.
//! One that does not check out *followed by* a record that does is damage to acknowledged data:
//! the store refuses to open rather than skip it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

const HEADER: usize = 8;
/// A record longer than this is damage, not a batch (a batch holds at most a few MiB).
const RECORD_MAX: usize = 1 << 30;

/// The open journal: where the next record goes and what it will be numbered.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    len: u64,
    next_seq: u64,
}

/// What reopening found: the records still to apply, in order.
#[derive(Debug)]
pub(super) struct Recovered {
    pub journal: Journal,
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes of an unfinished record cut off the end.
    pub torn_bytes: u64,
}

fn io(path: &Path, what: &str, error: std::io::Error) -> StoreError {
    StoreError::Io(format!("journal {}: {what}: {error}", path.display()))
}

impl Journal {
    /// Opens (or creates) the journal and returns the records numbered after `applied`, the last
    /// record redb already holds. Cuts off an unfinished record at the end.
    pub(super) fn open(path: &Path, applied: u64) -> Result<Recovered, StoreError> {
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| io(path, "open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, "read", e))?;
        let mut records = Vec::new();
        let mut at = 0usize;
        let mut last_seq = applied;
        let mut previous: Option<u64> = None;
        while at < bytes.len() {
            match parse(&bytes[at..]) {
                Some((seq, body_len)) => {
                    if let Some(previous) = previous
                        && seq != previous + 1
                    {
                        return Err(StoreError::Corrupt(format!(
                            "journal {}: record {seq} follows record {previous} at byte {at}",
                            path.display()
                        )));
                    }
                    previous = Some(seq);
                    if seq > applied {
                        if seq != last_seq + 1 {
                            return Err(StoreError::Corrupt(format!(
                                "journal {}: record {seq} where {} was due (the store holds up to {applied})",
                                path.display(),
                                last_seq + 1
                            )));
                        }
                        records.push((seq, bytes[at + HEADER + 8..at + HEADER + body_len].to_vec()));
                        last_seq = seq;
                    }
                    at += HEADER + body_len;
                }
                None => {
                    if damaged_before_a_good_record(&bytes[at..], previous) {
                        return Err(StoreError::Corrupt(format!(
                            "journal {}: the record at byte {at} fails its checksum but later records are whole; \
                             acknowledged calls are in it: restore from a backup",
                            path.display()
                        )));
                    }
                    break;
                }
            }
        }
        let torn_bytes = (bytes.len() - at) as u64;
        if torn_bytes > 0 {
            file.set_len(at as u64).map_err(|e| io(path, "cut off an unfinished record", e))?;
            file.sync_all().map_err(|e| io(path, "sync", e))?;
        }
        file.seek(SeekFrom::Start(at as u64)).map_err(|e| io(path, "seek", e))?;
        let next_seq = previous.map_or(applied, |seq| seq.max(applied)) + 1;
        Ok(Recovered { journal: Journal { file, path: path.to_owned(), len: at as u64, next_seq }, records, torn_bytes })
    }

    /// The number the next record will get.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in the journal since the last checkpoint.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one record and returns once it is on disk (fdatasync).
    pub(super) fn append(&mut self, payload: &[u8]) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let body_len = 8 + payload.len();
        if body_len > RECORD_MAX {
            return Err(StoreError::Io(format!("journal: a record of {body_len} bytes")));
        }
        let mut record = Vec::with_capacity(HEADER + body_len);
        record.extend_from_slice(&(body_len as u32).to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(payload);
        let crc = crc32fast::hash(&record[HEADER..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all(&record).map_err(|e| io(&self.path, "write", e))?;
        self.file.sync_data().map_err(|e| io(&self.path, "fdatasync", e))?;
        self.len += record.len() as u64;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Empties the journal after a checkpoint made everything in it durable in redb.
    pub(super) fn truncate(&mut self) -> Result<(), StoreError> {
        self.file.set_len(0).map_err(|e| io(&self.path, "truncate", e))?;
        self.file.seek(SeekFrom::Start(0)).map_err(|e| io(&self.path, "seek", e))?;
        self.file.sync_all().map_err(|e| io(&self.path, "sync", e))?;
        self.len = 0;
        Ok(())
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
/// by the record due after it: then it is damage, not an unfinished write (a batch's record is
/// written only after the one before it was on disk).
fn damaged_before_a_good_record(bytes: &[u8], previous: Option<u64>) -> bool {
    let Some(raw) = bytes.get(0..4) else { return false };
    let body_len = u32::from_le_bytes(raw.try_into().unwrap_or_default()) as usize;
    if !(8..=RECORD_MAX).contains(&body_len) {
        return false;
    }
    let Some(after) = bytes.get(HEADER + body_len..) else { return false };
    match (parse(after), previous) {
        (Some((seq, _)), Some(previous)) => seq == previous + 2,
        (Some(_), None) => true,
        (None, _) => false,
    }
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
        assert_eq!(recovered.torn_bytes, 0);
        assert_eq!(recovered.journal.next_seq(), 4);
        let all = reopen(&path, 0).expect("reopen");
        assert_eq!(all.records.len(), 3);
    }

    #[test]
    fn an_unfinished_record_at_the_end_is_cut_off_and_numbering_goes_on() {
        let dir = tempfile::tempdir().expect("dir");
        let path = written(dir.path(), &[b"one", b"two"]);
        let whole = std::fs::metadata(&path).expect("size").len();
        // Half of a third record: its write never completed.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 3, 0]).expect("write");
        drop(file);
        let mut recovered = reopen(&path, 0).expect("reopen");
        assert_eq!(recovered.records.len(), 2);
        assert_eq!(recovered.torn_bytes, 10);
        assert_eq!(std::fs::metadata(&path).expect("size").len(), whole);
        assert_eq!(recovered.journal.append(b"three").expect("append"), 3);
        assert_eq!(reopen(&path, 0).expect("reopen").records.last(), Some(&(3, b"three".to_vec())));
    }

    #[test]
    fn a_damaged_record_before_whole_ones_refuses_to_open() {
        let dir = tempfile::tempdir().expect("dir");
        let path = written(dir.path(), &[b"one", b"two", b"three"]);
        let mut bytes = std::fs::read(&path).expect("read");
        // Flip a bit in the second record's payload.
        let second = HEADER + 8 + 3;
        bytes[second + HEADER + 8] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        let error = reopen(&path, 0).expect_err("damage refused");
        assert!(matches!(&error, StoreError::Corrupt(message) if message.contains("checksum")), "{error:?}");
    }

    #[test]
    fn records_the_store_already_holds_are_skipped_and_a_gap_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = written(dir.path(), &[b"one", b"two"]);
        assert!(reopen(&path, 2).expect("reopen").records.is_empty());
        assert_eq!(reopen(&path, 5).expect("reopen").journal.next_seq(), 6);
        // Emptied at a checkpoint and written on from 7: a store that holds only up to 2 (an
        // older copy of the file) would miss 3..=6.
        let mut journal = reopen(&path, 6).expect("reopen").journal;
        journal.truncate().expect("truncate");
        journal.append(b"seven").expect("append");
        let error = reopen(&path, 2).expect_err("gap");
        assert!(matches!(&error, StoreError::Corrupt(message) if message.contains("was due")), "{error:?}");
    }
}
