//! CQL column types: validation of serialized values, their sort order, and literals.

use crate::error::CqlError;
use crate::wire::{Reader, Writer};
use std::cmp::Ordering;

/// A CQL type. User tables may use only the scalar types; the collections and `inet` exist for the
/// system tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CqlType {
    Ascii,
    BigInt,
    Blob,
    Boolean,
    Double,
    Int,
    Timestamp,
    Uuid,
    Text,
    Timeuuid,
    SmallInt,
    TinyInt,
    Inet,
    List(Box<CqlType>),
    Set(Box<CqlType>),
    Map(Box<CqlType>, Box<CqlType>),
}

/// A literal constant in a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(String),
    Float(String),
    Bool(bool),
    Hex(Vec<u8>),
    Uuid([u8; 16]),
    Null,
}

impl CqlType {
    /// The type named in a CREATE TABLE column definition (lower-cased already).
    pub fn from_user_name(name: &str) -> Result<CqlType, CqlError> {
        Ok(match name {
            "ascii" => CqlType::Ascii,
            "bigint" => CqlType::BigInt,
            "blob" => CqlType::Blob,
            "boolean" => CqlType::Boolean,
            "double" => CqlType::Double,
            "int" => CqlType::Int,
            "timestamp" => CqlType::Timestamp,
            "uuid" => CqlType::Uuid,
            "text" | "varchar" => CqlType::Text,
            "timeuuid" => CqlType::Timeuuid,
            "smallint" => CqlType::SmallInt,
            "tinyint" => CqlType::TinyInt,
            "counter" => return Err(CqlError::unsupported("the counter type (counter tables)")),
            "list" | "set" | "map" | "frozen" | "tuple" => {
                return Err(CqlError::unsupported(format!("the collection type {name}<...> in user tables")));
            }
            other => return Err(CqlError::unsupported(format!("the column type '{other}'"))),
        })
    }

    /// The type's name as written in CQL and in `system_schema.columns.type`.
    pub fn cql_name(&self) -> String {
        match self {
            CqlType::Ascii => "ascii".into(),
            CqlType::BigInt => "bigint".into(),
            CqlType::Blob => "blob".into(),
            CqlType::Boolean => "boolean".into(),
            CqlType::Double => "double".into(),
            CqlType::Int => "int".into(),
            CqlType::Timestamp => "timestamp".into(),
            CqlType::Uuid => "uuid".into(),
            CqlType::Text => "text".into(),
            CqlType::Timeuuid => "timeuuid".into(),
            CqlType::SmallInt => "smallint".into(),
            CqlType::TinyInt => "tinyint".into(),
            CqlType::Inet => "inet".into(),
            CqlType::List(e) => format!("list<{}>", e.cql_name()),
            CqlType::Set(e) => format!("set<{}>", e.cql_name()),
            CqlType::Map(k, v) => format!("map<{}, {}>", k.cql_name(), v.cql_name()),
        }
    }

    /// Writes the protocol `[option]` describing the type.
    pub fn write_option(&self, out: &mut Vec<u8>) {
        let id: u16 = match self {
            CqlType::Ascii => 0x0001,
            CqlType::BigInt => 0x0002,
            CqlType::Blob => 0x0003,
            CqlType::Boolean => 0x0004,
            CqlType::Double => 0x0007,
            CqlType::Int => 0x0009,
            CqlType::Timestamp => 0x000B,
            CqlType::Uuid => 0x000C,
            CqlType::Text => 0x000D,
            CqlType::Timeuuid => 0x000F,
            CqlType::Inet => 0x0010,
            CqlType::SmallInt => 0x0013,
            CqlType::TinyInt => 0x0014,
            CqlType::List(_) => 0x0020,
            CqlType::Map(_, _) => 0x0021,
            CqlType::Set(_) => 0x0022,
        };
        out.put_short(id);
        match self {
            CqlType::List(e) | CqlType::Set(e) => e.write_option(out),
            CqlType::Map(k, v) => {
                k.write_option(out);
                v.write_option(out);
            }
            _ => {}
        }
    }

