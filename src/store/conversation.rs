//! Per-conversation facts the policies decide on: the last inbound time (the 24-hour window),
//! the opt-out state, and the turn history an agent is given.

use super::batches::{Batched, Reply};
use super::{PgLinks, Store, StoreError, on_pool};
use std::collections::HashMap;

/// What the history keeps of the sends of `outbox o`: those Meta accepted, but not the later
/// parts of a split text.
macro_rules! history_kept {
    () => {
        "o.state_rank BETWEEN 2 AND 4 AND (o.history_text IS NULL OR o.history_text <> '')"
    };
}

/// The replies the history keeps to inbox row `i`: with the chain below, how many.
macro_rules! kept_replies_of {
    ($i:literal) => {
        concat!(
            "(SELECT count(*) FROM outbox o WHERE o.inbox_id = ",
            $i,
            ".id AND ",
            history_kept!(),
            ")"
        )
    };
}

/// Whether inbox row `i` is a customer's text the history keeps.
macro_rules! kept_text {
    ($i:literal) => {
        concat!("(", $i, ".state = 'done' AND ", $i, ".text IS NOT NULL)")
    };
}

/// Whether an echo with wamid `$1` is stored, by `outbox_echo_wamid` (migration 36).
pub(super) const IS_STORED_ECHO: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM outbox WHERE wamid = $1 AND ",
    super::rows::echo_row!(),
    ")"
);

/// SQLite: the messages of conversation (`$1`, `$2`) before inbox row `$3`, newest first, found
/// by the chain of `prev_id` links (migration 33) from that row's link (or, when `$3` is not one
/// of its messages, as for a handoff's `i64::MAX`, from the conversation's newest message below
/// it): back until `$4` texts and `$4` replies are found, as the index scans they replace would
/// read, or the chain ends. Each step reads one row by its id, always an older one (a link
/// names an earlier row: ids are never reused), so no damaged link can make the walk loop.
macro_rules! chain {
    () => {
        concat!(
            "WITH RECURSIVE chain(id, prev_id, texts, replies) AS (\
             SELECT i.id, i.prev_id, ",
            kept_text!("i"),
            ", ",
            kept_replies_of!("i"),
            " FROM inbox i WHERE i.id = COALESCE(\
             (SELECT prev_id FROM inbox WHERE id = $3 AND phone_number_id = $1 AND customer = $2), \
             (SELECT last_inbox_id FROM conversations WHERE phone_number_id = $1 AND customer = $2 \
             AND last_inbox_id < $3)) \
             UNION ALL SELECT i.id, i.prev_id, c.texts + ",
            kept_text!("i"),
            ", c.replies + ",
            kept_replies_of!("i"),
            " FROM chain c JOIN inbox i ON i.id = c.prev_id \
             WHERE i.id < c.id AND (c.texts < $4 OR c.replies < $4)) "
        )
    };
}

/// The newest `$4` customer texts of conversation (`$1`, `$2`) before inbox row `$3`: by the
/// chain on SQLite, by `inbox_conversation` on PostgreSQL.
const HISTORY_TEXTS_SQLITE: &str = concat!(
    chain!(),
    "SELECT text, meta_ts, received_at FROM inbox i WHERE i.id IN (SELECT id FROM chain) AND ",
    kept_text!("i"),
    " ORDER BY i.id DESC LIMIT $4"
);

const HISTORY_TEXTS_PG: &str = concat!(
    "SELECT text, meta_ts, received_at FROM inbox i WHERE phone_number_id = $1 AND customer = $2 \
     AND id < $3 AND ",
    kept_text!("i"),
    " ORDER BY id DESC LIMIT $4"
);

