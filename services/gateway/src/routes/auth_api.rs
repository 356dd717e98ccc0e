//! The JSON sign-in API (`/v1/auth/...`) for API clients and single-page apps.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gatehouse_app::admission::SessionId;
use gatehouse_store::directory;
use serde::Deserialize;
use serde_json::json;

use crate::auth::client::ClientInfo;
use crate::auth::login::{Credentials, LoggedIn, LoginError};
use crate::error::ApiError;
use crate::extract::session::CurrentSession;
use crate::extract::tenant::active_tenant;
use crate::state::AppState;
use gatehouse_app::admission::{Admitted, Expect};
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
    let Some(presented) = gatehouse_session::RefreshToken::parse(&body.refresh_token) else {
        metrics::counter!("gatehouse_tokens_refreshed_total", "result" => "malformed").increment(1);
        return Err(refresh_refused());
    };
    // The MAC before anything else: a forged token must not reach Redis,
    // where admitting its session would slide the victim's idle deadline.
    if !state.auth.refresh.is_authentic(&presented) {
        metrics::counter!("gatehouse_tokens_refreshed_total", "result" => "forged").increment(1);
        return Err(refresh_refused());
    }
    // Then admission: a session that is revoked, of a disabled user or
    // tenant, or under a kill switch mints nothing (and is ended, so the
    // rotation below would refuse it too).
    let admitted = state
        .admission
        .admit_session_id(
            presented.tenant_id(),
            presented.session_id().clone(),
            Expect::AnyTenant,
        )
        .await?;
    let Ok(Admitted {
        session: Some(session),
        ..
    }) = admitted
    else {
        metrics::counter!("gatehouse_tokens_refreshed_total", "result" => "not_admitted")
            .increment(1);
        return Err(refresh_refused());
    };
    let rotation = state.auth.refresh.rotate(&presented).await?;
    let next = match rotation {
        gatehouse_session::Rotation::Rotated { token, .. } => token,
        gatehouse_session::Rotation::Reused { user_id } => {
            metrics::counter!("gatehouse_tokens_refreshed_total", "result" => "reuse").increment(1);
            state
                .admission
                .end(Ending::Compromised {
                    tenant_id: presented.tenant_id(),
                    user_id,
                    id: presented.session_id(),
                })
                .await?;
            let event = gatehouse_store::audit::AuditEvent {
                tenant_id: Some(presented.tenant_id()),
                actor: user_id.map_or(
                    gatehouse_store::audit::Actor::Anonymous,
                    gatehouse_store::audit::Actor::User,
                ),
                action: "refresh.reuse",
                target: Some(presented.session_id().to_string()),
                outcome: gatehouse_store::audit::Outcome::Denied,
                ip: Some(client.ip.clone()),
                user_agent: Some(client.user_agent.clone()),
                request_id: crate::audit::request_id(&headers),
                details: json!({ "effect": "family revoked, session ended" }),
            };
            crate::audit::record(&state.db, &event).await;
            tracing::warn!(session = %presented.session_id(), "refresh token reuse: family revoked, session ended");
            return Err(refresh_refused());
        }
        gatehouse_session::Rotation::Throttled { retry_after } => {
            metrics::counter!("gatehouse_tokens_refreshed_total", "result" => "throttled")
                .increment(1);
            let seconds = retry_after.as_secs().max(1);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("too many refreshes of this session; retry after {seconds} s (the refresh token stays valid)"),
            )
            .with_retry_after(seconds));
        }
        gatehouse_session::Rotation::Refused { why } => {
            metrics::counter!("gatehouse_tokens_refreshed_total", "result" => why).increment(1);
            return Err(refresh_refused());
        }
    };
    let (access_token, claims) = state
        .tokens
        .issue_for_session(&state.authz, &session, state.auth.clock.unix_seconds())
        .await?;
    metrics::counter!("gatehouse_tokens_refreshed_total", "result" => "ok").increment(1);
    let now = state.auth.clock.unix_seconds();
    Ok(Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": claims.exp - now,
        "refresh_token": next.expose(),
        "session_id": session.id,
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
            client: &client,
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
            let seconds = crate::auth::login::retry_after_secs(retry_after);
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

/// Shortest new password accepted.
pub const MIN_NEW_PASSWORD_CHARS: usize = 10;

/// The password pool's refusal as an answer: busy is a 503 to retry.
fn pool_error(e: gatehouse_app::passwords::PasswordPoolError) -> ApiError {
    match e {
        gatehouse_app::passwords::PasswordPoolError::Busy => {
            ApiError::unavailable("password hashing is busy; retry shortly", 1)
        }
        gatehouse_app::passwords::PasswordPoolError::Failed(reason) => ApiError::internal(&reason),
    }
}

/// Checks the caller's current password as a throttled sign-in attempt:
/// 429 while throttled, 403 when wrong (counted as a failure), `Ok` when right.
async fn check_current_password(
    state: &AppState,
    me: &CurrentSession,
    client: &ClientInfo,
    current_password: String,
    user: &directory::LoginUser,
) -> Result<(), ApiError> {
    let s = &me.0.session;
    let pool = state.auth.login.passwords();
    let throttle = &state.auth.throttle;
    let attempt = gatehouse_ratelimit::Attempt {
        tenant_id: s.tenant_id,
        username: gatehouse_core::Username::parse(&s.username)
            .map_or_else(|_| s.username.to_lowercase(), |u| u.normalized().to_owned()),
        ip: client.addr,
        known_device: false,
    };
    let limits =
        gatehouse_ratelimit::LoginLimits::from_settings(me.0.tenant.settings.get("login_throttle"))
            .unwrap_or_default();
    let reservation = match throttle.reserve(&attempt, &limits).await {
        Ok(reservation) => reservation,
        Err((_, retry_after)) => {
            let seconds = crate::auth::login::retry_after_secs(retry_after);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("too many password attempts; retry after {seconds} s"),
            )
            .with_retry_after(seconds));
        }
    };
    let verification = match pool
        .verify(current_password, Some(user.password_hash.clone()))
        .await
    {
        Ok(verification) => verification,
        Err(e) => {
            reservation.withdraw().await;
            return Err(pool_error(e));
        }
    };
    if verification == gatehouse_core::Verification::Mismatch {
        reservation.failed();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong-password",
            "current_password is incorrect",
        ));
    }
    reservation.succeeded().await;
    Ok(())
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
    let chars = body.new_password.chars().count();
    if chars < MIN_NEW_PASSWORD_CHARS {
        return Err(ApiError::bad_request(format!(
            "new_password must be at least {MIN_NEW_PASSWORD_CHARS} characters"
        )));
    }
    if body.new_password.len() > crate::auth::login::MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(format!(
            "new_password must be at most {} bytes",
            crate::auth::login::MAX_PASSWORD_BYTES
        )));
    }
    let s = &me.0.session;
    let user = directory::user_by_id(&state.db, s.tenant_id, s.user_id)
        .await?
        .ok_or_else(|| {
            ApiError::from_kind(
                gatehouse_core::ErrorKind::Unauthenticated,
                "the account no longer exists",
            )
        })?;
    let pool = state.auth.login.passwords();
    check_current_password(&state, &me, &client, body.current_password, &user).await?;
    let new_hash = pool.hash(body.new_password).await.map_err(pool_error)?;
    if !directory::change_password(
        &state.db,
        s.tenant_id,
        s.user_id,
        &user.password_hash,
        &new_hash,
    )
    .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the password changed meanwhile; retry",
        ));
    }
    let ended = state
        .admission
        .end(Ending::AllOfUser {
            tenant_id: s.tenant_id,
            user_id: s.user_id,
            keep: Some(&s.id),
        })
        .await?;
    crate::audit::session_event(
        &state.db,
        &me.0.session,
        "password.change",
        s.username.clone(),
        &headers,
        json!({ "ended_other_sessions": ended }),
    )
    .await;
    Ok(Json(json!({ "ended_sessions": ended })))
}
