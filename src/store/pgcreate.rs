//! A PostgreSQL database that `storage.url` names but that does not exist yet: created when the
//! user may (superuser or `CREATEDB`), else refused once with the statement to run. Several
//! replicas starting together may race to create it; the loser finds it there.

use super::StoreError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

/// PostgreSQL's `invalid_catalog_name`: the database does not exist.
const NO_SUCH_DATABASE: &str = "3D000";
/// `duplicate_database`: another replica created it first; or, when both ran CREATE DATABASE at
/// the same moment, `unique_violation` on the catalog's name index.
const ALREADY_THERE: [&str; 2] = ["42P04", "23505"];

/// Connects the pool, creating the database first if it does not exist.
pub(super) async fn connect_creating(
    pool: PgPoolOptions,
    opts: &PgConnectOptions,
) -> Result<PgPool, StoreError> {
    match pool.clone().connect_with(opts.clone()).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(NO_SUCH_DATABASE) => {
            create(opts).await?;
            Ok(pool.connect_with(opts.clone()).await?)
        }
        other => Ok(other?),
    }
}

async fn create(opts: &PgConnectOptions) -> Result<(), StoreError> {
    let user = opts.get_username().to_owned();
    let name = opts.get_database().unwrap_or(&user).to_owned();
    let refused = |why: String| StoreError::NoDatabase {
        name: name.clone(),
        user: user.clone(),
        why,
    };
    // The maintenance database every cluster has, to run CREATE DATABASE from.
    let maintenance = opts
        .clone()
        .database("postgres")
        .disable_statement_logging();
    let mut conn = PgConnection::connect_with(&maintenance)
        .await
        .map_err(|e| refused(format!("cannot connect to the database postgres: {e}")))?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    let created = sqlx::query(&sql).execute(&mut conn).await;
    let _ = conn.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = %name, "created the PostgreSQL database storage.url names");
            Ok(())
        }
        Err(sqlx::Error::Database(e))
            if e.code()
                .is_some_and(|c| ALREADY_THERE.contains(&c.as_ref())) =>
        {
            Ok(())
        }
        Err(e) => Err(refused(e.to_string())),
    }
}
