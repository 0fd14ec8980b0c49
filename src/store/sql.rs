//! One write transaction's statements, written once for both databases: SQL text with numbered
//! parameters (`$1`, `$2`, …) and the values bound to them, run by PostgreSQL through sqlx or by
//! the SQLite writer's own connection (see `sqlite_writer`). Knows no table.

use super::StoreError;
use std::fmt::Write as _;

/// A value bound to a statement parameter (every column the writer binds is one of these).
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

/// A statement: its text and its arguments, `$n` naming the n-th.
#[derive(Debug, Default)]
pub struct Sql<'a> {
    text: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Sql<'a> {
    /// Starts a statement with `text`.
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// A statement whose text already numbers its parameters `$1..$n`, with their values.
    pub fn with(text: &str, args: impl IntoIterator<Item = Arg<'a>>) -> Self {
        Self {
            text: text.to_owned(),
            args: args.into_iter().collect(),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a parameter placeholder bound to `arg`.
    pub fn bind(&mut self, arg: impl Into<Arg<'a>>) -> &mut Self {
        self.args.push(arg.into());
        let _ = write!(self.text, "${}", self.args.len());
        self
    }

    /// Appends `a, b, c`: one parameter per item.
    pub fn list<T: Into<Arg<'a>>>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(item);
        }
        self
    }

    /// Appends `VALUES (…), (…)`, one tuple per item, filled in by `row`.
    pub fn values<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Tuple<'_, 'a>, T),
    ) -> &mut Self {
        self.text.push_str("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            self.text.push_str(if i > 0 { ", (" } else { "(" });
            row(
                &mut Tuple {
                    sql: self,
                    first: true,
                },
                item,
            );
            self.text.push(')');
        }
        self
    }

    /// The statement's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The arguments, in parameter order.
    pub fn args(&self) -> &[Arg<'a>] {
        &self.args
    }
}

/// One tuple of a `VALUES` list being written.
pub struct Tuple<'s, 'a> {
    sql: &'s mut Sql<'a>,
    first: bool,
}

impl<'a> Tuple<'_, 'a> {
    /// The tuple's next value.
    pub fn bind(&mut self, arg: impl Into<Arg<'a>>) -> &mut Self {
        if !std::mem::take(&mut self.first) {
            self.sql.text.push_str(", ");
        }
        self.sql.bind(arg);
        self
    }
}

/// A row a statement returns, decoded the same way from either database.
pub trait Fetched: Sized {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
    fn from_pg(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error>;
}

macro_rules! fetched_tuple {
    ($($t:ident $i:tt),+) => {
        impl<$($t),+> Fetched for ($($t,)+)
        where
            $($t: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>),+
        {
            fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(($(row.get::<_, $t>($i)?,)+))
            }
            fn from_pg(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok(($(row.try_get::<$t, _>($i)?,)+))
            }
        }
    };
}
fetched_tuple!(A 0);
fetched_tuple!(A 0, B 1);
fetched_tuple!(A 0, B 1, C 2);

/// The statements of one open write transaction.
pub trait WriteTx {
    /// Runs a statement that returns no rows; how many rows it changed.
    async fn execute(&mut self, sql: &Sql<'_>) -> Result<u64, StoreError>;
    /// Runs a statement and returns its rows.
    async fn fetch<R: Fetched>(&mut self, sql: &Sql<'_>) -> Result<Vec<R>, StoreError>;

    /// Runs a statement to its end, stepping over whatever rows it yields without decoding
    /// them (SQLite's `PRAGMA incremental_vacuum` frees one page per step); how many it yielded.
    async fn drain(&mut self, sql: &Sql<'_>) -> Result<u64, StoreError> {
        self.execute(sql).await
    }

    /// The PostgreSQL connection of the transaction, for the statements only PostgreSQL runs
    /// (the lease phase, which binds arrays); `None` on SQLite.
    fn pg(&mut self) -> Option<&mut sqlx::postgres::PgConnection> {
        None
    }

    /// SQLite: the wamids of the inbox rows its wamid index does not have yet; `None` on
    /// PostgreSQL, whose unique index has them all (see `store::wamid_index`).
    fn recent_wamids(&self) -> Option<&super::wamid_index::Recent> {
        None
    }

    /// SQLite: notes the inbox rows (id, wamid) the transaction inserted, which the writer
    /// remembers once it commits.
    fn inserted_messages(&mut self, _rows: &[(i64, String)]) {}

    /// Runs a statement whose text numbers its parameters `$1..$n` (see [`Sql::with`]) and
    /// returns no rows; how many rows it changed.
    async fn run<'a>(
        &mut self,
        text: &str,
        args: impl IntoIterator<Item = Arg<'a>>,
    ) -> Result<u64, StoreError> {
        self.execute(&Sql::with(text, args)).await
    }
}

/// Opens the text of every statement the group-commit writer runs on PostgreSQL, so that
/// `pg_stat_statements` (and `pg_stat_activity`) tell them from the reads each message pays
/// alone (`wa-gateway bench --pg-stats` counts both).
pub const GROUP_COMMIT_MARK: &str = "/* wa-gateway group commit */";

fn pg_query<'q>(
    text: &'q str,
    args: &'q [Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    args.iter().fold(sqlx::query(text), |q, arg| match *arg {
        Arg::Int(v) => q.bind(v),
        // PostgreSQL refuses NUL in text: stored without it, as on SQLite (`crate::text`).
        Arg::Text(v) => q.bind(v.map(crate::text::without_nul)),
    })
}

/// `sql`'s text as the writer sends it to PostgreSQL: marked with [`GROUP_COMMIT_MARK`].
fn pg_text(sql: &Sql<'_>) -> String {
    let mut text = String::with_capacity(GROUP_COMMIT_MARK.len() + 1 + sql.text.len());
    text.push_str(GROUP_COMMIT_MARK);
    text.push(' ');
    text.push_str(&sql.text);
    text
}

impl WriteTx for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn execute(&mut self, sql: &Sql<'_>) -> Result<u64, StoreError> {
        let text = pg_text(sql);
        let done = pg_query(&text, &sql.args).execute(&mut **self).await?;
        Ok(done.rows_affected())
    }

    async fn fetch<R: Fetched>(&mut self, sql: &Sql<'_>) -> Result<Vec<R>, StoreError> {
        let text = pg_text(sql);
        let rows = pg_query(&text, &sql.args).fetch_all(&mut **self).await?;
        rows.iter().map(|r| Ok(R::from_pg(r)?)).collect()
    }

    fn pg(&mut self) -> Option<&mut sqlx::postgres::PgConnection> {
        Some(&mut **self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_the_arguments_in_order() {
        let mut sql = Sql::new("INSERT INTO t (a, b) ");
        sql.values([(1_i64, "x"), (2, "y")], |t, (a, b)| {
            t.bind(a).bind(b);
        });
        sql.push(" WHERE id IN (").list([7_i64, 8]).push(")");
        assert_eq!(
            sql.text(),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) WHERE id IN ($5, $6)"
        );
        assert_eq!(sql.args().len(), 6);
        assert!(matches!(sql.args()[3], Arg::Text(Some("y"))));
        assert!(matches!(sql.args()[5], Arg::Int(Some(8))));
    }
}
