//! The customer's profile after enrolment: name, birth date, gender, segment tags and consent per
//! messaging channel, changed from the till, the program's app or the admin API.
//!
//! A change names only what it changes; the rest stays. Applying it says which fields changed (an
//! unchanged profile writes nothing) and notes them in the account's audit trail by name, never by
//! value: personal data stays out of the audit trail as it stays out of logs. Rules read the
//! account's tags and birth date, so they see a change from the next call on.

use chrono::{DateTime, NaiveDate, Utc};

use crate::account::AccountState;
pub use crate::account::{Consent, ConsentChannel, Gender};
use crate::rejection::Rejection;

/// Who asks for a change: the customer's own app may not give itself segment tags (tags earn
/// offers), nor move a birth date once set (birthday bonuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Editor {
    /// The till, with the customer and their documents in front of the cashier.
    Till,
    /// The program's app, on the customer's word alone.
    CustomerApp,
    /// The program's administrators.
    Admin,
}

/// What one call changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileChange {
    /// `Some(None)` clears the name.
    pub name: Option<Option<String>>,
    /// `Some(None)` clears the birth date.
    pub birth_date: Option<Option<NaiveDate>>,
    /// `Some(None)` clears the gender.
    pub gender: Option<Option<Gender>>,
    /// The whole new list of tags (normalised: sorted, each once).
    pub tags: Option<Vec<String>>,
    /// At most one answer per channel (see [`ProfileChange::check`]).
    pub consents: Vec<(ConsentChannel, bool)>,
}

impl ProfileChange {
    /// Refuses a change that names a channel twice, or that the editor may not make.
    pub fn check(&self, editor: Editor) -> Result<(), Rejection> {
        for (index, (channel, _)) in self.consents.iter().enumerate() {
            if self.consents[..index].iter().any(|(earlier, _)| earlier == channel) {
                return Err(Rejection::invalid(format!("consents[{index}].channel"), format!("{} is given twice", channel.name())));
            }
        }
        if editor == Editor::CustomerApp && self.tags.is_some() {
            return Err(Rejection::invalid("tags", "segment tags are set by the till or the program's administrators, not the app"));
        }
        Ok(())
    }

