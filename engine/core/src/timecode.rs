//! How the instants of an account's state are encoded: nanoseconds since 1970 (an integer) in
//! binary formats (the store's MessagePack), text (RFC 3339) in human-readable ones (JSON).
//!
//! Why: an account is decoded whenever it is read from the store and encoded on every commit, and
//! it holds an instant or two per bucket, hold and note. As text each costs about 30 bytes and a
//! date parse; read at a million customers, the parsing was a sixth of a quote's CPU. Both forms
//! are read back, so records written before this encoding still decode. Instants beyond what 64
//! bits of nanoseconds hold (after 2262) stay text.
//!
//! Used with `#[serde(with = ...)]` on state fields only: commands keep chrono's own encoding,
//! since their fingerprints must not change.

use chrono::{DateTime, FixedOffset, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A `DateTime<Utc>` field.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match at.timestamp_nanos_opt() {
        Some(nanos) if !serializer.is_human_readable() => serializer.serialize_i64(nanos),
        _ => at.serialize(serializer),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    if deserializer.is_human_readable() {
        return DateTime::<Utc>::deserialize(deserializer);
    }
    deserializer.deserialize_any(InstantVisitor)
}

struct InstantVisitor;

impl<'de> Visitor<'de> for InstantVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("nanoseconds since 1970 or an RFC 3339 instant")
    }

    fn visit_i64<E: de::Error>(self, nanos: i64) -> Result<Self::Value, E> {
        Ok(DateTime::from_timestamp_nanos(nanos))
    }

    fn visit_u64<E: de::Error>(self, nanos: u64) -> Result<Self::Value, E> {
        let nanos = i64::try_from(nanos).map_err(|_| E::custom(format!("instant {nanos} ns out of range")))?;
        Ok(DateTime::from_timestamp_nanos(nanos))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        text.parse::<DateTime<FixedOffset>>().map(|at| at.with_timezone(&Utc)).map_err(E::custom)
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
        let text = std::str::from_utf8(bytes).map_err(E::custom)?;
        self.visit_str(text)
    }
}

/// Wraps one instant so that `Option` and `Vec` fields encode it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Instant(#[serde(with = "self")] DateTime<Utc>);

/// An `Option<DateTime<Utc>>` field (with `#[serde(default)]`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        at.map(Instant).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Instant>::deserialize(deserializer)?.map(|instant| instant.0))
    }
}

/// A `Vec<DateTime<Utc>>` field.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(all: &[DateTime<Utc>], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(all.iter().map(|at| Instant(*at)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<DateTime<Utc>>, D::Error> {
        Ok(Vec::<Instant>::deserialize(deserializer)?.into_iter().map(|instant| instant.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Compact {
        #[serde(with = "super")]
        at: DateTime<Utc>,
        #[serde(default, with = "super::option")]
        maybe: Option<DateTime<Utc>>,
        #[serde(default, with = "super::vec")]
        all: Vec<DateTime<Utc>>,
    }

    /// The same fields as written before this encoding: chrono's text.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Text {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
        all: Vec<DateTime<Utc>>,
    }

    fn at(nanos: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(nanos)
    }

    #[test]
    fn instants_round_trip_to_the_nanosecond_and_old_text_records_still_read() {
        let value = Compact { at: at(1_765_000_000_123_456_789), maybe: Some(at(-5)), all: vec![at(0), at(42)] };
        let binary = rmp_serde::to_vec(&value).expect("encode");
        assert_eq!(rmp_serde::from_slice::<Compact>(&binary).expect("decode"), value);
        let old = rmp_serde::to_vec(&Text { at: value.at, maybe: value.maybe, all: value.all.clone() }).expect("encode");
        assert!(binary.len() + 60 < old.len(), "binary {} bytes, text {} bytes", binary.len(), old.len());
        assert_eq!(rmp_serde::from_slice::<Compact>(&old).expect("an old record decodes"), value);
        // Human-readable formats keep the text.
        let json = serde_json::to_string(&value).expect("json");
        assert!(json.contains("2025-12-06T05:46:40.123456789Z"), "{json}");
        assert_eq!(serde_json::from_str::<Compact>(&json).expect("json back"), value);
    }

    #[test]
    fn instants_beyond_2262_stay_text_and_read_back() {
        let far = DateTime::<Utc>::MAX_UTC;
        let value = Compact { at: far, maybe: None, all: Vec::new() };
        let binary = rmp_serde::to_vec(&value).expect("encode");
        assert_eq!(rmp_serde::from_slice::<Compact>(&binary).expect("decode"), value);
    }
}
