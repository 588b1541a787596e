//! The ScyllaDB backend: any number of stateless engine processes over one cluster, with the
//! embedded store's guarantees. `docs/scylla.md` has the data model and why it is correct; in short:
//!
//! - Everything one checkout call changes in an account lives in the account's partition (the
//!   account row, its ledger, its receipts, the call's events and credits), so one single-partition
//!   conditional batch, one Paxos round, commits the whole call: the account row is written only
//!   `IF version = <read version> AND last_seq = <its last ledger entry>` (and the receipt row only
//!   `IF version = <read version>`), which is what stops two engine processes from spending the
//!   same points.
//! - What must be unique across accounts (a receipt ID, a phone or card, an enrolment request) is
//!   claimed when a call first uses it, without a lightweight transaction of its own: the account
//!   writes itself into the claim's `claimants` partition, reads it back, and if it is alone, its
//!   batch makes the claim its own for good by writing the claim's fence row (`IF NOT EXISTS`). So
//!   every call costs one Paxos round. Claimants that meet settle it by their fences, through an
//!   arbiter row in `claim_arbiters` when two are still open (`ScyllaStore::claim`).
//! - Events and credits owed to other accounts are written in the batch, inside the account's
//!   partition, and then relayed to the program-wide `outbox` and `credits` tables
//!   (`relay`): atomic with the money, delivered at least once.

mod migrate;
mod relay;
mod session;
mod statements;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures_util::future::try_join_all;
use loyalty_core::account::AccountState;
use loyalty_core::events::PendingCredit;
use loyalty_core::identity::IdentityKey;
use loyalty_core::ledger::LedgerEntry;
use loyalty_core::receipt::{CallRecord, ReceiptState};
use scylla::client::session::Session;
use scylla::response::query_result::QueryResult;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

pub use self::migrate::{SCHEMA_VERSION, create_keyspace, migrate, schema_version, statements as migration_statements};
pub use self::session::ScyllaConfig;
use self::statements::{Profiles, Statements, claim, kind};
use crate::clock::Clock;
use crate::codec::{decode, encode};
use crate::{AccountPage, Commit, CommitOutcome, Conflict, OutboxRecord, Store, StoreError, StoredFigures, StoredRules, Versioned};

/// Receipt owners kept in memory (a checkout's later calls skip the claim read); cleared when full.
const RECEIPT_OWNERS_MAX: usize = 1_000_000;

/// Buckets of the account index: the sweep reads them one after another.
const INDEX_BUCKETS: i32 = 64;

pub(crate) fn io<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |error| StoreError::Io(format!("{what}: {error}"))
}

/// The ScyllaDB-backed store. Cheap to share behind an `Arc`.
pub struct ScyllaStore {
    session: Arc<Session>,
    statements: Statements,
    profiles: Profiles,
    config: ScyllaConfig,
    /// The engine's clock: relay marks and outbox seqs, arbiter leases, delete timestamps.
    clock: Arc<dyn Clock>,
    closed: AtomicBool,
    /// This store, for background relays.
    me: std::sync::Weak<ScyllaStore>,
    /// Per program, the first minute of relay marks the recovery pass has not cleared yet.
    relay_watermarks: dashmap::DashMap<String, u64>,
    /// (program, hour) pairs this process has recorded in `outbox_hours`.
    outbox_hours_written: dashmap::DashSet<(String, u64)>,
    /// (program, receipt) -> owner, for receipts found in their owner's partition.
    receipt_owners: dashmap::DashMap<(String, String), String>,
    /// (program, account) partitions where a commit of this process failed with its outcome
    /// unknown (a timeout, a lost connection). A Paxos round may have been accepted by a replica
    /// and not yet learned: a later LWT or SERIAL read completes it, a LOCAL_QUORUM read does not
    /// see it. So until one SERIAL read of the partition succeeds, its rows are read at SERIAL, and
    /// the call's retry finds its own commit if it applied (Cassandra's Paxos; see docs/scylla.md).
    uncertain: dashmap::DashSet<(String, String)>,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore").field("nodes", &self.config.nodes).field("keyspace", &self.config.keyspace).finish_non_exhaustive()
    }
}

/// Who holds a claim after trying to take it.
enum ClaimResult {
    /// Ours. `fence`: the fence row the commit's batch must create (`IF NOT EXISTS`), or `None`
    /// when an earlier commit of ours holds it already.
    Ours {
        fence: Option<String>,
    },
    Theirs(String),
}

/// The state of a claim's fence row in the owner's partition.
#[derive(Debug, PartialEq, Eq)]
enum Fence {
    /// Not written: the owner's commit has not applied (yet).
    Absent,
    /// Written by the owner's commit, in its batch: the claim is the owner's for good.
    Held,
    /// Written by a taker: no commit of the owner can use the claim any more.
    Revoked,
}

const FENCE_HELD: &[u8] = b"held";
const FENCE_REVOKED: &[u8] = b"revoked";

fn fence_of(value: Option<&[u8]>) -> Fence {
    match value {
        None => Fence::Absent,
        Some(FENCE_HELD) => Fence::Held,
        Some(_) => Fence::Revoked,
    }
}

