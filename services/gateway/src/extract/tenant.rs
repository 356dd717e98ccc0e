//! The tenant a path names (`/t/{tenant}`, `/v1/auth/login`'s body).

use gatehouse_core::TenantSlug;
use gatehouse_store::directory::{self, Tenant};
use sqlx::PgPool;

use crate::error::ApiError;

/// Resolves `/t/{tenant}`: unknown, malformed and disabled tenants are all the
/// same 404, so the answer reveals nothing about which tenants exist.
pub async fn active_tenant(db: &PgPool, raw: &str) -> Result<Tenant, ApiError> {
    let not_found = || ApiError::not_found("no such tenant");
    let slug = TenantSlug::parse(raw).map_err(|_| not_found())?;
    match directory::tenant_by_slug(db, &slug).await? {
        Some(tenant) if tenant.is_active() => Ok(tenant),
        _ => Err(not_found()),
    }
}
