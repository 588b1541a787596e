//! Anything outside the implemented subset fails with a CQL error instead of being ignored.

use crate::common::*;
use scylla::errors::DbError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_statements_are_errors() {
    let (standin, session) = with_schema().await;
    let statements = [
        "SELECT * FROM accounts ALLOW FILTERING",
        "INSERT INTO accounts (program_id, account_id, kind, seq, key, value) VALUES ('p', 'a', 1, 1, '', 0x01) USING TTL 10",
        "INSERT INTO accounts (program_id, account_id, kind, seq, key, value) VALUES ('p', 'a', 1, 1, '', 0x01) USING TIMESTAMP 10",
        "UPDATE accounts USING TTL 5 SET value = 0x01 WHERE program_id = 'p' AND account_id = 'a' AND kind = 1 AND seq = 1 AND key = ''",
        "SELECT * FROM accounts WHERE program_id IN ('p', 'q') AND account_id = 'a'",
        "SELECT * FROM accounts WHERE program_id = 'p' AND account_id = 'a' AND kind IN (1, 2)",
        "UPDATE schema_migrations SET name = name + 'x' WHERE version = 1",
        "UPDATE accounts SET version = version + 1 WHERE program_id = 'p' AND account_id = 'a' AND kind = 1 AND seq = 1 AND key = ''",
        "SELECT writetime(value) FROM accounts",
        "SELECT * FROM accounts WHERE version = 1",
        "SELECT * FROM accounts WHERE program_id = 'p'",
        "SELECT * FROM accounts WHERE token(program_id, account_id) > 0",
        "SELECT DISTINCT program_id, account_id FROM accounts",
        "SELECT JSON * FROM accounts",
        "SELECT * FROM accounts PER PARTITION LIMIT 1",
        "SELECT * FROM accounts WHERE program_id = 'p' AND account_id = 'a' AND seq = 1",
        "SELECT * FROM accounts WHERE program_id = 'p' AND account_id = 'a' ORDER BY seq DESC",
        "DELETE FROM accounts WHERE program_id = 'p' AND account_id = 'a' AND kind = 1",
        "DELETE FROM accounts USING TIMESTAMP 1 WHERE program_id = 'p' AND account_id = 'a'",
        "CREATE INDEX ON accounts (version)",
        "CREATE MATERIALIZED VIEW v AS SELECT * FROM accounts WHERE program_id IS NOT NULL PRIMARY KEY (program_id)",
        "CREATE TABLE c (a text PRIMARY KEY, n counter)",
        "CREATE TYPE t (a int)",
        "ALTER TABLE accounts ADD x int",
        "SELECT nonexistent FROM accounts",
        "SELECT * FROM nonexistent",
        "INSERT INTO accounts (program_id, account_id, kind, seq, value) VALUES ('p', 'a', 1, 1, 0x01)",
        "INSERT INTO accounts (program_id, account_id, kind, seq, key, value) VALUES ('p', 'a', 1000, 1, '', 0x01)",
        "UPDATE accounts SET value = 0x01 WHERE program_id = 'p' AND account_id = 'a' AND kind = 1 AND seq > 1 AND key = ''",
        "UPDATE accounts SET value = 0x01 WHERE program_id = 'p' AND account_id = 'a' AND kind = 1 AND seq = 1 AND key = '' IF program_id = 'x'",
        "INSERT INTO system.local (key) VALUES ('x')",
        "SELECT * FROM system_schema.scylla_tables",
        "BEGIN BATCH INSERT INTO credits (program_id, credit_id) VALUES ('p', 'c') APPLY BATCH",
        "SELECT * FROM accounts WHERE program_id = :p AND account_id = 'a'",
        "SELEKT * FROM accounts",
    ];
    for q in statements {
        let before = standin.stats().errors;
        let e = session.query_unpaged(q, ()).await.expect_err(q);
        let (db, msg) = db_error(&e).unwrap_or_else(|| panic!("{q}: not a database error: {e}"));
        assert!(matches!(db, DbError::SyntaxError | DbError::Invalid | DbError::Unauthorized), "{q}: unexpected error kind {db:?}: {msg}");
        assert!(!msg.is_empty());
        assert_eq!(standin.stats().errors, before + 1, "{q}");
        // PREPARE fails the same way (the backend prepares everything).
        assert!(session.prepare(q).await.is_err(), "prepare {q} should fail");
    }
    // None of the rejected writes wrote anything.
    let rows = session.query_unpaged("SELECT * FROM accounts", ()).await.expect("scan").into_rows_result().expect("rows");
    assert_eq!(rows.rows_num(), 0);
    let rows = session.query_unpaged("SELECT * FROM schema_migrations", ()).await.expect("scan").into_rows_result().expect("rows");
    assert_eq!(rows.rows_num(), 0);

    // Messages name what is unsupported.
    let e = session.query_unpaged("SELECT * FROM accounts ALLOW FILTERING", ()).await.expect_err("allow filtering");
    assert!(e.to_string().contains("ALLOW FILTERING"), "{e}");
    let e = session.query_unpaged("INSERT INTO credits (program_id, credit_id) VALUES ('p', 'c') USING TTL 10", ()).await.expect_err("ttl");
    assert!(e.to_string().contains("TTL"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_errors() {
    let (_standin, session) = with_schema().await;
    let put = prepare(&session, "INSERT INTO claims (program_id, kind, id, account_id) VALUES (?, ?, ?, ?)").await;
    // A null key.
    let e = session.execute_unpaged(&put, (None::<String>, "k", "i", "a")).await.expect_err("null key");
    assert!(e.to_string().contains("null"), "{e}");
    // An empty single-column partition key.
    let sm = prepare(&session, "INSERT INTO credits (program_id, credit_id, credit) VALUES (?, ?, ?)").await;
    let e = session.execute_unpaged(&sm, ("", "c", vec![1u8])).await.expect_err("empty key");
    assert!(e.to_string().contains("empty"), "{e}");
    // LIMIT must be positive.
    let q = prepare(&session, "SELECT credit FROM credits WHERE program_id = ? LIMIT ?").await;
    let e = session.execute_unpaged(&q, ("p", 0i32)).await.expect_err("limit 0");
    assert!(e.to_string().contains("LIMIT"), "{e}");
    // A write at a serial consistency.
    let mut w = sm.clone();
    w.set_consistency(scylla::statement::Consistency::Serial);
    assert!(session.execute_unpaged(&w, ("p", "c", vec![1u8])).await.is_err());
}
