//! Shared helpers: a stand-in, a driver session, the production schema.

use cql_standin::StandIn;
use futures_util::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use std::collections::HashMap;
use std::net::SocketAddr;

pub const KEYSPACE_NTS: &str =
    "CREATE KEYSPACE IF NOT EXISTS loyalty WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': '3'}";

pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub async fn standin() -> StandIn {
    StandIn::start(local()).await.expect("start stand-in")
}

pub async fn session_for(addr: SocketAddr) -> Session {
    SessionBuilder::new().known_node_addr(addr).build().await.expect("connect the driver to the stand-in")
}

/// The schema the runtime-statement tests use: the shape of the backend's statements as specified
/// (kept here so that these tests do not break while the production schema evolves; the production
/// file itself is checked by `schema::production_schema_file_applies`).
pub const TEST_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp);
CREATE TABLE IF NOT EXISTS accounts (program_id text, account_id text, kind tinyint, seq bigint, key text,
    version bigint, value blob, PRIMARY KEY ((program_id, account_id), kind, seq, key));
CREATE TABLE IF NOT EXISTS claims (program_id text, kind text, id text, account_id text, PRIMARY KEY ((program_id, kind, id)));
CREATE TABLE IF NOT EXISTS account_index (program_id text, bucket int, account_id text, PRIMARY KEY ((program_id, bucket), account_id));
CREATE TABLE IF NOT EXISTS relay_marks (program_id text, shard int, account_id text, version bigint, marked_at timestamp,
    PRIMARY KEY ((program_id, shard), account_id, version));
CREATE TABLE IF NOT EXISTS outbox (program_id text, hour bigint, seq bigint, event_id text, event blob,
    PRIMARY KEY ((program_id, hour), seq, event_id));
CREATE TABLE IF NOT EXISTS credits (program_id text, credit_id text, credit blob, PRIMARY KEY ((program_id), credit_id));
CREATE TABLE IF NOT EXISTS rules (program_id text, version bigint, head bigint, rules blob, PRIMARY KEY ((program_id), version));
";

/// Splits a CQL file as the migrator does: comments stripped, split on `;`.
pub fn split_statements(text: &str) -> Vec<String> {
    let stripped: String = text.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    stripped.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The statements of the production schema file.
pub fn production_schema() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/cql/0001_initial.cql");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    split_statements(&text)
}

/// A stand-in and a session using keyspace `loyalty` with the test schema.
pub async fn with_schema() -> (StandIn, Session) {
    let s = standin().await;
    let session = session_for(s.addr()).await;
    apply_schema(&session).await;
    (s, session)
}

pub async fn apply_schema(session: &Session) {
    apply(session, &split_statements(TEST_SCHEMA)).await;
}

pub async fn apply(session: &Session, statements: &[String]) {
    session.query_unpaged(KEYSPACE_NTS, ()).await.expect("create keyspace");
    session.use_keyspace("loyalty", false).await.expect("use keyspace");
    for stmt in statements {
        session.query_unpaged(stmt.as_str(), ()).await.unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

pub async fn prepare(session: &Session, q: &str) -> PreparedStatement {
    session.prepare(q).await.unwrap_or_else(|e| panic!("prepare {q}: {e}"))
}

pub async fn exec(session: &Session, p: &PreparedStatement, values: impl SerializeRow) -> QueryResult {
    session.execute_unpaged(p, values).await.unwrap_or_else(|e| panic!("execute {}: {e}", p.get_statement()))
}

/// Rows as (column name -> value) maps, for results whose shape varies (LWT).
pub fn named_rows(r: QueryResult) -> Vec<HashMap<String, Option<CqlValue>>> {
    let rows = r.into_rows_result().expect("rows result");
    let names: Vec<String> = rows.column_specs().iter().map(|c| c.name().to_owned()).collect();
    rows.rows::<Row>()
        .expect("rows")
        .map(|row| {
            let row = row.expect("row");
            names.iter().cloned().zip(row.columns).collect()
        })
        .collect()
}

pub fn column_names(r: &QueryResult) -> Vec<String> {
    let rows = r.clone().into_rows_result().expect("rows result");
    rows.column_specs().iter().map(|c| c.name().to_owned()).collect()
}

pub fn applied(row: &HashMap<String, Option<CqlValue>>) -> bool {
    match row.get("[applied]") {
        Some(Some(CqlValue::Boolean(b))) => *b,
        other => panic!("no [applied] column: {other:?}"),
    }
}

pub fn big(row: &HashMap<String, Option<CqlValue>>, col: &str) -> Option<i64> {
    match row.get(col) {
        Some(Some(CqlValue::BigInt(v))) => Some(*v),
        Some(None) => None,
        other => panic!("column {col}: {other:?}"),
    }
}

pub fn text(row: &HashMap<String, Option<CqlValue>>, col: &str) -> Option<String> {
    match row.get(col) {
        Some(Some(CqlValue::Text(v))) => Some(v.clone()),
        Some(None) => None,
        other => panic!("column {col}: {other:?}"),
    }
}

pub async fn collect<R>(session: &Session, p: &PreparedStatement, values: impl SerializeRow) -> Vec<R>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
{
    session
        .execute_iter(p.clone(), values)
        .await
        .expect("execute_iter")
        .rows_stream::<R>()
        .expect("typed rows")
        .try_collect()
        .await
        .expect("collect rows")
}

/// The server's error code and message, if the request failed with a database error.
pub fn db_error(e: &ExecutionError) -> Option<(DbError, String)> {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, msg)) => Some((db.clone(), msg.clone())),
        _ => None,
    }
}
