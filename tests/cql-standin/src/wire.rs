//! Native protocol v4 primitives: frame header, request bodies and response bodies.
//!
//! Only what the stand-in needs is here; the layout follows `native_protocol_v4.spec`.

use crate::error::CqlError;

/// Response opcodes.
pub mod opcode {
    pub const ERROR: u8 = 0x00;
    pub const STARTUP: u8 = 0x01;
    pub const READY: u8 = 0x02;
    pub const AUTHENTICATE: u8 = 0x03;
    pub const OPTIONS: u8 = 0x05;
    pub const SUPPORTED: u8 = 0x06;
    pub const QUERY: u8 = 0x07;
    pub const RESULT: u8 = 0x08;
    pub const PREPARE: u8 = 0x09;
    pub const EXECUTE: u8 = 0x0A;
    pub const REGISTER: u8 = 0x0B;
    pub const BATCH: u8 = 0x0D;
    pub const AUTH_RESPONSE: u8 = 0x0F;
    pub const AUTH_SUCCESS: u8 = 0x10;
}

/// Frame header flags.
pub mod flag {
    pub const COMPRESSION: u8 = 0x01;
    pub const CUSTOM_PAYLOAD: u8 = 0x04;
}

/// Largest frame body accepted (the protocol's limit is 256 MiB).
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// A bound value as sent by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawValue {
    /// Length -1: null (a tombstone when written).
    Null,
    /// Length -2: "unset", the cell is left unchanged.
    Unset,
    Bytes(Vec<u8>),
}

/// Cursor over a request body.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

fn malformed(what: &str) -> CqlError {
    CqlError::protocol(format!("malformed request body: cannot read {what}"))
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CqlError> {
        if self.buf.len() < n {
            return Err(malformed(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn byte(&mut self, what: &str) -> Result<u8, CqlError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn short(&mut self, what: &str) -> Result<u16, CqlError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn int(&mut self, what: &str) -> Result<i32, CqlError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn long(&mut self, what: &str) -> Result<i64, CqlError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn string(&mut self, what: &str) -> Result<String, CqlError> {
        let n = self.short(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed(what))
    }

    pub fn long_string(&mut self, what: &str) -> Result<String, CqlError> {
        let n = self.int(what)?;
        if n < 0 {
            return Err(malformed(what));
        }
        let b = self.take(n as usize, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed(what))
    }

    pub fn short_bytes(&mut self, what: &str) -> Result<Vec<u8>, CqlError> {
        let n = self.short(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }

    /// `[bytes]`: None when the length is negative.
    pub fn bytes(&mut self, what: &str) -> Result<Option<Vec<u8>>, CqlError> {
        let n = self.int(what)?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize, what)?.to_vec()))
    }

    /// `[value]`: bytes, null (-1) or unset (-2).
    pub fn value(&mut self, what: &str) -> Result<RawValue, CqlError> {
        let n = self.int(what)?;
        match n {
            -1 => Ok(RawValue::Null),
            -2 => Ok(RawValue::Unset),
            n if n < 0 => Err(malformed(what)),
            n => Ok(RawValue::Bytes(self.take(n as usize, what)?.to_vec())),
        }
    }

    pub fn string_map(&mut self, what: &str) -> Result<Vec<(String, String)>, CqlError> {
        let n = self.short(what)?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let k = self.string(what)?;
            let v = self.string(what)?;
            out.push((k, v));
        }
        Ok(out)
    }

    pub fn string_list(&mut self, what: &str) -> Result<Vec<String>, CqlError> {
        let n = self.short(what)?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(self.string(what)?);
        }
        Ok(out)
    }

    /// Skips a `[bytes map]` (custom payload).
    pub fn skip_bytes_map(&mut self) -> Result<(), CqlError> {
        let n = self.short("custom payload")?;
        for _ in 0..n {
            self.string("custom payload key")?;
            self.bytes("custom payload value")?;
        }
        Ok(())
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
}

/// Output buffer helpers.
pub trait Writer {
    fn put_short(&mut self, v: u16);
    fn put_int(&mut self, v: i32);
    fn put_string(&mut self, s: &str);
    fn put_short_bytes(&mut self, b: &[u8]);
    fn put_bytes(&mut self, b: Option<&[u8]>);
    fn put_string_list(&mut self, l: &[&str]);
}

impl Writer for Vec<u8> {
    fn put_short(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_int(&mut self, v: i32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_string(&mut self, s: &str) {
        let b = s.as_bytes();
        let n = b.len().min(u16::MAX as usize);
        self.put_short(n as u16);
        self.extend_from_slice(&b[..n]);
    }
    fn put_short_bytes(&mut self, b: &[u8]) {
        self.put_short(b.len() as u16);
        self.extend_from_slice(b);
    }
    fn put_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.put_int(-1),
            Some(b) => {
                self.put_int(b.len() as i32);
                self.extend_from_slice(b);
            }
        }
    }
    fn put_string_list(&mut self, l: &[&str]) {
        self.put_short(l.len() as u16);
        for s in l {
            self.put_string(s);
        }
    }
}

/// Consistency levels (protocol codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Any,
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    Serial,
    LocalSerial,
    LocalOne,
}

