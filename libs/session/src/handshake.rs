//! One-time handshake codes: how a signed-in browser carries its session to
//! an app served on its own origin without the session token ever leaving
//! the console's origin.
//!
//! The console's origin issues a code bound to the session, the app's host
//! and the path to return to; the app's origin redeems it once (`GETDEL`),
//! within a short lifetime, for a host-scoped credential of its own. The code
//! travels in a URL, so only its SHA-256 is stored and a second redemption
//! finds nothing.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_redis::{Keyspace, RedisPool, redis};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::store::SessionError;
use crate::token::SessionId;

/// What a redeemed code grants: this session, on this host, back to this path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeGrant {
    /// The session's tenant.
    pub tenant_id: Uuid,
    /// The session the app's credential stays tied to.
    pub session_id: SessionId,
    /// The app's host (`name[:port]`, lower case) the code may be redeemed on.
    pub host: String,
    /// Where on the app the browser goes afterwards (origin-form path).
    pub return_path: String,
}

/// Codes one session may issue per [`ISSUE_WINDOW`]: far more than a person
/// opening apps needs (an app's own session lasts as long as the user's), few
/// enough that a session cannot fill Redis with codes.
pub const ISSUES_PER_WINDOW: u32 = 30;

/// The window [`ISSUES_PER_WINDOW`] counts over.
pub const ISSUE_WINDOW: Duration = Duration::from_secs(60);

/// Issues and redeems handshake codes in Redis.
#[derive(Clone)]
pub struct Handshakes {
    redis: RedisPool,
    keys: Keyspace,
    lifetime: Duration,
    issue: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for Handshakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshakes")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Handshakes {
    /// Codes under `keys`, each valid for `lifetime` (at least a second).
    #[must_use]
    pub fn new(redis: RedisPool, keys: Keyspace, lifetime: Duration) -> Self {
        Self {
            redis,
            keys,
            lifetime: lifetime.max(Duration::from_secs(1)),
            issue: std::sync::Arc::new(redis::Script::new(include_str!(
                "../../../lua/handshake_issue.lua"
            ))),
        }
    }

    fn key(&self, tenant_id: Uuid, secret: &str) -> String {
        let digest = hex::encode(Sha256::digest(secret.as_bytes()));
        self.keys
            .tenant_key(&tenant_id.simple().to_string(), &format!("hs:{digest}"))
    }

    /// A fresh code for `grant` (`<tenant>.<256 random bits>`), or `None`
    /// when its session has issued [`ISSUES_PER_WINDOW`] codes in the current
    /// [`ISSUE_WINDOW`] (the caller answers 429). The host and path must hold
    /// no line breaks (the caller validated them). Not retried after a
    /// dropped connection: the count is not idempotent.
    pub async fn issue(&self, grant: &HandshakeGrant) -> Result<Option<String>, SessionError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let key = self.key(grant.tenant_id, &secret);
        let counter = self.keys.tenant_key(
            &grant.tenant_id.simple().to_string(),
            &format!("hsn:{}", grant.session_id),
        );
        let value = format!(
            "{}\n{}\n{}",
            grant.session_id, grant.host, grant.return_path
        );
        let (ttl, window) = (self.lifetime.as_secs(), ISSUE_WINDOW.as_secs());
        let mut invocation = self.issue.prepare_invoke();
        invocation
            .key(&counter)
            .key(&key)
            .arg(ISSUES_PER_WINDOW)
            .arg(window)
            .arg(&value)
            .arg(ttl);
        let invocation = &invocation;
        let issued: i64 = self
            .redis
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok((issued == 1).then(|| format!("{}.{secret}", grant.tenant_id.simple())))
    }

    /// The grant behind `code`, once: the first redemption deletes it. `None`
    /// for a malformed, expired, used or never-issued code. Not retried after
    /// a dropped connection (a `GETDEL` that reached Redis would be lost).
    pub async fn redeem(&self, code: &str) -> Result<Option<HandshakeGrant>, SessionError> {
        let Some((tenant, secret)) = code.split_once('.') else {
            return Ok(None);
        };
        let (Ok(tenant_id), true) = (Uuid::try_parse(tenant), secret.len() == 43) else {
            return Ok(None);
        };
        let key = self.key(tenant_id, secret);
        let key = &key;
        let stored: Option<String> =
            self.redis
                .run(|mut conn| async move {
                    redis::cmd("GETDEL").arg(key).query_async(&mut conn).await
                })
                .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut lines = stored.splitn(3, '\n');
        let (Some(id), Some(host), Some(return_path)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(SessionError::Corrupt("handshake record".into()));
        };
        let session_id =
            SessionId::parse(id).ok_or_else(|| SessionError::Corrupt("handshake record".into()))?;
        Ok(Some(HandshakeGrant {
            tenant_id,
            session_id,
            host: host.to_owned(),
            return_path: return_path.to_owned(),
        }))
    }
}
