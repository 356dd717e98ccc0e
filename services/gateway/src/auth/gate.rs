//! What every admission at the edge goes through (an axum sub-state of the
//! session extractors, the proxy and forward auth): the one admission
//! function, our cookie names and origin, and the per-address allowance of
//! refused presentations. No `AppState` here, so the state can hold it.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use gatehouse_app::admission::{Admission, Expect, Need, Presented, Verdict};

use crate::auth::cookies::CookieSettings;
use crate::error::ApiError;

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
    /// Admits `presented` (see [`gatehouse_app::admission`]), timing it.
    /// `Ok(Err(_))` when refused; `Err` only when a store cannot answer.
    pub async fn admit_presented(
        &self,
        presented: Presented<'_>,
        expect: Expect<'_>,
        need: Need,
    ) -> Result<Verdict, ApiError> {
        let started = Instant::now();
        let verdict = self.admission.admit(presented, expect, need).await?;
        VALIDATION_DURATION.record(started.elapsed().as_secs_f64());
        Ok(verdict)
    }

    /// 429 when `ip` has spent its allowance of refused presentations (one
    /// atomic load while no address is blocked).
    pub fn refuse_flooding(&self, ip: &str) -> Result<(), ApiError> {
        if !self.failures.any_blocked() {
            return Ok(());
        }
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
