//! Refresh tokens: opaque, 256-bit, rotated on every use, in one family per
//! session, with reuse detection.
//!
//! Token: `ghr1_<tenant id>_<session id>_<256 random bits>`. The tenant and
//! session ids are not secret (the API shows session ids); they let the
//! client name every Redis key the rotation script touches (all in the
//! tenant's slot). Redis stores only the token's SHA-256.
//!
//! Presenting a token that was already spent (or superseded) means two
//! parties hold the family: the family is revoked at once, in the same script,
//! and the caller ends the session. A refresh also fails once its session has
//! ended (logout, sign out everywhere, user disabled).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_core::Clock;
use gatehouse_redis::redis::Script;
use gatehouse_redis::{Keyspace, RedisPool};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::{Session, SessionError, SessionId};

const PREFIX: &str = "ghr1_";

/// A refresh token as the client holds it. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    token: String,
    tenant_id: Uuid,
    session_id: SessionId,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl RefreshToken {
    fn generate(tenant_id: Uuid, session_id: &SessionId) -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!(
            "{PREFIX}{}_{}_{}",
            tenant_id.simple(),
            session_id,
            URL_SAFE_NO_PAD.encode(secret)
        );
        Self {
            token,
            tenant_id,
            session_id: session_id.clone(),
        }
    }

    /// Parses a presented token; anything not shaped exactly like one we
    /// issue is `None`, so garbage never reaches Redis.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(3, '_');
        let (tenant, session, secret) = (parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if tenant.len() != 32 || !lower_hex(tenant) || secret.len() != 43 {
            return None;
        }
        if URL_SAFE_NO_PAD.decode(secret).ok()?.len() != 32 {
            return None;
        }
        Some(Self {
            token: raw.to_owned(),
            tenant_id: Uuid::try_parse(tenant).ok()?,
            session_id: SessionId::parse(session)?,
        })
    }

    /// The value to hand to the client.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.token
    }

    /// Tenant the token belongs to.
    #[must_use]
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// Session the token's family is bound to.
    #[must_use]
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    fn digest(&self) -> String {
        hex(&Sha256::digest(self.token.as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Spent; here is its successor.
    Rotated {
        /// The new token (the presented one is now spent).
        token: RefreshToken,
        /// 2 for the first rotation, and so on.
        generation: i64,
    },
    /// A spent token came back: the family is revoked; end the session.
    Reused {
        /// The family's user (to end the session and audit).
        user_id: Option<Uuid>,
    },
    /// Revoked earlier, session ended, never issued or expired.
    Refused {
        /// `revoked`, `ended` or `unknown` (for metrics).
        why: &'static str,
    },
}

/// Refresh-token families in Redis.
#[derive(Clone)]
pub struct RefreshStore {
    redis: RedisPool,
    keys: Keyspace,
    clock: Arc<dyn Clock>,
    scripts: Arc<(Script, Script)>,
}

impl fmt::Debug for RefreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshStore").finish_non_exhaustive()
    }
}

impl RefreshStore {
    /// A store over `redis`, keys under `keys` (the same keyspace as sessions).
    #[must_use]
    pub fn new(redis: RedisPool, keys: Keyspace, clock: Arc<dyn Clock>) -> Self {
        Self {
            redis,
            keys,
            clock,
            scripts: Arc::new((
                Script::new(include_str!("../../../lua/refresh_issue.lua")),
                Script::new(include_str!("../../../lua/refresh_rotate.lua")),
            )),
        }
    }

    fn key(&self, tenant_id: Uuid, suffix: &str) -> String {
        self.keys
            .tenant_key(&tenant_id.simple().to_string(), suffix)
    }

    /// Starts the family of a new session with its first token; the family
    /// lives as long as the session may (its absolute expiry).
    pub async fn issue(&self, session: &Session) -> Result<RefreshToken, SessionError> {
        let token = RefreshToken::generate(session.tenant_id, &session.id);
        let ttl = (session.absolute_expires_at - self.clock.unix_seconds()).max(1);
        let family = self.key(session.tenant_id, &format!("rf:{}", session.id));
        let record = self.key(session.tenant_id, &format!("rt:{}", token.digest()));
        let (digest, sid, user) = (
            token.digest(),
            session.id.to_string(),
            session.user_id.simple().to_string(),
        );
        let scripts = self.scripts.clone();
        let created: i64 = self
            .redis
            .run(|mut conn| async move {
                scripts
                    .0
                    .key(&family)
                    .key(&record)
                    .arg(&digest)
                    .arg(&sid)
                    .arg(&user)
                    .arg(ttl)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if created == 0 {
            return Err(SessionError::Corrupt(
                "the session already has a refresh-token family".to_owned(),
            ));
        }
        Ok(token)
    }

    /// Spends `presented` and issues its successor, or reports reuse.
    pub async fn rotate(&self, presented: &RefreshToken) -> Result<Rotation, SessionError> {
        let tenant = presented.tenant_id;
        let successor = RefreshToken::generate(tenant, &presented.session_id);
        let keys = [
            self.key(tenant, &format!("rt:{}", presented.digest())),
            self.key(tenant, &format!("rf:{}", presented.session_id)),
            self.key(tenant, &format!("s:{}", presented.session_id)),
            self.key(tenant, &format!("rt:{}", successor.digest())),
        ];
        let (old, new) = (presented.digest(), successor.digest());
        let scripts = self.scripts.clone();
        let (status, generation, user): (String, i64, String) = self
            .redis
            .run(|mut conn| async move {
                let mut call = scripts.1.prepare_invoke();
                for key in &keys {
                    call.key(key);
                }
                call.arg(&old).arg(&new).invoke_async(&mut conn).await
            })
            .await?;
        Ok(match status.as_str() {
            "ok" => Rotation::Rotated {
                token: successor,
                generation,
            },
            "reuse" => Rotation::Reused {
                user_id: Uuid::try_parse(&user).ok(),
            },
            "revoked" => Rotation::Refused { why: "revoked" },
            "ended" => Rotation::Refused { why: "ended" },
            _ => Rotation::Refused { why: "unknown" },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_the_exact_shape_we_issue() {
        let sid = SessionId::parse(&"ab".repeat(32)).unwrap();
        let token = RefreshToken::generate(Uuid::nil(), &sid);
        let parsed = RefreshToken::parse(token.expose()).unwrap();
        assert_eq!(parsed, token);
        assert!(
            !format!("{token:?}").contains(&token.expose()[100..]),
            "Debug hides the secret"
        );
        let raw = token.expose();
        for bad in [
            "",
            "ghr1_",
            &raw[..raw.len() - 1],
            &raw.replace("ghr1_", "ghr2_"),
            &format!("{raw}x"),
            &raw.to_uppercase(),
            "gs1_00000000000000000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
    }
}
