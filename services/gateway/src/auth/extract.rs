//! Who is calling: the session behind a cookie or an `Authorization: Bearer`
//! session token.

use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use gatehouse_session::{Session, SessionToken};

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

/// A validated session and the token that proved it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The caller's token.
    pub token: SessionToken,
    /// The live session.
    pub session: Session,
    /// How it was presented.
    pub via: Via,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Finds and validates the caller's session. `Ok(None)` when there is none or
/// it is not valid; `Err` only when the session store cannot answer.
pub async fn authenticate(
    auth: &AuthState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, ApiError> {
    let (raw, via) = if let Some(token) = bearer(headers) {
        (Some(token.to_owned()), Via::Bearer)
    } else {
        (
            cookies::read(headers, &auth.cookies.session_name),
            Via::Cookie,
        )
    };
    let Some(token) = raw.as_deref().and_then(SessionToken::parse) else {
        return Ok(None);
    };
    let started = Instant::now();
    let result = auth.sessions.validate(&token).await;
    metrics::histogram!("gatehouse_session_validation_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(Some(session)) => Ok(Some(Authenticated {
            token,
            session,
            via,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(e.into()),
    }
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
        let Some(authenticated) = authenticate(&state.auth, &parts.headers).await? else {
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
