//! Settling replies: Meta's answers to sends and the status webhooks move outbox rows forward
//! (never back: statuses arrive out of order and more than once). A status found by the
//! `biz_opaque_callback_data` the gateway sent settles a row only if it is that row: the same
//! database (installation), row (id and queue time), number and recipient. Anything else is
//! recorded in `status_events` and changes nothing, so a late status after a database restore
//! or reset cannot settle, or fail, a newer reply. Only the group-commit writer calls this.

use super::sql::{Arg, Sql, WriteTx};
use super::{Callback, ECHO_ROW, Op, OutboxState, StatusUpdate, StoreError};
use crate::cloudapi::envelope::StatusKind;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Rows per multi-row statement, well under both databases' bind-parameter limits.
const CHUNK: usize = 1000;

/// What one row of the outbox moves to: a status webhook's, or Meta's answer to the send
/// (`sent`, with the wamid it gave).
struct Settle<'a> {
    state: OutboxState,
    wamid: &'a str,
    error_code: Option<i64>,
    error_title: Option<&'a str>,
    /// For a status found by its callback data: what the row must match, and the status.
    guard: Option<Guard<'a>>,
}

/// What a row must be for a status echoing its callback data to settle it.
struct Guard<'a> {
    status: &'a StatusUpdate,
    /// The row's queue time, from a callback of this installation; `None` for the old
    /// `wagw:{id}` form, which settles only rows queued before the upgrade.
    created_at: Option<i64>,
}

impl<'a> Settle<'a> {
    /// Keeps the furthest state per row (the first one seen among equals).
    fn merge_into<K>(self, entry: Entry<'_, K, Settle<'a>>) {
        match entry {
            Entry::Vacant(v) => {
                v.insert(self);
            }
            Entry::Occupied(mut o) => {
                if self.state.rank() > o.get().state.rank() {
                    o.insert(self);
                }
            }
        }
    }
}

/// The condition a guarded row meets, over `VALUES (id, …, pnid, recipient_id,
/// recipient_user_id, created_at)` as columns 1 and 6 to 9.
const GUARD: &str = "outbox.id = v.column1 AND outbox.phone_number_id = v.column6 \
     AND (outbox.recipient = v.column7 OR outbox.recipient = v.column8) \
     AND CASE WHEN v.column9 IS NULL \
     THEN outbox.id <= (SELECT legacy_outbox_max FROM installation) \
     ELSE outbox.created_at = v.column9 END";