/// The sends that answer no message (the Business app's echoes, operators' texts), newest `$4`
/// first, by their own small index.
macro_rules! unprompted_sends {
    () => {
        concat!(
            " UNION ALL SELECT id, history_text, payload, created_at FROM (\
             SELECT o.id, o.history_text, o.payload, o.created_at FROM outbox o \
             WHERE o.inbox_id IS NULL AND o.phone_number_id = $1 AND o.customer = $2 AND ",
            history_kept!(),
            " ORDER BY o.id DESC LIMIT $4) AS unprompted"
        )
    };
}

/// The sends to conversation (`$1`, `$2`) the history keeps, newest first: the newest `$4`
/// replies to its messages older than inbox row `$3`, found through those messages, newest
/// first (a conversation's turns run in order, so their replies' ids follow their messages'):
/// `outbox_reply_to` is written near its end, where an index of replies by conversation took a
/// random page a reply. Then the newest `$4` that answer no message. The messages are the
/// chain's on SQLite, `inbox_conversation`'s on PostgreSQL.
const HISTORY_SENDS_SQLITE: &str = concat!(
    chain!(),
    "SELECT id, history_text, payload, created_at FROM (\
     SELECT o.id, o.history_text, o.payload, o.created_at FROM outbox o \
     WHERE o.inbox_id IN (SELECT id FROM chain) AND ",
    history_kept!(),
    " ORDER BY o.inbox_id DESC, o.id DESC LIMIT $4) AS answers",
    unprompted_sends!()
);

const HISTORY_SENDS_PG: &str = concat!(
    "SELECT id, history_text, payload, created_at FROM (\
     SELECT o.id, o.history_text, o.payload, o.created_at FROM inbox i \
     JOIN outbox o ON o.inbox_id = i.id WHERE i.phone_number_id = $1 AND i.customer = $2 \
     AND i.id < $3 AND ",
    history_kept!(),
    " ORDER BY i.id DESC, o.id DESC LIMIT $4) AS answers",
    unprompted_sends!()
);

/// A customer's message as the history reads it: text, Meta's time, arrival.
type Inbound = (Option<String>, i64, i64);

/// A send as the history reads it: id, history text, message object, queued at.
type Sent = (i64, Option<String>, String, i64);

/// One past turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// `true` for the customer, `false` for the business (the agent or a system text).
    pub from_customer: bool,
    pub text: String,
    /// Unix seconds.
    pub timestamp: i64,
}

impl Store {
    /// Meta's timestamp (Unix seconds) of the customer's latest message to this number.
    pub async fn last_inbound(
        &self,
        phone_number_id: &str,
        customer: &str,
    ) -> Result<Option<i64>, StoreError> {
        on_pool!(self, |pool| {
            let ts: Option<i64> = sqlx::query_scalar(
                "SELECT last_inbound_ts FROM conversations WHERE phone_number_id = $1 AND customer = $2",
            )
            .bind(phone_number_id)
            .bind(customer)
            .fetch_optional(pool)
            .await?;
            Ok(ts)
        })
    }

    /// Whether the Business app's echo `wamid` is stored as a person's send: the writer stores
    /// an echo unless one of the gateway's own replies has its wamid.
    pub async fn is_stored_echo(&self, wamid: &str) -> Result<bool, StoreError> {
        on_pool!(self, |pool| {
            let stored: bool = sqlx::query_scalar(IS_STORED_ECHO)
                .bind(wamid)
                .fetch_one(pool)
                .await?;
            Ok(stored)
        })
    }

