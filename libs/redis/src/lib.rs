//! Redis access shared by every Gatehouse crate that keeps state in Redis.
//!
//! Two things live here so no other crate re-invents them:
//! - [`RedisPool`]: a connection pool where every command has a hard deadline,
//!   so a slow or dead Redis costs a bounded wait, never a hung request.
//! - [`Keyspace`]: the key naming rule. Every key is `<prefix>{<tag>}:<rest>`;
//!   the hash tag keeps all keys one Lua script touches in one Redis Cluster
//!   slot, and free text (usernames, ...) is hashed before it enters a key.
//!
//! Architecture invariant: no crate builds a Redis key by hand; it asks a
//! [`Keyspace`] for it.

use std::future::Future;
use std::time::Duration;

pub use deadpool_redis::redis;
use deadpool_redis::{Connection, Pool, PoolConfig, Runtime, Timeouts};
use sha2::{Digest as _, Sha256};

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL could not be parsed.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// No connection could be had, or the command did not finish, in time.
    #[error("redis timed out after {0:?}")]
    Timeout(Duration),
    /// Connecting failed (refused, reset, DNS, auth).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Command(#[from] redis::RedisError),
}

/// Connection and deadline settings for one Redis role (state or cache).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:pass@]host:port[/db]`.
    pub url: String,
    /// Most pooled connections per process.
    pub max_connections: usize,
    /// Deadline for one command, including waiting for a pooled connection.
    pub command_timeout: Duration,
    /// Deadline for opening a new connection.
    pub connect_timeout: Duration,
}

impl RedisSettings {
    /// Settings for `url` with defaults suited to a gateway on the same network.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 32,
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_millis(500),
        }
    }

    /// `host:port` of the URL without credentials, for log and error messages.
    #[must_use]
    pub fn redacted_address(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(u) => format!(
                "{}:{}",
                u.host_str().unwrap_or("?"),
                u.port().unwrap_or(6379)
            ),
            Err(_) => "<unparseable>".to_owned(),
        }
    }
}

/// A pool of Redis connections whose every use is bounded by a deadline.
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
    command_timeout: Duration,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("status", &self.pool.status())
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl RedisPool {
    /// Builds the pool without connecting (connections open on first use).
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        let parsed =
            url::Url::parse(&settings.url).map_err(|e| RedisError::InvalidUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "redis" | "rediss" | "unix" | "redis+unix") {
            return Err(RedisError::InvalidUrl(format!(
                "scheme {:?} is not redis://",
                parsed.scheme()
            )));
        }
        let mut config = deadpool_redis::Config::from_url(settings.url.clone());
        config.pool = Some(PoolConfig {
            max_size: settings.max_connections,
            timeouts: Timeouts {
                wait: Some(settings.command_timeout),
                create: Some(settings.connect_timeout),
                recycle: Some(settings.command_timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| RedisError::InvalidUrl(e.to_string()))?;
        Ok(Self {
            pool,
            command_timeout: settings.command_timeout,
        })
    }

    /// Runs `f` with a pooled connection; the whole call (getting a connection
    /// and the commands) must finish within the command timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let work = async {
            let conn = self.pool.get().await.map_err(|e| match e {
                deadpool_redis::PoolError::Timeout(_) => RedisError::Timeout(self.command_timeout),
                other => RedisError::Unavailable(other.to_string()),
            })?;
            f(conn).await.map_err(RedisError::from)
        };
        tokio::time::timeout(self.command_timeout, work)
            .await
            .unwrap_or(Err(RedisError::Timeout(self.command_timeout)))
    }

    /// `PING`: the readiness probe.
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.run(|mut conn| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
        })
        .await
    }

    /// Pool occupancy, for metrics.
    #[must_use]
    pub fn status(&self) -> deadpool_redis::Status {
        self.pool.status()
    }
}

/// Builds every Redis key: `<prefix>{<tag>}:<parts...>`.
///
/// The prefix separates deployments (and tests) sharing one server; the
/// `{...}` hash tag pins related keys to one cluster slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    /// A keyspace under `prefix` (e.g. `gh:`).
    #[must_use]
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The configured prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A key for tenant data: `<prefix>{t:<tenant>}:<rest>`. `tenant` must be
    /// a validated slug or id; `rest` must be built from fixed words, ids or
    /// [`Keyspace::digest`] output.
    #[must_use]
    pub fn tenant_key(&self, tenant: &str, rest: &str) -> String {
        format!("{}{{t:{tenant}}}:{rest}", self.prefix)
    }

    /// A key for routing data: `<prefix>{svc:<service>}:<rest>`.
    #[must_use]
    pub fn service_key(&self, service: &str, rest: &str) -> String {
        format!("{}{{svc:{service}}}:{rest}", self.prefix)
    }

    /// A key for per-client-IP data: `<prefix>{ip:<digest>}:<rest>`.
    #[must_use]
    pub fn ip_key(&self, ip: &str, rest: &str) -> String {
        format!("{}{{ip:{}}}:{rest}", self.prefix, Self::digest(ip))
    }

    /// A key outside any tag, for process-wide data (the event stream).
    #[must_use]
    pub fn global_key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Hex SHA-256 (first 128 bits) of free text, so user input never becomes
    /// key syntax (no `{`, `:` or unbounded length reaches Redis).
    #[must_use]
    pub fn digest(free_text: &str) -> String {
        let hash = Sha256::digest(free_text.as_bytes());
        hex::encode(&hash[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_prefix_and_hash_tag() {
        let ks = Keyspace::new("gh:");
        assert_eq!(ks.tenant_key("acme", "sess:1"), "gh:{t:acme}:sess:1");
        assert_eq!(ks.service_key("orders", "health"), "gh:{svc:orders}:health");
        assert_eq!(ks.global_key("events"), "gh:events");
    }

    #[test]
    fn free_text_is_hashed_before_it_enters_a_key() {
        let ks = Keyspace::new("gh:");
        let key = ks.ip_key("}{evil:*", "count");
        assert!(!key.contains("evil"));
        assert_eq!(key.matches('{').count(), 1);
        assert_eq!(Keyspace::digest("a").len(), 32);
        assert_eq!(Keyspace::digest("a"), Keyspace::digest("a"));
        assert_ne!(Keyspace::digest("a"), Keyspace::digest("b"));
    }

    #[test]
    fn non_redis_urls_are_refused() {
        assert!(matches!(
            RedisPool::new(&RedisSettings::new("http://127.0.0.1:6379")),
            Err(RedisError::InvalidUrl(_))
        ));
        assert!(matches!(
            RedisPool::new(&RedisSettings::new("not a url")),
            Err(RedisError::InvalidUrl(_))
        ));
    }

    #[test]
    fn redacted_address_hides_credentials() {
        let s = RedisSettings::new("redis://user:secret@10.1.2.3:6380/2");
        assert_eq!(s.redacted_address(), "10.1.2.3:6380");
    }
}
