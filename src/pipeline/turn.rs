//! One conversation turn: compliance keywords, message kinds, the agent call with history and a
//! language hint, reply shaping, then the replies queued (with the turn's completion, in one
//! transaction) and sent in order.

use crate::agent::{HistoryTurn, LanguageHint, Role, Turn, TurnCustomer, TurnMessage, TurnNumber};
use crate::ingress::envelope::InboundMessage;
use crate::outbox::{self, Outcome};
use crate::serve::state::{AppState, NumberRuntime};
use crate::store::{InboxRow, InboxState, NewOutbox, OutboxKind, OutboxRow, OutboxState};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The quiet period to wait for more messages before `row`'s turn, if coalescing applies to it.
pub fn coalesce_window(state: &AppState, row: &InboxRow) -> Option<Duration> {
    let snap = state.snapshot.load();
    let number = snap.numbers.get(row.msg.phone_number_id.as_str())?;
    let quiet = number.policies.coalesce.get();
    (!quiet.is_zero() && coalescable(state, row)).then_some(quiet)
}

/// Whether `row` may join another message's turn: plain customer text that is not a keyword
/// (the commit kept its keyword only if it changed the customer's opt-out state).
pub fn coalescable(_state: &AppState, row: &InboxRow) -> bool {
    row.msg.msg_type == "text" && row.msg.keyword.is_none()
}

/// Resumes a reply found open at start.
pub async fn resume(state: &AppState, row: OutboxRow) {
    let span =
        tracing::info_span!("resume", outbox_id = row.id, phone_number_id = %row.phone_number_id);
    async {
        let snap = state.snapshot.load_full();
        match snap.numbers.get(row.phone_number_id.as_str()) {
            Some(number) => {
                outbox::resume(state, number, &row).await;
            }
            None => {
                tracing::warn!("reply for a number no longer declared; giving it up");
                let _ = state
                    .writer
                    .outbox_give_up(
                        row.id,
                        OutboxState::Failed,
                        None,
                        "number no longer declared in the config",
                        false,
                    )
                    .await;
            }
        }
    }
    .instrument(span)
    .await
}

/// What a conversation worker already knows about its customer, so a turn need not ask the
/// database again (several replicas; one process reads its in-memory set every time).
/// Opt-outs are committed with the keyword, possibly by another replica, but each one also
/// reaches this worker as the conversation's next message, which sets it here.
#[derive(Debug, Default)]
pub struct Known {
    /// Whether the customer opted out of this number, once read.
    pub opted_out: Option<bool>,
}

impl Known {
    /// Whether the customer opted out; `None` when shutting down before it could be read.
    pub(super) async fn opted_out(
        &mut self,
        state: &AppState,
        pnid: &str,
        customer: &str,
    ) -> Option<bool> {
        if !state.store.is_shared() {
            return state.opted_out_now(pnid, customer).await;
        }
        if let Some(known) = self.opted_out {
            return Some(known);
        }
        // With several replicas this worker holds the conversation's lease, so no one else
        // changes the answer until it gives the conversation back: one read per lease.
        let now = state.opted_out_now(pnid, customer).await?;
        self.opted_out = Some(now);
        Some(now)
    }
}

/// Handles one turn made of `rows` (one message, or several coalesced ones), in order.
pub async fn inbound(state: &AppState, rows: Vec<InboxRow>, known: &mut Known) {
    let first = &rows[0];
    let span = tracing::info_span!(
        "turn",
        wamid = %first.msg.wamid,
        phone_number_id = %first.msg.phone_number_id,
        messages = rows.len()
    );
    run(state, &rows, known).instrument(span).await
}