    /// The last `turns` messages of a conversation before inbox row `before_inbox_id`, oldest
    /// first: the customer's texts and the replies that Meta accepted.
    pub async fn history(
        &self,
        phone_number_id: &str,
        customer: &str,
        before_inbox_id: i64,
        turns: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        if turns == 0 {
            return Ok(Vec::new());
        }
        let limit = turns as i64;
        // Both reads name the conversation, the message they stop before and how many to read.
        macro_rules! read {
            ($sql:expr, $pool:expr) => {
                sqlx::query_as($sql)
                    .bind(phone_number_id)
                    .bind(customer)
                    .bind(before_inbox_id)
                    .bind(limit)
                    .fetch_all($pool)
                    .await?
            };
        }
        let (inbound, mut outbound): (Vec<Inbound>, Vec<Sent>) = match &self.pool {
            super::Pool::Sqlite(pool) => (
                read!(HISTORY_TEXTS_SQLITE, pool),
                read!(HISTORY_SENDS_SQLITE, pool),
            ),
            super::Pool::Postgres(pool) => {
                (read!(HISTORY_TEXTS_PG, pool), read!(HISTORY_SENDS_PG, pool))
            }
        };
        // The sends, newest first: the replies and the unprompted sends merged by id.
        outbound.sort_unstable_by_key(|sent| std::cmp::Reverse(sent.0));
        outbound.truncate(turns);
        // Order by arrival time in milliseconds; replies are created after their message. Both
        // lists came newest first: read oldest first, so that the stable sort keeps rows of the
        // same millisecond (the parts and items of one reply) in id order.
        let mut all: Vec<(i64, HistoryEntry)> = inbound
            .into_iter()
            .rev()
            .filter_map(said_by_customer)
            .chain(outbound.into_iter().rev().filter_map(said_by_business))
            .collect();
        all.sort_by_key(|(at, _)| *at);
        let skip = all.len().saturating_sub(turns);
        Ok(all.into_iter().skip(skip).map(|(_, e)| e).collect())
    }
}

/// A customer's message of the history, keyed by when it arrived (ms): (text, Meta's time in
/// seconds, arrival).
fn said_by_customer((text, meta_ts, received_at): Inbound) -> Option<(i64, HistoryEntry)> {
    let entry = HistoryEntry {
        from_customer: true,
        text: text?,
        timestamp: meta_ts,
    };
    Some((received_at, entry))
}

/// A send of the history, keyed by when it was queued (ms): (id, what the history keeps of it,
/// its message object, queued at). A send queued before `history_text` existed has its text
/// body read.
fn said_by_business((_, history, payload, created_at): Sent) -> Option<(i64, HistoryEntry)> {
    let text = match history {
        Some(text) => text,
        None => {
            let v: serde_json::Value = serde_json::from_str(&payload).ok()?;
            v["text"]["body"].as_str()?.to_owned()
        }
    };
    let entry = HistoryEntry {
        from_customer: false,
        text,
        timestamp: created_at / 1000,
    };
    Some((created_at, entry))
}

/// A customer's opt-out state as the send path needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct OptState {
    opted_out: bool,
    /// When they last opted out (ms since the epoch; 0: never).
    stopped_at: i64,
}

/// Customers who opted out (or ever did), per number, held in memory so a turn or a send never
/// asks storage on a single replica. Loaded at start; changed by the group-commit writer right
/// after the commit that records the change. Cheap to clone: clones share the set.
#[derive(Clone, Default)]
pub struct OptedOut {
    set: std::sync::Arc<std::sync::Mutex<HashMap<(String, String), OptState>>>,
}

