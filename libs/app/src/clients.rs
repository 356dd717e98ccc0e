//! Service clients (machines that call introspection) and how they prove who
//! they are.
//!
//! Secrets are generated 256-bit values stored as SHA-256, so checking one
//! costs a hash, not argon2: random credentials cannot queue the tenants'
//! logins behind the password pool. Clients created before that keep an
//! argon2id hash until their first successful check upgrades it. A
//! successful check is remembered in process for [`CLIENT_CACHE_TTL`]
//! (deleting or disabling a client takes effect within that time); every
//! other attempt is throttled per client id and per client address
//! ([`CLIENT_AUTH_PER_ID`], [`CLIENT_AUTH_PER_ADDRESS`] a minute) before any
//! database read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gatehouse_core::Verification;
use gatehouse_store::StoreError;
use gatehouse_store::clients;
/// A service client as this module hands it out.
pub use gatehouse_store::clients::{ClientView, ServiceClient};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::passwords::PasswordPool;

/// Why a client was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// Unknown client, wrong secret, disabled, or no `introspect` scope.
    #[error("invalid client credentials")]
    Invalid,
    /// The client id or address spent its allowance; retry after the seconds.
    #[error("too many client authentication attempts; retry after {0} s")]
    Throttled(u64),
    /// The argon2 pool (legacy hashes only) was saturated.
    #[error("client authentication is busy")]
    Busy,
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a verified client secret is trusted without argon2.
pub const CLIENT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Unverified client authentications allowed per client id and minute.
pub const CLIENT_AUTH_PER_ID: u32 = 10;
/// Unverified client authentications allowed per client address (IPv6: /64)
/// and minute.
pub const CLIENT_AUTH_PER_ADDRESS: u32 = 30;

/// A client whose secret (by SHA-256) was verified at the instant.
type VerifiedClient = (ServiceClient, [u8; 32], Instant);

type KeyedLimiter = governor::DefaultKeyedRateLimiter<String>;

/// Verified client credentials by client id, and the throttles on the rest.
pub struct ServiceClients {
    db: PgPool,
    passwords: PasswordPool,
    verified: Mutex<HashMap<String, VerifiedClient>>,
    per_id: std::sync::RwLock<KeyedLimiter>,
    per_address: std::sync::RwLock<KeyedLimiter>,
    /// When the throttles' idle keys were last swept (sweeps are O(keys), so
    /// at most one a second, never one per attempt).
    swept: Mutex<Instant>,
}

impl ServiceClients {
    /// Client authentication over `db`, with `passwords` for the argon2
    /// hashes of clients created before secrets were stored as SHA-256.
    #[must_use]
    pub fn new(db: PgPool, passwords: PasswordPool) -> Self {
        let per_minute = |n: u32| {
            let n = std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
            governor::RateLimiter::keyed(governor::Quota::per_minute(n))
        };
        Self {
            db,
            passwords,
            verified: Mutex::new(HashMap::new()),
            per_id: std::sync::RwLock::new(per_minute(CLIENT_AUTH_PER_ID)),
            per_address: std::sync::RwLock::new(per_minute(CLIENT_AUTH_PER_ADDRESS)),
            swept: Mutex::new(Instant::now()),
        }
    }
}

/// Keys kept by each throttle before idle ones are dropped.
const THROTTLE_KEYS_BOUND: usize = 10_000;

impl ServiceClients {
    /// Takes one attempt from the address's allowance, then (only if that
    /// allowed it) from the client id's; `Err(seconds)` to wait when either
    /// is spent. The address goes first, so a flood of invented client ids
    /// from one address is cut before it grows the per-id throttle. Memory
    /// stays bounded: past [`THROTTLE_KEYS_BOUND`] keys, a sweep (at most
    /// once a second) drops those back at full allowance, and a throttle
    /// still over the bound after it is emptied (counted in
    /// `gatehouse_client_throttle_resets_total`).
    fn attempt(&self, client_id: &str, address: &str) -> Result<(), u64> {
        self.sweep();
        let clock = governor::clock::DefaultClock::default();
        let wait = |limiter: &std::sync::RwLock<KeyedLimiter>, key: &str| {
            let limiter = limiter
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            limiter.check_key(&key.to_owned()).err().map(|not_until| {
                use governor::clock::Clock as _;
                not_until.wait_time_from(clock.now()).as_secs().max(1)
            })
        };
        match wait(&self.per_address, address).or_else(|| wait(&self.per_id, client_id)) {
            Some(seconds) => Err(seconds),
            None => Ok(()),
        }
    }

