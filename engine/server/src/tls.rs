//! TLS on the gRPC server, and optional mutual TLS for till integrations (`[tls]` in the config).
//!
//! Tills sit on shared store networks (the shop's LAN and Wi-Fi, a vendor's VPN, the payment
//! terminal's segment): anything on them could read or change plaintext HTTP/2, API keys,
//! phone numbers and balances included. TLS closes that. Mutual TLS goes one step further: with a
//! client CA, each till integration presents a certificate, and [`client_cert_fingerprint`] lets a
//! program tie that integration's API key to its certificate, so a key copied off one till is
//! useless without that till's private key. `client_auth = "optional"` verifies certificates when
//! they are presented and still lets tills without one in (they authenticate by API key alone),
//! which is how a chain moves its tills to certificates one store at a time.
//!
//! rustls with the ring provider, through tonic's `tls-ring` feature (aws-lc would be a C build of
//! its own). Every file is read and checked at start; a bad one stops the engine with its name.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::Digest;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// Longest a TLS handshake may take: a client that opens a connection and stalls is dropped
/// rather than holding a socket and a handshake task indefinitely.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether clients must present a certificate signed by `client_ca_file`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Clients present no certificate; they are not asked for one (plain server-side TLS).
    #[default]
    None,
    /// A certificate is verified against `client_ca_file` when presented (an invalid one fails
    /// the handshake); clients without one still connect and authenticate by API key.
    Optional,
    /// The handshake fails without a certificate signed by `client_ca_file`.
    Required,
}

impl ClientAuth {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// The `[tls]` section. Without `cert_file` the server speaks plaintext (for loopback, or behind a
/// proxy that terminates TLS).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM, leaf first); setting it turns TLS on.
    pub cert_file: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub key_file: Option<PathBuf>,
    /// The CA certificates (PEM) that sign till certificates; needed for `client_auth`.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// A TLS file that cannot be used; every variant names the file (or files) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid TLS configuration:\n  {}", .problems.join("\n  "))]
    Invalid { problems: Vec<String> },
    /// The I/O error is part of the message rather than a `source`, so it is not printed twice.
    #[error("{}: cannot read: {error}", .path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}: not a PEM file ({reason})", .path.display())]
    NotPem { path: PathBuf, reason: String },
    #[error("{}: no certificate in it (expected a \"BEGIN CERTIFICATE\" block)", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key in it (expected an unencrypted \"BEGIN PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)", .path.display())]
    NoPrivateKey { path: PathBuf },
    /// The files parse as PEM, but rustls refuses them: a key it cannot parse, a key that does not
    /// match the certificate, a CA certificate it cannot use.
    #[error("{files}: refused by rustls: {reason}")]
    Refused { files: String, reason: String },
}

impl TlsConfig {
    /// Whether the server speaks TLS.
    pub fn is_enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// One line for logs and `check-config`: off, on, or mutual with the client-auth mode.
    pub fn describe(&self) -> &'static str {
        match (self.is_enabled(), self.client_auth) {
            (false, _) => "off (plaintext)",
            (true, ClientAuth::None) => "on (no client certificates)",
            (true, ClientAuth::Optional) => "mutual (client certificate optional)",
            (true, ClientAuth::Required) => "mutual (client certificate required)",
        }
    }

    /// Pushes every problem with the section, each naming its key.
    pub fn validate(&self, problems: &mut Vec<String>) {
        for (key, path) in [("cert_file", &self.cert_file), ("key_file", &self.key_file), ("client_ca_file", &self.client_ca_file)] {
            if path.as_ref().is_some_and(|path| path.as_os_str().is_empty()) {
                problems.push(format!("tls.{key}: an empty path; leave the key out instead"));
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => problems.push("tls.key_file: required when tls.cert_file is set".into()),
            (None, Some(_)) => problems.push("tls.cert_file: required when tls.key_file is set".into()),
            _ => {}
        }
        let client_auth = self.client_auth.as_str();
        if self.client_auth != ClientAuth::None {
            if self.cert_file.is_none() {
                problems.push(format!("tls.client_auth: \"{client_auth}\" needs TLS on (tls.cert_file and tls.key_file)"));
            }
            if self.client_ca_file.is_none() {
                problems.push(format!("tls.client_ca_file: required when tls.client_auth is \"{client_auth}\""));
            }
        } else if self.client_ca_file.is_some() {
            // A CA with client_auth = "none" would be silently ignored: an operator who meant mutual
            // TLS would run without it.
            problems.push("tls.client_ca_file: unused while tls.client_auth is \"none\"; set it to \"optional\" or \"required\"".into());
        }
    }

    /// Reads the PEM files into tonic's server TLS settings; `None` when TLS is off. The result is
    /// also checked the way `Server::tls_config` will use it, so a key that does not parse or does
    /// not match the certificate fails here, at start, naming the files.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        let mut problems = Vec::new();
        self.validate(&mut problems);
        if !problems.is_empty() {
            return Err(TlsError::Invalid { problems });
        }
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            return Ok(None);
        };
        let cert_pem = read_certificates(cert_file)?;
        let key_pem = read_private_key(key_file)?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)).timeout(HANDSHAKE_TIMEOUT);
        let mut files = vec![cert_file.display().to_string(), key_file.display().to_string()];
        // Validation allows a client CA only with client_auth "optional" or "required".
        if let Some(ca_file) = &self.client_ca_file {
            let ca_pem = read_certificates(ca_file)?;
            config = config.client_ca_root(Certificate::from_pem(ca_pem)).client_auth_optional(self.client_auth == ClientAuth::Optional);
            files.push(ca_file.display().to_string());
        }
        Server::builder()
            .tls_config(config.clone())
            .map_err(|error| TlsError::Refused { files: files.join(", "), reason: refusal_reason(&error) })?;
        Ok(Some(config))
    }
}