impl OptedOut {
    fn get(&self, phone_number_id: &str, customer: &str) -> OptState {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(phone_number_id.to_owned(), customer.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// Whether `customer` opted out of `phone_number_id`.
    pub fn contains(&self, phone_number_id: &str, customer: &str) -> bool {
        self.get(phone_number_id, customer).opted_out
    }

    /// Whether a reply to `customer` queued at `created_at` (ms) may leave now: not while they
    /// are opted out, and never if they opted out after it was queued (even if back in since).
    pub fn allows(&self, phone_number_id: &str, customer: &str, created_at: i64) -> bool {
        let s = self.get(phone_number_id, customer);
        !s.opted_out && created_at >= s.stopped_at
    }

    /// Records a durable change made at `at` (ms).
    pub fn set(&self, phone_number_id: &str, customer: &str, opted_out: bool, at: i64) {
        let key = (phone_number_id.to_owned(), customer.to_owned());
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let state = set.entry(key).or_default();
        state.opted_out = opted_out;
        if opted_out {
            state.stopped_at = state.stopped_at.max(at);
        }
    }

    /// Loads every customer who is or was opted out from storage (at start, before any turn).
    pub async fn load(&self, store: &Store) -> Result<usize, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = on_pool!(store, |pool| {
            sqlx::query_as(
                "SELECT phone_number_id, customer, opted_out, stopped_at FROM opt_outs \
                 WHERE opted_out = 1 OR stopped_at > 0",
            )
            .fetch_all(pool)
            .await
        })?;
        let n = rows.len();
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = rows
            .into_iter()
            .map(|(p, c, o, at)| {
                let state = OptState {
                    opted_out: o == 1,
                    stopped_at: at,
                };
                ((p, c), state)
            })
            .collect();
        Ok(n)
    }
}

impl Store {
    /// Whether a reply to `customer` queued at `created_at` (ms) may leave now, as stored
    /// (several replicas: another one may have recorded an opt-out). One primary-key read; on
    /// PostgreSQL, the reads asked for at the same time are one statement.
    pub async fn reply_allowed(
        &self,
        phone_number_id: &str,
        customer: &str,
        created_at: i64,
    ) -> Result<bool, StoreError> {
        if let Some(links) = &self.pg {
            let keys = [phone_number_id, customer].map(str::to_owned);
            return links
                .allowed_reads
                .ask(links, |reply| AllowedRead {
                    keys,
                    created_at,
                    reply,
                })
                .await;
        }
        const READ: &str = "SELECT opted_out, stopped_at FROM opt_outs \
             WHERE phone_number_id = $1 AND customer = $2";
        let row: Option<(i64, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(READ)
                .bind(phone_number_id)
                .bind(customer)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_none_or(|(o, at)| o == 0 && created_at >= at))
    }
}

/// PostgreSQL's test that customer `customer` of number `pnid` still takes a reply queued at
/// `queued` (ms): no opt-out in force, and none since it was queued (as [`Store::reply_allowed`]
/// decides on SQLite). The arguments are SQL expressions.
pub(super) fn takes_reply(pnid: &str, customer: &str, queued: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM opt_outs o WHERE o.phone_number_id = {pnid} \
         AND o.customer = {customer} AND (o.opted_out <> 0 OR o.stopped_at > {queued}))"
    )
}

/// One [`Store::reply_allowed`] read on PostgreSQL (number, customer; the reply's queue time),
/// waiting for its batch.
pub(super) struct AllowedRead {
    keys: [String; 2],
    created_at: i64,
    reply: Reply<bool>,
}

impl Batched for AllowedRead {
    type Answer = bool;

    fn reply(self) -> Reply<bool> {
        self.reply
    }

