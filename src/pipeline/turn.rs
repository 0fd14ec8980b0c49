//! One unit of conversation work: call the number's agent for an inbound message, queue the
//! reply in the outbox with the turn's completion (one transaction), then send it.

use super::Work;
use crate::agent::{Turn, TurnCustomer, TurnMessage, TurnNumber};
use crate::outbox::{self, Outcome};
use crate::state::AppState;
use crate::store::{InboxRow, InboxState, NewOutbox, StoreError};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Meta's limit on a text body, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// Handles one unit of work to the end (or until shutdown interrupts it).
pub async fn run(state: &AppState, work: Work) {
    match work {
        Work::Inbound(row) => {
            let span = tracing::info_span!("turn", wamid = %row.msg.wamid, phone_number_id = %row.msg.phone_number_id);
            inbound(state, row).instrument(span).await
        }
        Work::Resume(row) => {
            let span = tracing::info_span!("resume", outbox_id = row.id, phone_number_id = %row.phone_number_id);
            async {
                let snap = state.snapshot.load_full();
                match snap.numbers.get(&row.phone_number_id) {
                    Some(number) => {
                        outbox::resume(state, number, &row).await;
                    }
                    None => {
                        tracing::warn!("reply for a number no longer declared; giving it up");
                        let _ = state
                            .store
                            .outbox_give_up(
                                row.id,
                                crate::store::OutboxState::Failed,
                                None,
                                "number no longer declared in the config",
                            )
                            .await;
                    }
                }
            }
            .instrument(span)
            .await
        }
    }
}

async fn inbound(state: &AppState, row: InboxRow) {
    let snap = state.snapshot.load_full();
    let Some(number) = snap.numbers.get(&row.msg.phone_number_id).cloned() else {
        finish(
            state,
            &row,
            InboxState::Skipped,
            Some("number no longer declared"),
            &[],
        )
        .await;
        return;
    };
    if !number.cfg.enabled {
        finish(
            state,
            &row,
            InboxState::Skipped,
            Some("number disabled"),
            &[],
        )
        .await;
        return;
    }
    if snap.config.policies.mark_read {
        let graph = snap.graph.clone();
        let token = number.cfg.access_token.clone();
        let pnid = row.msg.phone_number_id.clone();
        let wamid = row.msg.wamid.clone();
        state.tracker.spawn(async move {
            if let Err(e) = graph.mark_read(&pnid, token.expose(), &wamid, false).await {
                tracing::warn!(%wamid, error = %e, "could not mark the customer's message read");
            }
        });
    }
    let turn = Turn {
        number: TurnNumber {
            phone_number_id: row.msg.phone_number_id.clone(),
            display_name: number.cfg.display_name.clone(),
        },
        customer: TurnCustomer {
            wa_id: row.msg.wa_id.clone(),
            user_id: row.msg.user_id.clone(),
            name: row.msg.customer_name.clone(),
        },
        message: TurnMessage {
            id: row.msg.wamid.clone(),
            kind: row.msg.msg_type.clone(),
            text: row.msg.text.clone(),
            timestamp: row.msg.meta_ts,
            content: serde_json::from_str(&row.msg.payload).unwrap_or(serde_json::Value::Null),
            structured: serde_json::Value::Null,
        },
        language: None,
        history: Vec::new(),
    };
    let started = Instant::now();
    let answer = tokio::select! {
        a = number.agent.reply(&turn) => a,
        // The turn is not recorded: it runs again at the next start.
        _ = state.shutdown.cancelled() => return,
    };
    let (result, state_after, detail, replies) = match answer {
        Ok(Some(text)) => {
            let replies = reply_rows(&row, &text);
            ("ok", InboxState::Done, None, replies)
        }
        Ok(None) => ("empty", InboxState::Done, None, Vec::new()),
        Err(e) => {
            tracing::warn!(agent = %number.agent_name, error = %e, "agent gave no answer");
            ("error", InboxState::Failed, Some(e.to_string()), Vec::new())
        }
    };
    state
        .metrics
        .agent_seconds
        .with_label_values(&[&number.agent_name, result])
        .observe(started.elapsed().as_secs_f64());
    let Some(rows) = finish(state, &row, state_after, detail.as_deref(), &replies).await else {
        return;
    };
    for out in rows {
        let outcome = outbox::deliver(state, &number, &out).await;
        if outcome == Outcome::Sent {
            let age_ms = crate::store::now_ms() - row.received_at;
            state
                .metrics
                .reply_seconds
                .observe(Duration::from_millis(age_ms.max(0) as u64).as_secs_f64());
        }
        if outcome == Outcome::Interrupted {
            return;
        }
    }
}

/// Records the end of a turn, retrying storage until it works or shutdown.
async fn finish(
    state: &AppState,
    row: &InboxRow,
    to: InboxState,
    detail: Option<&str>,
    replies: &[NewOutbox],
) -> Option<Vec<crate::store::OutboxRow>> {
    let mut delay = Duration::from_millis(50);
    loop {
        let r: Result<_, StoreError> = state
            .store
            .complete_turn(row, to, detail, replies, &[])
            .await;
        match r {
            Ok(rows) => return Some(rows),
            Err(e) => {
                tracing::warn!(error = %e, "could not record the turn; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = state.shutdown.cancelled() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The outbox rows for a reply text: split into parts Meta accepts.
fn reply_rows(row: &InboxRow, text: &str) -> Vec<NewOutbox> {
    let (recipient, kind) = match (&row.msg.wa_id, &row.msg.user_id) {
        (Some(wa), _) => (wa.clone(), "wa_id"),
        (None, Some(user)) => (user.clone(), "user_id"),
        (None, None) => (row.msg.customer.clone(), "wa_id"),
    };
    split_text(text, MAX_TEXT_CHARS)
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let preview = part.contains("https://") || part.contains("http://");
            NewOutbox {
                recipient: recipient.clone(),
                recipient_kind: kind.into(),
                part: i as i64,
                payload: serde_json::json!({
                    "type": "text",
                    "text": { "body": part, "preview_url": preview },
                })
                .to_string(),
                kind: crate::store::OutboxKind::Reply,
            }
        })
        .collect()
}

/// Splits `text` into parts of at most `max` characters, preferring paragraph, then line, then
/// word boundaries.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > max {
        let cut = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..cut];
        // A boundary right after the window keeps the whole window.
        let at = if rest[cut..].starts_with(char::is_whitespace) {
            Some(cut)
        } else {
            None
        };
        let at = at
            .or_else(|| window.rfind("\n\n"))
            .or_else(|| window.rfind('\n'))
            .or_else(|| window.rfind(' '))
            .filter(|&i| i > 0)
            .unwrap_or(cut);
        parts.push(rest[..at].trim_end().to_owned());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::split_text;

    #[test]
    fn split_respects_limit_and_boundaries() {
        assert_eq!(split_text("hello", 4096), vec!["hello"]);
        assert!(split_text("   ", 10).is_empty());
        let parts = split_text("aaaa bbbb cccc", 9);
        assert_eq!(parts, vec!["aaaa bbbb", "cccc"]);
        let parts = split_text("para one\n\npara two is longer", 20);
        assert_eq!(parts, vec!["para one", "para two is longer"]);
        let long = "x".repeat(10_000);
        let parts = split_text(&long, 4096);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![4096, 4096, 1808]
        );
        let multibyte = "é".repeat(5000);
        assert!(
            split_text(&multibyte, 4096)
                .iter()
                .all(|p| p.chars().count() <= 4096)
        );
    }
}