impl ScyllaStore {
    /// Connects, checks that the keyspace has the schema this build writes (see [`migrate`]) and
    /// prepares every statement. The store tells the time by `clock` alone (see [`Clock`] for what
    /// it reads it for): the engine passes its own.
    pub async fn connect(config: ScyllaConfig, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StoreError> {
        let profiles = session::profiles(&config);
        let session = session::connect(&config, &profiles, Some(&config.keyspace)).await?;
        let found = schema_version(&session).await?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "keyspace {} has schema version {found}, this build needs {SCHEMA_VERSION}: run `loyalty-engine migrate`",
                config.keyspace
            )));
        }
        let statements = Statements::prepare(&session, &profiles).await?;
        let session = Arc::new(session);
        session::spawn_metrics_export(&session, std::time::Duration::from_secs(5));
        Ok(Arc::new_cyclic(|me| ScyllaStore {
            session,
            statements,
            profiles,
            config,
            clock,
            closed: AtomicBool::new(false),
            me: me.clone(),
            relay_watermarks: dashmap::DashMap::new(),
            outbox_hours_written: dashmap::DashSet::new(),
            receipt_owners: dashmap::DashMap::new(),
            uncertain: dashmap::DashSet::new(),
        }))
    }

    /// Whether requests are routed to the replicas that own their data: every statement knows
    /// its partition key, and the driver knows the keyspace's replication.
    pub fn token_aware(&self) -> bool {
        self.statements.account_row.is_token_aware()
            && self.statements.claimants.is_token_aware()
            && self.session.get_cluster_state().get_keyspace(&self.config.keyspace).is_some()
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) { Err(StoreError::Closed) } else { Ok(()) }
    }

    /// The engine's clock in milliseconds since the epoch, for arbiter leases: no guarantee rests on
    /// it (fences do that), only how soon the claim of a dead holder is taken over.
    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// The timestamp of deletes made by [`Self::delete_for_good`]: now plus a minute, in
    /// microseconds (CQL write timestamps).
    fn tombstone_timestamp(&self) -> i64 {
        self.clock.now().timestamp_micros() + 60_000_000
    }

    /// A pause before sending a statement again after a CAS timeout, so that contenders spread out:
    /// 5 ms per attempt so far plus 0-9 ms of jitter (the clock's nanoseconds: no randomness is
    /// needed, only that contenders differ).
    fn cas_backoff(&self, sent: u32) -> std::time::Duration {
        let jitter = u64::from(self.clock.now().timestamp_subsec_nanos() % 10);
        std::time::Duration::from_millis(5 * u64::from(sent) + jitter)
    }

    async fn run(&self, statement: &PreparedStatement, values: Vec<CqlValue>) -> Result<QueryResult, StoreError> {
        self.check_open()?;
        self.session.execute_unpaged(statement, values).await.map_err(io("scylla request"))
    }

    /// Runs a conditional statement of a contended claim (an arbiter take, a revocation) or of a
    /// figures write, sending it again when the coordinator gave up on its Paxos round (a CAS
    /// write timeout: rivals' rounds on one partition time each other out), up to `CAS_SENDS_MAX`
    /// times. A resend of one that did apply finds its own row and is not applied, which the
    /// callers read as done: the arbiter names us, the fence says revoked, the figures are ours.
    async fn run_lwt(&self, statement: &PreparedStatement, values: Vec<CqlValue>) -> Result<QueryResult, StoreError> {
        self.check_open()?;
        let mut sent = 0;
        loop {
            sent += 1;
            match self.session.execute_unpaged(statement, &values).await {
                Ok(result) => return Ok(result),
                Err(error) if cas_timeout(&error) && sent < CAS_SENDS_MAX => tokio::time::sleep(self.cas_backoff(sent)).await,
                Err(error) => return Err(io("scylla conditional request")(error)),
            }
        }
    }

    /// Runs a delete of rows that were written once and are never written again under the same
    /// key, with a client timestamp a minute ahead: lightweight transactions write with the Paxos
    /// ballot's timestamp, other writes with their coordinator's clock, so a plain delete could
    /// otherwise carry an older timestamp than the row (clock skew) and not delete it.
    async fn delete_for_good(&self, statement: &PreparedStatement, values: Vec<CqlValue>) -> Result<(), StoreError> {
        let mut statement = statement.clone();
        statement.set_timestamp(Some(self.tombstone_timestamp()));
        self.run(&statement, values).await.map(|_| ())
    }

    /// The rows a statement returns, as untyped values.
    async fn rows(&self, statement: &PreparedStatement, values: Vec<CqlValue>) -> Result<Vec<Row>, StoreError> {
        let result = self.run(statement, values).await?;
        let rows = result.into_rows_result().map_err(io("scylla result"))?;
        rows.rows::<Row>().map_err(io("scylla rows"))?.collect::<Result<Vec<_>, _>>().map_err(io("scylla row"))
    }

    /// `account_row` at SERIAL (a Paxos round of its own, so it may meet contention too: a read
    /// the coordinator gave up on is sent again, up to `CAS_SENDS_MAX` times).
    async fn serial_rows(&self, values: Vec<CqlValue>) -> Result<Vec<Row>, StoreError> {
        self.check_open()?;
        let mut sent = 0;
        loop {
            sent += 1;
            paxos("serial_read");
            match self.session.execute_unpaged(&self.statements.account_row_serial, &values).await {
                Ok(result) => {
                    let rows = result.into_rows_result().map_err(io("scylla result"))?;
                    return rows.rows::<Row>().map_err(io("scylla rows"))?.collect::<Result<Vec<_>, _>>().map_err(io("scylla row"));
                }
                Err(error) if cas_timeout(&error) && sent < CAS_SENDS_MAX => tokio::time::sleep(self.cas_backoff(sent)).await,
                Err(error) => return Err(io("scylla serial read")(error)),
            }
        }
    }

    /// One row of the account's partition: (version, value). At SERIAL while the partition has a
    /// commit of unknown outcome (`uncertain`), which the first successful SERIAL read settles.
    async fn row(&self, program_id: &str, account_id: &str, kind: i8, key: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let partition = (program_id.to_owned(), account_id.to_owned());
        if !self.uncertain.contains(&partition) {
            return self.row_at(false, program_id, account_id, kind, key).await;
        }
        let row = self.row_at(true, program_id, account_id, kind, key).await?;
        self.uncertain.remove(&partition);
        Ok(row)
    }

    /// One row of the account's partition, read at LOCAL_QUORUM or (`serial`) at SERIAL.
    async fn row_at(
        &self,
        serial: bool,
        program_id: &str,
        account_id: &str,
        kind: i8,
        key: &str,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let values = vec![text(program_id), text(account_id), CqlValue::TinyInt(kind), CqlValue::BigInt(0), text(key)];
        let rows = if serial { self.serial_rows(values).await? } else { self.rows(&self.statements.account_row, values).await? };
        match rows.into_iter().next() {
            None => Ok(None),
            Some(row) => {
                let version = column(&row, 0).map(as_u64).transpose()?.unwrap_or(0);
                let value = column(&row, 1).map(as_blob).transpose()?.ok_or_else(|| StoreError::Corrupt("row without value".into()))?;
                Ok(Some((version, value)))
            }
        }
    }

    /// The holder of a contended claim's arbiter row and since when (engine clock, ms), if any.
    async fn arbiter(&self, program_id: &str, kind: &str, id: &str) -> Result<Option<(String, i64)>, StoreError> {
        let rows = self.rows(&self.statements.arbiter, vec![text(program_id), text(kind), text(id)]).await?;
        match rows.first() {
            None => Ok(None),
            Some(row) => {
                let holder =
                    column(row, 0).map(as_text).transpose()?.ok_or_else(|| StoreError::Corrupt("arbiter without holder".into()))?;
                let since = column(row, 1).map(as_u64).transpose()?.unwrap_or(0);
                Ok(Some((holder, i64::try_from(since).unwrap_or(i64::MAX))))
            }
        }
    }

    /// Every account that ever put itself forward for a claim. At most one of them holds its fence.
    async fn claimants(&self, program_id: &str, kind: &str, id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.rows(&self.statements.claimants, vec![text(program_id), text(kind), text(id)]).await?;
        rows.iter().filter_map(|row| column(row, 0).map(as_text)).collect()
    }

    /// The fence of `owner`'s claim `fence_key` (`<kind>/<id>`).
    async fn fence(&self, program_id: &str, owner: &str, fence_key: &str) -> Result<Fence, StoreError> {
        Ok(fence_of(self.row(program_id, owner, kind::FENCE, fence_key).await?.as_ref().map(|(_, value)| value.as_slice())))
    }

    /// The claimant of `id` whose fence is held: the claim's owner for good, if any.
    async fn holder(&self, program_id: &str, kind: &str, id: &str) -> Result<Option<String>, StoreError> {
        let fence_key = format!("{kind}/{id}");
        for claimant in self.claimants(program_id, kind, id).await? {
            if self.fence(program_id, &claimant, &fence_key).await? == Fence::Held {
                return Ok(Some(claimant));
            }
        }
        Ok(None)
    }

    /// Fences `owner` off a claim it holds but has not used: writes the fence row as revoked unless
    /// the owner's commit wrote it first. Both are lightweight transactions on the owner's
    /// partition, so exactly one of them wins: either the owner's commit applied (and the claim is
    /// its for good), or it never will.
    async fn revoke(&self, program_id: &str, owner: &str, fence_key: &str) -> Result<Fence, StoreError> {
        let values = vec![
            text(program_id),
            text(owner),
            CqlValue::TinyInt(kind::FENCE),
            big(0),
            text(fence_key),
            big(0),
            CqlValue::Blob(FENCE_REVOKED.to_vec()),
        ];
        paxos("revoke");
        match lwt(self.run_lwt(&self.statements.insert_row_if_absent, values).await?)? {
            Lwt::Applied => Ok(Fence::Revoked),
            Lwt::NotApplied(current) => match current.get("value") {
                Some(CqlValue::Blob(value)) => Ok(fence_of(Some(value))),
                _ => self.fence(program_id, owner, fence_key).await,
            },
        }
    }

    /// Claims `id` for `account_id`, without a lightweight transaction unless someone contends.
    ///
    /// The account writes itself into the claim's `claimants` partition (a plain write at quorum),
    /// then reads the partition (at quorum). Of two claimants, the one whose write completed last
    /// started its read after the other's write had completed, so it sees the other: two claimants
    /// never both find themselves alone. Alone, the claim is ours: the commit's batch writes its
    /// fence `IF NOT EXISTS` in the same Paxos round as everything else, and a rival that comes
    /// later finds us and our fence. Not alone, the others' fences decide: one held is the owner;
    /// revoked ones gave up; open ones (a commit in flight, or one that failed) go to the arbiter.
    ///
    /// `earlier`: the fence keys of the claims this commit took before this one. Before it goes to
    /// the arbiter (and may fence a rival off), the commit checks that none of its own earlier
    /// fences was revoked: a rival seen here finished its earlier claims before it wrote itself
    /// here, so if it fenced us off one of them, we see that now and give way instead of fencing
    /// it off this one. Two commits therefore never fence each other off on two claims they share.
    async fn claim(
        &self,
        program_id: &str,
        kind: &'static str,
        id: &str,
        account_id: &str,
        earlier: &[String],
    ) -> Result<ClaimResult, StoreError> {
        let fence_key = format!("{kind}/{id}");
        let (added, own_fence) = futures_util::future::join(
            self.run(&self.statements.claimant_add, vec![text(program_id), text(kind), text(id), text(account_id)]),
            self.fence(program_id, account_id, &fence_key),
        )
        .await;
        added?;
        let fence = match own_fence? {
            Fence::Held => return Ok(ClaimResult::Ours { fence: None }),
            Fence::Absent => Some(fence_key.clone()),
            // We were fenced off it (or gave it up): the claim is not ours to use, ever.
            Fence::Revoked => None,
        };
        let others: Vec<String> = self.claimants(program_id, kind, id).await?.into_iter().filter(|other| other != account_id).collect();
        if others.is_empty() {
            return Ok(match fence {
                Some(_) => ClaimResult::Ours { fence },
                None => ClaimResult::Theirs(account_id.to_owned()),
            });
        }
        metrics::counter!("loyalty_scylla_claims_contended_total", "kind" => kind).increment(1);
        let fences = try_join_all(others.iter().map(|other| self.fence(program_id, other, &fence_key))).await?;
        let open: Vec<&String> = others.iter().zip(&fences).filter(|(_, fence)| **fence == Fence::Absent).map(|(other, _)| other).collect();
        if let Some((owner, _)) = others.iter().zip(&fences).find(|(_, fence)| **fence == Fence::Held) {
            return Ok(ClaimResult::Theirs(owner.clone()));
        }
        if fence.is_none() {
            return Ok(ClaimResult::Theirs(open.first().map_or(account_id, |other| other.as_str()).to_owned()));
        }
        if open.is_empty() {
            return Ok(ClaimResult::Ours { fence });
        }
        // At SERIAL: a revocation is a Paxos round, possibly committed in another data center.
        let own_earlier = try_join_all(earlier.iter().map(|key| self.row_at(true, program_id, account_id, kind::FENCE, key))).await?;
        if own_earlier.iter().any(|row| fence_of(row.as_ref().map(|(_, value)| value.as_slice())) == Fence::Revoked) {
            return Ok(ClaimResult::Theirs(open[0].clone()));
        }
        // Another claimant's commit may still apply. The arbiter row picks which of us fences
        // the others off; fencing both of us off would leave the claim to nobody.
        if let Some(owner) = self.arbitrate(program_id, kind, id, account_id).await? {
            return Ok(ClaimResult::Theirs(owner));
        }
        for other in open {
            if self.revoke(program_id, other, &fence_key).await? == Fence::Held {
                return Ok(ClaimResult::Theirs(other.clone()));
            }
        }
        Ok(ClaimResult::Ours { fence })
    }

    /// The arbiter of a contended claim: its `claim_arbiters` row, won with `INSERT ... IF NOT
    /// EXISTS`. Returns the holder if another account holds it. A holder whose commit has not
    /// come within [`ARBITER_LEASE_MS`] (its engine died) is fenced off and the arbiter taken over.
    async fn arbitrate(&self, program_id: &str, kind: &'static str, id: &str, account_id: &str) -> Result<Option<String>, StoreError> {
        let fence_key = format!("{kind}/{id}");
        let values = vec![text(program_id), text(kind), text(id), text(account_id), CqlValue::BigInt(self.now_ms())];
        paxos("arbiter");
        let mut current = match lwt(self.run_lwt(&self.statements.arbiter_take, values).await?)? {
            Lwt::Applied => return Ok(None),
            Lwt::NotApplied(row) => self.arbiter_in(row, program_id, kind, id).await?,
        };
        let lease = self.arbiter_lease_ms();
        for _ in 0..3 {
            let Some((holder, since)) = current else {
                return Err(StoreError::Io(format!("claim {kind} {id}: arbiter not taken and not held")));
            };
            if holder == account_id {
                return Ok(None);
            }
            // The holder's commit may still come: fencing it off now could leave the claim to
            // nobody (it fences us off meanwhile), so it is theirs while the lease runs.
            if self.now_ms().saturating_sub(since) < lease || self.revoke(program_id, &holder, &fence_key).await? == Fence::Held {
                return Ok(Some(holder));
            }
            let values = vec![
                text(account_id),
                CqlValue::BigInt(self.now_ms()),
                text(program_id),
                text(kind),
                text(id),
                text(&holder),
                CqlValue::BigInt(since),
            ];
            paxos("arbiter");
            current = match lwt(self.run_lwt(&self.statements.arbiter_takeover, values).await?)? {
                Lwt::Applied => {
                    metrics::counter!("loyalty_scylla_claim_takeovers_total", "kind" => kind).increment(1);
                    return Ok(None);
                }
                Lwt::NotApplied(row) => self.arbiter_in(row, program_id, kind, id).await?,
            };
        }
        Err(StoreError::Io(format!("claim {kind} {id}: arbiter keeps changing hands")))
    }

    /// The arbiter's holder as a failed conditional write returned it (the row Paxos decided on),
    /// else as read at quorum.
    async fn arbiter_in(
        &self,
        row: std::collections::HashMap<String, CqlValue>,
        program_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        match (row.get("account_id"), row.get("since")) {
            (Some(CqlValue::Text(holder)), Some(since)) => Ok(Some((holder.clone(), i64::try_from(as_u64(since)?).unwrap_or(i64::MAX)))),
            _ => self.arbiter(program_id, kind, id).await,
        }
    }

    /// How long an arbiter's holder may take to commit before a rival fences it off: at least
    /// [`ARBITER_LEASE_MS`], and longer than the slowest commit the engine still waits for (its
    /// attempts, each up to `CAS_SENDS_MAX` sends of the request timeout).
    fn arbiter_lease_ms(&self) -> i64 {
        let slowest = self.config.request_timeout.as_millis().saturating_mul(u128::from(CAS_SENDS_MAX) * 8);
        ARBITER_LEASE_MS.max(i64::try_from(slowest).unwrap_or(i64::MAX))
    }

    /// Takes every claim the commit needs, one after another in one order for every commit:
    /// identifiers (by key), then the enrolment request, then the receipt (so that a commit refused
    /// for an identifier does not put the account forward for its receipt). Two commits that
    /// contend for two same things thus meet on them in the same order, which is what lets
    /// [`Self::claim`] keep them from fencing each other off (see there). Returns the fence rows
    /// the batch must create, or the first claim that is another account's.
    async fn take_claims(&self, commit: &Commit) -> Result<Result<Vec<String>, Conflict>, StoreError> {
        let program_id = commit.program_id.as_str();
        let account_id = commit.account.state.account_id.as_str();
        let mut identities: Vec<(String, &IdentityKey)> = commit.identity_claims.iter().map(|key| (key.storage_key(), key)).collect();
        identities.sort_by(|a, b| a.0.cmp(&b.0));
        identities.dedup_by(|a, b| a.0 == b.0);
        let mut taken: Vec<String> = Vec::new();
        let mut fences = Vec::new();
        for (storage_key, key) in &identities {
            match self.claim(program_id, claim::IDENTITY, storage_key, account_id, &taken).await? {
                ClaimResult::Theirs(owner) => return Ok(Err(Conflict::IdentityTaken { key: (*key).clone(), account_id: owner })),
                ClaimResult::Ours { fence } => fences.extend(fence),
            }
            taken.push(format!("{}/{storage_key}", claim::IDENTITY));
        }
        if let Some(request) = &commit.request {
            match self.claim(program_id, claim::REQUEST, &request.request_id, account_id, &taken).await? {
                ClaimResult::Theirs(_) => return Ok(Err(Conflict::RequestTaken)),
                ClaimResult::Ours { fence } => fences.extend(fence),
            }
            taken.push(format!("{}/{}", claim::REQUEST, request.request_id));
        }
        if let Some(receipt) = commit.receipt.as_ref().filter(|receipt| receipt.expected_version == 0) {
            match self.claim(program_id, claim::RECEIPT, &receipt.state.receipt_id, account_id, &taken).await? {
                ClaimResult::Theirs(owner) => return Ok(Err(Conflict::ReceiptTaken { account_id: owner })),
                ClaimResult::Ours { fence } => fences.extend(fence),
            }
        }
        Ok(Ok(fences))
    }

    /// The single-partition conditional batch of a commit, and its values.
    fn commit_batch(
        &self,
        commit: &Commit,
        fences: &[String],
    ) -> Result<(scylla::statement::batch::Batch, Vec<Vec<CqlValue>>), StoreError> {
        let st = &self.statements;
        let program = commit.program_id.as_str();
        let state = &commit.account.state;
        let account = state.account_id.as_str();
        let new_version = commit.account.expected_version + 1;
        let mut batch = Statements::batch(&self.profiles);
        let mut values = Vec::new();
        let pk = |kind: i8, seq: u64, key: &str| vec![text(program), text(account), CqlValue::TinyInt(kind), big(seq), text(key)];
        let account_seq = state.ledger_seq;
        let previous_seq = account_seq.saturating_sub(commit.ledger.len() as u64);
        if commit.account.expected_version == 0 {
            batch.append_statement(st.create_account.clone());
            let mut row = pk(kind::ACCOUNT, 0, "");
            row.extend([big(1), CqlValue::Blob(encode(state)?), big(account_seq)]);
            values.push(row);
        } else {
            // The ledger's last seq is part of the condition: the entries can only continue it.
            batch.append_statement(st.update_account.clone());
            let mut row = vec![big(new_version), CqlValue::Blob(encode(state)?), big(account_seq)];
            row.extend(pk(kind::ACCOUNT, 0, ""));
            row.extend([big(commit.account.expected_version), big(previous_seq)]);
            values.push(row);
        }
        let mut conditional = |batch: &mut scylla::statement::batch::Batch, kind: i8, key: &str, expected: u64, value: Vec<u8>| {
            if expected == 0 {
                batch.append_statement(st.insert_row_if_absent.clone());
                let mut row = pk(kind, 0, key);
                row.extend([big(1), CqlValue::Blob(value)]);
                values.push(row);
            } else {
                batch.append_statement(st.update_row_if_version.clone());
                let mut row = vec![big(expected + 1), CqlValue::Blob(value)];
                row.extend(pk(kind, 0, key));
                row.push(big(expected));
                values.push(row);
            }
        };
        if let Some(receipt) = &commit.receipt {
            conditional(&mut batch, kind::RECEIPT, &receipt.state.receipt_id, receipt.expected_version, encode(&receipt.state)?);
        }
        // An enrolment's answer is written once: a second commit with the request ID is refused.
        if let Some(request) = &commit.request {
            conditional(&mut batch, kind::REQUEST, &request.request_id, 0, encode(&request.record)?);
        }
        // The claims this commit uses become the account's for good, unless a taker fenced it off.
        for fence in fences {
            conditional(&mut batch, kind::FENCE, fence, 0, FENCE_HELD.to_vec());
        }
        let mut plain = |kind: i8, seq: u64, key: &str, value: Vec<u8>| {
            batch.append_statement(st.insert_row.clone());
            let mut row = pk(kind, seq, key);
            row.push(CqlValue::Blob(value));
            values.push(row);
        };
        for entry in &commit.ledger {
            plain(kind::LEDGER, entry.seq, "", encode(entry)?);
        }
        for (index, event) in commit.events.iter().enumerate() {
            plain(kind::EVENT, new_version, &relay::event_key(index), encode(event)?);
        }
        for credit in &commit.credits {
            plain(kind::CREDIT, new_version, &credit.credit_id, encode(credit)?);
        }
        // A released identifier's fence is revoked: lookups stop finding the account, and the next
        // claimant takes the claim over as from an owner that never used it.
        for key in &commit.identity_releases {
            plain(kind::FENCE, 0, &format!("{}/{}", claim::IDENTITY, key.storage_key()), FENCE_REVOKED.to_vec());
        }
        Ok((batch, values))
    }

    /// After a batch that did not apply: which condition failed.
    async fn conflict_after(&self, commit: &Commit) -> Result<Conflict, StoreError> {
        let program = commit.program_id.as_str();
        let account = commit.account.state.account_id.as_str();
        let stored = self.account(program, account).await?;
        let actual = stored.as_ref().map_or(0, |stored| stored.version);
        if actual != commit.account.expected_version {
            return Ok(Conflict::AccountVersion { actual });
        }
        if let Some(stored) = &stored {
            let previous_seq = commit.account.state.ledger_seq.saturating_sub(commit.ledger.len() as u64);
            if stored.value.ledger_seq != previous_seq {
                return Err(StoreError::Corrupt(format!(
                    "commit for account {account} continues ledger entry {previous_seq}, the stored ledger ends at {}",
                    stored.value.ledger_seq
                )));
            }
        }
        if let Some(receipt) = &commit.receipt {
            let actual = self.row(program, account, kind::RECEIPT, &receipt.state.receipt_id).await?.map_or(0, |(version, _)| version);
            if actual != receipt.expected_version {
                return Ok(Conflict::ReceiptVersion { actual });
            }
        }
        if let Some(request) = &commit.request
            && self.row(program, account, kind::REQUEST, &request.request_id).await?.is_some()
        {
            return Ok(Conflict::RequestTaken);
        }
        // Everything matches again (a competing commit came and went?): the caller re-reads.
        Ok(Conflict::AccountVersion { actual })
    }

    /// After a figures write that did not apply: whether the stored figures are exactly `figures`
    /// (see [`Store::put_figures`]: a repeated put is answered true), as when an earlier send of
    /// the same idempotent statement applied (a resend after a CAS timeout, by [`Self::run_lwt`]
    /// or by the driver) and this one then failed its own condition. As `put_rules` decides: by
    /// reading them back, unless the `through_seq` the failed write returned (the value Paxos
    /// decided on) already shows other figures.
    async fn figures_were_ours(
        &self,
        program_id: &str,
        figures: &StoredFigures,
        current: &std::collections::HashMap<String, CqlValue>,
    ) -> Result<bool, StoreError> {
        if let Some(stored) = current.get("through_seq")
            && as_u64(stored)? != figures.through_seq
        {
            return Ok(false);
        }
        Ok(self.figures(program_id).await?.is_some_and(|stored| stored == *figures))
    }

    /// After the coordinator gave up on a commit's Paxos round (a CAS write timeout), whether the
    /// batch applied. The SERIAL read of the account row first completes or supersedes any round
    /// left half-done on the partition, so what it returns is final for this batch: the account
    /// still at the version the commit read means it did not apply and never will (`None`: send
    /// it again); the commit's own receipt (or request, or account) row holding exactly its bytes
    /// means it applied (`Some(true)`); anything else is a conflict (`Some(false)`).
    async fn settle(&self, commit: &Commit) -> Result<Option<bool>, StoreError> {
        let program = commit.program_id.as_str();
        let account = commit.account.state.account_id.as_str();
        let expected = commit.account.expected_version;
        let stored = self.row_at(true, program, account, kind::ACCOUNT, "").await?;
        let stored_version = stored.as_ref().map_or(0, |(version, _)| *version);
        if stored_version == expected {
            return Ok(None);
        }
        // A receipt's row (an enrolment's request row) is written only by the commits of its own
        // call, and our bytes carry our call's answer: ours if it holds them at our version,
        // whatever the account did since. A commit with neither is ours if the account is.
        let ours = if let Some(receipt) = &commit.receipt {
            self.row_at(true, program, account, kind::RECEIPT, &receipt.state.receipt_id).await?
                == Some((receipt.expected_version + 1, encode(&receipt.state)?))
        } else if let Some(request) = &commit.request {
            self.row_at(true, program, account, kind::REQUEST, &request.request_id).await? == Some((1, encode(&request.record)?))
        } else {
            stored == Some((expected + 1, encode(&commit.account.state)?))
        };
        Ok(Some(ours))
    }
}

