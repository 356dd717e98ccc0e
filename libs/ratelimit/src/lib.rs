//! Login throttling shared by every gateway instance.
//!
//! Algorithm: **sliding-window logs** in Redis sorted sets (one member per
//! attempt, scored by time). Counting and deciding happen in one Lua script,
//! so concurrent attempts can never be granted more than the limit, and there
//! is no fixed-window boundary burst. The answer is exact up to the clock skew
//! between gateway instances (the time comes from the caller's [`Clock`]).
//! Memory is one sorted-set member per attempt inside the window, bounded by
//! the limit (refused attempts are not recorded).
//!
//! Limits (values per tenant, see [`LoginLimits`]): failures per (username,
//! IP) pair, failures per username (every failure, from any address) with
//! exponential backoff, attempts per client IP (IPv6 by /64; one window shared
//! by every tenant, checked against the tenant's maximum) and a per-tenant
//! ceiling. An allowed attempt is counted as a failure until it succeeds, so
//! attempts in flight cannot slip past the limit. Success resets the pair
//! counter (not the IP counter) and withdraws the attempt from the username
//! count.
//!
//! Lockout rule: the username limit bounds guessing against one account from
//! any number of addresses (20 failures an hour by default, backoff after 5).
//! So that neither an attacker hammering a username nor a flood against the
//! whole tenant can lock the real user out, an attempt presenting a
//! *known-device* proof (signed at an earlier successful sign-in of that user,
//! bound to their credential epoch; the gateway checks it) skips the username
//! limit and the tenant ceiling, limited only by its own pair and IP limits.
//!
//! Redis calls have a short deadline behind a breaker: after a failure the
//! breaker opens for a while and decisions come from in-process limits with
//! each limit divided by the expected number of instances — failure logs for
//! the pair and username (a success still resets them), `governor` for the IP
//! and tenant — never "no limit", never an error.
//!
//! Architecture invariant: every key is built by [`gatehouse_redis::Keyspace`];
//! usernames and IPs are hashed before they enter a key; scripts get keys only
//! through `KEYS`.

mod breaker;
mod fallback;
mod limits;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Clock;
use gatehouse_redis::redis::{self, Script};
use gatehouse_redis::{Keyspace, RedisPool};
use uuid::Uuid;

pub use breaker::Breaker;
pub use fallback::Fallback;
pub use limits::{LimitsError, LoginLimits, UsernameLimit, Window};

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Failures for this (username, IP) pair.
    Pair,
    /// Failures for this username.
    Username,
    /// Attempts from this client IP.
    Ip,
    /// Attempts for this tenant.
    Tenant,
}

impl LimitKind {
    /// Stable label for metrics and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pair => "pair",
            Self::Username => "username",
            Self::Ip => "ip",
            Self::Tenant => "tenant",
        }
    }
}

/// One login attempt, as the throttle sees it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Tenant signing into.
    pub tenant_id: Uuid,
    /// Normalised username (never used raw in a key).
    pub username: String,
    /// Client IP after trusted-proxy resolution.
    pub ip: IpAddr,
    /// Whether the client proved it is a device this user signed in from before.
    pub known_device: bool,
}

/// An allowed attempt's reservation; report its outcome with it.
#[derive(Debug, Clone)]
pub struct Ticket {
    id: String,
    /// Whether this decision came from the in-process fallback.
    pub fallback: bool,
}

/// An allowed attempt's reservation that cannot leak. Report the verdict
/// with [`Reservation::succeeded`] or [`Reservation::failed`]; dropped
/// without one (the client went away and its request future was cancelled,
/// or an error ended the attempt) it is withdrawn in the background, so a
/// cancelled request never leaves a phantom failure against the username.
#[derive(Debug)]
pub struct Reservation {
    throttle: Throttle,
    attempt: Attempt,
    ticket: Option<Ticket>,
}

