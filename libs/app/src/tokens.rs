//! Access tokens in the gateway: the in-process key ring (the current signing
//! key, a verifier trusting every published key, the JWKS document), kept
//! fresh by a background task that also runs key maintenance (scheduled
//! rotation, retiring expired keys) — exactly one instance rotates, under the
//! store's advisory lock.

use std::sync::{Arc, RwLock};

use gatehouse_store::keys::{self, KeyPolicy, KeyReport, NewKey};
use gatehouse_tokens::{
    AccessClaims, Grantee, Kek, PublicKey, SigningAlgorithm, SigningKey, TokenSettings, Verifier,
    VerifyError,
};
use secrecy::{ExposeSecret, SecretBox};
use serde_json::{Value, json};
use sqlx::PgPool;

use std::time::Duration;

use crate::authz::{AuthzError, AuthzService};

/// The 32-byte key that encrypts signing keys at rest.
pub type KeyEncryptionKey = SecretBox<[u8; 32]>;

/// Access tokens and their signing keys.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// `aud` of issued tokens, required on verify.
    pub audience: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
    /// Algorithm of newly generated keys.
    pub signing_alg: gatehouse_tokens::SigningAlgorithm,
    /// Rotate the signing key after this long (`None`: only on demand).
    pub rotate_every: Option<Duration>,
    /// How often each instance reloads keys and runs key maintenance.
    pub key_refresh: Duration,
}

impl TokenConfig {
    /// How long a key that stopped signing must stay published: the longest
    /// token life plus leeway plus one refresh period (instances may sign with
    /// it until they reload).
    #[must_use]
    pub fn retire_after(&self) -> Duration {
        self.access_ttl + self.leeway + self.key_refresh
    }
}

/// Why the key ring could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] gatehouse_store::StoreError),
    /// A stored key does not open (wrong KEK) or is malformed.
    #[error(transparent)]
    Key(#[from] gatehouse_tokens::KeyError),
    /// A stored key names an algorithm we do not know.
    #[error("signing key {0} has an unknown algorithm")]
    UnknownAlgorithm(String),
    /// No current key (maintenance has not run).
    #[error("no current signing key")]
    NoCurrentKey,
}

/// One consistent view of the keys.
pub struct KeyRing {
    /// Signs new tokens.
    pub signing: SigningKey,
    /// Trusts `next`, `current` and `previous` keys.
    pub verifier: Verifier,
    /// `{"keys": [...]}` as published at `/.well-known/jwks.json`.
    pub jwks: Value,
}

/// Verified tokens remembered at most. Entries are keyed by the token itself
/// (about 0.6 KiB with its claims), so this bounds the cache near 30 MiB; a
/// token beyond it costs one signature check, not a refusal.
const VERIFIED_TOKENS: usize = 50_000;

/// Issues and verifies access tokens with the current key ring.
pub struct TokenService {
    db: PgPool,
    kek: Kek,
    config: TokenConfig,
    settings: TokenSettings,
    ring: RwLock<Arc<KeyRing>>,
    /// The schedule of key rotations is judged by it.
    clock: Arc<dyn gatehouse_core::Clock>,
    /// Tokens already verified (by digest of the whole token, until `exp`).
    /// Entries outlive key rotations safely: a key is retired only after
    /// every token it signed has expired.
    verified: gatehouse_tokens::VerifiedCache,
}

fn new_key(kek: &Kek, alg: SigningAlgorithm) -> Result<NewKey, String> {
    let generated = gatehouse_tokens::generate(alg).map_err(|e| e.to_string())?;
    let sealed = kek.seal(&generated.kid, generated.private_der.expose_secret());
    Ok(NewKey {
        kid: generated.kid,
        alg: alg.as_str().to_owned(),
        sealed,
        public_jwk: generated.public_jwk,
    })
}

/// Runs key maintenance once (`force` = rotate now), judging the rotation
/// schedule at `now` (the caller's clock).
pub async fn maintain(
    db: &PgPool,
    kek: &Kek,
    config: &TokenConfig,
    force: bool,
    now: time::OffsetDateTime,
) -> Result<KeyReport, KeyRingError> {
    let policy = KeyPolicy {
        rotate_every: config.rotate_every,
        retire_after: config.retire_after(),
        force_rotate: force,
        now,
    };
    let alg = config.signing_alg;
    let mut factory = move || new_key(kek, alg);
    Ok(keys::maintain(db, policy, &mut factory).await?)
}

/// Copies the configured KEK into the token service's own secret.
#[must_use]
pub fn kek_from(config: &KeyEncryptionKey) -> Kek {
    Kek::new(SecretBox::new(Box::new(*config.expose_secret())))
}