/// Counts a Paxos round sent (each resend too) in `loyalty_scylla_lwt_total`, by what sent it:
/// `commit` (the account's conditional batch), `revoke` (fencing a claimant off), `arbiter`
/// (a contended claim), `rules`, `figures`, `serial_read` (a SERIAL read runs a Paxos round too).
/// What a cluster runs out of first, so counted from the engine's side, per call.
fn paxos(what: &'static str) {
    metrics::counter!("loyalty_scylla_lwt_total", "statement" => what).increment(1);
}

/// The shortest time the holder of a contended claim's arbiter has to commit before another
/// claimant may fence it off (see [`ScyllaStore::arbiter_lease_ms`]).
const ARBITER_LEASE_MS: i64 = 30_000;

/// Sends of one conditional batch whose Paxos round the coordinator gave up on, before the store
/// answers the error (which the engine answers UNAVAILABLE, and the till retries).
const CAS_SENDS_MAX: u32 = 6;

/// A lightweight transaction the coordinator gave up on: a write timeout of type CAS. The
/// coordinator answered, so its round is over; what it left may still be completed by the next.
fn cas_timeout(error: &scylla::errors::ExecutionError) -> bool {
    use scylla::errors::{DbError, ExecutionError, RequestAttemptError, WriteType};
    matches!(
        error,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(DbError::WriteTimeout { write_type: WriteType::Cas, .. }, _))
    )
}