/// Applies the statuses of every webhook and Meta's answers (`Op::Sent`) in `ops`.
/// `installation` is this database's id; `shared`: PostgreSQL with several replicas.
pub(super) async fn statuses(
    tx: &mut impl WriteTx,
    ops: &[Op],
    shared: bool,
    installation: &str,
    now: i64,
) -> Result<(), StoreError> {
    // The highest per row: a row only moves forward, and PostgreSQL updates a row at most once
    // per statement. Meta's answers are keyed by id and need no guard; statuses by their
    // callback id (guarded) or, without one, by wamid (Meta's ids are unique): only the Business
    // app's echoes have none, as every send of the gateway carries its row's.
    let mut sent: HashMap<i64, Settle> = HashMap::new();
    let mut by_callback: HashMap<i64, Settle> = HashMap::new();
    let mut by_wamid: HashMap<&str, Settle> = HashMap::new();
    for op in ops {
        if let Op::Sent { id, wamid } = op {
            Settle {
                state: OutboxState::Sent,
                wamid,
                error_code: None,
                error_title: None,
                guard: None,
            }
            .merge_into(sent.entry(*id));
        }
        let Op::Webhook(w) = op else { continue };
        for st in &w.statuses {
            let callback = st.callback.as_deref().and_then(Callback::parse);
            let foreign = matches!(&callback, Some(Callback::Row { installation: i, .. }) if i != installation);
            if foreign || st.status == StatusKind::Failed || st.error_code.is_some() {
                record(tx, st, now).await?;
            }
            if foreign {
                tracing::warn!(
                    wamid = %st.wamid,
                    "status for a reply another database sent (its callback data names another \
                     installation); recorded, changes nothing"
                );
                continue;
            }
            let Some(state) = OutboxState::parse(st.status.as_str()).filter(|s| s.is_settled())
            else {
                continue;
            };
            let mut settle = Settle {
                state,
                wamid: &st.wamid,
                error_code: st.error_code,
                error_title: st.error_title.as_deref(),
                guard: None,
            };
            match callback {
                Some(Callback::Row { id, created_at, .. }) => {
                    settle.guard = Some(Guard {
                        status: st,
                        created_at: Some(created_at),
                    });
                    settle.merge_into(by_callback.entry(id));
                }
                Some(Callback::Legacy(id)) => {
                    settle.guard = Some(Guard {
                        status: st,
                        created_at: None,
                    });
                    settle.merge_into(by_callback.entry(id));
                }
                None => settle.merge_into(by_wamid.entry(st.wamid.as_str())),
            }
        }
    }
    if shared {
        lock_rows(tx, ops, &sent, &by_callback, &by_wamid).await?;
    }
    let sent: Vec<(i64, Settle)> = sent.into_iter().collect();
    let by_wamid: Vec<(Arg, Settle)> = by_wamid.into_iter().map(|(w, s)| (w.into(), s)).collect();
    let by_callback: Vec<(i64, Settle)> = by_callback.into_iter().collect();
    answers(tx, &sent, now).await?;
    for chunk in by_wamid.chunks(CHUNK) {
        tx.execute(&settle_echoes(chunk, now)).await?;
    }
    let (settled, strangers) = settle_guarded(tx, &by_callback, now).await?;
    record_strangers(tx, &by_callback, &strangers, now).await?;
    // Meta's wamid for a reply whose send was never recorded (a crash between send and record;
    // a status webhook that beat Meta's answer): only where missing, as the update said. The
    // statement names the rows by id alone: with `wamid IS NULL` beside it, PostgreSQL's planner
    // chose to scan every entry of an index of wamids without a wamid (thousands under load).
    let wamids: Vec<(Arg, &str)> = by_callback
        .iter()
        .filter(|(id, _)| settled.get(id) == Some(&true))
        .map(|(id, s)| ((*id).into(), s.wamid))
        .collect();
    for chunk in wamids.chunks(CHUNK) {
        let mut sql = Sql::new("UPDATE outbox SET wamid = v.column2 FROM (");
        sql.values(chunk.iter(), |t, (id, wamid)| {
            t.bind(*id).bind(*wamid);
        });
        sql.push(") AS v WHERE outbox.id = v.column1");
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Settles the Business app's echoes by the wamids of statuses without callback data.
fn settle_echoes<'a>(by_wamid: &'a [(Arg<'a>, Settle<'a>)], now: i64) -> Sql<'a> {
    let mut sql = update_state(by_wamid.iter().map(|(k, s)| (*k, s)), Setting::Status, now);
    sql.push(" WHERE outbox.wamid = v.column1 AND outbox.")
        .push(ECHO_ROW)
        .push(" AND outbox.state_rank < v.column3");
    sql
}

