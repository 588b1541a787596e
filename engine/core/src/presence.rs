//! Spending needs the customer present. A phone number is easy to learn and a till cannot check
//! who says it, so points (which are money) are spent only on proof that the customer is at the
//! till: a short-lived one-time code, shown by the program's app or sent through the program's
//! messaging, tied to the account. Earning needs only identification.
//!
//! The code is kept as a salted SHA-256 digest on the account (never in plain text), so it works
//! on any engine process and its attempts are counted exactly: every attempt is a compare-and-set
//! on the account. A wrong code counts as a failed attempt even though the call is refused; after
//! `attempts_max` failures in a row the account is locked for spending for `lockout` (earning goes
//! on), and the code is void. Issuing codes is limited per hour too, because each one may be a paid
//! message and a flood of them is a nuisance to the customer.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::fingerprint::{hex, same_digest};
use crate::identity::IdentityKind;
use crate::rejection::Rejection;

/// When spending asks for a code. The policy is per program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeRequirement {
    /// Identification is enough: whoever names the customer may spend (not recommended).
    None,
    /// A customer named by phone number needs a code; a scanned card or app token counts as
    /// presence, as a plastic card does at a till.
    #[default]
    ForPhone,
    /// Every spend needs a code.
    Always,
}

/// A program's rules for customer codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresencePolicy {
    pub requirement: CodeRequirement,
    /// How long an issued code is good for.
    pub code_ttl_seconds: u32,
    /// Failed attempts in a row that lock the account's spending.
    pub attempts_max: u32,
    pub lockout_seconds: u32,
    /// Codes one account may be issued per rolling hour.
    pub codes_per_hour_max: u32,
}

impl Default for PresencePolicy {
    fn default() -> Self {
        PresencePolicy {
            requirement: CodeRequirement::ForPhone,
            code_ttl_seconds: 180,
            attempts_max: 5,
            lockout_seconds: 1800,
            codes_per_hour_max: 5,
        }
    }
}

impl PresencePolicy {
    pub fn code_ttl(&self) -> Duration {
        Duration::seconds(i64::from(self.code_ttl_seconds))
    }

    pub fn lockout(&self) -> Duration {
        Duration::seconds(i64::from(self.lockout_seconds))
    }

    /// Whether a spend by a customer identified this way needs a code.
    pub fn needs_code(&self, identified_by: Option<IdentityKind>) -> bool {
        match self.requirement {
            CodeRequirement::None => false,
            CodeRequirement::Always => true,
            CodeRequirement::ForPhone => !matches!(identified_by, Some(IdentityKind::Card | IdentityKind::AppToken)),
        }
    }
}

/// Where a code goes to the customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeChannel {
    /// Shown by the program's app (6 digits, or the QR that carries them).
    App,
    /// Sent by the program's messaging (SMS, push) through the outbox.
    Message,
}

/// The code an account holds now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveCode {
    /// Hex SHA-256 of `salt`, a NUL and the code.
    pub digest: String,
    pub salt: String,
    #[serde(with = "crate::timecode")]
    pub expires_at: DateTime<Utc>,
    pub channel: CodeChannel,
}

/// An account's code and attempt counters, stored with the account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceState {
    pub code: Option<ActiveCode>,
    /// Failed attempts since the last success or lock-out.
    pub failures: u32,
    /// No spending (and no new code) until then.
    #[serde(default, with = "crate::timecode::option")]
    pub locked_until: Option<DateTime<Utc>>,
    /// When codes were issued within the last hour, oldest first.
    #[serde(default, with = "crate::timecode::vec")]
    pub issued: Vec<DateTime<Utc>>,
}

/// How the customer was presented on a spending call: what identified them, and the code the
/// till passed on (not part of the call's fingerprint: a retry with the same receipt is the same
/// call whatever code it carries, and a replay spends nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresenceProof {
    pub identified_by: Option<IdentityKind>,
    pub code: Option<String>,
}

/// The digest stored for a code.
pub fn digest(salt: &str, code: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update([0u8]);
    hasher.update(code.as_bytes());
    hex(&hasher.finalize())
}

