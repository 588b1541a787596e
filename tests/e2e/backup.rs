//! Online backups of the embedded store while checkout goes on, and a verified restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use loyalty_engine::config::Config;
use loyalty_proto::admin as admin_pb;
use loyalty_store::Store;
use loyalty_store::embedded::EmbeddedStore;
use loyalty_tests::*;
use tonic::Code;

use crate::expect_error;

fn backup_request() -> admin_pb::BackupStoreRequest {
    admin_pb::BackupStoreRequest { program_id: PROGRAM.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_backup_holds_every_call_acknowledged_before_it_and_restores_verified() {
    let backups = tempfile::tempdir().expect("backup dir");
    let folder = backups.path().to_owned();
    let server = TestServer::start_with(
        move |config| {
            config.storage.backup_dir = Some(folder);
            config.storage.backups_kept = 2;
        },
        |store| store,
    )
    .await;
    let mut client = server.client().await;
    let mut admin = server.admin().await;
    for index in 0..40 {
        let request = accrue(&format!("R{index}"), card(&format!("BKUP000{}", index % 5)), vec![line(1, "milk", "1", "1000.00")]);
        client.accrue(request).await.expect("before the backup");
    }
    // Checkout goes on while the backup is written: a till keeps accruing from before the backup
    // starts until after it ends, and no call of it fails.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
        let mut till = server.client().await;
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = served.load(Ordering::SeqCst);
                let request = accrue(&format!("W{n}"), card("BKUP0009"), vec![line(1, "milk", "1", "100.00")]);
                till.accrue(request).await.expect("checkout during the backup");
                served.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let running = || async { served.load(Ordering::SeqCst) };
    eventually(std::time::Duration::from_secs(5), "the till's load under way", running, |n| *n > 0).await;
    let report = admin.backup_store(backup_request()).await.expect("backup").into_inner();
    let after_backup = served.load(Ordering::SeqCst);
    eventually(std::time::Duration::from_secs(5), "the till's load going on after it", running, |n| *n > after_backup).await;
    stop.store(true, Ordering::SeqCst);
    load.await.expect("no checkout call failed");
    assert!(report.accounts >= 5 && report.ledger_entries >= 40, "{report:?}");
    assert!(report.path.ends_with(".redb") && std::path::Path::new(&report.path).exists(), "{report:?}");
    client.accrue(accrue("AFTER", card("BKUP0000"), vec![line(1, "milk", "1", "1000.00")])).await.expect("after the backup");

    // Restored into a fresh data directory: every ledger verified, what was acknowledged before
    // the backup there, what came after not.
    let restored = tempfile::tempdir().expect("restore dir");
    let config = Config { data_dir: restored.path().to_owned(), ..Config::default() };
    let (accounts, entries) = EmbeddedStore::restore(std::path::Path::new(&report.path), &config.embedded_store()).await.expect("restore");
    assert_eq!((accounts, entries), (report.accounts, report.ledger_entries));
    let store = EmbeddedStore::open(config.embedded_store()).expect("open the restored store");
    for index in 0..40 {
        assert!(store.receipt(PROGRAM, &format!("R{index}")).await.expect("read").is_some(), "R{index}");
    }
    assert!(store.receipt(PROGRAM, "AFTER").await.expect("read").is_none(), "acknowledged after the backup: not in it");
    assert_eq!(store.verify_ledgers().expect("ledgers agree").0, accounts);
    store.shutdown().await;

    // The newest two backups stay.
    for _ in 0..2 {
        admin.backup_store(backup_request()).await.expect("another backup");
    }
    let kept = std::fs::read_dir(backups.path()).expect("backups").filter_map(Result::ok).count();
    assert_eq!(kept, 2);
    server.stop().await;
}

#[tokio::test]
async fn without_a_backup_folder_or_on_scylla_there_is_no_online_backup() {
    let server = TestServer::start().await;
    let status = expect_error(server.admin().await.backup_store(backup_request()).await, Code::FailedPrecondition, "BACKUP_UNAVAILABLE");
    assert!(status.message().contains("storage.backup_dir"), "{status:?}");
    server.stop().await;

    let rig = crate::scylla::Rig::shared().await;
    let folder = tempfile::tempdir().expect("backup dir");
    let path = folder.path().to_owned();
    let server = rig.engine_with(move |config| config.storage.backup_dir = Some(path)).await;
    let status = expect_error(server.admin().await.backup_store(backup_request()).await, Code::FailedPrecondition, "BACKUP_UNAVAILABLE");
    assert!(status.message().contains("snapshot"), "{status:?}");
    server.stop().await;
}
