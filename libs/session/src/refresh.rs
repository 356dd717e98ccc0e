//! Refresh tokens: rotated on every use, in one family per session, with
//! reuse detection, a rotation limit per session, and memory that does not
//! grow with use.
//!
//! Token: `ghr2_<tenant id>_<session id>_<generation>_<MAC>`, where the MAC
//! is HMAC-SHA256 under the gateway's refresh key over the tenant, session
//! and generation. The family in Redis is one hash of fixed fields (current
//! generation, revoked flag, user, rotation window): a token is checked by
//! its MAC (forgeries never reach Redis) and its generation against the
//! family's, so no spent token needs a key of its own. The tenant and
//! session ids are not secret (the API shows session ids); they let the
//! client name every Redis key the rotation script touches (all in the
//! tenant's slot).
//!
//! Presenting an older generation means two parties hold the family: the
//! family is revoked at once, in the same script, and the caller ends the
//! session. A refresh also fails once its session has ended (logout, sign out
//! everywhere, user disabled). More than [`RefreshLimits::per_window`]
//! rotations in a window are refused (the token stays valid), so one account
//! cannot make the gateway mint tokens without bound.
//!
//! Legacy `ghr1_<tenant>_<session>_<random>` tokens (families issued before
//! the generation form) are still accepted once: their rotation moves the
//! family to the generation form and returns a `ghr2_` successor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_core::Clock;
use gatehouse_redis::redis::Script;
use gatehouse_redis::{Keyspace, RedisPool};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::{Session, SessionError, SessionId};

const PREFIX: &str = "ghr2_";
const LEGACY_PREFIX: &str = "ghr1_";

type HmacSha256 = Hmac<Sha256>;

/// The secret behind every refresh token's MAC. Derived from the gateway's
/// key-encryption key, so every instance shares it without storing it.
#[derive(Clone)]
pub struct RefreshKey([u8; 32]);

impl fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshKey([redacted])")
    }
}

impl RefreshKey {
    /// Derives the refresh key from a 32-byte master key (HMAC with a fixed
    /// label), so rotating the master key also retires every refresh token.
    #[must_use]
    pub fn derive(master: &[u8; 32]) -> Self {
        let mut mac = HmacSha256::new_from_slice(master)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"gatehouse refresh key v2");
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, tenant_id: Uuid, session_id: &SessionId, generation: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(tenant_id.as_bytes());
        mac.update(session_id.as_str().as_bytes());
        mac.update(&generation.to_be_bytes());
        mac
    }
}

/// A refresh token as the client holds it. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    token: String,
    tenant_id: Uuid,
    session_id: SessionId,
    /// `None` for a legacy `ghr1_` token.
    generation: Option<i64>,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("session_id", &self.session_id)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl RefreshToken {
    fn generate(
        key: &RefreshKey,
        tenant_id: Uuid,
        session_id: &SessionId,
        generation: i64,
    ) -> Self {
        let mac = key.mac(tenant_id, session_id, generation).finalize();
        let token = format!(
            "{PREFIX}{}_{}_{generation}_{}",
            tenant_id.simple(),
            session_id,
            URL_SAFE_NO_PAD.encode(mac.into_bytes())
        );
        Self {
            token,
            tenant_id,
            session_id: session_id.clone(),
            generation: Some(generation),
        }
    }

    /// Parses a presented token; anything not shaped exactly like one we
    /// issue is `None`, so garbage never reaches Redis. (The MAC is checked
    /// by [`RefreshStore::rotate`], which holds the key.)
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        if let Some(rest) = raw.strip_prefix(PREFIX) {
            let mut parts = rest.splitn(4, '_');
            let (tenant, session, generation, mac) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            let generation_ok = (1..=18).contains(&generation.len())
                && generation.bytes().all(|b| b.is_ascii_digit())
                && !generation.starts_with('0');
            if tenant.len() != 32 || !lower_hex(tenant) || !generation_ok || mac.len() != 43 {
                return None;
            }
            if URL_SAFE_NO_PAD.decode(mac).ok()?.len() != 32 {
                return None;
            }
            return Some(Self {
                token: raw.to_owned(),
                tenant_id: Uuid::try_parse(tenant).ok()?,
                session_id: SessionId::parse(session)?,
                generation: Some(generation.parse().ok()?),
            });
        }
        let rest = raw.strip_prefix(LEGACY_PREFIX)?;
        let mut parts = rest.splitn(3, '_');
        let (tenant, session, secret) = (parts.next()?, parts.next()?, parts.next()?);
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
            generation: None,
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

    /// Whether the MAC is the key's for this tenant, session and generation
    /// (constant time). Legacy tokens have none: Redis holds their digest.
    fn authentic(&self, key: &RefreshKey) -> bool {
        let Some(generation) = self.generation else {
            return true;
        };
        // The MAC is the last 43 characters (base64url has '_' of its own).
        let Some(mac) = self
            .token
            .len()
            .checked_sub(43)
            .and_then(|start| self.token.get(start..))
            .and_then(|m| URL_SAFE_NO_PAD.decode(m).ok())
        else {
            return false;
        };
        key.mac(self.tenant_id, &self.session_id, generation)
            .verify_slice(&mac)
            .is_ok()
    }

    fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.token.as_bytes()))
    }
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
    /// Too many rotations of this session in the window; the presented
    /// token is still valid after the wait.
    Throttled {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Revoked earlier, session ended, never issued, forged or expired.
    Refused {
        /// `revoked`, `ended`, `forged` or `unknown` (for metrics).
        why: &'static str,
    },
}

