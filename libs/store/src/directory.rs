//! Tenants and users as the login path needs them.

use gatehouse_core::{TenantSlug, Username};
use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

/// A tenant as the gateway needs it to serve its pages and logins.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Tenant {
    /// Stable id (also inside session tokens).
    pub id: Uuid,
    /// URL name.
    pub slug: String,
    /// Human name.
    pub display_name: String,
    /// `active` or `disabled`.
    pub status: String,
    /// Origins login may redirect back to.
    pub allowed_return_origins: Vec<String>,
    /// Per-tenant knobs (`login_throttle`, ...), validated where they are used.
    pub settings: serde_json::Value,
}

impl Tenant {
    /// Whether the tenant accepts logins and requests.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// What login needs to know about a user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginUser {
    /// User id.
    pub id: Uuid,
    /// Display username.
    pub username_display: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// `active` or `disabled`.
    pub status: String,
    /// Bumped by every deliberate credential change and by disabling: what
    /// known-device proofs are bound to.
    pub credential_epoch: i64,
}

/// Finds a tenant by slug (active or not; the caller decides).
pub async fn tenant_by_slug(
    pool: &PgPool,
    slug: &TenantSlug,
) -> Result<Option<Tenant>, StoreError> {
    crate::read_retrying(|| {
        sqlx::query_as::<_, Tenant>(
            "SELECT id, slug, display_name, status, allowed_return_origins, settings FROM tenants WHERE slug = $1",
        )
        .bind(slug.as_str())
        .fetch_optional(pool)
    })
    .await
}

/// Every tenant's slug: the gateway's index of names that exist, so a request
/// naming an unknown tenant is answered without a query.
pub async fn tenant_slugs(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    crate::read_retrying(|| sqlx::query_scalar("SELECT slug FROM tenants").fetch_all(pool)).await
}

/// Finds a user of `tenant_id` by normalised username.
pub async fn user_for_login(
    pool: &PgPool,
    tenant_id: Uuid,
    username: &Username,
) -> Result<Option<LoginUser>, StoreError> {
    crate::read_retrying(|| {
        sqlx::query_as::<_, LoginUser>(
            "SELECT id, username_display, password_hash, status, credential_epoch FROM users
             WHERE tenant_id = $1 AND username_normalized = $2",
        )
        .bind(tenant_id)
        .bind(username.normalized())
        .fetch_optional(pool)
    })
    .await
}

/// The credential epoch of a user by normalised username (`None`: no such
/// user), for checking a known-device proof before the throttle decides.
pub async fn credential_epoch(
    pool: &PgPool,
    tenant_id: Uuid,
    username_normalized: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT credential_epoch FROM users WHERE tenant_id = $1 AND username_normalized = $2",
    )
    .bind(tenant_id)
    .bind(username_normalized)
    .fetch_optional(pool)
    .await?)
}

/// Replaces a user's password hash only if it is still `expected` (so a
/// rehash on login never overwrites a concurrent password change).
pub async fn replace_password_hash(
    pool: &PgPool,
    tenant_id: Uuid,
    user_id: Uuid,
    expected: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE users SET password_hash = $4, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND password_hash = $3",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(expected)
    .bind(new_hash)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets a user's password (a deliberate change: records `password_changed_at`).
/// Returns the user id, or `None` when there is no such user.
pub async fn set_password(
    pool: &PgPool,
    tenant_id: Uuid,
    username: &Username,
    new_hash: &str,
) -> Result<Option<Uuid>, StoreError> {
    let mut tx = pool.begin().await?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE users SET password_hash = $3, password_changed_at = now(), updated_at = now()
         WHERE tenant_id = $1 AND username_normalized = $2 RETURNING id",
    )
    .bind(tenant_id)
    .bind(username.normalized())
    .bind(new_hash)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Enables or disables a user. The `users_cache_changed` trigger bumps the
/// tenant's data version and writes the `user.changed` event in the same
/// transaction. Returns the user id, or `None` when absent.
pub async fn set_user_status(
    pool: &PgPool,
    tenant_id: Uuid,
    username: &Username,
    active: bool,
) -> Result<Option<Uuid>, StoreError> {
    let mut tx = pool.begin().await?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE users SET status = $3, updated_at = now()
         WHERE tenant_id = $1 AND username_normalized = $2 RETURNING id",
    )
    .bind(tenant_id)
    .bind(username.normalized())
    .bind(if active { "active" } else { "disabled" })
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// A user by id (for password changes by the signed-in user).
pub async fn user_by_id(
    pool: &PgPool,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<LoginUser>, StoreError> {
    Ok(sqlx::query_as::<_, LoginUser>(
        "SELECT id, username_display, password_hash, status, credential_epoch FROM users WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?)
}

/// A deliberate password change by the user: succeeds only if the stored hash
/// is still the one the current password was checked against.
pub async fn change_password(
    pool: &PgPool,
    tenant_id: Uuid,
    user_id: Uuid,
    expected: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE users SET password_hash = $4, password_changed_at = now(), updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND password_hash = $3",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(expected)
    .bind(new_hash)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A credential's tenant and the standing of its user, read in one query for
/// admission: is the tenant active, does the user still exist and is it active.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    /// The tenant (active or not; admission decides), shared: a cache hit
    /// hands it on without copying its settings.
    pub tenant: std::sync::Arc<Tenant>,
    /// The user's display name and status (`active`/`disabled`), or `None`
    /// when the user no longer exists in this tenant.
    pub user: Option<(String, String)>,
}

/// The tenant `tenant_id` and the standing of `user_id` in it (one round trip).
pub async fn principal(
    pool: &PgPool,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Principal>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        tenant: Tenant,
        username_display: Option<String>,
        user_status: Option<String>,
    }
    let row = crate::read_retrying(|| {
        sqlx::query_as::<_, Row>(
            "SELECT t.id, t.slug, t.display_name, t.status, t.allowed_return_origins, t.settings, \
                    u.username_display, u.status AS user_status \
             FROM tenants t LEFT JOIN users u ON u.tenant_id = t.id AND u.id = $2 \
             WHERE t.id = $1",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(pool)
    })
    .await?;
    Ok(row.map(|row| Principal {
        tenant: std::sync::Arc::new(row.tenant),
        user: row.username_display.zip(row.user_status),
    }))
}
