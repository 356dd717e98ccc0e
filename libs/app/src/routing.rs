//! Routing for the gateway: mirrors each service's routing configuration from
//! Postgres into Redis, where the selection scripts read it, and answers which
//! version and instance a tenant's request goes to.
//!
//! **Mirroring.** Every instance mirrors every service at start-up and again
//! every [`RESYNC`] (so a Redis that lost its data is whole again within that
//! bound), and mirrors one service whenever a `routing.changed` event names it
//! (the triggers of migration `20261203000004` write one for every change,
//! whoever makes it). Several instances mirroring at once cannot regress the
//! mirror: each carries the outbox revision its snapshot includes, and
//! `lua/route_mirror.lua` refuses an older one.
//!
//! **Redis away.** Each mirror also keeps the snapshot it read in memory
//! (first, so a Redis failure does not lose it). When Redis fails, or its
//! breaker is open after a failure, the proxy's picks come from that snapshot
//! with a local weighted-random choice ([`Routing::pick`]): rollouts apply
//! exactly as in Lua (same buckets), but heartbeats, breakers and leases live
//! in Redis and are not seen, so an instance that stopped heart-beating is
//! still chosen and a failing one is not ejected. The snapshot is as fresh as
//! the last mirror: events arrive through Redis, so during an outage only the
//! [`RESYNC`] from Postgres refreshes it (at most 60 s stale while Postgres
//! answers; as old as the outage when both are down).

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use gatehouse_ratelimit::Breaker;
use gatehouse_routing::{
    BreakerState, HealthView, LocalRequest, MirroredInstance, Outcome, Pick, PickRequest, Picked,
    RoutingError, RoutingStore, Rule, RuleError, Side, Strategy, VersionStats, counts_for_canary,
};
use gatehouse_store::StoreError;
use gatehouse_store::routing as config;
use sqlx::PgPool;
use uuid::Uuid;

/// How often every service is mirrored again, events or not.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Why routing could not answer or mirror.
#[derive(Debug, thiserror::Error)]
pub enum RoutingServiceError {
    /// Postgres.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis or a script.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// A stored rollout this build cannot express (the mirror is left as it was).
    #[error("service {service}: {error}")]
    Rule {
        /// The service.
        service: String,
        /// Why.
        error: RuleError,
    },
    /// The service is not available to the tenant (or not mirrored here
    /// yet): nobody of that tenant is routed to it.
    #[error("service {0} is not available to this tenant")]
    NotAvailable(String),
}

/// How long picks skip Redis after a failure (each attempt during an outage
/// would cost a full command timeout); then one probe goes to Redis.
const REDIS_BREAKER_OPEN: Duration = Duration::from_secs(1);

/// What this gateway last read of one service: its strategy (every pick uses
/// it) and the whole snapshot, for picking while Redis is away.
#[derive(Debug)]
struct LocalRoutes {
    /// The outbox revision it was read at: an older snapshot never replaces it.
    revision: i64,
    strategy: Strategy,
    default: Option<Rule>,
    /// Tenant id -> rule.
    tenants: HashMap<String, Rule>,
    instances: Vec<MirroredInstance>,
    /// Tenant id -> its subject rules, in the order they are tried.
    subject_rules: HashMap<String, Vec<SubjectRule>>,
    /// The tenants the platform made the service available to.
    available_to: std::collections::HashSet<Uuid>,
}

/// A subject rule as kept in memory.
#[derive(Debug, Clone)]
struct SubjectRule {
    role: Option<String>,
    attribute: Option<(String, serde_json::Value)>,
    version: String,
}

/// What subject rules look at: the caller's effective roles and attributes.
#[derive(Debug, Clone, Copy)]
pub struct SubjectFacts<'a> {
    /// Effective roles (assigned or inherited, unexpired).
    pub roles: &'a [String],
    /// The user's attributes.
    pub attributes: &'a serde_json::Map<String, serde_json::Value>,
}