#[async_trait]
impl Store for ScyllaStore {
    async fn account(&self, program_id: &str, account_id: &str) -> Result<Option<Versioned<AccountState>>, StoreError> {
        let Some((version, bytes)) = self.row(program_id, account_id, kind::ACCOUNT, "").await? else {
            return Ok(None);
        };
        crate::checked_account(account_id, version, decode("account", &bytes)?).map(Some)
    }

    async fn identity(&self, program_id: &str, key: &IdentityKey) -> Result<Option<String>, StoreError> {
        // A claimant whose commit never applied (or was fenced off, or released it) binds nothing.
        self.holder(program_id, claim::IDENTITY, &key.storage_key()).await
    }

    async fn receipt(&self, program_id: &str, receipt_id: &str) -> Result<Option<Versioned<ReceiptState>>, StoreError> {
        let cache_key = (program_id.to_owned(), receipt_id.to_owned());
        let cached = self.receipt_owners.get(&cache_key).map(|owner| owner.clone());
        let candidates = match cached {
            Some(owner) => vec![owner],
            None => self.claimants(program_id, claim::RECEIPT, receipt_id).await?,
        };
        // The receipt row is written only by a commit that holds the claim's fence: the claimant
        // whose partition has it is the owner, for good.
        for owner in candidates {
            if let Some((version, bytes)) = self.row(program_id, &owner, kind::RECEIPT, receipt_id).await? {
                // The owner never changes again, so the next call on the receipt skips the claimants.
                if self.receipt_owners.len() >= RECEIPT_OWNERS_MAX {
                    self.receipt_owners.clear();
                }
                self.receipt_owners.insert(cache_key, owner);
                return Ok(Some(Versioned { version, value: decode("receipt", &bytes)? }));
            }
        }
        Ok(None)
    }