async fn run(state: &AppState, rows: &[InboxRow], known: &mut Known) {
    let first = &rows[0];
    let snap = state.snapshot.load_full();
    let Some(number) = snap
        .numbers
        .get(first.msg.phone_number_id.as_str())
        .cloned()
    else {
        finish_all(
            state,
            rows,
            InboxState::Skipped,
            "number no longer declared",
        )
        .await;
        return;
    };
    if !number.cfg.enabled {
        finish_all(state, rows, InboxState::Skipped, "number disabled").await;
        return;
    }
    if state.disconnected.contains(&first.msg.phone_number_id) {
        finish_all(state, rows, InboxState::Skipped, "number disconnected").await;
        return;
    }
    let pnid = first.msg.phone_number_id.as_str();
    let customer = first.msg.customer.as_str();
    let text = joined_text(rows);
    // Only agents that take the hint need it (detection costs a few microseconds per message);
    // system texts pick their language among their own translations.
    let language = match number.agent.agent().kind() {
        "echo" => None,
        _ => text.as_deref().and_then(crate::policy::detect_language),
    };

    // A keyword that changed the customer's opt-out state when it was committed: confirm it.
    if let Some(keyword) = &first.msg.keyword {
        super::compliance::keyword(state, &number, first, keyword, language.as_ref(), known).await;
        return;
    }
    let Some(opted_out) = known.opted_out(state, pnid, customer).await else {
        return;
    };
    if opted_out {
        state
            .metrics
            .opt_out_suppressed
            .with_label_values(&[pnid])
            .inc();
        finish_all(state, rows, InboxState::Skipped, "customer opted out").await;
        return;
    }
    // Messages that are not a customer turn.
    match first.msg.msg_type.as_str() {
        "reaction" if !number.policies.reactions_start_turn => {
            finish_all(
                state,
                rows,
                InboxState::Skipped,
                "reaction (policies.reactions_start_turn is off)",
            )
            .await;
            return;
        }
        "system" | "revoke" => {
            finish_all(state, rows, InboxState::Skipped, "not a customer turn").await;
            return;
        }
        "unsupported" => {
            let reply = number
                .policies
                .unsupported_reply
                .as_ref()
                .map(|t| super::compliance::localized(t, text.as_deref(), language.as_ref()));
            let replies = reply
                .map(|t| reply_rows(first, &number, &[t], OutboxKind::Unsupported))
                .unwrap_or_default();
            complete_and_send(
                state,
                &number,
                rows,
                InboxState::Done,
                Some("unsupported message type"),
                replies,
            )
            .await;
            return;
        }
        _ => {}
    }

    if number.policies.mark_read {
        let graph = snap.graph.clone();
        let token = number.cfg.access_token.clone();
        let wamid = rows.last().map(|r| r.msg.wamid.clone()).unwrap_or_default();
        let pnid = pnid.to_owned();
        let typing = number.policies.typing_indicator;
        state.tracker.spawn(async move {
            if let Err(e) = graph.mark_read(&pnid, token.expose(), &wamid, typing).await {
                tracing::warn!(%wamid, error = %e, "could not mark the customer's message read");
            }
        });
    }

    let history = match number.agent.agent().history_turns() {
        0 => Vec::new(),
        n => {
            let Some(h) = state
                .persist("turn", || state.store.history(pnid, customer, first.id, n))
                .await
            else {
                return;
            };
            h
        }
    };
    let turn = build_turn(&number, rows, text, language.clone(), history);
    // At most `policies.agent.max_concurrency` calls in flight over the whole process; the
    // wait is not the agent's time, so it starts the clock only once a slot is free.
    let Some(_slot) = state.agent_slots.acquire(&state.shutdown).await else {
        return;
    };
    let started = Instant::now();
    let answer = tokio::select! {
        a = number.agent.call(&turn) => a,
        // Not recorded: the turn runs again at the next start.
        _ = state.shutdown.cancelled() => return,
    };
    drop(_slot);
    let (result, inbox_state, detail, replies) = match answer {
        Ok(Some(reply)) => {
            let mut parts = crate::reply::shape(&reply);
            let max = number.policies.max_reply_parts as usize;
            if crate::reply::limit_parts(&mut parts, max) {
                tracing::warn!(
                    max,
                    "reply longer than policies.max_reply_parts messages; cut with an ellipsis"
                );
                state
                    .metrics
                    .bounds
                    .reply_truncated
                    .with_label_values(&[pnid])
                    .inc();
            }
            let replies = reply_rows(
                rows.last().unwrap_or(first),
                &number,
                &parts,
                OutboxKind::Reply,
            );
            ("ok", InboxState::Done, None, replies)
        }
        Ok(None) => ("empty", InboxState::Done, None, Vec::new()),
        Err(e) => {
            tracing::warn!(agent = %number.agent_name, error = %e, "agent gave no answer");
            let fallback = number.policies.fallback_reply.as_ref().map(|t| {
                super::compliance::localized(t, turn.message.text.as_deref(), language.as_ref())
            });
            let replies = fallback
                .map(|t| reply_rows(first, &number, &[t], OutboxKind::Fallback))
                .unwrap_or_default();
            (e.label(), InboxState::Failed, Some(e.to_string()), replies)
        }
    };
    state
        .metrics
        .agent_seconds
        .with_label_values(&[&number.agent_name, result])
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .agent_breaker_open
        .with_label_values(&[&number.agent_name])
        .set(i64::from(
            number.agent.breaker_state() != crate::agent::BreakerState::Closed,
        ));
    complete_and_send(
        state,
        &number,
        rows,
        inbox_state,
        detail.as_deref(),
        replies,
    )
    .await;
}

fn joined_text(rows: &[InboxRow]) -> Option<String> {
    let texts: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.msg.text.as_deref())
        .filter(|t| !t.is_empty())
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n"))
}

