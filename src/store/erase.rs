//! Erasure of one customer (GDPR Art. 17): finding every stored row that carries the customer's
//! ids (reads, off the writer), the writer's operation that deletes them in one transaction, and
//! the keyed digest an opted-out customer's opt-out is kept under. Knows no HTTP and no config.

use super::retention::{remember, wamid_digest};
use super::sql::{Arg, Sql, WriteTx};
use super::{Callback, Store, StoreError, on_pool};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};

/// The prefix of an opt-out kept for an erased customer: `erased:` and a keyed digest.
const DIGEST_PREFIX: &str = "erased:";
/// Ids per statement when deleting by id or matching by id.
const CHUNK: usize = 500;
/// Passes of find-then-delete: a message that arrives between the two is caught by the next.
pub const ERASE_PASSES: usize = 3;

/// A customer id as given to the erase command or route: a wa_id (digits) or a BSUID
/// (`US.13491208655302741918`, `US.ENT.…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerId(String);

/// Why a string is not a customer id.
#[derive(Debug, thiserror::Error)]
#[error(
    "customer id {0:?} is neither a wa_id (digits, e.g. 15551234567) nor a business-scoped user \
     id (e.g. US.13491208655302741918): give the id Meta sent in the customer's messages"
)]
pub struct BadCustomerId(pub String);

impl CustomerId {
    /// Accepts letters, digits and dots (1 to 160 characters, with a digit): every wa_id and
    /// BSUID, and nothing that LIKE or a file path would read differently.
    pub fn parse(s: &str) -> Result<Self, BadCustomerId> {
        let ok = (1..=160).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
            && s.bytes().any(|b| b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadCustomerId(s.to_owned()))
        }
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key of the digests erased customers' opt-outs are kept under, derived from
/// `meta.app_secret` (present on every replica and for every command, never stored).
#[derive(Clone)]
pub struct ErasureKey([u8; 32]);

impl std::fmt::Debug for ErasureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErasureKey(..)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl ErasureKey {
    /// The key for `app_secret`: HMAC-SHA256(app_secret, a fixed label), so the digests are
    /// not the signatures of anything Meta signs.
    pub fn derive(app_secret: &[u8]) -> Self {
        Self(hmac(app_secret, b"wa-gateway customer erasure v1"))
    }

    /// What an erased customer's opt-out is stored under in place of their id: it matches the
    /// customer when they write again, and without the key it cannot be traced to a number.
    pub fn customer_digest(&self, customer: &str) -> String {
        format!(
            "{DIGEST_PREFIX}{}",
            hex::encode(hmac(&self.0, customer.as_bytes()))
        )
    }
}

/// An opt-out row of the customer.
#[derive(Clone, Debug)]
struct OptOutRow {
    phone_number_id: String,
    customer: String,
    opted_out: bool,
    keyword: String,
    changed_at: i64,
}

/// Every stored row of one customer, found by reading.
#[derive(Debug, Default)]
pub struct ErasePlan {
    /// Inbox rows: id, wamid digest, received_at (the digests are remembered so a redelivery
    /// of an erased message is not answered again).
    inbox: Vec<(i64, String, i64)>,
    outbox: Vec<i64>,
    status_events: Vec<i64>,
    opt_out_events: Vec<i64>,
    dead_letters: Vec<i64>,
    conversations: Vec<(String, String)>,
    opt_outs: Vec<OptOutRow>,
    /// Their paused conversations and the handoff notifications about them.
    pauses: Vec<(String, String)>,
    handoff_notifications: Vec<i64>,
    /// PostgreSQL: conversation leases and pacing buckets.
    leases: Vec<(String, String)>,
    send_limits: Vec<String>,
}

impl ErasePlan {
    fn is_empty(&self) -> bool {
        self.inbox.is_empty()
            && self.outbox.is_empty()
            && self.status_events.is_empty()
            && self.opt_out_events.is_empty()
            && self.dead_letters.is_empty()
            && self.conversations.is_empty()
            && self.opt_outs.is_empty()
            && self.pauses.is_empty()
            && self.handoff_notifications.is_empty()
            && self.leases.is_empty()
            && self.send_limits.is_empty()
    }
}

/// A write of erasure, applied by the group-commit writer (or a command's own connection).
#[derive(Debug)]
pub enum EraseOp {
    /// Delete the rows of `plan`; opt-outs in force are kept under `key`'s digest.
    Delete {
        plan: Box<ErasePlan>,
        key: ErasureKey,
    },
    /// An erased customer wrote again: their opt-out, kept under `digest`, is theirs again
    /// (so STOP and START work as before).
    RestoreOptOut {
        phone_number_id: String,
        customer: String,
        digest: String,
    },
}

/// What an erasure deleted.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Erased {
    /// Rows deleted per table.
    pub deleted: BTreeMap<String, u64>,
    /// `(number, digest)` of opt-outs kept under the keyed digest.
    #[serde(skip)]
    pub opt_outs_kept: Vec<(String, String)>,
    /// `(number, customer)` whose opt-out state was removed (kept or not).
    #[serde(skip)]
    pub forgotten: Vec<(String, String)>,
    /// `(number, customer)` whose pause was deleted.
    #[serde(skip)]
    pub unpaused: Vec<(String, String)>,
}