    /// Checks that a serialized value is a valid value of this type.
    pub fn validate(&self, v: &[u8]) -> Result<(), String> {
        let fixed = |n: usize| {
            if v.len() == n { Ok(()) } else { Err(format!("expected {n} bytes for a {} value, got {}", self.cql_name(), v.len())) }
        };
        match self {
            CqlType::TinyInt => fixed(1),
            CqlType::SmallInt => fixed(2),
            CqlType::Int => fixed(4),
            CqlType::BigInt | CqlType::Timestamp | CqlType::Double => fixed(8),
            CqlType::Boolean => fixed(1),
            CqlType::Uuid => fixed(16),
            CqlType::Timeuuid => {
                fixed(16)?;
                if v[6] >> 4 != 1 {
                    return Err("a timeuuid value must be a version 1 UUID".into());
                }
                Ok(())
            }
            CqlType::Text => std::str::from_utf8(v).map(|_| ()).map_err(|_| "invalid UTF-8 in a text value".into()),
            CqlType::Ascii => {
                if v.iter().all(|b| b.is_ascii()) {
                    Ok(())
                } else {
                    Err("non-ASCII byte in an ascii value".into())
                }
            }
            CqlType::Blob => Ok(()),
            CqlType::Inet => {
                if v.len() == 4 || v.len() == 16 {
                    Ok(())
                } else {
                    Err("an inet value must be 4 or 16 bytes".into())
                }
            }
            CqlType::List(e) | CqlType::Set(e) => {
                let items = decode_collection(v, false).map_err(|e| e.message().to_owned())?;
                for item in items {
                    e.validate(&item)?;
                }
                Ok(())
            }
            CqlType::Map(k, val) => {
                let items = decode_collection(v, true).map_err(|e| e.message().to_owned())?;
                for (i, item) in items.iter().enumerate() {
                    if i % 2 == 0 { k.validate(item)? } else { val.validate(item)? }
                }
                Ok(())
            }
        }
    }

    /// Appends an order-preserving (memcomparable, prefix-free) encoding of a valid value:
    /// comparing the encodings bytewise compares the values in the type's CQL order.
    pub fn order_encode(&self, v: &[u8], out: &mut Vec<u8>) {
        match self {
            CqlType::TinyInt | CqlType::SmallInt | CqlType::Int | CqlType::BigInt | CqlType::Timestamp => {
                let mut first = true;
                for &b in v {
                    out.push(if first { b ^ 0x80 } else { b });
                    first = false;
                }
            }
            CqlType::Boolean => out.push(u8::from(v.first().is_some_and(|&b| b != 0))),
            CqlType::Double => {
                let mut a = [0u8; 8];
                if v.len() == 8 {
                    a.copy_from_slice(v);
                }
                let bits = u64::from_be_bytes(a);
                let key = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
                out.extend_from_slice(&key.to_be_bytes());
            }
            CqlType::Uuid | CqlType::Timeuuid => {
                // Cassandra orders UUIDs by version, then (for time-based ones) by timestamp, then
                // by the raw bytes; this approximates it.
                let version = v.get(6).map_or(0, |b| b >> 4);
                out.push(version);
                if version == 1 && v.len() == 16 {
                    let ts = (u64::from(v[6] & 0x0f) << 56)
                        | (u64::from(v[7]) << 48)
                        | (u64::from(v[4]) << 40)
                        | (u64::from(v[5]) << 32)
                        | (u64::from(v[0]) << 24)
                        | (u64::from(v[1]) << 16)
                        | (u64::from(v[2]) << 8)
                        | u64::from(v[3]);
                    out.extend_from_slice(&ts.to_be_bytes());
                }
                escape_into(v, out);
            }
            _ => escape_into(v, out),
        }
    }

    /// Compares two valid values of this type in CQL order.
    pub fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        let mut ea = Vec::new();
        let mut eb = Vec::new();
        self.order_encode(a, &mut ea);
        self.order_encode(b, &mut eb);
        ea.cmp(&eb)
    }

    /// Converts a literal constant to a serialized value of this type (None for `null`).
    pub fn literal_value(&self, lit: &Literal, column: &str) -> Result<Option<Vec<u8>>, CqlError> {
        let bad = || CqlError::invalid(format!("Invalid literal {} for column {column} of type {}", show_literal(lit), self.cql_name()));
        let int = |s: &str, min: i128, max: i128| -> Result<i128, CqlError> {
            let n: i128 = s.parse().map_err(|_| bad())?;
            if n < min || n > max {
                return Err(bad());
            }
            Ok(n)
        };
        Ok(Some(match (self, lit) {
            (_, Literal::Null) => return Ok(None),
            (CqlType::Text, Literal::Str(s)) => s.as_bytes().to_vec(),
            (CqlType::Ascii, Literal::Str(s)) if s.is_ascii() => s.as_bytes().to_vec(),
            (CqlType::TinyInt, Literal::Int(s)) => (int(s, i8::MIN.into(), i8::MAX.into())? as i8).to_be_bytes().to_vec(),
            (CqlType::SmallInt, Literal::Int(s)) => (int(s, i16::MIN.into(), i16::MAX.into())? as i16).to_be_bytes().to_vec(),
            (CqlType::Int, Literal::Int(s)) => (int(s, i32::MIN.into(), i32::MAX.into())? as i32).to_be_bytes().to_vec(),
            (CqlType::BigInt | CqlType::Timestamp, Literal::Int(s)) => {
                (int(s, i64::MIN.into(), i64::MAX.into())? as i64).to_be_bytes().to_vec()
            }
            (CqlType::Timestamp, Literal::Str(_)) => {
                return Err(CqlError::unsupported_invalid(
                    "a timestamp given as a date string (use milliseconds since the epoch or a bind marker)",
                ));
            }
            (CqlType::Double, Literal::Int(s) | Literal::Float(s)) => {
                let f: f64 = s.parse().map_err(|_| bad())?;
                f.to_be_bytes().to_vec()
            }
            (CqlType::Boolean, Literal::Bool(b)) => vec![u8::from(*b)],
            (CqlType::Blob, Literal::Hex(b)) => b.clone(),
            (CqlType::Uuid, Literal::Uuid(u)) => u.to_vec(),
            (CqlType::Timeuuid, Literal::Uuid(u)) if u[6] >> 4 == 1 => u.to_vec(),
            _ => return Err(bad()),
        }))
    }
}