impl PresenceState {
    /// Records a new code for the account (replacing any earlier one), or refuses while the account
    /// is locked or has had its codes for this hour.
    pub fn issue(
        &mut self,
        policy: &PresencePolicy,
        code: &str,
        salt: String,
        channel: CodeChannel,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Rejection> {
        if let Some(until) = self.locked_until.filter(|until| now < *until) {
            return Err(Rejection::CustomerLocked { until });
        }
        self.issued.retain(|at| now - *at < Duration::hours(1));
        if self.issued.len() >= policy.codes_per_hour_max as usize {
            let next = self.issued.first().map_or(now, |first| *first + Duration::hours(1));
            return Err(Rejection::CodeIssueLimit { next });
        }
        let expires_at = now + policy.code_ttl();
        self.issued.push(now);
        self.code = Some(ActiveCode { digest: digest(&salt, code), salt, expires_at, channel });
        Ok(expires_at)
    }

    /// Checks a spending call's proof. On success the code is used up (one code, one spend). A
    /// wrong, expired or missing-but-required code counts as a failure and changes the state,
    /// which the caller must store even though the call is refused ([`Rejection::records_attempt`]).
    pub fn verify(&mut self, policy: &PresencePolicy, proof: &PresenceProof, now: DateTime<Utc>) -> Result<(), Rejection> {
        if !policy.needs_code(proof.identified_by) {
            return Ok(());
        }
        if let Some(until) = self.locked_until.filter(|until| now < *until) {
            return Err(Rejection::CustomerLocked { until });
        }
        let Some(presented) = proof.code.as_deref().filter(|code| !code.is_empty()) else {
            // Asking is not an attempt: nothing was guessed.
            return Err(Rejection::CustomerCodeRequired);
        };
        let matches =
            self.code.as_ref().is_some_and(|code| now < code.expires_at && same_digest(&code.digest, &digest(&code.salt, presented)));
        if matches {
            self.code = None;
            self.failures = 0;
            return Ok(());
        }
        self.failures += 1;
        if self.failures >= policy.attempts_max {
            let until = now + policy.lockout();
            self.locked_until = Some(until);
            self.failures = 0;
            self.code = None;
            return Err(Rejection::CustomerLocked { until });
        }
        Err(Rejection::CustomerCodeInvalid { attempts_left: policy.attempts_max - self.failures })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 6, 0, 0).single().expect("valid time")
    }

    fn by_phone(code: &str) -> PresenceProof {
        PresenceProof { identified_by: Some(IdentityKind::Phone), code: Some(code.to_owned()) }
    }

    #[test]
    fn the_right_code_spends_once() {
        let policy = PresencePolicy::default();
        let mut state = PresenceState::default();
        state.issue(&policy, "123456", "s1".into(), CodeChannel::App, now()).expect("issued");
        assert_eq!(state.verify(&policy, &by_phone("123456"), now()), Ok(()));
        assert_eq!(state.verify(&policy, &by_phone("123456"), now()), Err(Rejection::CustomerCodeInvalid { attempts_left: 4 }));
    }

    #[test]
    fn an_expired_code_is_a_failed_attempt() {
        let policy = PresencePolicy::default();
        let mut state = PresenceState::default();
        state.issue(&policy, "123456", "s1".into(), CodeChannel::App, now()).expect("issued");
        let later = now() + policy.code_ttl();
        assert_eq!(state.verify(&policy, &by_phone("123456"), later), Err(Rejection::CustomerCodeInvalid { attempts_left: 4 }));
    }

    #[test]
    fn failures_in_a_row_lock_spending_and_void_the_code() {
        let policy = PresencePolicy::default();
        let mut state = PresenceState::default();
        state.issue(&policy, "123456", "s1".into(), CodeChannel::Message, now()).expect("issued");
        for left in (1..policy.attempts_max).rev() {
            assert_eq!(state.verify(&policy, &by_phone("000000"), now()), Err(Rejection::CustomerCodeInvalid { attempts_left: left }));
        }
        let until = now() + policy.lockout();
        assert_eq!(state.verify(&policy, &by_phone("000000"), now()), Err(Rejection::CustomerLocked { until }));
        // Even the right code is refused while locked, and it was voided anyway.
        assert_eq!(state.verify(&policy, &by_phone("123456"), now()), Err(Rejection::CustomerLocked { until }));
        assert!(matches!(state.issue(&policy, "1", "s".into(), CodeChannel::App, now()), Err(Rejection::CustomerLocked { .. })));
        // After the lock-out a new code works.
        state.issue(&policy, "654321", "s2".into(), CodeChannel::App, until).expect("issued after lock-out");
        assert_eq!(state.verify(&policy, &by_phone("654321"), until), Ok(()));
    }

    #[test]
    fn a_card_is_presence_under_the_default_policy_but_not_under_always() {
        let mut state = PresenceState::default();
        let card = PresenceProof { identified_by: Some(IdentityKind::Card), code: None };
        assert_eq!(state.verify(&PresencePolicy::default(), &card, now()), Ok(()));
        let always = PresencePolicy { requirement: CodeRequirement::Always, ..PresencePolicy::default() };
        assert_eq!(state.verify(&always, &card, now()), Err(Rejection::CustomerCodeRequired));
        let none = PresencePolicy { requirement: CodeRequirement::None, ..PresencePolicy::default() };
        assert_eq!(state.verify(&none, &PresenceProof::default(), now()), Ok(()));
    }

    #[test]
    fn issuing_is_limited_per_hour() {
        let policy = PresencePolicy::default();
        let mut state = PresenceState::default();
        for i in 0..policy.codes_per_hour_max {
            state.issue(&policy, "111111", format!("s{i}"), CodeChannel::Message, now()).expect("within the limit");
        }
        let next = now() + Duration::hours(1);
        assert_eq!(state.issue(&policy, "111111", "x".into(), CodeChannel::Message, now()), Err(Rejection::CodeIssueLimit { next }));
        assert!(state.issue(&policy, "111111", "y".into(), CodeChannel::Message, next).is_ok());
    }

    #[test]
    fn the_stored_digest_is_not_the_code() {
        let policy = PresencePolicy::default();
        let mut state = PresenceState::default();
        state.issue(&policy, "123456", "salt".into(), CodeChannel::App, now()).expect("issued");
        let code = state.code.expect("a code");
        assert!(!code.digest.contains("123456"));
        assert_eq!(code.digest.len(), 64);
    }
}
