//! API keys: how they look, how they are made, and how they are checked.
//!
//! A key is `lk1/<program>/<credential>/<secret>`: the program and credential IDs say where to look
//! before any body is decoded, and the secret (256 random bits, hex) is what proves the caller.
//! Only a SHA-256 digest of the whole key, under a domain prefix, is stored: a leaked store or
//! config file gives nobody a working key, and 256 random bits need no slow hash to resist
//! guessing. Digests are compared in constant time.

use loyalty_core::fingerprint::hex;
pub use loyalty_core::fingerprint::same_digest;

/// The key format's prefix (its version).
const PREFIX: &str = "lk1";
/// Random bytes in a key's secret.
const SECRET_BYTES: usize = 32;

/// A key taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub program_id: &'a str,
    pub credential_id: &'a str,
    secret: &'a str,
    whole: &'a str,
}

impl ParsedKey<'_> {
    /// The digest the registry keeps for this key.
    pub fn digest(&self) -> String {
        digest(self.whole)
    }
}

/// Takes a presented key apart, or `None` if it is not shaped like one.
pub fn parse(raw: &str) -> Option<ParsedKey<'_>> {
    let mut parts = raw.split('/');
    let (prefix, program_id, credential_id, secret) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let well_formed = prefix == PREFIX
        && parts.next().is_none()
        && !program_id.is_empty()
        && program_id.len() <= 64
        && is_credential_id(credential_id)
        && secret.len() == SECRET_BYTES * 2
        && secret.bytes().all(|byte| byte.is_ascii_hexdigit());
    well_formed.then_some(ParsedKey { program_id, credential_id, secret, whole: raw })
}

/// Credential IDs: 3 to 40 of `a-z`, `0-9` and `-`; they appear in ledgers, logs and metrics.
pub fn is_credential_id(raw: &str) -> bool {
    (3..=40).contains(&raw.len()) && raw.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

/// A new key for a credential, from the operating system's random source.
pub fn generate(program_id: &str, credential_id: &str) -> Result<String, getrandom::Error> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    Ok(format!("{PREFIX}/{program_id}/{credential_id}/{}", hex(&secret)))
}

/// Hex SHA-256 of the key under the format's domain prefix.
pub fn digest(key: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"loyalty-api-key\0");
    hasher.update(key.as_bytes());
    hex(&hasher.finalize())
}

/// The secret part is never printed: a key in a debug log would be a leaked key.
impl std::fmt::Display for ParsedKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}/{}/{}/<{} secret chars>", self.program_id, self.credential_id, self.secret.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_its_digest_is_stable() {
        let key = generate("shop", "till-gw-1").expect("random source");
        let parsed = parse(&key).expect("well formed");
        assert_eq!((parsed.program_id, parsed.credential_id), ("shop", "till-gw-1"));
        assert_eq!(parsed.digest(), digest(&key));
        assert!(!parsed.to_string().contains(&key[key.len() - 64..]), "display hides the secret");
        assert_ne!(generate("shop", "till-gw-1").expect("random source"), key);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let secret = "ab".repeat(32);
        for raw in [
            String::new(),
            "lk1".into(),
            format!("lk2/shop/till/{secret}"),
            format!("lk1//till/{secret}"),
            format!("lk1/shop/Till/{secret}"),
            format!("lk1/shop/ti/{secret}"),
            format!("lk1/shop/till/{}", &secret[1..]),
            format!("lk1/shop/till/{}zz", &secret[2..]),
            format!("lk1/shop/till/{secret}/extra"),
        ] {
            assert_eq!(parse(&raw), None, "{raw}");
        }
    }

    #[test]
    fn digests_compare_only_when_equal() {
        assert!(same_digest(&digest("a"), &digest("a")));
        assert!(!same_digest(&digest("a"), &digest("b")));
        assert!(!same_digest("abc", "ab"));
    }
}