impl Erased {
    fn add(&mut self, table: &str, n: u64) {
        *self.deleted.entry(table.to_owned()).or_default() += n;
    }

    /// Adds what another step deleted.
    pub fn merge(&mut self, other: Erased) {
        for (t, n) in other.deleted {
            self.add(&t, n);
        }
        self.opt_outs_kept.extend(other.opt_outs_kept);
        self.forgotten.extend(other.forgotten);
        self.unpaused.extend(other.unpaused);
    }

    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.deleted.values().sum()
    }
}

/// Applies one erase operation inside the writer's open transaction.
pub(super) async fn apply_erase(
    tx: &mut impl WriteTx,
    op: &EraseOp,
    shared: bool,
) -> Result<Erased, StoreError> {
    match op {
        EraseOp::Delete { plan, key } => delete(tx, plan, key, shared).await,
        EraseOp::RestoreOptOut {
            phone_number_id,
            customer,
            digest,
        } => {
            tx.run(
                "INSERT INTO opt_outs (phone_number_id, customer, opted_out, keyword, changed_at) \
                 SELECT phone_number_id, $2, 1, keyword, changed_at FROM opt_outs \
                 WHERE phone_number_id = $1 AND customer = $3 AND opted_out = 1 \
                 ON CONFLICT (phone_number_id, customer) DO UPDATE SET opted_out = 1, \
                 keyword = excluded.keyword, changed_at = excluded.changed_at",
                [phone_number_id.into(), customer.into(), digest.into()],
            )
            .await?;
            tx.run(
                "DELETE FROM opt_outs WHERE phone_number_id = $1 AND customer = $2",
                [phone_number_id.into(), digest.into()],
            )
            .await?;
            Ok(Erased::default())
        }
    }
}

async fn delete_ids(
    tx: &mut impl WriteTx,
    table: &str,
    ids: &[i64],
    out: &mut Erased,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(CHUNK) {
        let mut sql = Sql::new(&format!("DELETE FROM {table} WHERE id IN ("));
        sql.list(chunk.iter().copied()).push(")");
        let n = tx.execute(&sql).await?;
        out.add(table, n);
    }
    Ok(())
}

/// Deletes by `(phone_number_id, customer)` from `table`.
async fn delete_keyed(
    tx: &mut impl WriteTx,
    table: &str,
    keys: &[(String, String)],
    out: &mut Erased,
) -> Result<(), StoreError> {
    let sql = format!("DELETE FROM {table} WHERE phone_number_id = $1 AND customer = $2");
    for (pnid, customer) in keys {
        let n = tx.run(&sql, [pnid.into(), customer.into()]).await?;
        out.add(table, n);
    }
    Ok(())
}

