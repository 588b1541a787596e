//! Guarantee 15: a program's running figures move on one compare-and-set at a time. A write names
//! the outbox seq the stored figures include (0: none stored); it applies only if that is still so,
//! so of several engines folding different figures from one cursor exactly one moves them on, and
//! a refused write leaves them as they were. A write repeated after it applied is answered as
//! applied (ScyllaDB cannot tell it from a resend of its own). Figures that would not move the
//! cursor forward are a caller's bug, refused as corrupt. Programs are apart, and what was
//! acknowledged is there after a restart.

use std::sync::Arc;

use loyalty_store::{Store, StoreError, StoredFigures};

use crate::backend::Backend;
use crate::support::*;

/// Figures through `through_seq`, told apart by `label`.
fn figures(through_seq: u64, label: &str) -> StoredFigures {
    StoredFigures { through_seq, document: format!("{{\"through\":{through_seq},\"by\":\"{label}\",\"points_earned\":\"12.50\"}}") }
}

async fn stored(store: &dyn Store, program_id: &str) -> Option<StoredFigures> {
    store.figures(program_id).await.expect("read figures")
}

async fn put(store: &dyn Store, program_id: &str, expected_through: u64, new: &StoredFigures) -> bool {
    store.put_figures(program_id, expected_through, new.clone()).await.expect("put figures")
}

/// The first write names 0; each later one the cursor it read. A write naming any other cursor (a
/// stale one, or one never stored) is refused and changes nothing.
pub async fn figures_move_on_only_from_the_cursor_they_name(backend: &Backend) {
    let store = backend.store();
    assert_eq!(stored(store.as_ref(), PROGRAM).await, None, "no figures before the first write");

    let first = figures(10, "first");
    assert!(put(store.as_ref(), PROGRAM, 0, &first).await, "the first figures, from nothing");
    assert_eq!(stored(store.as_ref(), PROGRAM).await, Some(first.clone()));
    assert!(!put(store.as_ref(), PROGRAM, 0, &figures(12, "second writer from nothing")).await, "0 is stale now");
    assert!(!put(store.as_ref(), PROGRAM, 5, &figures(12, "never stored")).await, "a cursor never stored");
    assert!(!put(store.as_ref(), PROGRAM, 11, &figures(12, "ahead")).await, "a cursor ahead of the stored one");
    assert_eq!(stored(store.as_ref(), PROGRAM).await, Some(first), "refused writes change nothing");

    let second = figures(20, "second");
    assert!(put(store.as_ref(), PROGRAM, 10, &second).await, "moved on from the stored cursor");
    assert_eq!(stored(store.as_ref(), PROGRAM).await, Some(second.clone()));
    assert!(!put(store.as_ref(), PROGRAM, 10, &figures(25, "stale")).await, "the previous cursor is stale now");
    assert_eq!(stored(store.as_ref(), PROGRAM).await, Some(second));
}

/// A put repeated after it applied (a retry after an outcome the caller never learned) is answered
/// true and writes nothing more; other figures through the same seq, or the repeat once the figures
/// moved on, are refused.
pub async fn a_repeated_put_is_answered_as_applied(backend: &Backend) {
    let store = backend.store();
    let first = figures(10, "first");
    assert!(put(store.as_ref(), PROGRAM, 0, &first).await);
    assert!(put(store.as_ref(), PROGRAM, 0, &first).await, "the same put again");
    assert!(!put(store.as_ref(), PROGRAM, 0, &figures(10, "another writer")).await, "other figures through the same seq");
    assert_eq!(stored(store.as_ref(), PROGRAM).await, Some(first.clone()));

    let second = figures(20, "second");
    assert!(put(store.as_ref(), PROGRAM, 10, &second).await);
    assert!(put(store.as_ref(), PROGRAM, 10, &second).await, "the same move again");
    assert!(!put(store.as_ref(), PROGRAM, 0, &first).await, "the first put again, once the figures moved on");
    assert_eq!(stored(store.as_ref(), PROGRAM).await, Some(second));
}

