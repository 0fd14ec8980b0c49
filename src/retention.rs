//! The pruning loop of `storage.retention`: every `interval`, on the leader, deletes the closed
//! rows older than `messages` (audit entries older than `audit`) in small batches through the group-commit writer (so on SQLite it
//! never contends for the file's lock, and each batch holds the writer a few milliseconds),
//! forgets wamid digests older than `dedupe` and media uploads older than
//! `policies.media.cache_for`, gives SQLite's free pages back, sets the metrics.

use crate::config::retention::Retention;
use crate::serve::state::AppState;
use crate::store::{MEDIA_UPLOADS, PruneOp, Pruned, PrunedTable, SEEN_WAMIDS, StoreError, now_ms};
use std::sync::Arc;
use std::time::Duration;

/// What one batch should hold the writer for; the batch size follows it.
const TARGET: Duration = Duration::from_millis(4);
const MIN_BATCH: usize = 16;
const MAX_BATCH: usize = 1000;
/// Pages one incremental vacuum batch gives back (1 MiB with 4 KiB pages).
const VACUUM_PAGES: i64 = 256;

/// Rows per batch, halved when a batch held the writer too long, doubled when it was quick.
struct Batch(usize);

impl Batch {
    fn adapt(&mut self, took: Duration) {
        if took > TARGET * 2 {
            self.0 = (self.0 / 2).max(MIN_BATCH);
        } else if took < TARGET / 2 {
            self.0 = (self.0 * 2).min(MAX_BATCH);
        }
    }
}

/// Starts the pruning loop; it stops when the gateway drains.
pub fn spawn(state: Arc<AppState>) {
    let tracker = state.tracker.clone();
    tracker.spawn(run(state));
}

async fn run(state: Arc<AppState>) {
    loop {
        if !state.leadership.wait_until_leader(&state.draining).await {
            return;
        }
        // Read at every cycle: a reload changes retention from the next one on.
        let config = state.snapshot.load().config.clone();
        let retention = config.storage.retention.clone();
        let cycle = prune_once(&state, &retention, &config.policies.media.cache_for);
        match state
            .leadership
            .run_cycle(&state.store, "prune", cycle)
            .await
        {
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pruning stopped early; the next cycle resumes it")
            }
            Some(Ok(0)) | None => {}
            Some(Ok(rows)) => tracing::debug!(rows, "pruned"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retention.interval.get()) => {}
            _ = state.draining.cancelled() => return,
        }
    }
}

fn ms(d: &crate::config::Duration) -> i64 {
    i64::try_from(d.get().as_millis()).unwrap_or(i64::MAX)
}

/// One cycle: every table, then the digests and the media uploads past `media_cache_for`, then
/// the vacuum; returns the rows deleted.
async fn prune_once(
    state: &AppState,
    r: &Retention,
    media_cache_for: &crate::config::Duration,
) -> Result<u64, StoreError> {
    let now = now_ms();
    let before = now.saturating_sub(ms(&r.messages));
    let mut batch = Batch(200);
    let mut total = 0;
    for table in PrunedTable::ALL {
        total += prune_table(state, table, before, &mut batch).await?;
    }
    let audit_before = now.saturating_sub(ms(&r.audit));
    total += prune_table(state, PrunedTable::Audit, audit_before, &mut batch).await?;
    let forget_before = now.saturating_sub(ms(&r.dedupe));
    total += expire(state, SEEN_WAMIDS, &mut batch, |limit| {
        PruneOp::ExpireSeen {
            before_ms: forget_before,
            limit,
        }
    })
    .await?;
    // A cached upload past `cache_for` is never used again (its id may be gone at Meta).
    let uploads_before = now.saturating_sub(ms(media_cache_for));
    total += expire(state, MEDIA_UPLOADS, &mut batch, |limit| {
        PruneOp::ExpireMediaUploads {
            before_ms: uploads_before,
            limit,
        }
    })
    .await?;
    if total > 0 {
        state.store.vacuum_pruned().await?;
    }
    // Only the free pages found now: under load new ones appear all the time.
    let mut free = state.store.free_pages().await?;
    while free > 0 && !state.draining.is_cancelled() {
        let pages = free.min(VACUUM_PAGES);
        submit(state, PruneOp::Vacuum { pages }, &mut Batch(0)).await?;
        free -= pages;
    }
    observe(state).await?;
    Ok(total)
}

/// Runs the batches `op` makes (given the batch size) until one deletes less than a batch;
/// counts them under `label`.
async fn expire(
    state: &AppState,
    label: &str,
    batch: &mut Batch,
    op: impl Fn(i64) -> PruneOp,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let limit = batch.0 as i64;
        let n = submit(state, op(limit), batch).await?;
        count(state, label, n);
        total += n;
        if (n as i64) < limit || state.draining.is_cancelled() {
            return Ok(total);
        }
    }
}

/// Deletes `table`'s closed rows written before `before`, oldest first, a batch at a time.
async fn prune_table(
    state: &AppState,
    table: PrunedTable,
    before: i64,
    batch: &mut Batch,
) -> Result<u64, StoreError> {
    let mut after = 0;
    let mut total = 0;
    while !state.draining.is_cancelled() {
        let page = state
            .store
            .prune_candidates(table, after, before, batch.0)
            .await?;
        after = page.after;
        if !page.ids.is_empty() {
            // Their wamids are remembered (and committed) before the rows go.
            if table == PrunedTable::Inbox {
                let ids = page.ids.clone();
                submit(state, PruneOp::Retire { ids }, batch).await?;
            }
            let op = PruneOp::Delete {
                table,
                ids: page.ids,
            };
            let n = submit(state, op, batch).await?;
            count(state, table.as_str(), n);
            total += n;
        }
        if page.done {
            break;
        }
    }
    Ok(total)
}

fn count(state: &AppState, table: &str, n: u64) {
    if n > 0 {
        let m = &state.metrics.retention.pruned_rows;
        m.with_label_values(&[table]).inc_by(n);
    }
}

/// Runs one batch in the writer's next group commit; the rows it deleted.
async fn submit(state: &AppState, op: PruneOp, batch: &mut Batch) -> Result<u64, StoreError> {
    let Pruned { rows, took } = state.writer.prune(op).await?;
    let m = &state.metrics.retention.prune_batch_seconds;
    m.observe(took.as_secs_f64());
    batch.adapt(took);
    Ok(rows)
}

/// Sets the oldest-row ages and the database size.
async fn observe(state: &AppState) -> Result<(), StoreError> {
    let now = now_ms();
    let age = |at: Option<i64>| at.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
    let m = &state.metrics.retention;
    for table in PrunedTable::ALL.into_iter().chain([PrunedTable::Audit]) {
        let at = state.store.oldest_row_at(table).await?;
        m.oldest_row_age
            .with_label_values(&[table.as_str()])
            .set(age(at));
    }
    let at = state.store.oldest_seen_wamid_at().await?;
    m.oldest_row_age
        .with_label_values(&[SEEN_WAMIDS])
        .set(age(at));
    m.database_size
        .set(state.store.database_size_bytes().await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_follows_the_time_it_holds_the_writer() {
        let cases = [
            (200, Duration::from_millis(20), 100),
            (200, Duration::from_millis(5), 200),
            (200, Duration::from_micros(500), 400),
            (MIN_BATCH, Duration::from_secs(1), MIN_BATCH),
            (MAX_BATCH, Duration::ZERO, MAX_BATCH),
        ];
        for (size, took, want) in cases {
            let mut b = Batch(size);
            b.adapt(took);
            assert_eq!(b.0, want, "{size} after {took:?}");
        }
    }
}
