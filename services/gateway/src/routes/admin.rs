//! Admin API (`/admin/api/v1`). For now: login lockouts.
//!
//! Authorisation here is interim until the authorisation engine lands: the
//! caller's directly assigned, unexpired roles are read from Postgres and a
//! `platform-admin` of the `system` tenant may act on every tenant, a
//! `tenant-admin` only on their own. Other tenants are answered 404, so a
//! tenant admin cannot even learn which tenants exist.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use gatehouse_core::TenantSlug;
use gatehouse_store::audit::{Actor, AuditEvent, Outcome};
use gatehouse_store::directory::{self, Tenant};
use serde_json::json;

use crate::auth::client::ClientInfo;
use crate::auth::extract::CurrentSession;
use crate::error::ApiError;
use crate::state::AppState;

/// Resolves `{tenant}` for an admin caller, or 404/403; a refusal is audited
/// (against the caller's own tenant, so it reveals nothing about the other).
async fn admin_tenant(
    state: &AppState,
    me: &CurrentSession,
    raw: &str,
    action: &'static str,
) -> Result<Tenant, ApiError> {
    let result = resolve_admin_tenant(state, me, raw).await;
    if let Err(refusal) = &result {
        let session = &me.0.session;
        let event = AuditEvent {
            tenant_id: Some(session.tenant_id),
            actor: Actor::User(session.user_id),
            action,
            target: Some(raw.chars().take(64).collect()),
            outcome: Outcome::Denied,
            ip: None,
            user_agent: None,
            request_id: None,
            details: json!({ "status": refusal.status().as_u16() }),
        };
        crate::audit::record(&state.db, &event).await;
    }
    result
}

async fn resolve_admin_tenant(
    state: &AppState,
    me: &CurrentSession,
    raw: &str,
) -> Result<Tenant, ApiError> {
    let not_found = || ApiError::not_found("no such tenant");
    let session = &me.0.session;
    let roles = directory::active_role_names(
        &state.db,
        session.tenant_id,
        session.user_id,
        state.auth.clock.now(),
    )
    .await?;
    let platform_admin =
        session.tenant_slug == "system" && roles.iter().any(|r| r == "platform-admin");
    let tenant_admin = roles.iter().any(|r| r == "tenant-admin");
    if !platform_admin && !tenant_admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an admin role is required",
        ));
    }
    let slug = TenantSlug::parse(raw).map_err(|_| not_found())?;
    let tenant = directory::tenant_by_slug(&state.db, &slug)
        .await?
        .ok_or_else(not_found)?;
    if platform_admin || tenant.id == session.tenant_id {
        Ok(tenant)
    } else {
        Err(not_found())
    }
}

async fn audit_admin(
    state: &AppState,
    me: &CurrentSession,
    tenant: &Tenant,
    action: &'static str,
    target: Option<String>,
    client: &ClientInfo,
    headers: &HeaderMap,
) {
    let event = AuditEvent {
        tenant_id: Some(tenant.id),
        actor: Actor::User(me.0.session.user_id),
        action,
        target,
        outcome: Outcome::Success,
        ip: Some(client.ip.clone()),
        user_agent: Some(client.user_agent.clone()),
        request_id: crate::audit::request_id(headers),
        details: json!({ "by": me.0.session.username, "by_tenant": me.0.session.tenant_slug }),
    };
    crate::audit::record(&state.db, &event).await;
}

/// `GET /admin/api/v1/tenants/{tenant}/lockouts`
pub async fn lockouts_list(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = admin_tenant(&state, &me, &tenant, "lockouts.list").await?;
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
    let tenant = admin_tenant(&state, &me, &tenant, "lockouts.clear").await?;
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
