//! Every hot read of tenant data, through the tiered cache.
//!
//! | cache | key | tiers | invalidated by |
//! |---|---|---|---|
//! | `versions` | tenant | L1 + L2 + L3 | events raise it (never lowered) |
//! | `tenants` | slug | L1 + L2 + L3 | events naming the tenant evict it |
//! | `principals` | tenant, version, user | L1 + L2 + L3 | the version in the key |
//! | `subjects` | tenant, version, user | L1 + L2 + L3 | the version in the key |
//! | `subjects_by_name` | tenant, version, username | L1 + L2 + L3 | the version in the key |
//! | `rules` | tenant, version | L2 + L3 (compiled sets live in `authz`) | the version in the key |
//!
//! Every write that changes what these answer bumps the tenant's data
//! version in the same transaction and leaves an outbox row; the relay
//! ([`crate::outbox`]) publishes it, and every instance's consumer raises its
//! version ([`Directory::apply`]). Expired role assignments need no event:
//! the engine checks expiry at decision time.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gatehouse_cache::versions::VersionSettings;
use gatehouse_cache::{
    CacheKey, CacheSettings, CacheValue, RemoteTier, Tier, TieredCache, VersionCache,
};
use gatehouse_core::TenantSlug;
use gatehouse_store::StoreError;
use gatehouse_store::access::{self, RulesSnapshot, Subject};
use gatehouse_store::directory;
/// The records this module hands out (the store's rows, for now).
pub use gatehouse_store::directory::{Principal, Tenant};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// A tenant by slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlugKey(String);

impl CacheKey for SlugKey {
    fn tag(&self) -> String {
        format!("slug:{}", self.0)
    }
    fn id(&self) -> String {
        "tenant".into()
    }
}

/// An entry of one user of one tenant at one data version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserKey {
    tenant: Uuid,
    version: i64,
    user: Uuid,
}

impl CacheKey for UserKey {
    fn tag(&self) -> String {
        self.tenant.to_string()
    }
    fn id(&self) -> String {
        format!("v{}:{}", self.version, self.user.simple())
    }
}

/// A user of one tenant by normalised username, at one data version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameKey {
    tenant: Uuid,
    version: i64,
    name: String,
}

impl CacheKey for NameKey {
    fn tag(&self) -> String {
        self.tenant.to_string()
    }
    fn id(&self) -> String {
        // Free text: hashed before it enters a key (see `Keyspace::digest`).
        format!(
            "v{}:n:{}",
            self.version,
            gatehouse_redis::Keyspace::digest(&self.name)
        )
    }
}

/// A tenant's rules at one data version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RulesKey {
    tenant: Uuid,
    version: i64,
}

impl CacheKey for RulesKey {
    fn tag(&self) -> String {
        self.tenant.to_string()
    }
    fn id(&self) -> String {
        format!("v{}", self.version)
    }
}

fn json_weight(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::String(s) => 32 + s.len(),
        serde_json::Value::Array(items) => 32 + items.iter().map(json_weight).sum::<usize>(),
        serde_json::Value::Object(map) => {
            32 + map
                .iter()
                .map(|(k, v)| 32 + k.len() + json_weight(v))
                .sum::<usize>()
        }
        _ => 16,
    }
}

fn tenant_weight(t: &Tenant) -> usize {
    160 + t.slug.len()
        + t.display_name.len()
        + t.allowed_return_origins
            .iter()
            .map(|o| 24 + o.len())
            .sum::<usize>()
        + json_weight(&t.settings)
}

/// A store row as a cache value: one wrapper, with the schema byte and the
/// weight given per row type below. Shared: an L1 hit is a reference count,
/// not a copy of the row (settings, attributes and assignments included).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cached<T>(pub Arc<T>);

impl CacheValue for Cached<Tenant> {
    const SCHEMA: u8 = 1;
    fn weight(&self) -> usize {
        tenant_weight(&self.0)
    }
}

