//! The JSON sign-in API (`/v1/auth/...`) for API clients and single-page apps.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gatehouse_app::admission::SessionId;
use serde::Deserialize;
use serde_json::json;

use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::session::CurrentSession;
use crate::extract::tenant::active_tenant;
use crate::state::AppState;
use gatehouse_app::login::PasswordChangeError;
use gatehouse_app::login::{Credentials, LoggedIn, LoginError};
use gatehouse_app::refresh::RefreshError;
use gatehouse_app::revocation::Ending;

/// Body of `POST /v1/auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Tenant slug.
    pub tenant: String,
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
    /// A known-device proof from an earlier sign-in (optional; lets this
    /// client through a username lockout caused by others).
    #[serde(default)]
    pub device_token: Option<String>,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "invalid username or password",
    )
}

/// Body of `POST /v1/auth/refresh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from login or the previous refresh.
    pub refresh_token: String,
}

fn refresh_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
        "the refresh token is invalid, expired, already used or its session has ended; sign in again",
    )
}

/// `POST /v1/auth/refresh`: spends the refresh token and returns a new
/// access token and refresh token. A token presented twice revokes its
/// family and ends the session (audited); every refusal is the same 401.
pub async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let refreshed = state
        .refresher
        .refresh(
            &body.refresh_token,
            &client.origin(),
            crate::audit::request_id(&headers),
        )
        .await;
    let refreshed = match refreshed {
        Ok(refreshed) => refreshed,
        Err(RefreshError::Refused(_)) => return Err(refresh_refused()),
        Err(RefreshError::Throttled(retry_after)) => {
            let seconds = retry_after.as_secs().max(1);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("too many refreshes of this session; retry after {seconds} s (the refresh token stays valid)"),
            )
            .with_retry_after(seconds));
        }
        Err(RefreshError::Sessions(e)) => return Err(e.into()),
        Err(RefreshError::Admission(e)) => return Err(e.into()),
        Err(RefreshError::Token(e)) => return Err(e.into()),
    };
    Ok(Json(json!({
        "access_token": refreshed.access_token,
        "token_type": "Bearer",
        "expires_in": refreshed.expires_in,
        "refresh_token": refreshed.refresh_token.expose(),
        "session_id": refreshed.session.id,
    })))
}

/// `POST /v1/auth/login`: 200 with the session, 401 for any bad credentials
/// (same body whether or not the user exists), 503 when the session store or
/// the password pool cannot take it.
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Json(body): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let tenant = active_tenant(&state.directory, &body.tenant).await?;
    let result = state
        .auth
        .login
        .login(Credentials {
            tenant: &tenant,
            username: &body.username,
            password: body.password,
            client: &client.origin(),
            request_id: crate::audit::request_id(&headers),
            device_proof: body.device_token.as_deref(),
        })
        .await;
    match result {
        Ok(LoggedIn {
            token,
            session,
            device_proof,
        }) => {
            let now = state.auth.clock.unix_seconds();
            let (access_token, claims) = state
                .tokens
                .issue_for_session(&state.authz, &session, state.auth.clock.unix_seconds())
                .await?;
            let refresh_token = state.auth.refresh.issue(&session).await?;
            Ok(Json(json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": claims.exp - now,
                "refresh_token": refresh_token.expose(),
                "session_id": session.id,
                "session_token": token.expose(),
                "session_expires_in": session.idle_expires_at - now,
                "session_absolute_expires_in": session.absolute_expires_at - now,
                "device_token": device_proof,
            }))
            .into_response())
        }
        Err(LoginError::InvalidCredentials) => Err(invalid_credentials()),
        Err(LoginError::Throttled { retry_after, .. }) => {
            let seconds = gatehouse_app::login::retry_after_secs(retry_after);
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("too many sign-in attempts; retry after {seconds} s"),
            )
            .with_retry_after(seconds))
        }
        Err(LoginError::Busy) => Err(ApiError::unavailable("sign-in is busy; retry shortly", 1)),
        Err(LoginError::Unavailable(what)) => Err(ApiError::unavailable(
            format!("the {what} is unavailable"),
            1,
        )),
        Err(LoginError::Internal(reason)) => Err(ApiError::internal(&reason)),
    }
}

