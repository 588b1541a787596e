//! The embedded store's guarantees, through the `Store` trait: conditional commits apply all or
//! nothing, concurrent commits share fsyncs yet each sees the others, and what was acknowledged is
//! there after the store is reopened.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use loyalty_core::Origin;
use loyalty_core::account::AccountState;
use loyalty_core::identity::{IdentityKey, IdentityKind};
use loyalty_core::program::ProgramPolicy;
use loyalty_core::receipt::ReceiptState;
use loyalty_core::txn::{Posting, Txn};
use loyalty_store::embedded::{EmbeddedConfig, EmbeddedStore};
use loyalty_store::{AccountWrite, Commit, CommitOutcome, Conflict, ReceiptWrite, Store, StoredFigures};
use rust_decimal::Decimal;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).single().expect("time")
}

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::in_dir(dir)).expect("open store")
}

/// A commit that earns `points` on `receipt_id` for an account last stored at `version`.
fn earn_commit(account: &AccountState, version: u64, receipt_id: &str, points: i64) -> Commit {
    let program = ProgramPolicy::with_defaults("p");
    let mut txn = Txn::begin(&program, account, now(), format!("tx-{receipt_id}"), Origin::default());
    txn.earn(Decimal::from(points), Posting { receipt_id: Some(receipt_id), refund_id: None }, "test".into(), vec!["base".into()]);
    let finished = txn.finish_all().expect("invariants");
    let (state, ledger, events) = (finished.account, finished.entries, finished.events);
    let receipt = ReceiptState::new(receipt_id.into(), account.account_id.clone(), now(), Origin::default());
    Commit {
        program_id: "p".into(),
        account: AccountWrite { expected_version: version, state },
        ledger,
        receipt: Some(ReceiptWrite { expected_version: 0, state: receipt }),
        identity_claims: vec![IdentityKey { kind: IdentityKind::Card, value: format!("CARD{}", account.account_id) }],
        identity_releases: Vec::new(),
        request: None,
        events,
        credits: Vec::new(),
    }
}

#[tokio::test]
async fn conditions_are_checked_and_a_failed_one_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    let fresh = AccountState::new("a1".into(), true, now());
    let first = earn_commit(&fresh, 0, "r1", 10);
    let applied = store.commit(first.clone()).await.expect("commit");
    assert_eq!(applied, CommitOutcome::Applied { account_version: 1 });

    // The same commit again: the account is at version 1 now.
    assert_eq!(store.commit(first).await.expect("commit"), CommitOutcome::Conflict(Conflict::AccountVersion { actual: 1 }));
    // Right version, but the receipt was claimed already.
    let stored = store.account("p", "a1").await.expect("read").expect("exists");
    let reclaim = earn_commit(&stored.value, stored.version, "r1", 5);
    assert_eq!(store.commit(reclaim).await.expect("commit"), CommitOutcome::Conflict(Conflict::ReceiptVersion { actual: 1 }));
    // Another account may not claim a1's card.
    let other = AccountState::new("a2".into(), true, now());
    let mut steal = earn_commit(&other, 0, "r2", 5);
    steal.identity_claims = vec![IdentityKey { kind: IdentityKind::Card, value: "CARDa1".into() }];
    assert!(matches!(store.commit(steal).await.expect("commit"), CommitOutcome::Conflict(Conflict::IdentityTaken { .. })));
    // Nothing of the refused commits was written.
    assert!(store.account("p", "a2").await.expect("read").is_none());
    assert!(store.receipt("p", "r2").await.expect("read").is_none());
    let stored = store.account("p", "a1").await.expect("read").expect("exists");
    assert_eq!((stored.version, stored.value.ledger_sum), (1, Decimal::from(10)));
    assert_eq!(store.ledger_page("p", "a1", u64::MAX, 10).await.expect("ledger").len(), 1);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_fsyncs_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for index in 0..200 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let account = AccountState::new(format!("acc{index}"), true, now());
            store.commit(earn_commit(&account, 0, &format!("r{index}"), index + 1)).await
        }));
    }
    for task in tasks {
        assert!(matches!(task.await.expect("task").expect("commit"), CommitOutcome::Applied { .. }));
    }
    // Two commits racing for the same new account: exactly one wins.
    let account = AccountState::new("contested".into(), true, now());
    let (left, right) = tokio::join!(store.commit(earn_commit(&account, 0, "c1", 1)), store.commit(earn_commit(&account, 0, "c2", 1)));
    let outcomes = [left.expect("left"), right.expect("right")];
    assert_eq!(outcomes.iter().filter(|outcome| matches!(outcome, CommitOutcome::Applied { .. })).count(), 1);
    store.shutdown().await;
    drop(store);

    let reopened = open(dir.path());
    let (accounts, entries) = reopened.verify_ledgers().expect("ledgers agree");
    assert_eq!((accounts, entries), (201, 201));
    let stored = reopened.account("p", "acc199").await.expect("read").expect("exists");
    assert_eq!(stored.value.ledger_sum, Decimal::from(200));
    let identity = reopened.identity("p", &IdentityKey { kind: IdentityKind::Card, value: "CARDacc7".into() }).await.expect("read");
    assert_eq!(identity.as_deref(), Some("acc7"));
    reopened.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_commits_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    store.shutdown().await;
    let account = AccountState::new("late".into(), true, now());
    assert!(store.commit(earn_commit(&account, 0, "r", 1)).await.is_err());
    assert!(!store.is_writable());
}

