//! Campaign-wide budgets across engines (`loyalty_core::rules::campaigns`): this engine's
//! reservations of each budget, taken from the store a chunk at a time and paid out in memory.
//!
//! The store holds, per campaign, one versioned document `<program>#budget/<campaign>` (the
//! `documents` rows: version N+1 written only over N, durable before it is read back) with the
//! points engines have reserved and not returned. A reservation moves it up by `grant()` (never
//! past the budget), a return moves it down, each a compare-and-set; so at any instant
//! `reserved <= budget`, and every point a receipt gets from a campaign was reserved by its engine
//! first. Checkout never waits on the store for it but once a chunk: an Accrue evaluates against
//! what this engine holds (`allowance`), takes what the receipt gives (`take`), and gives it back
//! if the commit did not happen (`give_back`). A receipt that wants more than is held gets
//! `EngineError::CampaignBudgetShort` from the evaluation, and the call reserves more
//! (`reserve`) and runs again; when the store has nothing left either, the campaign is marked
//! spent here for `SPENT_RECHECK` and receipts get what is held, the lines saying the budget is
//! spent.
//!
//! Never over: a point is given only out of a reservation, and reservations never pass the
//! budget. Possibly under: points reserved by an engine that is killed, or whose commit failed
//! with an unknown outcome, are not given by anyone (a clean stop returns what it holds, and so
//! does an engine whose reservation sat unused for `IDLE_RETURN`); the chunks shrink as the
//! budget runs out, which bounds that loss.

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

/// How long a campaign found spent in the store is taken as spent before the store is read again
/// (another engine may have returned points meanwhile).
const SPENT_RECHECK: Duration = Duration::seconds(5);
/// A reservation unused this long goes back to the store, for other engines.
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
    /// A fresh ID per write: two engines writing the same total over the same version are told
    /// apart (the store answers a repeated put of identical bytes as stored).
    #[serde(default)]
    pub write: String,
}

fn document_key(program_id: &str, campaign: &str) -> String {
    format!("{program_id}#budget/{campaign}")
}

/// What this engine holds of one campaign.
#[derive(Debug, Default)]
struct Lease {
    /// Reserved in the store, not given yet.
    held: Decimal,
    /// When the store was last found to have nothing left to reserve.
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

    pub fn is_empty(&self) -> bool {
        self.points.iter().all(|(_, points)| points.is_zero())
    }
}

/// What an evaluation found short: `need` more points of `campaign` than this engine holds.
#[derive(Clone, Debug)]
pub struct Short {
    pub campaign: String,
    pub need: Decimal,
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
    /// One reservation at a time per campaign: concurrent short receipts wait for it and then
    /// find the points held.
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

    /// What an Accrue under `rules` may give from each budgeted campaign: what the call holds
    /// (`own`, set aside by its reservations) and what this engine holds.
    pub fn allowance(&self, program_id: &str, rules: &CompiledRules, own: &Taken) -> Allowance {
        let mut allowance = Allowance::unlimited();
        for campaign in rules.budgets().keys() {
            allowance.limit(campaign, own.of(campaign) + locked(&self.lease(program_id, campaign)).held);
        }
        allowance
    }

    /// What a quote may show: a campaign found spent shows what this engine still holds; any
    /// other is not limited (an Accrue reserves more when it needs to).
    pub fn quote_allowance(&self, program_id: &str, rules: &CompiledRules, now: DateTime<Utc>) -> Allowance {
        let mut allowance = Allowance::unlimited();
        for campaign in rules.budgets().keys() {
            let lease = self.lease(program_id, campaign);
            let lease = locked(&lease);
            if lease.spent_at.is_some_and(|at| now - at < SPENT_RECHECK) {
                allowance.limit(campaign, lease.held);
            }
        }
        allowance
    }

