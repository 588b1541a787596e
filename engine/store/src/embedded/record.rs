//! A commit as the writer thread applies it: every record already encoded, and the same commit as
//! bytes in the journal.

use loyalty_core::identity::IdentityKey;

use crate::codec::{decode, encode, encode_versioned};
use crate::{Commit, StoreError};

/// A commit with every record already encoded by the calling task, so that the single writer
/// thread spends its time on conditions, inserts and the fsync, not on serialisation.
pub(super) struct EncodedCommit {
    pub(super) program_id: String,
    pub(super) account_id: String,
    pub(super) expected_version: u64,
    /// The account record at version `expected_version + 1`.
    pub(super) account: Vec<u8>,
    pub(super) ledger: Vec<(u64, Vec<u8>)>,
    /// Receipt ID, expected version, record at the next version.
    pub(super) receipt: Option<(String, u64, Vec<u8>)>,
    pub(super) identity_claims: Vec<(IdentityKey, String)>,
    pub(super) identity_releases: Vec<String>,
    pub(super) request: Option<(String, Vec<u8>)>,
    pub(super) events: Vec<Vec<u8>>,
    pub(super) credits: Vec<(String, Vec<u8>)>,
}

impl EncodedCommit {
    /// Checks the ledger invariants right before the data is written, then encodes it.
    pub(super) fn new(commit: Commit) -> Result<Self, StoreError> {
        commit.check_invariants()?;
        let account_id = commit.account.state.account_id.clone();
        let expected_version = commit.account.expected_version;
        Ok(EncodedCommit {
            account: encode_versioned(expected_version + 1, &commit.account.state)?,
            ledger: commit.ledger.iter().map(|entry| Ok((entry.seq, encode(entry)?))).collect::<Result<_, StoreError>>()?,
            receipt: match &commit.receipt {
                Some(receipt) => Some((
                    receipt.state.receipt_id.clone(),
                    receipt.expected_version,
                    encode_versioned(receipt.expected_version + 1, &receipt.state)?,
                )),
                None => None,
            },
            identity_claims: commit
                .identity_claims
                .into_iter()
                .map(|key| {
                    let storage = key.storage_key();
                    (key, storage)
                })
                .collect(),
            identity_releases: commit.identity_releases.iter().map(IdentityKey::storage_key).collect(),
            request: match &commit.request {
                Some(request) => Some((request.request_id.clone(), encode(&request.record)?)),
                None => None,
            },
            events: commit.events.iter().map(encode).collect::<Result<_, StoreError>>()?,
            credits: commit
                .credits
                .iter()
                .map(|credit| Ok((credit.credit_id.clone(), encode(credit)?)))
                .collect::<Result<_, StoreError>>()?,
            program_id: commit.program_id,
            account_id,
            expected_version,
        })
    }

    /// Appends this commit to a journal record. Replaying the applied commits of a batch in order
    /// on the state before it gives the state after it: the writer's conditions and inserts read
    /// nothing else.
    pub(super) fn write_to(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        put_str(out, &self.program_id);
        put_str(out, &self.account_id);
        put_u64(out, self.expected_version);
        put_bytes(out, &self.account);
        put_u64(out, self.ledger.len() as u64);
        for (seq, bytes) in &self.ledger {
            put_u64(out, *seq);
            put_bytes(out, bytes);
        }
        match &self.receipt {
            Some((receipt_id, expected, bytes)) => {
                out.push(1);
                put_str(out, receipt_id);
                put_u64(out, *expected);
                put_bytes(out, bytes);
            }
            None => out.push(0),
        }
        put_u64(out, self.identity_claims.len() as u64);
        for (key, storage) in &self.identity_claims {
            put_bytes(out, &encode(key)?);
            put_str(out, storage);
        }
        put_u64(out, self.identity_releases.len() as u64);
        for storage in &self.identity_releases {
            put_str(out, storage);
        }
        match &self.request {
            Some((request_id, bytes)) => {
                out.push(1);
                put_str(out, request_id);
                put_bytes(out, bytes);
            }
            None => out.push(0),
        }
        put_u64(out, self.events.len() as u64);
        for bytes in &self.events {
            put_bytes(out, bytes);
        }
        put_u64(out, self.credits.len() as u64);
        for (credit_id, bytes) in &self.credits {
            put_str(out, credit_id);
            put_bytes(out, bytes);
        }
        Ok(())
    }

    /// Reads one commit written by [`EncodedCommit::write_to`].
    pub(super) fn read_from(input: &mut Reader<'_>) -> Result<Self, StoreError> {
        let program_id = input.string()?;
        let account_id = input.string()?;
        let expected_version = input.u64()?;
        let account = input.bytes()?.to_vec();
        let ledger = (0..input.count()?).map(|_| Ok((input.u64()?, input.bytes()?.to_vec()))).collect::<Result<_, StoreError>>()?;
        let receipt = match input.flag()? {
            true => Some((input.string()?, input.u64()?, input.bytes()?.to_vec())),
            false => None,
        };
        let identity_claims = (0..input.count()?)
            .map(|_| Ok((decode("journal identity", input.bytes()?)?, input.string()?)))
            .collect::<Result<_, StoreError>>()?;
        let identity_releases = (0..input.count()?).map(|_| input.string()).collect::<Result<_, StoreError>>()?;
        let request = match input.flag()? {
            true => Some((input.string()?, input.bytes()?.to_vec())),
            false => None,
        };
        let events = (0..input.count()?).map(|_| Ok(input.bytes()?.to_vec())).collect::<Result<_, StoreError>>()?;
        let credits = (0..input.count()?).map(|_| Ok((input.string()?, input.bytes()?.to_vec()))).collect::<Result<_, StoreError>>()?;
        Ok(EncodedCommit {
            program_id,
            account_id,
            expected_version,
            account,
            ledger,
            receipt,
            identity_claims,
            identity_releases,
            request,
            events,
            credits,
        })
    }
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_bytes(out, text.as_bytes());
}

/// Reads a journal record's fields in the order they were written; running short is corruption.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < len {
            return Err(StoreError::Corrupt(format!("journal record: {len} bytes due, {} left", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        let raw: [u8; 8] = self.take(8)?.try_into().map_err(|_| StoreError::Corrupt("journal record: short number".into()))?;
        Ok(u64::from_le_bytes(raw))
    }

    /// A count of items, each at least one byte long: larger than what is left is corruption.
    fn count(&mut self) -> Result<usize, StoreError> {
        let count = self.u64()?;
        usize::try_from(count)
            .ok()
            .filter(|count| *count <= self.bytes.len())
            .ok_or_else(|| StoreError::Corrupt(format!("journal record: {count} items in {} bytes", self.bytes.len())))
    }

    fn flag(&mut self) -> Result<bool, StoreError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(StoreError::Corrupt(format!("journal record: flag {other}"))),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| StoreError::Corrupt("journal record: length".into()))?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| StoreError::Corrupt("journal record: text is not UTF-8".into()))
    }
}
