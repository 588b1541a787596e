//! Every statement shape the backend uses, through prepare + execute.

use crate::common::*;
use scylla::statement::Consistency;
use scylla::statement::SerialConsistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::CqlTimestamp;

const P: &str = "prog";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_statements() {
    let (_standin, session) = with_schema().await;
    let get = prepare(
        &session,
        "SELECT version, value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ?",
    )
    .await;
    let before = prepare(
        &session,
        "SELECT value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq < ? ORDER BY kind DESC, seq DESC LIMIT ?",
    )
    .await;
    let kind_rows = prepare(&session, "SELECT seq, key, value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ?").await;
    let create = prepare(
        &session,
        "INSERT INTO accounts (program_id, account_id, kind, seq, key, version, value) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    )
    .await;
    let cas = prepare(&session, "UPDATE accounts SET version = ?, value = ? WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF version = ?").await;
    let put = prepare(&session, "INSERT INTO accounts (program_id, account_id, kind, seq, key, value) VALUES (?, ?, ?, ?, ?, ?)").await;
    let del = prepare(&session, "DELETE FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ?").await;

    // The driver can compute tokens: the partition key indexes came with PREPARED.
    assert!(get.calculate_token(&(P, "a1", 0i8, 0i64, "")).expect("token").is_some());
    assert!(put.calculate_token(&(P, "a1", 1i8, 1i64, "", vec![1u8])).expect("token").is_some());

    let r = named_rows(exec(&session, &create, (P, "a1", 0i8, 0i64, "", 1i64, vec![0xAAu8])).await);
    assert!(applied(&r[0]));
    let (version, value) = exec(&session, &get, (P, "a1", 0i8, 0i64, ""))
        .await
        .into_rows_result()
        .expect("rows")
        .single_row::<(Option<i64>, Option<Vec<u8>>)>()
        .expect("one row");
    assert_eq!((version, value), (Some(1), Some(vec![0xAA])));

    // Ledger entries (kind 1) at seq 1..=10.
    for seq in 1..=10i64 {
        exec(&session, &put, (P, "a1", 1i8, seq, "", vec![seq as u8])).await;
    }
    let rows = exec(&session, &before, (P, "a1", 1i8, 8i64, 3i32))
        .await
        .into_rows_result()
        .expect("rows")
        .rows::<(Vec<u8>,)>()
        .expect("typed")
        .map(|r| r.expect("row").0[0])
        .collect::<Vec<u8>>();
    assert_eq!(rows, vec![7, 6, 5], "seq < 8, newest first, limit 3");

    let all: Vec<(i64, String, Option<Vec<u8>>)> = collect(&session, &kind_rows, (P, "a1", 1i8)).await;
    assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());

    let r = named_rows(exec(&session, &cas, (2i64, vec![0xBBu8], P, "a1", 0i8, 0i64, "", 1i64)).await);
    assert!(applied(&r[0]));
    let r = named_rows(exec(&session, &cas, (3i64, vec![0xCCu8], P, "a1", 0i8, 0i64, "", 1i64)).await);
    assert!(!applied(&r[0]));
    assert_eq!(big(&r[0], "version"), Some(2), "the loser sees the current version");

    exec(&session, &del, (P, "a1", 1i8, 5i64, "")).await;
    let all: Vec<(i64, String, Option<Vec<u8>>)> = collect(&session, &kind_rows, (P, "a1", 1i8)).await;
    assert_eq!(all.len(), 9);
    assert!(!all.iter().any(|r| r.0 == 5));

    // Statement 1 read at SERIAL / LOCAL_SERIAL (statement 27).
    for c in [Consistency::Serial, Consistency::LocalSerial] {
        let mut g = get.clone();
        g.set_consistency(c);
        let (version, _) = exec(&session, &g, (P, "a1", 0i8, 0i64, ""))
            .await
            .into_rows_result()
            .expect("rows")
            .single_row::<(Option<i64>, Option<Vec<u8>>)>()
            .expect("one row");
        assert_eq!(version, Some(2));
    }

    // Other partitions are unaffected; a missing row reads as no rows.
    let r = exec(&session, &get, (P, "a2", 0i8, 0i64, "")).await.into_rows_result().expect("rows");
    assert_eq!(r.rows_num(), 0);

    // Statement 8: a conditional batch on one partition: the account row CAS, a receipt row
    // creation and unconditional ledger/outbox rows.
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement(cas.clone());
    batch.append_statement(create.clone());
    batch.append_statement(put.clone());
    batch.append_statement(put.clone());
    batch.set_serial_consistency(Some(SerialConsistency::LocalSerial));
    batch.set_consistency(Consistency::LocalQuorum);
    let r = named_rows(
        session
            .batch(
                &batch,
                (
                    (3i64, vec![3u8], P, "a1", 0i8, 0i64, "", 2i64),
                    (P, "a1", 2i8, 0i64, "r1", 1i64, vec![9u8]),
                    (P, "a1", 1i8, 11i64, "", vec![11u8]),
                    (P, "a1", 4i8, 3i64, "0", vec![4u8]),
                ),
            )
            .await
            .expect("conditional batch"),
    );
    assert!(r.iter().all(applied));
    let (version, value) = exec(&session, &get, (P, "a1", 0i8, 0i64, ""))
        .await
        .into_rows_result()
        .expect("rows")
        .single_row::<(Option<i64>, Option<Vec<u8>>)>()
        .expect("one row");
    assert_eq!((version, value), (Some(3), Some(vec![3])));
    let receipt = exec(&session, &get, (P, "a1", 2i8, 0i64, "r1")).await.into_rows_result().expect("rows");
    assert_eq!(receipt.rows_num(), 1);
    let outbox_row = exec(&session, &get, (P, "a1", 4i8, 3i64, "0")).await.into_rows_result().expect("rows");
    assert_eq!(outbox_row.rows_num(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_index_relay_outbox_credits_rules_migrations() {
    let (_standin, session) = with_schema().await;

    // Claims (9, 10, 11).
    let claim_get = prepare(&session, "SELECT account_id FROM claims WHERE program_id = ? AND kind = ? AND id = ?").await;
    let claim = prepare(&session, "INSERT INTO claims (program_id, kind, id, account_id) VALUES (?, ?, ?, ?) IF NOT EXISTS").await;
    let reclaim =
        prepare(&session, "UPDATE claims SET account_id = ? WHERE program_id = ? AND kind = ? AND id = ? IF account_id = ?").await;
    assert!(applied(&named_rows(exec(&session, &claim, (P, "identity", "+15550100", "a1")).await)[0]));
    let r = named_rows(exec(&session, &claim, (P, "identity", "+15550100", "a2")).await);
    assert!(!applied(&r[0]));
    assert_eq!(text(&r[0], "account_id").as_deref(), Some("a1"));
    assert!(!applied(&named_rows(exec(&session, &reclaim, ("a3", P, "identity", "+15550100", "a2")).await)[0]));
    assert!(applied(&named_rows(exec(&session, &reclaim, ("a3", P, "identity", "+15550100", "a1")).await)[0]));
    let mut serial_get = claim_get.clone();
    serial_get.set_consistency(Consistency::Serial);
    let (acc,) = exec(&session, &serial_get, (P, "identity", "+15550100"))
        .await
        .into_rows_result()
        .expect("rows")
        .single_row::<(String,)>()
        .expect("row");
    assert_eq!(acc, "a3");

    // Account index (12, 13).
    let idx_put = prepare(&session, "INSERT INTO account_index (program_id, bucket, account_id) VALUES (?, ?, ?)").await;
    let idx_scan =
        prepare(&session, "SELECT account_id FROM account_index WHERE program_id = ? AND bucket = ? AND account_id > ? LIMIT ?").await;
    for a in ["b", "a", "d", "c", "e"] {
        exec(&session, &idx_put, (P, 7i32, a)).await;
    }
    exec(&session, &idx_put, (P, 8i32, "zz")).await;
    let got: Vec<String> = exec(&session, &idx_scan, (P, 7i32, "a", 3i32))
        .await
        .into_rows_result()
        .expect("rows")
        .rows::<(String,)>()
        .expect("typed")
        .map(|r| r.expect("row").0)
        .collect();
    assert_eq!(got, ["b", "c", "d"]);
    let got: Vec<(String,)> = collect(&session, &idx_scan, (P, 7i32, "c", 100i32)).await;
    assert_eq!(got.len(), 2);

    // Relay marks (14, 15, 16).
    let mark =
        prepare(&session, "INSERT INTO relay_marks (program_id, shard, account_id, version, marked_at) VALUES (?, ?, ?, ?, ?)").await;
    let marks = prepare(&session, "SELECT account_id, version, marked_at FROM relay_marks WHERE program_id = ? AND shard = ?").await;
    let unmark = prepare(&session, "DELETE FROM relay_marks WHERE program_id = ? AND shard = ? AND account_id = ? AND version = ?").await;
    for (a, v) in [("a2", 1i64), ("a1", 2), ("a1", 1), ("a3", 5)] {
        exec(&session, &mark, (P, 3i32, a, v, CqlTimestamp(1_700_000_000_000 + v))).await;
    }
    exec(&session, &unmark, (P, 3i32, "a3", 5i64)).await;
    let mut marks_paged = marks.clone();
    marks_paged.set_page_size(1);
    let got: Vec<(String, i64, CqlTimestamp)> = collect(&session, &marks_paged, (P, 3i32)).await;
    let keys: Vec<(&str, i64)> = got.iter().map(|(a, v, _)| (a.as_str(), *v)).collect();
    assert_eq!(keys, [("a1", 1), ("a1", 2), ("a2", 1)]);
    assert_eq!(got[0].2, CqlTimestamp(1_700_000_000_001));

    // Outbox (17, 18, 19).
    let ob_put = prepare(&session, "INSERT INTO outbox (program_id, hour, seq, event_id, event) VALUES (?, ?, ?, ?, ?)").await;
    let ob_range =
        prepare(&session, "SELECT seq, event_id, event FROM outbox WHERE program_id = ? AND hour = ? AND seq > ? AND seq <= ? LIMIT ?")
            .await;
    let ob_at = prepare(&session, "SELECT seq, event_id, event FROM outbox WHERE program_id = ? AND hour = ? AND seq = ?").await;
    for seq in [10i64, 20, 20, 30, 40] {
        let id = format!("e{seq}-{}", seq % 7);
        exec(&session, &ob_put, (P, 100i64, seq, id, vec![1u8])).await;
    }
    exec(&session, &ob_put, (P, 100i64, 20i64, "e20-b", vec![2u8])).await;
    let got: Vec<(i64, String, Vec<u8>)> = collect(&session, &ob_range, (P, 100i64, 10i64, 30i64, 10i32)).await;
    let ids: Vec<(i64, &str)> = got.iter().map(|(s, e, _)| (*s, e.as_str())).collect();
    assert_eq!(ids, [(20, "e20-6"), (20, "e20-b"), (30, "e30-2")]);
    let got: Vec<(i64, String, Vec<u8>)> = collect(&session, &ob_range, (P, 100i64, 10i64, 30i64, 2i32)).await;
    assert_eq!(got.len(), 2);
    let got: Vec<(i64, String, Vec<u8>)> = collect(&session, &ob_at, (P, 100i64, 20i64)).await;
    assert_eq!(got.len(), 2);

    // Credits (20, 21, 22).
    let cr_put = prepare(&session, "INSERT INTO credits (program_id, credit_id, credit) VALUES (?, ?, ?)").await;
    let cr_list = prepare(&session, "SELECT credit FROM credits WHERE program_id = ? LIMIT ?").await;
    let cr_del = prepare(&session, "DELETE FROM credits WHERE program_id = ? AND credit_id = ?").await;
    for (id, b) in [("c2", 2u8), ("c1", 1), ("c3", 3)] {
        exec(&session, &cr_put, (P, id, vec![b])).await;
    }
    exec(&session, &cr_del, (P, "c2")).await;
    let got: Vec<(Vec<u8>,)> = collect(&session, &cr_list, (P, 10i32)).await;
    assert_eq!(got, [(vec![1u8],), (vec![3u8],)]);

    // Rules (23, 24, 25): version and head move in one conditional batch.
    let head = prepare(&session, "SELECT head FROM rules WHERE program_id = ? AND version = ?").await;
    let rules = prepare(&session, "SELECT rules FROM rules WHERE program_id = ? AND version = ?").await;
    let head_init = prepare(&session, "INSERT INTO rules (program_id, version, head) VALUES (?, ?, ?) IF NOT EXISTS").await;
    let head_move = prepare(&session, "UPDATE rules SET head = ? WHERE program_id = ? AND version = ? IF head = ?").await;
    let put_rules = prepare(&session, "INSERT INTO rules (program_id, version, rules) VALUES (?, ?, ?)").await;
    let mut b1 = Batch::new(BatchType::Logged);
    b1.append_statement(head_init.clone());
    b1.append_statement(put_rules.clone());
    let r = named_rows(session.batch(&b1, ((P, 0i64, 1i64), (P, 1i64, vec![1u8]))).await.expect("batch"));
    assert!(r.iter().all(applied));
    let mut b2 = Batch::new(BatchType::Logged);
    b2.append_statement(head_move.clone());
    b2.append_statement(put_rules.clone());
    let r = named_rows(session.batch(&b2, ((2i64, P, 0i64, 1i64), (P, 2i64, vec![2u8]))).await.expect("batch"));
    assert!(r.iter().all(applied));
    // A stale head: nothing is written.
    let r = named_rows(session.batch(&b2, ((3i64, P, 0i64, 1i64), (P, 3i64, vec![3u8]))).await.expect("batch"));
    assert!(!applied(&r[0]));
    assert_eq!(big(&r[0], "head"), Some(2));
    let (h,) = exec(&session, &head, (P, 0i64)).await.into_rows_result().expect("rows").single_row::<(Option<i64>,)>().expect("row");
    assert_eq!(h, Some(2));
    let (r2,) = exec(&session, &rules, (P, 2i64)).await.into_rows_result().expect("rows").single_row::<(Option<Vec<u8>>,)>().expect("row");
    assert_eq!(r2, Some(vec![2u8]));
    assert_eq!(exec(&session, &rules, (P, 3i64)).await.into_rows_result().expect("rows").rows_num(), 0);

    // Schema migrations (26): a whole-table scan, paged.
    let applied_mig = prepare(&session, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)").await;
    let versions = prepare(&session, "SELECT version FROM schema_migrations").await;
    for v in 1..=5i32 {
        exec(&session, &applied_mig, (v, format!("{v:04}_x.cql"), CqlTimestamp(1))).await;
    }
    let mut paged = versions.clone();
    paged.set_page_size(2);
    let mut got: Vec<i32> = collect::<(i32,)>(&session, &paged, ()).await.into_iter().map(|r| r.0).collect();
    // Token order, as on a real cluster: check it against the driver's token computation.
    let by_key = prepare(&session, "SELECT version FROM schema_migrations WHERE version = ?").await;
    let tokens: Vec<i64> = got.iter().map(|v| by_key.calculate_token(&(*v,)).expect("token").expect("some token").value()).collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]), "full scan in token order: {got:?} {tokens:?}");
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4, 5]);
    let count = session.query_unpaged("SELECT count(*) FROM schema_migrations", ()).await.expect("count");
    let (n,) = count.into_rows_result().expect("rows").single_row::<(i64,)>().expect("row");
    assert_eq!(n, 5);
}