/// Figures that do not move the cursor forward (the same seq, or an earlier one) are refused as
/// corrupt, whatever is stored, and write nothing.
pub async fn figures_that_do_not_move_forward_are_refused_as_corrupt(backend: &Backend) {
    let store = backend.store();
    let current = figures(20, "current");
    assert!(put(store.as_ref(), PROGRAM, 0, &current).await);
    for (expected_through, refused) in [(20, figures(20, "the same seq")), (20, figures(7, "behind")), (0, figures(0, "zero"))] {
        let answer = store.put_figures(PROGRAM, expected_through, refused.clone()).await;
        assert!(matches!(answer, Err(StoreError::Corrupt(_))), "{refused:?} after {expected_through}: {answer:?}");
    }
    assert_eq!(stored(store.as_ref(), PROGRAM).await, Some(current), "nothing was written");
    let answer = store.put_figures("other", 0, figures(0, "zero")).await;
    assert!(matches!(answer, Err(StoreError::Corrupt(_))), "zero figures on a program with none: {answer:?}");
    assert_eq!(stored(store.as_ref(), "other").await, None, "nothing was written for the other program");
}

/// Eight writers move the figures on from the same cursor at once (over two instances where the
/// backend has them), three rounds: exactly one wins each round, and its figures are the ones
/// every instance reads, whichever seq the losers named.
pub async fn racing_figures_writers_move_them_on_once_per_cursor(backend: &Backend) {
    let mut stores = vec![backend.store()];
    stores.extend(backend.another_instance().await);
    let mut cursor = 0u64;
    for round in 0..3 {
        let mut tasks = Vec::new();
        for writer in 0..8u64 {
            let store: Arc<dyn Store> = Arc::clone(&stores[writer as usize % stores.len()]);
            let candidate = figures(cursor + 1 + writer, &format!("round {round} writer {writer}"));
            tasks.push(tokio::spawn(async move { (store.put_figures(PROGRAM, cursor, candidate.clone()).await, candidate) }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (answer, candidate) = task.await.expect("writer task");
            if answer.expect("put figures reaches the store") {
                winners.push(candidate);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer moves the figures on, got {winners:?}");
        for store in &stores {
            assert_eq!(stored(store.as_ref(), PROGRAM).await.as_ref(), Some(&winners[0]), "round {round}: the winner's figures");
        }
        cursor = winners[0].through_seq;
    }
}

/// Each program has its own figures and cursor: writing one program's neither shows in nor moves
/// another's.
pub async fn figures_of_programs_are_apart(backend: &Backend) {
    let store = backend.store();
    let ours = figures(10, "ours");
    assert!(put(store.as_ref(), PROGRAM, 0, &ours).await);
    assert_eq!(stored(store.as_ref(), "other").await, None, "another program has none");
    assert!(!put(store.as_ref(), "other", 10, &figures(15, "our cursor")).await, "our cursor is not the other program's");
    let theirs = figures(5, "theirs");
    assert!(put(store.as_ref(), "other", 0, &theirs).await, "the other program's first figures");
    let ours_moved = figures(30, "ours moved");
    assert!(put(store.as_ref(), PROGRAM, 10, &ours_moved).await);
    assert_eq!(stored(store.as_ref(), PROGRAM).await, Some(ours_moved));
    assert_eq!(stored(store.as_ref(), "other").await, Some(theirs));
}

/// Acknowledged figures are there after a restart, and the restarted store moves them on from the
/// cursor it finds.
pub async fn figures_survive_a_reopen(backend: &Backend) {
    let store = backend.store();
    assert!(put(store.as_ref(), PROGRAM, 0, &figures(10, "first")).await);
    let second = figures(20, "second");
    assert!(put(store.as_ref(), PROGRAM, 10, &second).await);
    drop(store);

    let reopened = backend.reopen().await;
    assert_eq!(stored(reopened.as_ref(), PROGRAM).await, Some(second), "the latest figures after a reopen");
    assert!(!put(reopened.as_ref(), PROGRAM, 10, &figures(30, "stale")).await, "the cursor before is still stale");
    let third = figures(30, "third");
    assert!(put(reopened.as_ref(), PROGRAM, 20, &third).await);
    drop(reopened);

    let again = backend.reopen().await;
    assert_eq!(stored(again.as_ref(), PROGRAM).await, Some(third), "figures written after a reopen survive the next");
}

/// After `shutdown()` a figures write fails and writes nothing (seen by a new instance on the same
/// data), as every other write does.
pub async fn shutdown_refuses_figures_writes(backend: &Backend) {
    let store = backend.store();
    let before = figures(10, "before the shutdown");
    assert!(put(store.as_ref(), PROGRAM, 0, &before).await);
    store.shutdown().await;
    let late = store.put_figures(PROGRAM, 10, figures(20, "after the shutdown")).await;
    assert!(late.is_err(), "a figures write after shutdown: {late:?}");
    drop(store);

    let reopened = backend.reopen().await;
    assert_eq!(stored(reopened.as_ref(), PROGRAM).await, Some(before), "the figures as before the shutdown");
}
