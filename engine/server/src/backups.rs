//! Online backups of the embedded store, on an operator's request (`BackupStore`, admin API):
//! a consistent copy written beside checkout, which goes on; the newest `backups_kept` are kept.
//! `loyalty-engine restore --from FILE` puts one back with the engine stopped (every ledger is
//! verified first). A restore loses what was acknowledged after the backup was taken: back up as
//! often as that loss is acceptable (hourly: at most an hour of calls), and keep the newest copies
//! off the machine.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use loyalty_store::{BackupReport, Store};

use crate::error::{EngineError, EngineResult};

/// Where backups go and how many stay.
#[derive(Debug)]
pub struct Backups {
    dir: PathBuf,
    kept: usize,
    /// One backup at a time: a second request waits for the first.
    running: tokio::sync::Mutex<()>,
}

/// File names of backups: `loyalty-<UTC time>.redb` (`-<n>` after the time when that name is taken).
const PREFIX: &str = "loyalty-";
const SUFFIX: &str = ".redb";

impl Backups {
    pub fn new(dir: PathBuf, kept: usize) -> Self {
        Backups { dir, kept: kept.max(1), running: tokio::sync::Mutex::new(()) }
    }

    /// Deletes the oldest backups beyond `kept`.
    fn prune(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut backups: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|entry| is_backup(&entry.path()))
            .map(|entry| Ok((entry.metadata()?.modified()?, entry.path())))
            .collect::<std::io::Result<_>>()?;
        // Oldest first: by when each was written, then by name.
        backups.sort();
        let excess = backups.len().saturating_sub(self.kept);
        let old: Vec<PathBuf> = backups.drain(..excess).map(|(_, path)| path).collect();
        for path in &old {
            std::fs::remove_file(path)?;
        }
        Ok(old)
    }
}

fn is_backup(path: &Path) -> bool {
    path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with(PREFIX) && name.ends_with(SUFFIX))
}

impl Backups {
    /// Takes an online backup of `store` into the folder, named by the time `now()` reads once
    /// its turn comes (one backup at a time), and prunes old ones.
    pub async fn take(&self, store: &dyn Store, now: impl FnOnce() -> DateTime<Utc>) -> EngineResult<BackupReport> {
        let _one_at_a_time = self.running.lock().await;
        std::fs::create_dir_all(&self.dir).map_err(|error| EngineError::Store(loyalty_store::StoreError::Io(error.to_string())))?;
        let stamp = now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let path = (0..)
            .map(|n| self.dir.join(if n == 0 { format!("{PREFIX}{stamp}{SUFFIX}") } else { format!("{PREFIX}{stamp}-{n}{SUFFIX}") }))
            .find(|path| !path.exists())
            .unwrap_or_else(|| self.dir.join(format!("{PREFIX}{stamp}{SUFFIX}")));
        let started = std::time::Instant::now();
        let report = store
            .backup(&path)
            .await?
            .ok_or(EngineError::BackupUnavailable("this store backs up with its own snapshots (ScyllaDB: nodetool snapshot)"))?;
        let pruned = self.prune().map_err(|error| EngineError::Store(loyalty_store::StoreError::Io(error.to_string())))?;
        tracing::info!(
            path = %report.path.display(),
            bytes = report.bytes,
            accounts = report.accounts,
            ledger_entries = report.ledger_entries,
            took_ms = started.elapsed().as_millis() as u64,
            pruned = pruned.len(),
            "backup written"
        );
        metrics::counter!("loyalty_backups_total").increment(1);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_backups_beyond_the_kept_are_deleted_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in
            ["loyalty-20260101T000000.000Z.redb", "loyalty-20260101T010000.000Z.redb", "loyalty-20260101T020000.000Z.redb", "notes.txt"]
        {
            std::fs::write(dir.path().join(name), b"x").expect("file");
            // Written one after another: distinct modification times even on coarse clocks.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let backups = Backups::new(dir.path().to_owned(), 2);
        let pruned = backups.prune().expect("pruned");
        assert_eq!(pruned, [dir.path().join("loyalty-20260101T000000.000Z.redb")]);
        assert!(dir.path().join("notes.txt").exists() && dir.path().join("loyalty-20260101T020000.000Z.redb").exists());
    }
}