/// The figures statements on the table the shipped `0003_figures.cql` creates: a program's first
/// figures `IF NOT EXISTS`, then moves `IF through_seq = ?`; a write that does not apply returns
/// the stored values of its CAS columns (all of them for `IF NOT EXISTS`, the condition's for
/// `IF through_seq`), as ScyllaDB does, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_statements() {
    let standin = standin().await;
    let session = session_for(standin.addr()).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/cql/0003_figures.cql");
    apply(&session, &split_statements(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}")))).await;
    let read = prepare(&session, "SELECT through_seq, document FROM figures WHERE program_id = ?").await;
    let create = prepare(&session, "INSERT INTO figures (program_id, through_seq, document) VALUES (?, ?, ?) IF NOT EXISTS").await;
    let moved = prepare(&session, "UPDATE figures SET through_seq = ?, document = ? WHERE program_id = ? IF through_seq = ?").await;
    assert!(read.calculate_token(&(P,)).expect("token").is_some(), "token-aware: the partition key came with PREPARED");
    let stored = |program: &'static str| {
        let (session, read) = (&session, &read);
        async move { exec(session, read, (program,)).await.into_rows_result().expect("rows").maybe_first_row::<(i64, String)>().expect("row") }
    };
    assert_eq!(stored(P).await, None);

    let r = named_rows(exec(&session, &create, (P, 10i64, "{\"a\":1}")).await);
    assert!(applied(&r[0]));
    assert_eq!((big(&r[0], "through_seq"), text(&r[0], "document")), (None, None), "no old row");
    let r = named_rows(exec(&session, &create, (P, 12i64, "{\"b\":2}")).await);
    assert!(!applied(&r[0]));
    assert_eq!(column_names(&exec(&session, &create, (P, 12i64, "x")).await), ["[applied]", "program_id", "document", "through_seq"]);
    assert_eq!((big(&r[0], "through_seq"), text(&r[0], "document").as_deref()), (Some(10), Some("{\"a\":1}")), "the stored row");

    let r = named_rows(exec(&session, &moved, (20i64, "{\"c\":3}", P, 12i64)).await);
    assert!(!applied(&r[0]), "a cursor that is not the stored one");
    assert_eq!(big(&r[0], "through_seq"), Some(10));
    assert_eq!(stored(P).await, Some((10, "{\"a\":1}".to_owned())), "a refused move writes nothing");
    let r = named_rows(exec(&session, &moved, (20i64, "{\"c\":3}", P, 10i64)).await);
    assert!(applied(&r[0]));
    assert_eq!(big(&r[0], "through_seq"), Some(10), "applied, with the value it replaced");
    assert_eq!(stored(P).await, Some((20, "{\"c\":3}".to_owned())));
    let r = named_rows(exec(&session, &moved, (5i64, "{}", "other", 10i64)).await);
    assert!(!applied(&r[0]), "no row: through_seq is null, not 10");
    assert_eq!(stored("other").await, None, "a refused move creates no row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clustering_order_desc_and_null_unset_semantics() {
    let standin = standin().await;
    let session = session_for(standin.addr()).await;
    session.query_unpaged(KEYSPACE_NTS, ()).await.expect("keyspace");
    session
        .query_unpaged(
            "CREATE TABLE loyalty.events (p text, c1 int, c2 text, v bigint, w text, PRIMARY KEY (p, c1, c2)) WITH CLUSTERING ORDER BY (c1 DESC, c2 ASC)",
            (),
        )
        .await
        .expect("table");
    let put = prepare(&session, "INSERT INTO loyalty.events (p, c1, c2, v, w) VALUES (?, ?, ?, ?, ?)").await;
    for (c1, c2) in [(1, "b"), (3, "a"), (-2, "z"), (3, "b"), (1, "a"), (20, "")] {
        exec(&session, &put, ("p", c1, c2, c1 as i64, Some("w"))).await;
    }
    let all = prepare(&session, "SELECT c1, c2 FROM loyalty.events WHERE p = ?").await;
    let got: Vec<(i32, String)> = collect(&session, &all, ("p",)).await;
    let expect: Vec<(i32, String)> =
        [(20, ""), (3, "a"), (3, "b"), (1, "a"), (1, "b"), (-2, "z")].iter().map(|(a, b)| (*a, b.to_string())).collect();
    assert_eq!(got, expect, "c1 descending, then c2 ascending");
    let rev = prepare(&session, "SELECT c1, c2 FROM loyalty.events WHERE p = ? ORDER BY c1 ASC, c2 DESC").await;
    let got: Vec<(i32, String)> = collect(&session, &rev, ("p",)).await;
    assert_eq!(got, expect.iter().rev().cloned().collect::<Vec<_>>());
    let range = prepare(&session, "SELECT c1, c2 FROM loyalty.events WHERE p = ? AND c1 >= ? AND c1 < ? ORDER BY c1 ASC LIMIT ?").await;
    let got: Vec<(i32, String)> = collect(&session, &range, ("p", 1, 20, 3)).await;
    assert_eq!(got, [(1, "b".to_string()), (1, "a".into()), (3, "b".into())]);
    let prefix = prepare(&session, "SELECT c2 FROM loyalty.events WHERE p = ? AND c1 = ? AND c2 > ?").await;
    let got: Vec<(String,)> = collect(&session, &prefix, ("p", 3, "a")).await;
    assert_eq!(got, [("b".to_string(),)]);

    // null writes a tombstone; unset leaves the cell; UPDATE alone creates no row marker.
    let upd = prepare(&session, "UPDATE loyalty.events SET v = ?, w = ? WHERE p = ? AND c1 = ? AND c2 = ?").await;
    let one = prepare(&session, "SELECT v, w FROM loyalty.events WHERE p = ? AND c1 = ? AND c2 = ?").await;
    exec(&session, &upd, (scylla::value::MaybeUnset::<i64>::Unset, None::<String>, "p", 3, "a")).await;
    let (v, w) = exec(&session, &one, ("p", 3, "a"))
        .await
        .into_rows_result()
        .expect("rows")
        .single_row::<(Option<i64>, Option<String>)>()
        .expect("row");
    assert_eq!((v, w), (Some(3), None));
    exec(&session, &upd, (Some(5i64), Some("x"), "q", 1, "a")).await;
    exec(&session, &upd, (None::<i64>, None::<String>, "q", 1, "a")).await;
    let r = exec(&session, &one, ("q", 1, "a")).await.into_rows_result().expect("rows");
    assert_eq!(r.rows_num(), 0, "an UPDATEd row whose cells are all null does not exist");
    exec(&session, &put, ("q", 2, "a", None::<i64>, None::<String>)).await;
    let r = exec(&session, &one, ("q", 2, "a")).await.into_rows_result().expect("rows");
    assert_eq!(r.rows_num(), 1, "an INSERTed row exists even with only null cells");

    // Deleting a whole partition.
    let delp = prepare(&session, "DELETE FROM loyalty.events WHERE p = ?").await;
    exec(&session, &delp, ("p",)).await;
    let got: Vec<(i32, String)> = collect(&session, &all, ("p",)).await;
    assert!(got.is_empty());
}