async fn load(db: &PgPool, kek: &Kek, settings: &TokenSettings) -> Result<KeyRing, KeyRingError> {
    let stored = keys::published(db).await?;
    let mut signing = None;
    let mut public = Vec::with_capacity(stored.len());
    for key in &stored {
        let alg = SigningAlgorithm::parse(&key.alg)
            .ok_or_else(|| KeyRingError::UnknownAlgorithm(key.kid.clone()))?;
        if key.state == "current" {
            let opened = SigningKey::open(
                kek,
                &key.kid,
                alg,
                &key.private_key_encrypted,
                &key.public_jwk,
            )?;
            public.push(opened.public.clone());
            signing = Some(opened);
        } else {
            public.push(PublicKey::from_jwk(&key.kid, alg, &key.public_jwk)?);
        }
    }
    let signing = signing.ok_or(KeyRingError::NoCurrentKey)?;
    let jwks = json!({ "keys": public.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    Ok(KeyRing {
        signing,
        verifier: Verifier::new(settings.clone(), public),
        jwks,
    })
}

impl TokenService {
    /// Makes sure keys exist (generating the first ones on a fresh install)
    /// and loads them. Fails when the stored keys do not open with this KEK.
    pub async fn start(
        db: PgPool,
        kek: Kek,
        config: TokenConfig,
        issuer: &url::Url,
        clock: Arc<dyn gatehouse_core::Clock>,
    ) -> Result<Self, KeyRingError> {
        let settings = TokenSettings {
            issuer: issuer.as_str().trim_end_matches('/').to_owned(),
            audience: config.audience.clone(),
            access_ttl_s: i64::try_from(config.access_ttl.as_secs()).unwrap_or(600),
            leeway_s: i64::try_from(config.leeway.as_secs()).unwrap_or(30),
        };
        maintain(&db, &kek, &config, false, clock.now()).await?;
        let ring = load(&db, &kek, &settings).await?;
        let verified = gatehouse_tokens::VerifiedCache::new(VERIFIED_TOKENS, settings.leeway_s);
        Ok(Self {
            db,
            kek,
            config,
            settings,
            ring: RwLock::new(Arc::new(ring)),
            clock,
            verified,
        })
    }

    /// Runs scheduled maintenance and reloads the ring (every `key_refresh`).
    pub async fn refresh(&self) -> Result<KeyReport, KeyRingError> {
        let report = maintain(&self.db, &self.kek, &self.config, false, self.clock.now()).await?;
        let ring = load(&self.db, &self.kek, &self.settings).await?;
        if let Ok(mut slot) = self.ring.write() {
            *slot = Arc::new(ring);
        }
        Ok(report)
    }

    /// The current ring.
    #[must_use]
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().map_or_else(
            |poisoned| Arc::clone(&poisoned.into_inner()),
            |r| Arc::clone(&r),
        )
    }

    /// Token parameters (issuer, audience, lifetimes).
    #[must_use]
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// How often the ring is refreshed.
    #[must_use]
    pub fn refresh_every(&self) -> std::time::Duration {
        self.config.key_refresh
    }

    /// Signs an access token.
    pub fn issue(
        &self,
        grantee: Grantee<'_>,
        now: i64,
    ) -> Result<(String, AccessClaims), gatehouse_tokens::IssueError> {
        let ring = self.ring();
        let issued = gatehouse_tokens::issue(&self.settings, &ring.signing, grantee, now);
        metrics::counter!("gatehouse_tokens_issued_total", "alg" => ring.signing.public.alg.as_str()).increment(1);
        issued
    }

    /// Verifies an access token (signature, claims, time; not revocation):
    /// a token seen before is answered from the verified-token cache.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<AccessClaims>, VerifyError> {
        if let Some(claims) = self.verified.get(token, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.ring().verifier.verify(token, now, None)?);
        self.verified.insert(token, Arc::clone(&claims), now);
        Ok(claims)
    }
}

/// Why an access token could not be issued for a session.
#[derive(Debug, thiserror::Error)]
pub enum AccessTokenError {
    /// The user's roles could not be read.
    #[error(transparent)]
    Authz(#[from] AuthzError),
    /// Signing failed (a bug or a broken key).
    #[error(transparent)]
    Issue(#[from] gatehouse_tokens::IssueError),
}

impl TokenService {
    /// Issues the access token for a session, carrying the user's effective
    /// roles at `now`.
    pub async fn issue_for_session(
        &self,
        authz: &AuthzService,
        session: &gatehouse_session::Session,
        now: i64,
    ) -> Result<(String, AccessClaims), AccessTokenError> {
        let roles = authz
            .effective_roles(session.tenant_id, session.user_id, now)
            .await?;
        let grantee = Grantee {
            user_id: session.user_id,
            username: &session.username,
            tenant: &session.tenant_slug,
            tenant_id: session.tenant_id,
            session_id: session.id.as_str(),
            roles,
        };
        Ok(self.issue(grantee, now)?)
    }
}
