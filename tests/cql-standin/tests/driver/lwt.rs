//! Lightweight transactions and conditional batches, in both result styles.

use crate::common::*;
use cql_standin::{LwtStyle, StandIn};
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use std::sync::Arc;

const INSERT: &str =
    "INSERT INTO accounts (program_id, account_id, kind, seq, key, version, value) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
const CAS: &str = "UPDATE accounts SET version = ?, value = ? WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF version = ?";
const PUT: &str = "INSERT INTO accounts (program_id, account_id, kind, seq, key, value) VALUES (?, ?, ?, ?, ?, ?)";
const GET: &str = "SELECT version, value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ?";

async fn cassandra_style() -> (StandIn, Session) {
    let s = StandIn::builder().lwt_style(LwtStyle::Cassandra).start(local()).await.expect("start");
    let session = session_for(s.addr()).await;
    apply_schema(&session).await;
    (s, session)
}

async fn version_of(session: &Session, account: &str, kind: i8, key: &str) -> Option<i64> {
    let get = prepare(session, GET).await;
    let r = exec(session, &get, ("p", account, kind, 0i64, key)).await.into_rows_result().expect("rows");
    r.maybe_first_row::<(Option<i64>, Option<Vec<u8>>)>().expect("row").and_then(|r| r.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_if_not_exists_scylla_shape() {
    let (standin, session) = with_schema().await;
    let ins = prepare(&session, INSERT).await;
    let winner = exec(&session, &ins, ("p", "a", 0i8, 0i64, "", 1i64, vec![1u8])).await;
    let all_columns = ["[applied]", "program_id", "account_id", "kind", "seq", "key", "value", "version"];
    assert_eq!(column_names(&winner), all_columns);
    let w = named_rows(winner);
    assert_eq!(w.len(), 1);
    assert!(applied(&w[0]));
    assert!(w[0].iter().filter(|(k, _)| *k != "[applied]").all(|(_, v)| v.is_none()), "no old row: nulls {w:?}");

    let loser = exec(&session, &ins, ("p", "a", 0i8, 0i64, "", 7i64, vec![7u8])).await;
    assert_eq!(column_names(&loser), all_columns);
    let l = named_rows(loser);
    assert!(!applied(&l[0]));
    assert_eq!(big(&l[0], "version"), Some(1));
    assert_eq!(text(&l[0], "account_id").as_deref(), Some("a"));
    assert_eq!(version_of(&session, "a", 0, "").await, Some(1), "the loser wrote nothing");
    let stats = standin.stats();
    assert_eq!((stats.lwt, stats.lwt_applied, stats.lwt_not_applied), (2, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_if_not_exists_cassandra_shape() {
    let (_standin, session) = cassandra_style().await;
    let ins = prepare(&session, INSERT).await;
    let winner = exec(&session, &ins, ("p", "a", 0i8, 0i64, "", 1i64, vec![1u8])).await;
    assert_eq!(column_names(&winner), ["[applied]"]);
    let loser = exec(&session, &ins, ("p", "a", 0i8, 0i64, "", 7i64, vec![7u8])).await;
    assert_eq!(column_names(&loser), ["[applied]", "program_id", "account_id", "kind", "seq", "key", "value", "version"]);
    let l = named_rows(loser);
    assert!(!applied(&l[0]));
    assert_eq!(big(&l[0], "version"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_update_and_delete() {
    let (_standin, session) = with_schema().await;
    let cas = prepare(&session, CAS).await;
    // On a missing row: not applied, the condition column is null.
    let r = exec(&session, &cas, (2i64, vec![2u8], "p", "a", 0i8, 0i64, "", 1i64)).await;
    assert_eq!(column_names(&r), ["[applied]", "version"]);
    let r = named_rows(r);
    assert!(!applied(&r[0]));
    assert_eq!(big(&r[0], "version"), None);
    assert_eq!(version_of(&session, "a", 0, "").await, None, "no row was created");

    let ins = prepare(&session, INSERT).await;
    exec(&session, &ins, ("p", "a", 0i8, 0i64, "", 1i64, vec![1u8])).await;
    let r = named_rows(exec(&session, &cas, (2i64, vec![2u8], "p", "a", 0i8, 0i64, "", 1i64)).await);
    assert!(applied(&r[0]));
    assert_eq!(big(&r[0], "version"), Some(1), "ScyllaDB returns the old value even when applied");
    let r = named_rows(exec(&session, &cas, (3i64, vec![3u8], "p", "a", 0i8, 0i64, "", 1i64)).await);
    assert!(!applied(&r[0]));
    assert_eq!(big(&r[0], "version"), Some(2));

    // Other operators and several conditions.
    let cond = |op: &str| {
        format!(
            "UPDATE accounts SET value = ? WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF version {op} ? AND value != ?"
        )
    };
    for (op, bound, expect) in [
        ("<", 3i64, true),
        ("<", 2, false),
        ("<=", 2, true),
        (">", 1, true),
        (">", 2, false),
        (">=", 2, true),
        ("!=", 2, false),
        ("!=", 5, true),
    ] {
        let p = prepare(&session, &cond(op)).await;
        let r = named_rows(exec(&session, &p, (vec![2u8], "p", "a", 0i8, 0i64, "", bound, vec![0xFFu8])).await);
        assert_eq!(applied(&r[0]), expect, "version {op} {bound}");
    }

    // IF EXISTS on UPDATE and DELETE.
    let upd_exists = prepare(
        &session,
        "UPDATE accounts SET value = ? WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF EXISTS",
    )
    .await;
    let r = named_rows(exec(&session, &upd_exists, (vec![9u8], "p", "zz", 0i8, 0i64, "")).await);
    assert!(!applied(&r[0]));
    assert_eq!(version_of(&session, "zz", 0, "").await, None, "IF EXISTS on a missing row creates nothing");
    let r = named_rows(exec(&session, &upd_exists, (vec![9u8], "p", "a", 0i8, 0i64, "")).await);
    assert!(applied(&r[0]));
    let del_exists =
        prepare(&session, "DELETE FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF EXISTS")
            .await;
    assert!(applied(&named_rows(exec(&session, &del_exists, ("p", "a", 0i8, 0i64, "")).await)[0]));
    assert!(!applied(&named_rows(exec(&session, &del_exists, ("p", "a", 0i8, 0i64, "")).await)[0]));
    let del_if = prepare(
        &session,
        "DELETE FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF version = ?",
    )
    .await;
    exec(&session, &ins, ("p", "b", 0i8, 0i64, "", 4i64, vec![1u8])).await;
    assert!(!applied(&named_rows(exec(&session, &del_if, ("p", "b", 0i8, 0i64, "", 3i64)).await)[0]));
    assert!(applied(&named_rows(exec(&session, &del_if, ("p", "b", 0i8, 0i64, "", 4i64)).await)[0]));
    assert_eq!(version_of(&session, "b", 0, "").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_update_cassandra_shape() {
    let (_standin, session) = cassandra_style().await;
    let cas = prepare(&session, CAS).await;
    let r = exec(&session, &cas, (2i64, vec![2u8], "p", "a", 0i8, 0i64, "", 1i64)).await;
    assert_eq!(column_names(&r), ["[applied]"], "missing row: [applied] only");
    let ins = prepare(&session, INSERT).await;
    exec(&session, &ins, ("p", "a", 0i8, 0i64, "", 1i64, vec![1u8])).await;
    let r = exec(&session, &cas, (2i64, vec![2u8], "p", "a", 0i8, 0i64, "", 1i64)).await;
    assert_eq!(column_names(&r), ["[applied]"]);
    let r = exec(&session, &cas, (3i64, vec![3u8], "p", "a", 0i8, 0i64, "", 1i64)).await;
    assert_eq!(column_names(&r), ["[applied]", "version"]);
    assert_eq!(big(&named_rows(r)[0], "version"), Some(2));
}

async fn batch_fixture(session: &Session) -> Batch {
    let ins = prepare(session, INSERT).await;
    exec(session, &ins, ("p", "a", 0i8, 0i64, "", 5i64, vec![5u8])).await;
    exec(session, &ins, ("p", "a", 2i8, 0i64, "r-old", 1i64, vec![1u8])).await;
    let mut b = Batch::new(BatchType::Logged);
    b.append_statement(prepare(session, CAS).await);
    b.append_statement(ins);
    b.append_statement(prepare(session, PUT).await);
    b
}

type BatchValues<'a> = (
    (i64, Vec<u8>, &'a str, &'a str, i8, i64, &'a str, i64),
    (&'a str, &'a str, i8, i64, &'a str, i64, Vec<u8>),
    (&'a str, &'a str, i8, i64, &'a str, Vec<u8>),
);

fn batch_values(expected_version: i64, receipt: &str) -> BatchValues<'_> {
    (
        (expected_version + 1, vec![6u8], "p", "a", 0i8, 0i64, "", expected_version),
        ("p", "a", 2i8, 0i64, receipt, 1i64, vec![2u8]),
        ("p", "a", 1i8, 6i64, "", vec![6u8]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_batch_all_or_nothing_scylla_shape() {
    let (standin, session) = with_schema().await;
    let b = batch_fixture(&session).await;
    let ledger = prepare(&session, GET).await;
    let ledger_rows = || async { exec(&session, &ledger, ("p", "a", 1i8, 6i64, "")).await.into_rows_result().expect("rows").rows_num() };

    // The account CAS holds but the receipt exists: nothing is written.
    let r = session.batch(&b, batch_values(5, "r-old")).await.expect("batch");
    assert_eq!(column_names(&r), ["[applied]", "program_id", "account_id", "kind", "seq", "key", "value", "version"]);
    let rows = named_rows(r);
    assert_eq!(rows.len(), 3, "one row per statement");
    assert!(rows.iter().all(|r| !applied(r)));
    assert_eq!(big(&rows[0], "version"), Some(5));
    assert_eq!(text(&rows[1], "key").as_deref(), Some("r-old"));
    assert_eq!(big(&rows[1], "version"), Some(1));
    assert_eq!(text(&rows[2], "program_id"), None, "the unconditional statement's row was not read");
    assert_eq!(version_of(&session, "a", 0, "").await, Some(5));
    assert_eq!(ledger_rows().await, 0);

    // The receipt is new but the version is stale: nothing is written.
    let rows = named_rows(session.batch(&b, batch_values(4, "r-new")).await.expect("batch"));
    assert!(rows.iter().all(|r| !applied(r)));
    assert_eq!(big(&rows[0], "version"), Some(5));
    assert_eq!(text(&rows[1], "key"), None, "no old receipt row");
    assert_eq!(version_of(&session, "a", 2, "r-new").await, None);
    assert_eq!(ledger_rows().await, 0);

    // Both hold: everything is written.
    let rows = named_rows(session.batch(&b, batch_values(5, "r-new")).await.expect("batch"));
    assert!(rows.iter().all(applied));
    assert_eq!(version_of(&session, "a", 0, "").await, Some(6));
    assert_eq!(version_of(&session, "a", 2, "r-new").await, Some(1));
    assert_eq!(ledger_rows().await, 1);
    assert_eq!(standin.stats().lwt, 3 + 2, "three batches and the two fixture inserts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_batch_cassandra_shape() {
    let (_standin, session) = cassandra_style().await;
    let b = batch_fixture(&session).await;
    let r = session.batch(&b, batch_values(5, "r-old")).await.expect("batch");
    // IF NOT EXISTS in the batch: all columns; one row per existing conditioned row.
    assert_eq!(column_names(&r), ["[applied]", "program_id", "account_id", "kind", "seq", "key", "value", "version"]);
    let rows = named_rows(r);
    assert_eq!(rows.len(), 2);
    assert_eq!(big(&rows[0], "version"), Some(5), "clustering order: kind 0 first");
    assert_eq!(text(&rows[1], "key").as_deref(), Some("r-old"));
    let r = session.batch(&b, batch_values(5, "r-new")).await.expect("batch");
    assert_eq!(column_names(&r), ["[applied]"]);
    assert!(applied(&named_rows(r)[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_batches_must_stay_in_one_partition_of_one_table() {
    let (_standin, session) = with_schema().await;
    let ins = prepare(&session, INSERT).await;
    let put = prepare(&session, PUT).await;
    let mut b = Batch::new(BatchType::Logged);
    b.append_statement(ins.clone());
    b.append_statement(put.clone());
    let e = session
        .batch(&b, (("p", "a", 0i8, 0i64, "", 1i64, vec![1u8]), ("p", "OTHER", 1i8, 1i64, "", vec![1u8])))
        .await
        .expect_err("cross-partition conditional batch");
    let (db, msg) = db_error(&e).expect("db error");
    assert_eq!(db, scylla::errors::DbError::Invalid);
    assert!(msg.contains("cannot span multiple partitions"), "{msg}");
    assert_eq!(version_of(&session, "a", 0, "").await, None, "nothing written");

    let claim = prepare(&session, "INSERT INTO claims (program_id, kind, id, account_id) VALUES (?, ?, ?, ?) IF NOT EXISTS").await;
    let mut b = Batch::new(BatchType::Logged);
    b.append_statement(ins.clone());
    b.append_statement(claim);
    let e = session
        .batch(&b, (("p", "a", 0i8, 0i64, "", 1i64, vec![1u8]), ("p", "k", "i", "a")))
        .await
        .expect_err("cross-table conditional batch");
    assert!(e.to_string().contains("cannot span multiple tables"), "{e}");

    // Unconditional batches may span partitions and tables, and apply atomically.
    let idx = prepare(&session, "INSERT INTO account_index (program_id, bucket, account_id) VALUES (?, ?, ?)").await;
    let mut b = Batch::new(BatchType::Unlogged);
    b.append_statement(put.clone());
    b.append_statement(idx);
    session.batch(&b, (("p", "x", 0i8, 0i64, "", vec![1u8]), ("p", 1i32, "x"))).await.expect("unconditional batch");
    assert_eq!(
        exec(&session, &prepare(&session, GET).await, ("p", "x", 0i8, 0i64, "")).await.into_rows_result().expect("rows").rows_num(),
        1
    );
    // A batch with an invalid statement (a null clustering key) applies nothing.
    let mut b = Batch::new(BatchType::Logged);
    b.append_statement(put.clone());
    b.append_statement(put);
    let e = session.batch(&b, (("p", "y", 0i8, 0i64, "", vec![1u8]), ("p", "y", 0i8, None::<i64>, "", vec![0u8; 0]))).await;
    let e = e.expect_err("null key");
    assert!(e.to_string().contains("null"), "{e}");
    assert_eq!(
        exec(&session, &prepare(&session, GET).await, ("p", "y", 0i8, 0i64, "")).await.into_rows_result().expect("rows").rows_num(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_is_linearisable() {
    const TASKS: usize = 16;
    const ATTEMPTS: usize = 25;
    let (standin, session) = with_schema().await;
    let session = Arc::new(session);
    let ins = prepare(&session, INSERT).await;
    exec(&session, &ins, ("p", "hot", 0i8, 0i64, "", 0i64, Vec::<u8>::new())).await;
    let cas = Arc::new(prepare(&session, CAS).await);
    let get = Arc::new(prepare(&session, GET).await);
    let before = standin.stats().lwt;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (session, cas, get) = (Arc::clone(&session), Arc::clone(&cas), Arc::clone(&get));
        handles.push(tokio::spawn(async move {
            let mut wins = 0u64;
            for _ in 0..ATTEMPTS {
                let r = session.execute_unpaged(&get, ("p", "hot", 0i8, 0i64, "")).await.expect("read");
                let (v, _) = r.into_rows_result().expect("rows").single_row::<(Option<i64>, Option<Vec<u8>>)>().expect("row");
                let v = v.expect("version");
                let r = session.execute_unpaged(&cas, (v + 1, vec![t as u8], "p", "hot", 0i8, 0i64, "", v)).await.expect("cas");
                if applied(&named_rows(r)[0]) {
                    wins += 1;
                }
            }
            wins
        }));
    }
    let mut wins = 0;
    for h in handles {
        wins += h.await.expect("task");
    }
    let stats = standin.stats();
    assert_eq!(stats.lwt - before, (TASKS * ATTEMPTS) as u64);
    assert!(wins >= 1);
    assert_eq!(version_of(&session, "hot", 0, "").await, Some(wins as i64), "every success incremented the version exactly once");
}
