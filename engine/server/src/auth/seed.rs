//! The `[security]` configuration and the credentials file that seeds each program's first access
//! version. The file holds digests, never keys (`loyalty-engine keygen` prints both: the key for
//! the integration, the entry for this file), so it can be kept in configuration management.
//! After the first start the store is the source of truth and the admin API changes it, as with
//! rules files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::credential::{Credential, Scope};
use crate::auth::keys::is_credential_id;

/// `[security]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Credentials (digests) seeding programs that have none stored yet.
    pub credentials_file: Option<PathBuf>,
    /// Rate of a credential that sets none, calls per second per engine, and its burst.
    pub rate_per_second_default: u32,
    pub burst_default: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig { credentials_file: None, rate_per_second_default: 2_000, burst_default: 4_000 }
    }
}

/// One entry of the credentials file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedEntry {
    program: String,
    id: String,
    #[serde(default)]
    label: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    stores: Vec<String>,
    #[serde(default)]
    operations: Vec<String>,
    #[serde(default)]
    rate_per_second: u32,
    #[serde(default)]
    burst: u32,
    key_sha256: String,
    #[serde(default)]
    client_cert_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    #[serde(default)]
    credentials: Vec<SeedEntry>,
}

/// A lowercase hex SHA-256.
pub fn is_sha256_hex(raw: &str) -> bool {
    raw.len() == 64 && raw.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Reads and checks the credentials file: every problem, each with its entry.
pub fn load(path: &Path, programs: &[String], now: chrono::DateTime<chrono::Utc>) -> Result<HashMap<String, Vec<Credential>>, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|error| vec![format!("security.credentials_file {}: {error}", path.display())])?;
    let file: SeedFile = toml::from_str(&text).map_err(|error| vec![format!("security.credentials_file {}: {error}", path.display())])?;
    let mut problems = Vec::new();
    let mut seeds: HashMap<String, Vec<Credential>> = HashMap::new();
    for (index, entry) in file.credentials.into_iter().enumerate() {
        let at = format!("{}: credentials[{index}] ({})", path.display(), entry.id);
        if !programs.contains(&entry.program) {
            problems.push(format!("{at}.program: no program {} is configured", entry.program));
        }
        if !is_credential_id(&entry.id) {
            problems.push(format!("{at}.id: 3 to 40 of a-z, 0-9 and '-'"));
        }
        if entry.scopes.is_empty() {
            problems.push(format!("{at}.scopes: at least one of checkout, read_only, partner_issue_certificates, customer_app, admin"));
        }
        if !is_sha256_hex(&entry.key_sha256) {
            problems.push(format!("{at}.key_sha256: 64 lowercase hex digits, as `loyalty-engine keygen` prints"));
        }
        if entry.client_cert_sha256.as_deref().is_some_and(|cert| !is_sha256_hex(cert)) {
            problems.push(format!("{at}.client_cert_sha256: 64 lowercase hex digits"));
        }
        let program = seeds.entry(entry.program.clone()).or_default();
        if program.iter().any(|credential| credential.id == entry.id) {
            problems.push(format!("{at}.id: used twice in program {}", entry.program));
        }
        program.push(Credential {
            id: entry.id,
            label: entry.label,
            scopes: entry.scopes,
            stores: entry.stores,
            operations: entry.operations,
            rate_per_second: entry.rate_per_second,
            burst: entry.burst,
            key_sha256: entry.key_sha256,
            client_cert_sha256: entry.client_cert_sha256,
            created_at: now,
            created_by: format!("file:{}", path.display()),
            revoked_at: None,
            revoked_by: None,
        });
    }
    if problems.is_empty() { Ok(seeds) } else { Err(problems) }
}

/// Writes a generated first admin key where only the engine's user can read it, and returns the
/// path. The key never goes to the log.
pub fn write_bootstrap_key(dir: &Path, program_id: &str, api_key: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("bootstrap-admin-{program_id}.key"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    writeln!(file, "{api_key}")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_of_a_credentials_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("credentials.toml");
        let good = "a".repeat(64);
        std::fs::write(
            &path,
            format!(
                "[[credentials]]\nprogram = \"shop\"\nid = \"till-gw\"\nscopes = [\"checkout\"]\nkey_sha256 = \"{good}\"\n\
                 [[credentials]]\nprogram = \"other\"\nid = \"X\"\nscopes = []\nkey_sha256 = \"zz\"\n"
            ),
        )
        .expect("write");
        let problems = load(&path, &["shop".to_owned()], chrono::DateTime::UNIX_EPOCH).expect_err("bad entries");
        let all = problems.join("\n");
        for expected in
            ["credentials[1] (X).program", "credentials[1] (X).id", "credentials[1] (X).scopes", "credentials[1] (X).key_sha256"]
        {
            assert!(all.contains(expected), "{expected} missing in:\n{all}");
        }
        assert!(!all.contains("credentials[0]"), "{all}");
    }
}
