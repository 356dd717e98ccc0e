//! Revoking access tokens when sessions end, and checking tokens against the
//! in-process revocation mirror (no Redis round trip per check).
//!
//! Every place that ends sessions calls [`Revocations::sessions_ended`] with
//! the ids it ended; "sign out everywhere", disabling a user and the like also
//! set the user's revoked-before mark. Events reach every instance through
//! the stream tailer (`gatehouse_events`).

use std::sync::Arc;

use gatehouse_events::{
    EventStream, Revocation, RevocationMirror, StreamSettings, TailerHandle, TokenFacts,
};
use gatehouse_redis::{Keyspace, RedisPool};
use gatehouse_session::SessionId;
use gatehouse_tokens::AccessClaims;
use uuid::Uuid;

use crate::config::TokenConfig;

/// The stream, the mirror and the tailer feeding it.
pub struct Revocations {
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
        redis: RedisPool,
        keys: Keyspace,
        tokens: &TokenConfig,
        clock: Arc<dyn gatehouse_core::Clock>,
    ) -> Result<Self, gatehouse_events::EventError> {
        let stream = EventStream::new(redis, keys, settings(tokens));
        let mirror = Arc::new(RevocationMirror::default());
        let tailer = gatehouse_events::spawn_tailer(stream.clone(), mirror.clone(), {
            let clock = clock.clone();
            Arc::new(move || clock.unix_seconds())
        })
        .await?;
        Ok(Self {
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
        redis: RedisPool,
        keys: Keyspace,
        tokens: &TokenConfig,
        clock: Arc<dyn gatehouse_core::Clock>,
    ) -> Self {
        Self {
            stream: EventStream::new(redis, keys, settings(tokens)),
            mirror: Arc::new(RevocationMirror::default()),
            _tailer: None,
            clock,
            token_life_s: life(tokens),
        }
    }

    /// Revokes every token of the sessions just ended. Failures are logged:
    /// the sessions themselves are already gone, so their tokens also fail
    /// any check that consults the session.
    pub async fn sessions_ended(&self, ids: &[SessionId]) {
        let now = self.clock.unix_seconds();
        for id in ids {
            let revocation = Revocation::Session {
                sid: id.to_string(),
                expires_at: now + self.token_life_s,
            };
            if let Err(e) = self.stream.revoke(&revocation, now).await {
                tracing::error!(session = %id, error = %e, "publishing a session revocation failed");
            }
        }
    }

    /// Revokes every token of a user issued before now (sign out everywhere,
    /// disable, password reset).
    pub async fn user_tokens(&self, tenant_id: Uuid, user_id: Uuid) {
        let now = self.clock.unix_seconds();
        if let Err(e) = self
            .stream
            .revoke(
                &Revocation::User {
                    tenant_id,
                    user_id,
                    before: now,
                },
                now,
            )
            .await
        {
            tracing::error!(%user_id, error = %e, "publishing a user revocation failed");
        }
    }

    /// Publishes one revocation for an admin request; the error is the caller's.
    pub async fn publish(
        &self,
        revocation: &Revocation,
    ) -> Result<String, gatehouse_events::EventError> {
        self.stream
            .revoke(revocation, self.clock.unix_seconds())
            .await
    }

    /// Whether the tenant's kill switch ended a session created at
    /// `created_at` (in-process). Users' marks are not applied to sessions:
    /// the operations that set them delete the sessions they end directly.
    #[must_use]
    pub fn session_killed(&self, tenant_id: Uuid, created_at: i64) -> bool {
        self.mirror.is_tenant_revoked(tenant_id, created_at)
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
