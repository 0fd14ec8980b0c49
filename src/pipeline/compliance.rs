//! Compliance texts of a turn: opt-out and opt-in keywords with their confirmations, and picking
//! a system text in the customer's language.

use super::finish::{complete_and_send, text_rows};
use crate::serve::state::{AppState, NumberRuntime};
use crate::store::{InboxRow, InboxState, Keyword, OptAction, OutboxKind};
use std::sync::Arc;

/// Confirms an opt-out or opt-in that `row`'s commit recorded (see `store::keywords`): the
/// confirmation is queued with the turn's completion, and no agent is called.
pub(super) async fn keyword(
    state: &AppState,
    number: &Arc<NumberRuntime>,
    row: &InboxRow,
    keyword: &Keyword,
    language: Option<&crate::policy::LanguageHint>,
) {
    let pnid = row.msg.phone_number_id.as_str();
    let opt_out = &number.policies.opt_out;
    let (text, kind, detail, action) = match keyword.action {
        OptAction::Stop => (
            &opt_out.confirmation,
            OutboxKind::OptOutConfirmation,
            "opt-out",
            "stop",
        ),
        OptAction::Resume => (
            &opt_out.resume_confirmation,
            OutboxKind::ResumeConfirmation,
            "opt-in",
            "resume",
        ),
    };
    state
        .metrics
        .opt_outs
        .with_label_values(&[pnid, action])
        .inc();
    tracing::info!(keyword = %keyword.keyword, action, "customer opt-out state changed; confirming");
    let text = localized(text, row.msg.text.as_deref(), language);
    let replies = text_rows(row, number, text, kind);
    complete_and_send(
        state,
        number,
        std::slice::from_ref(row),
        InboxState::Done,
        Some(detail),
        replies,
    )
    .await;
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
