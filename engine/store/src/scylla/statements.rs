//! Every statement the ScyllaDB backend runs, prepared once at connect.
//!
//! Preparing them all at start means a typo or a schema mismatch stops the engine at boot, not at
//! a till; it also gives the driver each statement's partition key, so every request goes straight
//! to a replica that owns the data (token-aware) and to the right shard (shard-aware).
//!
//! Every statement here is safe to run twice: reads trivially, plain writes because they write
//! fixed values under fixed keys, and the conditional ones because a repeat of an applied one fails
//! its own condition and the caller then re-reads (see `docs/scylla.md`). They are all marked
//! idempotent, which lets the driver retry them and (reads only, through their execution profile)
//! race a second replica when the first is slow.

use scylla::client::execution_profile::ExecutionProfileHandle;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use crate::StoreError;

/// Kinds of rows in an account's partition (the `kind` clustering column).
pub mod kind {
    pub const ACCOUNT: i8 = 0;
    pub const LEDGER: i8 = 1;
    pub const RECEIPT: i8 = 2;
    pub const REQUEST: i8 = 3;
    pub const EVENT: i8 = 4;
    pub const CREDIT: i8 = 5;
    /// A claim's fence (key `<claim kind>/<id>`): "held" by the owner's commit, or "revoked" by a
    /// taker (see `ScyllaStore::revoke`).
    pub const FENCE: i8 = 6;
}

/// Kinds of claim-once mappings (the `kind` partition key column of `claimants` and `claims`).
pub mod claim {
    pub const RECEIPT: &str = "receipt";
    pub const IDENTITY: &str = "identity";
    pub const REQUEST: &str = "request";
}

/// The prepared statements.
#[derive(Debug)]
pub struct Statements {
    pub account_row: PreparedStatement,
    pub account_row_serial: PreparedStatement,
    pub relay_rows_serial: PreparedStatement,
    pub ledger_page: PreparedStatement,
    pub relay_rows: PreparedStatement,
    pub create_account: PreparedStatement,
    pub update_account: PreparedStatement,
    pub insert_row_if_absent: PreparedStatement,
    pub update_row_if_version: PreparedStatement,
    pub insert_row: PreparedStatement,
    pub delete_row: PreparedStatement,
    pub claimants: PreparedStatement,
    pub claimant_add: PreparedStatement,
    pub arbiter: PreparedStatement,
    pub arbiter_take: PreparedStatement,
    pub arbiter_takeover: PreparedStatement,
    pub index_account: PreparedStatement,
    pub index_page: PreparedStatement,
    pub mark: PreparedStatement,
    pub marks: PreparedStatement,
    pub unmark: PreparedStatement,
    pub outbox_insert: PreparedStatement,
    pub outbox_range: PreparedStatement,
    pub outbox_at: PreparedStatement,
    pub outbox_hour: PreparedStatement,
    pub outbox_hours: PreparedStatement,
    pub credit_insert: PreparedStatement,
    pub credits: PreparedStatement,
    pub credit_delete: PreparedStatement,
    pub rules_head: PreparedStatement,
    pub rules_version: PreparedStatement,
    pub rules_head_create: PreparedStatement,
    pub rules_head_move: PreparedStatement,
    pub rules_insert: PreparedStatement,
    /// A program's figures: read like the rules head, at the read consistency.
    pub figures: PreparedStatement,
    /// The first figures of a program: `IF NOT EXISTS`.
    pub figures_create: PreparedStatement,
    /// Figures moved on from the ones the writer read: `IF through_seq = ?`.
    pub figures_move: PreparedStatement,
}

/// The execution profiles statements run under.
#[derive(Clone, Debug)]
pub struct Profiles {
    /// Reads: LOCAL_QUORUM, speculative execution.
    pub read: ExecutionProfileHandle,
    /// Writes and lightweight transactions: LOCAL_QUORUM (and `serial` for the Paxos phase), no
    /// speculative execution (two proposals of one LWT would only fight each other).
    pub write: ExecutionProfileHandle,
    /// LOCAL_SERIAL when one data center writes; SERIAL when engines in several do (see
    /// `ScyllaConfig::single_writer_dc`).
    pub serial: SerialConsistency,
}

