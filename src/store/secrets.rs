//! Rows of the onboarding tables: encrypted stored secrets (ciphertext, nonce, key id; the
//! plaintext and the key never reach storage) and the last verification code request per number.
//! These writes are rare (signup, key rotation, a code request) and may come from a CLI process
//! with no writer running, so they go straight to the write pool instead of the writer's queue.

use super::{StorageConfig, Store, StoreError, now_ms, on_pool};
use sqlx::ConnectOptions;
use std::collections::BTreeSet;
use std::str::FromStr;

/// One stored secret as kept in storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSecretRow {
    pub name: String,
    /// Id of the key the value is encrypted under (see `vault::EncryptionKey::id`).
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

type Row = (String, String, Vec<u8>, Vec<u8>, i64);

fn row((name, key_id, nonce, ciphertext, updated_at): Row) -> StoredSecretRow {
    StoredSecretRow {
        name,
        key_id,
        nonce,
        ciphertext,
        updated_at,
    }
}

impl Store {
    /// Every stored secret, by name.
    pub async fn stored_secrets(&self) -> Result<Vec<StoredSecretRow>, StoreError> {
        on_pool!(self, |pool| {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT name, key_id, nonce, ciphertext, updated_at FROM stored_secrets ORDER BY name",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(row).collect())
        })
    }

    /// Stores (or replaces) a secret's encrypted value.
    pub async fn put_stored_secret(
        &self,
        name: &str,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        on_pool!(write self, |pool| {
            sqlx::query(
                "INSERT INTO stored_secrets (name, key_id, nonce, ciphertext, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO UPDATE SET \
                 key_id = excluded.key_id, nonce = excluded.nonce, \
                 ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(key_id)
            .bind(nonce)
            .bind(ciphertext)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Replaces a value encrypted under `old_key_id` with its re-encryption; false when the row
    /// changed meanwhile (another replica rotated it, or it was stored again).
    pub async fn reencrypt_stored_secret(
        &self,
        name: &str,
        old_key_id: &str,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        on_pool!(write self, |pool| {
            let done = sqlx::query(
                "UPDATE stored_secrets SET key_id = $1, nonce = $2, ciphertext = $3, updated_at = $4 \
                 WHERE name = $5 AND key_id = $6",
            )
            .bind(key_id)
            .bind(nonce)
            .bind(ciphertext)
            .bind(now)
            .bind(name)
            .bind(old_key_id)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Claims the right to request a verification code for a number now: recorded and `Ok(None)`
    /// when no request was made in the last `cooldown_ms`, else `Ok(Some(last_requested_at))`
    /// and nothing changes. One statement, so two racing requests cannot both pass.
    pub async fn claim_code_request(
        &self,
        phone_number_id: &str,
        code_method: &str,
        language: &str,
        now: i64,
        cooldown_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let cutoff = now - cooldown_ms;
        on_pool!(write self, |pool| {
            let done = sqlx::query(
                "INSERT INTO verification_requests (phone_number_id, code_method, language, requested_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (phone_number_id) DO UPDATE SET \
                 code_method = excluded.code_method, language = excluded.language, \
                 requested_at = excluded.requested_at \
                 WHERE verification_requests.requested_at <= $5",
            )
            .bind(phone_number_id)
            .bind(code_method)
            .bind(language)
            .bind(now)
            .bind(cutoff)
            .execute(pool)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(None);
            }
            let last: Option<i64> = sqlx::query_scalar(
                "SELECT requested_at FROM verification_requests WHERE phone_number_id = $1",
            )
            .bind(phone_number_id)
            .fetch_optional(pool)
            .await?;
            // The row vanished between the two statements (a released claim): the caller may retry.
            Ok(Some(last.unwrap_or(now)))
        })
    }

    /// Gives back a claim whose request Meta did not accept, so the next attempt is not delayed.
    pub async fn release_code_request(
        &self,
        phone_number_id: &str,
        requested_at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(write self, |pool| {
            sqlx::query(
                "DELETE FROM verification_requests WHERE phone_number_id = $1 AND requested_at = $2",
            )
            .bind(phone_number_id)
            .bind(requested_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}

/// The names in `stored_secrets`, read without creating, locking or migrating anything
/// (`wa-gateway validate`): empty when the SQLite file or the table does not exist yet, as a
/// gateway starting on it would find. An error means storage could not be reached.
pub async fn peek_stored_secret_names(cfg: &StorageConfig) -> Result<BTreeSet<String>, StoreError> {
    const QUERY: &str = "SELECT name FROM stored_secrets";
    let url = cfg.url.as_str();
    let names: Result<Vec<String>, sqlx::Error> = if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let file = path.split('?').next().unwrap_or(path);
        if !std::path::Path::new(file).exists() {
            return Ok(BTreeSet::new());
        }
        let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .read_only(true)
            .busy_timeout(cfg.busy_timeout.get())
            .connect()
            .await?;
        sqlx::query_scalar(QUERY).fetch_all(&mut conn).await
    } else {
        let mut conn = tokio::time::timeout(
            cfg.busy_timeout
                .get()
                .max(std::time::Duration::from_secs(1)),
            sqlx::postgres::PgConnectOptions::from_str(url)?.connect(),
        )
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
        sqlx::query_scalar(QUERY).fetch_all(&mut conn).await
    };
    match names {
        Ok(names) => Ok(names.into_iter().collect()),
        // A database no gateway has started on yet holds no secrets.
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("42P01") || e.message().contains("no such table") =>
        {
            Ok(BTreeSet::new())
        }
        Err(e) => Err(e.into()),
    }
}
