//! Admission: the one function that decides whether a presented credential
//! is live and whose it is.
//!
//! Every way in (session cookie, session token, Bearer access token, refresh
//! token, introspection, forward auth, the admin API) calls
//! [`Admission::admit`] or [`Admission::admit_session_id`]; no handler
//! re-implements a piece of it. The rules, in order:
//!
//! 1. the credential's own validity: an access token's signature, `alg`
//!    pinned by `kid`, `iss`/`aud`/`exp`/`nbf`; a session token's record in
//!    Redis (sliding idle and absolute expiry);
//! 2. revocation, from the in-process mirror: the token's `jti` and `sid`,
//!    the user's and the tenant's revoked-before marks, for access tokens and
//!    sessions alike (a session under a mark is ended for good, with its
//!    tokens, so the effect outlasts the mark);
//! 3. the expected tenant, when the caller names one (forward auth's
//!    `?tenant=`): a credential of another tenant is refused;
//! 4. the tenant is active, and the user still exists and is active (read
//!    through the tiered cache at the tenant's data version; a session of a
//!    disabled user is ended).
//!
//! This module knows nothing of HTTP: it takes the raw credential and answers
//! with [`Admitted`] or a [`Refusal`]; the edge maps those to 401/403/503.

use std::sync::Arc;

use gatehouse_core::Clock;
/// The session record and its id, as admission hands them out.
pub use gatehouse_session::{Session, SessionId};
use gatehouse_session::{SessionError, SessionStore, SessionToken};
use gatehouse_store::StoreError;
use gatehouse_store::directory::Tenant;
use gatehouse_tokens::AccessClaims;
use uuid::Uuid;

use crate::directory::Directory;

use crate::revocation::{Ending, Revocations};
use crate::tokens::TokenService;

/// How the caller presented its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Browser cookie (CSRF-able: unsafe methods need a same-origin check).
    Cookie,
    /// `Authorization: Bearer` or a token handed in as data (introspection).
    Bearer,
}

/// A credential as it arrived.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// The session cookie's value (a session token).
    Cookie(&'a str),
    /// A Bearer value or an introspected token: a session token (`gs1_…`)
    /// or an access token (JWT), told apart by shape.
    Bearer(&'a str),
}

/// What an access token must prove besides itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The token alone (signature, claims, mirror, tenant and user standing):
    /// forward auth and introspection, which answer for the token.
    Token,
    /// The token's session must also be live in Redis: the JSON API, whose
    /// handlers work on the session.
    Session,
}

/// Whose credential is acceptable here.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Any tenant's (the caller's own pages and API).
    AnyTenant,
    /// Only this tenant's, by slug (forward auth's pinned tenant).
    Tenant(&'a str),
}

/// An admitted caller.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The caller's tenant (active), shared with the cache.
    pub tenant: Arc<Tenant>,
    /// The caller (active).
    pub user_id: Uuid,
    /// The caller's display name.
    pub username: String,
    /// The live session, for session tokens and for access tokens admitted
    /// with [`Need::Session`].
    pub session: Option<Session>,
    /// The access token's claims, when a JWT proved it (shared with the
    /// verified-token cache).
    pub access: Option<Arc<AccessClaims>>,
    /// How it was presented.
    pub via: Via,
}

/// Why a credential was refused. The edge answers every refusal with the
/// same 401 (what exists is not revealed); the reason is for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or not in any shape we issue.
    Missing,
    /// The access token failed its signature or claims (reason label).
    Invalid(&'static str),
    /// Revoked: deny list, session revocation, user or tenant mark.
    Revoked,
    /// The session ended, expired or never existed.
    SessionEnded,
    /// A credential of another tenant than the one expected.
    OtherTenant,
    /// The tenant is disabled or gone.
    TenantInactive,
    /// The user is disabled or gone.
    UserInactive,
}

impl Refusal {
    /// Metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(reason) => reason,
            Self::Revoked => "revoked",
            Self::SessionEnded => "session_ended",
            Self::OtherTenant => "other_tenant",
            Self::TenantInactive => "tenant_inactive",
            Self::UserInactive => "user_inactive",
        }
    }
}

