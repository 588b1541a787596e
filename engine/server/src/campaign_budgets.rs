//! Campaign-wide budgets across engines (`loyalty_core::rules::campaigns`): this engine's
//! reservations of each budget, taken from the store a chunk at a time and paid out in memory.
//!
//! The store holds, per campaign, one versioned document `<program>#budget/<campaign>` (the
//! `documents` rows: version N+1 written only over N, durable before it is read back) with the
//! points engines have reserved and not returned. A reservation moves it up by `grant()` (never
//! past the budget), a return moves it down, each a compare-and-set carrying its own write ID (so
//! a write whose answer was lost is recognised, never applied twice); at any instant
//! `reserved <= budget`, and every point a receipt gets from a campaign was reserved by its engine
//! first. Checkout never waits on the store for it but once a chunk: an Accrue evaluates against
//! what its call and this engine hold (`allowance`), takes what the receipt gives (`take`), and
//! gives it back if the commit did not happen (`give_back`). A receipt that wants more than is
//! held gets `EngineError::CampaignBudgetShort` from the evaluation, and the call reserves more
//! (`reserve`, which sets what the call needs aside for it) and runs again; when the store has
//! nothing left either, the campaign is marked spent here (re-read after `SPENT_RECHECK`) and
//! receipts get what is held, the lines saying the budget is spent.
//!
//! The budget a reservation is checked against is the lower of the receipt's rules version and
//! the latest version in the store (the engine refreshes its rules before reserving): lowering a
//! budget stops reservations past it from then on. A rules version without the budget pays its
//! campaign's rules without counting them: a budget binds the versions that have it.
//!
//! Never over: a point is given only out of a reservation, and reservations never pass the
//! budget. Possibly under: points reserved and then not given are lost to the campaign, never
//! given twice: what an engine held when it was killed; what a call took when its commit failed
//! with an unknown outcome, or when a store read failed after it lost a race; what a call held
//! when it was cancelled (its deadline) in the middle of a reservation. A clean stop returns what
//! the engine holds, and so does an engine whose holding sat unused for `IDLE_RETURN`; the chunks
//! shrink as the budget runs out, which bounds the loss.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use dashmap::DashMap;
use loyalty_core::Decimal;
use loyalty_core::rules::CompiledRules;
use loyalty_core::rules::campaigns::{Allowance, CampaignUse, default_chunk, grant};
use loyalty_core::rules::definition::CampaignBudget;
use serde::{Deserialize, Serialize};

use crate::documents::{Changed, Documents, Edit};
use crate::error::{EngineError, EngineResult};
use crate::ids::IdSource;

/// How long a campaign found spent in the store is taken as spent by Accrue before the store is
/// read again (another engine may have returned points meanwhile).
const SPENT_RECHECK: Duration = Duration::seconds(5);
/// A holding unused this long goes back to the store, for other engines.
const IDLE_RETURN: Duration = Duration::seconds(60);
/// Attempts at a compare-and-set on a campaign's document before giving up for this call.
const ATTEMPTS_MAX: usize = 8;
/// Who the document versions are noted as written by.
const AUTHOR: &str = "system:campaign-budgets";

/// A campaign's stored reservations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetDocument {
    /// Points reserved by engines and not returned: never above the budget.
    pub reserved: Decimal,
    /// The write that stored this version: a fresh ID per reservation or return, so that a write
    /// whose answer was lost is recognised (and two engines writing the same total are told apart).
    #[serde(default)]
    pub write: String,
    /// What that write moved `reserved` by (negative for a return).
    #[serde(default)]
    pub moved: Decimal,
}

fn document_key(program_id: &str, campaign: &str) -> String {
    format!("{program_id}#budget/{campaign}")
}

/// What this engine holds of one campaign.
#[derive(Debug, Default)]
struct Lease {
    /// Reserved in the store, not given nor set aside for a call yet.
    held: Decimal,
    /// When the store was last found to have nothing left to reserve; cleared by a reservation
    /// that got what it needed.
    spent_at: Option<DateTime<Utc>>,
    last_used: Option<DateTime<Utc>>,
}

/// Points of campaign budgets out of this engine's holdings, owned by one call: what an attempt
/// took, or what a reservation set aside for the call that made it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    points: Vec<(String, Decimal)>,
}

impl Taken {
    fn of(&self, campaign: &str) -> Decimal {
        self.points.iter().filter(|(name, _)| name == campaign).map(|(_, points)| *points).sum()
    }