/// The lowercase hex SHA-256 of the DER of the client's certificate (the first one it presented),
/// or `None` on a plaintext connection or when the client presented none. This is the value an
/// API key is bound to under mutual TLS: it changes when the till's certificate is reissued.
pub fn client_cert_fingerprint<T>(request: &tonic::Request<T>) -> Option<String> {
    let certificates = request.peer_certs()?;
    let leaf = certificates.first()?;
    Some(certificate_fingerprint(leaf.as_ref()))
}

/// The lowercase hex SHA-256 of a DER certificate, as [`client_cert_fingerprint`] reports it (for
/// tools that register a till's certificate from its file).
pub fn certificate_fingerprint(der: &[u8]) -> String {
    loyalty_core::fingerprint::hex(&sha2::Sha256::digest(der))
}

/// Reads a PEM file that must hold one or more certificates; returns its text for tonic.
fn read_certificates(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read_pem(path)?;
    let mut found = 0_usize;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|error| TlsError::NotPem { path: path.to_owned(), reason: error.to_string() })?;
        found += 1;
    }
    if found == 0 {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(pem)
}

/// Reads a PEM file that must hold a private key; returns its text for tonic.
fn read_private_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read_pem(path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(_) => Ok(pem),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoPrivateKey { path: path.to_owned() }),
        // The error describes the PEM structure (a marker line, a base64 fault), never the key.
        Err(error) => Err(TlsError::NotPem { path: path.to_owned(), reason: error.to_string() }),
    }
}

/// Reads a file and checks that it has at least one PEM block.
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_owned(), error })?;
    if !bytes.windows(b"-----BEGIN ".len()).any(|window| window == b"-----BEGIN ") {
        return Err(TlsError::NotPem { path: path.to_owned(), reason: "no \"-----BEGIN\" line".into() });
    }
    Ok(bytes)
}