/// A dependency could not answer: the edge answers 503, never "allowed".
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// Redis (sessions).
    #[error(transparent)]
    Sessions(#[from] SessionError),
    /// Postgres (tenant and user standing).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of one admission.
pub type Verdict = Result<Admitted, Refusal>;

/// Admission and the ending of sessions (through [`Revocations`]).
pub struct Admission {
    directory: Arc<Directory>,
    sessions: SessionStore,
    /// Session records validated in Redis within the last touch interval, by
    /// session id. Serving them from memory is safe because every ending of
    /// a session publishes its id to every instance's revocation mirror
    /// (checked on every admission), and the idle deadline only moves
    /// forward; Redis is still asked (and the idle deadline slid) at least
    /// once per touch interval per session per instance.
    recent: moka::future::Cache<SessionId, Session>,
    tokens: Arc<TokenService>,
    revocations: Arc<Revocations>,
    clock: Arc<dyn Clock>,
}

/// Session records served from memory (registered once: this is on every
/// cookie request).
static SESSION_HITS: std::sync::LazyLock<metrics::Counter> = std::sync::LazyLock::new(
    || metrics::counter!("gatehouse_cache_hits_total", "cache" => "sessions", "tier" => "l1"),
);

/// Access tokens admitted (registered once: this is on every Bearer request).
static TOKENS_ADMITTED: std::sync::LazyLock<[metrics::Counter; 3]> =
    std::sync::LazyLock::new(|| {
        ["ok", "session_ended", "revoked"].map(
            |result| metrics::counter!("gatehouse_access_token_verify_total", "result" => result),
        )
    });

/// Session records kept in memory at most (about 0.5 KiB each).
const RECENT_SESSIONS: u64 = 200_000;

/// Whether a Bearer value is a session token rather than an access token.
#[must_use]
pub fn is_session_token(raw: &str) -> bool {
    raw.starts_with("gs1_")
}

impl Admission {
    /// Admission over the given stores.
    #[must_use]
    pub fn new(
        directory: Arc<Directory>,
        sessions: SessionStore,
        tokens: Arc<TokenService>,
        revocations: Arc<Revocations>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let recent = moka::future::Cache::builder()
            .max_capacity(RECENT_SESSIONS)
            .time_to_live(
                sessions
                    .touch_interval()
                    .max(std::time::Duration::from_millis(1)),
            )
            .build();
        Self {
            directory,
            sessions,
            recent,
            tokens,
            revocations,
            clock,
        }
    }

    /// Ends sessions with their tokens (the one way sessions end).
    pub async fn end(&self, ending: Ending<'_>) -> Result<u64, SessionError> {
        self.revocations.end(ending).await
    }

    /// Decides whether `presented` is live and whose it is (see the module
    /// doc for the rules). `Err` only when a store cannot answer.
    pub async fn admit(
        &self,
        presented: Presented<'_>,
        expect: Expect<'_>,
        need: Need,
    ) -> Result<Verdict, AdmissionError> {
        let verdict = match presented {
            Presented::Cookie(raw) => self.session_token(raw, Via::Cookie, expect).await?,
            Presented::Bearer(raw) if is_session_token(raw) => {
                self.session_token(raw, Via::Bearer, expect).await?
            }
            Presented::Bearer(raw) => self.access_token(raw, expect, need).await?,
        };
        if let Err(refusal) = &verdict {
            metrics::counter!("gatehouse_admission_refused_total", "reason" => refusal.label())
                .increment(1);
        }
        Ok(verdict)
    }

    /// Admits a session by id (a refresh token names its session): the same
    /// rules as a session token.
    pub async fn admit_session_id(
        &self,
        tenant_id: Uuid,
        id: SessionId,
        expect: Expect<'_>,
    ) -> Result<Verdict, AdmissionError> {
        let session = self.sessions.validate_id(tenant_id, id).await?;
        let verdict = match session {
            Some(session) => self.session(session, Via::Bearer, expect).await?,
            None => Err(Refusal::SessionEnded),
        };
        if let Err(refusal) = &verdict {
            metrics::counter!("gatehouse_admission_refused_total", "reason" => refusal.label())
                .increment(1);
        }
        Ok(verdict)
    }

    /// Admits the session an app's host-scoped credential stands for (see
    /// [`crate::app_sessions`]): the same rules as the session cookie, with
    /// the record from memory within the touch interval, so the app's
    /// session ends exactly when the user's does.
    pub async fn admit_linked_session(
        &self,
        tenant_id: Uuid,
        id: SessionId,
    ) -> Result<Verdict, AdmissionError> {
        let verdict = match self.live_session(tenant_id, id).await? {
            Some(session) => {
                self.session(session, Via::Cookie, Expect::AnyTenant)
                    .await?
            }
            None => Err(Refusal::SessionEnded),
        };
        if let Err(refusal) = &verdict {
            metrics::counter!("gatehouse_admission_refused_total", "reason" => refusal.label())
                .increment(1);
        }
        Ok(verdict)
    }

    async fn session_token(
        &self,
        raw: &str,
        via: Via,
        expect: Expect<'_>,
    ) -> Result<Verdict, AdmissionError> {
        let Some(token) = SessionToken::parse(raw) else {
            return Ok(Err(Refusal::Missing));
        };
        let id = token.id();
        if let Some(session) = self.remembered(&id, token.tenant_id()).await {
            // Not re-inserted: the entry expires one touch interval after
            // Redis last saw the session, so Redis slides it at that pace.
            return self.session(session, via, expect).await;
        }
        if let Some(session) = self.sessions.validate(&token).await? {
            self.recent.insert(id, session.clone()).await;
            self.session(session, via, expect).await
        } else {
            self.recent.invalidate(&id).await;
            Ok(Err(Refusal::SessionEnded))
        }
    }

    /// A session validated in Redis within the touch interval and still
    /// within its deadlines (revocation is checked by the caller, as for any
    /// session).
    async fn remembered(&self, id: &SessionId, tenant_id: Uuid) -> Option<Session> {
        let session = self.recent.get(id).await?;
        if session.tenant_id == tenant_id && session.is_live_at(self.clock.unix_seconds()) {
            SESSION_HITS.increment(1);
            Some(session)
        } else {
            None
        }
    }

    /// The live session `id` of `tenant_id`: from memory within the touch
    /// interval, else from Redis.
    async fn live_session(
        &self,
        tenant_id: Uuid,
        id: SessionId,
    ) -> Result<Option<Session>, SessionError> {
        if let Some(session) = self.remembered(&id, tenant_id).await {
            return Ok(Some(session));
        }
        let session = self.sessions.validate_id(tenant_id, id.clone()).await?;
        match &session {
            Some(s) => self.recent.insert(id, s.clone()).await,
            None => self.recent.invalidate(&id).await,
        }
        Ok(session)
    }

    /// Rules 2-4 for a live session record.
    async fn session(
        &self,
        session: Session,
        via: Via,
        expect: Expect<'_>,
    ) -> Result<Verdict, AdmissionError> {
        if self.revocations.session_revoked(
            session.tenant_id,
            session.user_id,
            session.created_at,
            &session.id,
        ) {
            self.end_refused(&session).await;
            return Ok(Err(Refusal::Revoked));
        }
        if let Expect::Tenant(slug) = expect
            && session.tenant_slug != slug
        {
            return Ok(Err(Refusal::OtherTenant));
        }
        let standing = self
            .standing(session.tenant_id, session.user_id, expect)
            .await?;
        match standing {
            Ok((tenant, username)) => Ok(Ok(Admitted {
                tenant,
                user_id: session.user_id,
                username,
                session: Some(session),
                access: None,
                via,
            })),
            Err(refusal) => {
                if refusal == Refusal::UserInactive {
                    self.end_refused(&session).await;
                }
                Ok(Err(refusal))
            }
        }
    }

    async fn access_token(
        &self,
        raw: &str,
        expect: Expect<'_>,
        need: Need,
    ) -> Result<Verdict, AdmissionError> {
        let claims = match self.tokens.verify(raw, self.clock.unix_seconds()) {
            Ok(claims) => claims,
            Err(e) => {
                metrics::counter!("gatehouse_access_token_verify_total", "result" => e.label())
                    .increment(1);
                return Ok(Err(Refusal::Invalid(e.label())));
            }
        };
        if self.revocations.is_revoked(&claims) {
            TOKENS_ADMITTED[2].increment(1);
            return Ok(Err(Refusal::Revoked));
        }
        let (Ok(tenant_id), Ok(user_id)) = (
            Uuid::try_parse(&claims.tenant_id),
            Uuid::try_parse(&claims.sub),
        ) else {
            return Ok(Err(Refusal::Invalid("claims")));
        };
        if let Expect::Tenant(slug) = expect
            && claims.tid != slug
        {
            return Ok(Err(Refusal::OtherTenant));
        }
        let session = if need == Need::Session {
            let live = match SessionId::parse(&claims.sid) {
                Some(id) => self.live_session(tenant_id, id).await?,
                None => None,
            }
            .filter(|s| s.user_id == user_id);
            TOKENS_ADMITTED[usize::from(live.is_none())].increment(1);
            match live {
                Some(session) => Some(session),
                None => return Ok(Err(Refusal::SessionEnded)),
            }
        } else {
            None
        };
        Ok(self
            .standing(tenant_id, user_id, expect)
            .await?
            .map(|(tenant, username)| Admitted {
                tenant,
                user_id,
                username,
                session,
                access: Some(claims),
                via: Via::Bearer,
            }))
    }

    /// Rule 3 and 4: the tenant is the expected one and active, the user
    /// exists in it and is active.
    async fn standing(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        expect: Expect<'_>,
    ) -> Result<Result<(Arc<Tenant>, String), Refusal>, AdmissionError> {
        let Some(principal) = self.directory.principal(tenant_id, user_id).await?.0 else {
            return Ok(Err(Refusal::TenantInactive));
        };
        if let Expect::Tenant(slug) = expect
            && principal.tenant.slug != slug
        {
            return Ok(Err(Refusal::OtherTenant));
        }
        if !principal.tenant.is_active() {
            return Ok(Err(Refusal::TenantInactive));
        }
        // A hit on the cache is shared: the tenant is a reference count here,
        // only the name is copied.
        match &principal.user {
            Some((username, status)) if status == "active" => {
                Ok(Ok((Arc::clone(&principal.tenant), username.clone())))
            }
            _ => Ok(Err(Refusal::UserInactive)),
        }
    }

    /// A session refused for good (revoked by a mark, user disabled) is ended
    /// with its tokens, so the refusal outlasts the mark in the mirror.
    async fn end_refused(&self, session: &Session) {
        self.recent.invalidate(&session.id).await;
        if let Err(e) = self
            .revocations
            .end(Ending::One {
                tenant_id: session.tenant_id,
                user_id: session.user_id,
                id: &session.id,
            })
            .await
        {
            tracing::warn!(error = %e, "ending a refused session failed");
        }
    }
}
