//! Spending a refresh token: the whole rule in one place, without HTTP.
//!
//! In order: the token's MAC (a forged token never reaches Redis, where
//! admitting its session would slide the victim's idle deadline), then
//! admission (a revoked session, a disabled user or tenant, a kill switch
//! mint nothing), then the rotation. A token presented twice revokes its
//! family and ends the session, and that is audited. Every refusal looks the
//! same to the caller ([`RefreshError::Refused`]); its reason goes to the
//! metrics only.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Clock;
use gatehouse_session::{RefreshStore, RefreshToken, Rotation, SessionError};
use gatehouse_store::audit::{Actor, AuditEvent, Outcome};
use serde_json::json;
use sqlx::PgPool;

use crate::admission::{Admission, AdmissionError, Admitted, Expect, Session};
use crate::authz::AuthzService;
use crate::login::Origin;
use crate::revocation::Ending;
use crate::tokens::{AccessTokenError, TokenService};

/// A spent refresh token's successors.
#[derive(Debug)]
pub struct Refreshed {
    /// The new access token.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The new refresh token (the presented one is spent).
    pub refresh_token: RefreshToken,
    /// The session both belong to.
    pub session: Session,
}

/// Why nothing was minted.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Malformed, forged, expired, revoked, reused, or its session ended:
    /// one answer for all (the label is for metrics).
    #[error("the refresh token was refused ({0})")]
    Refused(&'static str),
    /// Too many rotations of this session; the token stays valid.
    #[error("too many refreshes of this session")]
    Throttled(Duration),
    /// Redis (sessions, refresh families).
    #[error(transparent)]
    Sessions(#[from] SessionError),
    /// Admission could not answer.
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// The access token could not be issued.
    #[error(transparent)]
    Token(#[from] AccessTokenError),
}

/// Spends refresh tokens (see the module doc).
#[derive(Clone)]
pub struct Refresher {
    refresh: RefreshStore,
    admission: Arc<Admission>,
    tokens: Arc<TokenService>,
    authz: Arc<AuthzService>,
    db: PgPool,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher").finish_non_exhaustive()
    }
}

fn count(result: &'static str) {
    metrics::counter!("gatehouse_tokens_refreshed_total", "result" => result).increment(1);
}

impl Refresher {
    /// Wires the flow.
    #[must_use]
    pub fn new(
        refresh: RefreshStore,
        admission: Arc<Admission>,
        tokens: Arc<TokenService>,
        authz: Arc<AuthzService>,
        db: PgPool,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            refresh,
            admission,
            tokens,
            authz,
            db,
            clock,
        }
    }

    /// Spends `presented` (as the client sent it) for a new access token
    /// and a new refresh token. `origin` and `request_id` go into the audit
    /// row of a reuse.
    pub async fn refresh(
        &self,
        presented: &str,
        origin: &Origin,
        request_id: Option<String>,
    ) -> Result<Refreshed, RefreshError> {
        let Some(presented) = RefreshToken::parse(presented) else {
            count("malformed");
            return Err(RefreshError::Refused("malformed"));
        };
        if !self.refresh.is_authentic(&presented) {
            count("forged");
            return Err(RefreshError::Refused("forged"));
        }
        let admitted = self
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
            count("not_admitted");
            return Err(RefreshError::Refused("not_admitted"));
        };
        let next = match self.refresh.rotate(&presented).await? {
            Rotation::Rotated { token, .. } => token,
            Rotation::Reused { user_id } => {
                count("reuse");
                self.reused(&presented, user_id, origin, request_id).await?;
                return Err(RefreshError::Refused("reuse"));
            }
            Rotation::Throttled { retry_after } => {
                count("throttled");
                return Err(RefreshError::Throttled(retry_after));
            }
            Rotation::Refused { why } => {
                count(why);
                return Err(RefreshError::Refused(why));
            }
        };
        let now = self.clock.unix_seconds();
        let (access_token, claims) = self
            .tokens
            .issue_for_session(&self.authz, &session, now)
            .await?;
        count("ok");
        Ok(Refreshed {
            access_token,
            expires_in: claims.exp - now,
            refresh_token: next,
            session,
        })
    }

    /// A spent token came back: its family is revoked already; the session
    /// ends and the reuse is audited.
    async fn reused(
        &self,
        presented: &RefreshToken,
        user_id: Option<uuid::Uuid>,
        origin: &Origin,
        request_id: Option<String>,
    ) -> Result<(), SessionError> {
        self.admission
            .end(Ending::Compromised {
                tenant_id: presented.tenant_id(),
                user_id,
                id: presented.session_id(),
            })
            .await?;
        let event = AuditEvent {
            tenant_id: Some(presented.tenant_id()),
            actor: user_id.map_or(Actor::Anonymous, Actor::User),
            action: "refresh.reuse",
            target: Some(presented.session_id().to_string()),
            outcome: Outcome::Denied,
            ip: Some(origin.ip.clone()),
            user_agent: Some(origin.user_agent.clone()),
            request_id,
            details: json!({ "effect": "family revoked, session ended" }),
        };
        if let Err(e) = gatehouse_store::audit::record(&self.db, &event).await {
            tracing::error!(error = %e, action = event.action, "audit event not recorded");
        }
        tracing::warn!(session = %presented.session_id(), "refresh token reuse: family revoked, session ended");
        Ok(())
    }
}