#[tokio::test]
async fn outbox_events_follow_their_commits_in_order_and_only_applied_commits_write_them() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    let account = AccountState::new("acc-outbox".into(), true, now());
    let first = earn_commit(&account, 0, "R1", 10);
    let after_first = first.account.state.clone();
    // Counted from the commits, not assumed one per commit: an earn may carry several events.
    let mut written = first.events.clone();
    assert_eq!(store.commit(first).await.expect("commit"), CommitOutcome::Applied { account_version: 1 });
    // A conflicting commit (stale version) writes no event.
    let stale = earn_commit(&account, 0, "R2", 20);
    assert!(matches!(store.commit(stale).await.expect("commit"), CommitOutcome::Conflict(_)));
    let second = earn_commit(&after_first, 1, "R3", 30);
    let (first_count, second_count) = (written.len() as u64, second.events.len());
    written.extend(second.events.iter().cloned());
    assert_eq!(store.commit(second).await.expect("commit"), CommitOutcome::Applied { account_version: 2 });
    let page = store.outbox_page("p", 0, 100).await.expect("outbox");
    let seen: Vec<(u64, loyalty_core::events::Event)> = page.into_iter().map(|record| (record.seq, record.event)).collect();
    let expected: Vec<(u64, loyalty_core::events::Event)> = (1..).zip(written).collect();
    assert_eq!(seen, expected, "the applied commits' events (none of the refused one), numbered 1, 2, 3... in commit order");
    assert_eq!(store.outbox_page("p", first_count, 100).await.expect("outbox").len(), second_count);
    assert!(store.outbox_page("other", 0, 10).await.expect("outbox").is_empty());
    store.shutdown().await;
}

#[tokio::test]
async fn rules_versions_are_written_once_each_in_sequence_and_survive_reopening() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    let version = |version: u64, comment: &str| loyalty_store::StoredRules {
        version,
        document: format!("{{\"rules\":[],\"v\":{version}}}"),
        created_at: now(),
        author: "test".into(),
        comment: comment.into(),
    };
    assert_eq!(store.latest_rules("p").await.expect("read"), None);
    assert!(!store.put_rules("p", version(2, "skips 1")).await.expect("put"), "version 2 before 1");
    assert!(store.put_rules("p", version(1, "first")).await.expect("put"));
    assert!(!store.put_rules("p", version(1, "again")).await.expect("put"), "version 1 twice");
    assert!(store.put_rules("p", version(2, "second")).await.expect("put"));
    store.shutdown().await;
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.latest_rules("p").await.expect("read").map(|rules| rules.comment), Some("second".into()));
    assert_eq!(store.rules_version("p", 1).await.expect("read").map(|rules| rules.comment), Some("first".into()));
    assert_eq!(store.latest_rules("q").await.expect("read"), None);
    store.shutdown().await;
}

/// The files as a kill -9 would leave them: copied while the store runs, after every commit was
/// acknowledged and before any checkpoint.
fn crash_image(config: &EmbeddedConfig, to: &std::path::Path, with_journal: bool) -> EmbeddedConfig {
    std::fs::create_dir_all(to).expect("dir");
    let image = EmbeddedConfig { path: to.join("loyalty.redb"), ..config.clone() };
    std::fs::copy(&config.path, &image.path).expect("copy the database file");
    if with_journal {
        for segment in journal_files(&config.journal_path()) {
            std::fs::copy(&segment, to.join(segment.file_name().expect("name"))).expect("copy the journal");
        }
    }
    image
}

