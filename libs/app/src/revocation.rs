//! Ending sessions together with their tokens, and checking tokens against
//! the in-process revocation mirror (no Redis round trip per check).
//!
//! Sessions end only through [`Revocations::end`]: it deletes the sessions
//! and publishes the revocation of every token they carried, so no caller can
//! end a session and forget its tokens. "Sign out everywhere", disabling a
//! user and the like also set the user's revoked-before mark. Events reach
//! every instance through the stream tailer (`gatehouse_events`).

use std::sync::Arc;

use gatehouse_events::{EventStream, RevocationMirror, StreamSettings, TailerHandle, TokenFacts};

/// What an administrator revokes (a token by id, a user's tokens issued
/// before an instant, a tenant's).
pub use gatehouse_events::Revocation;
use gatehouse_redis::{Keyspace, RedisPool};
use gatehouse_session::{SessionError, SessionId, SessionStore};
use gatehouse_tokens::AccessClaims;
use uuid::Uuid;

use crate::tokens::TokenConfig;

/// Why a revocation could not be completed (the caller answers 503; a retry
/// is safe).
#[derive(Debug, thiserror::Error)]
pub enum EndError {
    /// The event stream (Redis) failed: nothing was published.
    #[error(transparent)]
    Events(#[from] gatehouse_events::EventError),
    /// Published, but the sessions could not all be deleted.
    #[error(transparent)]
    Sessions(#[from] SessionError),
}

/// Which sessions to end.
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// One session of a user (sign out, "sign out this one"). Its tokens are
    /// revoked only if it was the user's live session, so nobody can revoke
    /// another user's tokens by naming their session id.
    One {
        /// Tenant of the session.
        tenant_id: Uuid,
        /// Its user.
        user_id: Uuid,
        /// The session.
        id: &'a SessionId,
    },
    /// A session whose refresh family was replayed: its tokens are revoked
    /// even when the session is already gone (the presented token proves the
    /// family), and the session is ended when its user is known.
    Compromised {
        /// Tenant of the session.
        tenant_id: Uuid,
        /// Its user, when the family still names it.
        user_id: Option<Uuid>,
        /// The session.
        id: &'a SessionId,
    },
    /// Every session of a user but `keep`. Without `keep` (sign out
    /// everywhere, disable, password reset) the user's revoked-before mark
    /// is set too, which also stops sessions created while this runs.
    AllOfUser {
        /// Tenant of the user.
        tenant_id: Uuid,
        /// The user.
        user_id: Uuid,
        /// The caller's own session, kept (password change).
        keep: Option<&'a SessionId>,
    },
}

/// The stream, the mirror and the tailer feeding it, and the session store
/// whose sessions they revoke.
pub struct Revocations {
    sessions: SessionStore,
    stream: EventStream,
    mirror: Arc<RevocationMirror>,
    _tailer: Option<TailerHandle>,
    /// The gateway's clock (the same one that issues tokens).
    clock: Arc<dyn gatehouse_core::Clock>,
    /// Longest token life (ttl + leeway), seconds: how long a revocation matters.
    token_life_s: i64,
}

fn settings(tokens: &TokenConfig) -> StreamSettings {
    StreamSettings {
        max_token_life: tokens.access_ttl + tokens.leeway,
        ..StreamSettings::default()
    }
}

impl Revocations {
    /// Fills the mirror from the deny list and starts tailing the stream.
    pub async fn start(
        sessions: SessionStore,
        redis: RedisPool,
        keys: Keyspace,
        tokens: &TokenConfig,
        consumers: Vec<Arc<dyn gatehouse_events::EventConsumer>>,
        clock: Arc<dyn gatehouse_core::Clock>,
    ) -> Result<Self, gatehouse_events::EventError> {
        let stream = EventStream::new(redis, keys, settings(tokens));
        let mirror = Arc::new(RevocationMirror::default());
        let tailer = gatehouse_events::spawn_tailer(stream.clone(), mirror.clone(), consumers, {
            let clock = clock.clone();
            Arc::new(move || clock.unix_seconds())
        })
        .await?;
        Ok(Self {
            sessions,
            stream,
            mirror,
            _tailer: Some(tailer),
            clock,
            token_life_s: life(tokens),
        })
    }

    /// A writer only (the CLI): publishes revocations, keeps no mirror.
    #[must_use]
    pub fn writer(
        sessions: SessionStore,
        redis: RedisPool,
        keys: Keyspace,
        tokens: &TokenConfig,
        clock: Arc<dyn gatehouse_core::Clock>,
    ) -> Self {
        Self {
            sessions,
            stream: EventStream::new(redis, keys, settings(tokens)),
            mirror: Arc::new(RevocationMirror::default()),
            _tailer: None,
            clock,
            token_life_s: life(tokens),
        }
    }

    /// The event stream (the outbox relay publishes on it).
    #[must_use]
    pub fn stream(&self) -> &EventStream {
        &self.stream
    }

