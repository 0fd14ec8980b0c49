//! One conversation turn, executed as `decide.rs` decided it: rows skipped, a keyword confirmed,
//! the reply for unsupported messages, or the agent called with history and a language hint and
//! its reply shaped. Completing the turn and sending its replies is `finish.rs`'s.

use super::compliance;
use super::decide::{Decision, Facts, NumberState, SkipReason, decide};
use super::finish::{
    complete_and_send, complete_hand_off_and_send, finish_all, reply_rows, text_rows,
};
use crate::agent::{
    AgentFailure, Answer, Handoff, HistoryTurn, LanguageHint, Role, Turn, TurnCustomer,
    TurnMessage, TurnNumber,
};
use crate::cloudapi::envelope::{InboundMessage, MessageType};
use crate::outbox;
use crate::serve::state::{AppState, NumberRuntime, Snapshot};
use crate::store::cluster::TurnState;
use crate::store::{InboxRow, InboxState, Keyword, NewOutbox, OptAction, OutboxKind};
use crate::store::{OutboxRow, OutboxState};
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
    row.msg.msg_type == MessageType::Text && row.msg.keyword.is_none()
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
    async fn opted_out(&mut self, stored: &Stored<'_>) -> Option<bool> {
        let (state, pnid, customer) = (stored.state, stored.pnid, stored.customer);
        if !state.store.is_shared() {
            return state.opted_out_now(pnid, customer).await;
        }
        if let Some(known) = self.opted_out {
            return Some(known);
        }
        // With several replicas this worker holds the conversation's lease, so no one else
        // changes the answer until it gives the conversation back: one read per lease, made
        // with the turn's read of the pause.
        let (opt_out, _) = stored.get().await?;
        let digest = state.customer_digest(customer);
        let now = state
            .opted_out_as(pnid, customer, &digest, *opt_out)
            .await?;
        self.opted_out = Some(now);
        Some(now)
    }
}

/// With several replicas: what a turn reads of its conversation before it runs (the customer's
/// opt-out and the conversation's pause), read once, when first asked, in one statement.
struct Stored<'a> {
    state: &'a AppState,
    pnid: &'a str,
    customer: &'a str,
    read: tokio::sync::OnceCell<Option<TurnState>>,
}

impl Stored<'_> {
    /// The read's answer; `None` when shutting down before it could be made.
    async fn get(&self) -> Option<&TurnState> {
        self.read
            .get_or_init(|| async {
                let digest = self.state.customer_digest(self.customer);
                self.state
                    .persist("turn read", || {
                        self.state
                            .store
                            .turn_state(self.pnid, self.customer, &digest)
                    })
                    .await
            })
            .await
            .as_ref()
    }

    /// Whether the conversation is paused now (see [`crate::handoff::is_paused`]).
    async fn paused(&self) -> Option<bool> {
        let (state, pnid, customer) = (self.state, self.pnid, self.customer);
        if !state.store.is_shared() {
            return crate::handoff::is_paused(state, pnid, customer).await;
        }
        let (_, pause) = self.get().await?;
        crate::handoff::is_paused_as(state, pnid, customer, pause.clone()).await
    }
}

/// Handles one turn made of `rows` (one message, or several coalesced ones), in order.
pub async fn inbound(state: &AppState, rows: Vec<InboxRow>, known: &mut Known) {
    let first = &rows[0];
    // A consumer span of the message's trace (OpenTelemetry's messaging conventions), the
    // child of the webhook that brought it.
    let span = crate::telemetry::span_if_seen(|| {
        tracing::info_span!(
            "turn",
            wamid = %first.msg.wamid,
            phone_number_id = %first.msg.phone_number_id,
            messages = rows.len(),
            otel.kind = "consumer",
            messaging.system = "whatsapp",
            messaging.operation.type = "process",
            messaging.operation.name = "turn",
            messaging.message.id = %first.msg.wamid,
            messaging.destination.name = %first.msg.phone_number_id,
            whatsapp.customer = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        )
    });
    // A coalesced turn joins its first message's trace; the others' kept contexts go too.
    let kept = crate::telemetry::take_inbound(first.id);
    for row in &rows[1..] {
        crate::telemetry::take_inbound(row.id);
    }
    let traceparent = first.msg.traceparent.as_deref().or(kept.as_deref());
    crate::telemetry::set_parent_from(&span, traceparent);
    if crate::telemetry::customer_allowed() {
        span.record("whatsapp.customer", first.msg.customer.as_str());
    }
    run(state, &rows, known).instrument(span).await
}