    /// Applies the change to the account at `now` on behalf of `actor`. Returns the names of the
    /// fields that changed (`consent.sms=granted` for consents), empty when nothing did; the audit
    /// trail notes a non-empty change.
    pub fn apply(&self, state: &mut AccountState, editor: Editor, actor: &str, now: DateTime<Utc>) -> Result<Vec<String>, Rejection> {
        self.check(editor)?;
        if state.erased_at.is_some() {
            return Err(Rejection::CustomerNotFound);
        }
        let mut changed = Vec::new();
        if let Some(name) = &self.name
            && state.profile.name != *name
        {
            state.profile.name = name.clone();
            changed.push("name".to_owned());
        }
        if let Some(birth_date) = self.birth_date
            && state.profile.birth_date != birth_date
        {
            if editor == Editor::CustomerApp && state.profile.birth_date.is_some() {
                return Err(Rejection::invalid("birth_date", "already set: the till or the program's administrators change it"));
            }
            state.profile.birth_date = birth_date;
            changed.push("birth_date".to_owned());
        }
        if let Some(gender) = self.gender
            && state.profile.gender != gender
        {
            state.profile.gender = gender;
            changed.push("gender".to_owned());
        }
        if let Some(tags) = &self.tags {
            let mut tags = tags.clone();
            tags.sort();
            tags.dedup();
            if state.tags != tags {
                state.tags = tags;
                changed.push("tags".to_owned());
            }
        }
        for &(channel, granted) in &self.consents {
            let current = state.consents.iter_mut().find(|consent| consent.channel == channel);
            match current {
                Some(consent) if consent.granted == granted => continue,
                Some(consent) => {
                    consent.granted = granted;
                    consent.changed_at = now;
                }
                None => {
                    state.consents.push(Consent { channel, granted, changed_at: now });
                    state.consents.sort_by_key(|consent| consent.channel);
                }
            }
            changed.push(format!("consent.{}={}", channel.name(), if granted { "granted" } else { "withdrawn" }));
        }
        if !changed.is_empty() {
            state.note(now, actor, format!("profile updated: {}", changed.join(", ")));
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountState {
        AccountState::new("acc-1".into(), true, DateTime::UNIX_EPOCH)
    }

    fn date(raw: &str) -> NaiveDate {
        raw.parse().expect("a date")
    }

    #[test]
    fn only_the_named_fields_change_and_the_audit_names_them_without_values() {
        let mut state = account();
        state.profile.name = Some("Aigerim".into());
        let now = DateTime::UNIX_EPOCH + chrono::Duration::days(1);
        let change = ProfileChange {
            birth_date: Some(Some(date("1990-03-12"))),
            gender: Some(Some(Gender::Female)),
            tags: Some(vec!["pensioner".into(), "large_family".into(), "pensioner".into()]),
            consents: vec![(ConsentChannel::Sms, true), (ConsentChannel::Email, false)],
            ..ProfileChange::default()
        };
        let changed = change.apply(&mut state, Editor::Till, "till-key", now).expect("applies");
        assert_eq!(changed, ["birth_date", "gender", "tags", "consent.sms=granted", "consent.email=withdrawn"]);
        assert_eq!(state.profile.name.as_deref(), Some("Aigerim"), "not named: unchanged");
        assert_eq!(state.tags, ["large_family", "pensioner"], "sorted, each once");
        assert_eq!(
            state.consents,
            [
                Consent { channel: ConsentChannel::Sms, granted: true, changed_at: now },
                Consent { channel: ConsentChannel::Email, granted: false, changed_at: now }
            ]
        );
        let note = state.audit.last().expect("noted");
        assert_eq!((note.actor.as_str(), note.at), ("till-key", now));
        assert!(!note.what.contains("1990") && note.what.contains("birth_date"), "{}", note.what);

        // The same change again changes nothing, and notes nothing.
        let later = now + chrono::Duration::days(1);
        assert!(change.apply(&mut state, Editor::Till, "till-key", later).expect("applies").is_empty());
        assert_eq!(state.audit.len(), 1);
        assert_eq!(state.consents[0].changed_at, now, "an unchanged answer keeps its time");

        // Clearing.
        let clear = ProfileChange { name: Some(None), gender: Some(None), ..ProfileChange::default() };
        assert_eq!(clear.apply(&mut state, Editor::Admin, "admin", later).expect("applies"), ["name", "gender"]);
        assert_eq!((state.profile.name.clone(), state.profile.gender), (None, None));
    }

    #[test]
    fn the_app_may_not_tag_its_customer_nor_move_a_birth_date_once_set() {
        let mut state = account();
        let now = DateTime::UNIX_EPOCH;
        let tags = ProfileChange { tags: Some(vec!["veteran".into()]), ..ProfileChange::default() };
        assert_eq!(tags.apply(&mut state, Editor::CustomerApp, "app", now).expect_err("refused").code(), "INVALID_ARGUMENT");
        let first = ProfileChange { birth_date: Some(Some(date("1990-03-12"))), ..ProfileChange::default() };
        assert_eq!(first.apply(&mut state, Editor::CustomerApp, "app", now).expect("the first is the customer's"), ["birth_date"]);
        let moved = ProfileChange { birth_date: Some(Some(date("1990-06-01"))), ..ProfileChange::default() };
        let refused = moved.apply(&mut state, Editor::CustomerApp, "app", now).expect_err("refused");
        assert!(matches!(&refused, Rejection::InvalidArgument { field, .. } if field == "birth_date"), "{refused:?}");
        assert_eq!(moved.apply(&mut state, Editor::Till, "till", now).expect("the till may"), ["birth_date"]);
    }

    #[test]
    fn a_channel_given_twice_is_refused_naming_the_second() {
        let change =
            ProfileChange { consents: vec![(ConsentChannel::Push, true), (ConsentChannel::Push, false)], ..ProfileChange::default() };
        let refused = change.apply(&mut account(), Editor::Till, "till", DateTime::UNIX_EPOCH).expect_err("refused");
        assert!(matches!(&refused, Rejection::InvalidArgument { field, .. } if field == "consents[1].channel"), "{refused:?}");
    }

    #[test]
    fn an_erased_customer_has_no_profile_to_change() {
        let mut state = account();
        state.erased_at = Some(DateTime::UNIX_EPOCH);
        let change = ProfileChange { name: Some(Some("X".into())), ..ProfileChange::default() };
        assert_eq!(change.apply(&mut state, Editor::Admin, "admin", DateTime::UNIX_EPOCH), Err(Rejection::CustomerNotFound));
    }
}
