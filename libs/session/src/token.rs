//! The session token a client holds and the public id derived from it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

const PREFIX: &str = "gs1_";
/// 256 random bits in unpadded base64url.
const SECRET_CHARS: usize = 43;
const TOKEN_CHARS: usize = PREFIX.len() + 32 + 1 + SECRET_CHARS;

/// The bearer secret of a session (cookie value or `Authorization: Bearer`).
/// Never logged: `Debug` prints only its public id.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    token: String,
    tenant_id: Uuid,
}

impl SessionToken {
    /// A new token for a session of `tenant_id` with 256 bits from the OS RNG.
    #[must_use]
    pub fn generate(tenant_id: Uuid) -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!(
            "{PREFIX}{}_{}",
            tenant_id.simple(),
            URL_SAFE_NO_PAD.encode(secret)
        );
        Self { token, tenant_id }
    }

    /// Parses a presented token; anything not shaped exactly like one we issue
    /// is `None` (so garbage never reaches Redis).
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() != TOKEN_CHARS || !raw.starts_with(PREFIX) {
            return None;
        }
        let tenant_hex = raw.get(PREFIX.len()..PREFIX.len() + 32)?;
        if raw.as_bytes().get(PREFIX.len() + 32) != Some(&b'_') {
            return None;
        }
        let secret = raw.get(PREFIX.len() + 33..)?;
        let decoded = URL_SAFE_NO_PAD.decode(secret).ok()?;
        if decoded.len() != 32
            || !tenant_hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return None;
        }
        let tenant_id = Uuid::try_parse(tenant_hex).ok()?;
        Some(Self {
            token: raw.to_owned(),
            tenant_id,
        })
    }

    /// The tenant whose session this is.
    #[must_use]
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// The public id: hex SHA-256 of the token; what Redis is keyed by and
    /// what session lists show.
    #[must_use]
    pub fn id(&self) -> SessionId {
        SessionId(hex::encode(Sha256::digest(self.token.as_bytes())))
    }

    /// The secret itself, for the `Set-Cookie` header or a JSON login answer.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SessionToken").field(&self.id().0).finish()
    }
}

/// Public identifier of a session (hex SHA-256 of its token). Knowing it does
/// not let anyone use the session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// Parses 64 lowercase hex characters.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(raw.to_owned()))
    }

    /// The hex string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_and_are_unique() {
        let tenant = Uuid::new_v4();
        let a = SessionToken::generate(tenant);
        let b = SessionToken::generate(tenant);
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        let parsed = SessionToken::parse(a.expose()).unwrap();
        assert_eq!(parsed.tenant_id(), tenant);
        assert_eq!(parsed.id(), a.id());
        assert!(SessionId::parse(a.id().as_str()).is_some());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = SessionToken::generate(Uuid::new_v4()).expose().to_owned();
        let mut wrong_sep = good.clone().into_bytes();
        wrong_sep[PREFIX.len() + 32] = b'-';
        for bad in [
            String::new(),
            "gs1_".to_owned(),
            good[..good.len() - 1].to_owned(),
            format!("{good}x"),
            good.replacen("gs1_", "gs2_", 1),
            good.to_uppercase(),
            String::from_utf8(wrong_sep).unwrap(),
            format!("{}!{}", &good[..good.len() - 1], ""),
        ] {
            assert!(SessionToken::parse(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let token = SessionToken::generate(Uuid::new_v4());
        let secret = &token.expose()[PREFIX.len() + 33..];
        assert!(!format!("{token:?}").contains(secret));
    }

    #[test]
    fn session_ids_must_be_lowercase_hex_of_64() {
        assert!(SessionId::parse(&"a".repeat(64)).is_some());
        assert!(SessionId::parse(&"A".repeat(64)).is_none());
        assert!(SessionId::parse(&"a".repeat(63)).is_none());
        assert!(SessionId::parse(&"g".repeat(64)).is_none());
    }
}
