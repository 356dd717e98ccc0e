//! Tenants' data versions: the one entry every other tenant entry is keyed by.
//!
//! A version only grows, so this cache merges with `max` at every tier: an
//! invalidation event raises the L1 entry at once ([`VersionCache::observe`]),
//! and a slow reader that loaded an older version from Postgres can never
//! lower it again, in L1 (merge under the lock) or in L2 (`lua/cache_version_max.lua`).
//! When events are lost (stream cut), the TTL bounds how long an old version
//! is served.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use metrics::Counter;
use uuid::Uuid;

use crate::{RemoteTier, Tier};

/// Lifetimes of the version cache.
#[derive(Debug, Clone)]
pub struct VersionSettings {
    /// L1 lifetime: the bound on staleness when events are lost.
    pub l1_ttl: Duration,
    /// L2 lifetime.
    pub l2_ttl: Duration,
}

impl Default for VersionSettings {
    fn default() -> Self {
        Self {
            l1_ttl: Duration::from_secs(30),
            l2_ttl: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Known {
    /// 0: no such tenant.
    version: i64,
    fetched: Instant,
}

/// The data version of each tenant, in process and in Redis.
pub struct VersionCache {
    l1: RwLock<HashMap<Uuid, Known>>,
    flights: std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    l2: Option<RemoteTier>,
    raise: Arc<redis::Script>,
    settings: VersionSettings,
    hit_l1: Counter,
    hit_l2: Counter,
    load_l3: Counter,
    clears: Counter,
}

impl std::fmt::Debug for VersionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionCache").finish_non_exhaustive()
    }
}

impl VersionCache {
    /// A version cache over `l2` (none: in process only).
    #[must_use]
    pub fn new(settings: VersionSettings, l2: Option<RemoteTier>) -> Self {
        let hit = |t: &'static str| metrics::counter!("gatehouse_cache_hits_total", "cache" => "versions", "tier" => t);
        Self {
            l1: RwLock::new(HashMap::new()),
            flights: std::sync::Mutex::new(HashMap::new()),
            l2,
            raise: Arc::new(redis::Script::new(include_str!(
                "../../../lua/cache_version_max.lua"
            ))),
            settings,
            hit_l1: hit("l1"),
            hit_l2: hit("l2"),
            load_l3: metrics::counter!("gatehouse_cache_loads_total", "cache" => "versions", "result" => "ok"),
            clears: metrics::counter!("gatehouse_cache_l1_clears_total", "cache" => "versions"),
        }
    }

    fn fresh(&self, tenant: Uuid) -> Option<i64> {
        let map = self.l1.read().ok()?;
        let known = map.get(&tenant)?;
        (known.fetched.elapsed() < self.settings.l1_ttl).then_some(known.version)
    }

    /// Raises the L1 entry to `version` (never lowers it) and returns the
    /// entry's version afterwards.
    fn merge(&self, tenant: Uuid, version: i64) -> i64 {
        let Ok(mut map) = self.l1.write() else {
            return version;
        };
        let known = map.entry(tenant).or_insert(Known {
            version,
            fetched: Instant::now(),
        });
        if version >= known.version {
            known.version = version;
            known.fetched = Instant::now();
        }
        known.version
    }

    /// The version of `tenant` (0: no such tenant) and where it came from.
    /// `load` reads Postgres; it runs once per tenant at a time.
    pub async fn get<E, F, Fut>(&self, tenant: Uuid, load: F) -> Result<(i64, Tier), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<i64>, E>>,
    {
        if let Some(version) = self.fresh(tenant) {
            self.hit_l1.increment(1);
            return Ok((version, Tier::L1));
        }
        let flight = {
            let mut flights = self
                .flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(flights.entry(tenant).or_default())
        };
        let _turn = flight.lock().await;
        if let Some(version) = self.fresh(tenant) {
            self.hit_l1.increment(1);
            return Ok((version, Tier::L1));
        }
        if let Some(version) = self.read_l2(tenant).await {
            self.hit_l2.increment(1);
            return Ok((self.merge(tenant, version), Tier::L2));
        }
        let version = load().await?.unwrap_or(0);
        self.load_l3.increment(1);
        self.raise_l2(tenant, version).await;
        Ok((self.merge(tenant, version), Tier::L3))
    }

    /// An invalidation event says `tenant` is now at `version`: in force for
    /// the next request, no reload needed.
    pub fn observe(&self, tenant: Uuid, version: i64) {
        self.merge(tenant, version);
    }

    /// Forgets `tenant` (an event named it without a version): the next
    /// request reads L2/L3.
    pub fn forget(&self, tenant: Uuid) {
        if let Ok(mut map) = self.l1.write() {
            map.remove(&tenant);
        }
    }

    /// Forgets every tenant (the event stream lost our position).
    pub fn clear(&self) {
        if let Ok(mut map) = self.l1.write() {
            map.clear();
        }
        self.clears.increment(1);
    }

    fn l2_key(l2: &RemoteTier, tenant: Uuid) -> String {
        l2.key("version", &tenant.to_string(), "v")
    }

    async fn read_l2(&self, tenant: Uuid) -> Option<i64> {
        let l2 = self.l2.as_ref().filter(|l2| !l2.is_backing_off())?;
        let key = &Self::l2_key(l2, tenant);
        match l2
            .redis()
            .run_idempotent(|mut conn| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<i64>>(&mut conn)
                    .await
            })
            .await
        {
            Ok(found) => found.filter(|v| *v > 0),
            Err(e) => {
                l2.failed(&e);
                None
            }
        }
    }

    /// Offers `version` to L2 (kept only if newer than what is there). The
    /// outbox relay calls this for every change it publishes, before the
    /// event, so an instance that misses L1 after the event reads the new
    /// version from L2.
    pub async fn raise_l2(&self, tenant: Uuid, version: i64) {
        let Some(l2) = self.l2.as_ref().filter(|l2| !l2.is_backing_off()) else {
            return;
        };
        if version <= 0 {
            return;
        }
        let key = &Self::l2_key(l2, tenant);
        let script = &self.raise;
        let ttl = u64::try_from(self.settings.l2_ttl.as_millis()).unwrap_or(600_000);
        // Raising to a maximum is idempotent.
        if let Err(e) = l2
            .redis()
            .run_idempotent(|mut conn| async move {
                script
                    .key(key)
                    .arg(version)
                    .arg(ttl)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
        {
            l2.failed(&e);
        }
    }
}