/// Mirrors configuration and resolves requests.
pub struct Routing {
    db: PgPool,
    store: RoutingStore,
    /// Heartbeat deadlines, breakers and statistics slots are read against it.
    clock: Arc<dyn gatehouse_core::Clock>,
    /// For services this instance has not mirrored yet.
    strategy: Strategy,
    local: std::sync::RwLock<HashMap<String, Arc<LocalRoutes>>>,
    /// Open after a Redis failure: picks are local until a probe succeeds.
    redis_breaker: Breaker,
    /// Per service, what Redis last said about its instances, and when (ms):
    /// the fast path's input, read every [`UPKEEP`].
    views: std::sync::RwLock<HashMap<String, (u64, Arc<HealthView>)>>,
    /// Successful outcomes not yet written to Redis, per service.
    pending: std::sync::Mutex<HashMap<String, PendingOutcomes>>,
}

/// How often batched outcomes are written and health views are read.
pub const UPKEEP: Duration = Duration::from_millis(200);

/// A health view older than this is not used by the fast path (the Lua path
/// answers until the next read succeeds).
const VIEW_MAX_AGE_MS: u64 = 2_000;

/// Successes gathered in the gateway since the last flush.
#[derive(Debug, Default)]
struct PendingOutcomes {
    /// Instance → successes.
    successes: HashMap<String, u32>,
    /// Tenant → version → counts for that tenant's canary analysis (keyed
    /// by id: the text form is made once per flush, not per request).
    stats: HashMap<Uuid, HashMap<String, VersionStats>>,
}

/// Registered once: picks made in memory with a fresh health view.
static MEMORY_PICKS: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!("gatehouse_routing_memory_picks_total"));

