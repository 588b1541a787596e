//! Paging with execute_iter: many pages, LIMIT across pages, reversed order, concurrent writes.

use crate::common::*;

const KIND_ROWS: &str = "SELECT seq, key, value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ?";
const PUT: &str = "INSERT INTO accounts (program_id, account_id, kind, seq, key, value) VALUES (?, ?, ?, ?, ?, ?)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_through_a_large_partition() {
    let (standin, session) = with_schema().await;
    let put = prepare(&session, PUT).await;
    for seq in (0..500i64).rev() {
        exec(&session, &put, ("p", "a", 1i8, seq, format!("k{}", seq % 3), vec![(seq % 256) as u8])).await;
    }
    // Rows of another kind and another account must not leak in.
    exec(&session, &put, ("p", "a", 2i8, 0i64, "x", vec![1u8])).await;
    exec(&session, &put, ("p", "b", 1i8, 0i64, "x", vec![1u8])).await;

    let mut q = prepare(&session, KIND_ROWS).await;
    q.set_page_size(7);
    let executes_before = standin.statements().iter().filter(|s| *s == KIND_ROWS).count();
    let rows: Vec<(i64, String, Vec<u8>)> = collect(&session, &q, ("p", "a", 1i8)).await;
    assert_eq!(rows.len(), 500);
    assert!(rows.iter().enumerate().all(|(i, r)| r.0 == i as i64 && r.1 == format!("k{}", i % 3)));
    let pages = standin.statements().iter().filter(|s| *s == KIND_ROWS).count() - executes_before;
    assert_eq!(pages, 500usize.div_ceil(7), "one EXECUTE per page");

    // Page size and LIMIT together; reversed order.
    let mut before = prepare(
        &session,
        "SELECT value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq < ? ORDER BY kind DESC, seq DESC LIMIT ?",
    )
    .await;
    before.set_page_size(3);
    let got: Vec<(Vec<u8>,)> = collect(&session, &before, ("p", "a", 1i8, 300i64, 10i32)).await;
    let got: Vec<u8> = got.into_iter().map(|r| r.0[0]).collect();
    let expect: Vec<u8> = (290..300i64).rev().map(|s| (s % 256) as u8).collect();
    assert_eq!(got, expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_resumes_after_the_last_row_even_when_data_changes() {
    let (_standin, session) = with_schema().await;
    let put = prepare(&session, PUT).await;
    for seq in [10i64, 20, 30, 40, 50] {
        exec(&session, &put, ("p", "a", 1i8, seq, "", vec![1u8])).await;
    }
    let mut q = prepare(&session, KIND_ROWS).await;
    q.set_page_size(2);
    let (first, state) =
        session.execute_single_page(&q, ("p", "a", 1i8), scylla::response::PagingState::start()).await.expect("first page");
    let first: Vec<i64> =
        first.into_rows_result().expect("rows").rows::<(i64, String, Vec<u8>)>().expect("typed").map(|r| r.expect("row").0).collect();
    assert_eq!(first, [10, 20]);
    let scylla::response::PagingStateResponse::HasMorePages { state } = state else { panic!("more pages expected") };
    // Insert before and after the resume point, delete the next row.
    exec(&session, &put, ("p", "a", 1i8, 15i64, "", vec![1u8])).await;
    exec(&session, &put, ("p", "a", 1i8, 35i64, "", vec![1u8])).await;
    let del = prepare(&session, "DELETE FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ?").await;
    exec(&session, &del, ("p", "a", 1i8, 30i64, "")).await;
    let (second, _) = session.execute_single_page(&q, ("p", "a", 1i8), state).await.expect("second page");
    let second: Vec<i64> =
        second.into_rows_result().expect("rows").rows::<(i64, String, Vec<u8>)>().expect("typed").map(|r| r.expect("row").0).collect();
    assert_eq!(second, [35, 40]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_scan_pages_across_partitions_and_system_tables_page() {
    let (_standin, session) = with_schema().await;
    let put = prepare(&session, "INSERT INTO credits (program_id, credit_id, credit) VALUES (?, ?, ?)").await;
    for p in 0..20 {
        for c in 0..3 {
            exec(&session, &put, (format!("p{p}"), format!("c{c}"), vec![c as u8])).await;
        }
    }
    let mut scan = prepare(&session, "SELECT program_id, credit_id FROM credits").await;
    scan.set_page_size(4);
    let rows: Vec<(String, String)> = collect(&session, &scan, ()).await;
    assert_eq!(rows.len(), 60);
    let mut uniq = rows.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 60, "no row twice");
    // Rows of one partition are contiguous and in clustering order.
    for w in rows.windows(2) {
        if w[0].0 == w[1].0 {
            assert!(w[0].1 < w[1].1);
        }
    }
    let mut limited = prepare(&session, "SELECT program_id FROM credits LIMIT 9").await;
    limited.set_page_size(4);
    let rows: Vec<(String,)> = collect(&session, &limited, ()).await;
    assert_eq!(rows.len(), 9);

    let mut cols = prepare(&session, "SELECT keyspace_name, table_name, column_name FROM system_schema.columns").await;
    cols.set_page_size(5);
    let rows: Vec<(String, String, String)> = collect(&session, &cols, ()).await;
    assert_eq!(rows.iter().filter(|r| r.0 == "loyalty").count(), 7 + 4 + 3 + 5 + 5 + 3 + 4 + 3);
}
