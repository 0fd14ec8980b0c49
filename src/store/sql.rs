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
    /// The lists of [`Sql::is_in`] in `text`, in order. PostgreSQL is sent each as one array
    /// ([`pg_form`]), so that the statement's text is the same whatever the list's length:
    /// parsed once per connection, and one cached statement instead of one per length.
    lists: Vec<List>,
}

/// Where a list sits in a statement: its text (` IN ($1, $2)`) and its arguments.
#[derive(Debug)]
struct List {
    text: std::ops::Range<usize>,
    args: std::ops::Range<usize>,
}

impl<'a> Sql<'a> {
    /// Starts a statement with `text`.
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
            lists: Vec::new(),
        }
    }

    /// A statement whose text already numbers its parameters `$1..$n`, with their values.
    pub fn with(text: &str, args: impl IntoIterator<Item = Arg<'a>>) -> Self {
        Self {
            text: text.to_owned(),
            args: args.into_iter().collect(),
            lists: Vec::new(),
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

    /// Appends ` IN (a, b, c)`, one parameter per item (PostgreSQL: ` = ANY(array)`).
    pub fn is_in<T: Into<Arg<'a>>>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self {
        let (text, args) = (self.text.len(), self.args.len());
        self.text.push_str(" IN (");
        self.list(items);
        self.text.push(')');
        self.lists.push(List {
            text: text..self.text.len(),
            args: args..self.args.len(),
        });
        self
    }

    /// Appends `VALUES (…), (…)`, one tuple per item, filled in by `row`. PostgreSQL is sent it
    /// as written: a text per number of tuples, each of which PostgreSQL soon runs with its
    /// generic plan (it knows the rows' number from the text). As arrays (`SELECT * FROM
    /// UNNEST(…)`, one text), PostgreSQL planned the statement anew at every call, since a
    /// custom plan, which knows the arrays' lengths, looks cheaper than the generic one, which
    /// guesses 100 rows (session 25: planning took twice the time, and PostgreSQL 19–39% more
    /// CPU a message with three replicas).
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

/// A value bound on PostgreSQL: one parameter, or a list's items as one array.
#[derive(Debug)]
enum PgArg<'a> {
    One(Arg<'a>),
    Ints(Vec<Option<i64>>),
    Texts(Vec<Option<&'a str>>),
}

fn pg_query<'q>(
    text: &'q str,
    args: Vec<PgArg<'q>>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    // PostgreSQL refuses NUL in text: stored without it, as on SQLite (`crate::text`).
    use crate::text::without_nul;
    args.into_iter()
        .fold(sqlx::query(text), |q, arg| match arg {
            PgArg::One(Arg::Int(v)) => q.bind(v),
            PgArg::One(Arg::Text(v)) => q.bind(v.map(without_nul)),
            PgArg::Ints(v) => q.bind(v),
            PgArg::Texts(v) => q.bind(
                v.into_iter()
                    .map(|t| t.map(without_nul))
                    .collect::<Vec<_>>(),
            ),
        })
}

/// `list`'s items as one array, or `None` when they cannot be (no item, or items of two
/// types): the list is then sent as it is written.
fn array<'a>(list: &List, args: &[Arg<'a>]) -> Option<PgArg<'a>> {
    let items = &args[list.args.clone()];
    match items.first()? {
        Arg::Int(_) => items
            .iter()
            .map(|a| if let Arg::Int(v) = *a { Some(v) } else { None })
            .collect::<Option<Vec<_>>>()
            .map(PgArg::Ints),
        Arg::Text(_) => items
            .iter()
            .map(|a| if let Arg::Text(v) = *a { Some(v) } else { None })
            .collect::<Option<Vec<_>>>()
            .map(PgArg::Texts),
    }
}

