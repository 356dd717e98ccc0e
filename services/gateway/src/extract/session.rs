//! Who is calling: the credential behind a cookie or an `Authorization:
//! Bearer` header, admitted by [`gatehouse_app::admission`] (the one place that
//! decides whether a credential is live).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use gatehouse_app::admission::Session;
pub use gatehouse_app::admission::Via;
use gatehouse_app::admission::{Expect, Need, Presented, Verdict};

use crate::auth::cookies;
use crate::auth::csrf;
use crate::error::ApiError;

/// A validated session and how it was proved.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The live session.
    pub session: Session,
    /// The caller's tenant (active), as admission read it.
    pub tenant: std::sync::Arc<gatehouse_app::directory::Tenant>,
    /// How it was presented.
    pub via: Via,
    /// The access token's claims, when a JWT proved it.
    pub access: Option<Arc<gatehouse_tokens::AccessClaims>>,
}

/// The raw `Authorization: Bearer` value, if any.
#[must_use]
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(header::AUTHORIZATION)?)
}

/// The token of an `Authorization: Bearer` value, if it is one.
#[must_use]
pub fn bearer_token(value: &axum::http::HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub use crate::auth::gate::SessionGate;

/// Admits the request's credential (see [`gatehouse_app::admission`]). `Ok(Err(_))`
/// when there is none or it is refused; `Err` only when a store cannot answer.
pub async fn admit(
    gate: &SessionGate,
    headers: &HeaderMap,
    expect: Expect<'_>,
    need: Need,
) -> Result<Verdict, ApiError> {
    // `Authorization: Bearer` wins over the session cookie.
    let cookie;
    let presented = if let Some(raw) = bearer(headers) {
        Presented::Bearer(raw)
    } else {
        cookie = cookies::read(headers, &gate.cookies.session_name);
        let Some(raw) = cookie.as_deref() else {
            return Ok(Err(gatehouse_app::admission::Refusal::Missing));
        };
        Presented::Cookie(raw)
    };
    gate.admit_presented(presented, expect, need).await
}

/// The caller's live session, for the JSON API and the pages: an access
/// token must have a live session too. `Ok(None)` when there is no
/// admissible credential.
pub async fn authenticate(
    gate: &SessionGate,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, ApiError> {
    let verdict = admit(gate, headers, Expect::AnyTenant, Need::Session).await?;
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

impl<S> FromRequestParts<S> for CurrentSession
where
    S: Send + Sync,
    Arc<SessionGate>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let gate = Arc::<SessionGate>::from_ref(state);
        let Some(authenticated) = authenticate(&gate, &parts.headers).await? else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid session is required (session cookie or Authorization: Bearer)",
            ));
        };
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if authenticated.via == Via::Cookie && unsafe_method {
            let origins = csrf::own_origins(&parts.headers, &gate.issuer, gate.cookies.secure);
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