impl Reservation {
    /// The password checked out: reset the pair, take the attempt back.
    pub async fn succeeded(mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.throttle.succeeded(&self.attempt, &ticket).await;
        }
    }

    /// The password was wrong: the attempt stays counted as a failure.
    pub fn failed(mut self) {
        self.ticket = None;
    }

    /// No verdict (overload, outage): take the reservation back now.
    pub async fn withdraw(mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.throttle.withdraw(&self.attempt, &ticket).await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (throttle, attempt) = (self.throttle.clone(), self.attempt.clone());
            runtime.spawn(async move { throttle.withdraw(&attempt, &ticket).await });
        }
    }
}

/// The throttle's answer.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Go ahead; report the outcome with the ticket.
    Allowed(Ticket),
    /// Refused; retry after the given time.
    Throttled {
        /// Which limit.
        limit: LimitKind,
        /// When a retry may succeed.
        retry_after: Duration,
    },
}

/// A current lockout, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lockout {
    /// Opaque id to clear it with (`pair:<hash>` or `user:<hash>`).
    pub id: String,
    /// `pair` or `username`.
    pub kind: String,
    /// Normalised username.
    pub username: String,
    /// Client IP (pair lockouts only).
    pub ip: Option<String>,
    /// Unix time (ms) the lockout ends at, as of the last refused attempt.
    pub until_ms: i64,
}

/// Failures of the lockout admin operations (the login path never fails).
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// Redis could not answer.
    #[error(transparent)]
    Redis(#[from] gatehouse_redis::RedisError),
}

/// Settings of the throttle itself (not the per-tenant limits).
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    /// Deadline of one throttle decision in Redis.
    pub redis_timeout: Duration,
    /// How long the breaker stays open after a Redis failure.
    pub breaker_open_for: Duration,
    /// Gateway instances expected to share the limits; the fallback divides
    /// each limit by this.
    pub expected_instances: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            redis_timeout: Duration::from_millis(150),
            breaker_open_for: Duration::from_secs(5),
            expected_instances: 1,
        }
    }
}

struct Scripts {
    ip: Script,
    login: Script,
    success: Script,
}

/// The login throttle.
#[derive(Clone)]
pub struct Throttle {
    redis: RedisPool,
    keys: Keyspace,
    clock: Arc<dyn Clock>,
    breaker: Arc<Breaker>,
    fallback: Arc<Fallback>,
    settings: ThrottleSettings,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The bucket an IP is limited in: the address for IPv4 (and IPv4-mapped
/// IPv6), the /64 network for IPv6 (one subscriber usually holds a /64).
#[must_use]
pub fn ip_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                v4.to_string()
            } else {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        }
    }
}