/// The journal's files beside `journal_path` (its segments, `loyalty.journal.<first record>`), in
/// order: the last is the one being written.
fn journal_files(journal_path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let prefix = format!("{}.", journal_path.file_name().expect("name").to_string_lossy());
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(journal_path.parent().expect("dir"))
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(&prefix)))
        .collect();
    files.sort();
    files
}

async fn commit_fifty(store: &EmbeddedStore) {
    for index in 0..50 {
        let account = AccountState::new(format!("acc{index}"), true, now());
        let outcome = store.commit(earn_commit(&account, 0, &format!("r{index}"), index + 1)).await.expect("commit");
        assert!(matches!(outcome, CommitOutcome::Applied { .. }));
    }
}

#[tokio::test]
async fn acknowledged_commits_come_back_from_the_journal_after_a_crash() {
    let dir = tempfile::tempdir().expect("dir");
    let config = EmbeddedConfig { journal: true, ..EmbeddedConfig::in_dir(&dir.path().join("live")) };
    let store = EmbeddedStore::open(config.clone()).expect("open");
    commit_fifty(&store).await;

    // With the journal: every acknowledged commit, once, even with an unfinished record after them.
    let image = crash_image(&config, &dir.path().join("crashed"), true);
    // Half a record where the next one would go: a write the crash cut short.
    let current = journal_files(&image.journal_path()).pop().expect("a journal segment");
    let mut bytes = std::fs::read(&current).expect("journal");
    // Records are a 4-byte length, a 4-byte checksum and the body; zeros follow the last one.
    let mut end = 0;
    while let len @ 1.. = u32::from_le_bytes(bytes[end..end + 4].try_into().expect("length")) as usize {
        end += 8 + len;
    }
    bytes[end..end + 6].copy_from_slice(&[200, 0, 0, 0, 9, 9]);
    std::fs::write(&current, &bytes).expect("journal");
    let recovered = EmbeddedStore::open(image.clone()).expect("recover");
    assert_eq!(recovered.verify_ledgers().expect("ledgers agree"), (50, 50));
    let stored = recovered.account("p", "acc49").await.expect("read").expect("exists");
    assert_eq!((stored.version, stored.value.ledger_sum), (1, Decimal::from(50)));
    // Commits go on after the recovery, and a second reopen applies nothing twice.
    let more = earn_commit(&stored.value, stored.version, "again", 1);
    assert_eq!(recovered.commit(more).await.expect("commit"), CommitOutcome::Applied { account_version: 2 });
    recovered.shutdown().await;
    drop(recovered);
    let reopened = EmbeddedStore::open(image).expect("reopen");
    assert_eq!(reopened.verify_ledgers().expect("ledgers agree"), (50, 51));
    reopened.shutdown().await;

    // The file alone does not hold them: the journal is what made them durable.
    let without = EmbeddedStore::open(crash_image(&config, &dir.path().join("no-journal"), false)).expect("open");
    let (accounts, _) = without.verify_ledgers().expect("ledgers agree");
    assert!(accounts < 50, "the database file alone held {accounts} accounts");
    without.shutdown().await;
    store.shutdown().await;
}

/// The applier checkpoints in the background, off the commits' path: soon after the calls were
/// answered, the database file alone holds all of them (without the journal's help).
#[tokio::test]
async fn a_checkpoint_makes_the_file_hold_everything_without_the_journal() {
    let dir = tempfile::tempdir().expect("dir");
    // A checkpoint after every transaction of the applier.
    let config = EmbeddedConfig { journal: true, checkpoint_bytes: 1, ..EmbeddedConfig::in_dir(&dir.path().join("live")) };
    let store = EmbeddedStore::open(config.clone()).expect("open");
    commit_fifty(&store).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let recovered = EmbeddedStore::open(crash_image(&config, &dir.path().join(format!("crashed-{attempt}")), false)).expect("open");
        let (accounts, entries) = recovered.verify_ledgers().expect("ledgers agree");
        recovered.shutdown().await;
        assert!(accounts <= 50 && accounts == entries, "{accounts} accounts, {entries} entries");
        if accounts == 50 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the file held {accounts} of 50 accounts after 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.shutdown().await;
}

