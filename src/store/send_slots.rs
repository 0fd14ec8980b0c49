//! Cluster-wide send turns (PostgreSQL): one GCRA bucket per number and one per (number,
//! customer) in the unlogged `send_limits` table, on the database's clock, shared by every
//! replica. The turns senders ask for at the same time are taken together, in one statement:
//! every send of every replica updates its number's row, and one statement per send made that
//! row the database's busiest (a third of a message's time in PostgreSQL at 1,700 msg/s, in
//! `pg_stat_statements`). A batch updates each number's row once, for all of its sends, and
//! hands them consecutive turns.

use super::batches::{Batched, Reply};
use super::{PgLinks, Store, StoreError};
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// A cluster-wide send bucket: its key, one message every `interval`, bursts of `burst`.
#[derive(Clone, Copy, Debug)]
pub struct Bucket<'a> {
    pub key: &'a str,
    pub interval: Duration,
    pub burst: u32,
}

impl Bucket<'_> {
    /// (interval, tolerance) in µs: GCRA's emission interval and how far ahead of it a take
    /// may be (`burst - 1` intervals).
    fn gcra(&self) -> (i64, i64) {
        let t = self.interval.as_micros() as i64;
        (t, t * i64::from(self.burst.max(1) - 1))
    }
}

/// What [`Store::take_send_slots`] said, its times on this process's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendSlots {
    /// When the answer was read.
    pub answered: Instant,
    /// When the customer's turn comes.
    pub customer_at: Instant,
    /// When the number's turn comes once the customer's has; `None`: not taken (the
    /// customer's turn is later: take it then).
    pub number_at: Option<Instant>,
    /// Whether the customer still takes the reply, when asked.
    pub allowed: Option<bool>,
}

/// One sender's request, owned so that it can wait in the batch queue.
pub(super) struct Request {
    /// The customer's bucket: key (empty: none), interval and tolerance in µs.
    customer: (String, i64, i64),
    /// The number's bucket: key, interval and tolerance in µs.
    number: (String, i64, i64),
    /// (number, customer, the reply's queue time) whose opt-out to read; `None`: not asked.
    ask: Option<(String, String, i64)>,
    reply: Reply<SendSlots>,
}

impl Batched for Request {
    type Answer = SendSlots;

    /// A customer asked for twice waits for the next batch.
    fn joins(&self, keys: &mut HashSet<String>) -> bool {
        let (key, ..) = &self.customer;
        key.is_empty() || keys.insert(key.clone())
    }

    fn reply(self) -> Reply<SendSlots> {
        self.reply
    }

    async fn run(links: &PgLinks, batch: &[Self]) -> Result<Vec<SendSlots>, StoreError> {
        take(links, batch).await
    }
}

impl Store {
    /// Right before a send: takes a message from the customer's bucket (`customer`, when
    /// pacing is on), then, unless that one says to wait, from the number's (`number`). Both
    /// are GCRA (one message every `interval`, bursts of `burst`), on the database's clock,
    /// turned into instants of this process with [`DbClock`]. A turn is taken even if the
    /// caller then gives up (errs slow). With `ask`, also reads whether the customer (number,
    /// customer, the reply's queue time) still takes the reply. Turns asked for meanwhile by
    /// other senders of this replica are taken in the same statement.
    ///
    /// [`DbClock`]: super::dbclock::DbClock
    pub async fn take_send_slots(
        &self,
        customer: Option<Bucket<'_>>,
        number: Bucket<'_>,
        ask: Option<(&str, &str, i64)>,
    ) -> Result<SendSlots, StoreError> {
        let links = self
            .pg
            .as_ref()
            .ok_or_else(super::cluster::needs_postgres)?;
        let customer = customer.map_or((String::new(), 0, 0), |b| {
            let (t, tau) = b.gcra();
            (b.key.to_owned(), t, tau)
        });
        let (t, tau) = number.gcra();
        let ask = ask.map(|(p, c, at)| (p.to_owned(), c.to_owned(), at));
        let number = (number.key.to_owned(), t, tau);
        links
            .slots
            .ask(links, |reply| Request {
                customer,
                number,
                ask,
                reply,
            })
            .await
    }
}

