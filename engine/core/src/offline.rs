//! Receipts a till sends late. A till that lost its connection keeps selling and sends its
//! receipts when it is back, each with the time of the sale (`occurred_at`). The sale is then
//! evaluated as of that time (rules, tier, birthday windows, budget periods, the points' pending
//! period and expiry; the server picks the rules version in force then), and posted now.
//!
//! Lateness is bounded per program (`offline_days_max`): a receipt older than that, or from the
//! future beyond a small allowance for a till's clock, is refused naming `occurred_at`.

use chrono::{DateTime, Duration, Utc};

use crate::program::ProgramPolicy;
use crate::rejection::Rejection;

/// How far ahead of the engine's clock a till's clock may run before its time is refused.
pub const CLOCK_AHEAD_ALLOWED: Duration = Duration::minutes(5);

/// The time a sale is evaluated at: `occurred_at` when given and within bounds, else `now`. A
/// time a little ahead of `now` (a till's clock) counts as `now`.
pub fn sale_time(program: &ProgramPolicy, now: DateTime<Utc>, occurred_at: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, Rejection> {
    let Some(at) = occurred_at else {
        return Ok(now);
    };
    if at > now + CLOCK_AHEAD_ALLOWED {
        return Err(Rejection::invalid(
            "occurred_at",
            format!("{} is in the future (the engine's clock reads {})", at.to_rfc3339(), now.to_rfc3339()),
        ));
    }
    let oldest = now - Duration::days(i64::from(program.offline_days_max));
    if at < oldest {
        return Err(Rejection::invalid(
            "occurred_at",
            format!("{} is older than this program takes receipts late ({} days)", at.to_rfc3339(), program.offline_days_max),
        ));
    }
    Ok(at.min(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sale_within_the_bound_is_evaluated_at_its_time_and_others_are_refused_naming_the_field() {
        let program = ProgramPolicy { offline_days_max: 7, ..ProgramPolicy::with_defaults("p") };
        let now = DateTime::UNIX_EPOCH + Duration::days(100);
        assert_eq!(sale_time(&program, now, None), Ok(now));
        let three_days_ago = now - Duration::days(3);
        assert_eq!(sale_time(&program, now, Some(three_days_ago)), Ok(three_days_ago));
        assert_eq!(sale_time(&program, now, Some(now - Duration::days(7))), Ok(now - Duration::days(7)), "the bound itself");
        assert_eq!(sale_time(&program, now, Some(now + Duration::minutes(2))), Ok(now), "a till's clock a little ahead");
        for refused in [now - Duration::days(7) - Duration::seconds(1), now + Duration::minutes(6)] {
            let rejection = sale_time(&program, now, Some(refused)).expect_err("refused");
            assert!(matches!(&rejection, Rejection::InvalidArgument { field, .. } if field == "occurred_at"), "{rejection:?}");
        }
    }
}