    fn add(&mut self, campaign: &str, points: Decimal) {
        if points.is_zero() {
            return;
        }
        match self.points.iter_mut().find(|(name, _)| name == campaign) {
            Some((_, held)) => *held += points,
            None => self.points.push((campaign.to_owned(), points)),
        }
    }

    /// Adds all of `other`.
    pub fn merge(&mut self, other: Taken) {
        for (campaign, points) in other.points {
            self.add(&campaign, points);
        }
    }
}

/// What an evaluation found short: the call needs to hold `need` points of `campaign` (what its
/// rules want) and holds less.
#[derive(Clone, Debug)]
pub struct Short {
    pub campaign: String,
    pub need: Decimal,
    /// The budget in the receipt's rules version.
    pub budget: CampaignBudget,
}

/// A campaign as `ReadBudgets` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetView {
    pub campaign: String,
    /// The budget in the current rules.
    pub points: Decimal,
    /// Reserved by engines (given, or held to give): the budget less this is what no engine has
    /// reserved yet.
    pub reserved: Decimal,
    /// Of the reserved, what this engine holds and has not given.
    pub held_here: Decimal,
    /// Given by the campaign's rules, ever, as the program's figures say (exact as of the outbox).
    pub given: Decimal,
    /// The stored document's version (0: nothing reserved ever).
    pub version: u64,
}

/// This engine's reservations of every campaign budget (see the module documentation).
#[derive(Debug)]
pub struct CampaignBudgets {
    documents: Documents,
    ids: Arc<dyn IdSource>,
    leases: DashMap<(String, String), Arc<Mutex<Lease>>>,
    /// One reservation or return at a time per campaign: concurrent short receipts wait for it
    /// and then find the points held.
    reserving: DashMap<(String, String), Arc<tokio::sync::Mutex<()>>>,
}

impl CampaignBudgets {
    pub fn new(documents: Documents, ids: Arc<dyn IdSource>) -> Self {
        CampaignBudgets { documents, ids, leases: DashMap::new(), reserving: DashMap::new() }
    }

    fn lease(&self, program_id: &str, campaign: &str) -> Arc<Mutex<Lease>> {
        let key = (program_id.to_owned(), campaign.to_owned());
        Arc::clone(self.leases.entry(key).or_default().value())
    }

    fn turn(&self, program_id: &str, campaign: &str) -> Arc<tokio::sync::Mutex<()>> {
        let key = (program_id.to_owned(), campaign.to_owned());
        Arc::clone(self.reserving.entry(key).or_default().value())
    }

    /// What an Accrue under `rules` may give from each budgeted campaign: what the call holds
    /// (`own`, set aside by its reservations), and, unless `own_only`, what this engine holds.
    pub fn allowance(&self, program_id: &str, rules: &CompiledRules, own: &Taken, own_only: bool) -> Allowance {
        let mut allowance = Allowance::unlimited();
        for campaign in rules.budgets().keys() {
            let pool = if own_only { Decimal::ZERO } else { locked(&self.lease(program_id, campaign)).held };
            allowance.limit(campaign, own.of(campaign) + pool);
        }
        allowance
    }

    /// What a quote may show: a campaign this engine found spent (and has not reserved since)
    /// shows what this engine holds; any other is not limited (an Accrue reserves when it needs).
    pub fn quote_allowance(&self, program_id: &str, rules: &CompiledRules) -> Allowance {
        let mut allowance = Allowance::unlimited();
        for campaign in rules.budgets().keys() {
            let lease = self.lease(program_id, campaign);
            let lease = locked(&lease);
            if lease.spent_at.is_some() {
                allowance.limit(campaign, lease.held);
            }
        }
        allowance
    }

