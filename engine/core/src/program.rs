//! The policy of one loyalty program (tenant): currency, rounding, pending period, expiry, holds,
//! spending cap and refund policy. Read-only during an operation; the earning rule itself lives
//! in [`crate::rules`].

use chrono::{DateTime, Duration, Months, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::identity::PhonePlan;

/// How fractional points are rounded to the program's points scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointsRounding {
    /// Toward zero: the customer never gets a fraction the program did not promise (the default).
    Down,
    /// Half away from zero.
    HalfUp,
    /// Banker's rounding.
    HalfEven,
}

impl PointsRounding {
    fn strategy(self) -> RoundingStrategy {
        match self {
            PointsRounding::Down => RoundingStrategy::ToZero,
            PointsRounding::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            PointsRounding::HalfEven => RoundingStrategy::MidpointNearestEven,
        }
    }
}

/// When earned points become spendable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingRule {
    /// At once.
    None,
    /// From the start of the next day in the program's time zone (the default).
    NextDay,
    /// After this many hours.
    Hours(u32),
}

/// What happens when a refund must claw back points the customer has already spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundPolicy {
    /// The shortfall becomes debt, paid off by the next points credited (the default).
    AllowNegative,
    /// The refund is refused; the store deducts the value from the money it returns instead.
    Reject,
}

/// One program's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramPolicy {
    pub program_id: String,
    /// ISO 4217 code, e.g. "KZT".
    pub currency: String,
    pub time_zone: Tz,
    /// Decimal places of points: 0 means whole points.
    pub points_scale: u32,
    pub rounding: PointsRounding,
    /// Decimal places of the currency (2 for tenge and tiyn).
    pub money_scale: u32,
    pub pending: PendingRule,
    /// Earned points expire this many months after they were earned.
    pub expiry_months: u32,
    /// Default lifetime of a hold.
    pub hold_ttl_seconds: u32,
    /// Largest hold lifetime a till may ask for.
    pub hold_ttl_max_seconds: u32,
    /// Share of a receipt's total that points may pay, in percent (0..=100).
    pub redeem_cap_percent: Decimal,
    pub refund_policy: RefundPolicy,
    pub phone_plan: PhonePlan,
    /// When spending needs the customer's one-time code, and its limits.
    pub presence: crate::presence::PresencePolicy,
    /// How many days late a till may send a receipt it made offline (`offline`).
    pub offline_days_max: u32,
    /// Retention: receipts' stored first answers older than this many days are removed by the
    /// sweep (`ReceiptState::compact`); 0 keeps them for ever.
    #[serde(default)]
    pub answers_kept_days: u32,
}

impl ProgramPolicy {
    /// A policy with the defaults of the supermarket chain in domain.md.
    pub fn with_defaults(program_id: impl Into<String>) -> Self {
        ProgramPolicy {
            program_id: program_id.into(),
            currency: "KZT".into(),
            time_zone: chrono_tz::Asia::Almaty,
            points_scale: 0,
            rounding: PointsRounding::Down,
            money_scale: 2,
            pending: PendingRule::NextDay,
            expiry_months: 24,
            hold_ttl_seconds: 15 * 60,
            hold_ttl_max_seconds: 60 * 60,
            redeem_cap_percent: Decimal::ONE_HUNDRED,
            refund_policy: RefundPolicy::AllowNegative,
            phone_plan: PhonePlan::default(),
            // Bare domain policies (tests, benches) spend without codes; programs built from the
            // configuration get the product default, `for_phone` (see `ProgramConfig`).
            presence: crate::presence::PresencePolicy { requirement: crate::presence::CodeRequirement::None, ..Default::default() },
            offline_days_max: 7,
            answers_kept_days: 400,
        }
    }

    /// Rounds a computed points amount to the program's scale with its rule.
    pub fn round_points(&self, points: Decimal) -> Decimal {
        points.round_dp_with_strategy(self.points_scale, self.rounding.strategy())
    }

    /// Rounds toward zero at the points scale: for caps and shares, which must never exceed.
    pub fn floor_points(&self, points: Decimal) -> Decimal {
        points.round_dp_with_strategy(self.points_scale, RoundingStrategy::ToZero)
    }

    /// Rounds toward zero at the money scale.
    pub fn floor_money(&self, money: Decimal) -> Decimal {
        money.round_dp_with_strategy(self.money_scale, RoundingStrategy::ToZero)
    }

    /// The finer of the points and money scales: where shares of a receipt are allocated.
    pub fn share_scale(&self) -> u32 {
        self.points_scale.max(self.money_scale)
    }

    /// When points earned at `earned_at` become spendable.
    pub fn available_from(&self, earned_at: DateTime<Utc>) -> DateTime<Utc> {
        match self.pending {
            PendingRule::None => earned_at,
            PendingRule::Hours(hours) => earned_at + Duration::hours(i64::from(hours)),
            PendingRule::NextDay => {
                let next_day = earned_at.with_timezone(&self.time_zone).date_naive() + Duration::days(1);
                self.start_of_local_day(next_day).unwrap_or(earned_at + Duration::days(1))
            }
        }
    }

    /// When points earned at `earned_at` expire: at the end of the local day `expiry_months` after
    /// the day they were earned (points earned on 10 March 2026 are good through 10 March 2028).
    /// Whole days keep the rule easy to state on a receipt, and let one day's earnings share a bucket.
    pub fn expires_at(&self, earned_at: DateTime<Utc>) -> DateTime<Utc> {
        let local_day = earned_at.with_timezone(&self.time_zone).date_naive();
        let Some(last_day) = local_day.checked_add_months(Months::new(self.expiry_months)) else {
            return DateTime::<Utc>::MAX_UTC;
        };
        self.start_of_local_day(last_day + Duration::days(1)).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The start of the local day `days` days after the day of `at`: the end of something good for
    /// `days` days counting today.
    pub fn start_of_day_after(&self, at: DateTime<Utc>, days: u32) -> DateTime<Utc> {
        let day = at.with_timezone(&self.time_zone).date_naive() + Duration::days(i64::from(days));
        self.start_of_local_day(day).unwrap_or(at + Duration::days(i64::from(days)))
    }

    /// The first instant of a local date (DST gaps at midnight move it to the first valid instant).
    fn start_of_local_day(&self, day: chrono::NaiveDate) -> Option<DateTime<Utc>> {
        let midnight = day.and_time(NaiveTime::MIN);
        self.time_zone
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| self.time_zone.from_local_datetime(&(midnight + Duration::hours(1))).earliest())
            .map(|start| start.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_day_starts_at_local_midnight() {
        let program = ProgramPolicy::with_defaults("p");
        // 2026-03-10 20:30 UTC is 2026-03-11 01:30 in Almaty (UTC+5): spendable from 2026-03-12 00:00
        // local, which is 2026-03-11 19:00 UTC.
        let earned = Utc.with_ymd_and_hms(2026, 3, 10, 20, 30, 0).single().expect("valid time");
        let from = program.available_from(earned);
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 3, 11, 19, 0, 0).single().expect("valid time"));
    }

    #[test]
    fn points_expire_after_the_configured_months() {
        let program = ProgramPolicy::with_defaults("p");
        // 2026-01-31 12:00 UTC is 17:00 in Almaty: good through 2028-01-31 local, which ends at
        // 2028-02-01 00:00 local = 2028-01-31 19:00 UTC.
        let earned = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).single().expect("valid time");
        assert_eq!(program.expires_at(earned), Utc.with_ymd_and_hms(2028, 1, 31, 19, 0, 0).single().expect("valid time"));
    }
}
