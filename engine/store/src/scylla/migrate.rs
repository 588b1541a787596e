//! Schema migrations: the versioned CQL files in `deploy/cql/` (`0001_initial.cql`, ...), applied
//! in order, each once, recorded in `schema_migrations`.
//!
//! The keyspace is created first with the replication the configuration gives per data center
//! (NetworkTopologyStrategy), so the same files serve a one-node test and a multi-DC cluster. Every
//! statement in the files is `IF NOT EXISTS`, so a migration interrupted half-way is simply run
//! again.

use std::path::{Path, PathBuf};

use scylla::client::session::Session;

use super::io;
use super::session::{self, ScyllaConfig};
use crate::StoreError;
use crate::clock::Clock;

/// The schema version this build reads and writes: the number of the newest file it knows.
pub const SCHEMA_VERSION: i32 = 3;

/// The newest migration recorded in the session's keyspace (0: none, or no schema at all).
pub async fn schema_version(session: &Session) -> Result<i32, StoreError> {
    let result = match session.query_unpaged("SELECT version FROM schema_migrations", ()).await {
        Ok(result) => result,
        // No table yet: an empty keyspace.
        Err(error) if error.to_string().contains("schema_migrations") => return Ok(0),
        Err(error) => return Err(StoreError::Io(format!("read schema_migrations: {error}"))),
    };
    let rows = result.into_rows_result().map_err(io("read schema_migrations"))?;
    let versions = rows.rows::<(i32,)>().map_err(io("read schema_migrations"))?;
    let mut newest = 0;
    for row in versions {
        newest = newest.max(row.map_err(io("read schema_migrations"))?.0);
    }
    Ok(newest)
}

/// A migration file: `NNNN_name.cql`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Migration {
    version: i32,
    name: String,
    path: PathBuf,
}

fn migrations(dir: &Path) -> Result<Vec<Migration>, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|error| StoreError::Io(format!("read schema dir {}: {error}", dir.display())))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|error| StoreError::Io(format!("read schema dir {}: {error}", dir.display())))?.path();
        let Some(file) = path.file_name().and_then(|name| name.to_str()).map(str::to_owned) else { continue };
        let Some(stem) = file.strip_suffix(".cql") else { continue };
        let Some((number, name)) = stem.split_once('_') else {
            return Err(StoreError::Io(format!("{}: migration files are named NNNN_name.cql", path.display())));
        };
        let version = number.parse::<i32>().map_err(|_| StoreError::Io(format!("{}: {number} is not a version number", path.display())))?;
        found.push(Migration { version, name: name.to_owned(), path });
    }
    found.sort_by_key(|migration| migration.version);
    for (index, migration) in found.iter().enumerate() {
        if migration.version != i32::try_from(index + 1).unwrap_or(i32::MAX) {
            return Err(StoreError::Io(format!("{}: versions must run 1, 2, 3... without gaps", migration.path.display())));
        }
    }
    Ok(found)
}

/// The statements of a CQL file: comments removed, split on `;`.
pub fn statements(cql: &str) -> Vec<String> {
    let without_comments: String = cql
        .lines()
        .map(|line| match line.find("--") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|statement| statement.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The keyspace's CREATE statement for the configured replication.
pub fn create_keyspace(config: &ScyllaConfig) -> String {
    let replicas: Vec<String> = config.replication.iter().map(|(dc, count)| format!("'{dc}': '{count}'")).collect();
    let mut cql = format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'NetworkTopologyStrategy', {}}}",
        config.keyspace,
        replicas.join(", ")
    );
    if let Some(enabled) = config.tablets {
        cql.push_str(&format!(" AND tablets = {{'enabled': {enabled}}}"));
    }
    cql
}

/// Creates the keyspace if needed and applies every migration in `dir` not applied yet, each
/// recorded as applied at `clock`'s time. Returns the names of the migrations applied now.
pub async fn migrate(config: &ScyllaConfig, dir: &Path, clock: &dyn Clock) -> Result<Vec<String>, StoreError> {
    let all = migrations(dir)?;
    let newest = all.last().map_or(0, |migration| migration.version);
    if newest < SCHEMA_VERSION {
        return Err(StoreError::Io(format!("{} has migrations up to {newest}; this build needs {SCHEMA_VERSION}", dir.display())));
    }
    let profiles = session::profiles(config);
    let session = session::connect(config, &profiles, None).await?;
    match session.query_unpaged(create_keyspace(config), ()).await {
        Ok(_) => {}
        // A server without tablets (Apache Cassandra, ScyllaDB before 6.0) knows no such option and
        // always uses vnodes, which is what `tablets = false` asks for: create the keyspace without it.
        Err(error) if config.tablets == Some(false) && error.to_string().contains("Unknown property 'tablets'") => {
            tracing::info!(keyspace = %config.keyspace, "the server has no tablets: keyspace created without the option");
            let without = ScyllaConfig { tablets: None, ..config.clone() };
            session.query_unpaged(create_keyspace(&without), ()).await.map_err(io("create keyspace"))?;
        }
        Err(error) => return Err(io("create keyspace")(error)),
    }
    session.use_keyspace(&config.keyspace, false).await.map_err(io("use keyspace"))?;
    let current = schema_version(&session).await?;
    let mut applied = Vec::new();
    for migration in all.into_iter().filter(|migration| migration.version > current) {
        let cql = std::fs::read_to_string(&migration.path)
            .map_err(|error| StoreError::Io(format!("read {}: {error}", migration.path.display())))?;
        for statement in statements(&cql) {
            session
                .query_unpaged(statement.as_str(), ())
                .await
                .map_err(|error| StoreError::Io(format!("{}: `{statement}`: {error}", migration.path.display())))?;
        }
        if migration.version == CLAIMANTS_VERSION {
            copy_claims_to_claimants(&session).await?;
        }
        session
            .query_unpaged(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name.as_str(), scylla::value::CqlTimestamp(clock.now().timestamp_millis())),
            )
            .await
            .map_err(io("record migration"))?;
        applied.push(format!("{:04}_{}", migration.version, migration.name));
    }
    Ok(applied)
}

