//! Service clients: machines that call Gatehouse (token introspection).
//! Secrets are generated (256 random bits) and stored only as a hash:
//! `sha256:<hex>` (a fast hash is enough for a secret nobody chose, and it
//! keeps client authentication off the argon2 pool); clients created before
//! that carry an argon2id PHC string until their first successful check.

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::StoreError;

/// A service client as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ServiceClient {
    /// Row id.
    pub id: Uuid,
    /// Public client id (HTTP Basic user name).
    pub client_id: String,
    /// `None`: platform-wide; otherwise the only tenant it may ask about.
    pub tenant_id: Option<Uuid>,
    /// Tenant slug, when bound.
    pub tenant_slug: Option<String>,
    /// `sha256:<hex>` of the secret, or (older clients) an argon2id PHC.
    pub secret_hash: String,
    /// `active` or `disabled`.
    pub status: String,
    /// Granted scopes (`introspect`).
    pub scopes: Vec<String>,
}

/// A client as listed by the admin API (no secret hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ClientView {
    /// Public client id.
    pub client_id: String,
    /// Bound tenant slug.
    pub tenant: Option<String>,
    /// What it is for.
    pub description: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Finds a client by its public id.
pub async fn by_client_id(
    pool: &PgPool,
    client_id: &str,
) -> Result<Option<ServiceClient>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT c.id, c.client_id, c.tenant_id, t.slug AS tenant_slug, c.secret_hash, c.status, c.scopes
         FROM service_clients c LEFT JOIN tenants t ON t.id = c.tenant_id WHERE c.client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(pool)
    .await?)
}

/// Lists every client.
pub async fn list(pool: &PgPool) -> Result<Vec<ClientView>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT c.client_id, t.slug AS tenant, c.description, c.scopes, c.status, c.created_at
         FROM service_clients c LEFT JOIN tenants t ON t.id = c.tenant_id ORDER BY c.client_id",
    )
    .fetch_all(pool)
    .await?)
}

/// Creates a client, with its outbox event and `audit` in the same
/// transaction; `Conflict` (and nothing written) when the id is taken.
pub async fn create(
    pool: &PgPool,
    client_id: &str,
    tenant_id: Option<Uuid>,
    secret_hash: &str,
    description: &str,
    audit: &crate::audit::AuditEvent,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO service_clients (id, client_id, tenant_id, secret_hash, description) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(client_id)
    .bind(tenant_id)
    .bind(secret_hash)
    .bind(description)
    .execute(&mut *tx)
    .await?;
    crate::outbox::client_changed(&mut tx, client_id, "created").await?;
    crate::audit::record(&mut *tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes a client, with its outbox event and `audit` in the same
/// transaction; false (and nothing written) when there was none.
pub async fn delete(
    pool: &PgPool,
    client_id: &str,
    audit: &crate::audit::AuditEvent,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM service_clients WHERE client_id = $1")
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if deleted {
        crate::outbox::client_changed(&mut tx, client_id, "deleted").await?;
        crate::audit::record(&mut *tx, audit).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// Replaces a client's secret hash (upgrading an argon2id hash after a
/// successful check); only if it is still `expected`.
pub async fn upgrade_secret_hash(
    pool: &PgPool,
    client_id: &str,
    expected: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE service_clients SET secret_hash = $3 WHERE client_id = $1 AND secret_hash = $2",
    )
    .bind(client_id)
    .bind(expected)
    .bind(new_hash)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}