/// What rustls said, on one line: tonic's own error says only "transport error", its sources the
/// rest.
fn refusal_reason(error: &tonic::transport::Error) -> String {
    let Some(first) = std::error::Error::source(error) else {
        return error.to_string();
    };
    let mut text = first.to_string();
    let mut source = first.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PEM structure without a real certificate or key inside: enough for the parsing checks,
    /// refused by rustls.
    const FAKE_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
    const FAKE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n";

    fn problems_of(config: &TlsConfig) -> Vec<String> {
        let mut problems = Vec::new();
        config.validate(&mut problems);
        problems
    }

    fn parse(text: &str) -> TlsConfig {
        toml::from_str(text).expect("a [tls] section")
    }

    fn load_error(config: &TlsConfig) -> String {
        match config.server_config() {
            Ok(_) => panic!("{config:?} loaded"),
            Err(error) => error.to_string(),
        }
    }

    /// Writes files into a temporary directory; returns it and the path of each.
    fn files(contents: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = contents
            .iter()
            .map(|(name, text)| {
                let path = dir.path().join(name);
                std::fs::write(&path, text).expect("write a test file");
                path
            })
            .collect();
        (dir, paths)
    }

    #[test]
    fn absent_section_is_valid_and_means_plaintext() {
        let config = TlsConfig::default();
        assert!(problems_of(&config).is_empty());
        assert!(config.server_config().expect("no files to read").is_none());
        assert_eq!(config.describe(), "off (plaintext)");
    }

    #[test]
    fn client_auth_values_parse_and_unknown_keys_are_refused() {
        assert_eq!(parse("client_auth = \"required\"").client_auth, ClientAuth::Required);
        assert_eq!(parse("client_auth = \"optional\"").client_auth, ClientAuth::Optional);
        assert_eq!(parse("").client_auth, ClientAuth::None);
        assert!(toml::from_str::<TlsConfig>("client_auth = \"sometimes\"").is_err());
        assert!(toml::from_str::<TlsConfig>("ca_file = \"ca.pem\"").is_err());
    }

    #[test]
    fn cert_without_key_and_key_without_cert_name_the_missing_key() {
        assert_eq!(problems_of(&parse("cert_file = \"server.pem\"")), ["tls.key_file: required when tls.cert_file is set"]);
        assert_eq!(problems_of(&parse("key_file = \"server.key\"")), ["tls.cert_file: required when tls.key_file is set"]);
    }

    #[test]
    fn client_auth_needs_a_client_ca_and_tls_on() {
        let problems = problems_of(&parse("client_auth = \"required\""));
        assert!(problems.iter().any(|problem| problem.starts_with("tls.client_auth: \"required\" needs TLS on")), "{problems:?}");
        assert!(problems.contains(&"tls.client_ca_file: required when tls.client_auth is \"required\"".to_owned()), "{problems:?}");
        let problems = problems_of(&parse("cert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_auth = \"optional\""));
        assert_eq!(problems, ["tls.client_ca_file: required when tls.client_auth is \"optional\""]);
    }

    #[test]
    fn client_ca_without_client_auth_is_refused_rather_than_ignored() {
        let problems = problems_of(&parse("cert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_ca_file = \"ca.pem\""));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("tls.client_ca_file: unused while tls.client_auth is \"none\""), "{problems:?}");
    }

    #[test]
    fn empty_paths_are_problems() {
        let problems = problems_of(&parse("cert_file = \"\"\nkey_file = \"s.key\""));
        assert_eq!(problems, ["tls.cert_file: an empty path; leave the key out instead"]);
    }

    #[test]
    fn invalid_section_does_not_load() {
        let text = load_error(&parse("cert_file = \"server.pem\""));
        assert!(text.contains("tls.key_file: required"), "{text}");
    }

    #[test]
    fn missing_cert_file_error_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no-such-server.pem");
        let config = TlsConfig { cert_file: Some(missing.clone()), key_file: Some(dir.path().join("server.key")), ..TlsConfig::default() };
        let text = load_error(&config);
        assert!(text.starts_with(&format!("{}: cannot read", missing.display())), "{text}");
    }

    #[test]
    fn file_that_is_not_pem_is_named() {
        let (_dir, paths) = files(&[("server.der", "\u{30}\u{82} binary, not PEM"), ("server.key", FAKE_KEY)]);
        let config = TlsConfig { cert_file: Some(paths[0].clone()), key_file: Some(paths[1].clone()), ..TlsConfig::default() };
        let text = load_error(&config);
        assert!(text.starts_with(&format!("{}: not a PEM file", paths[0].display())), "{text}");
    }

    #[test]
    fn pem_without_a_certificate_is_named() {
        let (_dir, paths) = files(&[("server.pem", FAKE_KEY), ("server.key", FAKE_KEY)]);
        let config = TlsConfig { cert_file: Some(paths[0].clone()), key_file: Some(paths[1].clone()), ..TlsConfig::default() };
        let text = load_error(&config);
        assert!(text.starts_with(&format!("{}: no certificate in it", paths[0].display())), "{text}");
    }

    #[test]
    fn key_file_without_a_key_is_named() {
        let (_dir, paths) = files(&[("server.pem", FAKE_CERTIFICATE), ("server.key", FAKE_CERTIFICATE)]);
        let config = TlsConfig { cert_file: Some(paths[0].clone()), key_file: Some(paths[1].clone()), ..TlsConfig::default() };
        let text = load_error(&config);
        assert!(text.starts_with(&format!("{}: no private key in it", paths[1].display())), "{text}");
    }

    #[test]
    fn truncated_pem_is_not_pem() {
        let (_dir, paths) = files(&[("server.pem", "-----BEGIN CERTIFICATE-----\nAAECAwQF\n"), ("server.key", FAKE_KEY)]);
        let config = TlsConfig { cert_file: Some(paths[0].clone()), key_file: Some(paths[1].clone()), ..TlsConfig::default() };
        let text = load_error(&config);
        assert!(text.starts_with(&format!("{}: not a PEM file", paths[0].display())), "{text}");
    }

    #[test]
    fn unparseable_key_is_refused_naming_the_files() {
        let (_dir, paths) = files(&[("server.pem", FAKE_CERTIFICATE), ("server.key", FAKE_KEY)]);
        let config = TlsConfig { cert_file: Some(paths[0].clone()), key_file: Some(paths[1].clone()), ..TlsConfig::default() };
        let text = load_error(&config);
        assert!(text.starts_with(&format!("{}, {}: refused by rustls: ", paths[0].display(), paths[1].display())), "{text}");
        assert!(text.contains("private key"), "{text}");
    }

    #[test]
    fn missing_client_ca_file_is_named() {
        let (dir, paths) = files(&[("server.pem", FAKE_CERTIFICATE), ("server.key", FAKE_KEY)]);
        let ca = dir.path().join("tills-ca.pem");
        let config = TlsConfig {
            cert_file: Some(paths[0].clone()),
            key_file: Some(paths[1].clone()),
            client_ca_file: Some(ca.clone()),
            client_auth: ClientAuth::Required,
        };
        let text = load_error(&config);
        assert!(text.starts_with(&format!("{}: cannot read", ca.display())), "{text}");
    }

    #[test]
    fn fingerprint_is_lowercase_hex_sha256() {
        // SHA-256 of the empty input, a published test vector.
        assert_eq!(certificate_fingerprint(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn no_fingerprint_without_a_tls_connection() {
        assert_eq!(client_cert_fingerprint(&tonic::Request::new(())), None);
    }
}
