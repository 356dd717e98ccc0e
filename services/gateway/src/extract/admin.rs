//! The guard every admin handler passes (`/admin/api/v1`), and the one place
//! admin handlers build their audit events.
//!
//! The admin API is authorised by the engine like everything else: the caller
//! asks for resource `admin:<tenant>:<area>` with action `read` or `write`,
//! decided by the rules of the caller's own tenant (`platform-admin` of the
//! `system` tenant holds `admin:*`, each tenant's `tenant-admin` holds
//! `admin:<tenant>:*`). On top of that, one rule no grant can override: only
//! users of the `system` tenant may reach another tenant at all. Other
//! tenants are answered 404, so a tenant admin cannot learn which exist.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gatehouse_app::audit::{Actor, AuditEvent, Outcome};
use gatehouse_app::directory::Tenant;
use gatehouse_core::TenantSlug;
use serde_json::{Map, json};

use gatehouse_app::authz::{self, Question};

use super::session::CurrentSession;
use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::state::AppState;

/// Whether a handler reads or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `read`.
    Read,
    /// `write`.
    Write,
}

/// The tenant that owns every platform-wide role.
pub const SYSTEM_TENANT: &str = "system";

/// Route layer of the admin API: a request that carries our session cookie
/// (and no `Authorization: Bearer`, which wins over it) must come from our
/// own origin, whatever its method. An app on another origin of the same
/// site (`orders.example.com` beside `auth.example.com`) gets the cookie
/// sent with its scripts' requests by the browser; this is what keeps such a
/// script from reading or changing anything through the admin API.
pub async fn same_origin_only(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let headers = request.headers();
    let cookie_only = super::session::bearer(headers).is_none()
        && crate::auth::cookies::read(headers, &state.auth.cookies.session_name).is_some();
    if cookie_only {
        let origins =
            crate::auth::csrf::own_origins(headers, &state.auth.issuer, state.auth.cookies.secure);
        if !crate::auth::csrf::same_origin(headers, &origins) {
            return axum::response::IntoResponse::into_response(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "cookie-authenticated admin requests must come from the console's own origin",
            ));
        }
    }
    next.run(request).await
}

/// Resolves `{tenant}` for an admin caller and checks the caller may `access`
/// its `area`, or answers 404/403; a refusal is audited (against the caller's
/// own tenant, so it reveals nothing about the other), at most ten rows per
/// actor a minute ([`crate::audit::DenialAudit`]).
pub async fn admin_tenant(
    state: &AppState,
    me: &CurrentSession,
    client: &ClientInfo,
    raw: &str,
    area: &str,
    access: Access,
    action: &'static str,
) -> Result<std::sync::Arc<Tenant>, ApiError> {
    let result = resolve_admin_tenant(state, me, client, raw, area, access).await;
    if let Err(refusal) = &result
        && let Some(suppressed) = state.denials.admit(me.0.session.user_id)
    {
        let event = caller_event(
            me,
            client,
            me.0.session.tenant_id,
            action,
            Some(raw.chars().take(64).collect()),
            Outcome::Denied,
            None,
            json!({
                "status": refusal.status().as_u16(),
                "area": area,
                "suppressed": suppressed,
            }),
        );
        crate::audit::record(&state.db, &event).await;
    }
    result
}

async fn resolve_admin_tenant(
    state: &AppState,
    me: &CurrentSession,
    client: &ClientInfo,
    raw: &str,
    area: &str,
    access: Access,
) -> Result<std::sync::Arc<Tenant>, ApiError> {
    let not_found = || ApiError::not_found("no such tenant");
    let session = &me.0.session;
    let slug = TenantSlug::parse(raw).map_err(|_| not_found())?;
    let own_tenant = session.tenant_slug == slug.as_str();
    if !own_tenant && session.tenant_slug != SYSTEM_TENANT {
        return Err(not_found());
    }
    let question = Question {
        resource: format!("admin:{slug}:{area}"),
        resource_attributes: Map::new(),
        action: match access {
            Access::Read => "read",
            Access::Write => "write",
        }
        .to_owned(),
        context: authz::client_context(&client.ip),
        now: state.auth.clock.now().unix_timestamp(),
    };
    let answer = state
        .authz
        .ask_as_caller(session.tenant_id, session.user_id, question)
        .await?;
    if !answer.decision.allowed {
        return Err(if own_tenant {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "your roles do not allow {} of {area} in this tenant",
                    if access == Access::Read {
                        "reading"
                    } else {
                        "changing"
                    }
                ),
            )
        } else {
            not_found()
        });
    }
    state
        .directory
        .tenant_by_slug(&slug)
        .await?
        .ok_or_else(not_found)
}

/// The audit event of a successful admin action by the signed-in caller
/// against `tenant`, for a store operation that records it in its own
/// transaction.
#[must_use]
pub fn admin_event(
    me: &CurrentSession,
    tenant: &Tenant,
    action: &'static str,
    target: Option<String>,
    client: &ClientInfo,
    headers: &HeaderMap,
) -> AuditEvent {
    caller_event(
        me,
        client,
        tenant.id,
        action,
        target,
        Outcome::Success,
        crate::audit::request_id(headers),
        json!({ "by": me.0.session.username, "by_tenant": me.0.session.tenant_slug }),
    )
}

/// An event by the signed-in caller, from where they called.
#[expect(
    clippy::too_many_arguments,
    reason = "one field each, named at the call"
)]
fn caller_event(
    me: &CurrentSession,
    client: &ClientInfo,
    tenant_id: uuid::Uuid,
    action: &'static str,
    target: Option<String>,
    outcome: Outcome,
    request_id: Option<String>,
    details: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        tenant_id: Some(tenant_id),
        actor: Actor::User(me.0.session.user_id),
        action,
        target,
        outcome,
        ip: Some(client.ip.clone()),
        user_agent: Some(client.user_agent.clone()),
        request_id,
        details,
    }
}

/// Records a successful admin action by the signed-in caller against
/// `tenant`: the one place admin handlers build their audit event.
pub async fn audit_admin(
    state: &AppState,
    me: &CurrentSession,
    tenant: &Tenant,
    action: &'static str,
    target: Option<String>,
    client: &ClientInfo,
    headers: &HeaderMap,
) {
    let event = admin_event(me, tenant, action, target, client, headers);
    crate::audit::record(&state.db, &event).await;
}