impl CacheValue for Cached<Principal> {
    const SCHEMA: u8 = 1;
    fn weight(&self) -> usize {
        tenant_weight(&self.0.tenant)
            + self
                .0
                .user
                .as_ref()
                .map_or(0, |(name, status)| 48 + name.len() + status.len())
    }
}

impl CacheValue for Cached<Subject> {
    const SCHEMA: u8 = 1;
    fn weight(&self) -> usize {
        let s = &self.0;
        120 + s.username.len()
            + s.status.len()
            + s.attributes
                .iter()
                .map(|(k, v)| 32 + k.len() + json_weight(v))
                .sum::<usize>()
            + s.assignments
                .iter()
                .map(|a| 48 + a.role.len())
                .sum::<usize>()
    }
}

impl CacheValue for Cached<RulesSnapshot> {
    const SCHEMA: u8 = 1;
    fn weight(&self) -> usize {
        let r = &self.0.rules;
        256 + r.roles.len() * 96 + r.grants.len() * 128 + r.policies.len() * 512
    }
}

/// Reads `key` through `cache`, calling `load` (a store query) only on a miss.
async fn through<K, T, Fut>(
    cache: &TieredCache<K, Cached<T>>,
    key: &K,
    load: impl FnOnce() -> Fut,
) -> Result<(Option<Arc<T>>, Tier), StoreError>
where
    K: CacheKey,
    Cached<T>: CacheValue,
    Fut: Future<Output = Result<Option<T>, StoreError>>,
{
    let lookup = cache
        .get(key, || async {
            Ok::<_, StoreError>(load().await?.map(|row| Cached(Arc::new(row))))
        })
        .await?;
    Ok((lookup.value.map(|c| c.0), lookup.tier))
}

/// Sizes and lifetimes of the directory's caches.
#[derive(Debug, Clone)]
pub struct DirectorySettings {
    /// Subjects and principals (the big ones).
    pub users: CacheSettings,
    /// Tenants by slug.
    pub tenants: CacheSettings,
    /// Versions.
    pub versions: VersionSettings,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        Self {
            users: CacheSettings {
                l1_capacity_bytes: 128 << 20,
                ..CacheSettings::default()
            },
            tenants: CacheSettings {
                l1_capacity_bytes: 8 << 20,
                ..CacheSettings::default()
            },
            versions: VersionSettings::default(),
        }
    }
}

/// How long the slug index is trusted without an event (the bound for a
/// tenant created while the event stream was down).
const SLUG_INDEX_MAX_AGE: Duration = Duration::from_secs(60);

/// The slugs that exist, so random names never reach Postgres.
struct SlugIndex {
    slugs: HashSet<String>,
    loaded: Instant,
    stale: bool,
}

