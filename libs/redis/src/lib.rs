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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use redis;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest as _, Sha256};

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL could not be parsed.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// The call did not finish in time.
    #[error("redis timed out after {0:?}")]
    Timeout(Duration),
    /// Redis refused the command or the connection failed.
    #[error("redis error: {0}")]
    Command(#[from] redis::RedisError),
}

/// Connection and deadline settings for one Redis role (state or cache).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:pass@]host:port[/db]`.
    pub url: String,
    /// Multiplexed connections per process (each carries many requests at once).
    pub connections: usize,
    /// Deadline for one call (one or more commands).
    pub command_timeout: Duration,
    /// Deadline for opening a connection.
    pub connect_timeout: Duration,
}

impl RedisSettings {
    /// Settings for `url` with defaults suited to a gateway on the same network.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connections: 4,
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

/// A few multiplexed, self-reconnecting Redis connections used round-robin,
/// where every call is bounded by a deadline.
///
/// Why not a classic pool (deadpool-redis): its check-out sends a `PING` each
/// time a connection is recycled, an extra round trip on every call (measured:
/// a validation cost ~2x a bare PING). A multiplexed connection needs no
/// check-out: concurrent callers share it, and it reconnects on its own after
/// Redis comes back.
#[derive(Clone)]
pub struct RedisPool {
    client: redis::Client,
    connect_timeout: Duration,
    connections: Arc<[ConnectionManager]>,
    next: Arc<AtomicUsize>,
    command_timeout: Duration,
    /// Held while every connection is pinged after one was found dropped;
    /// calls wait for it, so none is sent on a connection known to be dead.
    healing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("connections", &self.connections.len())
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisPool {
    /// Builds the connections without connecting (they connect on first use
    /// and reconnect after failures with a capped backoff). Must be called
    /// inside a Tokio runtime: the connections run background tasks.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        let parsed =
            url::Url::parse(&settings.url).map_err(|e| RedisError::InvalidUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "redis" | "rediss" | "unix" | "redis+unix") {
            return Err(RedisError::InvalidUrl(format!(
                "scheme {:?} is not redis://",
                parsed.scheme()
            )));
        }
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| RedisError::InvalidUrl(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let connections = (0..settings.connections.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            client,
            connect_timeout: settings.connect_timeout,
            connections: connections.into(),
            next: Arc::new(AtomicUsize::new(0)),
            command_timeout: settings.command_timeout,
            healing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Runs `f` with one of the connections; the whole call must finish
    /// within the command timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        self.wait_for_healing().await;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let conn = self.connections[index].clone();
        match tokio::time::timeout(self.command_timeout, f(conn)).await {
            Ok(Err(e)) => {
                if e.is_connection_dropped() {
                    self.heal_in_background();
                }
                Err(RedisError::from(e))
            }
            Ok(Ok(value)) => Ok(value),
            Err(_) => Err(RedisError::Timeout(self.command_timeout)),
        }
    }

    /// [`RedisPool::run`] for a command that is safe to send twice (a read,
    /// or a write whose repeat changes nothing): when the connection turns
    /// out to have been dropped (Redis restarted), the command is sent once
    /// more on the reconnected connection, so the restart costs this caller
    /// nothing. Every other pooled connection is pinged in the background at
    /// the same moment, so none is left for a later request to discover.
    pub async fn run_idempotent<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        self.wait_for_healing().await;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let deadline = tokio::time::Instant::now() + self.command_timeout;
        let first = tokio::time::timeout_at(deadline, f(self.connections[index].clone())).await;
        match first {
            Ok(Err(e)) if e.is_connection_dropped() => {
                self.heal_in_background();
                metrics::counter!("gatehouse_redis_retries_total").increment(1);
                match tokio::time::timeout_at(deadline, f(self.connections[index].clone())).await {
                    Ok(result) => result.map_err(RedisError::from),
                    Err(_) => Err(RedisError::Timeout(self.command_timeout)),
                }
            }
            Ok(result) => result.map_err(RedisError::from),
            Err(_) => Err(RedisError::Timeout(self.command_timeout)),
        }
    }

    /// Pings every pooled connection once, off the request path: a dropped
    /// connection reconnects now instead of failing the next request on it.
    fn heal_in_background(&self) {
        // Taken before the task starts, so the very next call already waits.
        let Ok(guard) = Arc::clone(&self.healing).try_lock_owned() else {
            return; // already healing
        };
        let pool = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let healthy = pool.warm_up_each().await;
            tracing::info!(
                healthy,
                of = pool.connections.len(),
                "redis connections re-checked after a drop"
            );
        });
    }

    /// Waits (at most one command timeout) while connections are re-checked.
    async fn wait_for_healing(&self) {
        if self.healing.try_lock().is_err() {
            let _ = tokio::time::timeout(self.command_timeout, self.healing.lock()).await;
        }
    }

    /// Pings every connection; one whose ping finds it dropped is pinged
    /// once more, over the connection it reconnected. Returns how many answer.
    async fn warm_up_each(&self) -> usize {
        let mut healthy = 0;
        for conn in self.connections.iter() {
            for _ in 0..2 {
                let mut conn = conn.clone();
                let ping = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
                match tokio::time::timeout(self.command_timeout, ping).await {
                    Ok(Ok(_)) => {
                        healthy += 1;
                        break;
                    }
                    Ok(Err(e)) if e.is_connection_dropped() => {}
                    _ => break,
                }
            }
        }
        healthy
    }

    /// A connection of its own, with no response deadline, for blocking
    /// commands (`XREAD BLOCK`) that would stall the shared connections.
    pub async fn dedicated(&self) -> Result<redis::aio::MultiplexedConnection, RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        match tokio::time::timeout(
            self.connect_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(result) => result.map_err(RedisError::from),
            Err(_) => Err(RedisError::Timeout(self.connect_timeout)),
        }
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

    /// Pings every connection once, so none pays its connect on a request
    /// (start-up calls this; a lazily connecting connection would otherwise
    /// spend its first caller's deadline on the TCP handshake).
    pub async fn warm_up(&self) -> Result<(), RedisError> {
        for conn in self.connections.iter() {
            let mut conn = conn.clone();
            let ping = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
            match tokio::time::timeout(self.command_timeout, ping).await {
                Ok(result) => {
                    result?;
                }
                Err(_) => return Err(RedisError::Timeout(self.command_timeout)),
            }
        }
        Ok(())
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

    /// A key of the event stream's slot: `<prefix>{ev}:<rest>`. The stream
    /// and every key written together with an event (deny lists) share it,
    /// so one script can write both atomically.
    #[must_use]
    pub fn events_key(&self, rest: &str) -> String {
        format!("{}{{ev}}:{rest}", self.prefix)
    }

    /// A key outside any tag, for process-wide data.
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
