//! `loyalty.v1.LoyaltyService`: each handler validates and converts its request, calls the engine,
//! and converts the answer. `LoyaltyApi::handle` wraps every call with the in-flight limit, a
//! tracing span (program, store, till, receipt: never personal data), metrics and error mapping.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use loyalty_core::ops::{AccrueCmd, AuthorizeCmd, BonusCmd, RedeemCmd, RefundCmd, ReverseCmd, SaleCmd};
use loyalty_proto::v1 as pb;
use loyalty_proto::v1::loyalty_service_server::LoyaltyService;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use loyalty_core::cards::ReplaceCardCmd;
use loyalty_core::presence::CodeChannel;
use loyalty_core::profile::Editor;
use loyalty_core::rules::tiers;

use crate::auth::{Caller, Needs, Scope};
use crate::config::LimitsConfig;
use crate::engine::Engine;
use crate::error::{AuthFailure, EngineError, EngineResult};
use crate::grpc::convert;
use crate::grpc::gate::Deadline;
use crate::grpc::log_limit::LogLimit;
use crate::grpc::runtime_lag::RuntimeLag;
use crate::grpc::status::to_status;
use crate::programs::Program;
use loyalty_core::enrolment::EnrollCmd;

/// Page size of ListTransactions when the request leaves it at 0.
const PAGE_SIZE_DEFAULT: u32 = 50;
/// Largest page of ListTransactions.
const PAGE_SIZE_MAX: u32 = 200;

/// The service implementation.
#[derive(Debug, Clone)]
pub struct LoyaltyApi {
    engine: Arc<Engine>,
    limits: LimitsConfig,
    in_flight: Arc<Semaphore>,
    /// The runtime-lag watcher, unless `scheduling_delay_max_ms` is 0.
    lag: Option<Arc<RuntimeLag>>,
    /// Bounds the ERROR lines of failed calls to one per cause a second.
    failure_log: Arc<LogLimit>,
}

/// IDs that identify a call in traces. Operational IDs only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallIds<'a> {
    program: &'a str,
    store: &'a str,
    till: &'a str,
    receipt: &'a str,
}

impl<'a> CallIds<'a> {
    /// A call about a program as a whole (admin calls).
    pub(crate) fn program(program: &'a str) -> Self {
        CallIds { program, store: "", till: "", receipt: "" }
    }
}

/// What the gate learned about a call before its body was decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallContext {
    caller: Option<Caller>,
    deadline: Option<Instant>,
}

impl CallContext {
    /// What the gate noted on a call, and its body.
    pub(crate) fn split<T>(request: Request<T>) -> (Self, T) {
        let ctx = CallContext {
            caller: request.extensions().get::<Caller>().cloned(),
            deadline: request.extensions().get::<Deadline>().map(|deadline| deadline.0),
        };
        (ctx, request.into_inner())
    }
}

/// What a handler's work gets once the call is authorised and admitted: the caller, the program
/// the body names, and (for calls from a till) where it comes from.
pub(crate) struct Call<'a> {
    pub(crate) caller: Caller,
    pub(crate) program: Arc<Program>,
    ids: CallIds<'a>,
    id_len_max: usize,
}

impl Call<'_> {
    /// The store and till the call names (each checked), with its credential as the actor.
    pub(crate) fn origin(&self) -> Result<loyalty_core::Origin, loyalty_core::rejection::Rejection> {
        convert::origin(self.ids.store, self.ids.till, self.id_len_max, &self.caller)
    }
}