    async fn request(&self, program_id: &str, request_id: &str) -> Result<Option<CallRecord>, StoreError> {
        // Like a receipt, the answer is in the partition of the claimant whose commit applied.
        for owner in self.claimants(program_id, claim::REQUEST, request_id).await? {
            if let Some((_, bytes)) = self.row(program_id, &owner, kind::REQUEST, request_id).await? {
                return Ok(Some(decode("request", &bytes)?));
            }
        }
        Ok(None)
    }

    async fn ledger_page(&self, program_id: &str, account_id: &str, before_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        if before_seq <= 1 || limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let values = vec![text(program_id), text(account_id), CqlValue::TinyInt(kind::LEDGER), big(before_seq), CqlValue::Int(limit)];
        let rows = self.rows(&self.statements.ledger_page, values).await?;
        rows.iter().map(|row| decode("ledger entry", &column(row, 0).map(as_blob).transpose()?.unwrap_or_default())).collect()
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.check_open()?;
        commit.check_invariants()?;
        let started = std::time::Instant::now();
        let program = commit.program_id.as_str();
        let account = commit.account.state.account_id.as_str();
        let new_version = commit.account.expected_version + 1;
        let relays = !commit.events.is_empty() || !commit.credits.is_empty();
        let mark = relays.then(|| relay::Mark::at(self.clock.now(), account, new_version));
        // The relay mark and the index entry are written before the batch: once the batch applied,
        // its relay rows and the new account can always be found, whatever happens next (a mark
        // or index entry whose batch did not apply is harmless, see `relay`). They go out together,
        // beside the claims.
        let mark_write = async {
            match &mark {
                Some(mark) => mark.write(self, program).await,
                None => Ok(()),
            }
        };
        let index_write = async {
            if commit.account.expected_version == 0 {
                let values = vec![text(program), CqlValue::Int(bucket_of(account)), text(account)];
                self.run(&self.statements.index_account, values).await?;
            }
            Ok::<(), StoreError>(())
        };
        let (claims, written) =
            futures_util::future::join(self.take_claims(&commit), futures_util::future::try_join(mark_write, index_write)).await;
        written?;
        let fences = match claims? {
            Ok(fences) => fences,
            Err(conflict) => return Ok(CommitOutcome::Conflict(conflict)),
        };
        let (batch, values) = self.commit_batch(&commit, &fences)?;
        let mut sent = 0;
        let applied = loop {
            sent += 1;
            paxos("commit");
            match self.session.batch(&batch, &values).await {
                Ok(written) => break lwt(written)?,
                // The coordinator gave up on the Paxos round (contention, slow replicas): settle it.
                Err(error) if cas_timeout(&error) && sent < CAS_SENDS_MAX => match self.settle(&commit).await {
                    Ok(Some(true)) => break Lwt::Applied,
                    Ok(Some(false)) => break Lwt::NotApplied(Default::default()),
                    // Not applied, and after the SERIAL read it never will be: send it again.
                    Ok(None) => tokio::time::sleep(self.cas_backoff(sent)).await,
                    Err(settle_error) => {
                        self.uncertain.insert((program.to_owned(), account.to_owned()));
                        return Err(StoreError::Io(format!("scylla commit batch: {error}; settling it: {settle_error}")));
                    }
                },
                Err(error) => {
                    // Refused or lost: nothing is acknowledged, but the batch may still apply (a
                    // Paxos proposal accepted by one replica is completed by the next round).
                    self.uncertain.insert((program.to_owned(), account.to_owned()));
                    return Err(io("scylla commit batch")(error));
                }
            }
        };
        metrics::histogram!("loyalty_store_commit_seconds").record(started.elapsed().as_secs_f64());
        match applied {
            Lwt::Applied => {
                metrics::counter!("loyalty_store_commits_total").increment(1);
                if let Some(mark) = mark {
                    relay::after_commit(self, &commit, mark).await;
                }
                Ok(CommitOutcome::Applied { account_version: new_version })
            }
            Lwt::NotApplied(_) => Ok(CommitOutcome::Conflict(self.conflict_after(&commit).await?)),
        }
    }

