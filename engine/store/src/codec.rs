//! The byte format of stored records: a format byte, then the value in MessagePack (rmp-serde). The format byte
//! lets a later release read old records; a record that does not decode is reported as corrupt,
//! never guessed at.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// MessagePack with instants as RFC 3339 text (chrono's encoding), written before `FORMAT_V2`.
pub const FORMAT_V1: u8 = 1;
/// MessagePack with the instants of account state as integers (`loyalty_core::timecode`), which
/// reads V1 bodies too. The byte changed so that an older engine refuses these records by name
/// ("unknown format 2") rather than failing on a field.
pub const FORMAT_V2: u8 = 2;

/// Encodes a value with the current format byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT_V2];
    let body = rmp_serde::to_vec(value).map_err(|error| StoreError::Corrupt(format!("encode: {error}")))?;
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&(FORMAT_V1 | FORMAT_V2), body)) => {
            rmp_serde::from_slice(body).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
        }
        Some((format, _)) => Err(StoreError::Corrupt(format!("{what}: unknown format {format}"))),
        None => Err(StoreError::Corrupt(format!("{what}: empty record"))),
    }
}

/// Encodes a versioned record: the version (8 bytes, little-endian) then the value.
pub fn encode_versioned<T: Serialize>(version: u64, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = version.to_le_bytes().to_vec();
    bytes.extend_from_slice(&encode(value)?);
    Ok(bytes)
}

/// Decodes a record written by [`encode_versioned`].
pub fn decode_versioned<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<(u64, T), StoreError> {
    if bytes.len() < 8 {
        return Err(StoreError::Corrupt(format!("{what}: record of {} bytes", bytes.len())));
    }
    let (version, body) = bytes.split_at(8);
    let mut raw = [0u8; 8];
    raw.copy_from_slice(version);
    Ok((u64::from_le_bytes(raw), decode(what, body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};
    use loyalty_core::Decimal;
    use loyalty_core::account::{AccountState, Bucket, Hold};

    fn account() -> AccountState {
        let at = DateTime::<Utc>::from_timestamp_nanos(1_765_000_000_123_456_789);
        let mut state = AccountState::new("acc-1".into(), true, at);
        for id in 0..10 {
            state.buckets.push(Bucket {
                id,
                receipt_id: Some(format!("r{id}")),
                available_from: at + Duration::hours(id as i64),
                expires_at: at + Duration::days(365 + id as i64),
                remaining: Decimal::from(100),
                certificate: None,
            });
        }
        state.holds.push(Hold { hold_id: "h".into(), receipt_id: "r".into(), amount: Decimal::from(5), expires_at: at });
        state.last_purchase_at = Some(at);
        state.presence.issued = vec![at, at + Duration::seconds(1)];
        state
    }

    /// A data directory written before format 2 (instants as text) still reads, to the
    /// nanosecond; what is written now is format 2 and smaller.
    #[test]
    fn format_one_records_still_read_and_format_two_is_smaller() {
        let state = account();
        // Format 1 as it was written: the same MessagePack with chrono's text instants, which a
        // human-readable serializer still produces.
        let mut old = vec![FORMAT_V1];
        let mut serializer = rmp_serde::Serializer::new(&mut old).with_human_readable();
        state.serialize(&mut serializer).expect("encode as format 1");
        assert_eq!(decode::<AccountState>("account", &old).expect("a format-1 record reads"), state);
        let new = encode(&state).expect("encode");
        assert_eq!(new[0], FORMAT_V2);
        assert_eq!(decode::<AccountState>("account", &new).expect("a format-2 record reads"), state);
        assert!(new.len() * 10 < old.len() * 8, "format 2: {} bytes, format 1: {} bytes", new.len(), old.len());
        assert!(
            matches!(decode::<AccountState>("account", &[3, 0x90]), Err(StoreError::Corrupt(message)) if message.contains("unknown format 3"))
        );
    }
}