/// Registered once: counted on every pick made without Redis.
static LOCAL_PICKS: std::sync::LazyLock<metrics::Counter> =
    std::sync::LazyLock::new(|| metrics::counter!("gatehouse_routing_local_picks_total"));

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl Routing {
    /// Routing over `db` (configuration) and `store` (the Redis mirror and
    /// live state); `strategy` serves services until their own is mirrored;
    /// `clock` is what heartbeats, breakers and statistics are timed by.
    #[must_use]
    pub fn new(
        db: PgPool,
        store: RoutingStore,
        strategy: Strategy,
        clock: Arc<dyn gatehouse_core::Clock>,
    ) -> Self {
        Self {
            db,
            store,
            clock,
            strategy,
            local: std::sync::RwLock::new(HashMap::new()),
            redis_breaker: Breaker::new(REDIS_BREAKER_OPEN),
            views: std::sync::RwLock::new(HashMap::new()),
            pending: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The live state in Redis (heartbeats, outcomes).
    #[must_use]
    pub fn store(&self) -> &RoutingStore {
        &self.store
    }

    /// Now, in milliseconds since the Unix epoch, by routing's clock (what
    /// selection and statistics are written in).
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.clock.unix_millis()
    }

    /// Mirrors one service (a deleted service is mirrored as empty). Returns
    /// whether this snapshot was written (false: a newer one already was).
    pub async fn mirror(&self, service: &str) -> Result<bool, RoutingServiceError> {
        let routes = config::service_routes(&self.db, service).await?;
        let rule_error = |error| RoutingServiceError::Rule {
            service: service.to_owned(),
            error,
        };
        let mut rules: Vec<(Option<String>, Rule)> = Vec::with_capacity(routes.rollouts.len() + 1);
        if let Some(default) = &routes.default_version {
            rules.push((None, Rule::pin(default).map_err(rule_error)?));
        }
        for rollout in &routes.rollouts {
            let rule = match &rollout.canary {
                Some(canary) if rollout.canary_buckets > 0 => Rule::split(
                    &rollout.stable,
                    canary,
                    u32::try_from(rollout.canary_buckets).unwrap_or(0),
                    &rollout.salt,
                    rollout.per_user,
                ),
                _ => Rule::pin(&rollout.stable),
            }
            .map_err(rule_error)?;
            rules.push((Some(rollout.tenant_id.to_string()), rule));
        }
        let instances: Vec<MirroredInstance> = routes
            .instances
            .iter()
            .map(|i| MirroredInstance {
                id: i.id.to_string(),
                version: i.version.clone(),
                weight: u32::try_from(i.weight).unwrap_or(0),
                address: i.address.clone(),
                is_static: i.heartbeat_ttl_ms.is_none(),
            })
            .collect();
        let strategy = Strategy::parse(&routes.strategy).unwrap_or_else(|| {
            tracing::warn!(%service, strategy = %routes.strategy, "unknown strategy; using the default");
            self.strategy
        });
        self.keep_locally(
            service,
            LocalRoutes {
                revision: routes.revision,
                strategy,
                default: rules
                    .iter()
                    .find(|(tenant, _)| tenant.is_none())
                    .map(|(_, rule)| rule.clone()),
                tenants: rules
                    .iter()
                    .filter_map(|(tenant, rule)| Some((tenant.clone()?, rule.clone())))
                    .collect(),
                instances: instances.clone(),
                subject_rules: subject_rules_by_tenant(&routes.subject_rules),
                available_to: routes.available_to.iter().copied().collect(),
            },
        );
        Ok(self
            .store
            .mirror(service, routes.revision, &rules, &instances)
            .await?)
    }

    /// Keeps `routes` unless a newer snapshot of the service is already kept.
    fn keep_locally(&self, service: &str, routes: LocalRoutes) {
        if let Ok(mut local) = self.local.write() {
            match local.get(service) {
                Some(kept) if kept.revision > routes.revision => {}
                _ => {
                    local.insert(service.to_owned(), Arc::new(routes));
                }
            }
        }
    }

    fn local_routes(&self, service: &str) -> Option<Arc<LocalRoutes>> {
        self.local.read().ok()?.get(service).cloned()
    }

    /// Whether `service` is known here, available to the tenant and routes
    /// anyone (a default version or a tenant rule), from memory: the proxy
    /// answers 404 for anything else before spending a decision or a Redis
    /// round trip on it, so a tenant does not learn which services exist
    /// beyond its own.
    #[must_use]
    pub fn serves(&self, service: &str, tenant_id: Uuid) -> bool {
        self.local_routes(service).is_some_and(|routes| {
            routes.available_to.contains(&tenant_id)
                && (routes.default.is_some() || !routes.tenants.is_empty())
        })
    }

    /// Whether the platform made `service` available to the tenant, from
    /// memory (the set is mirrored with the service; a service not mirrored
    /// here yet is available to nobody).
    #[must_use]
    pub fn available(&self, service: &str, tenant_id: Uuid) -> bool {
        self.local_routes(service)
            .is_some_and(|routes| routes.available_to.contains(&tenant_id))
    }

    /// `Err(NotAvailable)` unless [`Routing::available`]: every way to a
    /// version (pick, version, resolve) passes here.
    fn require_available(&self, service: &str, tenant_id: Uuid) -> Result<(), RoutingServiceError> {
        if self.available(service, tenant_id) {
            Ok(())
        } else {
            Err(RoutingServiceError::NotAvailable(service.to_owned()))
        }
    }

    /// The version a subject rule of the tenant sends this caller to, if
    /// any (first match wins), from memory.
    #[must_use]
    pub fn forced_version(
        &self,
        service: &str,
        tenant_id: Uuid,
        facts: &SubjectFacts<'_>,
    ) -> Option<String> {
        let routes = self.local_routes(service)?;
        let rules = routes.subject_rules.get(&tenant_id.to_string())?;
        matching_version(rules, facts).map(str::to_owned)
    }

    /// How `service`'s instances are chosen here.
    #[must_use]
    pub fn strategy_of(&self, service: &str) -> Strategy {
        self.local_routes(service)
            .map_or(self.strategy, |routes| routes.strategy)
    }

    /// Mirrors every service; returns how many.
    pub async fn mirror_all(&self) -> Result<usize, RoutingServiceError> {
        let names = config::service_names(&self.db).await?;
        for name in &names {
            self.mirror(name).await?;
        }
        Ok(names.len())
    }

    /// Mirrors every service now and every [`RESYNC`] until the handle drops.
    #[must_use]
    pub fn spawn_resync(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let routing = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match routing.mirror_all().await {
                    Ok(n) => tracing::debug!(services = n, "routing mirrored"),
                    Err(e) => tracing::warn!(error = %e, "routing mirror failed; retrying"),
                }
                tokio::time::sleep(RESYNC).await;
            }
        })
    }

    /// Mirrors `service` in the background (an event named it).
    pub fn mirror_soon(self: &Arc<Self>, service: String) {
        let routing = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = routing.mirror(&service).await {
                tracing::warn!(%service, error = %e, "routing mirror failed; the next resync retries");
            }
        });
    }

    /// `instance` of `service` is alive for `ttl` from now (a heartbeat; the
    /// same clock as selection's, so the deadline means what picks read).
    pub async fn heartbeat(
        &self,
        service: &str,
        instance: Uuid,
        ttl: Duration,
    ) -> Result<(), RoutingServiceError> {
        Ok(self
            .store
            .heartbeat(service, &instance.to_string(), ttl, self.now_ms())
            .await?)
    }

    /// The version of `service` for this tenant (and user), choosing no
    /// instance: for forward auth, whose proxy routes to the version's own
    /// upstream. `None` when no rule names one.
    pub async fn version(
        &self,
        service: &str,
        tenant_id: Uuid,
        user_id: Option<Uuid>,
        forced: Option<&str>,
    ) -> Result<Option<String>, RoutingServiceError> {
        self.require_available(service, tenant_id)?;
        let tenant = tenant_id.to_string();
        let user = user_id.map(|u| u.to_string());
        Ok(self
            .store
            .version(service, &tenant, user.as_deref(), forced)
            .await?
            .map(|(version, _)| version))
    }

    /// The version of `service` for this tenant (and user) and the instance
    /// to send the request to: one Redis round trip.
    pub async fn resolve(
        &self,
        service: &str,
        tenant_id: Uuid,
        user_id: Option<Uuid>,
    ) -> Result<Picked, RoutingServiceError> {
        self.require_available(service, tenant_id)?;
        let tenant = tenant_id.to_string();
        let user = user_id.map(|u| u.to_string());
        let request = PickRequest {
            service,
            strategy: self.strategy_of(service),
            tenant: &tenant,
            user: user.as_deref(),
            forced_version: None,
            now_ms: self.now_ms(),
            lease: false,
            exclude: None,
        };
        Ok(self.store.pick(&request).await?)
    }

    /// The version and instance for one proxied request, with a
    /// least-connections lease when the service's strategy keeps them (close
    /// it with [`Routing::record`]); `exclude` leaves out an instance that
    /// just failed before the request was sent. One Redis round trip; while
    /// Redis is away (an error, or its breaker open), the pick comes from the
    /// in-memory snapshot (see the module doc) and carries no lease.
    pub async fn pick(
        &self,
        service: &str,
        tenant_id: Uuid,
        user_id: Option<Uuid>,
        forced: Option<&str>,
        exclude: Option<&str>,
    ) -> Result<Picked, RoutingServiceError> {
        // One read of the snapshot serves the availability check, the
        // strategy and a local pick.
        let routes = self
            .local_routes(service)
            .filter(|routes| routes.available_to.contains(&tenant_id))
            .ok_or_else(|| RoutingServiceError::NotAvailable(service.to_owned()))?;
        let tenant = tenant_id.to_string();
        let user = user_id.map(|u| u.to_string());
        let strategy = routes.strategy;
        let now = self.now_ms();
        let local = |why_prefix| LocalPick {
            service,
            tenant: &tenant,
            user: user.as_deref(),
            forced,
            exclude,
            strategy,
            now_ms: now,
            panic_percent: self.store.settings().panic_percent,
            why_prefix,
        };
        // The fast path: no state shared between gateways, a fresh view.
        if matches!(strategy, Strategy::Random | Strategy::UserHash)
            && let Some(view) = self.fresh_view(service, now)
        {
            MEMORY_PICKS.increment(1);
            return Ok(pick_locally(
                &routes,
                &local(""),
                Some(&view),
                rand::random(),
            ));
        }
        if self.redis_breaker.allow_request() {
            let request = PickRequest {
                service,
                strategy,
                tenant: &tenant,
                user: user.as_deref(),
                forced_version: forced,
                now_ms: now,
                lease: true,
                exclude,
            };
            match self.store.pick(&request).await {
                Ok(picked) => {
                    self.redis_breaker.record_success();
                    return Ok(picked);
                }
                Err(RoutingError::Redis(e)) => {
                    self.redis_breaker.record_failure();
                    tracing::warn!(%service, error = %e, "routing picks from the local snapshot while Redis is away");
                }
                Err(e) => return Err(e.into()),
            }
        }
        LOCAL_PICKS.increment(1);
        Ok(pick_locally(
            &routes,
            &local("local:"),
            None,
            rand::random(),
        ))
    }

    /// What this gateway learnt itself goes into its health view at once (other
    /// gateways read it within [`UPKEEP`]): the breaker of `instance` is open.
    fn mark_open(&self, service: &str, instance: &str, until_ms: u64) {
        if let Ok(mut views) = self.views.write()
            && let Some((read_at, view)) = views.get(service)
        {
            let mut updated = HealthView::clone(view);
            updated.open_until.insert(instance.to_owned(), until_ms);
            let read_at = *read_at;
            views.insert(service.to_owned(), (read_at, Arc::new(updated)));
        }
    }

    /// `service`'s health view, if it was read within [`VIEW_MAX_AGE_MS`].
    fn fresh_view(&self, service: &str, now: u64) -> Option<Arc<HealthView>> {
        let views = self.views.read().ok()?;
        let (read_at, view) = views.get(service)?;
        (now.saturating_sub(*read_at) <= VIEW_MAX_AGE_MS).then(|| Arc::clone(view))
    }

    /// Writes the batched successes and statistics, and reads the health
    /// views of the services picked in memory: every [`UPKEEP`] until the
    /// handle drops.
    #[must_use]
    pub fn spawn_upkeep(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let routing = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP).await;
                routing.upkeep().await;
            }
        })
    }

    /// One round of [`Routing::spawn_upkeep`]'s work.
    pub async fn upkeep(&self) {
        let pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let now = self.now_ms();
        for (service, outcomes) in pending {
            for (instance, successes) in &outcomes.successes {
                // One success resets the consecutive failures and moves the
                // health one step; the rest of the batch adds nothing more.
                if let Err(e) = self.store.record(&service, instance, true, None, now).await {
                    tracing::warn!(%service, %instance, %successes, error = %e, "batched outcomes not written");
                }
            }
            let stats = outcomes
                .stats
                .into_iter()
                .map(|(tenant, by_version)| (tenant.to_string(), by_version))
                .collect();
            if let Err(e) = self.store.add_stats(&service, &stats, now).await {
                tracing::warn!(%service, error = %e, "batched statistics not written");
            }
        }
        let in_memory: Vec<String> = self
            .local
            .read()
            .map(|local| {
                local
                    .iter()
                    .filter(|(_, r)| matches!(r.strategy, Strategy::Random | Strategy::UserHash))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for service in in_memory {
            match self.store.health_view(&service, now).await {
                Ok(view) => {
                    if let Ok(mut views) = self.views.write() {
                        views.insert(service, (now, Arc::new(view)));
                    }
                }
                Err(e) => tracing::debug!(%service, error = %e, "health view not read"),
            }
        }
    }

    /// A success with no lease to close is batched (written within
    /// [`UPKEEP`]) without waiting for anything: `true` when this outcome was
    /// one; anything else needs [`Routing::record`]. `tenant` is the caller's
    /// tenant: the success counts in its canary statistics when its own
    /// rollout chose the version ([`counts_for_canary`]).
    pub fn batch_success(
        &self,
        pick: &Pick,
        service: &str,
        tenant: Uuid,
        ok: bool,
        latency: Duration,
    ) -> bool {
        if !ok || pick.lease.is_some() {
            return false;
        }
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let service = match pending.get_mut(service) {
            Some(existing) => existing,
            None => pending.entry(service.to_owned()).or_default(),
        };
        match service.successes.get_mut(&pick.instance) {
            Some(count) => *count += 1,
            None => {
                service.successes.insert(pick.instance.clone(), 1);
            }
        }
        if counts_for_canary(&pick.why) {
            // The version's name is copied only the first time in a batch.
            let by_version = service.stats.entry(tenant).or_default();
            match by_version.get_mut(&pick.version) {
                Some(stats) => stats.count(true, latency),
                None => by_version
                    .entry(pick.version.clone())
                    .or_default()
                    .count(true, latency),
            }
        }
        true
    }

    /// How a proxied request of `tenant` went on the picked instance: closes
    /// its lease, moves its health, drives its breaker and counts it in the
    /// tenant's statistics of its version when the tenant's rollout chose it
    /// (canary analysis). `None` when Redis could not take it (logged; the
    /// breaker and the statistics then miss one outcome).
    pub async fn record(
        &self,
        pick: &Pick,
        service: &str,
        tenant: Uuid,
        ok: bool,
        latency: Duration,
    ) -> Option<BreakerState> {
        if self.batch_success(pick, service, tenant, ok, latency) {
            return None;
        }
        if !self.redis_breaker.allow_request() {
            return None;
        }
        let instance = pick.instance.as_str();
        let tenant = if counts_for_canary(&pick.why) {
            tenant.to_string()
        } else {
            String::new()
        };
        let outcome = Outcome {
            service,
            instance,
            version: &pick.version,
            tenant: &tenant,
            ok,
            latency,
            lease: pick.lease.as_deref(),
            now_ms: self.now_ms(),
        };
        match self.store.record_request(&outcome).await {
            Ok(state) => {
                self.redis_breaker.record_success();
                if state.opened_now {
                    tracing::warn!(%service, %instance, ejections = state.ejections, open_until_ms = state.open_until_ms, "instance ejected: its breaker opened");
                    metrics::counter!("gatehouse_routing_ejections_total", "service" => service.to_owned()).increment(1);
                }
                if state.open {
                    self.mark_open(service, instance, state.open_until_ms);
                }
                Some(state)
            }
            Err(e) => {
                if matches!(e, RoutingError::Redis(_)) {
                    self.redis_breaker.record_failure();
                }
                tracing::warn!(%service, %instance, error = %e, "could not record a routing outcome");
                None
            }
        }
    }
}

/// One pick from memory.
#[derive(Debug, Clone, Copy)]
struct LocalPick<'a> {
    service: &'a str,
    tenant: &'a str,
    user: Option<&'a str>,
    forced: Option<&'a str>,
    exclude: Option<&'a str>,
    strategy: Strategy,
    now_ms: u64,
    panic_percent: u8,
    /// `local:` for the fallback while Redis is away, empty for the fast path.
    why_prefix: &'static str,
}

