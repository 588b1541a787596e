//! Guarantee 12: the schedule sweep's paging through a program's accounts sees each account once.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::backend::Backend;
use crate::support::*;

const ACCOUNTS: usize = 150;
const PAGE: usize = 40;

/// 150 accounts (and a few in another program), paged by 40 from "" following `next`: each
/// account exactly once, then `next == None`.
pub async fn account_ids_page_through_every_account_once(backend: &Backend) {
    let store = backend.store();
    let mut tasks = Vec::new();
    for index in 0..ACCOUNTS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let commit = change().earn(1).new_receipt(&format!("r{index}")).build(&fresh(&format!("acct-{index:03}")));
            apply(store.as_ref(), &commit).await;
        }));
    }
    for index in 0..3 {
        let mut commit = change().earn(1).build(&fresh(&format!("other-{index}")));
        commit.program_id = "other".into();
        apply(store.as_ref(), &commit).await;
    }
    for task in tasks {
        task.await.expect("create task");
    }

    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = store.account_ids(PROGRAM, &cursor, PAGE).await.expect("account page");
        pages += 1;
        assert!(pages <= 100, "paging does not end; cursor {cursor:?}");
        assert!(page.ids.len() <= PAGE, "a page of {} ids", page.ids.len());
        seen.extend(page.ids);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an account listed twice: {seen:?}");
    let expected: BTreeSet<String> = (0..ACCOUNTS).map(|index| format!("acct-{index:03}")).collect();
    assert_eq!(unique, expected.iter().collect(), "every account of the program, none of another");

    let empty = store.account_ids("nobody", "", PAGE).await.expect("account page");
    assert!(empty.ids.is_empty() && empty.next.is_none(), "an empty program: {empty:?}");
    let mut cursor = String::new();
    let mut other = Vec::new();
    for _ in 0..100 {
        let page = store.account_ids("other", &cursor, 2).await.expect("account page");
        other.extend(page.ids);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    other.sort();
    assert_eq!(other, vec!["other-0", "other-1", "other-2"], "pages of 2 in another program");
}
