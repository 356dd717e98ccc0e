//! Access tokens: issue and verify.
//!
//! Issuing uses `jsonwebtoken`. Verification is ours, on the hot path, over
//! the `RustCrypto` primitives: keys are parsed and checked once when loaded
//! (RSA moduli ≥ 2048 bits; jsonwebtoken re-parses the key on every call,
//! ~12% of an `EdDSA` verify here), Ed25519 signatures are checked strictly
//! (no malleable or small-order signatures), and nothing in the token is
//! trusted before the signature is checked with a key we already hold: the `kid` selects the key, the key's pinned
//! algorithm must equal the header's `alg` (so `none`, HMAC-with-a-public-key
//! and RSA/EC swaps are refused), then `iss`, `aud`, `exp`, `nbf` (with a small
//! leeway, against a passed-in time) and, when asked, the tenant.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::{PublicKey, SigningKey};

/// The claims of a Gatehouse access token (RFC 9068 shape plus ours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer URL.
    pub iss: String,
    /// User id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Not before, unix seconds.
    pub nbf: i64,
    /// Unique token id (the revocation handle).
    pub jti: String,
    /// Tenant slug.
    pub tid: String,
    /// Tenant id (stable even if a slug were ever renamed; keys Redis state).
    pub tenant_id: String,
    /// Session id the token belongs to (revoking the session revokes it).
    pub sid: String,
    /// Effective role names at issue time.
    pub roles: Vec<String>,
    /// Display username.
    #[serde(default)]
    pub name: String,
}

/// Who a token is for.
#[derive(Debug, Clone)]
pub struct Grantee<'a> {
    /// User id.
    pub user_id: Uuid,
    /// Display username.
    pub username: &'a str,
    /// Tenant slug.
    pub tenant: &'a str,
    /// Tenant id.
    pub tenant_id: Uuid,
    /// Session id.
    pub session_id: &'a str,
    /// Roles to carry.
    pub roles: Vec<String>,
}

/// Issuing and verifying parameters shared by every token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// `iss`, the gateway's public URL.
    pub issuer: String,
    /// `aud` put in and required.
    pub audience: String,
    /// Access token lifetime in seconds.
    pub access_ttl_s: i64,
    /// Clock skew tolerated on `exp`/`nbf`/`iat`, seconds.
    pub leeway_s: i64,
}

/// Issuing failed (a bug or a broken key).
#[derive(Debug, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct IssueError(String);

/// Signs a new access token with `key` at `now`.
pub fn issue(
    settings: &TokenSettings,
    key: &SigningKey,
    grantee: Grantee<'_>,
    now: i64,
) -> Result<(String, AccessClaims), IssueError> {
    let claims = AccessClaims {
        iss: settings.issuer.clone(),
        sub: grantee.user_id.to_string(),
        aud: settings.audience.clone(),
        exp: now + settings.access_ttl_s,
        iat: now,
        nbf: now,
        jti: Uuid::now_v7().simple().to_string(),
        tid: grantee.tenant.to_owned(),
        tenant_id: grantee.tenant_id.to_string(),
        sid: grantee.session_id.to_owned(),
        roles: grantee.roles,
        name: grantee.username.to_owned(),
    };
    let token = jsonwebtoken::encode(&key.header(), &claims, &key.encoding)
        .map_err(|e| IssueError(e.to_string()))?;
    Ok((token, claims))
}

/// Why a token was refused. Each is a distinct metric label; clients get one
/// generic 401 whatever the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWS compact token, bad base64/JSON, unsupported or `none` alg.
    #[error("malformed token")]
    Malformed,
    /// No `kid`, or one we do not hold.
    #[error("unknown signing key")]
    UnknownKey,
    /// The header's `alg` is not the algorithm pinned to the key.
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` is not ours.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` is not ours.
    #[error("wrong audience")]
    WrongAudience,
    /// The token is for another tenant.
    #[error("token of another tenant")]
    WrongTenant,
}

impl VerifyError {
    /// A stable label for metrics and logs.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::AlgorithmMismatch => "algorithm_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::WrongTenant => "wrong_tenant",
        }
    }
}

/// Verifies tokens against a fixed set of public keys (rebuild it when the
/// key set changes; it is cheap).
#[derive(Debug, Clone)]
pub struct Verifier {
    settings: TokenSettings,
    keys: HashMap<String, PublicKey>,
}

impl Verifier {
    /// A verifier trusting exactly `keys`.
    #[must_use]
    pub fn new(settings: TokenSettings, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            settings,
            keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect(),
        }
    }

    /// Whether a key id is known (a verifier fetching JWKS refetches on a miss).
    #[must_use]
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The `kid` of a token without verifying anything.
    #[must_use]
    pub fn kid_of(token: &str) -> Option<String> {
        jsonwebtoken::decode_header(token).ok()?.kid
    }

    /// Verifies a token at `now`; with `tenant`, also that it belongs to it.
    ///
    /// Order: shape → `kid` → the key's pinned `alg` → signature → claims
    /// (parsed only once the signature holds) → `iss`, `aud`, time, tenant.
    pub fn verify(
        &self,
        token: &str,
        now: i64,
        tenant: Option<&str>,
    ) -> Result<AccessClaims, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed);
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
        let (header, payload) = signing_input
            .split_once('.')
            .ok_or(VerifyError::Malformed)?;
        if payload.contains('.') {
            return Err(VerifyError::Malformed);
        }
        let header: JoseHeader = decode_part(header)?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(VerifyError::UnknownKey)?;
        if header.alg != key.alg.as_str() {
            return Err(VerifyError::AlgorithmMismatch);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| VerifyError::Malformed)?;
        if !key.verifying.verifies(signing_input.as_bytes(), &signature) {
            return Err(VerifyError::BadSignature);
        }
        let claims: AccessClaims = decode_part(payload)?;
        if claims.iss != self.settings.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if claims.aud != self.settings.audience {
            return Err(VerifyError::WrongAudience);
        }
        let leeway = self.settings.leeway_s;
        if claims.exp <= now - leeway {
            return Err(VerifyError::Expired);
        }
        if claims.nbf > now + leeway || claims.iat > now + leeway {
            return Err(VerifyError::NotYetValid);
        }
        if tenant.is_some_and(|t| t != claims.tid) {
            return Err(VerifyError::WrongTenant);
        }
        Ok(claims)
    }
}

/// Longest token accepted (ours are well under 1 KiB).
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The JOSE header fields we read.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)
}

#[cfg(test)]
mod tests;