/// Decides what the rows call for, then does it.
async fn run(state: &AppState, rows: &[InboxRow], known: &mut Known) {
    let msg = &rows[0].msg;
    let snap = state.snapshot.load_full();
    let number = snap.numbers.get(msg.phone_number_id.as_str()).cloned();
    let facts = Facts {
        reactions_start_turn: number
            .as_ref()
            .is_some_and(|n| n.policies.reactions_start_turn),
        number: match number {
            None => NumberState::Undeclared,
            Some(n) if !n.cfg.enabled => NumberState::Disabled,
            Some(_) if state.disconnected.contains(&msg.phone_number_id) => {
                NumberState::Disconnected
            }
            Some(n) => NumberState::Ready(n),
        },
        keyword: msg.keyword.as_ref(),
        msg_type: &msg.msg_type,
    };
    let stored = Stored {
        state,
        pnid: &msg.phone_number_id,
        customer: &msg.customer,
        read: tokio::sync::OnceCell::new(),
    };
    let opted_out = known.opted_out(&stored);
    let paused = stored.paused();
    // `None`: shutting down before the opt-out or pause state could be read; not recorded, so
    // the turn runs again at the next start.
    let Some(decision) = decide(facts, opted_out, paused).await else {
        return;
    };
    match decision {
        Decision::Skip(reason) => skip(state, rows, reason).await,
        Decision::Confirm(number, keyword) => confirm(state, &number, rows, keyword, known).await,
        Decision::Unsupported(number) => unsupported(state, &number, rows).await,
        Decision::Paused(number) => held(state, &snap, &number, rows).await,
        Decision::AgentTurn(number) => agent_turn(state, &snap, &number, rows).await,
    }
}

/// Keeps the rows of a paused conversation for the person handling it: marked read per policy
/// (without the typing indicator: no agent is writing), closed as `done` so that the agent's
/// first turn after the pause has them as history, and nothing sent.
async fn held(state: &AppState, snap: &Snapshot, number: &NumberRuntime, rows: &[InboxRow]) {
    if number.policies.mark_read {
        mark_read(state, snap, number, rows, false);
    }
    state
        .metrics
        .handoff_held
        .with_label_values(&[&rows[0].msg.phone_number_id])
        .inc_by(rows.len() as u64);
    finish_all(state, rows, InboxState::Done, "conversation paused").await;
}

/// Closes the rows as skipped.
async fn skip(state: &AppState, rows: &[InboxRow], reason: SkipReason) {
    if reason == SkipReason::OptedOut {
        state
            .metrics
            .opt_out_suppressed
            .with_label_values(&[&rows[0].msg.phone_number_id])
            .inc();
    }
    finish_all(state, rows, InboxState::Skipped, reason.detail()).await;
}

/// Confirms the opt-out or opt-in that the first row's keyword recorded.
async fn confirm(
    state: &AppState,
    number: &std::sync::Arc<NumberRuntime>,
    rows: &[InboxRow],
    keyword: &Keyword,
    known: &mut Known,
) {
    known.opted_out = Some(keyword.action == OptAction::Stop);
    let (_, language) = text_and_language(number, rows);
    compliance::keyword(state, number, &rows[0], keyword, language.as_ref()).await;
}