/// Scopes that may make each kind of call.
pub(crate) const CHECKOUT: &[Scope] = &[Scope::Checkout];
pub(crate) const READ: &[Scope] = &[Scope::Checkout, Scope::ReadOnly, Scope::CustomerApp];
pub(crate) const QUOTE: &[Scope] = &[Scope::Checkout, Scope::ReadOnly];
pub(crate) const BONUS: &[Scope] = &[Scope::Checkout, Scope::PartnerIssueCertificates];
pub(crate) const ADMIN: &[Scope] = &[Scope::Admin];
/// Who may change a customer's profile: the till, the program's app (within `profile::Editor`'s
/// bounds), the program's administrators.
pub(crate) const PROFILE: &[Scope] = &[Scope::Checkout, Scope::CustomerApp, Scope::Admin];
/// Who may merge a card into a customer's account: the till with the card in hand, or an admin.
pub(crate) const MERGE: &[Scope] = &[Scope::Checkout, Scope::Admin];

/// Caps an untrusted ID before it goes into a span.
fn trace_id(raw: &str) -> &str {
    let mut end = raw.len().min(64);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}

impl LoyaltyApi {
    /// Must be called on the runtime that serves: the runtime-lag watcher starts on it.
    pub fn new(engine: Arc<Engine>, limits: LimitsConfig) -> Self {
        let in_flight = Arc::new(Semaphore::new(limits.in_flight_max));
        let lag = (limits.scheduling_delay_max_ms > 0)
            .then(|| RuntimeLag::watch(Duration::from_millis(limits.scheduling_delay_max_ms.saturating_mul(4))));
        LoyaltyApi { engine, limits, in_flight, lag, failure_log: Arc::new(LogLimit::new(Duration::from_secs(1))) }
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub(crate) fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Runs one call: authorises the caller for it, admits it under the in-flight limit (waiting at
    /// most `admission_wait_ms`, never past the caller's deadline), finds the program it names,
    /// runs it within the deadline, and records its span, metrics and status.
    pub(crate) async fn handle<'a, T, Fut>(
        &self,
        rpc: &'static str,
        ctx: &CallContext,
        scopes: &[Scope],
        ids: CallIds<'a>,
        work: impl FnOnce(Call<'a>) -> Fut,
    ) -> Result<Response<T>, Status>
    where
        Fut: Future<Output = EngineResult<T>>,
    {
        let started = Instant::now();
        let span = tracing::debug_span!(
            "rpc",
            rpc,
            program = trace_id(ids.program),
            store = trace_id(ids.store),
            till = trace_id(ids.till),
            receipt = trace_id(ids.receipt),
            credential = ctx.caller.as_ref().map_or("", |caller| caller.credential.id.as_str())
        );
        let result = match self.authorize(rpc, ctx, scopes, &ids) {
            Ok(caller) => {
                let call = async move {
                    let program = self.program(ids.program)?;
                    work(Call { caller, program, ids, id_len_max: self.limits.id_len_max }).await
                };
                self.admit_and_run(ctx.deadline, Shed::of(scopes), call.instrument(span.clone())).await
            }
            Err(error) => Err(error),
        };
        let elapsed = started.elapsed();
        let (code, response) = match result {
            Ok(message) => (tonic::Code::Ok, Ok(Response::new(message))),
            Err(error) => {
                let status = to_status(&error);
                let _entered = span.enter();
                match status.code() {
                    // A refusal while stopping is expected, not a fault.
                    tonic::Code::Internal | tonic::Code::Unavailable if !matches!(error, EngineError::ShuttingDown) => {
                        // One line per cause a second: a store that refuses every write (a full
                        // disk) would otherwise write a line per call.
                        if let Some(more_since_last_line) = self.failure_log.admit(failure_cause(&error), Instant::now()) {
                            tracing::error!(
                                code = ?status.code(),
                                latency_us = elapsed.as_micros() as u64,
                                more_since_last_line,
                                %error,
                                "call failed"
                            )
                        }
                    }
                    _ => tracing::debug!(code = ?status.code(), latency_us = elapsed.as_micros() as u64, %error, "call refused"),
                }
                (status.code(), Err(status))
            }
        };
        if code == tonic::Code::Ok {
            let _entered = span.enter();
            tracing::debug!(latency_us = elapsed.as_micros() as u64, "call served");
        }
        let code_label = code_name(code);
        metrics::counter!("loyalty_rpc_requests_total", "rpc" => rpc, "code" => code_label).increment(1);
        metrics::histogram!("loyalty_rpc_duration_seconds", "rpc" => rpc, "code" => code_label).record(elapsed.as_secs_f64());
        response
    }

    fn authorize(&self, rpc: &'static str, ctx: &CallContext, scopes: &[Scope], ids: &CallIds<'_>) -> EngineResult<Caller> {
        let caller = ctx.caller.clone().ok_or(EngineError::Unauthenticated(AuthFailure::Missing))?;
        caller.authorize(Needs { rpc, program_id: ids.program, store_id: ids.store, scopes })?;
        Ok(caller)
    }

    /// Refuses the call at once if the CPU is saturated (unless exempt), then waits for an in-flight
    /// permit for at most the admission wait (and never past the deadline):
    /// beyond that the engine is overloaded and says so at once, rather than growing a queue whose
    /// calls would all be late. The call then runs within the caller's deadline.
    async fn admit_and_run<T>(
        &self,
        deadline: Option<Instant>,
        shed: Shed,
        call: impl Future<Output = EngineResult<T>>,
    ) -> EngineResult<T> {
        // Held until the answer: a stopping engine shuts its store only after the last call.
        let _inside = self.engine.calls().enter().ok_or(EngineError::ShuttingDown)?;
        let now = Instant::now();
        if deadline.is_some_and(|deadline| deadline <= now) {
            return Err(EngineError::DeadlineExceeded);
        }
        if let Some(lag) = &self.lag
            && let Some(bound) = shed.delay_bound(self.limits.scheduling_delay_max_ms)
        {
            let delay = lag.current();
            let serving = self.limits.in_flight_max.saturating_sub(self.in_flight.available_permits());
            let piled_up = serving >= self.limits.shed_in_flight_min.min(self.limits.in_flight_max);
            if delay > bound && (shed == Shed::Last || piled_up) {
                return Err(EngineError::Saturated { delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX) });
            }
        }
        let admit_by = now + Duration::from_millis(self.limits.admission_wait_ms);
        let admit_by = deadline.map_or(admit_by, |deadline| deadline.min(admit_by));
        let _permit = match self.in_flight.try_acquire() {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout_at(admit_by.into(), self.in_flight.acquire()).await {
                Ok(Ok(permit)) => permit,
                _ if deadline.is_some_and(|deadline| deadline <= Instant::now()) => return Err(EngineError::DeadlineExceeded),
                _ => return Err(EngineError::Overloaded { limit: self.limits.in_flight_max }),
            },
        };
        // A panic is a bug (a broken assertion): this call fails with INTERNAL, nothing was written
        // for it, and the connection and the other calls on it carry on.
        let guarded = AssertUnwindSafe(call).catch_unwind();
        let outcome = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), guarded).await.map_err(|_| EngineError::DeadlineExceeded)?,
            None => guarded.await,
        };
        outcome.unwrap_or_else(|_| Err(EngineError::Internal("the call hit a broken assertion".into())))
    }

    fn program(&self, program_id: &str) -> EngineResult<Arc<Program>> {
        convert::id("program_id", program_id, self.limits.id_len_max)?;
        self.engine.program(program_id)
    }
}

