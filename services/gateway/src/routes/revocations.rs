//! `POST /admin/api/v1/tenants/{tenant}/revocations`: revoke one access
//! token, every token of a user, or every token of the tenant (kill switch).
//! The revocation reaches every gateway instance through the event stream.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use gatehouse_app::revocation::Revocation;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::admin::{Access, admin_tenant, audit_admin};
use crate::extract::session::CurrentSession;
use crate::state::AppState;

/// What to revoke: exactly one member.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// One access token (JWT) of this tenant, revoked until it expires.
    #[serde(default)]
    access_token: Option<String>,
    /// Every token of this user issued until now.
    #[serde(default)]
    user: Option<String>,
    /// `true`: every token of the tenant issued until now (kill switch).
    #[serde(default)]
    all_tokens: Option<bool>,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
}

/// `POST /admin/api/v1/tenants/{tenant}/revocations`
pub async fn revoke(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    Json(body): Json<RevocationRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let given = usize::from(body.access_token.is_some())
        + usize::from(body.user.is_some())
        + usize::from(body.all_tokens == Some(true));
    if given != 1 {
        return Err(invalid(
            "give exactly one of access_token, user, all_tokens: true",
        ));
    }
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "revocations",
        Access::Write,
        "tokens.revoke",
    )
    .await?;
    let now = state.auth.clock.unix_seconds();
    let (revocation, target) = if let Some(token) = &body.access_token {
        // Only a token that verifies (and belongs here) is revoked; anything
        // else is a 422, so the caller learns their token was not understood.
        let claims = state
            .tokens
            .verify(token, now)
            .map_err(|e| invalid(format!("access_token: {e}")))?;
        if claims.tenant_id != tenant.id.to_string() {
            return Err(invalid("access_token: a token of another tenant"));
        }
        (
            Revocation::Token {
                jti: claims.jti.clone(),
                expires_at: claims.exp,
            },
            format!("jti:{}", claims.jti),
        )
    } else if let Some(raw) = &body.user {
        let subject = state.authz.subject_named(tenant.id, raw).await?;
        (
            Revocation::User {
                tenant_id: tenant.id,
                user_id: subject.id,
                before: now + 1,
            },
            format!("user:{}", subject.username),
        )
    } else {
        // Tokens issued within the current second are included: a kill switch
        // errs on the side of revoking.
        (
            Revocation::Tenant {
                tenant_id: tenant.id,
                before: now + 1,
            },
            "all".to_owned(),
        )
    };
    // One operation: publish, and for a user or the tenant end their
    // sessions and refresh families too.
    let event_id = state
        .revocations
        .revoke(&revocation)
        .await
        .map_err(|e| match e {
            gatehouse_app::revocation::EndError::Events(_) => {
                ApiError::unavailable("the revocation store is unavailable", 1)
            }
            gatehouse_app::revocation::EndError::Sessions(_) => {
                ApiError::unavailable("the session store is unavailable", 1)
            }
        })?;
    audit_admin(
        &state,
        &me,
        &tenant,
        "tokens.revoke",
        Some(target.clone()),
        &client,
        &headers,
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "revoked": target, "event_id": event_id })),
    ))
}