/// A damaged file is refused, never misread, with a message that says what is damaged and what to
/// do (restore the newest backup); a backup taken before the damage restores it.
#[tokio::test]
async fn a_damaged_file_is_refused_saying_to_restore_and_a_backup_restores_it() {
    let dir = tempfile::tempdir().expect("dir");
    let config = EmbeddedConfig::in_dir(dir.path());
    let store = open(dir.path());
    for index in 0..20 {
        let account = AccountState::new(format!("a{index}"), true, now());
        store.commit(earn_commit(&account, 0, &format!("r{index}"), 10)).await.expect("commit");
    }
    let backup = dir.path().join("backup.redb");
    let report = store.backup_to(&backup).expect("backup");
    assert_eq!((report.accounts, report.ledger_entries), (20, 20));
    store.shutdown().await;
    drop(store);

    // A cut tail, then pages overwritten: each refused as damaged, naming the file and the way back.
    let length = std::fs::metadata(&config.path).expect("file").len();
    let whole = std::fs::read(&config.path).expect("read");
    let cut = std::fs::OpenOptions::new().write(true).open(&config.path).expect("open");
    cut.set_len(length / 3).expect("cut the tail");
    drop(cut);
    let overwritten = {
        let mut bytes = whole.clone();
        for byte in bytes.iter_mut().skip(4096).take(whole.len() / 2) {
            *byte ^= 0xA5;
        }
        bytes
    };
    for damaged in [None, Some(overwritten)] {
        if let Some(bytes) = damaged {
            std::fs::write(&config.path, bytes).expect("write damage");
        }
        let error = EmbeddedStore::open(config.clone()).expect_err("a damaged file does not open").to_string();
        assert!(error.contains("is damaged") && error.contains("restore --from"), "{error}");
        assert!(error.contains(&config.path.display().to_string()), "{error}");
    }

    let (accounts, entries) = EmbeddedStore::restore(&backup, &config).await.expect("restore");
    assert_eq!((accounts, entries), (20, 20));
    let store = open(dir.path());
    assert!(store.account("p", "a7").await.expect("read").is_some());
    assert_eq!(store.verify_ledgers().expect("ledgers agree"), (20, 20));
    store.shutdown().await;
    assert!(config.path.with_extension("redb.replaced").exists(), "the damaged file is kept beside it");
}

fn figures(through_seq: u64) -> StoredFigures {
    StoredFigures { through_seq, document: format!("{{\"through\":{through_seq},\"earned\":\"10\"}}") }
}

/// Figures are written in a write transaction of their own between the writer's batches, not made
/// durable (they are derived, and carry their cursor): with the journal on as without it, a kill -9
/// right after the put keeps every commit acknowledged before it, and the figures as put or as
/// they were before (never anything else); the crashed copy goes on from the cursor it holds.
#[tokio::test]
async fn acknowledged_figures_survive_a_crash_with_and_without_the_journal() {
    let dir = tempfile::tempdir().expect("dir");
    for journal in [true, false] {
        let live = dir.path().join(format!("live-{journal}"));
        let config = EmbeddedConfig { journal, ..EmbeddedConfig::in_dir(&live) };
        let store = EmbeddedStore::open(config.clone()).expect("open");
        commit_fifty(&store).await;
        assert!(store.put_figures("p", 0, figures(50)).await.expect("put figures"));
        assert!(!store.put_figures("p", 0, figures(60)).await.expect("put figures"), "a stale cursor");
        let crashed = EmbeddedStore::open(crash_image(&config, &dir.path().join(format!("crashed-{journal}")), journal)).expect("open");
        let held = crashed.figures("p").await.expect("read figures");
        assert!(held.is_none() || held == Some(figures(50)), "journal {journal}: {held:?}");
        assert_eq!(crashed.verify_ledgers().expect("ledgers agree"), (50, 50), "journal {journal}");
        // The crashed copy goes on from the cursor it holds.
        let cursor = held.map_or(0, |held| held.through_seq);
        assert!(crashed.put_figures("p", cursor, figures(70)).await.expect("put figures"));
        crashed.shutdown().await;
        store.shutdown().await;
    }
}

