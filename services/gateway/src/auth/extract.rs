//! Who is calling: the session behind a cookie or an `Authorization: Bearer`
//! session token.

use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use gatehouse_session::{Session, SessionId, SessionToken};

use super::{cookies, csrf};
use crate::error::ApiError;
use crate::state::{AppState, AuthState};

/// How the caller presented its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Browser cookie (CSRF-able: unsafe methods need a same-origin check).
    Cookie,
    /// `Authorization: Bearer` (not sent automatically by browsers).
    Bearer,
}

/// A validated session and how it was proved.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The live session.
    pub session: Session,
    /// How it was presented.
    pub via: Via,
    /// The access token's claims, when a JWT proved it.
    pub access: Option<gatehouse_tokens::AccessClaims>,
}

/// The Bearer value when it is an access token (JWT) rather than a session token.
#[must_use]
pub fn bearer_jwt(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).filter(|raw| !raw.starts_with("gs1_"))
}

/// Verifies an access token: signature and claims locally, revocation
/// against the in-process mirror. No Redis or Postgres call.
#[must_use]
pub fn verify_access_token(state: &AppState, raw: &str) -> Option<gatehouse_tokens::AccessClaims> {
    match state.tokens.verify(raw, state.auth.clock.unix_seconds()) {
        Ok(claims) if state.revocations.is_revoked(&claims) => {
            metrics::counter!("gatehouse_access_token_verify_total", "result" => "revoked")
                .increment(1);
            None
        }
        Ok(claims) => Some(claims),
        Err(e) => {
            metrics::counter!("gatehouse_access_token_verify_total", "result" => e.label())
                .increment(1);
            None
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Finds and validates the caller's credentials: a session token (cookie or
/// Bearer) or a Bearer access token (JWT). `Ok(None)` when there are none or
/// they are not valid; `Err` only when the session store cannot answer.
///
/// An access token is verified locally (signature, `iss`, `aud`, time,
/// revocation mirror). The JSON API also needs its live session (one Redis
/// round trip) because its handlers work on the session; forward auth
/// (`/v1/verify`) uses [`verify_access_token`] alone.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, ApiError> {
    let auth = &state.auth;
    let started = Instant::now();
    let (found, via, access) = match bearer(headers) {
        Some(raw) if raw.starts_with("gs1_") => {
            (validate_token(auth, Some(raw)).await?, Via::Bearer, None)
        }
        Some(raw) => match verify_access_token(state, raw) {
            Some(claims) => {
                let session = match (
                    SessionId::parse(&claims.sid),
                    uuid::Uuid::try_parse(&claims.tenant_id),
                ) {
                    (Some(id), Ok(tenant_id)) => auth.sessions.validate_id(tenant_id, id).await?,
                    _ => None,
                };
                let session = session.filter(|s| s.user_id.to_string() == claims.sub);
                metrics::counter!("gatehouse_access_token_verify_total", "result" => if session.is_some() { "ok" } else { "session_ended" }).increment(1);
                (session, Via::Bearer, Some(claims))
            }
            None => (None, Via::Bearer, None),
        },
        None => (
            validate_token(
                auth,
                cookies::read(headers, &auth.cookies.session_name).as_deref(),
            )
            .await?,
            Via::Cookie,
            None,
        ),
    };
    metrics::histogram!("gatehouse_session_validation_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let found = unless_killed(state, found).await;
    Ok(found.map(|session| Authenticated {
        session,
        via,
        access,
    }))
}

/// A tenant's kill switch ends its sessions too, not only its access tokens:
/// a validated session begun before its tenant's mark is refused here, and
/// ended for good, since the mark in the mirror lives only a token life and
/// the kill switch's sweep can miss a session created while it ran. Every
/// place that accepts a session passes it through this.
pub async fn unless_killed(state: &AppState, session: Option<Session>) -> Option<Session> {
    let session = session?;
    if !state
        .revocations
        .session_killed(session.tenant_id, session.created_at)
    {
        return Some(session);
    }
    if let Err(e) = state
        .auth
        .sessions
        .end(session.tenant_id, session.user_id, &session.id)
        .await
    {
        tracing::warn!(error = %e, "ending a session after the kill switch failed");
    }
    None
}

async fn validate_token(auth: &AuthState, raw: Option<&str>) -> Result<Option<Session>, ApiError> {
    let Some(token) = raw.and_then(SessionToken::parse) else {
        return Ok(None);
    };
    Ok(auth.sessions.validate(&token).await?)
}

/// Extractor for the JSON API: a signed-in caller, or 401. A cookie-presented
/// session on an unsafe method must also pass the same-origin check (403),
/// so another site cannot make a browser sign itself out.
#[derive(Debug, Clone)]
pub struct CurrentSession(pub Authenticated);

impl FromRequestParts<AppState> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(authenticated) = authenticate(state, &parts.headers).await? else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid session is required (session cookie or Authorization: Bearer)",
            ));
        };
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if authenticated.via == Via::Cookie && unsafe_method {
            let origins = csrf::own_origins(
                &parts.headers,
                &state.auth.issuer,
                state.auth.cookies.secure,
            );
            if !csrf::same_origin(&parts.headers, &origins) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross-origin",
                    "cookie-authenticated requests must come from this site's own origin",
                ));
            }
        }
        Ok(Self(authenticated))
    }
}