    async fn latest_rules(&self, program_id: &str) -> Result<Option<StoredRules>, StoreError> {
        match self.rules_head(program_id).await? {
            0 => Ok(None),
            version => match self.rules_version(program_id, version).await? {
                Some(rules) => Ok(Some(rules)),
                None => Err(StoreError::Corrupt(format!("program {program_id}: rules version {version} missing"))),
            },
        }
    }

    async fn rules_head(&self, program_id: &str) -> Result<u64, StoreError> {
        let rows = self.rows(&self.statements.rules_head, vec![text(program_id), big(0)]).await?;
        Ok(rows.first().and_then(|row| column(row, 0)).map(as_u64).transpose()?.unwrap_or(0))
    }

    async fn rules_version(&self, program_id: &str, version: u64) -> Result<Option<StoredRules>, StoreError> {
        if version == 0 {
            return Ok(None);
        }
        let rows = self.rows(&self.statements.rules_version, vec![text(program_id), big(version)]).await?;
        match rows.first().and_then(|row| column(row, 0)).map(as_blob).transpose()? {
            Some(bytes) => Ok(Some(decode("rules", &bytes)?)),
            None => Ok(None),
        }
    }

    async fn put_rules(&self, program_id: &str, rules: StoredRules) -> Result<bool, StoreError> {
        self.check_open()?;
        if rules.version == 0 {
            return Ok(false);
        }
        let st = &self.statements;
        let mut batch = Statements::batch(&self.profiles);
        let mut values = Vec::new();
        if rules.version == 1 {
            batch.append_statement(st.rules_head_create.clone());
            values.push(vec![text(program_id), big(0), big(1)]);
        } else {
            batch.append_statement(st.rules_head_move.clone());
            values.push(vec![big(rules.version), text(program_id), big(0), big(rules.version - 1)]);
        }
        batch.append_statement(st.rules_insert.clone());
        values.push(vec![text(program_id), big(rules.version), CqlValue::Blob(encode(&rules)?)]);
        let version = rules.version;
        let mut sent = 0;
        let result = loop {
            sent += 1;
            paxos("rules");
            match self.session.batch(&batch, &values).await {
                Ok(result) => break result,
                // The batch is idempotent: sent again, its Paxos round first completes or
                // supersedes the one the coordinator gave up on, and `NotApplied` below tells.
                Err(error) if cas_timeout(&error) && sent < CAS_SENDS_MAX => tokio::time::sleep(self.cas_backoff(sent)).await,
                Err(error) => return Err(io("scylla rules batch")(error)),
            }
        };
        match lwt(result)? {
            Lwt::Applied => Ok(true),
            // The driver may have sent the batch twice (it is idempotent): if the version stored is
            // exactly this one, it was ours.
            Lwt::NotApplied(_) => Ok(self.rules_version(program_id, version).await?.is_some_and(|stored| stored == rules)),
        }
    }

