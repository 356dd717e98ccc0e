//! Instance selection and outcomes in Redis, one Lua script per strategy.
//!
//! Every key of a service shares its hash tag (`{svc:<name>}`), so each script
//! touches one Redis Cluster slot; keys arrive through `KEYS`, never built in
//! Lua. Scripts are sent by SHA (`EVALSHA`) and loaded again when Redis
//! answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
//!
//! Live state, per service:
//! - `rollouts` HASH: tenant id → [`Rule`] (`*`: the default);
//! - `instances` HASH: instance id → `version|weight|address`;
//! - `alive` ZSET: instance id → heartbeat deadline (ms): an instance that
//!   misses its heartbeats drops out of selection by itself;
//! - `breakers` HASH: consecutive failures, open-until, ejections, next
//!   half-open probe and health (1-100) per instance;
//! - one state key per strategy (round-robin counters, smooth-WRR current
//!   weights, least-connections leases) and the in-flight counts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_redis::{Keyspace, RedisError, RedisPool};

use crate::canary::VersionStats;
use crate::rollout::Rule;

/// What Redis last said about a service's instances (read here, used by the
/// in-memory chooser in [`crate::local`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthView {
    /// Instances whose heartbeat deadline has not passed (static ones too).
    pub alive: HashSet<String>,
    /// Instance → open-until (ms) for breakers that are open.
    pub open_until: HashMap<String, u64>,
    /// Instance → health 1-100 (absent: 100).
    pub health: HashMap<String, u8>,
}

/// How a version's instance is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// One after the other.
    RoundRobin,
    /// Smooth weighted round robin (nginx's): exact shares, evenly spread.
    Weighted,
    /// Fewest open requests per unit of weight (leases that expire).
    LeastConnections,
    /// Weighted random, weights scaled by health.
    Random,
    /// Consistent hashing by user (rendezvous): sticky upstreams.
    UserHash,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Self; 5] = [
        Self::RoundRobin,
        Self::Weighted,
        Self::LeastConnections,
        Self::Random,
        Self::UserHash,
    ];

    /// The name in configuration, the admin API and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::LeastConnections => "least_connections",
            Self::Random => "random",
            Self::UserHash => "user_hash",
        }
    }

    /// Reads [`Strategy::as_str`]'s names.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The strategy's script body (after `route_common.lua`).
    fn body(self) -> &'static str {
        match self {
            Self::RoundRobin => include_str!("../../../lua/route_pick_round_robin.lua"),
            Self::Weighted => include_str!("../../../lua/route_pick_weighted.lua"),
            Self::LeastConnections => include_str!("../../../lua/route_pick_least_conn.lua"),
            Self::Random => include_str!("../../../lua/route_pick_random.lua"),
            Self::UserHash => include_str!("../../../lua/route_pick_hash.lua"),
        }
    }

    /// The name of the key holding the strategy's own state.
    fn state_key(self) -> &'static str {
        match self {
            Self::RoundRobin => "rr",
            Self::Weighted => "wrr",
            Self::LeastConnections => "leases",
            Self::Random | Self::UserHash => "none",
        }
    }
}

const RESOLVE: &str = include_str!("../../../lua/route_resolve.lua");
const COMMON: &str = include_str!("../../../lua/route_common.lua");
const VERSION: &str = include_str!("../../../lua/route_version.lua");
const OUTCOME: &str = include_str!("../../../lua/route_outcome.lua");
const MIRROR: &str = include_str!("../../../lua/route_mirror.lua");

/// The deadline static instances get in the live set: far enough to never
/// lapse (they leave by deregistration), finite so the score stays a number.
const STATIC_DEADLINE_MS: u64 = 32_503_680_000_000; // year 3000

/// One instance as mirrored from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredInstance {
    /// Instance id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Relative weight (0: never picked).
    pub weight: u32,
    /// `host:port`.
    pub address: String,
    /// Alive until deregistered (no heartbeats expected).
    pub is_static: bool,
}