    fn sweep(&self) {
        let len = |limiter: &std::sync::RwLock<KeyedLimiter>| {
            limiter
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len()
        };
        if len(&self.per_id) <= THROTTLE_KEYS_BOUND && len(&self.per_address) <= THROTTLE_KEYS_BOUND
        {
            return;
        }
        {
            let Ok(mut swept) = self.swept.try_lock() else {
                return; // another caller is sweeping
            };
            if swept.elapsed() < std::time::Duration::from_secs(1) {
                return;
            }
            *swept = Instant::now();
        }
        for (lock, name, per_minute) in [
            (&self.per_id, "client_id", CLIENT_AUTH_PER_ID),
            (&self.per_address, "address", CLIENT_AUTH_PER_ADDRESS),
        ] {
            let mut limiter = lock
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if limiter.len() > THROTTLE_KEYS_BOUND {
                limiter.retain_recent();
                if limiter.len() > THROTTLE_KEYS_BOUND {
                    let n =
                        std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN);
                    *limiter = governor::RateLimiter::keyed(governor::Quota::per_minute(n));
                    metrics::counter!("gatehouse_client_throttle_resets_total", "throttle" => name)
                        .increment(1);
                }
                limiter.shrink_to_fit();
            }
        }
    }

    /// Every service client, for the admin API.
    pub async fn list(&self) -> Result<Vec<ClientView>, StoreError> {
        clients::list(&self.db).await
    }

    /// Creates a client bound to `tenant_id` (or to none) and returns its
    /// secret, shown once: only its SHA-256 is stored. `event` (the
    /// authorised caller's) is recorded in the same transaction as the
    /// client and its outbox event. `Conflict` when the id is taken.
    pub async fn create(
        &self,
        event: &gatehouse_store::audit::AuditEvent,
        client_id: &str,
        tenant_id: Option<Uuid>,
        description: &str,
    ) -> Result<String, StoreError> {
        let (secret, hash) = new_secret();
        clients::create(&self.db, client_id, tenant_id, &hash, description, event).await?;
        Ok(secret)
    }

    /// Deletes a client, with its outbox event and `event` in the same
    /// transaction, and forgets its verified secret here; `false` when
    /// there was none.
    pub async fn delete(
        &self,
        event: &gatehouse_store::audit::AuditEvent,
        client_id: &str,
    ) -> Result<bool, StoreError> {
        let deleted = clients::delete(&self.db, client_id, event).await?;
        if deleted {
            self.forget(client_id);
        }
        Ok(deleted)
    }

    /// Drops a changed client's verified secret (this instance; the
    /// `client.changed` event does it on every instance).
    pub fn forget(&self, client_id: &str) {
        if let Ok(mut map) = self.verified.lock() {
            map.remove(client_id);
        }
    }

    /// Drops every verified secret (the event stream lost our position).
    pub fn forget_all(&self) {
        if let Ok(mut map) = self.verified.lock() {
            map.clear();
        }
    }
}