impl Statements {
    pub async fn prepare(session: &Session, profiles: &Profiles) -> Result<Self, StoreError> {
        let read = |cql: &'static str| prepare(session, cql, &profiles.read);
        let write = |cql: &'static str| prepare(session, cql, &profiles.write);
        // A SERIAL read first completes any Paxos round left half-done on the partition: the
        // recovery pass must not take "no rows" from a commit whose learn phase is still pending,
        // nor the retry of a commit whose outcome was unknown (`ScyllaStore::uncertain`).
        let serial = |cql: &'static str| async move {
            let mut statement = read(cql).await?;
            statement.set_consistency(match profiles.serial {
                SerialConsistency::Serial => Consistency::Serial,
                SerialConsistency::LocalSerial => Consistency::LocalSerial,
            });
            statement.set_execution_profile_handle(Some(profiles.write.clone()));
            Ok::<_, StoreError>(statement)
        };
        // Claimants are written and read at quorum in the data centers whose engines may claim:
        // the local one, or all of them (see `ScyllaStore::claim` for why quorum on both sides).
        let quorum = |cql: &'static str, profile: ExecutionProfileHandle| async move {
            let mut statement = prepare(session, cql, &profile).await?;
            if profiles.serial == SerialConsistency::Serial {
                statement.set_consistency(Consistency::Quorum);
            }
            Ok::<_, StoreError>(statement)
        };
        let relay_rows_serial =
            serial("SELECT kind, seq, key, value FROM accounts WHERE program_id = ? AND account_id = ? AND kind >= ? AND kind <= ?")
                .await?;
        Ok(Statements {
            account_row_serial: serial(
                "SELECT version, value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ?",
            )
            .await?,
            account_row: read(
                "SELECT version, value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ?",
            )
            .await?,
            relay_rows_serial,
            ledger_page: read(
                "SELECT value FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq < ? ORDER BY kind DESC, seq DESC LIMIT ?",
            )
            .await?,
            relay_rows: read("SELECT kind, seq, key, value FROM accounts WHERE program_id = ? AND account_id = ? AND kind >= ? AND kind <= ?").await?,
            create_account: write(
                "INSERT INTO accounts (program_id, account_id, kind, seq, key, version, value, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            update_account: write(
                "UPDATE accounts SET version = ?, value = ?, last_seq = ? WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF version = ? AND last_seq = ?",
            )
            .await?,
            insert_row_if_absent: write(
                "INSERT INTO accounts (program_id, account_id, kind, seq, key, version, value) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            update_row_if_version: write(
                "UPDATE accounts SET version = ?, value = ? WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ? IF version = ?",
            )
            .await?,
            insert_row: write("INSERT INTO accounts (program_id, account_id, kind, seq, key, value) VALUES (?, ?, ?, ?, ?, ?)").await?,
            delete_row: write("DELETE FROM accounts WHERE program_id = ? AND account_id = ? AND kind = ? AND seq = ? AND key = ?").await?,
            claimants: quorum("SELECT account_id FROM claimants WHERE program_id = ? AND kind = ? AND id = ?", profiles.read.clone()).await?,
            claimant_add: quorum("INSERT INTO claimants (program_id, kind, id, account_id) VALUES (?, ?, ?, ?)", profiles.write.clone()).await?,
            arbiter: read("SELECT account_id, since FROM claim_arbiters WHERE program_id = ? AND kind = ? AND id = ?").await?,
            arbiter_take: write("INSERT INTO claim_arbiters (program_id, kind, id, account_id, since) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS")
                .await?,
            arbiter_takeover: write(
                "UPDATE claim_arbiters SET account_id = ?, since = ? WHERE program_id = ? AND kind = ? AND id = ? IF account_id = ? AND since = ?",
            )
            .await?,
            index_account: write("INSERT INTO account_index (program_id, bucket, account_id) VALUES (?, ?, ?)").await?,
            index_page: read("SELECT account_id FROM account_index WHERE program_id = ? AND bucket = ? AND account_id > ? LIMIT ?").await?,
            mark: write("INSERT INTO relay_marks (program_id, minute, shard, account_id, version) VALUES (?, ?, ?, ?, ?)").await?,
            marks: read("SELECT account_id, version FROM relay_marks WHERE program_id = ? AND minute = ? AND shard = ?").await?,
            unmark: write("DELETE FROM relay_marks WHERE program_id = ? AND minute = ? AND shard = ? AND account_id = ? AND version = ?").await?,
            outbox_insert: write("INSERT INTO outbox (program_id, hour, seq, event_id, event) VALUES (?, ?, ?, ?, ?)").await?,
            outbox_range: read(
                "SELECT seq, event_id, event FROM outbox WHERE program_id = ? AND hour = ? AND seq > ? AND seq <= ? LIMIT ?",
            )
            .await?,
            outbox_at: read("SELECT seq, event_id, event FROM outbox WHERE program_id = ? AND hour = ? AND seq = ?").await?,
            outbox_hour: write("INSERT INTO outbox_hours (program_id, hour) VALUES (?, ?)").await?,
            outbox_hours: read("SELECT hour FROM outbox_hours WHERE program_id = ? AND hour >= ? LIMIT ?").await?,
            credit_insert: write("INSERT INTO credits (program_id, credit_id, credit) VALUES (?, ?, ?)").await?,
            credits: read("SELECT credit FROM credits WHERE program_id = ? LIMIT ?").await?,
            credit_delete: write("DELETE FROM credits WHERE program_id = ? AND credit_id = ?").await?,
            rules_head: read("SELECT head FROM rules WHERE program_id = ? AND version = ?").await?,
            rules_version: read("SELECT rules FROM rules WHERE program_id = ? AND version = ?").await?,
            rules_head_create: write("INSERT INTO rules (program_id, version, head) VALUES (?, ?, ?) IF NOT EXISTS").await?,
            rules_head_move: write("UPDATE rules SET head = ? WHERE program_id = ? AND version = ? IF head = ?").await?,
            rules_insert: write("INSERT INTO rules (program_id, version, rules) VALUES (?, ?, ?)").await?,
            figures: read("SELECT through_seq, document FROM figures WHERE program_id = ?").await?,
            figures_create: write("INSERT INTO figures (program_id, through_seq, document) VALUES (?, ?, ?) IF NOT EXISTS").await?,
            figures_move: write("UPDATE figures SET through_seq = ?, document = ? WHERE program_id = ? IF through_seq = ?").await?,
        })
    }

    /// An empty batch for one partition: LOGGED (atomic), LOCAL_QUORUM, the profiles' serial
    /// consistency for its conditions, idempotent (see the module documentation).
    pub fn batch(profiles: &Profiles) -> Batch {
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_execution_profile_handle(Some(profiles.write.clone()));
        batch.set_consistency(Consistency::LocalQuorum);
        batch.set_serial_consistency(Some(profiles.serial));
        batch.set_is_idempotent(true);
        batch
    }

    /// An UNLOGGED batch: several plain writes to one partition in one request.
    pub fn unlogged(profiles: &Profiles) -> Batch {
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_execution_profile_handle(Some(profiles.write.clone()));
        batch.set_consistency(Consistency::LocalQuorum);
        batch.set_is_idempotent(true);
        batch
    }
}

async fn prepare(session: &Session, cql: &'static str, profile: &ExecutionProfileHandle) -> Result<PreparedStatement, StoreError> {
    let mut statement = session.prepare(cql).await.map_err(|error| StoreError::Io(format!("prepare `{cql}`: {error}")))?;
    statement.set_execution_profile_handle(Some(profile.clone()));
    statement.set_is_idempotent(true);
    Ok(statement)
}