/// An online backup copies the figures table with every other one, and a restore (which verifies
/// the ledgers) brings them back.
#[tokio::test]
async fn backups_carry_figures_and_restore_them() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir.path().join("live"));
    commit_fifty(&store).await;
    let without = store.backup_to(&dir.path().join("without-figures.redb")).expect("backup");
    assert!(store.put_figures("p", 0, figures(50)).await.expect("put figures"));
    assert!(store.put_figures("q", 0, figures(3)).await.expect("put figures"));
    let backup = dir.path().join("backup.redb");
    let report = store.backup_to(&backup).expect("backup");
    assert_eq!(report.rows, without.rows + 2, "the two figures rows are copied and counted");
    store.shutdown().await;
    drop(store);

    let restored = EmbeddedConfig::in_dir(&dir.path().join("restored"));
    assert_eq!(EmbeddedStore::restore(&backup, &restored).await.expect("restore"), (50, 50));
    let store = EmbeddedStore::open(restored).expect("open the restored store");
    assert_eq!(store.figures("p").await.expect("read figures"), Some(figures(50)));
    assert_eq!(store.figures("q").await.expect("read figures"), Some(figures(3)));
    store.shutdown().await;
}

/// A data directory written by the build before figures (schema 3, no `figures` table) opens
/// without a schema change, reads its data, has no figures, and takes them from then on.
#[tokio::test]
async fn a_file_from_before_figures_opens_and_takes_them() {
    let dir = tempfile::tempdir().expect("dir");
    let config = EmbeddedConfig::in_dir(dir.path());
    let store = open(dir.path());
    commit_fifty(&store).await;
    store.shutdown().await;
    drop(store);
    // The file as the previous build left it: every table but `figures`.
    {
        let db = redb::Database::open(&config.path).expect("open with redb");
        let txn = db.begin_write().expect("write");
        let figures_table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("figures");
        assert!(txn.delete_table(figures_table).expect("delete the table"), "this build created the table");
        txn.commit().expect("commit");
    }

    let store = open(dir.path());
    assert_eq!(store.verify_ledgers().expect("ledgers agree"), (50, 50));
    assert!(store.account("p", "acc7").await.expect("read").is_some());
    assert_eq!(store.figures("p").await.expect("read figures"), None);
    assert!(store.put_figures("p", 0, figures(50)).await.expect("put figures"));
    store.shutdown().await;
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.figures("p").await.expect("read figures"), Some(figures(50)));
    store.shutdown().await;
}

/// `verify` goes on past a damaged account: it names it, with what is wrong, and counts every
/// other account as readable (their ledgers add up), so the operator knows what a damaged file
/// still holds.
#[tokio::test]
async fn verify_names_a_damaged_account_and_reads_the_others() {
    let dir = tempfile::tempdir().expect("dir");
    let config = EmbeddedConfig::in_dir(dir.path());
    let store = EmbeddedStore::open(config.clone()).expect("open");
    commit_fifty(&store).await;
    store.shutdown().await;
    drop(store);
    // One account's record damaged in place (as a flipped bit behind a checksum would leave it).
    {
        let db = redb::Database::open(&config.path).expect("open the file");
        let txn = db.begin_write().expect("write");
        {
            const ACCOUNTS: redb::TableDefinition<(&str, &str), &[u8]> = redb::TableDefinition::new("accounts");
            let mut accounts = txn.open_table(ACCOUNTS).expect("accounts");
            let key = {
                use redb::ReadableTable;
                let mut keys = accounts.iter().expect("iterate");
                let (key, _) = keys.nth(7).expect("an eighth account").expect("read");
                let (program, account) = key.value();
                (program.to_owned(), account.to_owned())
            };
            accounts.insert((key.0.as_str(), key.1.as_str()), &b"\x02not an account"[..]).expect("damage");
        }
        txn.commit().expect("commit");
    }
    let store = EmbeddedStore::open(config).expect("reopen");
    let mut seen = 0;
    let verification = store.verify_accounts(|_| seen += 1).expect("the tables read");
    assert_eq!(seen, 50, "every account is reported, damaged or not");
    assert_eq!((verification.accounts, verification.entries), (49, 49));
    let [damaged] = verification.damaged.as_slice() else { panic!("one damaged account: {:?}", verification.damaged) };
    assert!(damaged.account_id.starts_with("acc") && !damaged.what.is_empty(), "{damaged:?}");
    let refused = store.verify_ledgers().expect_err("a damaged account fails the whole check");
    assert!(refused.to_string().contains(&damaged.account_id), "{refused}");
    store.shutdown().await;
}