/// The migration that created `claimants`.
const CLAIMANTS_VERSION: i32 = 2;

/// Schema 2 finds a claim's owner among its claimants: every owner schema 1 recorded in `claims`
/// is written there too, then `claims` is dropped.
///
/// - Read and written at consistency ALL: a claim whose Paxos round reached a quorum in another
///   data center only, or a copy that reached this one only, would let a claimant elsewhere think
///   itself alone. With a replica down the migration fails (say so, and run it again when all are
///   up), never half-copies.
/// - Dropping `claims` makes an engine of schema 1 still running fail closed: its claims fail
///   (UNAVAILABLE) instead of claiming what schema 2 never reads.
/// - Each write is plain and repeatable, and a run that finds `claims` gone has nothing left to
///   copy, so an interrupted migration is simply run again.
async fn copy_claims_to_claimants(session: &Session) -> Result<u64, StoreError> {
    use futures_util::TryStreamExt;
    use scylla::statement::Consistency;
    use scylla::statement::unprepared::Statement;
    let mut scan = Statement::new("SELECT program_id, kind, id, account_id FROM claims");
    scan.set_consistency(Consistency::All);
    let rows = match session.query_iter(scan, ()).await {
        Ok(rows) => rows,
        // Dropped by an earlier run that copied everything.
        Err(error) if error.to_string().contains("claims") && error.to_string().contains("unconfigured") => return Ok(0),
        Err(error) => return Err(io("read claims at ALL (every replica must be up)")(error)),
    };
    let mut rows = rows.rows_stream::<(String, String, String, String)>().map_err(io("read claims"))?;
    let mut insert = session
        .prepare("INSERT INTO claimants (program_id, kind, id, account_id) VALUES (?, ?, ?, ?)")
        .await
        .map_err(io("prepare the claimants copy"))?;
    insert.set_consistency(Consistency::All);
    let mut copied = 0;
    while let Some(row) = rows.try_next().await.map_err(io("read claims at ALL (every replica must be up)"))? {
        session.execute_unpaged(&insert, row).await.map_err(io("copy a claim to claimants at ALL (every replica must be up)"))?;
        copied += 1;
    }
    session.query_unpaged("DROP TABLE IF EXISTS claims", ()).await.map_err(io("drop claims"))?;
    tracing::info!(copied, "claims copied to claimants; claims dropped");
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_drop_comments_and_split() {
        let cql = "-- a comment; with a semicolon\nCREATE TABLE a (x int PRIMARY KEY); -- trailing\n\nCREATE TABLE b (\n  y int PRIMARY KEY\n);\n";
        assert_eq!(statements(cql), vec!["CREATE TABLE a (x int PRIMARY KEY)", "CREATE TABLE b ( y int PRIMARY KEY )"]);
    }

    #[test]
    fn the_shipped_schema_is_numbered_and_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cql");
        let all = migrations(&dir).expect("schema files");
        assert_eq!(all.last().map(|migration| migration.version), Some(SCHEMA_VERSION));
        let cql = std::fs::read_to_string(&all[0].path).expect("read");
        let statements = statements(&cql);
        assert!(statements.iter().all(|statement| statement.starts_with("CREATE TABLE IF NOT EXISTS")), "{statements:?}");
        assert!(statements.iter().any(|statement| statement.contains("schema_migrations")));
    }

    #[test]
    fn keyspace_replication_comes_from_config() {
        let mut config = ScyllaConfig::new(vec!["n1:9042".into()], "loyalty");
        config.replication = [("dc1".to_owned(), 3), ("dc2".to_owned(), 2)].into_iter().collect();
        config.tablets = Some(false);
        assert_eq!(
            create_keyspace(&config),
            "CREATE KEYSPACE IF NOT EXISTS loyalty WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': '3', 'dc2': '2'} AND tablets = {'enabled': false}"
        );
    }
}
