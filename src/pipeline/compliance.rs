//! Compliance texts of a turn: opt-out and opt-in keywords with their confirmations, and picking
//! a system text in the customer's language.

use super::turn::{Known, complete_and_send, finish_all, reply_rows};
use crate::policy::{KeywordHit, KeywordKind};
use crate::state::{AppState, NumberRuntime};
use crate::store::{InboxRow, InboxState, OutboxKind};
use std::sync::Arc;

/// Handles an opt-out or opt-in keyword; returns false when the message is an ordinary turn after
/// all (START from a customer who never opted out).
pub(super) async fn keyword(
    state: &AppState,
    number: &Arc<NumberRuntime>,
    row: &InboxRow,
    hit: &KeywordHit,
    language: Option<&crate::policy::LanguageHint>,
    known: &mut Known,
) -> bool {
    let pnid = row.msg.phone_number_id.as_str();
    let customer = row.msg.customer.as_str();
    let Some(opted_out) = known.opted_out(state, pnid, customer).await else {
        return true;
    };
    let opt_out = &number.policies.opt_out;
    let said = row.msg.text.as_deref();
    match hit.kind {
        KeywordKind::Stop if opted_out => {
            // The confirmation goes out once; a repeated STOP is recorded, not answered.
            finish_all(
                state,
                std::slice::from_ref(row),
                InboxState::Done,
                "opt-out repeated",
            )
            .await;
        }
        KeywordKind::Stop => {
            if state
                .persist("turn", || {
                    state
                        .writer
                        .set_opt_out(pnid, customer, true, &hit.keyword, &row.msg.wamid)
                })
                .await
                .is_none()
            {
                return true;
            }
            known.opted_out = Some(true);
            state.opted_out.set(pnid, customer, true);
            state
                .metrics
                .opt_outs
                .with_label_values(&[pnid, "stop"])
                .inc();
            tracing::info!(keyword = %hit.keyword, "customer opted out");
            let text = localized(&opt_out.confirmation, said, language);
            let replies = reply_rows(row, number, &[text], OutboxKind::OptOutConfirmation);
            complete_and_send(
                state,
                number,
                std::slice::from_ref(row),
                InboxState::Done,
                Some("opt-out"),
                replies,
            )
            .await;
        }
        KeywordKind::Resume if opted_out => {
            if state
                .persist("turn", || {
                    state
                        .writer
                        .set_opt_out(pnid, customer, false, &hit.keyword, &row.msg.wamid)
                })
                .await
                .is_none()
            {
                return true;
            }
            known.opted_out = Some(false);
            state.opted_out.set(pnid, customer, false);
            state
                .metrics
                .opt_outs
                .with_label_values(&[pnid, "resume"])
                .inc();
            tracing::info!(keyword = %hit.keyword, "customer opted back in");
            let text = localized(&opt_out.resume_confirmation, said, language);
            let replies = reply_rows(row, number, &[text], OutboxKind::ResumeConfirmation);
            complete_and_send(
                state,
                number,
                std::slice::from_ref(row),
                InboxState::Done,
                Some("opt-in"),
                replies,
            )
            .await;
        }
        KeywordKind::Resume => return false,
    }
    true
}

/// The language to pick a system text in: the hint when it is reliable, else the best guess
/// among the languages the text exists in (whatlang is weak on short chat lines).
fn text_language(
    text: &crate::config::LocalizedText,
    message: Option<&str>,
    hint: Option<&crate::policy::LanguageHint>,
) -> Option<String> {
    if let Some(h) = hint.filter(|h| h.reliable) {
        return Some(h.code.clone());
    }
    let crate::config::LocalizedText::ByLanguage(map) = text else {
        return None;
    };
    // Restricting whatlang to the languages the text exists in makes it right on short lines,
    // but it then always answers one of them: English competes too, so an English message
    // that resembles none of them gets the default.
    let mut codes: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "default")
        .collect();
    if !codes.contains(&"en") {
        codes.push("en");
    }
    crate::policy::detect_language_among(message?, &codes)
        .map(|h| h.code)
        .filter(|code| map.contains_key(code))
}

/// `text` in the customer's language, or its default.
pub(super) fn localized(
    text: &crate::config::LocalizedText,
    message: Option<&str>,
    hint: Option<&crate::policy::LanguageHint>,
) -> String {
    let lang = text_language(text, message, hint);
    text.pick(lang.as_deref()).to_owned()
}