fn build_turn(
    number: &NumberRuntime,
    rows: &[InboxRow],
    text: Option<String>,
    language: Option<crate::policy::LanguageHint>,
    history: Vec<crate::store::HistoryEntry>,
) -> Turn {
    let last = rows.last().unwrap_or(&rows[0]);
    // The echo agent reads only the text: spare it parsing the message twice more.
    let (raw, structured) = if number.agent.agent().kind() == "echo" {
        (serde_json::Value::Null, serde_json::Value::Null)
    } else {
        let raw: serde_json::Value =
            serde_json::from_str(&last.msg.payload).unwrap_or(serde_json::Value::Null);
        let structured = InboundMessage::from_raw(raw.clone())
            .map(|m| {
                crate::ingress::content::structured_for(
                    &last.msg.phone_number_id.as_str().into(),
                    &m,
                )
            })
            .unwrap_or(serde_json::Value::Null);
        (raw, structured)
    };
    Turn {
        number: TurnNumber {
            phone_number_id: last.msg.phone_number_id.clone(),
            display_name: number.cfg.display_name.clone(),
        },
        customer: TurnCustomer {
            wa_id: last.msg.wa_id.clone(),
            user_id: last.msg.user_id.clone(),
            name: last.msg.customer_name.clone(),
        },
        message: TurnMessage {
            id: last.msg.wamid.clone(),
            kind: last.msg.msg_type.clone(),
            text,
            timestamp: last.msg.meta_ts,
            content: raw,
            structured,
        },
        language: language.map(|l| LanguageHint {
            code: l.code,
            name: l.name,
            confidence: l.confidence,
            reliable: l.reliable,
        }),
        history: history
            .into_iter()
            .map(|h| HistoryTurn {
                role: if h.from_customer {
                    Role::Customer
                } else {
                    Role::Agent
                },
                text: h.text,
                timestamp: h.timestamp,
            })
            .collect(),
    }
}

/// Outbox rows for text `parts` answering `row`.
pub(super) fn reply_rows(
    row: &InboxRow,
    number: &NumberRuntime,
    parts: &[String],
    kind: OutboxKind,
) -> Vec<NewOutbox> {
    let (recipient, recipient_kind) = match (&row.msg.wa_id, &row.msg.user_id) {
        (Some(wa), _) => (wa.clone(), "wa_id"),
        (None, Some(user)) => (user.clone(), "user_id"),
        (None, None) => (row.msg.customer.clone(), "wa_id"),
    };
    parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .enumerate()
        .map(|(i, part)| {
            let mut payload = serde_json::json!({
                "type": "text",
                "text": { "body": part, "preview_url": crate::reply::has_url(part) },
            });
            // Quote the customer's message on the first part only.
            if number.policies.quote_customer && i == 0 {
                payload["context"] = serde_json::json!({ "message_id": row.msg.wamid });
            }
            NewOutbox {
                recipient: recipient.clone(),
                recipient_kind: recipient_kind.into(),
                part: i as i64,
                payload: payload.to_string(),
                kind,
            }
        })
        .collect()
}

pub(super) async fn complete_and_send(
    state: &AppState,
    number: &NumberRuntime,
    rows: &[InboxRow],
    to: InboxState,
    detail: Option<&str>,
    replies: Vec<NewOutbox>,
) {
    let first = &rows[0];
    let coalesced: Vec<i64> = rows[1..].iter().map(|r| r.id).collect();
    // With one writer, the replies' first attempt is recorded with the turn (the sender starts
    // on them at once). With several replicas, an attempt must also prove the conversation's
    // lease at send time, so it stays a write of its own.
    let attempt = !state.store.is_shared();
    let Some(out) = state
        .persist("turn", || {
            state
                .writer
                .complete_turn(first, to, detail, &replies, &coalesced, attempt)
        })
        .await
    else {
        return;
    };
    // The turn's own messages prove the window open until their time + window. An opt-out may
    // be committed at any moment: the sender checks it right before each part leaves.
    let known = outbox::Known {
        last_inbound: rows.iter().map(|r| r.msg.meta_ts).max(),
        attempt_recorded: attempt,
    };
    for row in out {
        let outcome = outbox::deliver(state, number, &row, &known).await;
        if outcome == Outcome::Sent {
            let age_ms = crate::store::now_ms() - first.received_at;
            state
                .metrics
                .reply_seconds
                .observe(age_ms.max(0) as f64 / 1000.0);
        }
        if outcome == Outcome::Interrupted {
            return;
        }
    }
}

pub(super) async fn finish_all(state: &AppState, rows: &[InboxRow], to: InboxState, detail: &str) {
    let first = &rows[0];
    let coalesced: Vec<i64> = rows[1..].iter().map(|r| r.id).collect();
    state
        .persist("turn", || {
            state
                .writer
                .complete_turn(first, to, Some(detail), &[], &coalesced, false)
        })
        .await;
}