/// How often one session may rotate its refresh token.
#[derive(Debug, Clone, Copy)]
pub struct RefreshLimits {
    /// Rotations allowed per window.
    pub per_window: u32,
    /// The window.
    pub window: Duration,
}

impl Default for RefreshLimits {
    /// 10 a minute: a client refreshes about once per access-token life
    /// (minutes); a retry storm or a loop is cut off, a real client never.
    fn default() -> Self {
        Self {
            per_window: 10,
            window: Duration::from_secs(60),
        }
    }
}

struct Scripts {
    issue: Script,
    rotate: Script,
    rotate_legacy: Script,
}

/// Refresh-token families in Redis.
#[derive(Clone)]
pub struct RefreshStore {
    redis: RedisPool,
    keys: Keyspace,
    clock: Arc<dyn Clock>,
    key: RefreshKey,
    limits: RefreshLimits,
    scripts: Arc<Scripts>,
}

impl fmt::Debug for RefreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RefreshStore {
    /// A store over `redis`, keys under `keys` (the same keyspace as
    /// sessions), tokens authenticated with `key`.
    #[must_use]
    pub fn new(
        redis: RedisPool,
        keys: Keyspace,
        clock: Arc<dyn Clock>,
        key: RefreshKey,
        limits: RefreshLimits,
    ) -> Self {
        Self {
            redis,
            keys,
            clock,
            key,
            limits,
            scripts: Arc::new(Scripts {
                issue: Script::new(include_str!("../../../lua/refresh_issue.lua")),
                rotate: Script::new(include_str!("../../../lua/refresh_rotate.lua")),
                rotate_legacy: Script::new(include_str!("../../../lua/refresh_rotate_v1.lua")),
            }),
        }
    }

    fn key(&self, tenant_id: Uuid, suffix: &str) -> String {
        self.keys
            .tenant_key(&tenant_id.simple().to_string(), suffix)
    }

