//! The transactional outbox: changes commit together with the event that
//! describes them; the relay (`gatehouse_app::outbox`) publishes them.

use serde_json::{Value, json};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::StoreError;

/// One unpublished event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// Position in the outbox (publication order within one batch).
    pub id: i64,
    /// The tenant it concerns, if any.
    pub tenant_id: Option<Uuid>,
    /// Event kind (`tenant.authz_changed`, `user.changed`, `client.changed`, ...).
    pub kind: String,
    /// Payload layout version.
    pub schema_version: i16,
    /// The payload.
    pub payload: Value,
    /// When the change was written (seconds since the Unix epoch, by
    /// Postgres's clock): the event's `at`.
    pub created_unix: i64,
}

/// Locks up to `limit` unpublished rows, oldest first, skipping rows another
/// relay holds: every instance may relay at once without publishing a row
/// twice (except after a crash between publish and commit, which consumers
/// tolerate: applying an event twice changes nothing).
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    Ok(sqlx::query_as::<_, OutboxRow>(
        "SELECT id, tenant_id, kind, schema_version, payload,
                extract(epoch FROM created_at)::bigint AS created_unix
           FROM outbox_events
         WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// Marks rows published (in the claiming transaction).
pub async fn mark_published(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox_events SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// In the caller's transaction: a service client was created or deleted.
pub async fn client_changed(
    tx: &mut PgConnection,
    client_id: &str,
    change: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox_events (tenant_id, kind, payload) VALUES (NULL, 'client.changed', $1)",
    )
    .bind(json!({ "client_id": client_id, "change": change }))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
