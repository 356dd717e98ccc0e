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

use std::sync::Arc;
use std::time::Duration;

use gatehouse_routing::{
    MirroredInstance, PickRequest, Picked, RoutingError, RoutingStore, Rule, RuleError, Strategy,
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
}

/// Mirrors configuration and resolves requests.
pub struct Routing {
    db: PgPool,
    store: RoutingStore,
    /// For services this instance has not mirrored yet.
    strategy: Strategy,
    /// Each service's strategy and the revision it was read at (a slower
    /// mirror of an older snapshot never replaces a newer one here either).
    strategies: std::sync::RwLock<std::collections::HashMap<String, (i64, Strategy)>>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Routing {
    /// Routing over `db` (configuration) and `store` (the Redis mirror and
    /// live state); `strategy` serves services until their own is mirrored.
    #[must_use]
    pub fn new(db: PgPool, store: RoutingStore, strategy: Strategy) -> Self {
        Self {
            db,
            store,
            strategy,
            strategies: std::sync::RwLock::new(std::collections::HashMap::new()),
        }
    }

    /// The live state in Redis (heartbeats, outcomes).
    #[must_use]
    pub fn store(&self) -> &RoutingStore {
        &self.store
    }

    /// Mirrors one service (a deleted service is mirrored as empty). Returns
    /// whether this snapshot was written (false: a newer one already was).
    pub async fn mirror(&self, service: &str) -> Result<bool, RoutingServiceError> {
        let routes = config::service_routes(&self.db, service).await?;
        let rule_error = |error| RoutingServiceError::Rule {
            service: service.to_owned(),
            error,
        };
        let mut rules = Vec::with_capacity(routes.rollouts.len() + 1);
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
        if let Ok(mut strategies) = self.strategies.write() {
            let entry = strategies
                .entry(service.to_owned())
                .or_insert((routes.revision, strategy));
            if routes.revision >= entry.0 {
                *entry = (routes.revision, strategy);
            }
        }
        Ok(self
            .store
            .mirror(service, routes.revision, &rules, &instances)
            .await?)
    }

    /// How `service`'s instances are chosen here.
    #[must_use]
    pub fn strategy_of(&self, service: &str) -> Strategy {
        self.strategies
            .read()
            .ok()
            .and_then(|s| s.get(service).map(|(_, strategy)| *strategy))
            .unwrap_or(self.strategy)
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
            .heartbeat(service, &instance.to_string(), ttl, now_ms())
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
    ) -> Result<Option<String>, RoutingServiceError> {
        let tenant = tenant_id.to_string();
        let user = user_id.map(|u| u.to_string());
        Ok(self
            .store
            .version(service, &tenant, user.as_deref(), None)
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
        let tenant = tenant_id.to_string();
        let user = user_id.map(|u| u.to_string());
        let request = PickRequest {
            service,
            strategy: self.strategy_of(service),
            tenant: &tenant,
            user: user.as_deref(),
            forced_version: None,
            now_ms: now_ms(),
            lease: false,
        };
        Ok(self.store.pick(&request).await?)
    }
}