impl Consistency {
    pub fn from_code(code: u16) -> Result<Self, CqlError> {
        Ok(match code {
            0x0000 => Consistency::Any,
            0x0001 => Consistency::One,
            0x0002 => Consistency::Two,
            0x0003 => Consistency::Three,
            0x0004 => Consistency::Quorum,
            0x0005 => Consistency::All,
            0x0006 => Consistency::LocalQuorum,
            0x0007 => Consistency::EachQuorum,
            0x0008 => Consistency::Serial,
            0x0009 => Consistency::LocalSerial,
            0x000A => Consistency::LocalOne,
            other => return Err(CqlError::protocol(format!("unknown consistency level code 0x{other:04x}"))),
        })
    }

    pub fn is_serial(self) -> bool {
        matches!(self, Consistency::Serial | Consistency::LocalSerial)
    }
}

/// `<query_parameters>` of QUERY and EXECUTE.
#[derive(Debug, Clone)]
pub struct QueryParams {
    pub consistency: Consistency,
    pub values: Vec<RawValue>,
    pub page_size: Option<i32>,
    pub paging_state: Option<Vec<u8>>,
}

mod qflag {
    pub const VALUES: u8 = 0x01;
    pub const PAGE_SIZE: u8 = 0x04;
    pub const PAGING_STATE: u8 = 0x08;
    pub const SERIAL_CONSISTENCY: u8 = 0x10;
    pub const DEFAULT_TIMESTAMP: u8 = 0x20;
    pub const NAMES_FOR_VALUES: u8 = 0x40;
}

fn serial_consistency(r: &mut Reader<'_>) -> Result<Consistency, CqlError> {
    let c = Consistency::from_code(r.short("serial consistency")?)?;
    if !c.is_serial() {
        return Err(CqlError::protocol(format!("serial consistency must be SERIAL or LOCAL_SERIAL, got {c:?}")));
    }
    Ok(c)
}

impl QueryParams {
    pub fn read(r: &mut Reader<'_>) -> Result<Self, CqlError> {
        let consistency = Consistency::from_code(r.short("consistency")?)?;
        let flags = r.byte("query flags")?;
        if flags & qflag::NAMES_FOR_VALUES != 0 {
            return Err(CqlError::invalid("named bind values are not supported by the CQL stand-in; bind values by position"));
        }
        if flags & 0x80 != 0 {
            return Err(CqlError::protocol(format!("unknown query flags 0x{flags:02x}")));
        }
        let mut values = Vec::new();
        if flags & qflag::VALUES != 0 {
            let n = r.short("value count")?;
            for _ in 0..n {
                values.push(r.value("bound value")?);
            }
        }
        let page_size = if flags & qflag::PAGE_SIZE != 0 { Some(r.int("page size")?) } else { None };
        let paging_state = if flags & qflag::PAGING_STATE != 0 { r.bytes("paging state")? } else { None };
        // The serial consistency is validated and otherwise ignored: every operation is
        // linearisable. Result metadata is always sent, whatever SKIP_METADATA says.
        if flags & qflag::SERIAL_CONSISTENCY != 0 {
            serial_consistency(r)?;
        }
        if flags & qflag::DEFAULT_TIMESTAMP != 0 {
            // Client-side timestamps are accepted and ignored: the stand-in orders writes by arrival.
            r.long("default timestamp")?;
        }
        Ok(QueryParams { consistency, values, page_size: page_size.filter(|&p| p > 0), paging_state })
    }
}

/// One statement of a BATCH request.
#[derive(Debug, Clone)]
pub enum BatchItem {
    Query(String),
    Prepared(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// 0 logged, 1 unlogged, 2 counter.
    pub kind: u8,
    pub items: Vec<(BatchItem, Vec<RawValue>)>,
    pub consistency: Consistency,
}

impl BatchRequest {
    pub fn read(r: &mut Reader<'_>) -> Result<Self, CqlError> {
        let kind = r.byte("batch type")?;
        if kind > 2 {
            return Err(CqlError::protocol(format!("unknown batch type {kind}")));
        }
        let n = r.short("batch statement count")?;
        let mut items = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let item = match r.byte("batch statement kind")? {
                0 => BatchItem::Query(r.long_string("batch query string")?),
                1 => BatchItem::Prepared(r.short_bytes("batch prepared id")?),
                k => return Err(CqlError::protocol(format!("unknown batch statement kind {k}"))),
            };
            let nv = r.short("batch value count")?;
            let mut values = Vec::with_capacity(nv as usize);
            for _ in 0..nv {
                values.push(r.value("batch value")?);
            }
            items.push((item, values));
        }
        let consistency = Consistency::from_code(r.short("batch consistency")?)?;
        let flags = r.byte("batch flags")?;
        if flags & qflag::NAMES_FOR_VALUES != 0 {
            return Err(CqlError::invalid("named bind values are not supported by the CQL stand-in; bind values by position"));
        }
        if flags & qflag::SERIAL_CONSISTENCY != 0 {
            serial_consistency(r)?;
        }
        if flags & qflag::DEFAULT_TIMESTAMP != 0 {
            r.long("batch default timestamp")?;
        }
        Ok(BatchRequest { kind, items, consistency })
    }
}

/// Builds a complete response frame.
pub fn frame(stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    frame_with_version(0x84, stream, opcode, body)
}

pub fn frame_with_version(version: u8, stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + body.len());
    out.push(version);
    out.push(0);
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(opcode);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}