    async fn figures(&self, program_id: &str) -> Result<Option<StoredFigures>, StoreError> {
        // At the read consistency, as `rules_head`: a write that applied reached a quorum, and a
        // stale read costs the writer only a refused compare-and-set and a fresh read.
        let rows = self.rows(&self.statements.figures, vec![text(program_id)]).await?;
        rows.first().map(|row| figures_of(program_id, row)).transpose()
    }

    async fn put_figures(&self, program_id: &str, expected_through: u64, figures: StoredFigures) -> Result<bool, StoreError> {
        self.check_open()?;
        figures.check_advances(program_id, expected_through)?;
        let st = &self.statements;
        let (statement, values) = if expected_through == 0 {
            (&st.figures_create, vec![text(program_id), seq_value(figures.through_seq)?, text(&figures.document)])
        } else {
            let values = vec![seq_value(figures.through_seq)?, text(&figures.document), text(program_id), seq_value(expected_through)?];
            (&st.figures_move, values)
        };
        paxos("figures");
        match lwt(self.run_lwt(statement, values).await?)? {
            Lwt::Applied => Ok(true),
            Lwt::NotApplied(current) => self.figures_were_ours(program_id, &figures, &current).await,
        }
    }

    async fn account_ids(&self, program_id: &str, cursor: &str, limit: usize) -> Result<AccountPage, StoreError> {
        let (mut bucket, mut after) = match cursor.split_once(':') {
            Some((bucket, after)) => {
                (bucket.parse::<i32>().map_err(|_| StoreError::Io(format!("bad account cursor {cursor:?}")))?, after.to_owned())
            }
            None => (0, String::new()),
        };
        let mut ids = Vec::new();
        while bucket < INDEX_BUCKETS && ids.len() < limit {
            let want = i32::try_from(limit - ids.len()).unwrap_or(i32::MAX);
            let values = vec![text(program_id), CqlValue::Int(bucket), text(&after), CqlValue::Int(want)];
            let rows = self.rows(&self.statements.index_page, values).await?;
            let got = rows.len();
            for row in &rows {
                if let Some(id) = column(row, 0).map(as_text).transpose()? {
                    ids.push(id);
                }
            }
            if got < usize::try_from(want).unwrap_or(usize::MAX) {
                bucket += 1;
                after.clear();
            } else if let Some(last) = ids.last() {
                after.clone_from(last);
            }
        }
        let next = (bucket < INDEX_BUCKETS).then(|| format!("{bucket}:{after}"));
        Ok(AccountPage { ids, next })
    }

