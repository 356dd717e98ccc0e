//! The tenant a path names (`/t/{tenant}`, `/v1/auth/login`'s body).

use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use std::sync::Arc;

use gatehouse_app::directory::Directory;
use gatehouse_app::directory::Tenant;
use gatehouse_core::TenantSlug;

use crate::error::ApiError;

/// Extractor: the active tenant the route's `{tenant}` segment names, or the
/// same 404 for unknown, malformed and disabled tenants. Needs only the
/// cached directory, as an axum sub-state.
#[derive(Debug, Clone)]
pub struct ActiveTenant(pub std::sync::Arc<Tenant>);

impl<S> FromRequestParts<S> for ActiveTenant
where
    S: Send + Sync,
    Arc<Directory>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || ApiError::not_found("no such tenant");
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found())?;
        let raw = params
            .iter()
            .find(|(name, _)| *name == "tenant")
            .map(|(_, value)| value.to_owned())
            .ok_or_else(not_found)?;
        let directory = Arc::<Directory>::from_ref(state);
        Ok(Self(active_tenant(&directory, &raw).await?))
    }
}

/// Resolves `/t/{tenant}`: unknown, malformed and disabled tenants are all the
/// same 404, so the answer reveals nothing about which tenants exist.
pub async fn active_tenant(
    directory: &Directory,
    raw: &str,
) -> Result<std::sync::Arc<Tenant>, ApiError> {
    let not_found = || ApiError::not_found("no such tenant");
    let slug = TenantSlug::parse(raw).map_err(|_| not_found())?;
    match directory.tenant_by_slug(&slug).await? {
        Some(tenant) if tenant.is_active() => Ok(tenant),
        _ => Err(not_found()),
    }
}
