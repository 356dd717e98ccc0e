//! Postgres access for Gatehouse: the source of truth (L3).
//!
//! Architecture invariant: every query on tenant data is scoped by `tenant_id`,
//! and this is the only crate that writes SQL. Callers get typed rows and a
//! [`StoreError`] that says which [`ErrorKind`] it is.

pub mod access;
pub mod audit;
pub mod bootstrap;
pub mod clients;
pub mod directory;
pub mod keys;
pub mod outbox;
pub mod routing;

use std::str::FromStr as _;
use std::time::Duration;

use gatehouse_core::ErrorKind;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The schema migrations in `migrations/` at the repository root, embedded in the
/// binary so `gatehouse migrate` and start-up need no files on disk.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Failures of the store, each mapped to an [`ErrorKind`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `DATABASE_URL` could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// Postgres did not answer in time, or has no free connection.
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    /// The connection broke (Postgres restarted or went away): the pool's
    /// older connections are retired, so a read may be tried once more.
    #[error("postgres connection lost: {0}")]
    ConnectionLost(String),
    /// A write would violate a uniqueness or integrity rule.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Password hashing failed while seeding a user.
    #[error(transparent)]
    Password(#[from] gatehouse_core::PasswordError),
    /// Generating a signing key failed.
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    /// Any other database error (a bug or an unexpected state).
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// One failure handed to several callers (a cache fill's waiters).
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
}

impl StoreError {
    /// The shared kind of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidUrl(_) => ErrorKind::Invalid,
            Self::Unavailable(_) | Self::ConnectionLost(_) => ErrorKind::Unavailable,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Migrate(_) | Self::Password(_) | Self::KeyGeneration(_) | Self::Database(_) => {
                ErrorKind::Internal
            }
            Self::Shared(inner) => inner.kind(),
        }
    }
}

impl From<std::sync::Arc<StoreError>> for StoreError {
    fn from(shared: std::sync::Arc<StoreError>) -> Self {
        Self::Shared(shared)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_connection_failure(&e) {
            connections_broken_now();
            return Self::ConnectionLost(e.to_string());
        }
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Self::Unavailable(e.to_string()),
            // 23001 restrict_violation: a trigger refusing a change that
            // something depends on (e.g. retiring a version in use).
            sqlx::Error::Database(db)
                if db.is_unique_violation()
                    || db.is_foreign_key_violation()
                    || db.code().is_some_and(|c| c == "23001") =>
            {
                Self::Conflict(db.message().to_owned())
            }
            // 57014: statement_timeout cancelled the query; 53300: too many
            // connections; 53xxx: out of resources.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c == "57014" || c.starts_with("53")) =>
            {
                Self::Unavailable(db.message().to_owned())
            }
            _ => Self::Database(e),
        }
    }
}

/// Whether `e` means the connection (or the server behind it) is gone: I/O
/// and protocol failures, SQLSTATE class 08 (connection exception) and
/// 57P01-57P03 (the server shut down or is starting). Such errors make every
/// pooled connection suspect: see [`connections_broken_now`].
#[must_use]
pub fn is_connection_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// When (ms since the Unix epoch) a connection last failed. A pooled
/// connection opened before that instant is closed instead of being handed
/// out (see [`connect_lazy`]): after a Postgres restart, one failure retires
/// every stale connection, so the requests that follow never meet one.
static CONNECTIONS_BROKEN_AT_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Milliseconds on a monotonic clock started with the process (at least 1,
/// so 0 keeps meaning "never"): connection ages are compared on it, and no
/// wall-clock step can retire or keep a connection by mistake.
fn monotonic_ms() -> u64 {
    static STARTED: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    u64::try_from(STARTED.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

fn connections_broken_now() {
    CONNECTIONS_BROKEN_AT_MS.store(monotonic_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// Runs a read, and once more if it failed because its connection was
/// stale (the first failure retired the pool's other old connections, so
/// the second try gets a fresh one). Only for reads: a write that failed
/// mid-flight may have committed.
pub async fn read_retrying<T, F, Fut>(mut read: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    match read().await {
        Err(e) if is_connection_failure(&e) => {
            connections_broken_now();
            metrics::counter!("gatehouse_db_read_retries_total").increment(1);
            tracing::debug!(error = %e, "read failed on a stale connection; retrying once");
            Ok(read().await?)
        }
        other => Ok(other?),
    }
}

/// How to reach Postgres and how long to wait for it.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Parsed connection options (from `DATABASE_URL`).
    pub connect: PgConnectOptions,
    /// Upper bound of pooled connections per process.
    pub max_connections: u32,
    /// How long a caller waits for a free connection (or a new one) before failing.
    pub acquire_timeout: Duration,
    /// Server-side cap on any one statement, so a stuck query cannot hold a
    /// connection (and a request) forever.
    pub statement_timeout: Duration,
}

impl DbSettings {
    /// Parses a `postgres://` URL with default pool settings.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::InvalidUrl(
                "must start with postgres:// or postgresql://".to_owned(),
            ));
        }
        let connect =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        Ok(Self {
            connect,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
        })
    }
}

/// Opens a pool and checks that Postgres answers, within `acquire_timeout`.
pub async fn connect(settings: &DbSettings) -> Result<PgPool, StoreError> {
    let pool = connect_lazy(settings);
    ping(&pool).await?;
    Ok(pool)
}

/// Builds a pool that connects on first use; start-up that must not block on
/// Postgres uses this and lets `/readyz` report the state.
#[must_use]
pub fn connect_lazy(settings: &DbSettings) -> PgPool {
    let statement_timeout = settings.statement_timeout.as_millis().to_string();
    let connect = settings
        .connect
        .clone()
        .application_name("gatehouse")
        .options([("statement_timeout", statement_timeout.as_str())]);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        // A connection opened before the last connection failure is closed
        // rather than used: no per-acquire ping, yet no stale connection
        // after a restart (the first failure retires them all).
        .before_acquire(|_conn, meta| {
            Box::pin(async move {
                let broken_at = CONNECTIONS_BROKEN_AT_MS.load(std::sync::atomic::Ordering::Relaxed);
                let opened_at = monotonic_ms()
                    .saturating_sub(u64::try_from(meta.age.as_millis()).unwrap_or(u64::MAX));
                Ok(broken_at == 0 || opened_at > broken_at)
            })
        })
        .connect_lazy_with(connect)
}

/// One `SELECT 1`: the readiness probe for Postgres.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await?;
    Ok(())
}

/// Applies every pending migration; safe to run concurrently from several
/// processes (sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