/// Answers a message type the gateway does not handle with the number's reply for it, if any.
async fn unsupported(state: &AppState, number: &NumberRuntime, rows: &[InboxRow]) {
    let (text, language) = text_and_language(number, rows);
    let reply = number
        .policies
        .unsupported_reply
        .as_ref()
        .map(|t| compliance::localized(t, text.as_deref(), language.as_ref()));
    let replies = reply
        .map(|t| text_rows(&rows[0], number, t, OutboxKind::Unsupported))
        .unwrap_or_default();
    complete_and_send(
        state,
        number,
        rows,
        InboxState::Done,
        Some("unsupported message type"),
        replies,
    )
    .await;
}

/// The turn's text, and its language for agents that take the hint (detection costs a few
/// microseconds per message); system texts pick their language among their own translations.
fn text_and_language(
    number: &NumberRuntime,
    rows: &[InboxRow],
) -> (Option<String>, Option<LanguageHint>) {
    let text = joined_text(rows);
    let language = if number.agent.agent().kind().reads_more_than_text() {
        text.as_deref().and_then(crate::policy::detect_language)
    } else {
        None
    };
    (text, language)
}

/// Calls the agent with the turn and its history, then completes the turn with the agent's
/// reply, or with the fallback reply when the agent gave none.
async fn agent_turn(state: &AppState, snap: &Snapshot, number: &NumberRuntime, rows: &[InboxRow]) {
    let first = &rows[0];
    if number.policies.mark_read {
        mark_read(state, snap, number, rows, number.policies.typing_indicator);
    }
    let history = match number.agent.agent().history_turns() {
        0 => Vec::new(),
        n => {
            let (pnid, customer) = (&first.msg.phone_number_id, &first.msg.customer);
            let Some(h) = state
                .persist("turn", || state.store.history(pnid, customer, first.id, n))
                .await
            else {
                return;
            };
            h
        }
    };
    let (text, language) = text_and_language(number, rows);
    let turn = build_turn(number, rows, text, language, history);
    let Some((answer, elapsed)) = call_agent(state, number, &turn).await else {
        return;
    };
    let end = answered(state, number, rows, &turn, answer);
    state
        .metrics
        .agent_seconds
        .with_label_values(&[&number.agent_name, end.result])
        .observe(elapsed.as_secs_f64());
    state
        .metrics
        .agent_breaker_open
        .with_label_values(&[&number.agent_name])
        .set(i64::from(
            number.agent.breaker_state() != crate::agent::BreakerState::Closed,
        ));
    let outcome = (end.state, end.detail.as_deref());
    complete_hand_off_and_send(state, number, rows, outcome, end.replies, end.handoff).await;
}

/// Marks the customer's last message read (with the typing indicator if `typing`), in the
/// background: the turn does not wait for it.
fn mark_read(
    state: &AppState,
    snap: &Snapshot,
    number: &NumberRuntime,
    rows: &[InboxRow],
    typing: bool,
) {
    let graph = snap.graph.clone();
    let token = number.cfg.access_token.clone();
    let wamid = rows.last().map(|r| r.msg.wamid.clone()).unwrap_or_default();
    let pnid = rows[0].msg.phone_number_id.clone();
    state.tracker.spawn(async move {
        if let Err(e) = graph.mark_read(&pnid, token.expose(), &wamid, typing).await {
            tracing::warn!(%wamid, error = %e, "could not mark the customer's message read");
        }
    });
}

/// The agent's answer to `turn` and the time it took; `None` when shutting down first.
async fn call_agent(
    state: &AppState,
    number: &NumberRuntime,
    turn: &Turn,
) -> Option<(Result<Answer, AgentFailure>, Duration)> {
    // At most `policies.agent.max_concurrency` calls in flight over the whole process; the
    // wait is not the agent's time, so it starts the clock only once a slot is free.
    let _slot = state.agent_slots.acquire(&state.shutdown).await?;
    let started = Instant::now();
    // A client span: the http agent sends its context as `traceparent`.
    let span = crate::telemetry::span_if_on(|| {
        tracing::info_span!(
            "agent call",
            otel.kind = "client",
            agent = %number.cfg.agent,
            otel.status_code = tracing::field::Empty,
        )
    });
    let answer = tokio::select! {
        a = number.agent.call(turn).instrument(span.clone()) => a,
        // Not recorded: the turn runs again at the next start.
        _ = state.shutdown.cancelled() => return None,
    };
    if answer.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    Some((answer, started.elapsed()))
}