/// Cached reads of tenants, users and rules.
pub struct Directory {
    db: PgPool,
    slugs: RwLock<Option<SlugIndex>>,
    slug_flight: tokio::sync::Mutex<()>,
    versions: VersionCache,
    tenants: TieredCache<SlugKey, Cached<Tenant>>,
    principals: TieredCache<UserKey, Cached<Principal>>,
    subjects: TieredCache<UserKey, Cached<Subject>>,
    subjects_by_name: TieredCache<NameKey, Cached<Subject>>,
    rules: TieredCache<RulesKey, Cached<RulesSnapshot>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Directory {
    /// The directory over `db`, with L2 on `l2` (none: L1 and Postgres only).
    #[must_use]
    pub fn new(db: PgPool, l2: Option<RemoteTier>, settings: DirectorySettings) -> Self {
        Self {
            versions: VersionCache::new(settings.versions, l2.clone()),
            tenants: TieredCache::new("tenants", settings.tenants.clone(), l2.clone()),
            principals: TieredCache::new("principals", settings.users.clone(), l2.clone()),
            subjects: TieredCache::new("subjects", settings.users.clone(), l2.clone()),
            subjects_by_name: TieredCache::new("subjects_by_name", settings.users, l2.clone()),
            rules: TieredCache::new(
                "rules",
                CacheSettings {
                    // Compiled sets are kept by `authz`; L1 here only bridges
                    // a compile, so it stays small.
                    l1_capacity_bytes: 4 << 20,
                    l1_ttl: std::time::Duration::from_secs(5),
                    ..settings.tenants
                },
                l2,
            ),
            db,
            slugs: RwLock::new(None),
            slug_flight: tokio::sync::Mutex::new(()),
        }
    }

    /// `Some(known)` when the slug index is current; `None` when it must load.
    fn slug_in_index(&self, slug: &str) -> Option<bool> {
        let index = self.slugs.read().ok()?;
        let index = index.as_ref()?;
        (!index.stale && index.loaded.elapsed() < SLUG_INDEX_MAX_AGE)
            .then(|| index.slugs.contains(slug))
    }

    /// Whether a tenant named `slug` may exist: from the index (one load of
    /// every slug per [`SLUG_INDEX_MAX_AGE`] or tenant event, single flight).
    /// When the index cannot load (Postgres down), says "maybe", and the
    /// per-slug cache answers.
    async fn slug_may_exist(&self, slug: &str) -> bool {
        if let Some(known) = self.slug_in_index(slug) {
            return known;
        }
        let _turn = self.slug_flight.lock().await;
        if let Some(known) = self.slug_in_index(slug) {
            return known;
        }
        match directory::tenant_slugs(&self.db).await {
            Ok(all) => {
                metrics::counter!("gatehouse_cache_loads_total", "cache" => "slug_index", "result" => "ok")
                    .increment(1);
                let slugs: HashSet<String> = all.into_iter().collect();
                let known = slugs.contains(slug);
                if let Ok(mut index) = self.slugs.write() {
                    *index = Some(SlugIndex {
                        slugs,
                        loaded: Instant::now(),
                        stale: false,
                    });
                }
                known
            }
            Err(e) => {
                tracing::debug!(error = %e, "slug index unavailable; asking the tenant cache");
                true
            }
        }
    }

    /// A tenant by slug, active or not (`None`: no such tenant, cached briefly).
    pub async fn tenant_by_slug(
        &self,
        slug: &TenantSlug,
    ) -> Result<Option<Arc<Tenant>>, StoreError> {
        if !self.slug_may_exist(slug.as_str()).await {
            metrics::counter!("gatehouse_cache_hits_total", "cache" => "slug_index", "tier" => "l1")
                .increment(1);
            return Ok(None);
        }
        let key = SlugKey(slug.as_str().to_owned());
        let load = || directory::tenant_by_slug(&self.db, slug);
        Ok(through(&self.tenants, &key, load).await?.0)
    }

    /// The tenant's data version (0: no such tenant) and its tier.
    pub async fn version(&self, tenant: Uuid) -> Result<(i64, Tier), StoreError> {
        self.versions
            .get(tenant, || access::data_version(&self.db, tenant))
            .await
    }

    /// The tenant and the user's standing in it (admission), at the
    /// tenant's current version.
    pub async fn principal(
        &self,
        tenant: Uuid,
        user: Uuid,
    ) -> Result<(Option<Arc<Principal>>, Tier), StoreError> {
        let (version, version_tier) = self.version(tenant).await?;
        if version == 0 {
            return Ok((None, version_tier));
        }
        let key = UserKey {
            tenant,
            version,
            user,
        };
        let load = || directory::principal(&self.db, tenant, user);
        let (principal, tier) = through(&self.principals, &key, load).await?;
        Ok((principal, tier.max(version_tier)))
    }

    /// A user as the engine sees them, at the tenant's `version`.
    pub async fn subject(
        &self,
        tenant: Uuid,
        version: i64,
        user: Uuid,
    ) -> Result<(Option<Arc<Subject>>, Tier), StoreError> {
        let key = UserKey {
            tenant,
            version,
            user,
        };
        through(&self.subjects, &key, || {
            access::subject_by_id(&self.db, tenant, user)
        })
        .await
    }

    /// A user by normalised username, at the tenant's `version` (an admin's
    /// question about someone else names them).
    pub async fn subject_by_name(
        &self,
        tenant: Uuid,
        version: i64,
        normalized: &str,
    ) -> Result<(Option<Arc<Subject>>, Tier), StoreError> {
        let key = NameKey {
            tenant,
            version,
            name: normalized.to_owned(),
        };
        let load = || access::subject_by_username(&self.db, tenant, normalized);
        through(&self.subjects_by_name, &key, load).await
    }

    /// The tenant's rules at `version` (from L2, else Postgres). The
    /// snapshot's own version may be newer than asked (a write landed
    /// meanwhile); callers key the compiled set by the snapshot's.
    pub async fn rules(
        &self,
        tenant: Uuid,
        version: i64,
    ) -> Result<(RulesSnapshot, Tier), StoreError> {
        let key = RulesKey { tenant, version };
        // A multi-query transaction: boxed, so every caller's future stays small.
        let load =
            || Box::pin(async move { Ok(Some(access::load_rules(&self.db, tenant).await?)) });
        let (snapshot, tier) = through(&self.rules, &key, load).await?;
        // The loader always answers `Some`; an empty set is the safe reading
        // of an impossible `None` (it grants nothing).
        // A miss compiles the set once per version: the copy out of the
        // shared cache entry is paid then, not per request.
        let snapshot = snapshot.map_or_else(
            || RulesSnapshot {
                version,
                rules: gatehouse_authz::TenantRules::default(),
            },
            Arc::unwrap_or_clone,
        );
        Ok((snapshot, tier))
    }

    /// Applies one change event: the tenant is now at `version` (raised in
    /// L1 at once; every entry keyed by an older version is unreachable), and
    /// its slug entry is evicted (status, settings, name may have changed).
    /// `slugs_changed`: tenants were created, deleted or renamed; the slug
    /// index reloads on next use.
    pub fn tenant_changed(&self, tenant: Uuid, version: Option<i64>, slugs_changed: bool) {
        if slugs_changed
            && let Ok(mut index) = self.slugs.write()
            && let Some(index) = index.as_mut()
        {
            index.stale = true;
        }
        match version {
            Some(v) => self.versions.observe(tenant, v),
            None => self.versions.forget(tenant),
        }
        self.tenants
            .invalidate_if(move |_, value| value.is_none_or(|t| t.0.id == tenant));
    }

    /// The event stream lost our position: every L1 entry may be stale.
    pub fn clear(&self) {
        if let Ok(mut index) = self.slugs.write() {
            *index = None;
        }
        self.versions.clear();
        self.tenants.clear();
        self.principals.clear();
        self.subjects.clear();
        self.subjects_by_name.clear();
        self.rules.clear();
    }

    /// Raises the L2 version (the relay, before it publishes the event).
    pub async fn raise_l2_version(&self, tenant: Uuid, version: i64) {
        self.versions.raise_l2(tenant, version).await;
    }

    /// Entries and weighted bytes of each L1 tier, by cache name.
    pub async fn l1_usage(&self) -> [(&'static str, u64, u64); 5] {
        let usage = [
            self.tenants.l1_usage().await,
            self.principals.l1_usage().await,
            self.subjects.l1_usage().await,
            self.subjects_by_name.l1_usage().await,
            self.rules.l1_usage().await,
        ];
        let names = [
            "tenants",
            "principals",
            "subjects",
            "subjects_by_name",
            "rules",
        ];
        std::array::from_fn(|i| (names[i], usage[i].0, usage[i].1))
    }
}
