//! The cache of media uploads: which media id Meta gave the bytes with a given SHA-256 when a
//! number uploaded them, read by the sender before an upload and written through the writer
//! after one. Shared by replicas; retention prunes rows older than `policies.media.cache_for`.

use super::sql::WriteTx;
use super::{Store, StoreError, on_pool};

/// A media file a number uploaded to Meta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaUpload {
    pub phone_number_id: String,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// The id Meta gave the upload.
    pub media_id: String,
    /// The type it was uploaded as.
    pub mime_type: String,
    /// When it was uploaded, ms since the epoch.
    pub uploaded_at: i64,
}

impl Store {
    /// The upload of the bytes hashing to `sha256` that number `phone_number_id` made at or
    /// after `since_ms`, if any.
    pub async fn media_upload(
        &self,
        phone_number_id: &str,
        sha256: &str,
        since_ms: i64,
    ) -> Result<Option<MediaUpload>, StoreError> {
        let sql = "SELECT media_id, mime_type, uploaded_at FROM media_uploads \
                   WHERE phone_number_id = $1 AND sha256 = $2 AND uploaded_at >= $3";
        on_pool!(self, |pool| {
            let row: Option<(String, String, i64)> = sqlx::query_as(sql)
                .bind(phone_number_id)
                .bind(sha256)
                .bind(since_ms)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|(media_id, mime_type, uploaded_at)| MediaUpload {
                phone_number_id: phone_number_id.to_owned(),
                sha256: sha256.to_owned(),
                media_id,
                mime_type,
                uploaded_at,
            }))
        })
    }
}

/// Records `upload`, replacing an older upload of the same bytes by the same number (the
/// newest id lives longest at Meta).
pub(super) async fn record(tx: &mut impl WriteTx, upload: &MediaUpload) -> Result<(), StoreError> {
    tx.run(
        "INSERT INTO media_uploads (phone_number_id, sha256, media_id, mime_type, uploaded_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (phone_number_id, sha256) DO UPDATE SET \
         media_id = excluded.media_id, mime_type = excluded.mime_type, \
         uploaded_at = excluded.uploaded_at",
        [
            upload.phone_number_id.as_str().into(),
            upload.sha256.as_str().into(),
            upload.media_id.as_str().into(),
            upload.mime_type.as_str().into(),
            upload.uploaded_at.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Deletes up to `limit` uploads made before `before_ms`, oldest first.
pub(super) async fn expire(
    tx: &mut impl WriteTx,
    before_ms: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    tx.run(
        "DELETE FROM media_uploads WHERE (phone_number_id, sha256) IN \
         (SELECT phone_number_id, sha256 FROM media_uploads WHERE uploaded_at < $1 \
         ORDER BY uploaded_at LIMIT $2)",
        [before_ms.into(), limit.into()],
    )
    .await
}
