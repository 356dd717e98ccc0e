//! Who is calling: the credential behind a cookie or an `Authorization:
//! Bearer` header, admitted by [`crate::admission`] (the one place that
//! decides whether a credential is live).

use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use gatehouse_session::Session;

use super::{cookies, csrf};
pub use crate::admission::Via;
use crate::admission::{Expect, Need, Presented, Verdict};
use crate::error::ApiError;
use crate::state::AppState;

/// A validated session and how it was proved.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The live session.
    pub session: Session,
    /// The caller's tenant (active), as admission read it.
    pub tenant: gatehouse_store::directory::Tenant,
    /// How it was presented.
    pub via: Via,
    /// The access token's claims, when a JWT proved it.
    pub access: Option<gatehouse_tokens::AccessClaims>,
}

/// The raw `Authorization: Bearer` value, if any.
#[must_use]
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Admits the request's credential (see [`crate::admission`]). `Ok(Err(_))`
/// when there is none or it is refused; `Err` only when a store cannot answer.
pub async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    expect: Expect<'_>,
    need: Need,
) -> Result<Verdict, ApiError> {
    // `Authorization: Bearer` wins over the session cookie.
    let cookie;
    let presented = if let Some(raw) = bearer(headers) {
        Presented::Bearer(raw)
    } else {
        cookie = cookies::read(headers, &state.auth.cookies.session_name);
        let Some(raw) = cookie.as_deref() else {
            return Ok(Err(crate::admission::Refusal::Missing));
        };
        Presented::Cookie(raw)
    };
    let started = Instant::now();
    let verdict = state.admission.admit(presented, expect, need).await?;
    metrics::histogram!("gatehouse_session_validation_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    Ok(verdict)
}

/// The caller's live session, for the JSON API and the pages: an access
/// token must have a live session too. `Ok(None)` when there is no
/// admissible credential.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, ApiError> {
    let verdict = admit(state, headers, Expect::AnyTenant, Need::Session).await?;
    Ok(verdict.ok().and_then(|admitted| {
        Some(Authenticated {
            session: admitted.session?,
            tenant: admitted.tenant,
            via: admitted.via,
            access: admitted.access,
        })
    }))
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