    /// Takes what an evaluation gave from each campaign (`uses`): first out of what the call holds
    /// (`own`), then out of this engine's holdings. The campaigns the evaluation cut while the
    /// store may still have points (unless `accept_cut`), or that other calls took from meanwhile,
    /// are `Short`: nothing is taken, and the call reserves and runs again.
    pub fn take(
        &self,
        program_id: &str,
        rules: &CompiledRules,
        uses: &[CampaignUse],
        own: &mut Taken,
        accept_cut: bool,
        now: DateTime<Utc>,
    ) -> Result<Taken, Vec<Short>> {
        // Locked in the order of their names, whatever the order of the rules.
        let mut order: Vec<&CampaignUse> = uses.iter().collect();
        order.sort_by(|a, b| a.campaign.cmp(&b.campaign));
        let leases: Vec<_> = order.iter().map(|used| self.lease(program_id, &used.campaign)).collect();
        let mut guards: Vec<_> = leases.iter().map(|lease| locked(lease)).collect();
        let mut short = Vec::new();
        for (used, lease) in order.iter().zip(&guards) {
            let spent = lease.spent_at.is_some_and(|at| now - at < SPENT_RECHECK);
            let owned = own.of(&used.campaign);
            if used.given > owned + lease.held || (used.cut() && !spent && !accept_cut) {
                short.push(Short {
                    campaign: used.campaign.clone(),
                    need: (used.wanted - owned).max(Decimal::ONE),
                    budget: rules.budgets().get(&used.campaign).cloned().unwrap_or_else(no_budget),
                });
            }
        }
        if !short.is_empty() {
            return Err(short);
        }
        let mut taken = Taken::default();
        for (used, lease) in order.iter().zip(guards.iter_mut()) {
            lease.last_used = Some(now);
            let from_own = used.given.min(own.of(&used.campaign));
            own.add(&used.campaign, -from_own);
            lease.held -= used.given - from_own;
            taken.add(&used.campaign, used.given);
        }
        Ok(taken)
    }

    /// Gives back points a call held or took and did not commit.
    pub fn give_back(&self, program_id: &str, taken: Taken) {
        for (campaign, points) in taken.points {
            locked(&self.lease(program_id, &campaign)).held += points;
        }
    }

    /// Reserves from the store what the campaign's pool lacks for `short.need` (a chunk, or all
    /// the store has left, marking the campaign spent here when that is not enough), against a
    /// budget of `budget` points, and sets up to the need aside for the call that asked: other
    /// calls taking from the pool meanwhile cannot starve it.
    pub async fn reserve(&self, program_id: &str, short: &Short, budget: Decimal, now: DateTime<Utc>) -> EngineResult<Taken> {
        let turn = self.turn(program_id, &short.campaign);
        let _turn = turn.lock().await;
        let lease = self.lease(program_id, &short.campaign);
        let (held, spent) = {
            let lease = locked(&lease);
            (lease.held, lease.spent_at.is_some_and(|at| now - at < SPENT_RECHECK))
        };
        // Found spent while this call waited for its turn: no store read for it.
        if held < short.need && !spent {
            let need = short.need - held;
            let chunk = short.budget.chunk_points.unwrap_or_else(|| default_chunk(budget));
            let granted = self
                .move_reserved(program_id, &short.campaign, now, |reserved| {
                    let granted = grant(budget, reserved, need, chunk);
                    (granted, format!("reserved {granted} of {budget}"))
                })
                .await?;
            let mut lease = locked(&lease);
            lease.held += granted;
            lease.spent_at = (granted < need).then_some(now);
            lease.last_used = Some(now);
            metrics::counter!("loyalty_campaign_reservations_total", "program" => program_id.to_owned()).increment(1);
            tracing::debug!(program = program_id, campaign = short.campaign.as_str(), %granted, %need, "campaign budget reserved");
        }
        let mut lease = locked(&lease);
        let own = short.need.min(lease.held);
        lease.held -= own;
        let mut taken = Taken::default();
        taken.add(&short.campaign, own);
        Ok(taken)
    }

    /// Returns to the store what this engine holds of campaigns unused for `IDLE_RETURN` (all of
    /// them with `everything`, at a clean stop).
    pub async fn return_unused(&self, now: DateTime<Utc>, everything: bool) {
        let due = |lease: &Lease| lease.held > Decimal::ZERO && (everything || lease.last_used.is_none_or(|at| now - at >= IDLE_RETURN));
        let leases: Vec<_> = self.leases.iter().map(|entry| (entry.key().clone(), Arc::clone(entry.value()))).collect();
        for ((program_id, campaign), lease) in leases {
            if !due(&locked(&lease)) {
                continue;
            }
            let turn = self.turn(&program_id, &campaign);
            let _turn = turn.lock().await;
            let points = {
                let mut lease = locked(&lease);
                if !due(&lease) {
                    continue;
                }
                std::mem::take(&mut lease.held)
            };
            let returned = self
                .move_reserved(&program_id, &campaign, now, |reserved| {
                    let back = points.min(reserved);
                    (-back, format!("returned {back} unused"))
                })
                .await;
            match returned {
                Ok(_) => {}
                // Known not written: still held here.
                Err(EngineError::Contention { .. }) => locked(&lease).held += points,
                // Perhaps written: held no more here; lost to the campaign, never given twice.
                Err(error) => {
                    tracing::warn!(program = program_id.as_str(), campaign = campaign.as_str(), %points, %error, "returning a campaign reservation failed");
                }
            }
        }
    }