    async fn run(links: &PgLinks, batch: &[Self]) -> Result<Vec<bool>, StoreError> {
        static READ: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT {} FROM UNNEST($1::text[], $2::text[], $3::bigint[]) \
                 WITH ORDINALITY AS k(p, c, at, ord) ORDER BY k.ord",
                takes_reply("k.p", "k.c", "k.at")
            )
        });
        let col = |i: usize| batch.iter().map(|r| r.keys[i].as_str()).collect::<Vec<_>>();
        let at: Vec<i64> = batch.iter().map(|r| r.created_at).collect();
        links
            .hot
            .run(async |c| {
                Ok(sqlx::query_scalar(READ.as_str())
                    .bind(col(0))
                    .bind(col(1))
                    .bind(at)
                    .fetch_all(c)
                    .await?)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::OutboxState;
    use super::super::sqlite_writer::writer_on_a_fresh_file;
    use super::HistoryEntry;

    const PNID: &str = "106540352242922";
    const ANA: &str = "15551234567";
    const BEN: &str = "15557654321";

    /// A conversation's history is its customer's texts and the sends Meta accepted, found
    /// through the messages they answer or, for those that answer none, by conversation: in
    /// time order, the newest `turns`, before the message being answered, none of another's.
    #[tokio::test]
    async fn history_is_the_texts_and_accepted_sends_of_the_conversation_in_time_order() {
        let (dir, store, _writer) = writer_on_a_fresh_file().await;
        let file = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        // Each message linked to its conversation's one before it, as the writer links them.
        let inbox = |id: i64, customer: &str, text: &str, state: &str| {
            file.execute(
                "INSERT INTO inbox (id, wamid, phone_number_id, customer, msg_type, text, payload, \
                 meta_ts, received_at, state, prev_id) VALUES (?1, 'wamid.in' || ?1, ?2, ?3, \
                 'text', ?4, '{}', ?1, ?1 * 1000, ?5, (SELECT last_inbox_id FROM conversations \
                 WHERE phone_number_id = ?2 AND customer = ?3))",
                rusqlite::params![id, PNID, customer, text, state],
            )
            .unwrap();
            file.execute(
                "INSERT INTO conversations (phone_number_id, customer, last_inbound_ts, \
                 updated_at, last_inbox_id) VALUES (?1, ?2, ?3, ?3, ?3) ON CONFLICT DO UPDATE \
                 SET last_inbox_id = excluded.last_inbox_id",
                rusqlite::params![PNID, customer, id],
            )
            .unwrap();
        };
        // (id, the message it answers, customer, part, state, history text, created at in ms)
        let outbox = |id: i64,
                      inbox_id: Option<i64>,
                      customer: &str,
                      part: i64,
                      state: OutboxState,
                      history: &str,
                      at: i64| {
            file.execute(
                "INSERT INTO outbox (id, inbox_id, phone_number_id, customer, recipient, \
                 recipient_kind, part, payload, state, state_rank, created_at, updated_at, \
                 history_text) VALUES (?1, ?2, ?3, ?4, ?4, 'wa_id', ?5, '{}', ?6, ?7, ?8, ?8, ?9)",
                rusqlite::params![
                    id,
                    inbox_id,
                    PNID,
                    customer,
                    part,
                    state.as_str(),
                    state.rank(),
                    at,
                    history
                ],
            )
            .unwrap();
        };
        inbox(1, ANA, "hi", "done");
        outbox(
            1,
            Some(1),
            ANA,
            0,
            OutboxState::Read,
            "hello **there**",
            1_500,
        );
        outbox(2, Some(1), ANA, 1, OutboxState::Read, "", 1_500);
        inbox(2, BEN, "not Ana's", "done");
        outbox(3, Some(2), BEN, 0, OutboxState::Sent, "not to Ana", 2_500);
        // A person answered from the Business app: it answers no message.
        outbox(4, None, ANA, 0, OutboxState::Sent, "Maria here", 2_700);
        inbox(3, ANA, "and now?", "done");
        outbox(5, Some(3), ANA, 0, OutboxState::Failed, "never sent", 3_500);
        outbox(
            6,
            Some(3),
            ANA,
            0,
            OutboxState::Delivered,
            "now this",
            3_600,
        );
        inbox(4, ANA, "the one being answered", "received");
        outbox(7, Some(4), ANA, 0, OutboxState::Sending, "not yet", 4_500);

        let all = store.history(PNID, ANA, 4, 10).await.unwrap();
        let said = |from_customer: bool, text: &str, timestamp: i64| HistoryEntry {
            from_customer,
            text: text.to_owned(),
            timestamp,
        };
        let expected = vec![
            said(true, "hi", 1),
            said(false, "hello **there**", 1),
            said(false, "Maria here", 2),
            said(true, "and now?", 3),
            said(false, "now this", 3),
        ];
        assert_eq!(all, expected);
        let last = store.history(PNID, ANA, 4, 3).await.unwrap();
        assert_eq!(last, expected[2..]);
        let before = store.history(PNID, ANA, 3, 10).await.unwrap();
        assert_eq!(before, expected[..3]);
    }
}