/// Every key one attempt touches: the client IP's window in the IP's own
/// hash slot (shared by every tenant), the rest in the tenant's.
struct AttemptKeys {
    pair: String,
    user: String,
    ip: String,
    tenant: String,
    locks: String,
    pair_details: String,
    user_details: String,
    pair_lock_id: String,
    user_lock_id: String,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds to whole seconds, rounded up (a client told "1 s" for 1.9 s
/// would retry too early).
fn ceil_duration(ms: i64) -> Duration {
    let ms = u64::try_from(ms.max(1)).unwrap_or(1);
    Duration::from_secs(ms.div_ceil(1000))
}

impl Throttle {
    /// A throttle over `redis`; each call has its own `settings.redis_timeout`.
    #[must_use]
    pub fn new(
        redis: RedisPool,
        keys: Keyspace,
        clock: Arc<dyn Clock>,
        settings: ThrottleSettings,
    ) -> Self {
        Self {
            redis,
            keys,
            clock,
            breaker: Arc::new(Breaker::new(settings.breaker_open_for)),
            fallback: Arc::new(Fallback::new(settings.expected_instances)),
            settings,
            scripts: Arc::new(Scripts {
                ip: Script::new(include_str!("../../../lua/throttle_ip.lua")),
                login: Script::new(include_str!("../../../lua/throttle_login.lua")),
                success: Script::new(include_str!("../../../lua/throttle_success.lua")),
            }),
        }
    }

    fn tenant_tag(tenant_id: Uuid) -> String {
        tenant_id.simple().to_string()
    }

    fn lock_details_key(&self, tenant: &str, lock_id: &str) -> String {
        self.keys
            .tenant_key(tenant, &format!("rl:lockinfo:{lock_id}"))
    }

    fn keys_for(&self, attempt: &Attempt) -> AttemptKeys {
        let tenant = Self::tenant_tag(attempt.tenant_id);
        let bucket = ip_bucket(attempt.ip);
        let user_hash = Keyspace::digest(&attempt.username);
        let pair_hash = Keyspace::digest(&format!("{}\u{0}{bucket}", attempt.username));
        let pair_lock_id = format!("pair:{pair_hash}");
        let user_lock_id = format!("user:{user_hash}");
        AttemptKeys {
            pair: self.keys.tenant_key(&tenant, &format!("rl:{pair_lock_id}")),
            user: self.keys.tenant_key(&tenant, &format!("rl:{user_lock_id}")),
            ip: self.keys.ip_key(&bucket, "rl:login"),
            tenant: self.keys.tenant_key(&tenant, "rl:all"),
            locks: self.keys.tenant_key(&tenant, "rl:locks"),
            pair_details: self.lock_details_key(&tenant, &pair_lock_id),
            user_details: self.lock_details_key(&tenant, &user_lock_id),
            pair_lock_id,
            user_lock_id,
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Runs a throttle Redis call with the throttle's own deadline.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, gatehouse_redis::RedisError>>,
    ) -> Result<T, gatehouse_redis::RedisError> {
        tokio::time::timeout(self.settings.redis_timeout, call)
            .await
            .map_err(|_| gatehouse_redis::RedisError::Timeout(self.settings.redis_timeout))?
    }

    /// Decides an attempt and, when allowed, reserves it. Never fails: if
    /// Redis cannot answer in time, the in-process fallback decides.
    pub async fn begin(&self, attempt: &Attempt, limits: &LoginLimits) -> Decision {
        metrics::counter!("gatehouse_login_throttle_attempts_total").increment(1);
        let id = Uuid::new_v4().simple().to_string();
        let decision = if self.breaker.allow_request() {
            match self
                .bounded(self.begin_in_redis(attempt, limits, &id))
                .await
            {
                Ok(decision) => {
                    self.breaker.record_success();
                    decision
                }
                Err(e) => {
                    tracing::warn!(error = %e, "login throttle falling back to in-process limits");
                    self.breaker.record_failure();
                    self.fallback_decision(attempt, limits, id)
                }
            }
        } else {
            self.fallback_decision(attempt, limits, id)
        };
        if let Decision::Throttled { limit, .. } = &decision {
            metrics::counter!("gatehouse_login_throttled_total", "limit" => limit.as_str())
                .increment(1);
        }
        decision
    }

    /// [`Throttle::begin`], with the allowance as a [`Reservation`] that is
    /// withdrawn if dropped without a verdict; `Err` is the limit that refused
    /// and when to retry.
    pub async fn reserve(
        &self,
        attempt: &Attempt,
        limits: &LoginLimits,
    ) -> Result<Reservation, (LimitKind, Duration)> {
        match self.begin(attempt, limits).await {
            Decision::Allowed(ticket) => Ok(Reservation {
                throttle: self.clone(),
                attempt: attempt.clone(),
                ticket: Some(ticket),
            }),
            Decision::Throttled { limit, retry_after } => Err((limit, retry_after)),
        }
    }

    fn fallback_decision(&self, attempt: &Attempt, limits: &LoginLimits, id: String) -> Decision {
        metrics::counter!("gatehouse_login_throttle_fallback_total").increment(1);
        match self.fallback.check(attempt, limits, &id) {
            None => Decision::Allowed(Ticket { id, fallback: true }),
            Some((limit, retry_after)) => Decision::Throttled { limit, retry_after },
        }
    }

    async fn begin_in_redis(
        &self,
        attempt: &Attempt,
        limits: &LoginLimits,
        id: &str,
    ) -> Result<Decision, gatehouse_redis::RedisError> {
        let keys = self.keys_for(attempt);
        let now = self.now_ms();
        let details = |kind: &str, ip: Option<String>| {
            serde_json::json!({ "kind": kind, "username": attempt.username, "ip": ip }).to_string()
        };
        let pair_details = details("pair", Some(ip_bucket(attempt.ip)));
        let user_details = details("username", None);
        let username_window =
            i64::try_from(limits.username.window_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        // The client IP's window first (its own slot, so its own call):
        // an address over its limit costs the tenant's keys nothing.
        let (ip_allowed, ip_retry): (i64, i64) = {
            let (scripts, key, id) = (self.scripts.clone(), keys.ip.clone(), id.to_owned());
            self.redis
                .run(|mut conn| async move {
                    scripts
                        .ip
                        .key(&key)
                        .arg(now)
                        .arg(&id)
                        .arg(limits.ip.max)
                        .arg(ms(limits.ip.window()))
                        .invoke_async(&mut conn)
                        .await
                })
                .await?
        };
        if ip_allowed != 1 {
            return Ok(Decision::Throttled {
                limit: LimitKind::Ip,
                retry_after: ceil_duration(ip_retry),
            });
        }
        let scripts = self.scripts.clone();
        let known = if attempt.known_device { "1" } else { "0" };
        let ip_key = keys.ip.clone();
        let (allowed, retry, limit) = self
            .redis
            .run(|mut conn| async move {
                scripts
                    .login
                    .key(&keys.pair)
                    .key(&keys.user)
                    .key(&keys.tenant)
                    .key(&keys.locks)
                    .key(&keys.pair_details)
                    .key(&keys.user_details)
                    .arg(now)
                    .arg(id)
                    .arg(limits.pair.max)
                    .arg(ms(limits.pair.window()))
                    .arg(limits.username.max)
                    .arg(username_window)
                    .arg(limits.username.free_failures)
                    .arg(limits.username.backoff_base_ms)
                    .arg(limits.username.backoff_cap_ms)
                    .arg(known)
                    .arg(limits.tenant.max)
                    .arg(ms(limits.tenant.window()))
                    .arg(&keys.pair_lock_id)
                    .arg(&keys.user_lock_id)
                    .arg(&pair_details)
                    .arg(&user_details)
                    .invoke_async::<(i64, i64, String)>(&mut conn)
                    .await
            })
            .await?;
        if allowed != 1 {
            // Refused attempts are recorded nowhere: take the IP entry back.
            let (key, id) = (ip_key, id.to_owned());
            self.redis
                .run(|mut conn| async move {
                    redis::cmd("ZREM")
                        .arg(&key)
                        .arg(&id)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await?;
        }
        if allowed == 1 {
            return Ok(Decision::Allowed(Ticket {
                id: id.to_owned(),
                fallback: false,
            }));
        }
        let limit = match limit.as_str() {
            "pair" => LimitKind::Pair,
            "username" => LimitKind::Username,
            _ => LimitKind::Tenant,
        };
        if matches!(limit, LimitKind::Pair | LimitKind::Username) {
            metrics::counter!("gatehouse_login_lockouts_total", "limit" => limit.as_str())
                .increment(1);
        }
        Ok(Decision::Throttled {
            limit,
            retry_after: ceil_duration(retry),
        })
    }

    /// The attempt succeeded: reset the pair counter (not the IP counter) and
    /// take this attempt out of the username window.
    pub async fn succeeded(&self, attempt: &Attempt, ticket: &Ticket) {
        if ticket.fallback {
            self.fallback.succeeded(attempt, &ticket.id);
            return;
        }
        if !self.breaker.allow_request() {
            return;
        }
        let keys = self.keys_for(attempt);
        let scripts = self.scripts.clone();
        let run = self.redis.run(|mut conn| async move {
            scripts
                .success
                .key(&keys.pair)
                .key(&keys.user)
                .key(&keys.locks)
                .key(&keys.pair_details)
                .arg(&ticket.id)
                .arg(&keys.pair_lock_id)
                .invoke_async::<i64>(&mut conn)
                .await
        });
        match self.bounded(run).await {
            Ok(_) => self.breaker.record_success(),
            Err(e) => {
                self.breaker.record_failure();
                tracing::warn!(error = %e, "could not reset the login throttle after a success");
            }
        }
    }

    /// The attempt ended without a verdict on the password (overload, outage):
    /// take its reservation back from the pair and username windows, so users
    /// are not penalised for our trouble. The IP and tenant counts stay.
    pub async fn withdraw(&self, attempt: &Attempt, ticket: &Ticket) {
        if ticket.fallback {
            self.fallback.withdraw(attempt, &ticket.id);
            return;
        }
        if !self.breaker.allow_request() {
            return;
        }
        let keys = self.keys_for(attempt);
        let id = ticket.id.clone();
        let run = self.redis.run(|mut conn| async move {
            redis::pipe()
                .cmd("ZREM")
                .arg(&keys.pair)
                .arg(&id)
                .ignore()
                .cmd("ZREM")
                .arg(&keys.user)
                .arg(&id)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        });
        if let Err(e) = self.bounded(run).await {
            self.breaker.record_failure();
            tracing::warn!(error = %e, "could not withdraw a login throttle reservation");
        }
    }

    /// Current pair and username lockouts of a tenant.
    pub async fn lockouts(&self, tenant_id: Uuid) -> Result<Vec<Lockout>, ThrottleError> {
        let tenant = Self::tenant_tag(tenant_id);
        let locks = self.keys.tenant_key(&tenant, "rl:locks");
        let now = self.now_ms();
        let entries: Vec<(String, i64)> = self
            .redis
            .run(|mut conn| async move {
                redis::cmd("ZRANGE")
                    .arg(&locks)
                    .arg(now)
                    .arg("+inf")
                    .arg("BYSCORE")
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let detail_keys: Vec<String> = entries
            .iter()
            .map(|(id, _)| self.lock_details_key(&tenant, id))
            .collect();
        let infos: Vec<Option<String>> = self
            .redis
            .run(|mut conn| async move {
                redis::cmd("MGET")
                    .arg(&detail_keys)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(entries
            .into_iter()
            .zip(infos)
            .filter_map(|((id, until_ms), info)| {
                let info: serde_json::Value = serde_json::from_str(&info?).ok()?;
                Some(Lockout {
                    kind: info["kind"].as_str()?.to_owned(),
                    username: info["username"].as_str()?.to_owned(),
                    ip: info["ip"].as_str().map(str::to_owned),
                    id,
                    until_ms,
                })
            })
            .collect())
    }

    /// Clears one lockout so the user can sign in again: a pair lockout
    /// clears that pair's failures *and* the username's (the backoff would
    /// otherwise still hold them), a username lockout the username's. Returns
    /// false when there is no such lockout.
    pub async fn clear(&self, tenant_id: Uuid, lockout_id: &str) -> Result<bool, ThrottleError> {
        let valid = lockout_id.split_once(':').is_some_and(|(kind, hash)| {
            matches!(kind, "pair" | "user")
                && hash.len() == 32
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if !valid {
            return Ok(false);
        }
        let tenant = Self::tenant_tag(tenant_id);
        let locks = self.keys.tenant_key(&tenant, "rl:locks");
        let details_key = self.lock_details_key(&tenant, lockout_id);
        let info: Option<String> = {
            let details_key = details_key.clone();
            self.redis
                .run(|mut conn| async move {
                    redis::cmd("GET")
                        .arg(&details_key)
                        .query_async(&mut conn)
                        .await
                })
                .await?
        };
        let Some(info) = info else {
            return Ok(false);
        };
        let username = serde_json::from_str::<serde_json::Value>(&info)
            .ok()
            .and_then(|v| v["username"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let user_lock_id = format!("user:{}", Keyspace::digest(&username));
        let mut ids = vec![lockout_id.to_owned()];
        let mut doomed = vec![
            self.keys.tenant_key(&tenant, &format!("rl:{lockout_id}")),
            details_key,
        ];
        if lockout_id != user_lock_id {
            doomed.push(self.keys.tenant_key(&tenant, &format!("rl:{user_lock_id}")));
            doomed.push(self.lock_details_key(&tenant, &user_lock_id));
            ids.push(user_lock_id);
        }
        let (removed,): (i64,) = self
            .redis
            .run(|mut conn| async move {
                redis::pipe()
                    .cmd("ZREM")
                    .arg(&locks)
                    .arg(&ids)
                    .cmd("DEL")
                    .arg(&doomed)
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(removed >= 1)
    }
}