/// How a call is shed when the engine's tasks run late (`limits.scheduling_delay_max_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// Admin calls (a revocation, say) are few and must get through an overload.
    Never,
    /// Reads: the last thing shed, at twice the delay. A read finishes within one poll of its task
    /// (the embedded store reads synchronously), so reads never pile up as calls in flight: their
    /// backlog waits in the runtime's queue, where only the lateness shows it.
    Last,
    /// Calls that write: shed at the delay, but only while `limits.shed_in_flight_min` calls are
    /// being served (writes wait for their commit, so an engine's own overload piles them up; late
    /// tasks with few calls in flight mean another process has the CPU).
    Writes,
}

impl Shed {
    fn of(scopes: &[Scope]) -> Shed {
        if scopes == ADMIN {
            Shed::Never
        } else if scopes == READ || scopes == QUOTE {
            Shed::Last
        } else {
            Shed::Writes
        }
    }

    /// The lateness beyond which the call is refused, if it may be.
    fn delay_bound(self, max_ms: u64) -> Option<Duration> {
        match self {
            Shed::Never => None,
            Shed::Last => Some(Duration::from_millis(max_ms.saturating_mul(2))),
            Shed::Writes => Some(Duration::from_millis(max_ms)),
        }
    }
}

/// What a failed call's ERROR line is counted under: the kind of failure, never its details.
fn failure_cause(error: &EngineError) -> &'static str {
    match error {
        EngineError::Store(loyalty_store::StoreError::Io(_)) => "store_io",
        EngineError::Store(loyalty_store::StoreError::Corrupt(_)) => "store_corrupt",
        EngineError::Store(loyalty_store::StoreError::Poisoned) => "store_poisoned",
        EngineError::Store(loyalty_store::StoreError::Closed) => "store_closed",
        EngineError::Invariant(_) => "invariant",
        _ => "other",
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[tonic::async_trait]
impl LoyaltyService for LoyaltyApi {
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.request_id };
        self.handle("Enroll", &ctx, CHECKOUT, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let origin = call.origin()?;
            let today = self.engine.now_in(&policy.program_id).with_timezone(&policy.time_zone).date_naive();
            let cmd = EnrollCmd {
                request_id: convert::id("request_id", &req.request_id, self.limits.id_len_max)?,
                phone: loyalty_core::identity::normalize_phone("phone", &req.phone, &policy.phone_plan)?,
                card_number: match req.card_number.as_str() {
                    "" => None,
                    raw => Some(loyalty_core::identity::normalize_card("card_number", raw)?),
                },
                app_token: match req.app_token.as_str() {
                    "" => None,
                    raw => Some(loyalty_core::identity::normalize_app_token("app_token", raw)?),
                },
                name: convert::name(&req.name)?,
                birth_date: convert::birth_date(&req.birth_date, today)?,
                tags: convert::tags("tags", &req.tags)?,
                referrer: match &req.referrer {
                    Some(referrer) => Some(convert::customer(Some(referrer), policy).map_err(|rejection| match rejection {
                        loyalty_core::rejection::Rejection::InvalidArgument { field, reason } => {
                            loyalty_core::rejection::Rejection::invalid(field.replacen("customer", "referrer", 1), reason)
                        }
                        other => other,
                    })?),
                    None => None,
                },
                card_fee: convert::card_fee(&req.card_fee, self.limits.amount_max)?,
            };
            let outcome = self.engine.customers.enroll(program, &origin, cmd).await?;
            Ok(pb::EnrollResponse {
                account_id: outcome.account_id,
                card_number: outcome.card_number,
                created: outcome.created,
                balance: Some(convert::balance(policy, &outcome.balance)),
                bonuses: convert::rule_points(policy, &outcome.bonuses),
                fee_points: convert::points(policy, outcome.fee_points),
            })
        })
        .await
    }

    async fn get_account(&self, request: Request<pb::GetAccountRequest>) -> Result<Response<pb::GetAccountResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: "", till: "", receipt: "" };
        self.handle("GetAccount", &ctx, READ, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let customer = convert::customer(req.customer.as_ref(), policy)?;
            let snapshot = self.engine.checkout.get_account(program, &customer).await?;
            let state = &snapshot.state;
            let (expiring, next_expiry) = state.expiring_within(snapshot.now, chrono::Duration::days(30));
            Ok(pb::GetAccountResponse {
                account_id: state.account_id.clone(),
                registered: state.registered,
                tier: tiers::effective_tier(&program.rules, state, snapshot.now, policy.time_zone).to_owned(),
                balance: Some(convert::balance(policy, &state.balance_at(snapshot.now))),
                expiring_30d: convert::points(policy, expiring),
                next_expiry_at: next_expiry.map(convert::timestamp),
                tier_spend: convert::money(policy, tiers::tier_spend(&program.rules, state, snapshot.now, policy.time_zone)),
            })
        })
        .await
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: "", till: "", receipt: "" };
        self.handle("ListTransactions", &ctx, READ, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let customer = convert::customer(req.customer.as_ref(), policy)?;
            let page_size = match req.page_size {
                0 => PAGE_SIZE_DEFAULT,
                size if size <= PAGE_SIZE_MAX => size,
                _ => return Err(loyalty_core::rejection::Rejection::invalid("page_size", format!("at most {PAGE_SIZE_MAX}")).into()),
            };
            let before_seq = convert::page_token("page_token", &req.page_token)?;
            let (entries, next) = self.engine.checkout.list_transactions(program, &customer, before_seq, page_size as usize).await?;
            Ok(pb::ListTransactionsResponse {
                entries: entries.iter().map(|entry| convert::ledger_entry(policy, entry)).collect(),
                next_page_token: convert::next_page_token(next),
            })
        })
        .await
    }

    async fn authorize(&self, request: Request<pb::AuthorizeRequest>) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.receipt_id };
        self.handle(
            "Authorize",
            &ctx,
            if convert::amount_or_zero("spend_points", &req.spend_points).is_ok_and(|spend| spend.is_zero()) { QUOTE } else { CHECKOUT },
            ids,
            |call| async move {
                let program = &call.program;
                let policy = &program.policy;
                let origin = call.origin()?;
                let customer = convert::customer(req.customer.as_ref(), policy)?;
                let cmd = AuthorizeCmd {
                    receipt_id: convert::id("receipt_id", &req.receipt_id, self.limits.id_len_max)?,
                    lines: convert::lines(&req.lines, self.limits.basket_lines_max)?,
                    spend: convert::amount_or_zero("spend_points", &req.spend_points)?,
                    hold_ttl_seconds: req.hold_ttl_seconds,
                    sale: convert::sale(&req.channel, &req.coupon_codes)?,
                    presence: convert::presence(&customer, &req.customer_code)?,
                };
                let outcome = self.engine.checkout.authorize(program, &origin, &customer, cmd).await?;
                Ok(pb::AuthorizeResponse {
                    account_id: outcome.account_id,
                    lines: convert::line_earns(policy, &outcome.lines),
                    earn_total: convert::points(policy, outcome.earn_total),
                    max_spend: convert::points(policy, outcome.spend.max),
                    max_spend_limit: convert::spend_limit(outcome.spend.limit) as i32,
                    balance: Some(convert::balance(policy, &outcome.balance)),
                    hold: outcome.hold.as_ref().map(|hold| convert::hold(policy, hold)),
                    transaction_id: outcome.tx_id.unwrap_or_default(),
                    rules: convert::rule_points(policy, &outcome.rules),
                    spend_cap_percent: outcome.spend.cap_percent.normalize().to_string(),
                    spend_eligible_amount: convert::money(policy, outcome.spend.eligible),
                    spend_explanation: outcome.spend.explanation,
                    tier: outcome.tier,
                    program_version: outcome.program_version,
                })
            },
        )
        .await
    }

    async fn redeem(&self, request: Request<pb::RedeemRequest>) -> Result<Response<pb::RedeemResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.receipt_id };
        self.handle("Redeem", &ctx, CHECKOUT, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let origin = call.origin()?;
            let customer = convert::customer(req.customer.as_ref(), policy)?;
            let cmd = RedeemCmd {
                receipt_id: convert::id("receipt_id", &req.receipt_id, self.limits.id_len_max)?,
                points: convert::positive("points", &req.points, self.limits.amount_max)?,
                hold_id: match req.hold_id.as_str() {
                    "" => None,
                    raw => Some(convert::id("hold_id", raw, 128)?),
                },
                lines: convert::lines(&req.lines, self.limits.basket_lines_max)?,
                presence: convert::presence(&customer, &req.customer_code)?,
            };
            let outcome = self.engine.checkout.redeem(program, &origin, &customer, cmd).await?;
            Ok(pb::RedeemResponse {
                transaction_id: outcome.tx_id,
                account_id: outcome.account_id,
                redeemed: convert::points(policy, outcome.redeemed),
                released: convert::points(policy, outcome.released),
                balance: Some(convert::balance(policy, &outcome.balance)),
            })
        })
        .await
    }

    async fn accrue(&self, request: Request<pb::AccrueRequest>) -> Result<Response<pb::AccrueResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.receipt_id };
        self.handle("Accrue", &ctx, CHECKOUT, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let origin = call.origin()?;
            let customer = convert::customer(req.customer.as_ref(), policy)?;
            let cmd = AccrueCmd {
                receipt_id: convert::id("receipt_id", &req.receipt_id, self.limits.id_len_max)?,
                lines: convert::lines(&req.lines, self.limits.basket_lines_max)?,
                sale: convert::sale(&req.channel, &req.coupon_codes)?,
                change: convert::amount_or_zero("change_to_points", &req.change_to_points)?,
                occurred_at: convert::time("occurred_at", req.occurred_at.as_ref())?,
            };
            let outcome = self.engine.checkout.accrue(program, &origin, &customer, cmd).await?;
            Ok(pb::AccrueResponse {
                transaction_id: outcome.tx_id,
                account_id: outcome.account_id,
                lines: convert::line_earns(policy, &outcome.lines),
                earned: convert::points(policy, outcome.earned),
                paid_amount: convert::money(policy, outcome.paid_amount),
                points_spent: convert::points(policy, outcome.points_spent),
                available_from: outcome.available_from.map(convert::timestamp),
                expires_at: outcome.expires_at.map(convert::timestamp),
                balance: Some(convert::balance(policy, &outcome.balance)),
                hold_released: convert::points(policy, outcome.hold_released),
                rules: convert::rule_points(policy, &outcome.rules),
                tier: outcome.tier,
                program_version: outcome.program_version,
                change_points: convert::points(policy, outcome.change_points),
            })
        })
        .await
    }

    async fn record_sale(&self, request: Request<pb::RecordSaleRequest>) -> Result<Response<pb::RecordSaleResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.receipt_id };
        self.handle("RecordSale", &ctx, CHECKOUT, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let origin = call.origin()?;
            let cmd = SaleCmd {
                receipt_id: convert::id("receipt_id", &req.receipt_id, self.limits.id_len_max)?,
                total: convert::money_paid("total", &req.total, policy, self.limits.amount_max)?,
                occurred_at: convert::time("occurred_at", req.occurred_at.as_ref())?,
            };
            convert::currency("currency", &req.currency, policy)?;
            let outcome = self.engine.checkout.record_sale(program, &origin, cmd).await?;
            Ok(pb::RecordSaleResponse {
                transaction_id: outcome.tx_id,
                total: convert::money(policy, outcome.total),
                recorded_at: Some(convert::timestamp(outcome.recorded_at)),
            })
        })
        .await
    }

    async fn reverse(&self, request: Request<pb::ReverseRequest>) -> Result<Response<pb::ReverseResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.receipt_id };
        self.handle("Reverse", &ctx, CHECKOUT, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let origin = call.origin()?;
            let cmd = ReverseCmd {
                receipt_id: convert::id("receipt_id", &req.receipt_id, self.limits.id_len_max)?,
                reason: convert::reason(&req.reason)?,
            };
            let outcome = self.engine.checkout.reverse(program, &origin, cmd).await?;
            Ok(pb::ReverseResponse {
                transaction_id: outcome.tx_id,
                account_id: outcome.account_id,
                earn_clawed_back: convert::points(policy, outcome.earn_clawed_back),
                spent_returned: convert::points(policy, outcome.spent_returned),
                hold_released: convert::points(policy, outcome.hold_released),
                debt_created: convert::points(policy, outcome.debt_created),
                balance: Some(convert::balance(policy, &outcome.balance)),
            })
        })
        .await
    }

    async fn refund(&self, request: Request<pb::RefundRequest>) -> Result<Response<pb::RefundResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.receipt_id };
        self.handle("Refund", &ctx, CHECKOUT, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let origin = call.origin()?;
            let cmd = RefundCmd {
                receipt_id: convert::id("receipt_id", &req.receipt_id, self.limits.id_len_max)?,
                refund_id: convert::id("refund_id", &req.refund_id, self.limits.id_len_max)?,
                lines: convert::refund_lines(&req.lines, self.limits.basket_lines_max)?,
                reason: convert::reason(&req.reason)?,
                occurred_at: convert::time("occurred_at", req.occurred_at.as_ref())?,
            };
            let outcome = self.engine.checkout.refund(program, &origin, cmd).await?;
            Ok(pb::RefundResponse {
                transaction_id: outcome.tx_id,
                account_id: outcome.account_id,
                earn_clawed_back: convert::points(policy, outcome.earn_clawed_back),
                spent_returned: convert::points(policy, outcome.spent_returned),
                debt_created: convert::points(policy, outcome.debt_created),
                refunded_amount: convert::money(policy, outcome.refunded_amount),
                balance: Some(convert::balance(policy, &outcome.balance)),
            })
        })
        .await
    }

    async fn award_bonus(&self, request: Request<pb::AwardBonusRequest>) -> Result<Response<pb::AwardBonusResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.request_id };
        self.handle("AwardBonus", &ctx, BONUS, ids, |call| async move {
            let program = &call.program;
            let origin = call.origin()?;
            let customer = convert::customer(req.customer.as_ref(), &program.policy)?;
            let request_id = convert::id("request_id", &req.request_id, self.limits.id_len_max)?;
            let cmd = BonusCmd::Event { event: convert::id("event", &req.event, 64)? };
            let outcome = self.engine.checkout.bonus(program, &origin, &customer, &request_id, cmd).await?;
            Ok(convert::bonus(&program.policy, &outcome))
        })
        .await
    }

    async fn issue_customer_code(
        &self,
        request: Request<pb::IssueCustomerCodeRequest>,
    ) -> Result<Response<pb::IssueCustomerCodeResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: "" };
        let (channel, scopes) = match pb::CodeChannel::try_from(req.channel) {
            Ok(pb::CodeChannel::App) => (Some(CodeChannel::App), &[Scope::CustomerApp][..]),
            Ok(pb::CodeChannel::Message) => (Some(CodeChannel::Message), CHECKOUT),
            _ => (None, &[Scope::Checkout, Scope::CustomerApp][..]),
        };
        self.handle("IssueCustomerCode", &ctx, scopes, ids, |call| async move {
            let channel = channel
                .ok_or_else(|| loyalty_core::rejection::Rejection::invalid("channel", "CODE_CHANNEL_APP or CODE_CHANNEL_MESSAGE"))?;
            let program = &call.program;
            let customer = convert::customer(req.customer.as_ref(), &program.policy)?;
            let origin = match channel {
                CodeChannel::Message => call.origin()?,
                CodeChannel::App => {
                    loyalty_core::Origin { store_id: "app".into(), till_id: "app".into(), actor: call.caller.credential.id.clone() }
                }
            };
            let issued = self.engine.customers.issue_customer_code(program, &customer, channel, &origin).await?;
            Ok(pb::IssueCustomerCodeResponse {
                code: issued.code.unwrap_or_default(),
                expires_at: Some(convert::timestamp(issued.expires_at)),
            })
        })
        .await
    }

    async fn merge_card(&self, request: Request<pb::MergeCardRequest>) -> Result<Response<pb::MergeCardResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.request_id };
        self.handle("MergeCard", &ctx, MERGE, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let origin = call.origin()?;
            let customer = convert::customer(req.customer.as_ref(), policy)?;
            let request_id = convert::id("request_id", &req.request_id, self.limits.id_len_max)?;
            let card = loyalty_core::identity::IdentityKey {
                kind: loyalty_core::identity::IdentityKind::Card,
                value: loyalty_core::identity::normalize_card("card_number", &req.card_number)?,
            };
            let outcome = self.engine.customers.merge_card(program, &origin, &customer, &card, &request_id).await?;
            Ok(pb::MergeCardResponse {
                transaction_id: outcome.tx_id,
                account_id: outcome.account_id,
                merged_account_id: outcome.merged_account_id,
                points: convert::points(policy, outcome.points),
                buckets: outcome.buckets,
            })
        })
        .await
    }

    async fn replace_card(&self, request: Request<pb::ReplaceCardRequest>) -> Result<Response<pb::ReplaceCardResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: &req.request_id };
        self.handle("ReplaceCard", &ctx, CHECKOUT, ids, |call| async move {
            let program = &call.program;
            let policy = &program.policy;
            let origin = call.origin()?;
            let customer = convert::customer(req.customer.as_ref(), policy)?;
            let cmd = ReplaceCardCmd {
                request_id: convert::id("request_id", &req.request_id, self.limits.id_len_max)?,
                new_card: loyalty_core::identity::normalize_card("new_card_number", &req.new_card_number)?,
                old_card: match req.old_card_number.as_str() {
                    "" => None,
                    raw => Some(loyalty_core::identity::normalize_card("old_card_number", raw)?),
                },
                card_fee: convert::card_fee(&req.card_fee, self.limits.amount_max)?,
                presence: convert::presence(&customer, &req.customer_code)?,
            };
            let outcome = self.engine.customers.replace_card(program, &origin, &customer, &cmd).await?;
            Ok(pb::ReplaceCardResponse {
                transaction_id: outcome.tx_id,
                account_id: outcome.account_id,
                card_number: outcome.card_number,
                blocked_cards: outcome.blocked,
                fee_points: convert::points(policy, outcome.fee_points),
                balance: Some(convert::balance(policy, &outcome.balance)),
            })
        })
        .await
    }

    async fn update_profile(&self, request: Request<pb::UpdateProfileRequest>) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let (ctx, req) = CallContext::split(request);
        let req = &req;
        let ids = CallIds { program: &req.program_id, store: &req.store_id, till: &req.till_id, receipt: "" };
        self.handle("UpdateProfile", &ctx, PROFILE, ids, |call| async move {
            let program = &call.program;
            let customer = convert::customer(req.customer.as_ref(), &program.policy)?;
            let today = self.engine.now_in(program.id()).with_timezone(&program.policy.time_zone).date_naive();
            let change = convert::profile_change(req, today)?;
            let editor = if call.caller.credential.scopes.contains(&Scope::Admin) {
                Editor::Admin
            } else if call.caller.credential.scopes.contains(&Scope::Checkout) {
                Editor::Till
            } else {
                Editor::CustomerApp
            };
            let updated = self.engine.customers.update_profile(program, &customer, &change, editor, &call.caller.credential.id).await?;
            Ok(pb::UpdateProfileResponse {
                account_id: updated.account_id,
                changed: updated.changed,
                consents: updated.consents.iter().map(convert::consent).collect(),
                tags: updated.tags,
            })
        })
        .await
    }
}