/// Settles the statuses found by their callback data (guarded). Returns the rows they settled,
/// each with whether it still lacks its wamid, and the statuses whose callback names no row.
async fn settle_guarded(
    tx: &mut impl WriteTx,
    by_callback: &[(i64, Settle<'_>)],
    now: i64,
) -> Result<(HashMap<i64, bool>, Vec<i64>), StoreError> {
    let mut settled: HashMap<i64, bool> = HashMap::new();
    let mut strangers: Vec<i64> = Vec::new();
    let pg = tx.pg().is_some();
    for chunk in by_callback.chunks(CHUNK) {
        if pg {
            let rows: Vec<(i64, Option<bool>, bool)> =
                tx.fetch(&settle_guarded_pg(chunk, now)).await?;
            for (id, missing, named) in rows {
                match (missing, named) {
                    (Some(missing), _) => {
                        settled.insert(id, missing);
                    }
                    (None, false) => strangers.push(id),
                    (None, true) => {}
                }
            }
            continue;
        }
        let mut sql = update_state(
            chunk.iter().map(|(id, s)| ((*id).into(), s)),
            Setting::Status,
            now,
        );
        sql.push(" WHERE ")
            .push(GUARD)
            .push(" AND outbox.state_rank < v.column3 RETURNING outbox.id, outbox.wamid IS NULL");
        let rows: Vec<(i64, bool)> = tx.fetch(&sql).await?;
        settled.extend(rows);
        let unsettled: Vec<&(i64, Settle)> = chunk
            .iter()
            .filter(|(id, _)| !settled.contains_key(id))
            .collect();
        strangers.extend(unmatched(tx, &unsettled).await?);
    }
    Ok((settled, strangers))
}

/// Applies Meta's answers to sends (by row id), in one update: each row not already further on
/// moves to `sent`, and each row gets its wamid where missing (a status may have moved it on
/// first). One update, not two: on PostgreSQL every update that changes an indexed column
/// writes the row anew, with an entry in each of its indexes, and each statement is a round
/// trip of the group commit.
async fn answers(
    tx: &mut impl WriteTx,
    sent: &[(i64, Settle<'_>)],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in sent.chunks(CHUNK) {
        let mut sql = update_state(
            chunk.iter().map(|(id, s)| ((*id).into(), s)),
            Setting::Answer,
            now,
        );
        sql.push(
            " WHERE outbox.id = v.column1 \
             AND (outbox.state_rank < v.column3 OR outbox.wamid IS NULL)",
        );
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// What an [`update_state`] applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    /// A status webhook: the state moves on; the wamid is left alone (SQLite rewrites an index
    /// entry whenever its column is assigned, even to the value it has, and every status of an
    /// echo would rewrite a page of `outbox_echo_wamid`).
    Status,
    /// Meta's answer to a send: the state moves on only if that is forward (the row may be
    /// further on already), and the wamid is set where missing.
    Answer,
}

/// `UPDATE outbox SET state … FROM (VALUES (key, state, rank, code, title, pnid, recipient_id,
/// recipient_user_id, created_at[, wamid]), …) AS v`, to be followed by its `WHERE`.
fn update_state<'s, 'a: 's>(
    rows: impl Iterator<Item = (Arg<'a>, &'s Settle<'a>)>,
    setting: Setting,
    now: i64,
) -> Sql<'a> {
    let mut sql = Sql::new("");
    push_set(&mut sql, setting, now);
    sql.push(" FROM (");
    push_values(&mut sql, rows, setting);
    sql.push(") AS v");
    sql
}

/// `UPDATE outbox SET …` of `setting`, over the rows `v` of [`push_values`].
fn push_set(sql: &mut Sql<'_>, setting: Setting, now: i64) {
    sql.push(match setting {
        Setting::Answer => {
            "UPDATE outbox SET \
             state = CASE WHEN outbox.state_rank < v.column3 THEN v.column2 ELSE outbox.state END, \
             state_rank = CASE WHEN outbox.state_rank < v.column3 THEN v.column3 \
             ELSE outbox.state_rank END, wamid = COALESCE(outbox.wamid, v.column10), "
        }
        Setting::Status => "UPDATE outbox SET state = v.column2, state_rank = v.column3, ",
    });
    sql.push(
        "error_code = COALESCE(v.column4, outbox.error_code), \
         error_message = COALESCE(v.column5, outbox.error_message), updated_at = ",
    )
    .bind(now);
}

/// `VALUES (key, state, rank, code, title, pnid, recipient_id, recipient_user_id,
/// created_at[, wamid]), …`: the wamid only for [`Setting::Answer`].
fn push_values<'s, 'a: 's>(
    sql: &mut Sql<'a>,
    rows: impl Iterator<Item = (Arg<'a>, &'s Settle<'a>)>,
    setting: Setting,
) {
    sql.values(rows, |t, (key, st)| {
        let guard = st.guard.as_ref();
        t.bind(key)
            .bind(st.state.as_str())
            .bind(st.state.rank())
            .bind(st.error_code)
            .bind(st.error_title)
            .bind(guard.map(|g| g.status.phone_number_id.as_str()))
            .bind(guard.and_then(|g| g.status.recipient_id.as_deref()))
            .bind(guard.and_then(|g| g.status.recipient_user_id.as_deref()))
            .bind(guard.and_then(|g| g.created_at));
        if setting == Setting::Answer {
            t.bind(st.wamid);
        }
    });
}

/// On PostgreSQL, the statuses found by their callback data settle their rows, and those that
/// settle none learn whether a row is the one they name (a late status for a row already
/// further on) or none is, in one statement: one round trip of the group commit instead of
/// two. Per status: (row id, whether the row still lacks its wamid when it settled it, else
/// NULL, whether a row is the one it names).
fn settle_guarded_pg<'a>(chunk: &'a [(i64, Settle<'a>)], now: i64) -> Sql<'a> {
    let mut sql = Sql::new("WITH v AS (");
    push_values(
        &mut sql,
        chunk.iter().map(|(id, s)| ((*id).into(), s)),
        Setting::Status,
    );
    sql.push("), u AS (");
    push_set(&mut sql, Setting::Status, now);
    sql.push(" FROM v WHERE ")
        .push(GUARD)
        .push(
            " AND outbox.state_rank < v.column3 \
             RETURNING outbox.id, outbox.wamid IS NULL AS missing) \
             SELECT v.column1, u.missing, u.id IS NOT NULL OR EXISTS \
             (SELECT 1 FROM outbox WHERE ",
        )
        .push(GUARD)
        .push(") FROM v LEFT JOIN u ON u.id = v.column1");
    sql
}

/// Records a status as received.
async fn record(tx: &mut impl WriteTx, st: &StatusUpdate, now: i64) -> Result<(), StoreError> {
    tx.run(
        "INSERT INTO status_events (wamid, status, meta_ts, biz_opaque_callback_data, \
         error_code, error_title, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            (&st.wamid).into(),
            st.status.as_str().into(),
            st.meta_ts.into(),
            (&st.callback).into(),
            st.error_code.into(),
            (&st.error_title).into(),
            now.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Of guarded statuses that settled nothing (SQLite), those whose callback names no row
/// (another number or recipient, a row a restored database queued anew), rather than a row
/// already further on.
async fn unmatched(
    tx: &mut impl WriteTx,
    unsettled: &[&(i64, Settle<'_>)],
) -> Result<Vec<i64>, StoreError> {
    let mut strangers = Vec::new();
    for chunk in unsettled.chunks(CHUNK) {
        let mut sql = Sql::new("SELECT v.column1 FROM (");
        sql.values(chunk.iter(), |t, (id, st)| {
            let g = st.guard.as_ref();
            t.bind(*id)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(None::<i64>)
                .bind(g.map(|g| g.status.phone_number_id.as_str()))
                .bind(g.and_then(|g| g.status.recipient_id.as_deref()))
                .bind(g.and_then(|g| g.status.recipient_user_id.as_deref()))
                .bind(g.and_then(|g| g.created_at));
        });
        sql.push(") AS v WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE ")
            .push(GUARD)
            .push(")");
        let rows: Vec<(i64,)> = tx.fetch(&sql).await?;
        strangers.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(strangers)
}

/// Records the guarded statuses whose callback names no row (`strangers`); statuses that only
/// came late for a row already further on are not recorded again.
async fn record_strangers(
    tx: &mut impl WriteTx,
    by_callback: &[(i64, Settle<'_>)],
    strangers: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    for id in strangers {
        let Some(g) = by_callback
            .iter()
            .find(|(i, _)| i == id)
            .and_then(|(_, s)| s.guard.as_ref())
        else {
            continue;
        };
        tracing::warn!(
            outbox_id = id,
            wamid = %g.status.wamid,
            "status names a reply of this gateway but not its number, recipient or queue \
             time; recorded, changes nothing"
        );
        if g.status.status != StatusKind::Failed && g.status.error_code.is_none() {
            record(tx, g.status, now).await?;
        }
    }
    Ok(())
}

/// With several replicas, two batches may touch the same replies (one records Meta's answer,
/// the other its status webhooks) in different orders: every reply this batch touches is
/// locked first, in id order, so they wait for each other instead of deadlocking.
async fn lock_rows(
    tx: &mut impl WriteTx,
    ops: &[Op],
    sent: &HashMap<i64, Settle<'_>>,
    by_callback: &HashMap<i64, Settle<'_>>,
    by_wamid: &HashMap<&str, Settle<'_>>,
) -> Result<(), StoreError> {
    let mut ids: Vec<i64> = sent.keys().chain(by_callback.keys()).copied().collect();
    ids.extend(ops.iter().filter_map(|op| match op {
        Op::Attempt { id } | Op::Sent { id, .. } | Op::Retry { id, .. } | Op::GiveUp { id, .. } => {
            Some(*id)
        }
        _ => None,
    }));
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() && by_wamid.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new("SELECT id FROM outbox WHERE id");
    sql.is_in(std::iter::once(-1_i64).chain(ids));
    sql.push(" OR (wamid");
    sql.is_in(std::iter::once("").chain(by_wamid.keys().copied()));
    sql.push(" AND ")
        .push(ECHO_ROW)
        .push(") ORDER BY id FOR UPDATE");
    tx.execute(&sql).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::sqlite_writer::{query_plan, texts, writer_on_a_fresh_file};
    use super::*;

    /// Meta's answer moves a row on only forward, and records its wamid wherever it is
    /// missing, in the same update: a status may have moved the row on first.
    #[tokio::test]
    async fn an_answer_records_its_wamid_even_after_a_status_moved_the_row_on() {
        let (dir, _store, mut writer) = writer_on_a_fresh_file().await;
        let file = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        for (id, state, wamid) in [
            (1, OutboxState::Sending, None),
            (2, OutboxState::Delivered, None),
            (3, OutboxState::Read, Some("wamid.Z")),
        ] {
            file.execute(
                "INSERT INTO outbox (id, phone_number_id, customer, recipient, recipient_kind, \
                 part, payload, state, state_rank, wamid, created_at, updated_at) \
                 VALUES (?1, '106540352242922', '15551234567', '15551234567', 'wa_id', 0, '{}', \
                 ?2, ?3, ?4, 1, 1)",
                rusqlite::params![id, state.as_str(), state.rank(), wamid],
            )
            .unwrap();
        }
        let answers: Vec<Op> = [(1, "wamid.A"), (2, "wamid.B"), (3, "wamid.C")]
            .into_iter()
            .map(|(id, wamid)| Op::Sent {
                id,
                wamid: wamid.into(),
            })
            .collect();
        writer.apply(&answers).await.unwrap();
        let rows: Vec<(String, Option<String>)> = file
            .prepare("SELECT state, wamid FROM outbox ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let row = |state: &str, wamid: &str| (state.to_owned(), Some(wamid.to_owned()));
        assert_eq!(
            rows,
            [
                row("sent", "wamid.A"),
                row("delivered", "wamid.B"),
                row("read", "wamid.Z")
            ]
        );
    }

    /// A status without callback data settles the Business app's echo that has its wamid, by
    /// SQLite's index of the echoes' wamids, and never one of the gateway's own replies (their
    /// statuses carry their callback data; migration 36 indexes only the echoes' wamids).
    #[tokio::test]
    async fn a_status_without_callback_data_settles_only_an_echo() {
        let (dir, _store, mut writer) = writer_on_a_fresh_file().await;
        let file = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        for (id, kind) in [(1, "reply"), (2, "business_app")] {
            file.execute(
                "INSERT INTO outbox (id, phone_number_id, customer, recipient, recipient_kind, \
                 part, payload, state, state_rank, wamid, created_at, updated_at, kind) \
                 VALUES (?1, '106540352242922', '15551234567', '15551234567', 'wa_id', 0, '{}', \
                 'sent', 2, 'wamid.' || ?1, 1, 1, ?2)",
                rusqlite::params![id, kind],
            )
            .unwrap();
        }
        let read = |wamid: &str| StatusUpdate {
            phone_number_id: "106540352242922".into(),
            recipient_id: Some("15551234567".into()),
            recipient_user_id: None,
            wamid: wamid.into(),
            status: StatusKind::Read,
            meta_ts: 1_700_000_000,
            callback: None,
            error_code: None,
            error_title: None,
        };
        let webhook = Op::Webhook(super::super::WebhookWrite {
            statuses: vec![read("wamid.1"), read("wamid.2")],
            ..Default::default()
        });
        writer.apply(&[webhook]).await.unwrap();
        let states = texts(&file, "SELECT state FROM outbox ORDER BY id");
        assert_eq!(states, ["sent", "read"]);

        let settle = Settle {
            state: OutboxState::Read,
            wamid: "wamid.2",
            error_code: None,
            error_title: None,
            guard: None,
        };
        let rows = [("wamid.2".into(), settle)];
        let sql = settle_echoes(&rows, 1);
        let plan = query_plan(&file, sql.text());
        assert!(plan.contains("outbox_echo_wamid"), "{plan}");
    }
}
