//! The batch's inbound phase: every webhook's messages in multi-row inserts (deduplicated on
//! wamid, and against the wamids retention remembers), the conversations they touch, and each
//! webhook's new rows and dead letter. Statements only inside the writer's transaction.

use super::{CHUNK, Op};
use crate::store::keywords::Committed;
use crate::store::retention::{not_deleted_before, wamid_digest};
use crate::store::rows::echo_row;
use crate::store::sql::{Arg, Sql, WriteTx};
use crate::store::wamid_index;
use crate::store::{
    InboxRow, InboxState, NewInbound, OutboxKind, OutboxState, StoreError, WebhookWrite,
};
use std::collections::HashMap;

const UPSERT_CONVERSATION: &str = "INSERT INTO conversations (phone_number_id, customer, \
     wa_id, user_id, customer_name, last_inbound_ts, updated_at) ";

/// SQLite's upsert also names the conversation's newest message (the chain's head).
const UPSERT_CONVERSATION_SQLITE: &str = "INSERT INTO conversations (phone_number_id, customer, \
     wa_id, user_id, customer_name, last_inbound_ts, updated_at, last_inbox_id) ";

/// The upsert's conflict clause, with the dialect's two-argument maximum.
macro_rules! upsert_conversation_tail {
    ($max:literal) => {
        concat!(
            " ON CONFLICT (phone_number_id, customer) DO UPDATE SET \
             wa_id = COALESCE(excluded.wa_id, conversations.wa_id), \
             user_id = COALESCE(excluded.user_id, conversations.user_id), \
             customer_name = COALESCE(excluded.customer_name, conversations.customer_name), \
             last_inbound_ts = ",
            $max,
            "(conversations.last_inbound_ts, excluded.last_inbound_ts), \
             updated_at = excluded.updated_at"
        )
    };
}

/// A batch that brought a conversation only messages it had already keeps its head.
const UPSERT_CONVERSATION_TAIL_SQLITE: &str = concat!(
    upsert_conversation_tail!("MAX"),
    ", last_inbox_id = COALESCE(excluded.last_inbox_id, conversations.last_inbox_id)"
);

const UPSERT_CONVERSATION_TAIL_PG: &str = upsert_conversation_tail!("GREATEST");

/// Links new messages, given as `VALUES (row id, the conversation's message before it in this
/// batch or NULL)`, to their conversations' messages before them: the one in this batch, else
/// the conversation's newest, read from its row in the same statement (before the upsert moves
/// the head on). SQLite only: `inbox_conversation` is gone there (migration 33).
const LINK: &str = "UPDATE inbox SET prev_id = COALESCE(v.column2, (SELECT c.last_inbox_id \
     FROM conversations c WHERE c.phone_number_id = inbox.phone_number_id \
     AND c.customer = inbox.customer)) FROM (";

