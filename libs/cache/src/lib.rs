//! The tiered cache every hot read goes through.
//!
//! - **L1**: in process ([`moka`]), bounded by bytes (each value reports its
//!   weight), a TTL with jitter per entry, and single flight per key: when
//!   many requests miss the same key at once, one fills it and the others
//!   wait for that fill.
//! - **L2**: Redis (the cache connection), a longer TTL with jitter. Values are
//!   `MessagePack` behind a one-byte schema version ([`CacheValue::SCHEMA`]): a
//!   value this build cannot decode is a miss and is deleted, so a rolling
//!   deploy never misreads another build's layout. An L1 miss reads L2 and,
//!   when the value is not there, takes a short fill lock in the same
//!   atomic round trip (`lua/cache_read_or_lock.lua`): one instance of the
//!   cluster loads from L3 while the others poll L2 for a bounded time, then
//!   load themselves. The loader stores the value and releases the lock in
//!   one more round trip (`lua/cache_fill.lua`): a cold key costs two.
//! - **L3**: the caller's loader (Postgres).
//!
//! Negative answers (no such tenant, no such user) are cached too, with a
//! short TTL, so random names cannot reach Postgres on every request.
//!
//! Invalidation is by key shape: callers put the tenant's data version in
//! keys (see [`versions`]), so a version bump makes every older entry
//! unreachable at once in both tiers; entries that carry no version are
//! evicted by the event consumer with [`TieredCache::invalidate`] /
//! [`TieredCache::invalidate_if`]. When Redis fails, L2 is skipped for a
//! short back-off and reads go from L1 straight to the loader.

pub mod versions;

use std::future::Future;
use std::hash::{BuildHasher as _, Hash, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_redis::{Keyspace, RedisPool};
use metrics::{Counter, Histogram};
use moka::Expiry;
use moka::notification::RemovalCause;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use versions::VersionCache;

/// A value the cache can hold in both tiers.
pub trait CacheValue: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// The layout version of the encoded value. Bump it whenever the type's
    /// serialised shape changes: an older or newer build's L2 entries then
    /// read as misses instead of as wrong data.
    const SCHEMA: u8;

    /// Approximate bytes this value holds in memory (the L1 weigher).
    fn weight(&self) -> usize;
}

/// A key: the hash tag that pins it to its tenant's Redis slot, and the rest.
pub trait CacheKey: Clone + Hash + Eq + Send + Sync + 'static {
    /// The hash tag (usually the tenant id): every L2 key of one tenant lands
    /// in one cluster slot.
    fn tag(&self) -> String;
    /// The rest of the L2 key (include the data version where it applies).
    fn id(&self) -> String;
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// In process.
    L1,
    /// Redis.
    L2,
    /// The loader (Postgres).
    L3,
}

impl Tier {
    /// `l1`, `l2` or `l3`: the name in metrics and API answers.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::L3 => "l3",
        }
    }
}

/// One answer: the value (`None`: the loader said there is none) and its tier.
#[derive(Debug, Clone)]
pub struct Lookup<V> {
    /// The value, or `None` for a (cached) negative answer.
    pub value: Option<V>,
    /// Where it came from on this call.
    pub tier: Tier,
}

/// Sizes and lifetimes of one cache.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Upper bound of the L1 tier, in (approximate) bytes.
    pub l1_capacity_bytes: u64,
    /// L1 lifetime of a positive answer (the bound on staleness when every
    /// invalidation event is lost).
    pub l1_ttl: Duration,
    /// L2 lifetime of a positive answer.
    pub l2_ttl: Duration,
    /// Lifetime of a negative answer, in both tiers.
    pub negative_ttl: Duration,
    /// Each TTL is drawn from `ttl × (1 ± jitter)`, so entries filled together
    /// do not expire together.
    pub jitter: f64,
    /// How long one instance's L3 load holds the cluster fill lock.
    pub lock_ttl: Duration,
    /// How long another instance waits for that load to reach L2 before it
    /// loads itself (bounded: a dead loader never blocks anyone for long).
    pub lock_wait: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            l1_capacity_bytes: 64 << 20,
            l1_ttl: Duration::from_secs(30),
            l2_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
            jitter: 0.1,
            lock_ttl: Duration::from_millis(500),
            lock_wait: Duration::from_millis(250),
        }
    }
}

/// `ttl × (1 ± jitter)`, from a fresh random hash of `seed`.
fn jittered(ttl: Duration, jitter: f64, seed: &impl Hash) -> Duration {
    let random = RandomState::new().hash_one(seed);
    // 53 random bits → [0, 1).
    #[allow(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    ttl.mul_f64((1.0 + jitter * (2.0 * unit - 1.0)).max(0.0))
}

