//! Replaying a dead letter: its stored body is parsed again (a newer version may read what an
//! older one could not) and, when it parses, goes through the webhook's own ingest path, so its
//! messages are committed once (the inbox is deduplicated by wamid: a second replay adds
//! nothing) and reach their agent once. The dead letter is marked in the same commit.

use super::server::{ingest, to_write};
use crate::cloudapi::envelope;
use crate::serve::state::AppState;
use crate::store::{DeadLetterRow, ReplayMark, ReplayOutcome, StoreError, WebhookWrite};

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no dead letter {0}: `wa-gateway dead-letters list` shows the stored ones")]
    NotFound(i64),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// What one replay did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Replayed {
    pub id: i64,
    pub outcome: ReplayOutcome,
    /// What the body held, or why it is still unreadable.
    pub detail: String,
    /// Messages committed for the first time by this replay (0 on a second replay).
    pub new_messages: usize,
}

/// How many dead letters `replay --all` takes in one call.
pub const REPLAY_ALL_LIMIT: i64 = 1000;

/// Replays dead letter `id`.
pub async fn replay(app: &AppState, id: i64) -> Result<Replayed, ReplayError> {
    let row = app
        .store
        .dead_letter(id)
        .await?
        .ok_or(ReplayError::NotFound(id))?;
    replay_row(app, &row).await
}

/// Replays every dead letter not yet ingested (never replayed, or still unreadable), oldest
/// first, up to [`REPLAY_ALL_LIMIT`].
pub async fn replay_all(app: &AppState) -> Result<Vec<Replayed>, ReplayError> {
    let mut rows = app.store.dead_letters(true, REPLAY_ALL_LIMIT).await?;
    rows.reverse();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(replay_row(app, row).await?);
    }
    Ok(out)
}

async fn replay_row(app: &AppState, row: &DeadLetterRow) -> Result<Replayed, ReplayError> {
    let snap = app.snapshot.load_full();
    let (outcome, detail, new_messages) = match envelope::parse(row.body.as_bytes()) {
        Ok(env) => {
            let (mut write, _counted, handovers) = to_write(&snap, env);
            let detail = format!(
                "{} message(s), {} status(es), {} echo(es), {} handover(s)",
                write.messages.len(),
                write.statuses.len(),
                write.echoes.len(),
                handovers.len()
            );
            write.replay = Some(ReplayMark {
                id: row.id,
                outcome: ReplayOutcome::Ingested,
                detail: detail.clone(),
            });
            let new = ingest(app, &app.writer, write, &handovers).await?;
            (ReplayOutcome::Ingested, detail, new)
        }
        Err(e) => {
            let detail = format!("still not a Cloud API envelope: {e}");
            let write = WebhookWrite {
                replay: Some(ReplayMark {
                    id: row.id,
                    outcome: ReplayOutcome::Unreadable,
                    detail: detail.clone(),
                }),
                ..Default::default()
            };
            app.writer.submit(write).await?;
            (ReplayOutcome::Unreadable, detail, 0)
        }
    };
    tracing::info!(dead_letter = row.id, outcome = outcome.as_str(), new_messages, %detail, "dead letter replayed");
    Ok(Replayed {
        id: row.id,
        outcome,
        detail,
        new_messages,
    })
}