    /// Ends sessions and revokes their tokens: the one way sessions end.
    /// Returns how many live sessions ended (a `One` that was not the
    /// user's live session ends nothing and revokes nothing).
    pub async fn end(&self, ending: Ending<'_>) -> Result<u64, SessionError> {
        match ending {
            Ending::One {
                tenant_id,
                user_id,
                id,
            } => {
                let ended = self.sessions.end(tenant_id, user_id, id).await?;
                if ended {
                    self.sessions_ended(std::slice::from_ref(id)).await;
                }
                Ok(u64::from(ended))
            }
            Ending::Compromised {
                tenant_id,
                user_id,
                id,
            } => {
                let ended = match user_id {
                    Some(user_id) => self.sessions.end(tenant_id, user_id, id).await?,
                    None => false,
                };
                self.sessions_ended(std::slice::from_ref(id)).await;
                Ok(u64::from(ended))
            }
            Ending::AllOfUser {
                tenant_id,
                user_id,
                keep,
            } => {
                let ended = self
                    .sessions
                    .end_all_for_user(tenant_id, user_id, keep)
                    .await?;
                self.sessions_ended(&ended.ids).await;
                if keep.is_none() {
                    self.user_tokens(tenant_id, user_id).await;
                }
                Ok(ended.count)
            }
        }
    }

    /// Revokes every token of the sessions just ended. Failures are logged:
    /// the sessions themselves are already gone, so their tokens also fail
    /// any check that consults the session.
    async fn sessions_ended(&self, ids: &[SessionId]) {
        let now = self.clock.unix_seconds();
        for id in ids {
            let revocation = Revocation::Session {
                sid: id.to_string(),
                expires_at: now + self.token_life_s,
            };
            if let Err(e) = self.stream.revoke(&revocation, now).await {
                tracing::error!(session = %id, error = %e, "publishing a session revocation failed");
            }
            // In force here at once (a session record may be served from
            // memory); other instances get it from the stream.
            self.mirror.apply(&revocation);
        }
    }

    /// Revokes every token of a user issued before now (sign out everywhere,
    /// disable, password reset).
    async fn user_tokens(&self, tenant_id: Uuid, user_id: Uuid) {
        let now = self.clock.unix_seconds();
        let revocation = Revocation::User {
            tenant_id,
            user_id,
            before: now,
        };
        if let Err(e) = self.stream.revoke(&revocation, now).await {
            tracing::error!(%user_id, error = %e, "publishing a user revocation failed");
        }
        self.mirror.apply(&revocation);
    }

    /// An operator's revocation, in one operation: publishes it (every
    /// mirror refuses what it names at once, sessions begun before a user or
    /// tenant mark included) and, for a user or a tenant, deletes their
    /// sessions and refresh families so the effect outlasts the mark (which
    /// lives one token life). Safe to retry: a repeat finds nothing more to
    /// end. Returns the event id.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<String, EndError> {
        let event_id = self
            .stream
            .revoke(revocation, self.clock.unix_seconds())
            .await?;
        self.mirror.apply(revocation);
        match revocation {
            Revocation::User {
                tenant_id, user_id, ..
            } => {
                let ended = self
                    .sessions
                    .end_all_for_user(*tenant_id, *user_id, None)
                    .await?;
                self.sessions_ended(&ended.ids).await;
            }
            Revocation::Tenant { tenant_id, .. } => {
                self.sessions.end_all_for_tenant(*tenant_id).await?;
            }
            Revocation::Token { .. } | Revocation::Session { .. } => {}
        }
        Ok(event_id)
    }

    /// Whether a session created at `created_at` was revoked by its
    /// tenant's kill switch or its user's revoked-before mark (in-process).
    /// The operations that set marks also delete the sessions they end; this
    /// catches what they missed (another instance, a session created while
    /// the sweep ran, an admin revocation that names only the user).
    #[must_use]
    pub fn session_revoked(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        created_at: i64,
        id: &SessionId,
    ) -> bool {
        self.mirror
            .is_session_revoked(tenant_id, user_id, created_at, id.as_str())
    }

    /// Whether an access token was revoked (in-process; no Redis call).
    #[must_use]
    pub fn is_revoked(&self, claims: &AccessClaims) -> bool {
        let (Ok(tenant_id), Ok(user_id)) = (
            Uuid::try_parse(&claims.tenant_id),
            Uuid::try_parse(&claims.sub),
        ) else {
            return true;
        };
        self.mirror.is_revoked(TokenFacts {
            jti: &claims.jti,
            sid: &claims.sid,
            tenant_id,
            user_id,
            iat: claims.iat,
        })
    }
}

fn life(tokens: &TokenConfig) -> i64 {
    i64::try_from((tokens.access_ttl + tokens.leeway).as_secs()).unwrap_or(900)
}