    /// Every budgeted campaign of `rules` as the store and this engine see it, with what the
    /// figures say each gave (`given`).
    pub async fn read(
        &self,
        program_id: &str,
        rules: &CompiledRules,
        given: &std::collections::BTreeMap<String, Decimal>,
    ) -> EngineResult<Vec<BudgetView>> {
        let mut views = Vec::new();
        for (campaign, budget) in rules.budgets() {
            let stored = self.documents.latest::<BudgetDocument>(&document_key(program_id, campaign)).await?;
            views.push(BudgetView {
                campaign: campaign.clone(),
                points: budget.points,
                reserved: stored.as_ref().map_or(Decimal::ZERO, |stored| stored.document.reserved),
                held_here: locked(&self.lease(program_id, campaign)).held,
                given: given.get(campaign).copied().unwrap_or_default(),
                version: stored.map_or(0, |stored| stored.version),
            });
        }
        Ok(views)
    }

    /// Moves the campaign's reserved total by what `change` says given the stored one (a grant
    /// up, a return down), by compare-and-set on the version read; the points moved. One write ID
    /// for all attempts: after a conflict, the versions stored since the first attempt read are
    /// searched for it first, so a write whose answer was lost is taken as done, never made twice.
    async fn move_reserved(
        &self,
        program_id: &str,
        campaign: &str,
        now: DateTime<Utc>,
        change: impl Fn(Decimal) -> (Decimal, String),
    ) -> EngineResult<Decimal> {
        let key = document_key(program_id, campaign);
        let write = self.ids.transaction_id();
        let mut first_read: Option<u64> = None;
        for _ in 0..ATTEMPTS_MAX {
            let latest = self.documents.latest::<BudgetDocument>(&key).await?;
            let (version, stored) = latest.map_or((0, BudgetDocument::default()), |latest| (latest.version, latest.document));
            if let Some(from) = first_read {
                for earlier in from + 1..=version {
                    if let Some(found) = self.documents.at::<BudgetDocument>(&key, earlier).await?
                        && found.document.write == write
                    {
                        return Ok(found.document.moved.abs());
                    }
                }
            }
            first_read.get_or_insert(version);
            let (moved, comment) = change(stored.reserved);
            if moved.is_zero() {
                return Ok(Decimal::ZERO);
            }
            let document = BudgetDocument { reserved: stored.reserved + moved, write: write.clone(), moved };
            let changed = self
                .documents
                .change(&key, Some(version), AUTHOR, now, |_: Option<BudgetDocument>| Ok(Edit::Write { document, comment, value: moved }))
                .await?;
            match changed {
                Changed::Stored { value, .. } | Changed::Kept(value) => return Ok(value.abs()),
                Changed::Conflict { .. } => continue,
            }
        }
        Err(EngineError::Contention { attempts: ATTEMPTS_MAX as u32 })
    }
}

fn no_budget() -> CampaignBudget {
    CampaignBudget { points: Decimal::ZERO, chunk_points: None }
}

/// A lock over points held or taken; a panic while it was held left numbers that are still whole
/// (each change is one assignment), so a poisoned lock is taken as it is.
pub(crate) fn locked<T>(cell: &Mutex<T>) -> MutexGuard<'_, T> {
    cell.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one call holds of campaign budgets while it runs (set aside by its reservations, or taken
/// back from attempts that did not commit), given back to the engine's pool when the call ends,
/// however it ends (cancelled by its deadline included).
#[derive(Debug)]
pub struct CallHolding<'a> {
    budgets: &'a CampaignBudgets,
    program_id: &'a str,
    own: Mutex<Taken>,
}

impl<'a> CallHolding<'a> {
    pub fn new(budgets: &'a CampaignBudgets, program_id: &'a str) -> Self {
        CallHolding { budgets, program_id, own: Mutex::new(Taken::default()) }
    }

    /// The call's holding, locked.
    pub fn lock(&self) -> MutexGuard<'_, Taken> {
        locked(&self.own)
    }
}

impl Drop for CallHolding<'_> {
    fn drop(&mut self) {
        let own = std::mem::take(&mut *self.lock());
        self.budgets.give_back(self.program_id, own);
    }
}