/// An L1 entry: the answer, the tier that produced it, its lifetime.
#[derive(Clone)]
struct Slot<V> {
    value: Option<V>,
    tier: Tier,
    ttl: Duration,
}

struct SlotExpiry;

impl<K, V> Expiry<K, Slot<V>> for SlotExpiry {
    fn expire_after_create(&self, _key: &K, slot: &Slot<V>, _at: Instant) -> Option<Duration> {
        Some(slot.ttl)
    }
}

/// Counters and histograms of one cache, registered once so the hit path
/// pays no label lookup.
struct Meters {
    hit_l1: Counter,
    hit_l2: Counter,
    miss: Counter,
    load_l3: Counter,
    load_failed: Counter,
    load_l3_seconds: Histogram,
    l2_seconds: Histogram,
    undecodable: Counter,
    lock_waited: Counter,
    clears: Counter,
}

impl Meters {
    fn new(name: &'static str) -> Self {
        let tier = |t: &'static str| metrics::counter!("gatehouse_cache_hits_total", "cache" => name, "tier" => t);
        Self {
            hit_l1: tier("l1"),
            hit_l2: tier("l2"),
            miss: metrics::counter!("gatehouse_cache_misses_total", "cache" => name),
            load_l3: metrics::counter!("gatehouse_cache_loads_total", "cache" => name, "result" => "ok"),
            load_failed: metrics::counter!("gatehouse_cache_loads_total", "cache" => name, "result" => "error"),
            load_l3_seconds: metrics::histogram!("gatehouse_cache_load_duration_seconds", "cache" => name, "tier" => "l3"),
            l2_seconds: metrics::histogram!("gatehouse_cache_load_duration_seconds", "cache" => name, "tier" => "l2"),
            undecodable: metrics::counter!("gatehouse_cache_l2_undecodable_total", "cache" => name),
            lock_waited: metrics::counter!("gatehouse_cache_lock_waits_total", "cache" => name),
            clears: metrics::counter!("gatehouse_cache_l1_clears_total", "cache" => name),
        }
    }
}

/// The Redis side of a cache, shared by every cache of the process (one
/// back-off: when Redis fails, every cache skips L2 for a moment).
#[derive(Clone)]
pub struct RemoteTier {
    redis: RedisPool,
    keys: Keyspace,
    unlock: Arc<redis::Script>,
    read_or_lock: Arc<redis::Script>,
    fill: Arc<redis::Script>,
    /// Milliseconds since `epoch` until which L2 is skipped.
    down_until_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl std::fmt::Debug for RemoteTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTier").finish_non_exhaustive()
    }
}

/// The fill lock of an L2 key (same hash tag, so one script can touch both).
fn lock_key(key: &str) -> String {
    format!("{key}:lock")
}

/// How long L2 is skipped after a Redis failure (requests go L1 → L3 meanwhile).
const L2_BACKOFF: Duration = Duration::from_secs(1);
/// How often a waiting instance looks for another instance's fill.
const LOCK_POLL: Duration = Duration::from_millis(5);

