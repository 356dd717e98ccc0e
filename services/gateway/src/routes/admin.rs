//! Admin API: login lockouts (list, clear). Roles, grants, assignments and
//! policies are in `admin_authz`; the guard is `extract::admin`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::admin::{Access, admin_tenant, audit_admin};
use crate::extract::session::CurrentSession;
use crate::state::AppState;

/// `GET /admin/api/v1/tenants/{tenant}/lockouts`
pub async fn lockouts_list(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "lockouts",
        Access::Read,
        "lockouts.list",
    )
    .await?;
    let lockouts = state
        .auth
        .throttle
        .lockouts(tenant.id)
        .await
        .map_err(|_| ApiError::unavailable("the throttle store is unavailable", 1))?;
    audit_admin(
        &state,
        &me,
        &tenant,
        "lockouts.list",
        None,
        &client,
        &headers,
    )
    .await;
    Ok(Json(json!({ "lockouts": lockouts })))
}

/// `DELETE /admin/api/v1/tenants/{tenant}/lockouts/{id}`
pub async fn lockouts_delete(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "lockouts",
        Access::Write,
        "lockouts.clear",
    )
    .await?;
    let cleared = state
        .auth
        .throttle
        .clear(tenant.id, &id)
        .await
        .map_err(|_| ApiError::unavailable("the throttle store is unavailable", 1))?;
    if !cleared {
        return Err(ApiError::not_found("no such lockout"));
    }
    audit_admin(
        &state,
        &me,
        &tenant,
        "lockouts.clear",
        Some(id),
        &client,
        &headers,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
