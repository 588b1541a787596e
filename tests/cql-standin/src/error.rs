//! CQL errors as sent in ERROR frames.

use crate::wire::Writer;
use std::fmt;

/// Error codes of native protocol v4 used by the stand-in.
pub mod code {
    pub const SERVER_ERROR: i32 = 0x0000;
    pub const PROTOCOL_ERROR: i32 = 0x000A;
    pub const BAD_CREDENTIALS: i32 = 0x0100;
    pub const SYNTAX_ERROR: i32 = 0x2000;
    pub const UNAUTHORIZED: i32 = 0x2100;
    pub const INVALID: i32 = 0x2200;
    pub const CONFIG_ERROR: i32 = 0x2300;
    pub const ALREADY_EXISTS: i32 = 0x2400;
    pub const UNPREPARED: i32 = 0x2500;
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Extra {
    None,
    AlreadyExists { keyspace: String, table: String },
    Unprepared { id: Vec<u8> },
}

/// An error answered to the client with an ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqlError {
    code: i32,
    message: String,
    extra: Extra,
}

impl CqlError {
    fn new(code: i32, message: impl Into<String>) -> Self {
        CqlError { code, message: message.into(), extra: Extra::None }
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::new(code::SERVER_ERROR, message)
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(code::PROTOCOL_ERROR, message)
    }

    pub fn bad_credentials(message: impl Into<String>) -> Self {
        Self::new(code::BAD_CREDENTIALS, message)
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new(code::SYNTAX_ERROR, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(code::UNAUTHORIZED, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID, message)
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(code::CONFIG_ERROR, message)
    }

    /// A syntax error for something the real server accepts but the stand-in does not implement.
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::syntax(format!("{what} is not supported by the CQL stand-in"))
    }

    /// An Invalid error for something the real server accepts but the stand-in does not implement.
    pub fn unsupported_invalid(what: impl fmt::Display) -> Self {
        Self::invalid(format!("{what} is not supported by the CQL stand-in"))
    }

    pub fn already_exists(keyspace: &str, table: &str, message: impl Into<String>) -> Self {
        CqlError {
            code: code::ALREADY_EXISTS,
            message: message.into(),
            extra: Extra::AlreadyExists { keyspace: keyspace.to_owned(), table: table.to_owned() },
        }
    }

    pub fn unprepared(id: &[u8]) -> Self {
        CqlError {
            code: code::UNPREPARED,
            message: format!("Prepared query with ID {} not found", hex(id)),
            extra: Extra::Unprepared { id: id.to_vec() },
        }
    }

    pub fn code(&self) -> i32 {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The ERROR frame body.
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_int(self.code);
        out.put_string(&self.message);
        match &self.extra {
            Extra::None => {}
            Extra::AlreadyExists { keyspace, table } => {
                out.put_string(keyspace);
                out.put_string(table);
            }
            Extra::Unprepared { id } => out.put_short_bytes(id),
        }
        out
    }
}

impl fmt::Display for CqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CQL error 0x{:04x}: {}", self.code, self.message)
    }
}

impl std::error::Error for CqlError {}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