/// Breaker thresholds (defaults: 5 failures, 30 s × ejections up to 5 min,
/// one half-open probe per second).
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// Cool-down of the first ejection; the n-th lasts n times as long.
    pub base_cooldown: Duration,
    /// The longest cool-down.
    pub max_cooldown: Duration,
    /// While half-open, one request per this interval is let through.
    pub probe_interval: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            base_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// Selection settings.
#[derive(Debug, Clone)]
pub struct SelectSettings {
    /// A least-connections lease expires after this (a gateway that died
    /// mid-request stops counting against the instance then).
    pub lease_ttl: Duration,
    /// When fewer than this percentage of a version's live instances are
    /// healthy, every live one is used (panic mode; 0 turns it off).
    pub panic_percent: u8,
    /// Breakers.
    pub breaker: BreakerSettings,
}

impl Default for SelectSettings {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(60),
            panic_percent: 50,
            breaker: BreakerSettings::default(),
        }
    }
}

/// Why routing could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// Redis failed or timed out.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A script answered something this build does not understand.
    #[error("unexpected routing answer: {0}")]
    Answer(String),
}

/// One request to route.
#[derive(Debug, Clone)]
pub struct PickRequest<'a> {
    /// The service (a validated name).
    pub service: &'a str,
    /// How to choose among the version's instances.
    pub strategy: Strategy,
    /// The caller's tenant id.
    pub tenant: &'a str,
    /// The caller's user id, when there is one.
    pub user: Option<&'a str>,
    /// A version a subject rule chose (beta testers), overriding the rollout.
    pub forced_version: Option<&'a str>,
    /// Now, in milliseconds (the gateway's clock).
    pub now_ms: u64,
    /// Open a least-connections lease (the proxy, which closes it with the
    /// outcome). An advisory answer (`/v1/routing/resolve`) opens none: it
    /// would count against the instance for a whole lease TTL.
    pub lease: bool,
    /// An instance to leave out: the proxy's retry after that one failed
    /// before the request was sent.
    pub exclude: Option<&'a str>,
}

/// Width of one statistics slot (canary analysis sums the slots of its window).
pub const STATS_SLOT_MS: u64 = 10_000;
/// How long a statistics slot is kept: the longest analysis window (1 h) and
/// one slot more.
const STATS_LIFETIME_MS: u64 = 3_600_000 + STATS_SLOT_MS;

/// Whether a pick answered `why` counts in its tenant's canary statistics:
/// only picks that the tenant's own split rule made (`tenant_rule:canary`,
/// `tenant_rule:stable`, also when picked from the local snapshot). A canary
/// is judged on the traffic of the tenant rolling it out, so no other
/// tenant's requests (or faults) can move its verdict; subject-rule and
/// default picks belong to no rollout.
#[must_use]
pub fn counts_for_canary(why: &str) -> bool {
    let why = why.strip_prefix("local:").unwrap_or(why);
    why == "tenant_rule:canary" || why == "tenant_rule:stable"
}

/// How one proxied request went.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    /// The service.
    pub service: &'a str,
    /// The instance that took it.
    pub instance: &'a str,
    /// Its version, for the statistics ('' for none).
    pub version: &'a str,
    /// The tenant whose statistics of `version` count it ('' for none): the
    /// tenant whose rollout chose the version (see [`counts_for_canary`]).
    pub tenant: &'a str,
    /// Whether it succeeded (an answer below 500).
    pub ok: bool,
    /// Until the response headers arrived (or the failure).
    pub latency: Duration,
    /// The least-connections lease to close.
    pub lease: Option<&'a str>,
    /// Now, in milliseconds.
    pub now_ms: u64,
}

/// The chosen instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// The tenant's version.
    pub version: String,
    /// The instance id.
    pub instance: String,
    /// Where to send the request.
    pub address: String,
    /// Why this version (`default`, `tenant_rule`, `tenant_rule:canary`, …).
    pub why: String,
    /// The least-connections lease to close with the outcome.
    pub lease: Option<String>,
    /// Chosen in panic mode (most instances unhealthy).
    pub panic: bool,
}