impl RemoteTier {
    /// L2 on `redis` (the cache connection), keys under `keys`.
    #[must_use]
    pub fn new(redis: RedisPool, keys: Keyspace) -> Self {
        Self {
            redis,
            keys,
            unlock: Arc::new(redis::Script::new(include_str!(
                "../../../lua/cache_unlock.lua"
            ))),
            read_or_lock: Arc::new(redis::Script::new(include_str!(
                "../../../lua/cache_read_or_lock.lua"
            ))),
            fill: Arc::new(redis::Script::new(include_str!(
                "../../../lua/cache_fill.lua"
            ))),
            down_until_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether L2 is in its back-off after a failure.
    #[must_use]
    pub fn is_backing_off(&self) -> bool {
        self.now_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    fn failed(&self, error: &gatehouse_redis::RedisError) {
        metrics::counter!("gatehouse_cache_l2_errors_total").increment(1);
        let until = self.now_ms() + u64::try_from(L2_BACKOFF.as_millis()).unwrap_or(1000);
        if self.down_until_ms.swap(until, Ordering::Relaxed) < self.now_ms() {
            tracing::warn!(%error, "L2 cache unavailable; reading through to the store");
        }
    }

    /// The Redis key of a cache entry.
    #[must_use]
    pub fn key(&self, cache: &str, tag: &str, id: &str) -> String {
        self.keys.tenant_key(tag, &format!("c:{cache}:{id}"))
    }

    /// The Redis pool.
    #[must_use]
    pub fn redis(&self) -> &RedisPool {
        &self.redis
    }

    /// The stored bytes; `None` on a miss or when Redis failed.
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        if self.is_backing_off() {
            return None;
        }
        match self
            .redis
            .run_idempotent(|mut conn| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
            })
            .await
        {
            Ok(found) => found,
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// Deletes L2 keys (the outbox relay and undecodable entries).
    pub async fn delete(&self, keys: Vec<String>) -> Result<(), gatehouse_redis::RedisError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.redis
            .run(|mut conn| async move {
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    /// One round trip on an L2 miss path (`lua/cache_read_or_lock.lua`):
    /// the stored bytes, or the fill lock when nobody holds it.
    async fn read_or_lock(&self, key: &str, lock_ttl: Duration) -> Probe {
        if self.is_backing_off() {
            return Probe::Down;
        }
        let lock = lock_key(key);
        let token = format!("{:016x}", RandomState::new().hash_one(key));
        let ms = u64::try_from(lock_ttl.as_millis()).unwrap_or(500).max(1);
        let script = Arc::clone(&self.read_or_lock);
        let (lock, value) = (&lock, &token);
        let answer = self
            .redis
            .run_idempotent(|mut conn| {
                let script = Arc::clone(&script);
                async move {
                    script
                        .key(key)
                        .key(lock)
                        .arg(value)
                        .arg(ms)
                        .invoke_async::<(u8, Option<Vec<u8>>)>(&mut conn)
                        .await
                }
            })
            .await;
        match answer {
            Ok((1, Some(bytes))) => Probe::Stored(bytes),
            Ok((2, _)) => Probe::Locked(token),
            Ok(_) => Probe::Busy,
            Err(e) => {
                self.failed(&e);
                Probe::Down
            }
        }
    }

    /// Stores a loaded answer and releases our fill lock in one round trip
    /// (`lua/cache_fill.lua`); `token` is empty when we loaded without it.
    async fn fill(&self, key: &str, bytes: Vec<u8>, ttl: Duration, token: &str) {
        if self.is_backing_off() {
            return;
        }
        let lock = lock_key(key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let script = Arc::clone(&self.fill);
        let (lock, bytes) = (&lock, &bytes);
        if let Err(e) = self
            .redis
            .run_idempotent(|mut conn| {
                let script = Arc::clone(&script);
                async move {
                    script
                        .key(key)
                        .key(lock)
                        .arg(bytes)
                        .arg(ms)
                        .arg(token)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
            })
            .await
        {
            self.failed(&e);
        }
    }

    async fn unlock(&self, key: &str, token: String) {
        if token.is_empty() || self.is_backing_off() {
            return;
        }
        let lock = lock_key(key);
        let script = Arc::clone(&self.unlock);
        if let Err(e) = self
            .redis
            .run(|mut conn| async move {
                script
                    .key(&lock)
                    .arg(&token)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await
        {
            self.failed(&e);
        }
    }
}

/// What an L2 miss-path probe found.
enum Probe {
    /// The stored bytes (another instance filled it).
    Stored(Vec<u8>),
    /// Nobody had it: we hold the fill lock with this token.
    Locked(String),
    /// Another instance holds the fill lock.
    Busy,
    /// Redis failed or is in its back-off: load without L2.
    Down,
}

/// Encodes an answer for L2: `[schema][0 = none | 1 = some][MessagePack]`.
fn encode<V: CacheValue>(value: Option<&V>) -> Option<Vec<u8>> {
    let mut bytes = vec![V::SCHEMA, u8::from(value.is_some())];
    if let Some(value) = value {
        rmp_serde::encode::write_named(&mut bytes, value).ok()?;
    }
    Some(bytes)
}

/// A decoded L2 answer: a value, or the loader's "there is none".
#[derive(Debug, PartialEq)]
enum Stored<V> {
    Present(V),
    Absent,
}

impl<V> Stored<V> {
    fn into_option(self) -> Option<V> {
        match self {
            Self::Present(v) => Some(v),
            Self::Absent => None,
        }
    }
}

/// Decodes an L2 answer; `None` when this build cannot read it.
fn decode<V: CacheValue>(bytes: &[u8]) -> Option<Stored<V>> {
    match bytes {
        [schema, 0] if *schema == V::SCHEMA => Some(Stored::Absent),
        [schema, 1, rest @ ..] if *schema == V::SCHEMA => {
            rmp_serde::from_slice(rest).ok().map(Stored::Present)
        }
        _ => None,
    }
}

/// A tiered cache of `V` by `K` (see the crate doc).
pub struct TieredCache<K: CacheKey, V: CacheValue> {
    name: &'static str,
    l1: moka::future::Cache<K, Slot<V>>,
    l2: Option<RemoteTier>,
    settings: CacheSettings,
    meters: Meters,
}

impl<K: CacheKey, V: CacheValue> std::fmt::Debug for TieredCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("name", &self.name)
            .field("entries", &self.l1.entry_count())
            .finish_non_exhaustive()
    }
}

impl<K: CacheKey, V: CacheValue> TieredCache<K, V> {
    /// A cache named `name` (metric label and L2 key part); `l2: None` keeps
    /// it in process only.
    #[must_use]
    pub fn new(name: &'static str, settings: CacheSettings, l2: Option<RemoteTier>) -> Self {
        let l1 = moka::future::Cache::builder()
            .name(name)
            .max_capacity(settings.l1_capacity_bytes)
            .weigher(|_key: &K, slot: &Slot<V>| {
                let bytes = 64 + slot.value.as_ref().map_or(0, CacheValue::weight);
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(SlotExpiry)
            .eviction_listener(move |_key, _slot, cause| {
                let cause = match cause {
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit => "invalidated",
                    RemovalCause::Replaced => return,
                    RemovalCause::Size => "size",
                };
                metrics::counter!("gatehouse_cache_evictions_total", "cache" => name, "cause" => cause)
                    .increment(1);
            })
            .support_invalidation_closures()
            .build();
        Self {
            name,
            l1,
            l2,
            settings,
            meters: Meters::new(name),
        }
    }

    /// The answer for `key`: from L1, else (once per key in this process)
    /// from L2, else (once per key in the cluster, with a bounded wait) from
    /// `load`. A failed load is not cached; every waiter gets its error.
    pub async fn get<E, F, Fut>(&self, key: &K, load: F) -> Result<Lookup<V>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        if let Some(slot) = self.l1.get(key).await {
            self.meters.hit_l1.increment(1);
            return Ok(Lookup {
                value: slot.value,
                tier: Tier::L1,
            });
        }
        let entry = self
            .l1
            .entry(key.clone())
            .or_try_insert_with(self.fill(key, load))
            .await?;
        let fresh = entry.is_fresh();
        let slot = entry.into_value();
        let tier = if fresh { slot.tier } else { Tier::L1 };
        if tier == Tier::L1 {
            self.meters.hit_l1.increment(1);
        }
        Ok(Lookup {
            value: slot.value,
            tier,
        })
    }

    fn slot(&self, value: Option<V>, tier: Tier, seed: &K) -> Slot<V> {
        let base = if value.is_some() {
            self.settings.l1_ttl
        } else {
            self.settings.negative_ttl
        };
        Slot {
            value,
            tier,
            ttl: jittered(base, self.settings.jitter, seed),
        }
    }

    async fn fill<E, F, Fut>(&self, key: &K, load: F) -> Result<Slot<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        self.meters.miss.increment(1);
        let Some(l2) = &self.l2 else {
            let value = self.load_l3(load).await?;
            return Ok(self.slot(value, Tier::L3, key));
        };
        let l2_key = l2.key(self.name, &key.tag(), &key.id());
        // Read, or take the cluster's fill lock, in one round trip.
        let started = Instant::now();
        let token = match l2.read_or_lock(&l2_key, self.settings.lock_ttl).await {
            Probe::Stored(bytes) => {
                self.meters
                    .l2_seconds
                    .record(started.elapsed().as_secs_f64());
                match self.decoded(l2, &l2_key, &bytes).await {
                    Some(value) => return Ok(self.slot(value.into_option(), Tier::L2, key)),
                    // Another build's layout (deleted): load and replace it.
                    None => String::new(),
                }
            }
            Probe::Locked(token) => token,
            Probe::Down => {
                let value = self.load_l3(load).await?;
                return Ok(self.slot(value, Tier::L3, key));
            }
            Probe::Busy => {
                // Cluster single flight: another instance loads; poll L2.
                self.meters.lock_waited.increment(1);
                let deadline = Instant::now() + self.settings.lock_wait;
                loop {
                    tokio::time::sleep(LOCK_POLL).await;
                    if let Some(value) = self.read_l2(l2, &l2_key).await {
                        return Ok(self.slot(value.into_option(), Tier::L2, key));
                    }
                    if Instant::now() >= deadline || l2.is_backing_off() {
                        break;
                    }
                }
                String::new()
            }
        };
        let loaded = self.load_l3(load).await;
        match &loaded {
            Ok(value) => {
                if let Some(bytes) = encode(value.as_ref()) {
                    let base = if value.is_some() {
                        self.settings.l2_ttl
                    } else {
                        self.settings.negative_ttl
                    };
                    let ttl = jittered(base, self.settings.jitter, key);
                    l2.fill(&l2_key, bytes, ttl, &token).await;
                }
            }
            Err(_) if !token.is_empty() => l2.unlock(&l2_key, token).await,
            Err(_) => {}
        }
        Ok(self.slot(loaded?, Tier::L3, key))
    }

    /// `Some(answer)` on an L2 hit; `None` on a miss, an error or an
    /// undecodable value (which is deleted).
    async fn read_l2(&self, l2: &RemoteTier, l2_key: &str) -> Option<Stored<V>> {
        let started = Instant::now();
        let bytes = l2.get(l2_key).await?;
        self.meters
            .l2_seconds
            .record(started.elapsed().as_secs_f64());
        self.decoded(l2, l2_key, &bytes).await
    }

    /// Decodes L2 bytes, counting the hit; a value this build cannot read is
    /// counted, deleted and `None`.
    async fn decoded(&self, l2: &RemoteTier, l2_key: &str, bytes: &[u8]) -> Option<Stored<V>> {
        if let Some(value) = decode::<V>(bytes) {
            self.meters.hit_l2.increment(1);
            return Some(value);
        }
        self.meters.undecodable.increment(1);
        tracing::debug!(
            cache = self.name,
            key = l2_key,
            "undecodable L2 entry deleted"
        );
        if let Err(e) = l2.delete(vec![l2_key.to_owned()]).await {
            l2.failed(&e);
        }
        None
    }

    async fn load_l3<E, F, Fut>(&self, load: F) -> Result<Option<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        let started = Instant::now();
        let result = load().await;
        self.meters
            .load_l3_seconds
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.meters.load_l3.increment(1),
            Err(_) => self.meters.load_failed.increment(1),
        }
        result
    }

    /// Evicts one key from L1 (its L2 entry is the relay's to delete).
    pub async fn invalidate(&self, key: &K) {
        self.l1.invalidate(key).await;
    }

    /// Evicts from L1 every entry `predicate` selects.
    pub fn invalidate_if(
        &self,
        predicate: impl Fn(&K, Option<&V>) -> bool + Send + Sync + 'static,
    ) {
        if let Err(e) = self
            .l1
            .invalidate_entries_if(move |key, slot| predicate(key, slot.value.as_ref()))
        {
            // Only possible when closures are not enabled (they are): clear.
            tracing::warn!(error = %e, cache = self.name, "selective invalidation failed; clearing");
            self.clear();
        }
    }

    /// Empties L1 (the event stream lost our position): counted.
    pub fn clear(&self) {
        self.l1.invalidate_all();
        self.meters.clears.increment(1);
    }

    /// Entries and weighted bytes in L1 (after pending maintenance).
    pub async fn l1_usage(&self) -> (u64, u64) {
        self.l1.run_pending_tasks().await;
        (self.l1.entry_count(), self.l1.weighted_size())
    }

    /// The L2 key of `key` (tests and the relay).
    #[must_use]
    pub fn l2_key(&self, key: &K) -> Option<String> {
        self.l2
            .as_ref()
            .map(|l2| l2.key(self.name, &key.tag(), &key.id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Thing {
        name: String,
        attributes: serde_json::Value,
    }

    impl CacheValue for Thing {
        const SCHEMA: u8 = 7;
        fn weight(&self) -> usize {
            self.name.len() + 64
        }
    }

    #[test]
    fn values_round_trip_and_other_schemas_are_misses() {
        let thing = Thing {
            name: "alice".into(),
            attributes: serde_json::json!({"level": 3, "teams": ["a", "b"]}),
        };
        let bytes = encode(Some(&thing)).unwrap();
        assert_eq!(decode::<Thing>(&bytes), Some(Stored::Present(thing)));
        assert_eq!(
            decode::<Thing>(&encode::<Thing>(None).unwrap()),
            Some(Stored::Absent)
        );
        let mut other = bytes.clone();
        other[0] = 8;
        assert_eq!(decode::<Thing>(&other), None, "another schema is a miss");
        assert_eq!(
            decode::<Thing>(&bytes[..bytes.len() - 1]),
            None,
            "truncated"
        );
        assert_eq!(decode::<Thing>(&[]), None);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let ttl = Duration::from_secs(100);
        for seed in 0..1000 {
            let d = jittered(ttl, 0.1, &seed);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
        let spread: std::collections::HashSet<u128> = (0..100)
            .map(|s| jittered(ttl, 0.1, &s).as_millis())
            .collect();
        assert!(spread.len() > 50, "TTLs are spread, not equal");
    }
}