/// The batch's statement. Per request `r` (in order, `ord`): the customer's take (`c`, keys
/// unique in a batch), and the number's turns for the requests whose customer says go (`k`
/// per number, `n`): its row moves on by `k` intervals at once, and those requests get its
/// `k` turns in order. Rows are locked in key order (customers, then numbers) so that two
/// replicas' batches wait for each other rather than deadlock.
static TAKE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH now AS (SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint AS us), \
         r AS (SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], \
           $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::bigint[]) \
           WITH ORDINALITY AS r(ckey, ct, ctau, nkey, nt, ntau, pnid, cust, queued, ord)), \
         c AS (INSERT INTO send_limits AS s (key, tat) \
           SELECT r.ckey, now.us + r.ct FROM r, now WHERE r.ckey <> '' ORDER BY r.ckey \
           ON CONFLICT (key) DO UPDATE \
           SET tat = GREATEST(s.tat, (SELECT us FROM now)) + (excluded.tat - (SELECT us FROM now)) \
           RETURNING s.key, s.tat), \
         g AS (SELECT r.*, \
           COALESCE(GREATEST(c.tat - r.ct - r.ctau - (SELECT us FROM now), 0), 0) AS cwait \
           FROM r LEFT JOIN c ON c.key = r.ckey), \
         k AS (SELECT nkey, max(nt) AS nt, max(ntau) AS ntau, count(*) AS k FROM g \
           WHERE cwait = 0 GROUP BY nkey), \
         n AS (INSERT INTO send_limits AS s (key, tat) \
           SELECT k.nkey, now.us + k.k * k.nt FROM k, now ORDER BY k.nkey \
           ON CONFLICT (key) DO UPDATE \
           SET tat = GREATEST(s.tat, (SELECT us FROM now)) + (excluded.tat - (SELECT us FROM now)) \
           RETURNING s.key, s.tat) \
         SELECT (SELECT us FROM now), g.cwait, \
           CASE WHEN g.cwait = 0 THEN GREATEST(n.tat - k.k * k.nt - k.ntau - (SELECT us FROM now) \
             + (row_number() OVER (PARTITION BY g.nkey ORDER BY g.cwait <> 0, g.ord) - 1) * k.nt, \
             0) END, \
           g.pnid = '' OR {} \
         FROM g LEFT JOIN k ON k.nkey = g.nkey LEFT JOIN n ON n.key = g.nkey \
         ORDER BY g.ord",
        super::conversation::takes_reply("g.pnid", "g.cust", "g.queued")
    )
});

/// Runs [`TAKE`] for `batch`; the answers in the batch's order.
async fn take(links: &PgLinks, batch: &[Request]) -> Result<Vec<SendSlots>, StoreError> {
    let col = |f: fn(&Request) -> i64| batch.iter().map(f).collect::<Vec<i64>>();
    let text = |f: fn(&Request) -> &str| batch.iter().map(f).collect::<Vec<&str>>();
    let rows: Vec<(i64, i64, Option<i64>, bool)> = links
        .hot
        .run(async |c| {
            Ok(sqlx::query_as(TAKE.as_str())
                .bind(text(|r| &r.customer.0))
                .bind(col(|r| r.customer.1))
                .bind(col(|r| r.customer.2))
                .bind(text(|r| &r.number.0))
                .bind(col(|r| r.number.1))
                .bind(col(|r| r.number.2))
                .bind(text(|r| r.ask.as_ref().map_or("", |a| &a.0)))
                .bind(text(|r| r.ask.as_ref().map_or("", |a| &a.1)))
                .bind(col(|r| r.ask.as_ref().map_or(0, |a| a.2)))
                .fetch_all(c)
                .await?)
        })
        .await?;
    let answered = Instant::now();
    // The database's clock was read once for the whole statement.
    let db_now = links
        .clock
        .local(answered, rows.first().map_or(0, |(now, ..)| *now));
    Ok(batch
        .iter()
        .zip(rows)
        .map(|(req, (_, customer_wait, number_wait, allowed))| {
            let at = |wait: i64| db_now + Duration::from_micros(wait.max(0) as u64);
            SendSlots {
                answered,
                customer_at: at(customer_wait),
                number_at: number_wait.map(at),
                allowed: req.ask.as_ref().map(|_| allowed),
            }
        })
        .collect())
}

impl Store {
    /// Holds bucket `key` (a number's, with `interval` and `burst` as in
    /// [`take_send_slots`](Store::take_send_slots)) for `pause` from now, for every replica:
    /// Meta said "too many messages".
    pub async fn pause_send_slots(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
        pause: Duration,
    ) -> Result<(), StoreError> {
        let tau = interval.as_micros() as i64 * i64::from(burst.max(1) - 1);
        sqlx::query(
            "INSERT INTO send_limits AS s (key, tat) \
             VALUES ($1, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint + $2) \
             ON CONFLICT (key) DO UPDATE SET tat = GREATEST(s.tat, excluded.tat)",
        )
        .bind(key)
        .bind(pause.as_micros() as i64 + tau)
        .execute(self.pg()?)
        .await?;
        Ok(())
    }

    /// Forgets send-limit buckets idle long enough to be full again (absent means full).
    pub async fn prune_send_limits(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM send_limits \
             WHERE tat < (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint - 3600000000",
        )
        .execute(self.pg()?)
        .await?;
        Ok(done.rows_affected())
    }
}