    /// Takes what an evaluation gave from each campaign (`uses`): first out of what the call holds
    /// (`own`), then out of this engine's holdings. A campaign the evaluation cut while the store
    /// may still have points, or that other calls took from meanwhile, is `Short`: nothing is
    /// taken, and the call reserves and runs again.
    pub fn take(
        &self,
        program_id: &str,
        rules: &CompiledRules,
        uses: &[CampaignUse],
        own: &mut Taken,
        now: DateTime<Utc>,
    ) -> Result<Taken, Short> {
        // Locked in the order of their names, whatever the order of the rules.
        let mut order: Vec<&CampaignUse> = uses.iter().collect();
        order.sort_by(|a, b| a.campaign.cmp(&b.campaign));
        let leases: Vec<_> = order.iter().map(|used| self.lease(program_id, &used.campaign)).collect();
        let mut guards: Vec<_> = leases.iter().map(|lease| locked(lease)).collect();
        for (used, lease) in order.iter().zip(&guards) {
            let spent = lease.spent_at.is_some_and(|at| now - at < SPENT_RECHECK);
            let available = own.of(&used.campaign) + lease.held;
            if used.given > available || (used.cut() && !spent) {
                return Err(Short {
                    campaign: used.campaign.clone(),
                    need: (used.wanted - available).max(Decimal::ONE),
                    budget: rules
                        .budgets()
                        .get(&used.campaign)
                        .cloned()
                        .unwrap_or(CampaignBudget { points: Decimal::ZERO, chunk_points: None }),
                });
            }
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

    /// Gives back points taken by an attempt that did not commit.
    pub fn give_back(&self, program_id: &str, taken: Taken) {
        for (campaign, points) in taken.points {
            locked(&self.lease(program_id, &campaign)).held += points;
        }
    }

    /// Reserves at least `short.need` more points of the campaign from the store, or all it has
    /// left (marking the campaign spent here when that is not enough), and sets aside up to the
    /// need for the call that asked: other calls taking from this engine's holdings meanwhile
    /// cannot starve it.
    pub async fn reserve(&self, program_id: &str, short: &Short, now: DateTime<Utc>) -> EngineResult<Taken> {
        let key = (program_id.to_owned(), short.campaign.clone());
        let turn = Arc::clone(self.reserving.entry(key).or_default().value());
        let _turn = turn.lock().await;
        let lease = self.lease(program_id, &short.campaign);
        let held = locked(&lease).held;
        if held < short.need {
            let need = short.need - held;
            let budget = short.budget.points;
            let chunk = short.budget.chunk_points.unwrap_or_else(|| default_chunk(budget));
            let granted = self
                .move_reserved(program_id, &short.campaign, now, |reserved| {
                    let granted = grant(budget, reserved, need, chunk);
                    (granted, format!("reserved {granted} of {budget}"))
                })
                .await?;
            {
                let mut lease = locked(&lease);
                lease.held += granted;
                lease.spent_at = (granted < need).then_some(now);
            }
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
        let leases: Vec<_> = self.leases.iter().map(|entry| (entry.key().clone(), Arc::clone(entry.value()))).collect();
        for ((program_id, campaign), lease) in leases {
            let turn = Arc::clone(self.reserving.entry((program_id.clone(), campaign.clone())).or_default().value());
            let _turn = turn.lock().await;
            let points = {
                let mut lease = locked(&lease);
                if lease.held.is_zero() || !(everything || lease.last_used.is_none_or(|at| now - at >= IDLE_RETURN)) {
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
            if let Err(error) = returned {
                // Held no more here either way: the points are lost to the campaign, never given twice.
                tracing::warn!(program = program_id.as_str(), campaign = campaign.as_str(), %points, %error, "returning a campaign reservation failed");
            }
        }
    }

    /// Every budgeted campaign of `rules` as the store and this engine see it.
    pub async fn read(
        &self,
        program_id: &str,
        rules: &CompiledRules,
        given: &std::collections::BTreeMap<String, Decimal>,
    ) -> EngineResult<Vec<BudgetView>> {
        let mut views = Vec::new();
        for (campaign, budget) in rules.budgets() {
            let stored = self.documents.latest::<BudgetDocument>(&document_key(program_id, campaign)).await?;
            let held_here = locked(&self.lease(program_id, campaign)).held;
            views.push(BudgetView {
                campaign: campaign.clone(),
                points: budget.points,
                reserved: stored.as_ref().map_or(Decimal::ZERO, |stored| stored.document.reserved),
                held_here,
                given: given.get(campaign).copied().unwrap_or_default(),
                version: stored.map_or(0, |stored| stored.version),
            });
        }
        Ok(views)
    }

    /// Moves the campaign's reserved total by what `change` says given the stored one (a grant
    /// up, a return down), by compare-and-set; the points moved.
    async fn move_reserved(
        &self,
        program_id: &str,
        campaign: &str,
        now: DateTime<Utc>,
        change: impl Fn(Decimal) -> (Decimal, String),
    ) -> EngineResult<Decimal> {
        let key = document_key(program_id, campaign);
        for _ in 0..ATTEMPTS_MAX {
            let write = self.ids.transaction_id();
            let changed = self
                .documents
                .change(&key, None, AUTHOR, now, |latest: Option<BudgetDocument>| {
                    let reserved = latest.unwrap_or_default().reserved;
                    let (moved, comment) = change(reserved);
                    Ok(if moved.is_zero() {
                        Edit::Keep(moved)
                    } else {
                        Edit::Write { document: BudgetDocument { reserved: reserved + moved, write }, comment, value: moved }
                    })
                })
                .await?;
            match changed {
                Changed::Stored { value, .. } | Changed::Kept(value) => return Ok(value.abs()),
                Changed::Conflict { .. } => continue,
            }
        }
        Err(EngineError::Contention { attempts: ATTEMPTS_MAX as u32 })
    }
}

/// A lease's lock; a panic while it was held left numbers that are still whole (each change is
/// one assignment), so a poisoned lock is taken as it is.
fn locked(lease: &Mutex<Lease>) -> MutexGuard<'_, Lease> {
    lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