/// `sql` as the writer sends it to PostgreSQL: marked with [`GROUP_COMMIT_MARK`], each list as
/// one array (` = ANY($n)`), the other parameters renumbered to match.
fn pg_form<'a>(sql: &Sql<'a>) -> (String, Vec<PgArg<'a>>) {
    let (lists, arrays): (Vec<&List>, Vec<PgArg<'a>>) = sql
        .lists
        .iter()
        .filter_map(|list| Some((list, array(list, &sql.args)?)))
        .unzip();
    // The n-th argument (1-based) moves back by the items of the lists before it, less one each.
    let renumber = |n: usize| {
        lists
            .iter()
            .filter(|list| list.args.end < n)
            .fold(n, |n, list| n + 1 - list.args.len())
    };
    let mut text = String::with_capacity(GROUP_COMMIT_MARK.len() + 1 + sql.text.len());
    text.push_str(GROUP_COMMIT_MARK);
    text.push(' ');
    if lists.is_empty() {
        // Most statements: nothing to renumber.
        text.push_str(&sql.text);
        return (text, sql.args.iter().map(|a| PgArg::One(*a)).collect());
    }
    let mut args = Vec::with_capacity(sql.args.len());
    let (mut at_text, mut at_arg) = (0, 0);
    for (list, array) in lists.iter().zip(arrays) {
        renumbered(&sql.text[at_text..list.text.start], &renumber, &mut text);
        args.extend(
            sql.args[at_arg..list.args.start]
                .iter()
                .map(|a| PgArg::One(*a)),
        );
        let kind = if matches!(array, PgArg::Ints(_)) {
            "int8"
        } else {
            "text"
        };
        let _ = write!(text, " = ANY(${}::{kind}[])", args.len() + 1);
        args.push(array);
        (at_text, at_arg) = (list.text.end, list.args.end);
    }
    renumbered(&sql.text[at_text..], &renumber, &mut text);
    args.extend(sql.args[at_arg..].iter().map(|a| PgArg::One(*a)));
    (text, args)
}

/// Copies `text` to `out` with each placeholder `$n` numbered `renumber(n)`.
fn renumbered(text: &str, renumber: &impl Fn(usize) -> usize, out: &mut String) {
    each_placeholder(text, out, |out, digits| match digits.parse::<usize>() {
        Ok(n) => {
            let _ = write!(out, "${}", renumber(n));
        }
        Err(_) => {
            out.push('$');
            out.push_str(digits);
        }
    });
}

/// Copies `text` to `out`, each placeholder (`$` and its digits) written by `placeholder`,
/// which is given the digits; a `$` not followed by a digit is copied as it is. What a
/// placeholder is, for both databases' spellings (`sqlite_writer` writes `?n`).
pub(super) fn each_placeholder(
    text: &str,
    out: &mut String,
    mut placeholder: impl FnMut(&mut String, &str),
) {
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            out.push('$');
        } else {
            placeholder(out, &rest[..digits]);
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
}

impl WriteTx for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn execute(&mut self, sql: &Sql<'_>) -> Result<u64, StoreError> {
        let (text, args) = pg_form(sql);
        let done = pg_query(&text, args).execute(&mut **self).await?;
        Ok(done.rows_affected())
    }

    async fn fetch<R: Fetched>(&mut self, sql: &Sql<'_>) -> Result<Vec<R>, StoreError> {
        let (text, args) = pg_form(sql);
        let rows = pg_query(&text, args).fetch_all(&mut **self).await?;
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

    /// Whatever a list's length, PostgreSQL is sent one text: the list as an array, and the
    /// parameters after it renumbered. A `VALUES` list is sent as written.
    #[test]
    fn postgres_is_sent_a_list_as_one_array_whatever_its_length() {
        let statement = |ids: &[i64], wamids: &[&'static str]| {
            let mut sql = Sql::new("UPDATE t SET a = ");
            sql.bind(9_i64).push(" FROM (");
            sql.values([(1_i64, Some("x"))], |t, (a, b)| {
                t.bind(a).bind(b);
            });
            sql.push(") AS v WHERE id").is_in(ids.iter().copied());
            sql.push(" OR wamid").is_in(wamids.iter().copied());
            sql.push(" AND b <> ").bind("z");
            pg_form(&sql)
        };
        let (short, short_args) = statement(&[7], &["w"]);
        let (long, long_args) = statement(&[7, 8, 9], &["w", "v"]);
        assert_eq!(short, long);
        assert_eq!(
            long,
            "/* wa-gateway group commit */ UPDATE t SET a = $1 FROM (VALUES ($2, $3)) AS v \
             WHERE id = ANY($4::int8[]) OR wamid = ANY($5::text[]) AND b <> $6"
        );
        assert_eq!(short_args.len(), 6);
        assert_eq!(
            format!("{long_args:?}"),
            r#"[One(Int(Some(9))), One(Int(Some(1))), One(Text(Some("x"))), Ints([Some(7), Some(8), Some(9)]), Texts([Some("w"), Some("v")]), One(Text(Some("z")))]"#
        );
    }

    /// A list that cannot be an array (items of two types) is sent as written, and the
    /// parameters around it keep their numbers.
    #[test]
    fn a_list_of_mixed_types_is_sent_as_written() {
        let mut sql = Sql::new("SELECT 1 WHERE $1 = 1 AND x");
        sql.args.push(Arg::Int(Some(1)));
        sql.is_in([Arg::Int(Some(2)), Arg::Text(Some("three"))]);
        sql.push(" AND y = ").bind(4_i64);
        let (text, args) = pg_form(&sql);
        assert_eq!(
            text,
            "/* wa-gateway group commit */ SELECT 1 WHERE $1 = 1 AND x IN ($2, $3) AND y = $4"
        );
        assert_eq!(args.len(), 4);
    }
}
