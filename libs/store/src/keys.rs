//! Signing keys in Postgres and their life cycle:
//! `next` → `current` → `previous` → `retired`.
//!
//! - `next` is published in JWKS before it signs anything, so every verifier
//!   (other gateway instances, services caching JWKS) already holds it when
//!   it becomes `current`.
//! - `current` signs. Exactly one (a unique partial index enforces it).
//! - `previous` stopped signing at `retired_at` and stays published until
//!   every token it signed has expired (`retired_at + retire_after`).
//! - `retired` is no longer published or trusted.
//!
//! All changes happen in [`maintain`], under a transaction-scoped advisory
//! lock, so several gateway instances (and the CLI) can call it on a schedule
//! and exactly one of them rotates.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::StoreError;

/// Advisory lock key serialising key maintenance across processes.
const KEYS_LOCK: i64 = 0x6768_6b65_7973; // "ghkeys"

/// A key row (private half still sealed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// `EdDSA`, `RS256` or `ES256`.
    pub alg: String,
    /// Sealed private key (see `gatehouse_tokens::Kek`).
    pub private_key_encrypted: Vec<u8>,
    /// Public JWK.
    pub public_jwk: Value,
    /// `next`, `current`, `previous` or `retired`.
    pub state: String,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Became `current`.
    pub activated_at: Option<OffsetDateTime>,
    /// Stopped signing (became `previous`).
    pub retired_at: Option<OffsetDateTime>,
}

/// A new key, generated and sealed by the caller.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Key id.
    pub kid: String,
    /// Algorithm name.
    pub alg: String,
    /// Sealed private key.
    pub sealed: Vec<u8>,
    /// Public JWK.
    pub public_jwk: Value,
}

/// What [`maintain`] should do besides keeping the invariants.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// Rotate when the current key has signed this long (`None`: never on schedule).
    pub rotate_every: Option<Duration>,
    /// How long a `previous` key stays published: the longest token life plus leeway.
    pub retire_after: Duration,
    /// Rotate now, whatever the schedule (`gatehouse keys rotate`).
    pub force_rotate: bool,
    /// Now, by the caller's `Clock`: the schedule is judged at this time.
    pub now: OffsetDateTime,
}

/// What [`maintain`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyReport {
    /// Keys generated (`kid`).
    pub generated: Vec<String>,
    /// Whether a rotation happened (next became current).
    pub rotated: bool,
    /// Keys retired (`kid`).
    pub retired: Vec<String>,
}

impl KeyReport {
    /// Whether anything changed.
    #[must_use]
    pub fn changed(&self) -> bool {
        self.rotated || !self.generated.is_empty() || !self.retired.is_empty()
    }
}

/// Keys that verifiers should trust: every state but `retired`.
pub async fn published(pool: &PgPool) -> Result<Vec<StoredKey>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT kid, alg, private_key_encrypted, public_jwk, state, created_at, activated_at, retired_at
         FROM signing_keys WHERE state <> 'retired'
         ORDER BY CASE state WHEN 'current' THEN 0 WHEN 'next' THEN 1 ELSE 2 END, created_at DESC",
    )
    .fetch_all(pool)
    .await?)
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Keeps the life cycle's invariants and rotates when due: retires expired
/// `previous` keys, makes sure a `current` key exists (promoting `next`, or
/// generating one), rotates when forced or scheduled, and makes sure a `next`
/// key is published. `new_key` generates and seals a key; it is called only
/// when one is needed. Audited when anything changed.
pub async fn maintain(
    pool: &PgPool,
    policy: KeyPolicy,
    new_key: &mut (dyn FnMut() -> Result<NewKey, String> + Send),
) -> Result<KeyReport, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(KEYS_LOCK)
        .execute(&mut *tx)
        .await?;
    let mut report = KeyReport::default();
    let generate =
        |report: &mut KeyReport, new_key: &mut (dyn FnMut() -> Result<NewKey, String> + Send)| {
            let key = new_key().map_err(StoreError::KeyGeneration)?;
            report.generated.push(key.kid.clone());
            Ok::<_, StoreError>(key)
        };

    report.retired = sqlx::query_scalar(
        "UPDATE signing_keys SET state = 'retired'
         WHERE state = 'previous' AND retired_at + make_interval(secs => $1) <= now()
         RETURNING kid",
    )
    .bind(seconds(policy.retire_after))
    .fetch_all(&mut *tx)
    .await?;

    let current: Option<(String, Option<OffsetDateTime>)> =
        sqlx::query_as("SELECT kid, activated_at FROM signing_keys WHERE state = 'current'")
            .fetch_optional(&mut *tx)
            .await?;
    let due = match (&current, policy.rotate_every) {
        (Some((_, Some(activated))), Some(every)) => {
            let age = policy.now - *activated;
            age.whole_milliseconds() >= i128::try_from(every.as_millis()).unwrap_or(i128::MAX)
        }
        _ => false,
    };
    if current.is_some() && (policy.force_rotate || due) {
        sqlx::query("UPDATE signing_keys SET state = 'previous', retired_at = now() WHERE state = 'current'")
            .execute(&mut *tx)
            .await?;
        report.rotated = true;
    }
    if current.is_none() || report.rotated {
        let promoted = sqlx::query_scalar::<_, String>(
            "UPDATE signing_keys SET state = 'current', activated_at = now()
             WHERE kid = (SELECT kid FROM signing_keys WHERE state = 'next' ORDER BY created_at LIMIT 1)
             RETURNING kid",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if promoted.is_none() {
            let key = generate(&mut report, new_key)?;
            insert(&mut tx, &key, "current").await?;
        }
    }
    let has_next: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE state = 'next')")
            .fetch_one(&mut *tx)
            .await?;
    if !has_next {
        let key = generate(&mut report, new_key)?;
        insert(&mut tx, &key, "next").await?;
    }
    if report.changed() {
        sqlx::query(
            "INSERT INTO audit_events (actor_kind, action, outcome, details) VALUES ('system', 'keys.maintain', 'success', $1)",
        )
        .bind(json!({ "generated": report.generated, "rotated": report.rotated, "retired": report.retired, "forced": policy.force_rotate }))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(report)
}

async fn insert(tx: &mut sqlx::PgConnection, key: &NewKey, state: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, private_key_encrypted, public_jwk, state, activated_at)
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 = 'current' THEN now() END)",
    )
    .bind(&key.kid)
    .bind(&key.alg)
    .bind(&key.sealed)
    .bind(&key.public_jwk)
    .bind(state)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
