//! Request fingerprints for idempotency: a replay must carry exactly the payload of the first call.
//! Commands hold normalised decimals, so "100" and "100.00" are the same request. Also the digest
//! helpers the other modules share. A leaf: it uses nothing else of the crate, so everything may
//! use it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The mutating calls, each with its own idempotency record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    Authorize,
    Redeem,
    Accrue,
    Reverse,
    Refund,
    Enroll,
    Bonus,
    ReplaceCard,
    Merge,
    Import,
    /// A sale without a customer (`RecordSale`). (Last: stored records keep their positions.)
    Sale,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Authorize => "authorize",
            OpKind::Redeem => "redeem",
            OpKind::Accrue => "accrue",
            OpKind::Reverse => "reverse",
            OpKind::Refund => "refund",
            OpKind::Enroll => "enroll",
            OpKind::Bonus => "bonus",
            OpKind::ReplaceCard => "replace_card",
            OpKind::Merge => "merge",
            OpKind::Import => "import",
            OpKind::Sale => "record_sale",
        }
    }
}

/// SHA-256 of the canonical encoding of a command.
pub type Fingerprint = [u8; 32];

/// Fingerprints a command of one kind of call.
pub fn fingerprint<T: Serialize>(op: OpKind, command: &T) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(op.as_str().as_bytes());
    // Encoding plain data structs to a Vec cannot fail; an empty encoding would still be
    // distinguished by the op name above.
    hasher.update(rmp_serde::to_vec(command).unwrap_or_default());
    hasher.finalize().into()
}

/// Lowercase hex of bytes: how digests are stored and shown (keys, codes, certificates).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Whether two digests are equal, compared without an early exit so that timing tells nothing
/// about a stored digest.
pub fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
