//! An operator's retry of a reply that ended undelivered (`failed`, `expired`): refused unless
//! the customer's 24-hour window is still open and the customer has not opted out since it was
//! written; otherwise the row is put back to `pending` in a commit and handed to its
//! conversation's worker, which sends it as any open row: once, under its own id (a second
//! retry finds it no longer ended). The sender checks the window and the opt-out again.

use crate::serve::state::AppState;
use crate::store::{EndedFilter, OutboxKind, OutboxRow, OutboxState, StoreError, now_ms};

/// Why a reply is not sent again.
#[derive(Debug, thiserror::Error)]
pub enum RetryRefused {
    #[error("no reply {0}: `wa-gateway replies list` shows the failed and expired ones")]
    NotFound(i64),
    #[error(
        "reply {id} is {state}, not failed or expired: only an undelivered reply is sent again"
    )]
    NotEnded { id: i64, state: &'static str },
    #[error("reply {0} is a message from the WhatsApp Business app, which the gateway never sends")]
    NotOurs(i64),
    #[error(
        "reply {id} is for number {number}, which this gateway no longer serves: declare it \
         again to retry"
    )]
    UnknownNumber { id: i64, number: String },
    #[error(
        "reply {id} is not sent again: the customer's 24-hour window is closed (their last \
         message came {ago} ago); only the customer can open it again by writing"
    )]
    WindowClosed { id: i64, ago: String },
    #[error("reply {0} is not sent again: the customer opted out after it was written")]
    OptedOut(i64),
    #[error("the gateway is shutting down: try again once it is up")]
    ShuttingDown,
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl RetryRefused {
    /// Whether storage failed (rather than a rule saying no).
    pub fn is_storage(&self) -> bool {
        matches!(self, Self::Storage(_) | Self::ShuttingDown)
    }
}

/// Checks that reply `id` may be sent again, requeues it and hands it to the pipeline.
pub async fn retry(state: &AppState, id: i64) -> Result<OutboxRow, RetryRefused> {
    let row = state
        .store
        .outbox_row(id)
        .await?
        .ok_or(RetryRefused::NotFound(id))?;
    admissible(state, &row).await?;
    if !state.writer.requeue_reply(id).await? {
        // Another retry took it between the read and the commit.
        let now = state.store.outbox_row(id).await?;
        let current = now.map_or(OutboxState::Pending, |r| r.state);
        return Err(RetryRefused::NotEnded {
            id,
            state: current.as_str(),
        });
    }
    let row = state
        .store
        .outbox_row(id)
        .await?
        .ok_or(RetryRefused::NotFound(id))?;
    if !state.requeued.send(row.clone()) {
        tracing::warn!(
            outbox_id = id,
            "reply requeued before the pipeline started; it is sent with the work found at start"
        );
    }
    tracing::info!(outbox_id = id, phone_number_id = %row.phone_number_id, "reply requeued by an operator");
    Ok(row)
}

/// The rules a retry must pass, in order: ended, the gateway's own, a declared number, the
/// window open, no opt-out since it was written.
async fn admissible(state: &AppState, row: &OutboxRow) -> Result<(), RetryRefused> {
    let id = row.id;
    if !matches!(row.state, OutboxState::Failed | OutboxState::Expired) {
        return Err(RetryRefused::NotEnded {
            id,
            state: row.state.as_str(),
        });
    }
    if row.kind == OutboxKind::BusinessApp {
        return Err(RetryRefused::NotOurs(id));
    }
    let snap = state.snapshot.load_full();
    let pnid = row.phone_number_id.as_str();
    let Some(number) = snap.numbers.get(pnid) else {
        return Err(RetryRefused::UnknownNumber {
            id,
            number: pnid.to_owned(),
        });
    };
    let now_s = now_ms() / 1000;
    let last = state.store.last_inbound(pnid, &row.customer).await?;
    let window = number.policies.window.get();
    if !last.is_some_and(|ts| crate::policy::window_open(ts, now_s, window)) {
        let ago = last.map_or_else(
            || "never".to_owned(),
            |ts| {
                let secs = u64::try_from(now_s - ts).unwrap_or(0);
                humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
            },
        );
        return Err(RetryRefused::WindowClosed { id, ago });
    }
    match state.reply_allowed(row).await {
        Some(true) => Ok(()),
        Some(false) => Err(RetryRefused::OptedOut(id)),
        None => Err(RetryRefused::ShuttingDown),
    }
}

/// One reply of a batch retry and how it went.
#[derive(Debug)]
pub struct BatchItem {
    pub id: i64,
    pub result: Result<OutboxRow, RetryRefused>,
}

/// Retries every `failed` reply that ended at or after `since_ms` (of `number`, if given),
/// oldest first, at most `limit`; each is checked on its own.
pub async fn retry_failed_since(
    state: &AppState,
    since_ms: i64,
    number: Option<String>,
    limit: i64,
) -> Result<Vec<BatchItem>, StoreError> {
    let filter = EndedFilter {
        states: vec![OutboxState::Failed],
        since_ms,
        number,
        limit,
    };
    let mut ended = state.store.ended_replies(&filter).await?;
    ended.reverse();
    let mut out = Vec::with_capacity(ended.len());
    for r in ended {
        out.push(BatchItem {
            id: r.id,
            result: retry(state, r.id).await,
        });
    }
    Ok(out)
}
