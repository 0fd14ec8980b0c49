//! One truth about number status on every replica: the statuses live in storage
//! (`number_status`), written by the leader's passes when a number's status changes and by a
//! sender whose send Meta refused with 190; every replica reads them into its statuses map at
//! start and then keeps up by reading the rows written since (on PostgreSQL; one SQLite process
//! is its only writer). The map is what `/api/numbers`, the page and the gauge read.

use super::state::ReconcileState;
use super::status::{NumberState, NumberStatus, token_refused_reason};
use crate::config::Config;
use crate::ids::PhoneNumberId;
use crate::store::{Store, StoredStatus};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How often a replica reads the rows written since its last read, as a share of the
/// reconcile interval: a change reaches every replica well within one interval of the pass that
/// made it. Bounded below, so a test's short interval does not spin, and above, so the default
/// five minutes still brings a refused send's Error within seconds.
pub fn poll_every(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn to_row(s: &NumberStatus, checked_at_ms: i64) -> StoredStatus {
    StoredStatus {
        phone_number_id: s.phone_number_id.to_string(),
        status: s.status.as_str().to_owned(),
        reason: s.reason.clone(),
        waba_problem: s.waba_problem.clone(),
        since: i64::try_from(s.since).unwrap_or(i64::MAX),
        verified_name: s.verified_name.clone(),
        display_phone_number: s.display_phone_number.clone(),
        quality_rating: s.quality_rating.clone(),
        checked_at: checked_at_ms,
        seq: s.seq,
    }
}

/// A stored row as a status; `None` for a status string this version does not know.
fn from_row(r: StoredStatus) -> Option<NumberStatus> {
    Some(NumberStatus {
        status: NumberState::parse(&r.status)?,
        phone_number_id: PhoneNumberId::from(r.phone_number_id.as_str()),
        display_name: String::new(),
        reason: r.reason,
        since: u64::try_from(r.since).unwrap_or(0),
        waba_problem: r.waba_problem,
        verified_name: r.verified_name,
        display_phone_number: r.display_phone_number,
        quality_rating: r.quality_rating,
        checked_at: u64::try_from(r.checked_at / 1000).unwrap_or(0),
        seq: r.seq,
    })
}

/// Whether `new` says something `held` does not (the time of the observation aside).
fn differs(held: Option<&NumberStatus>, new: &NumberStatus) -> bool {
    held.is_none_or(|h| {
        (&h.status, &h.reason, h.since, &h.waba_problem)
            != (&new.status, &new.reason, new.since, &new.waba_problem)
            || (&h.verified_name, &h.display_phone_number, &h.quality_rating)
                != (
                    &new.verified_name,
                    &new.display_phone_number,
                    &new.quality_rating,
                )
    })
}

/// Stores the statuses that changed (from an observation made at `checked_at_ms`) and takes
/// what was written into `state`. A row from a newer observation stays as it is. When storage
/// cannot be written, this process's own view still moves on (and the next pass writes again,
/// as storage still differs).
pub async fn persist(
    store: &Store,
    state: &ReconcileState,
    statuses: Vec<NumberStatus>,
    checked_at_ms: i64,
) {
    let held = state.statuses();
    let changed: Vec<NumberStatus> = statuses
        .into_iter()
        .filter(|s| differs(held.get(&s.phone_number_id), s))
        .collect();
    if changed.is_empty() {
        return;
    }
    let rows: Vec<StoredStatus> = changed.iter().map(|s| to_row(s, checked_at_ms)).collect();
    match store.write_number_statuses(&rows).await {
        Ok(written) => state.merge(written.into_iter().filter_map(from_row), false),
        Err(e) => {
            tracing::warn!(error = %e, numbers = changed.len(), "cannot store the numbers' statuses; other replicas will not see the change until a later pass stores it");
            state.merge(changed, true);
        }
    }
}

/// Deletes the stored statuses of numbers no longer in the file (`declared` is every number
/// the pass derived a status for), so a removed number does not linger in storage.
pub async fn forget_undeclared(store: &Store, declared: &[NumberStatus]) {
    let keep: Vec<String> = declared
        .iter()
        .map(|s| s.phone_number_id.to_string())
        .collect();
    match store.forget_number_statuses_except(&keep).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            numbers = n,
            "forgot the stored statuses of numbers removed from the file"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot forget the stored statuses of removed numbers")
        }
    }
}

/// A send from `pnid` that Meta refused with 190: the number's own token is invalid or
/// expired, so it is in Error now, on every replica, not at the next pass. The next pass that
/// reads the number with a working token (a new one in the file) brings it back.
pub async fn token_refused(store: &Store, state: &ReconcileState, cfg: &Config, pnid: &str) {
    let Some(index) = cfg
        .numbers
        .iter()
        .position(|n| n.phone_number_id.as_str() == pnid)
    else {
        return;
    };
    let now_ms = unix_ms();
    let id = PhoneNumberId::from(pnid);
    let held = state.statuses().get(&id).cloned();
    let reason = token_refused_reason(&format!("numbers[{index}].access_token"));
    let since = held
        .as_ref()
        .filter(|h| h.status == NumberState::Error)
        .map_or(u64::try_from(now_ms / 1000).unwrap_or(0), |h| h.since);
    let status = NumberStatus {
        status: NumberState::Error,
        reason: Some(reason),
        since,
        checked_at: u64::try_from(now_ms / 1000).unwrap_or(0),
        ..held.unwrap_or_else(|| NumberStatus {
            phone_number_id: id.clone(),
            display_name: cfg.numbers[index].display_name.clone(),
            status: NumberState::Error,
            reason: None,
            since,
            waba_problem: None,
            verified_name: None,
            display_phone_number: None,
            quality_rating: None,
            checked_at: 0,
            seq: 0,
        })
    };
    persist(store, state, vec![status], now_ms).await;
}

/// Reads the rows written after `seq` into `state`; returns the highest `seq` seen.
async fn catch_up(store: &Store, state: &ReconcileState, seq: i64) -> i64 {
    match store.number_statuses_after(seq).await {
        Ok(rows) => {
            let last = rows.last().map_or(seq, |r| r.seq);
            state.merge(rows.into_iter().filter_map(from_row), false);
            last
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the numbers' stored statuses; trying again");
            seq
        }
    }
}

/// Reads every stored status into `state`: before the first pass, so `since` carries over a
/// restart and a change of leader. Returns the highest `seq` read.
pub async fn load(store: &Store, state: &ReconcileState) -> i64 {
    catch_up(store, state, 0).await
}

/// On PostgreSQL, keeps reading the rows other replicas write after `seq`, every `poll()`,
/// until `stop`; one SQLite process writes them all itself, so it has nothing to follow.
pub async fn follow(
    store: Store,
    state: Arc<ReconcileState>,
    mut seq: i64,
    poll: impl Fn() -> Duration,
    stop: CancellationToken,
) {
    if !store.is_shared() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll()) => {}
        }
        seq = catch_up(&store, &state, seq).await;
    }
}
