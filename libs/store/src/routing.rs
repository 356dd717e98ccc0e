//! Routing configuration (the source of truth the gateways mirror into Redis):
//! a service's versions, instances and per-tenant rollouts, read in one
//! snapshot per service.

use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

/// One instance of a version.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InstanceRow {
    /// Instance id (the selection scripts' name for it).
    pub id: Uuid,
    /// Its version label.
    pub version: String,
    /// `host:port`.
    pub address: String,
    /// Relative weight (0: drained, never picked).
    pub weight: i32,
    /// `None`: static, alive until deregistered; else the heartbeat TTL.
    pub heartbeat_ttl_ms: Option<i32>,
}

/// A tenant's rollout of one service.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RolloutRow {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The version most of its traffic stays on.
    pub stable: String,
    /// The version being rolled out, if any.
    pub canary: Option<String>,
    /// Buckets (of 10 000) on the canary.
    pub canary_buckets: i32,
    /// Which tenants go first.
    pub salt: String,
    /// Split per user rather than per tenant.
    pub per_user: bool,
}

/// Everything the gateways mirror for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRoutes {
    /// The service name.
    pub name: String,
    /// The newest outbox id this snapshot includes: mirrors carry it so an
    /// older snapshot never overwrites a newer one.
    pub revision: i64,
    /// The version tenants get without a rollout, if one is marked default.
    pub default_version: Option<String>,
    /// Active instances (deregistered ones are left out).
    pub instances: Vec<InstanceRow>,
    /// Per-tenant rollouts.
    pub rollouts: Vec<RolloutRow>,
}

/// Every service name (for a full mirror at start-up).
pub async fn service_names(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM services ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}

/// One service's routing configuration, read in one transaction (a
/// consistent snapshot). A service that does not exist (any more) has no
/// default, no instances and no rollouts: mirrored, it routes nothing.
pub async fn service_routes(pool: &PgPool, name: &str) -> Result<ServiceRoutes, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let revision: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM outbox_events")
        .fetch_one(&mut *tx)
        .await?;
    let Some(service_id): Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM services WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
    else {
        tx.commit().await?;
        return Ok(ServiceRoutes {
            name: name.to_owned(),
            revision,
            default_version: None,
            instances: Vec::new(),
            rollouts: Vec::new(),
        });
    };
    let default_version: Option<String> = sqlx::query_scalar(
        "SELECT version FROM service_versions WHERE service_id = $1 AND is_default",
    )
    .bind(service_id)
    .fetch_optional(&mut *tx)
    .await?;
    let instances = sqlx::query_as::<_, InstanceRow>(
        "SELECT i.id, v.version, i.address, i.weight, i.heartbeat_ttl_ms
           FROM service_instances i JOIN service_versions v ON v.id = i.version_id
          WHERE i.service_id = $1 AND i.status = 'active'
          ORDER BY i.id",
    )
    .bind(service_id)
    .fetch_all(&mut *tx)
    .await?;
    let rollouts = sqlx::query_as::<_, RolloutRow>(
        "SELECT r.tenant_id, s.version AS stable, c.version AS canary, r.canary_buckets,
                r.salt, r.per_user
           FROM tenant_rollouts r
           JOIN service_versions s ON s.id = r.stable_version_id
           LEFT JOIN service_versions c ON c.id = r.canary_version_id
          WHERE r.service_id = $1
          ORDER BY r.tenant_id",
    )
    .bind(service_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ServiceRoutes {
        name: name.to_owned(),
        revision,
        default_version,
        instances,
        rollouts,
    })
}