/// `POST /v1/auth/logout`: ends the caller's session.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    let s = &me.0.session;
    state
        .admission
        .end(Ending::One {
            tenant_id: s.tenant_id,
            user_id: s.user_id,
            id: &s.id,
        })
        .await?;
    crate::audit::session_event(
        &state.db,
        &me.0.session,
        "logout",
        s.id.to_string(),
        &headers,
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/logout-all`: ends every session of the caller's user.
pub async fn logout_all(
    State(state): State<AppState>,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = &me.0.session;
    let ended = state
        .admission
        .end(Ending::AllOfUser {
            tenant_id: s.tenant_id,
            user_id: s.user_id,
            keep: None,
        })
        .await?;
    crate::audit::session_event(
        &state.db,
        &me.0.session,
        "logout_all",
        s.username.clone(),
        &headers,
        json!({ "ended": ended }),
    )
    .await;
    Ok(Json(json!({ "ended_sessions": ended })))
}

/// `GET /v1/auth/me`
pub async fn me(
    State(state): State<AppState>,
    me: CurrentSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let s = &me.0.session;
    let roles = state
        .authz
        .role_names(s.tenant_id, s.user_id, state.auth.clock.unix_seconds())
        .await?;
    Ok(Json(json!({
        "sub": s.user_id,
        "tenant": s.tenant_slug,
        "username": s.username,
        "roles": roles.effective,
        "direct_roles": roles.direct,
        "session_id": s.id,
    })))
}

/// `GET /v1/auth/sessions`: the caller's live sessions, newest first.
pub async fn sessions_list(
    State(state): State<AppState>,
    me: CurrentSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let current = &me.0.session;
    let sessions = state
        .auth
        .sessions
        .list_for_user(current.tenant_id, current.user_id)
        .await?;
    let items: Vec<serde_json::Value> = sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "current": s.id == current.id,
                "created_at": s.created_at,
                "last_seen_at": s.last_seen_at,
                "ip": s.ip,
                "user_agent": s.user_agent,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": items })))
}

/// `DELETE /v1/auth/sessions/{id}`: ends one of the caller's sessions; 404 for
/// anything else (including another user's session id).
pub async fn sessions_delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    let Some(id) = SessionId::parse(&id) else {
        return Err(ApiError::not_found("no such session"));
    };
    let s = &me.0.session;
    let ended = state
        .admission
        .end(Ending::One {
            tenant_id: s.tenant_id,
            user_id: s.user_id,
            id: &id,
        })
        .await?;
    if ended == 0 {
        return Err(ApiError::not_found("no such session"));
    }
    crate::audit::session_event(
        &state.db,
        &me.0.session,
        "session.revoke",
        id.to_string(),
        &headers,
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/auth/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password now in force.
    pub current_password: String,
    /// The new one.
    pub new_password: String,
}

/// The password pool's refusal as an answer: busy is a 503 to retry.
fn pool_error(e: gatehouse_app::passwords::PasswordPoolError) -> ApiError {
    match e {
        gatehouse_app::passwords::PasswordPoolError::Busy => {
            ApiError::unavailable("password hashing is busy; retry shortly", 1)
        }
        gatehouse_app::passwords::PasswordPoolError::Failed(reason) => ApiError::internal(&reason),
    }
}

/// `POST /v1/auth/password`: changes the caller's password after checking the
/// current one, and ends every other session of the account. The check of
/// the current password is a sign-in attempt for the throttle (pair,
/// username, IP and tenant limits), so a stolen session cannot be used to
/// guess the password faster than the login form allows.
pub async fn password_change(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    Json(body): Json<PasswordChange>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let change = gatehouse_app::login::PasswordChange {
        session: &me.0.session,
        tenant: &me.0.tenant,
        client: &client.origin(),
        request_id: crate::audit::request_id(&headers),
        current_password: body.current_password,
        new_password: body.new_password,
    };
    let ended = state
        .auth
        .login
        .change_password(&state.admission, change)
        .await
        .map_err(|e| match e {
            PasswordChangeError::Invalid(detail) => ApiError::bad_request(detail),
            PasswordChangeError::Gone => ApiError::from_kind(
                gatehouse_core::ErrorKind::Unauthenticated,
                "the account no longer exists",
            ),
            PasswordChangeError::Throttled(retry_after) => {
                let seconds = gatehouse_app::login::retry_after_secs(retry_after);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    format!("too many password attempts; retry after {seconds} s"),
                )
                .with_retry_after(seconds)
            }
            PasswordChangeError::WrongPassword => ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong-password",
                "current_password is incorrect",
            ),
            PasswordChangeError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the password changed meanwhile; retry",
            ),
            PasswordChangeError::Hashing(e) => pool_error(e),
            PasswordChangeError::Store(e) => e.into(),
            PasswordChangeError::Sessions(e) => e.into(),
        })?;
    Ok(Json(json!({ "ended_sessions": ended })))
}