    /// Starts the family of a new session with its first token; the family
    /// lives as long as the session may (its absolute expiry).
    pub async fn issue(&self, session: &Session) -> Result<RefreshToken, SessionError> {
        let token = RefreshToken::generate(&self.key, session.tenant_id, &session.id, 1);
        let ttl = (session.absolute_expires_at - self.clock.unix_seconds()).max(1);
        let family = self.key(session.tenant_id, &format!("rf:{}", session.id));
        let (sid, user) = (session.id.to_string(), session.user_id.simple().to_string());
        let scripts = self.scripts.clone();
        let created: i64 = self
            .redis
            .run(|mut conn| async move {
                scripts
                    .issue
                    .key(&family)
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

    /// Whether `presented` carries our MAC (legacy tokens: always, Redis
    /// holds their digest). Callers check it before anything else, so a
    /// forged token costs no store access and touches no session.
    #[must_use]
    pub fn is_authentic(&self, presented: &RefreshToken) -> bool {
        presented.authentic(&self.key)
    }

    /// Spends `presented` and issues its successor, or reports reuse,
    /// throttling or refusal.
    pub async fn rotate(&self, presented: &RefreshToken) -> Result<Rotation, SessionError> {
        if !presented.authentic(&self.key) {
            return Ok(Rotation::Refused { why: "forged" });
        }
        let tenant = presented.tenant_id;
        let family = self.key(tenant, &format!("rf:{}", presented.session_id));
        let session = self.key(tenant, &format!("s:{}", presented.session_id));
        let scripts = self.scripts.clone();
        let (status, n, user): (String, i64, String) =
            if let Some(generation) = presented.generation {
                let now = self.clock.unix_seconds();
                let window = i64::try_from(self.limits.window.as_secs().max(1)).unwrap_or(60);
                let allowed = self.limits.per_window;
                self.redis
                    .run(|mut conn| async move {
                        scripts
                            .rotate
                            .key(&family)
                            .key(&session)
                            .arg(generation)
                            .arg(now)
                            .arg(window)
                            .arg(allowed)
                            .invoke_async(&mut conn)
                            .await
                    })
                    .await?
            } else {
                let record = self.key(tenant, &format!("rt:{}", presented.digest()));
                let digest = presented.digest();
                self.redis
                    .run(|mut conn| async move {
                        scripts
                            .rotate_legacy
                            .key(&record)
                            .key(&family)
                            .key(&session)
                            .arg(&digest)
                            .invoke_async(&mut conn)
                            .await
                    })
                    .await?
            };
        Ok(match status.as_str() {
            "ok" => Rotation::Rotated {
                token: RefreshToken::generate(&self.key, tenant, &presented.session_id, n),
                generation: n,
            },
            "reuse" => Rotation::Reused {
                user_id: Uuid::try_parse(&user).ok(),
            },
            "throttled" => Rotation::Throttled {
                retry_after: Duration::from_secs(u64::try_from(n.max(1)).unwrap_or(1)),
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

    fn key() -> RefreshKey {
        RefreshKey::derive(&[9u8; 32])
    }

    #[test]
    fn tokens_parse_only_in_the_exact_shape_we_issue() {
        let sid = SessionId::parse(&"ab".repeat(32)).unwrap();
        let token = RefreshToken::generate(&key(), Uuid::nil(), &sid, 7);
        let parsed = RefreshToken::parse(token.expose()).unwrap();
        assert_eq!(parsed, token);
        assert!(parsed.authentic(&key()));
        let raw = token.expose();
        assert!(
            !format!("{token:?}").contains(&raw[raw.len() - 43..]),
            "Debug hides the MAC"
        );
        for bad in [
            "",
            "ghr2_",
            &raw[..raw.len() - 1],
            &raw.replace("ghr2_", "ghr3_"),
            &format!("{raw}x"),
            &raw.to_uppercase(),
            &raw.replace("_7_", "_07_"),
            &raw.replace("_7_", "_0_"),
            &raw.replace("_7_", "_-7_"),
            "gs1_00000000000000000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
    }

    /// A MAC binds the tenant, session and generation to the key: changing
    /// any of them, or the key, makes the token a forgery.
    #[test]
    fn the_mac_binds_tenant_session_generation_and_key() {
        let sid = SessionId::parse(&"ab".repeat(32)).unwrap();
        let token = RefreshToken::generate(&key(), Uuid::nil(), &sid, 3);
        let raw = token.expose();
        let other_generation = RefreshToken::parse(&raw.replace("_3_", "_4_")).unwrap();
        assert!(!other_generation.authentic(&key()));
        let other_session =
            RefreshToken::parse(&raw.replace(&"ab".repeat(32), &"cd".repeat(32))).unwrap();
        assert!(!other_session.authentic(&key()));
        assert!(!token.authentic(&RefreshKey::derive(&[8u8; 32])));
        assert!(token.authentic(&key()));
    }

    #[test]
    fn legacy_tokens_still_parse() {
        let raw = format!(
            "ghr1_{}_{}_{}",
            "0".repeat(32),
            "ab".repeat(32),
            URL_SAFE_NO_PAD.encode([5u8; 32])
        );
        let legacy = RefreshToken::parse(&raw).unwrap();
        assert_eq!(legacy.generation, None);
        assert!(legacy.authentic(&key()), "Redis holds the legacy proof");
    }
}
