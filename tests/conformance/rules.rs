//! Guarantee 9: each rules version of a program is written once, only right after the previous one,
//! and the three ways of reading rules agree.

use std::sync::Arc;

use loyalty_store::{Store, StoredRules};

use crate::backend::Backend;
use crate::support::*;

fn rules(version: u64, comment: &str) -> StoredRules {
    StoredRules {
        version,
        document: format!("{{\"version\":{version},\"rules\":[{{\"id\":\"base\",\"percent\":\"{version}\"}}]}}"),
        created_at: now() + chrono::Duration::minutes(version as i64),
        author: "conformance".into(),
        comment: comment.into(),
    }
}

async fn assert_head(store: &dyn Store, expected: &StoredRules) {
    assert_eq!(store.rules_head(PROGRAM).await.expect("rules head"), expected.version, "rules_head");
    assert_eq!(store.latest_rules(PROGRAM).await.expect("latest rules").as_ref(), Some(expected), "latest_rules");
    assert_eq!(store.rules_version(PROGRAM, expected.version).await.expect("rules version").as_ref(), Some(expected), "rules_version");
}

/// Versions 1, 2, 3 in sequence; a version written twice, skipped ahead, or out of order is refused
/// and changes nothing.
pub async fn rules_versions_are_written_once_in_sequence(backend: &Backend) {
    let store = backend.store();
    assert_eq!(store.rules_head(PROGRAM).await.expect("rules head"), 0);
    assert_eq!(store.latest_rules(PROGRAM).await.expect("latest rules"), None);
    assert_eq!(store.rules_version(PROGRAM, 1).await.expect("rules version"), None);

    assert!(!store.put_rules(PROGRAM, rules(2, "skips 1")).await.expect("put rules"), "version 2 before version 1");
    assert!(!store.put_rules(PROGRAM, rules(0, "zero")).await.expect("put rules"), "version 0 is 'none'");
    assert_eq!(store.rules_head(PROGRAM).await.expect("rules head"), 0, "refused puts change nothing");
    assert_eq!(store.rules_version(PROGRAM, 2).await.expect("rules version"), None, "a refused version is not stored");

    let mut written = Vec::new();
    for version in 1..=3 {
        let first = rules(version, &format!("version {version}"));
        assert!(store.put_rules(PROGRAM, first.clone()).await.expect("put rules"), "version {version}");
        assert!(!store.put_rules(PROGRAM, rules(version, "second writer")).await.expect("put rules"), "version {version} twice");
        assert_head(store.as_ref(), &first).await;
        written.push(first);
    }
    assert!(!store.put_rules(PROGRAM, rules(2, "behind")).await.expect("put rules"), "an old version again");
    assert!(!store.put_rules(PROGRAM, rules(5, "ahead")).await.expect("put rules"), "version 5 after 3");
    assert_head(store.as_ref(), &written[2]).await;
    for stored in &written {
        assert_eq!(
            store.rules_version(PROGRAM, stored.version).await.expect("rules version").as_ref(),
            Some(stored),
            "each version as first written"
        );
    }
    assert_eq!(store.rules_version(PROGRAM, 4).await.expect("rules version"), None);
    assert_eq!(store.rules_version(PROGRAM, 5).await.expect("rules version"), None);
    assert_eq!(store.rules_head("other").await.expect("rules head"), 0, "programs are apart");
    assert_eq!(store.latest_rules("other").await.expect("latest rules"), None);
}

/// Eight admins create the same next version at once (over two instances where the backend has
/// them): exactly one succeeds, and its rules are the ones stored.
pub async fn concurrent_rules_writers_create_each_version_once(backend: &Backend) {
    let mut stores = vec![backend.store()];
    stores.extend(backend.another_instance().await);
    for version in 1..=3u64 {
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let store: Arc<dyn Store> = Arc::clone(&stores[writer % stores.len()]);
            let candidate = rules(version, &format!("writer {writer}"));
            tasks.push(tokio::spawn(async move { (store.put_rules(PROGRAM, candidate.clone()).await, candidate) }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (result, candidate) = task.await.expect("writer task");
            if result.expect("put rules reaches the store") {
                winners.push(candidate);
            }
        }
        assert_eq!(winners.len(), 1, "version {version}: exactly one writer succeeds, got {winners:?}");
        for store in &stores {
            assert_head(store.as_ref(), &winners[0]).await;
        }
    }
}
