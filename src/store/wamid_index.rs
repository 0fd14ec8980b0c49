//! SQLite: the index of inbound wamids, written in sorted batches rather than with every message.
//!
//! A unique index of `inbox.wamid` took a random page of the write-ahead log for every message:
//! a third of the pages a commit wrote (issue 16). Instead, `inbox_wamids` has the wamids of the
//! inbox rows up to `inbox_wamids_merged.id`, and the writer keeps the wamids of the rows after
//! it in memory ([`Recent`]). Every few seconds the writer copies those into the index in key
//! order, inside a batch's transaction ([`merge`]): a page of the index is then written once per
//! merge, however many of the merge's wamids land on it. A message is new when its wamid is in
//! neither. The database stays the truth: [`Recent`] is read back from the rows after the mark
//! when the writer opens and after a commit fails, so a crash loses nothing the index needs.
//! PostgreSQL keeps its unique index: every replica inserts messages there.

use super::NewInbound;
use rusqlite::{Connection, Transaction};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A merge is due this long after the last one...
const MERGE_EVERY: Duration = Duration::from_secs(4);
/// ...or once this many wamids wait (a burst), which bounds both the memory they take and how
/// long one merge holds its batch up.
const MERGE_AT: usize = 16_384;

/// The wamids of the inbox rows the index does not have yet (newer than its mark), by wamid.
#[derive(Debug)]
pub(super) struct Recent {
    ids: HashMap<String, i64>,
    /// The mark: every inbox row up to this id is in the index, or was deleted.
    merged: i64,
    last_merge: Instant,
    /// A commit failed: what the database holds is read back before the next batch.
    stale: bool,
}

impl Recent {
    /// Reads the mark and the wamids of the rows after it.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let merged: i64 = conn.query_row("SELECT id FROM inbox_wamids_merged", [], |r| r.get(0))?;
        let mut stmt = conn.prepare("SELECT wamid, id FROM inbox WHERE id > ?1")?;
        let ids = stmt
            .query_map([merged], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            ids,
            merged,
            last_merge: Instant::now(),
            stale: false,
        })
    }

    /// The messages of `all` to insert: those whose wamid no row after the mark has, each wamid
    /// once (the first message with it), in order. (The statement that inserts them leaves out
    /// the ones the index has.)
    pub(super) fn unseen<'m>(&self, all: &[&'m NewInbound]) -> Vec<&'m NewInbound> {
        let mut batch = HashSet::with_capacity(all.len());
        all.iter()
            .copied()
            .filter(|m| !self.ids.contains_key(&m.wamid) && batch.insert(m.wamid.as_str()))
            .collect()
    }

    /// Whether the next batch should merge first.
    pub(super) fn merge_due(&self) -> bool {
        !self.ids.is_empty()
            && (self.ids.len() >= MERGE_AT || self.last_merge.elapsed() >= MERGE_EVERY)
    }

    /// The mark (see `merged`).
    pub(super) fn merged(&self) -> i64 {
        self.merged
    }

    /// A batch committed: it inserted `rows` (id, wamid), after merging up to `merged` if it did.
    pub(super) fn committed(&mut self, rows: Vec<(i64, String)>, merged: Option<i64>) {
        if let Some(mark) = merged {
            self.ids.retain(|_, id| *id > mark);
            self.merged = mark;
            self.last_merge = Instant::now();
        }
        self.ids
            .extend(rows.into_iter().map(|(id, wamid)| (wamid, id)));
    }

    /// A commit failed, so what it inserted is unknown: read it back before the next batch.
    pub(super) fn failed(&mut self) {
        self.stale = true;
    }

    /// Whether a commit failed since this was read.
    pub(super) fn stale(&self) -> bool {
        self.stale
    }

    /// Makes the next batch merge first, whenever the last merge was.
    #[cfg(test)]
    pub(super) fn merge_next(&mut self) {
        self.last_merge -= MERGE_EVERY;
    }
}

/// Copies the wamids of the rows after the mark `?1` into the index.
pub(super) const MERGE: &str = "INSERT INTO inbox_wamids (wamid, id) SELECT wamid, id FROM inbox \
     WHERE id > ?1 ORDER BY wamid ON CONFLICT (wamid) DO NOTHING";

/// Copies the wamids of the inbox rows after `merged` into the index, in key order, and moves
/// the mark to the newest id given; returns the new mark. Inside the batch's transaction, before
/// its messages are inserted.
pub(super) fn merge(tx: &Transaction<'_>, merged: i64) -> rusqlite::Result<i64> {
    tx.prepare_cached(MERGE)?.execute([merged])?;
    // The highest id ever given: every row up to it is copied now or was deleted (and a
    // deleted row's wamid left the writer's memory with the rest).
    let mark: i64 = tx
        .prepare_cached(
            "SELECT MAX(?1, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'inbox'), 0))",
        )?
        .query_row([merged], |r| r.get(0))?;
    tx.prepare_cached("UPDATE inbox_wamids_merged SET id = ?1")?
        .execute([mark])?;
    Ok(mark)
}

/// The condition a new message's row (`v.column1` its wamid) meets in the statement that inserts
/// it when the index does not have its wamid.
pub(super) const NOT_INDEXED: &str =
    "NOT EXISTS (SELECT 1 FROM inbox_wamids w WHERE w.wamid = v.column1)";