    async fn pending_credits(&self, program_id: &str, limit: usize) -> Result<Vec<PendingCredit>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self.rows(&self.statements.credits, vec![text(program_id), CqlValue::Int(limit)]).await?;
        rows.iter().map(|row| decode("pending credit", &column(row, 0).map(as_blob).transpose()?.unwrap_or_default())).collect()
    }

    async fn delete_credit(&self, program_id: &str, credit_id: &str) -> Result<(), StoreError> {
        // A credit ID is never reused: a copy relayed again after this delete stays deleted.
        self.delete_for_good(&self.statements.credit_delete, vec![text(program_id), text(credit_id)]).await
    }

    async fn outbox_page(&self, program_id: &str, after_seq: u64, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        relay::outbox_page(self, program_id, after_seq, limit).await
    }

    fn is_writable(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    fn shared(&self) -> bool {
        true
    }

    fn outbox_repeats_events(&self) -> bool {
        true
    }

    async fn relay(&self, program_id: &str) -> Result<usize, StoreError> {
        relay::recover(self, program_id).await
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// The outcome of a lightweight transaction.
enum Lwt {
    Applied,
    /// Not applied; the current values the server returned with `[applied] = false`, by column
    /// name (of the first row: a batch returns one per conditional row).
    NotApplied(std::collections::HashMap<String, CqlValue>),
}

/// Reads `[applied]` (the first column of a conditional statement's result) and, when it is false,
/// the current values that come with it.
fn lwt(result: QueryResult) -> Result<Lwt, StoreError> {
    let rows = result.into_rows_result().map_err(io("scylla LWT result"))?;
    let names: Vec<String> = rows.column_specs().iter().map(|spec| spec.name().to_owned()).collect();
    let first = rows
        .rows::<Row>()
        .map_err(io("scylla LWT rows"))?
        .next()
        .transpose()
        .map_err(io("scylla LWT row"))?
        .ok_or_else(|| StoreError::Io("LWT result without rows".into()))?;
    match (names.first().map(String::as_str), column(&first, 0)) {
        (Some("[applied]"), Some(CqlValue::Boolean(true))) => Ok(Lwt::Applied),
        (Some("[applied]"), Some(CqlValue::Boolean(false))) => {
            Ok(Lwt::NotApplied(names.into_iter().zip(first.columns).filter_map(|(name, value)| value.map(|value| (name, value))).collect()))
        }
        (name, value) => Err(StoreError::Io(format!("LWT result without [applied]: {name:?} = {value:?}"))),
    }
}

fn column(row: &Row, index: usize) -> Option<&CqlValue> {
    row.columns.get(index).and_then(Option::as_ref)
}

fn as_u64(value: &CqlValue) -> Result<u64, StoreError> {
    match value {
        CqlValue::BigInt(number) => u64::try_from(*number).map_err(|_| StoreError::Corrupt(format!("negative version {number}"))),
        other => Err(StoreError::Corrupt(format!("expected bigint, got {other:?}"))),
    }
}

fn as_blob(value: &CqlValue) -> Result<Vec<u8>, StoreError> {
    match value {
        CqlValue::Blob(bytes) => Ok(bytes.clone()),
        other => Err(StoreError::Corrupt(format!("expected blob, got {other:?}"))),
    }
}

fn as_text(value: &CqlValue) -> Result<String, StoreError> {
    match value {
        CqlValue::Text(text) | CqlValue::Ascii(text) => Ok(text.clone()),
        other => Err(StoreError::Corrupt(format!("expected text, got {other:?}"))),
    }
}

fn text(value: &str) -> CqlValue {
    CqlValue::Text(value.to_owned())
}

/// A program's figures as read from their row (`through_seq, document`).
fn figures_of(program_id: &str, row: &Row) -> Result<StoredFigures, StoreError> {
    let through_seq = column(row, 0).map(as_u64).transpose()?;
    let document = column(row, 1).map(as_text).transpose()?;
    match (through_seq, document) {
        (Some(through_seq), Some(document)) => Ok(StoredFigures { through_seq, document }),
        _ => Err(StoreError::Corrupt(format!("program {program_id}: figures row without through_seq or document"))),
    }
}

/// A figures cursor as CQL bigint, refused beyond it rather than cut down as [`big`] does: two
/// cursors cut to the same value would pass each other's compare-and-set.
fn seq_value(seq: u64) -> Result<CqlValue, StoreError> {
    i64::try_from(seq).map(CqlValue::BigInt).map_err(|_| StoreError::Corrupt(format!("figures seq {seq} is beyond a CQL bigint")))
}

/// A u64 as CQL bigint (versions, seqs and micros stay far below 2^63).
fn big(value: u64) -> CqlValue {
    CqlValue::BigInt(i64::try_from(value).unwrap_or(i64::MAX))
}

/// FNV-1a: a hash that stays the same across builds and processes.
fn fnv1a(value: &str) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

fn bucket_of(account_id: &str) -> i32 {
    i32::try_from(fnv1a(account_id) % INDEX_BUCKETS as u64).unwrap_or(0)
}