/// What an agent's answer makes of a turn.
struct AgentTurnEnd {
    /// The rows' final state and its detail.
    state: InboxState,
    detail: Option<String>,
    replies: Vec<NewOutbox>,
    /// The call's result for metrics: `ok`, `empty`, `refused` (an item broke Meta's limits)
    /// or the failure's label.
    result: &'static str,
    /// The conversation goes to a person once the turn is committed (also when the answer's
    /// items were refused: the agent still asked for one).
    handoff: Option<Handoff>,
}

/// What the agent's answer makes of the turn: its messages, or the fallback reply when the
/// agent gave none or an item of its answer breaks Meta's limits.
fn answered(
    state: &AppState,
    number: &NumberRuntime,
    rows: &[InboxRow],
    turn: &Turn,
    answer: Result<Answer, AgentFailure>,
) -> AgentTurnEnd {
    let first = &rows[0];
    let failed = |detail: String, result: &'static str, handoff: Option<Handoff>| {
        let fallback = number.policies.fallback_reply.as_ref().map(|t| {
            compliance::localized(t, turn.message.text.as_deref(), turn.language.as_ref())
        });
        AgentTurnEnd {
            state: InboxState::Failed,
            detail: Some(detail),
            replies: fallback
                .map(|t| text_rows(first, number, t, OutboxKind::Fallback))
                .unwrap_or_default(),
            result,
            handoff,
        }
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(agent = %number.agent_name, error = %e, "agent gave no answer");
            return failed(e.to_string(), e.label(), None);
        }
    };
    let max = number.policies.max_reply_parts as usize;
    match crate::reply::messages(&answer.replies, &first.msg.wamid, max) {
        Ok(shaped) => {
            if shaped.truncated {
                reply_truncated(state, number, &first.msg.phone_number_id);
            }
            let last = rows.last().unwrap_or(first);
            AgentTurnEnd {
                state: InboxState::Done,
                detail: None,
                result: if shaped.messages.is_empty() {
                    "empty"
                } else {
                    "ok"
                },
                replies: reply_rows(last, number, shaped.messages, OutboxKind::Reply),
                handoff: answer.handoff,
            }
        }
        Err(refused) => {
            tracing::warn!(agent = %number.agent_name, error = %refused, "agent answer refused before sending");
            failed(refused.to_string(), "refused", answer.handoff)
        }
    }
}

/// Counts a text item cut at `policies.max_reply_parts` messages.
fn reply_truncated(state: &AppState, number: &NumberRuntime, pnid: &str) {
    tracing::warn!(
        max = number.policies.max_reply_parts,
        "reply longer than policies.max_reply_parts messages; cut with an ellipsis"
    );
    state
        .metrics
        .bounds
        .reply_truncated
        .with_label_values(&[pnid])
        .inc();
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
    language: Option<LanguageHint>,
    history: Vec<crate::store::HistoryEntry>,
) -> Turn {
    let last = rows.last().unwrap_or(&rows[0]);
    // The echo agent reads only the text: spare it parsing the message twice more.
    let (raw, structured) = if !number.agent.agent().kind().reads_more_than_text() {
        (serde_json::Value::Null, serde_json::Value::Null)
    } else {
        let raw: serde_json::Value =
            serde_json::from_str(&last.msg.payload).unwrap_or(serde_json::Value::Null);
        let structured = InboundMessage::from_raw(raw.clone())
            .map(|m| {
                crate::cloudapi::content::structured_for(
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
            kind: last.msg.msg_type.as_str().to_owned(),
            text,
            timestamp: last.msg.meta_ts,
            content: raw,
            structured,
        },
        language,
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
