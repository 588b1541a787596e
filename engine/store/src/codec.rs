//! The byte format of stored records: a format byte, then the value in MessagePack (rmp-serde). The format byte
//! lets a later release read old records; a record that does not decode is reported as corrupt,
//! never guessed at.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// The only format so far.
pub const FORMAT_V1: u8 = 1;

/// Encodes a value with the current format byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT_V1];
    let body = rmp_serde::to_vec(value).map_err(|error| StoreError::Corrupt(format!("encode: {error}")))?;
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => rmp_serde::from_slice(body).map_err(|error| StoreError::Corrupt(format!("{what}: {error}"))),
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