async fn delete(
    tx: &mut impl WriteTx,
    plan: &ErasePlan,
    key: &ErasureKey,
    shared: bool,
) -> Result<Erased, StoreError> {
    let mut out = Erased::default();
    remember(tx, plan.inbox.iter().map(|(_, d, at)| (d.clone(), *at))).await?;
    let inbox: Vec<i64> = plan.inbox.iter().map(|(id, _, _)| *id).collect();
    delete_ids(tx, "inbox", &inbox, &mut out).await?;
    delete_ids(tx, "outbox", &plan.outbox, &mut out).await?;
    delete_ids(tx, "status_events", &plan.status_events, &mut out).await?;
    delete_ids(tx, "opt_out_events", &plan.opt_out_events, &mut out).await?;
    delete_ids(tx, "dead_letters", &plan.dead_letters, &mut out).await?;
    delete_keyed(tx, "conversations", &plan.conversations, &mut out).await?;
    delete_keyed(tx, "paused_conversations", &plan.pauses, &mut out).await?;
    out.unpaused = plan.pauses.clone();
    delete_ids(
        tx,
        "handoff_notifications",
        &plan.handoff_notifications,
        &mut out,
    )
    .await?;
    let opt_keys: Vec<(String, String)> = plan
        .opt_outs
        .iter()
        .map(|o| (o.phone_number_id.clone(), o.customer.clone()))
        .collect();
    delete_keyed(tx, "opt_outs", &opt_keys, &mut out).await?;
    for o in plan.opt_outs.iter().filter(|o| o.opted_out) {
        let digest = key.customer_digest(&o.customer);
        tx.run(
            "INSERT INTO opt_outs (phone_number_id, customer, opted_out, keyword, changed_at) \
             VALUES ($1, $2, 1, $3, $4) ON CONFLICT (phone_number_id, customer) DO UPDATE SET \
             opted_out = 1, keyword = excluded.keyword, changed_at = excluded.changed_at",
            [
                (&o.phone_number_id).into(),
                digest.as_str().into(),
                (&o.keyword).into(),
                o.changed_at.into(),
            ],
        )
        .await?;
        out.opt_outs_kept.push((o.phone_number_id.clone(), digest));
    }
    out.forgotten = opt_keys;
    if shared {
        delete_keyed(tx, "conversation_leases", &plan.leases, &mut out).await?;
        for k in &plan.send_limits {
            let n = tx
                .run("DELETE FROM send_limits WHERE key = $1", [k.into()])
                .await?;
            out.add("send_limits", n);
        }
    }
    Ok(out)
}

/// `col IN ($…)` over `ids`, OR-ed for each column.
fn any_column_in<'a>(sql: &mut Sql<'a>, columns: &[&str], ids: &'a [String]) {
    for (i, col) in columns.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push(col).push(" IN (");
        sql.list(ids.iter().map(|s| Arg::Text(Some(s.as_str()))));
        sql.push(")");
    }
}

/// Runs a read statement built with [`Sql`] on the store's read pool.
macro_rules! read {
    ($store:expr, $sql:expr, $row:ty) => {{
        let sql: &Sql<'_> = $sql;
        on_pool!($store, |pool| {
            let q =
                sql.args()
                    .iter()
                    .fold(sqlx::query_as::<_, $row>(sql.text()), |q, a| match *a {
                        Arg::Int(v) => q.bind(v),
                        Arg::Text(v) => q.bind(v),
                    });
            q.fetch_all(pool).await
        })
    }};
}