/// What a pick found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Picked {
    /// An instance.
    Instance(Pick),
    /// The version has no instance that can take the request.
    NoInstance {
        /// The tenant's version.
        version: String,
    },
    /// No rule names a version for this tenant (no default either).
    NoVersion,
}

/// A breaker after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerState {
    /// Whether it is open (or was just opened).
    pub open: bool,
    /// Whether this outcome opened it.
    pub opened_now: bool,
    /// Open until (ms), 0 when closed.
    pub open_until_ms: u64,
    /// Times ejected (decays while healthy).
    pub ejections: u32,
    /// Health, 1-100.
    pub health: u8,
}

/// A pick script's answer: version, instance, why, address, lease, panic.
type PickAnswer = (
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    i64,
);

/// The Redis side of routing: the live registry and rollouts, selection and
/// outcomes.
#[derive(Clone)]
pub struct RoutingStore {
    redis: RedisPool,
    keys: Keyspace,
    picks: Arc<[(Strategy, redis::Script)]>,
    outcome: Arc<redis::Script>,
    mirror: Arc<redis::Script>,
    version: Arc<redis::Script>,
    settings: SelectSettings,
    leases: Arc<AtomicU64>,
    lease_prefix: u32,
}

impl std::fmt::Debug for RoutingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingStore").finish_non_exhaustive()
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RoutingStore {
    /// Routing state on `redis` (the state connection), keys under `keys`.
    #[must_use]
    pub fn new(redis: RedisPool, keys: Keyspace, settings: SelectSettings) -> Self {
        let picks = Strategy::ALL
            .into_iter()
            .map(|s| {
                let source = format!("{RESOLVE}\n{COMMON}\n{}", s.body());
                (s, redis::Script::new(&source))
            })
            .collect();
        Self {
            redis,
            keys,
            picks,
            outcome: Arc::new(redis::Script::new(OUTCOME)),
            mirror: Arc::new(redis::Script::new(MIRROR)),
            version: Arc::new(redis::Script::new(&format!("{RESOLVE}\n{VERSION}"))),
            settings,
            leases: Arc::new(AtomicU64::new(0)),
            lease_prefix: rand::random(),
        }
    }

    fn key(&self, service: &str, name: &str) -> String {
        self.keys.service_key(service, name)
    }

    /// Writes (or replaces) an instance of `service`.
    pub async fn put_instance(
        &self,
        service: &str,
        instance: &str,
        version: &str,
        weight: u32,
        address: &str,
    ) -> Result<(), RoutingError> {
        let key = self.key(service, "instances");
        let value = format!("{version}|{weight}|{address}");
        self.redis
            .run(|mut conn| async move {
                redis::cmd("HSET")
                    .arg(&key)
                    .arg(instance)
                    .arg(&value)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// The instance is alive for `ttl` from `now_ms` (a heartbeat).
    pub async fn heartbeat(
        &self,
        service: &str,
        instance: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<(), RoutingError> {
        let key = self.key(service, "alive");
        let deadline = now_ms.saturating_add(ms(ttl));
        self.redis
            .run(|mut conn| async move {
                redis::cmd("ZADD")
                    .arg(&key)
                    .arg(deadline)
                    .arg(instance)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Removes an instance (deregistration): from the registry, the live set
    /// and the breaker and strategy state.
    pub async fn remove_instance(&self, service: &str, instance: &str) -> Result<(), RoutingError> {
        let keys = [
            self.key(service, "instances"),
            self.key(service, "alive"),
            self.key(service, "wrr"),
            self.key(service, "inflight"),
            self.key(service, "breakers"),
        ];
        let fields: Vec<String> = ["f", "o", "n", "p", "h"]
            .iter()
            .map(|s| format!("{instance}:{s}"))
            .collect();
        self.redis
            .run(|mut conn| async move {
                redis::pipe()
                    .atomic()
                    .hdel(&keys[0], instance)
                    .zrem(&keys[1], instance)
                    .hdel(&keys[2], instance)
                    .hdel(&keys[3], instance)
                    .hdel(&keys[4], &fields)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Sets the rule of `tenant` (`None`: the service's default).
    pub async fn set_rule(
        &self,
        service: &str,
        tenant: Option<&str>,
        rule: &Rule,
    ) -> Result<(), RoutingError> {
        let key = self.key(service, "rollouts");
        let field = tenant.unwrap_or("*");
        let value = rule.encode();
        self.redis
            .run(|mut conn| async move {
                redis::cmd("HSET")
                    .arg(&key)
                    .arg(field)
                    .arg(&value)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Removes the rule of `tenant` (`None`: the default), so the tenant
    /// follows the default again.
    pub async fn clear_rule(
        &self,
        service: &str,
        tenant: Option<&str>,
    ) -> Result<(), RoutingError> {
        let key = self.key(service, "rollouts");
        let field = tenant.unwrap_or("*");
        self.redis
            .run(|mut conn| async move {
                redis::cmd("HDEL")
                    .arg(&key)
                    .arg(field)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Replaces the mirror of `service` (every rule, every instance) in one
    /// step, unless a configuration newer than `revision` is already there
    /// (`lua/route_mirror.lua`). `rules` pairs a tenant id (`None`: the
    /// default) with its rule. Returns whether it was written.
    pub async fn mirror(
        &self,
        service: &str,
        revision: i64,
        rules: &[(Option<String>, Rule)],
        instances: &[MirroredInstance],
    ) -> Result<bool, RoutingError> {
        let keys = [
            self.key(service, "rollouts"),
            self.key(service, "instances"),
            self.key(service, "alive"),
            self.key(service, "mirror"),
        ];
        let mut invocation = self.mirror.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation.arg(revision).arg(rules.len());
        for (tenant, rule) in rules {
            invocation
                .arg(tenant.as_deref().unwrap_or("*"))
                .arg(rule.encode());
        }
        invocation.arg(instances.len());
        for instance in instances {
            invocation
                .arg(&instance.id)
                .arg(format!(
                    "{}|{}|{}",
                    instance.version, instance.weight, instance.address
                ))
                .arg(if instance.is_static { "1" } else { "0" });
        }
        invocation.arg(STATIC_DEADLINE_MS);
        let invocation = &invocation;
        let written = self
            .redis
            .run(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
            .await?;
        Ok(written == 1)
    }

    /// The tenant's version of `service` and why, choosing no instance and
    /// changing no state (`lua/route_version.lua`): `None` when no rule names
    /// one. One round trip.
    pub async fn version(
        &self,
        service: &str,
        tenant: &str,
        user: Option<&str>,
        forced_version: Option<&str>,
    ) -> Result<Option<(String, String)>, RoutingError> {
        let key = self.key(service, "rollouts");
        let mut invocation = self.version.prepare_invoke();
        invocation
            .key(&key)
            .arg(service)
            .arg(tenant)
            .arg(user.unwrap_or(""))
            .arg(forced_version.unwrap_or(""))
            .arg(0);
        let invocation = &invocation;
        let (version, why) = self
            .redis
            .run(|mut conn| async move {
                invocation
                    .invoke_async::<(Option<String>, String)>(&mut conn)
                    .await
            })
            .await?;
        Ok(version.map(|v| (v, why)))
    }

    /// Resolves the tenant's version and picks an instance: one round trip.
    pub async fn pick(&self, request: &PickRequest<'_>) -> Result<Picked, RoutingError> {
        let service = request.service;
        let script = self
            .picks
            .iter()
            .find(|(s, _)| *s == request.strategy)
            .map(|(_, script)| script)
            .ok_or_else(|| RoutingError::Answer("no script for the strategy".into()))?;
        let keys = [
            self.key(service, "rollouts"),
            self.key(service, "instances"),
            self.key(service, "alive"),
            self.key(service, "breakers"),
            self.key(service, request.strategy.state_key()),
            self.key(service, "inflight"),
        ];
        let lease_id = format!(
            "{:08x}{:x}",
            self.lease_prefix,
            self.leases.fetch_add(1, Ordering::Relaxed)
        );
        let random: u32 = rand::random();
        let settings = &self.settings;
        let mut invocation = script.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation
            .arg(service)
            .arg(request.tenant)
            .arg(request.user.unwrap_or(""))
            .arg(request.forced_version.unwrap_or(""))
            .arg(request.now_ms)
            .arg(random)
            .arg(&lease_id)
            .arg(if request.lease {
                ms(settings.lease_ttl)
            } else {
                0
            })
            .arg(settings.panic_percent)
            .arg(ms(settings.breaker.probe_interval))
            .arg(request.exclude.unwrap_or(""));
        let invocation = &invocation;
        let (version, instance, why, address, lease, panic) = self
            .redis
            .run(|mut conn| async move { invocation.invoke_async::<PickAnswer>(&mut conn).await })
            .await?;
        Ok(match (version, instance, address) {
            (None, _, _) => Picked::NoVersion,
            (Some(version), None, _) => Picked::NoInstance { version },
            (Some(version), Some(instance), Some(address)) => Picked::Instance(Pick {
                version,
                instance,
                address,
                why,
                lease,
                panic: panic == 1,
            }),
            (Some(_), Some(instance), None) => {
                return Err(RoutingError::Answer(format!(
                    "instance {instance} without an address"
                )));
            }
        })
    }

    /// Records how a request on `instance` went: closes its lease, moves its
    /// health and drives its breaker (no version statistics: see
    /// [`RoutingStore::record_request`]).
    pub async fn record(
        &self,
        service: &str,
        instance: &str,
        ok: bool,
        lease: Option<&str>,
        now_ms: u64,
    ) -> Result<BreakerState, RoutingError> {
        self.record_request(&Outcome {
            service,
            instance,
            version: "",
            tenant: "",
            ok,
            latency: Duration::ZERO,
            lease,
            now_ms,
        })
        .await
    }

    /// The key of `tenant`'s statistics slot holding `now_ms`.
    fn stats_key(&self, service: &str, tenant: &str, now_ms: u64) -> String {
        let slot = now_ms / STATS_SLOT_MS;
        self.key(service, &format!("stats:{slot}:{tenant}"))
    }

    /// Each version's counts in `tenant`'s traffic over the last `window`
    /// (whole slots of [`STATS_SLOT_MS`], the current one included): one
    /// round trip.
    pub async fn version_stats(
        &self,
        service: &str,
        tenant: &str,
        window: Duration,
        now_ms: u64,
    ) -> Result<HashMap<String, VersionStats>, RoutingError> {
        let slots = ms(window).div_ceil(STATS_SLOT_MS).max(1);
        let mut pipe = redis::pipe();
        for back in 0..slots {
            pipe.cmd("HGETALL").arg(self.stats_key(
                service,
                tenant,
                now_ms.saturating_sub(back * STATS_SLOT_MS),
            ));
        }
        let pipe = &pipe;
        let slots: Vec<HashMap<String, u64>> = self
            .redis
            .run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        let mut stats: HashMap<String, VersionStats> = HashMap::new();
        for slot in slots {
            for (field, count) in slot {
                let Some((version, what)) = field.rsplit_once(':') else {
                    continue;
                };
                let entry = stats.entry(version.to_owned()).or_default();
                match what {
                    "n" => entry.requests += count,
                    "e" => entry.errors += count,
                    _ => {
                        if let Some(bucket) = what.strip_prefix('l').and_then(|k| k.parse().ok()) {
                            *entry.latency.entry(bucket).or_default() += count;
                        }
                    }
                }
            }
        }
        Ok(stats)
    }

    /// What Redis says about `service`'s instances now (liveness, open
    /// breakers, health), for selection in the gateway's memory: one round
    /// trip.
    pub async fn health_view(
        &self,
        service: &str,
        now_ms: u64,
    ) -> Result<HealthView, RoutingError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGEBYSCORE")
            .arg(self.key(service, "alive"))
            .arg(now_ms)
            .arg("+inf")
            .cmd("HGETALL")
            .arg(self.key(service, "breakers"));
        let pipe = &pipe;
        let (alive, breakers): (Vec<String>, HashMap<String, u64>) = self
            .redis
            .run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        let mut view = HealthView {
            alive: alive.into_iter().collect(),
            ..HealthView::default()
        };
        for (field, value) in breakers {
            match field.rsplit_once(':') {
                Some((id, "o")) if value > 0 => {
                    view.open_until.insert(id.to_owned(), value);
                }
                Some((id, "h")) => {
                    view.health.insert(
                        id.to_owned(),
                        u8::try_from(value.clamp(1, 100)).unwrap_or(100),
                    );
                }
                _ => {}
            }
        }
        Ok(view)
    }

    /// Adds counts gathered in the gateway (tenant → version → counts) to
    /// each tenant's statistics slot of `now_ms` (successes batched off the
    /// request path): one round trip.
    pub async fn add_stats(
        &self,
        service: &str,
        stats: &HashMap<String, HashMap<String, VersionStats>>,
        now_ms: u64,
    ) -> Result<(), RoutingError> {
        let mut pipe = redis::pipe();
        for (tenant, by_version) in stats {
            self.add_tenant_stats(&mut pipe, service, tenant, by_version, now_ms);
        }
        if stats.is_empty() {
            return Ok(());
        }
        let pipe = &pipe;
        self.redis
            .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await?;
        Ok(())
    }

    /// Queues one tenant's counts for [`RoutingStore::add_stats`].
    fn add_tenant_stats(
        &self,
        pipe: &mut redis::Pipeline,
        service: &str,
        tenant: &str,
        stats: &HashMap<String, VersionStats>,
        now_ms: u64,
    ) {
        let key = self.stats_key(service, tenant, now_ms);
        for (version, counts) in stats {
            if counts.requests > 0 {
                pipe.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{version}:n"))
                    .arg(counts.requests)
                    .ignore();
            }
            if counts.errors > 0 {
                pipe.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{version}:e"))
                    .arg(counts.errors)
                    .ignore();
            }
            for (bucket, count) in &counts.latency {
                pipe.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{version}:l{bucket}"))
                    .arg(*count)
                    .ignore();
            }
        }
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(STATS_LIFETIME_MS)
            .ignore();
    }

    /// The settings selection runs with.
    #[must_use]
    pub fn settings(&self) -> &SelectSettings {
        &self.settings
    }

    /// Records how a proxied request went: closes its lease, moves its
    /// instance's health, drives its breaker and, when `version` is named,
    /// counts it in the version's statistics for canary analysis. One round
    /// trip.
    pub async fn record_request(
        &self,
        outcome: &Outcome<'_>,
    ) -> Result<BreakerState, RoutingError> {
        let service = outcome.service;
        let (instance, ok, lease, now_ms) =
            (outcome.instance, outcome.ok, outcome.lease, outcome.now_ms);
        let keys = [
            self.key(service, "breakers"),
            self.key(service, "leases"),
            self.key(service, "inflight"),
            self.stats_key(service, outcome.tenant, now_ms),
        ];
        let breaker = &self.settings.breaker;
        let mut invocation = self.outcome.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation
            .arg(instance)
            .arg(if ok { "1" } else { "0" })
            .arg(now_ms)
            .arg(breaker.failures)
            .arg(ms(breaker.base_cooldown))
            .arg(ms(breaker.max_cooldown))
            .arg(lease.unwrap_or(""))
            .arg(if outcome.tenant.is_empty() {
                ""
            } else {
                outcome.version
            })
            .arg(ms(outcome.latency))
            .arg(STATS_LIFETIME_MS);
        let invocation = &invocation;
        let (state, open_until, ejections, health) = self
            .redis
            .run(|mut conn| async move {
                invocation
                    .invoke_async::<(i64, i64, i64, i64)>(&mut conn)
                    .await
            })
            .await?;
        Ok(BreakerState {
            open: state != 0,
            opened_now: state == 1,
            open_until_ms: u64::try_from(open_until).unwrap_or(0),
            ejections: u32::try_from(ejections).unwrap_or(u32::MAX),
            health: u8::try_from(health.clamp(1, 100)).unwrap_or(100),
        })
    }
}
