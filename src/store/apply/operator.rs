//! The operator's writes in a batch: a number disconnected (or connected again) from the admin
//! API, announced to the other replicas when the batch commits.

use crate::store::sql::WriteTx;
use crate::store::{StoreError, cluster};

/// Records the override of `phone_number_id`; on PostgreSQL (`shared`) the other replicas hear
/// of it when this commits (NOTIFY is transactional).
pub(super) async fn number_override(
    tx: &mut impl WriteTx,
    phone_number_id: &str,
    disconnected: bool,
    reason: Option<&str>,
    shared: bool,
    now: i64,
) -> Result<(), StoreError> {
    tx.run(
        "INSERT INTO number_overrides (phone_number_id, disconnected, changed_at, reason) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (phone_number_id) DO UPDATE SET \
         disconnected = excluded.disconnected, changed_at = excluded.changed_at, \
         reason = excluded.reason",
        [
            phone_number_id.into(),
            i64::from(disconnected).into(),
            now.into(),
            reason.into(),
        ],
    )
    .await?;
    if shared {
        tx.run(
            "SELECT pg_notify($1, $2)",
            [cluster::OVERRIDES_CHANNEL.into(), phone_number_id.into()],
        )
        .await?;
    }
    Ok(())
}