impl Store {
    /// Every id the customer is known by: the one given, and the wa_ids, BSUIDs and conversation
    /// keys stored beside it (a customer keyed by BSUID may have older rows keyed by wa_id).
    async fn identities(&self, id: &CustomerId) -> Result<Vec<String>, StoreError> {
        let mut ids: BTreeSet<String> = BTreeSet::from([id.as_str().to_owned()]);
        for _ in 0..ERASE_PASSES {
            let list: Vec<String> = ids.iter().cloned().collect();
            let cols = ["customer", "wa_id", "user_id"];
            let mut found: Vec<(String, Option<String>, Option<String>)> = Vec::new();
            for table in ["conversations", "inbox"] {
                let mut sql = Sql::new(&format!(
                    "SELECT DISTINCT customer, wa_id, user_id FROM {table} WHERE "
                ));
                any_column_in(&mut sql, &cols, &list);
                found.extend(read!(self, &sql, (String, Option<String>, Option<String>))?);
            }
            let before = ids.len();
            for (c, w, u) in found {
                ids.extend(
                    [Some(c), w, u]
                        .into_iter()
                        .flatten()
                        .filter(|s| !s.is_empty()),
                );
            }
            if ids.len() == before {
                break;
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Finds every stored row of the customer known by `ids`.
    async fn erase_plan(&self, ids: &[String]) -> Result<ErasePlan, StoreError> {
        let mut plan = ErasePlan::default();
        let who = ["customer", "wa_id", "user_id"];
        let mut sql = Sql::new("SELECT id, wamid, received_at FROM inbox WHERE ");
        any_column_in(&mut sql, &who, ids);
        let inbox: Vec<(i64, String, i64)> = read!(self, &sql, (i64, String, i64))?;
        plan.inbox = inbox
            .into_iter()
            .map(|(id, w, at)| (id, wamid_digest(&w), at))
            .collect();
        let mut sql = Sql::new("SELECT id, wamid, created_at FROM outbox WHERE ");
        any_column_in(&mut sql, &["customer", "recipient"], ids);
        let outbox: Vec<(i64, Option<String>, i64)> =
            read!(self, &sql, (i64, Option<String>, i64))?;
        plan.outbox = outbox.iter().map(|(id, _, _)| *id).collect();
        // Status events name the reply by its wamid, or by the callback data it was sent with
        // (this installation's, or the form sent before installations existed).
        let wamids: Vec<String> = outbox.iter().filter_map(|(_, w, _)| w.clone()).collect();
        let callbacks: Vec<String> = outbox
            .iter()
            .flat_map(|&(id, _, created_at)| {
                let row = Callback::Row {
                    installation: self.installation().to_owned(),
                    id,
                    created_at,
                };
                [row.to_string(), Callback::Legacy(id).to_string()]
            })
            .collect();
        for (col, list) in [("wamid", &wamids), ("biz_opaque_callback_data", &callbacks)] {
            for chunk in list.chunks(CHUNK) {
                let mut sql = Sql::new("SELECT id FROM status_events WHERE ");
                any_column_in(&mut sql, &[col], chunk);
                let rows: Vec<(i64,)> = read!(self, &sql, (i64,))?;
                plan.status_events.extend(rows.into_iter().map(|(id,)| id));
            }
        }
        plan.status_events.sort_unstable();
        plan.status_events.dedup();
        let mut sql = Sql::new("SELECT id FROM opt_out_events WHERE ");
        any_column_in(&mut sql, &["customer"], ids);
        let rows: Vec<(i64,)> = read!(self, &sql, (i64,))?;
        plan.opt_out_events = rows.into_iter().map(|(id,)| id).collect();
        // A dead letter is a body that did not parse: any mention of the customer is theirs.
        let patterns: Vec<String> = ids.iter().map(|id| format!("%{id}%")).collect();
        let mut sql = Sql::new("SELECT id FROM dead_letters WHERE ");
        for (i, p) in patterns.iter().enumerate() {
            sql.push(if i > 0 {
                " OR body LIKE "
            } else {
                "body LIKE "
            })
            .bind(p.as_str());
        }
        let rows: Vec<(i64,)> = read!(self, &sql, (i64,))?;
        plan.dead_letters = rows.into_iter().map(|(id,)| id).collect();
        let mut sql = Sql::new("SELECT phone_number_id, customer FROM conversations WHERE ");
        any_column_in(&mut sql, &who, ids);
        plan.conversations = read!(self, &sql, (String, String))?;
        let mut sql = Sql::new("SELECT phone_number_id, customer FROM paused_conversations WHERE ");
        any_column_in(&mut sql, &["customer"], ids);
        plan.pauses = read!(self, &sql, (String, String))?;
        let mut sql = Sql::new("SELECT id FROM handoff_notifications WHERE ");
        any_column_in(&mut sql, &["customer"], ids);
        let rows: Vec<(i64,)> = read!(self, &sql, (i64,))?;
        plan.handoff_notifications = rows.into_iter().map(|(id,)| id).collect();
        let mut sql = Sql::new(
            "SELECT phone_number_id, customer, opted_out, keyword, changed_at FROM opt_outs WHERE ",
        );
        any_column_in(&mut sql, &["customer"], ids);
        let rows: Vec<(String, String, i64, String, i64)> =
            read!(self, &sql, (String, String, i64, String, i64))?;
        plan.opt_outs = rows
            .into_iter()
            .map(|(p, c, o, k, at)| OptOutRow {
                phone_number_id: p,
                customer: c,
                opted_out: o == 1,
                keyword: k,
                changed_at: at,
            })
            .collect();
        if self.is_shared() {
            let mut sql =
                Sql::new("SELECT phone_number_id, customer FROM conversation_leases WHERE ");
            any_column_in(&mut sql, &["customer"], ids);
            plan.leases = read!(self, &sql, (String, String))?;
            // Pacing buckets are keyed `c:<number>:<customer>`.
            let sql = Sql::new("SELECT key FROM send_limits WHERE key LIKE 'c:%'");
            let keys: Vec<(String,)> = read!(self, &sql, (String,))?;
            plan.send_limits = keys
                .into_iter()
                .map(|(k,)| k)
                .filter(|k| ids.iter().any(|id| k.ends_with(&format!(":{id}"))))
                .collect();
        }
        Ok(plan)
    }

    /// The next write of customer `id`'s erasure, deleting every row of theirs stored now on
    /// every number (an opt-out in force is kept under `key`'s digest); `None` when nothing of
    /// theirs is left. A message that arrives between the finding and the deleting is found
    /// by the next step: call it up to [`ERASE_PASSES`] times.
    pub async fn erase_step(
        &self,
        id: &CustomerId,
        key: &ErasureKey,
    ) -> Result<Option<EraseOp>, StoreError> {
        let ids = self.identities(id).await?;
        let plan = self.erase_plan(&ids).await?;
        Ok((!plan.is_empty()).then(|| EraseOp::Delete {
            plan: Box::new(plan),
            key: key.clone(),
        }))
    }

    /// The opt-out state of `customer` on `phone_number_id`, looked up under the id and under
    /// `digest` (an erased customer's): `(opted out, found only under the digest)`.
    pub async fn opt_out_state(
        &self,
        phone_number_id: &str,
        customer: &str,
        digest: &str,
    ) -> Result<(bool, bool), StoreError> {
        let rows: Vec<(String, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT customer, opted_out FROM opt_outs WHERE phone_number_id = $1 \
                 AND customer IN ($2, $3)",
            )
            .bind(phone_number_id)
            .bind(customer)
            .bind(digest)
            .fetch_all(pool)
            .await
        })?;
        let plain = rows.iter().find(|(c, _)| c == customer);
        let hashed = rows.iter().any(|(c, o)| c == digest && *o == 1);
        Ok(match plain {
            Some((_, 1)) => (true, false),
            _ => (hashed, hashed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_by_case() {
        for ok in ["15551234567", "US.13491208655302741918", "US.ENT.1234abc"] {
            assert!(CustomerId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "abc",
            "1555%",
            "15_55",
            "+15551234567",
            "a/../1",
            &"1".repeat(161),
        ] {
            let err = CustomerId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("neither a wa_id"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_digest_depends_on_the_key_and_shows_no_id() {
        let a = ErasureKey::derive(b"secret-a");
        let b = ErasureKey::derive(b"secret-b");
        let d = a.customer_digest("15551234567");
        assert!(d.starts_with("erased:") && d.len() == 7 + 64, "{d}");
        assert_eq!(d, a.customer_digest("15551234567"));
        assert_ne!(d, b.customer_digest("15551234567"));
        assert_ne!(d, a.customer_digest("15551234568"));
        assert_eq!(format!("{a:?}"), "ErasureKey(..)");
    }
}