fn show_literal(lit: &Literal) -> String {
    match lit {
        Literal::Str(s) => format!("'{s}'"),
        Literal::Int(s) | Literal::Float(s) => s.clone(),
        Literal::Bool(b) => b.to_string(),
        Literal::Hex(b) => format!("0x{}", crate::error::hex(b)),
        Literal::Uuid(u) => crate::error::hex(u),
        Literal::Null => "null".into(),
    }
}

/// Variable-length values: 0x00 is escaped as 0x00 0xFF and the value ends with 0x00 0x00, which
/// keeps bytewise order and makes the encoding prefix-free.
fn escape_into(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.push(0);
    out.push(0);
}

/// Splits a serialized list/set (elements) or map (keys and values alternating).
pub fn decode_collection(v: &[u8], is_map: bool) -> Result<Vec<Vec<u8>>, CqlError> {
    let mut r = Reader::new(v);
    let n = r.int("collection size")?;
    if n < 0 {
        return Err(CqlError::invalid("malformed collection value"));
    }
    let items = if is_map { 2 * n as usize } else { n as usize };
    let mut out = Vec::with_capacity(items.min(1024));
    for _ in 0..items {
        match r.bytes("collection element")? {
            Some(b) => out.push(b),
            None => return Err(CqlError::invalid("null inside a collection value")),
        }
    }
    if r.remaining() != 0 {
        return Err(CqlError::invalid("malformed collection value: trailing bytes"));
    }
    Ok(out)
}

/// Serializes a list or set of serialized elements.
pub fn encode_collection<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let items: Vec<&[u8]> = items.into_iter().collect();
    let mut out = Vec::new();
    out.put_int(items.len() as i32);
    for i in items {
        out.put_bytes(Some(i));
    }
    out
}

/// Serializes a map of serialized keys and values.
pub fn encode_map<'a>(items: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let items: Vec<(&[u8], &[u8])> = items.into_iter().collect();
    let mut out = Vec::new();
    out.put_int(items.len() as i32);
    for (k, v) in items {
        out.put_bytes(Some(k));
        out.put_bytes(Some(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_order() {
        let t = CqlType::BigInt;
        let vals: Vec<i64> = vec![i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for w in vals.windows(2) {
            assert_eq!(t.compare(&w[0].to_be_bytes(), &w[1].to_be_bytes()), Ordering::Less);
        }
        let t = CqlType::TinyInt;
        assert_eq!(t.compare(&(-1i8).to_be_bytes(), &(1i8).to_be_bytes()), Ordering::Less);
    }

    #[test]
    fn double_order() {
        let t = CqlType::Double;
        let vals = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-9, 3.0, f64::INFINITY];
        for w in vals.windows(2) {
            assert_eq!(t.compare(&w[0].to_be_bytes(), &w[1].to_be_bytes()), Ordering::Less, "{w:?}");
        }
    }

    #[test]
    fn text_order_is_bytewise_and_prefix_free() {
        let t = CqlType::Text;
        assert_eq!(t.compare(b"a", b"ab"), Ordering::Less);
        assert_eq!(t.compare(b"ab", b"b"), Ordering::Less);
        assert_eq!(t.compare(b"", b"\0"), Ordering::Less);
        assert_eq!(t.compare(b"a\0", b"a\x01"), Ordering::Less);
        assert_eq!(t.compare("é".as_bytes(), b"z"), Ordering::Greater);
        // Composite keys: ("a", "z") < ("ab", "a").
        let mut k1 = Vec::new();
        t.order_encode(b"a", &mut k1);
        t.order_encode(b"z", &mut k1);
        let mut k2 = Vec::new();
        t.order_encode(b"ab", &mut k2);
        t.order_encode(b"a", &mut k2);
        assert!(k1 < k2);
    }
}