/// Inbound messages of every webhook in the batch, in op order.
pub(super) fn messages(ops: &[Op]) -> Vec<&NewInbound> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Webhook(w) => Some(w.messages.iter()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Inserts `all` (one multi-row insert per chunk) and returns the new rows' ids by wamid. (On
/// PostgreSQL the lease phase then tells the other replicas of their conversations' work.)
pub(super) async fn insert(
    tx: &mut impl WriteTx,
    all: &[&NewInbound],
    now: i64,
) -> Result<HashMap<String, i64>, StoreError> {
    let mut inserted: HashMap<String, i64> = HashMap::new();
    // SQLite: the wamids stored since the wamid index's last merge are left out here, and the
    // index's in the statement; PostgreSQL's unique index finds them all.
    let unseen = tx.recent_wamids().map(|recent| recent.unseen(all));
    let all = unseen.as_deref().unwrap_or(all);
    for chunk in all.chunks(CHUNK) {
        // A wamid whose row retention or erasure deleted is known by its digest in
        // `seen_wamids`: at most one primary-key lookup per message, in the same statement.
        let digests: Vec<String> = chunk.iter().map(|m| wamid_digest(&m.wamid)).collect();
        let mut sql = Sql::new(
            "INSERT INTO inbox (wamid, phone_number_id, customer, wa_id, user_id, customer_name, \
             msg_type, text, payload, meta_ts, received_at, state, detail, opt_action, \
             opt_keyword) SELECT column1, column2, column3, column4, column5, column6, column7, \
             column8, column9, column10, column11, column12, column13, column14, column15 FROM (",
        );
        sql.values(chunk.iter().zip(&digests), |t, (m, digest)| {
            t.bind(&m.wamid)
                .bind(&m.phone_number_id)
                .bind(&m.customer)
                .bind(&m.wa_id)
                .bind(&m.user_id)
                .bind(&m.customer_name)
                .bind(m.msg_type.as_str())
                .bind(&m.text)
                .bind(&m.payload)
                .bind(m.meta_ts)
                .bind(now)
                .bind(m.state.as_str())
                .bind(&m.detail)
                .bind(m.keyword.as_ref().map(|k| k.action.as_str()))
                .bind(m.keyword.as_ref().map(|k| k.keyword.as_str()))
                .bind(digest.as_str());
        });
        // The VALUES columns are numbered as bound above: the wamid 1st, meta_ts 10th, the
        // digest 16th.
        sql.push(") AS v WHERE (")
            .push(&not_deleted_before("v.column10", "v.column16"))
            .push(")");
        match unseen {
            Some(_) => sql.push(" AND ").push(wamid_index::NOT_INDEXED),
            None => sql.push(" ON CONFLICT (wamid) DO NOTHING"),
        };
        sql.push(" RETURNING id, wamid");
        let rows: Vec<(i64, String)> = tx.fetch(&sql).await?;
        tx.inserted_messages(&rows);
        inserted.extend(rows.into_iter().map(|(id, wamid)| (wamid, id)));
    }
    Ok(inserted)
}

/// SQLite: moves the last-received time of each number that `all`'s new rows (`inserted`, by
/// wamid) came to, one row per number (migration 35).
pub(super) async fn note_numbers(
    tx: &mut impl WriteTx,
    all: &[&NewInbound],
    inserted: &HashMap<String, i64>,
    now: i64,
) -> Result<(), StoreError> {
    let mut numbers: Vec<&str> = all
        .iter()
        .filter(|m| inserted.contains_key(&m.wamid))
        .map(|m| m.phone_number_id.as_str())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    for chunk in numbers.chunks(CHUNK) {
        let mut sql = Sql::new("INSERT INTO number_last_received (phone_number_id, received_at) ");
        sql.values(chunk.iter(), |t, &n| {
            t.bind(n).bind(now);
        });
        sql.push(
            " ON CONFLICT (phone_number_id) DO UPDATE SET \
             received_at = MAX(number_last_received.received_at, excluded.received_at)",
        );
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Whether `m` belongs to a conversation (an unrouted message, or one with no customer, has
/// none).
fn in_conversation(m: &NewInbound) -> bool {
    m.state != InboxState::Unrouted && !m.customer.is_empty()
}

/// A message's conversation key.
fn key(m: &NewInbound) -> (&str, &str) {
    (m.phone_number_id.as_str(), m.customer.as_str())
}

/// The latest facts per conversation in a batch (one upsert row each: PostgreSQL refuses to
/// update the same row twice in one statement).
fn conversations<'a>(messages: impl Iterator<Item = &'a NewInbound>) -> Vec<&'a NewInbound> {
    let mut latest: HashMap<(&str, &str), &NewInbound> = HashMap::new();
    for m in messages.filter(|m| in_conversation(m)) {
        let key = key(m);
        match latest.get(&key) {
            Some(prev) if prev.meta_ts > m.meta_ts => {}
            _ => {
                latest.insert(key, m);
            }
        }
    }
    // In key order: two transactions upserting the same conversations lock them in the same
    // order, so they cannot deadlock (PostgreSQL, several replicas).
    let mut rows: Vec<&NewInbound> = latest.into_values().collect();
    rows.sort_unstable_by(|a, b| {
        (a.phone_number_id.as_str(), a.customer.as_str())
            .cmp(&(b.phone_number_id.as_str(), b.customer.as_str()))
    });
    rows
}

/// Upserts the conversations `all` touches, with their latest facts. On SQLite (`!shared`) it
/// first links the new messages (`inserted`, by wamid) into their conversations' chains and
/// moves each conversation's head to its newest.
pub(super) async fn upsert_conversations(
    tx: &mut impl WriteTx,
    all: &[&NewInbound],
    inserted: &HashMap<String, i64>,
    shared: bool,
    now: i64,
) -> Result<(), StoreError> {
    let (upsert, upsert_tail, heads) = if shared {
        (UPSERT_CONVERSATION, UPSERT_CONVERSATION_TAIL_PG, None)
    } else {
        let heads = link(tx, all, inserted).await?;
        (
            UPSERT_CONVERSATION_SQLITE,
            UPSERT_CONVERSATION_TAIL_SQLITE,
            Some(heads),
        )
    };
    let convs = conversations(all.iter().copied());
    for chunk in convs.chunks(CHUNK) {
        let mut sql = Sql::new(upsert);
        sql.values(chunk.iter(), |t, m| {
            t.bind(&m.phone_number_id)
                .bind(&m.customer)
                .bind(&m.wa_id)
                .bind(&m.user_id)
                .bind(&m.customer_name)
                .bind(m.meta_ts)
                .bind(now);
            if let Some(heads) = &heads {
                t.bind(heads.get(&key(m)).copied());
            }
        });
        sql.push(upsert_tail);
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Links the new messages of `all` (`inserted`, by wamid) into their conversations' chains, in
/// id order; returns each conversation's newest new message, its new head.
async fn link<'a>(
    tx: &mut impl WriteTx,
    all: &[&'a NewInbound],
    inserted: &HashMap<String, i64>,
) -> Result<HashMap<(&'a str, &'a str), i64>, StoreError> {
    let mut new: Vec<(i64, (&str, &str))> = all
        .iter()
        .filter(|m| in_conversation(m))
        .filter_map(|m| Some((*inserted.get(&m.wamid)?, key(m))))
        .collect();
    // A wamid twice in the batch is one row.
    new.sort_unstable();
    new.dedup_by_key(|(id, _)| *id);
    let mut heads: HashMap<(&str, &str), i64> = HashMap::new();
    let links: Vec<(i64, Option<i64>)> = new
        .into_iter()
        .map(|(id, key)| (id, heads.insert(key, id)))
        .collect();
    for chunk in links.chunks(CHUNK) {
        let mut sql = Sql::new(LINK);
        sql.values(chunk.iter(), |t, &(id, prev)| {
            t.bind(id).bind(prev);
        });
        sql.push(") AS v WHERE inbox.id = v.column1");
        tx.execute(&sql).await?;
    }
    Ok(heads)
}

/// The rows of webhook `w` that go on to the pipeline. The first occurrence of a wamid in the
/// batch takes the new row (it is removed from `inserted`); rows a keyword closed in this
/// commit need no turn.
pub(super) fn fresh_rows(
    w: &WebhookWrite,
    inserted: &mut HashMap<String, i64>,
    keywords: &Committed,
    now: i64,
) -> Vec<InboxRow> {
    let mut fresh = Vec::new();
    for m in &w.messages {
        if m.state == InboxState::Received
            && let Some(id) = inserted.remove(&m.wamid)
            && !keywords.closed.contains(&id)
        {
            let mut msg = m.clone();
            if keywords.ordinary.contains(&id) {
                msg.keyword = None;
            }
            fresh.push(InboxRow {
                id,
                received_at: now,
                msg,
            });
        }
    }
    fresh
}

/// Stores the body of webhook `w` that could not be read, if it had one; marks the dead letter
/// `w` replays, if it is one, with the rows it brought.
pub(super) async fn dead_letter(
    tx: &mut impl WriteTx,
    w: &WebhookWrite,
    now: i64,
) -> Result<(), StoreError> {
    if let Some(r) = &w.replay {
        crate::store::dead_letters::mark(tx, r, now).await?;
    }
    if let Some(d) = &w.dead_letter {
        tx.run(
            "INSERT INTO dead_letters (received_at, reason, body) VALUES ($1, $2, $3)",
            [now.into(), (&d.reason).into(), (&d.body).into()],
        )
        .await?;
    }
    Ok(())
}

/// The Business app's echoes as the business's turns, already `sent`, each unless an outbox row
/// has its wamid (`$8`). Only the echoes' wamids are indexed (migration 36): the same echo
/// delivered again is found there, and one of the gateway's own sends among the replies to
/// `$recent`, conversation (`$1`, `$2`)'s last `ECHO_OWN_WINDOW` (`$12`) messages, and its last
/// sends that answer none. Meta echoes only what a person sent from the app; should it echo a
/// send of the gateway's, that would come within seconds of the send, so among the recent ones.
macro_rules! insert_echo {
    ($recent:expr) => {
        concat!(
            "INSERT INTO outbox (inbox_id, phone_number_id, customer, recipient, recipient_kind, \
             part, payload, state, state_rank, attempts, wamid, created_at, updated_at, kind, \
             history_text) \
             SELECT NULL, $1, $2, $3, $4, 0, $5, $6, $7, 0, $8, $9, $9, $10, $11 \
             WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE wamid = $8 AND ",
            echo_row!(),
            ") AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.inbox_id IN (",
            $recent,
            ") AND o.wamid = $8) \
             AND NOT EXISTS (SELECT 1 FROM (SELECT wamid FROM outbox WHERE inbox_id IS NULL \
             AND phone_number_id = $1 AND customer = $2 ORDER BY id DESC LIMIT $12) AS unprompted \
             WHERE wamid = $8)"
        )
    };
}

/// SQLite finds a conversation's recent messages by the chain (migration 33).
const INSERT_ECHO_SQLITE: &str = insert_echo!(
    "WITH RECURSIVE recent(id, n) AS (\
     SELECT last_inbox_id, 1 FROM conversations WHERE phone_number_id = $1 AND customer = $2 \
     UNION ALL SELECT i.prev_id, r.n + 1 FROM recent r JOIN inbox i ON i.id = r.id \
     WHERE i.prev_id < r.id AND r.n < $12) SELECT id FROM recent"
);

/// PostgreSQL by `inbox_conversation`.
const INSERT_ECHO_PG: &str = insert_echo!(
    "SELECT id FROM inbox WHERE phone_number_id = $1 AND customer = $2 ORDER BY id DESC LIMIT $12"
);

/// How many of a conversation's latest messages, and of its latest sends that answer none, an
/// echo's wamid is compared with.
const ECHO_OWN_WINDOW: i64 = 32;

/// Stores webhook `w`'s echoes of the WhatsApp Business app as the business's turns (already
/// `sent`), each once: an echo of one of the gateway's recent sends, or the same echo delivered
/// again, adds nothing (`insert_echo!`).
pub(super) async fn echoes(
    tx: &mut impl WriteTx,
    w: &WebhookWrite,
    now: i64,
) -> Result<(), StoreError> {
    let sent = OutboxState::Sent;
    let sql = match tx.pg() {
        None => INSERT_ECHO_SQLITE,
        Some(_) => INSERT_ECHO_PG,
    };
    for e in &w.echoes {
        let args: [Arg; 12] = [
            (&e.phone_number_id).into(),
            (&e.customer).into(),
            (&e.recipient).into(),
            e.recipient_kind.as_str().into(),
            (&e.payload).into(),
            sent.as_str().into(),
            sent.rank().into(),
            (&e.wamid).into(),
            now.into(),
            OutboxKind::BusinessApp.as_str().into(),
            (&e.history).into(),
            ECHO_OWN_WINDOW.into(),
        ];
        tx.run(sql, args).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Op;
    use crate::cloudapi::envelope::MessageType;
    use crate::store::sqlite_writer::{query_plan, texts, writer_on_a_fresh_file};
    use crate::store::wamid_index;
    use crate::store::{InboxState, NewInbound, WebhookWrite};

    const PNID: &str = "106540352242922";

    fn webhook(messages: &[(&str, &str, InboxState)]) -> Op {
        let messages = messages
            .iter()
            .map(|&(wamid, customer, state)| NewInbound {
                wamid: wamid.into(),
                phone_number_id: PNID.into(),
                customer: customer.into(),
                wa_id: Some(customer.into()),
                user_id: None,
                customer_name: None,
                msg_type: MessageType::Text,
                text: Some(format!("text of {wamid}")),
                payload: "{}".into(),
                meta_ts: 1_700_000_000,
                state,
                detail: None,
                keyword: None,
                traceparent: None,
            })
            .collect();
        Op::Webhook(WebhookWrite {
            messages,
            statuses: Vec::new(),
            dead_letter: None,
            echoes: Vec::new(),
            replay: None,
        })
    }

    /// SQLite: each new message names its conversation's message before it, whether that came
    /// in the same commit or an earlier one; a redelivery links nothing, an unrouted message is
    /// in no chain, and the conversation's row names its newest message. The history reads the
    /// chain back, from the newest message (a handoff) or from the one being answered.
    #[tokio::test]
    async fn new_messages_are_linked_to_their_conversations_one_before() {
        use InboxState::{Received, Unrouted};
        let (dir, store, mut writer) = writer_on_a_fresh_file().await;
        let (ana, ben) = ("15551234567", "15557654321");
        writer
            .apply(&[
                webhook(&[("a", ana, Received), ("b", ben, Received)]),
                webhook(&[("c", ana, Received), ("a", ana, Received)]),
            ])
            .await
            .unwrap();
        writer
            .apply(&[
                webhook(&[("d", ana, Received), ("c", ana, Received)]),
                webhook(&[("u", ana, Unrouted)]),
            ])
            .await
            .unwrap();
        let file = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        let links: Vec<(String, Option<String>)> = file
            .prepare(
                "SELECT i.wamid, p.wamid FROM inbox i LEFT JOIN inbox p ON p.id = i.prev_id \
                 ORDER BY i.id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let link = |w: &str, p: Option<&str>| (w.to_owned(), p.map(str::to_owned));
        assert_eq!(
            links,
            [
                link("a", None),
                link("b", None),
                link("c", Some("a")),
                link("d", Some("c")),
                link("u", None),
            ]
        );
        let head = |customer: &str| -> String {
            file.query_row(
                "SELECT i.wamid FROM conversations c JOIN inbox i ON i.id = c.last_inbox_id \
                 WHERE c.customer = ?1",
                [customer],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!((head(ana).as_str(), head(ben).as_str()), ("d", "b"));

        file.execute("UPDATE inbox SET state = 'done'", []).unwrap();
        let texts = |before: i64, turns: usize| {
            let store = &store;
            async move {
                let history = store.history(PNID, ana, before, turns).await.unwrap();
                history.into_iter().map(|e| e.text).collect::<Vec<_>>()
            }
        };
        let d: i64 = file
            .query_row("SELECT id FROM inbox WHERE wamid = 'd'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            texts(i64::MAX, 10).await,
            ["text of a", "text of c", "text of d"]
        );
        assert_eq!(texts(i64::MAX, 2).await, ["text of c", "text of d"]);
        assert_eq!(texts(d, 10).await, ["text of a", "text of c"]);

        // A damaged link (a cycle back to a newer row) ends the walk instead of looping, even
        // where no row counts towards the history's limits.
        file.execute(
            "UPDATE inbox SET state = 'received', prev_id = ?1 WHERE wamid = 'a'",
            [d],
        )
        .unwrap();
        file.execute("UPDATE inbox SET state = 'received'", [])
            .unwrap();
        let walked = tokio::time::timeout(std::time::Duration::from_secs(10), texts(i64::MAX, 10));
        assert_eq!(walked.await.expect("the walk ends"), Vec::<String>::new());
    }

    /// SQLite: a message is stored once however often it comes: twice in one batch, again
    /// before the wamid index has it (the writer remembers it), in the batch that merges it
    /// into the index and after (the index has it), after the writer reopens with messages the
    /// index does not have yet, and after a commit failed (both read back from the rows). An
    /// unrouted message too. The merge copies the wamids in and moves the mark; deleting a
    /// message takes its wamid out. Both statements find their rows by key.
    #[tokio::test]
    async fn a_message_delivered_again_is_stored_once_before_and_after_its_wamid_is_indexed() {
        use InboxState::{Received, Unrouted};
        let (dir, store, mut writer) = writer_on_a_fresh_file().await;
        let file = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        let ana = "15551234567";
        let stored = || texts(&file, "SELECT wamid FROM inbox ORDER BY id");
        let indexed = || texts(&file, "SELECT wamid FROM inbox_wamids ORDER BY wamid");
        let mark = || -> i64 {
            file.query_row("SELECT id FROM inbox_wamids_merged", [], |r| r.get(0))
                .unwrap()
        };
        let deliver = |wamids: &[&str]| {
            webhook(
                &wamids
                    .iter()
                    .map(|&w| (w, ana, Received))
                    .collect::<Vec<_>>(),
            )
        };

        writer
            .apply(&[deliver(&["a", "a", "b"]), deliver(&["b", "a"])])
            .await
            .unwrap();
        writer
            .apply(&[deliver(&["a", "c"]), webhook(&[("u", ana, Unrouted)])])
            .await
            .unwrap();
        writer
            .apply(&[webhook(&[("u", ana, Unrouted)])])
            .await
            .unwrap();
        assert_eq!(stored(), ["a", "b", "c", "u"]);
        assert_eq!((indexed().len(), mark()), (0, 0));

        // This batch merges first: "b" is found in the index, "d" is new.
        writer.merge_next();
        writer.apply(&[deliver(&["b", "d"])]).await.unwrap();
        assert_eq!(stored(), ["a", "b", "c", "u", "d"]);
        assert_eq!(indexed(), ["a", "b", "c", "u"]);
        assert_eq!(mark(), 4);
        writer.apply(&[deliver(&["c", "u", "d"])]).await.unwrap();

        // Reopened, the writer reads "d" back (after the mark). A commit it counts as failed
        // may have written "e" all the same: it reads that back too.
        drop(writer);
        let mut writer = store.open_sqlite_writer().unwrap().unwrap();
        writer.apply(&[deliver(&["d", "a"])]).await.unwrap();
        file.execute(
            "INSERT INTO inbox (wamid, phone_number_id, customer, msg_type, payload, meta_ts, \
             received_at, state) VALUES ('e', ?1, ?2, 'text', '{}', 1, 1, 'done')",
            [PNID, ana],
        )
        .unwrap();
        writer.as_if_a_commit_failed();
        writer.apply(&[deliver(&["e", "d"])]).await.unwrap();
        assert_eq!(stored(), ["a", "b", "c", "u", "d", "e"]);

        writer.merge_next();
        writer.apply(&[deliver(&["f"])]).await.unwrap();
        assert_eq!(indexed(), ["a", "b", "c", "d", "e", "u"]);
        assert_eq!(mark(), 6);
        file.execute("DELETE FROM inbox WHERE wamid IN ('a', 'f')", [])
            .unwrap();
        assert_eq!(indexed(), ["b", "c", "d", "e", "u"]);
        // The mark passes a newest message deleted before its merge, so the writer forgets it.
        writer.merge_next();
        writer.apply(&[]).await.unwrap();
        assert_eq!(mark(), 7);
        assert!(!writer.merge_due());

        let lookup = format!(
            "SELECT 1 FROM (SELECT 'a' AS column1) AS v WHERE {}",
            wamid_index::NOT_INDEXED
        );
        let plan = query_plan(&file, &lookup);
        assert!(
            plan.contains("SEARCH w USING PRIMARY KEY (wamid=?)"),
            "{plan}"
        );
        let plan = query_plan(&file, wamid_index::MERGE);
        assert!(
            plan.contains("SEARCH inbox USING INTEGER PRIMARY KEY (rowid>?)"),
            "{plan}"
        );
    }

    /// SQLite: a number's last-received time moves with each commit that stores a message to
    /// it, and not with a redelivery (nothing new stored); the store reads it back per number.
    #[tokio::test]
    async fn a_numbers_last_message_time_moves_only_with_new_messages() {
        use InboxState::Received;
        let (dir, store, mut writer) = writer_on_a_fresh_file().await;
        let file = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        let time = || -> Option<i64> {
            file.query_row(
                "SELECT received_at FROM number_last_received WHERE phone_number_id = ?1",
                [PNID],
                |r| r.get(0),
            )
            .ok()
        };
        assert_eq!(time(), None);
        writer
            .apply(&[webhook(&[("a", "1555", Received)])])
            .await
            .unwrap();
        let first = time().expect("the number's message was stored");
        let numbers = [PNID.to_owned(), "106540352242933".to_owned()];
        let read = store.last_received_by_number(&numbers).await.unwrap();
        assert_eq!(
            read.into_iter().collect::<Vec<_>>(),
            [(PNID.to_owned(), first)]
        );
        // A clock that moves on (the writer stamps a commit with its own time).
        file.execute("UPDATE number_last_received SET received_at = 1", [])
            .unwrap();
        writer
            .apply(&[webhook(&[("a", "1555", Received)])])
            .await
            .unwrap();
        assert_eq!(time(), Some(1), "a redelivery stores nothing");
        writer
            .apply(&[webhook(&[("b", "1555", Received)])])
            .await
            .unwrap();
        assert!(time().unwrap() >= first);
    }

    /// Business app echoes `wamids` to `customer`, as one webhook.
    fn echoes(customer: &str, wamids: &[&str]) -> Op {
        let echoes = wamids
            .iter()
            .map(|w| crate::store::NewEcho {
                phone_number_id: PNID.into(),
                customer: customer.into(),
                recipient: customer.into(),
                recipient_kind: crate::cloudapi::outbound::RecipientKind::WaId,
                wamid: (*w).into(),
                payload: "{}".into(),
                history: format!("echo {w}"),
            })
            .collect();
        Op::Webhook(WebhookWrite {
            echoes,
            ..WebhookWrite::default()
        })
    }

    /// SQLite indexes only the echoes' wamids (migration 36). An echo is stored once, however
    /// often Meta delivers it; an echo of one of the gateway's own sends, a reply to a recent
    /// message of the conversation or a send that answers none, is not stored; and every
    /// lookup by wamid goes through an index, never a scan of the outbox.
    #[tokio::test]
    async fn echoes_are_stored_once_and_never_for_the_gateways_own_sends() {
        use InboxState::Received;
        let (dir, store, mut writer) = writer_on_a_fresh_file().await;
        let ana = "15551234567";
        writer
            .apply(&[webhook(&[("a", ana, Received), ("b", ana, Received)])])
            .await
            .unwrap();
        let file = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        file.execute_batch(&format!(
            "INSERT INTO outbox (inbox_id, phone_number_id, customer, recipient, recipient_kind, \
             part, payload, state, state_rank, wamid, created_at, updated_at) \
             SELECT id, '{PNID}', '{ana}', '{ana}', 'wa_id', 0, '{{}}', 'sent', 2, \
             'wamid.OWN-' || wamid, 1, 1 FROM inbox; \
             INSERT INTO outbox (inbox_id, phone_number_id, customer, recipient, recipient_kind, \
             part, payload, state, state_rank, wamid, created_at, updated_at) \
             VALUES (NULL, '{PNID}', '{ana}', '{ana}', 'wa_id', 0, '{{}}', 'sent', 2, \
             'wamid.OPERATOR', 1, 1);"
        ))
        .unwrap();
        let all = [
            "wamid.OWN-a",
            "wamid.OWN-b",
            "wamid.OPERATOR",
            "wamid.PERSON",
        ];
        writer.apply(&[echoes(ana, &all)]).await.unwrap();
        writer
            .apply(&[echoes(ana, &["wamid.PERSON"])])
            .await
            .unwrap();
        let stored = texts(
            &file,
            "SELECT wamid FROM outbox WHERE kind = 'business_app'",
        );
        assert_eq!(stored, ["wamid.PERSON"]);
        for wamid in all {
            let stored = store.is_stored_echo(wamid).await.unwrap();
            assert_eq!(stored, wamid == "wamid.PERSON", "{wamid}");
        }

        for sql in [
            super::INSERT_ECHO_SQLITE,
            crate::store::conversation::IS_STORED_ECHO,
        ] {
            let plan = query_plan(&file, sql);
            assert!(plan.contains("outbox_echo_wamid"), "{plan}");
            assert!(!plan.contains("SCAN outbox"), "{plan}");
            assert!(!plan.contains("SCAN o "), "{plan}");
        }
    }
}
