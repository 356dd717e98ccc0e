//! Who is calling: the credential behind a cookie or an `Authorization:
//! Bearer` header, admitted by [`gatehouse_app::admission`] (the one place that
//! decides whether a credential is live).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
pub use gatehouse_app::admission::Via;
use gatehouse_app::admission::{Admission, Expect, Need, Presented, Verdict};
use gatehouse_session::Session;

use crate::auth::cookies::{self, CookieSettings};
use crate::auth::csrf;
use crate::error::ApiError;

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
    pub access: Option<Arc<gatehouse_tokens::AccessClaims>>,
}

/// The raw `Authorization: Bearer` value, if any.
#[must_use]
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What the session extractors need (an axum sub-state): admission, the
/// session cookie's name, and our own origin for the same-origin check.
pub struct SessionGate {
    /// The one admission path.
    pub admission: Arc<Admission>,
    /// Cookie names and flags.
    pub cookies: CookieSettings,
    /// Our public base URL.
    pub issuer: url::Url,
    /// Refused presentations per client address (429 past the allowance,
    /// before admission: see [`crate::auth::failures`]).
    pub failures: crate::auth::failures::FailedPresentations,
}

impl SessionGate {
    /// 429 when `ip` has spent its allowance of refused presentations.
    pub fn refuse_flooding(&self, ip: &str) -> Result<(), ApiError> {
        let Ok(address) = ip.parse() else {
            return Ok(());
        };
        match self.failures.refused(address) {
            Some(wait) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failures",
                "too many refused credentials from this address; retry later",
            )
            .with_retry_after(wait)),
            None => Ok(()),
        }
    }

    /// Counts a refused presentation from `ip` (a missing credential is not one).
    pub fn note_refusal(&self, ip: &str, verdict: &Verdict) {
        if let Err(refusal) = verdict
            && *refusal != gatehouse_app::admission::Refusal::Missing
            && let Ok(address) = ip.parse()
        {
            self.failures.failed(address);
        }
    }
}

/// Registered once: a macro call looks the histogram up on every request.
static VALIDATION_DURATION: std::sync::LazyLock<metrics::Histogram> =
    std::sync::LazyLock::new(|| {
        metrics::histogram!("gatehouse_session_validation_duration_seconds")
    });

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
    let started = Instant::now();
    let verdict = gate.admission.admit(presented, expect, need).await?;
    VALIDATION_DURATION.record(started.elapsed().as_secs_f64());
    Ok(verdict)
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