/// The version of the first rule the caller matches.
fn matching_version<'r>(rules: &'r [SubjectRule], facts: &SubjectFacts<'_>) -> Option<&'r str> {
    rules
        .iter()
        .find(|rule| match (&rule.role, &rule.attribute) {
            (Some(role), _) => facts.roles.iter().any(|r| r == role),
            (None, Some((name, value))) => facts.attributes.get(name) == Some(value),
            (None, None) => false,
        })
        .map(|rule| rule.version.as_str())
}

/// Subject rules grouped by tenant, in the order they are tried.
fn subject_rules_by_tenant(rows: &[config::SubjectRuleRow]) -> HashMap<String, Vec<SubjectRule>> {
    let mut by_tenant: HashMap<String, Vec<SubjectRule>> = HashMap::new();
    for row in rows {
        by_tenant
            .entry(row.tenant_id.to_string())
            .or_default()
            .push(SubjectRule {
                role: row.role.clone(),
                attribute: row.attribute.clone().zip(row.equals.clone()),
                version: row.version.clone(),
            });
    }
    by_tenant
}

/// A pick from the in-memory snapshot: the rollout as Lua applies it, then a
/// weighted random choice among the version's instances (`random` in
/// `[0, 2^32)`). No heartbeats, breakers or leases: those live in Redis.
fn pick_locally(
    routes: &LocalRoutes,
    request: &LocalPick<'_>,
    view: Option<&HealthView>,
    random: u32,
) -> Picked {
    let LocalPick {
        service,
        tenant,
        user,
        forced,
        exclude,
        ..
    } = *request;
    let (version, scope, side) = if let Some(forced) = forced {
        (forced, "subject_rule", Side::Pinned)
    } else {
        let (rule, scope) = match routes.tenants.get(tenant) {
            Some(rule) => (rule, "tenant_rule"),
            None => match &routes.default {
                Some(rule) => (rule, "default"),
                None => return Picked::NoVersion,
            },
        };
        let (version, side) = rule.version_for(service, tenant, user);
        (version, scope, side)
    };
    let choice = gatehouse_routing::local::choose(
        &routes.instances,
        view,
        &LocalRequest {
            strategy: request.strategy,
            version,
            key: user.unwrap_or(tenant),
            exclude,
            now_ms: request.now_ms,
            random,
            panic_percent: request.panic_percent,
        },
    );
    let Some(choice) = choice else {
        return Picked::NoInstance {
            version: version.to_owned(),
        };
    };
    let side = match side {
        Side::Canary => ":canary",
        Side::Stable => ":stable",
        Side::Pinned => "",
    };
    Picked::Instance(Pick {
        version: version.to_owned(),
        instance: choice.instance.id.clone(),
        address: choice.instance.address.clone(),
        why: format!("{}{scope}{side}", request.why_prefix),
        lease: None,
        panic: choice.panic,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "test")]
mod tests {
    use super::*;

    fn instance(id: &str, version: &str, weight: u32) -> MirroredInstance {
        MirroredInstance {
            id: id.to_owned(),
            version: version.to_owned(),
            weight,
            address: format!("127.0.0.1:{}", 9000 + weight),
            is_static: true,
        }
    }

    fn routes() -> LocalRoutes {
        let tenant_rule = Rule::split("v1", "v2", 10_000, "salt", false).unwrap();
        LocalRoutes {
            revision: 1,
            strategy: Strategy::Weighted,
            default: Some(Rule::pin("v1").unwrap()),
            tenants: HashMap::from([("t-canary".to_owned(), tenant_rule)]),
            subject_rules: HashMap::new(),
            available_to: std::collections::HashSet::new(),
            instances: vec![
                instance("a", "v1", 1),
                instance("b", "v1", 3),
                instance("c", "v2", 1),
                instance("d", "v2", 0),
            ],
        }
    }

    fn at<'a>(tenant: &'a str, forced: Option<&'a str>, exclude: Option<&'a str>) -> LocalPick<'a> {
        LocalPick {
            service: "orders",
            tenant,
            user: None,
            forced,
            exclude,
            strategy: Strategy::Random,
            now_ms: 0,
            panic_percent: 50,
            why_prefix: "local:",
        }
    }

    #[test]
    fn a_subject_rule_wins_over_the_rollout_and_the_first_match_wins() {
        let mut routes = routes();
        let rows = [
            ("beta-tester", None, "v2"),
            ("", Some(("plan", serde_json::json!("gold"))), "v1"),
        ]
        .into_iter()
        .enumerate()
        .map(|(n, (role, attribute, version))| config::SubjectRuleRow {
            id: Uuid::new_v4(),
            tenant_id: Uuid::nil(),
            service: "orders".into(),
            version: version.into(),
            role: (!role.is_empty()).then(|| role.to_owned()),
            attribute: attribute.as_ref().map(|(a, _)| (*a).to_owned()),
            equals: attribute.map(|(_, v)| v),
            position: i32::try_from(n).unwrap(),
        })
        .collect::<Vec<_>>();
        routes.subject_rules = subject_rules_by_tenant(&rows);
        let tried = &routes.subject_rules[&Uuid::nil().to_string()];
        let mut attributes = serde_json::Map::new();
        let none: [String; 0] = [];
        let facts = |roles: &'static [&'static str],
                     attributes: &serde_json::Map<String, serde_json::Value>| {
            let held: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
            matching_version(
                tried,
                &SubjectFacts {
                    roles: &held,
                    attributes,
                },
            )
            .map(str::to_owned)
        };
        assert_eq!(facts(&["member"], &attributes), None);
        assert_eq!(
            facts(&["member", "beta-tester"], &attributes).as_deref(),
            Some("v2")
        );
        attributes.insert("plan".into(), serde_json::json!("gold"));
        assert_eq!(facts(&[], &attributes).as_deref(), Some("v1"));
        assert_eq!(
            facts(&["beta-tester"], &attributes).as_deref(),
            Some("v2"),
            "the first rule wins"
        );
        attributes.insert("plan".into(), serde_json::json!("silver"));
        assert_eq!(
            matching_version(
                tried,
                &SubjectFacts {
                    roles: &none,
                    attributes: &attributes
                }
            ),
            None
        );
        let forced = picked(pick_locally(
            &routes,
            &at("t-other", Some("v2"), None),
            None,
            1,
        ));
        assert_eq!(
            (forced.version.as_str(), forced.why.as_str()),
            ("v2", "local:subject_rule")
        );
    }

    fn picked(p: Picked) -> Pick {
        match p {
            Picked::Instance(pick) => pick,
            other => panic!("expected an instance, got {other:?}"),
        }
    }

    #[test]
    fn local_picks_follow_the_rollout_and_the_weights() {
        let routes = routes();
        let mut counts = HashMap::new();
        for n in 0..4_000u32 {
            let pick = picked(pick_locally(
                &routes,
                &at("t-other", None, None),
                None,
                n.wrapping_mul(2_654_435_761),
            ));
            assert_eq!(pick.version, "v1");
            assert_eq!(pick.why, "local:default");
            assert!(pick.lease.is_none());
            *counts.entry(pick.instance).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(
            (2_700..=3_300).contains(&counts["b"]),
            "weights 1:3, {counts:?}"
        );
        let canary = picked(pick_locally(&routes, &at("t-canary", None, None), None, 7));
        assert_eq!(
            (canary.version.as_str(), canary.instance.as_str()),
            ("v2", "c")
        );
        assert_eq!(canary.why, "local:tenant_rule:canary");
    }

    #[test]
    fn local_picks_leave_out_the_excluded_and_weightless() {
        let routes = routes();
        for n in 0..50 {
            let pick = picked(pick_locally(&routes, &at("t", None, Some("b")), None, n));
            assert_eq!(pick.instance, "a");
        }
        assert_eq!(
            pick_locally(&routes, &at("t-canary", None, Some("c")), None, 1),
            Picked::NoInstance {
                version: "v2".into()
            }
        );
        let empty = LocalRoutes {
            default: None,
            tenants: HashMap::new(),
            ..routes
        };
        assert_eq!(
            pick_locally(&empty, &at("t", None, None), None, 1),
            Picked::NoVersion
        );
    }
}