/// The SHA-256 of a presented secret.
fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// `sha256:<hex>`: how a generated client secret is stored.
fn stored_form(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// Whether `stored` (`sha256:<hex>`) is the hash of the presented secret;
/// compares in constant time.
fn sha256_matches(stored: &str, digest: &[u8; 32]) -> bool {
    let Some(Ok(expected)) = stored.strip_prefix("sha256:").map(hex::decode) else {
        return false;
    };
    expected.len() == digest.len()
        && expected
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A new client secret and the form to store it in.
#[must_use]
pub fn new_secret() -> (String, String) {
    use base64::Engine as _;
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    let secret = format!(
        "ghc1_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let stored = stored_form(&secret_digest(&secret));
    (secret, stored)
}

impl ServiceClients {
    /// Authenticates a client by id and secret, `address` being its client
    /// address bucket (for the throttle).
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: &str,
        address: &str,
    ) -> Result<ServiceClient, ClientAuthError> {
        if client_id.len() > 64 || secret.len() > 128 {
            return Err(ClientAuthError::Invalid);
        }
        let digest = secret_digest(secret);
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|map| map.get(client_id).cloned());
        if let Some((client, known, at)) = cached
            && known == digest
            && at.elapsed() < CLIENT_CACHE_TTL
        {
            return Ok(client);
        }
        self.attempt(client_id, address)
            .map_err(ClientAuthError::Throttled)?;
        let row = clients::by_client_id(&self.db, client_id)
            .await?
            .filter(|c| c.status == "active" && c.scopes.iter().any(|s| s == "introspect"));
        let verified = match row {
            Some(client) if sha256_matches(&client.secret_hash, &digest) => Some(client),
            Some(client) if client.secret_hash.starts_with("$argon2") => {
                self.legacy_check(client, secret, &digest).await?
            }
            _ => None,
        };
        let client = verified.ok_or(ClientAuthError::Invalid)?;
        if let Ok(mut map) = self.verified.lock() {
            map.insert(
                client_id.to_owned(),
                (client.clone(), digest, Instant::now()),
            );
        }
        Ok(client)
    }

    /// A client created before secrets were stored as SHA-256: argon2 once
    /// (already behind the throttle), then the stored hash is upgraded.
    async fn legacy_check(
        &self,
        client: ServiceClient,
        secret: &str,
        digest: &[u8; 32],
    ) -> Result<Option<ServiceClient>, ClientAuthError> {
        let verdict = self
            .passwords
            .verify(secret.to_owned(), Some(client.secret_hash.clone()))
            .await
            .map_err(|_| ClientAuthError::Busy)?;
        if !matches!(
            verdict,
            Verification::Match | Verification::MatchNeedsRehash(_)
        ) {
            return Ok(None);
        }
        let upgraded = stored_form(digest);
        clients::upgrade_secret_hash(&self.db, &client.client_id, &client.secret_hash, &upgraded)
            .await?;
        Ok(Some(ServiceClient {
            secret_hash: upgraded,
            ..client
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    fn clients() -> ServiceClients {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let hasher =
            gatehouse_core::PasswordHasher::new(gatehouse_core::Argon2Cost::default()).unwrap();
        ServiceClients::new(
            pool,
            PasswordPool::new(hasher, 1, std::time::Duration::from_secs(1)),
        )
    }

    fn keys(limiter: &std::sync::RwLock<KeyedLimiter>) -> usize {
        limiter.read().unwrap().len()
    }

    #[tokio::test]
    async fn an_address_is_throttled_before_any_client_id_is_remembered() {
        let clients = clients();
        let allowance = usize::try_from(CLIENT_AUTH_PER_ADDRESS).unwrap();
        for i in 0..allowance {
            assert!(
                clients
                    .attempt(&format!("invented-{i}"), "192.0.2.7")
                    .is_ok()
            );
        }
        for i in 0..500 {
            assert!(clients.attempt(&format!("more-{i}"), "192.0.2.7").is_err());
        }
        assert_eq!(
            keys(&clients.per_id),
            allowance,
            "refused attempts add no ids"
        );
        assert_eq!(keys(&clients.per_address), 1);
    }

    #[tokio::test]
    async fn the_throttles_stay_bounded_under_a_flood_of_addresses_and_ids() {
        let clients = clients();
        for i in 0..(THROTTLE_KEYS_BOUND + 50) {
            let _ = clients.attempt(&format!("id-{i}"), &format!("10.0.{}.{}", i / 256, i % 256));
        }
        *clients.swept.lock().unwrap() = Instant::now()
            .checked_sub(std::time::Duration::from_secs(2))
            .unwrap();
        let _ = clients.attempt("one-more", "192.0.2.8");
        assert!(
            keys(&clients.per_id) <= THROTTLE_KEYS_BOUND,
            "{}",
            keys(&clients.per_id)
        );
        assert!(keys(&clients.per_address) <= THROTTLE_KEYS_BOUND);
    }
}
