//! Routing configuration (the source of truth the gateways mirror into Redis):
//! a service's versions, instances and per-tenant rollouts, read in one
//! snapshot per service.

use sqlx::{PgConnection, PgPool};
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
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRoutes {
    /// The service name.
    pub name: String,
    /// The newest outbox id this snapshot includes: mirrors carry it so an
    /// older snapshot never overwrites a newer one.
    pub revision: i64,
    /// How instances are chosen (`weighted` for a service that does not exist).
    pub strategy: String,
    /// The version tenants get without a rollout, if one is marked default.
    pub default_version: Option<String>,
    /// Active instances (deregistered ones are left out).
    pub instances: Vec<InstanceRow>,
    /// Per-tenant rollouts.
    pub rollouts: Vec<RolloutRow>,
    /// Per-tenant subject rules, in the order they are tried.
    pub subject_rules: Vec<SubjectRuleRow>,
    /// The tenants the service is available to (migration
    /// 20261204000001): nobody else is routed to it.
    pub available_to: Vec<Uuid>,
}

/// A subject rule: the tenant's users holding `role`, or whose `attribute`
/// equals `equals`, go to `version`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct SubjectRuleRow {
    /// The rule's id.
    pub id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// The service.
    pub service: String,
    /// The version its users go to.
    pub version: String,
    /// A role the user holds (effective: assigned or inherited, unexpired).
    pub role: Option<String>,
    /// An attribute of the user...
    pub attribute: Option<String>,
    /// ...equal to this value.
    pub equals: Option<serde_json::Value>,
    /// Tried in ascending order.
    pub position: i32,
}

/// The columns of [`SubjectRuleRow`].
const SUBJECT_RULE: &str = "r.id, r.tenant_id, sv.name AS service, v.version, r.role, r.attribute,
    r.equals, r.position
    FROM service_subject_rules r
    JOIN services sv ON sv.id = r.service_id
    JOIN service_versions v ON v.id = r.version_id";

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
    let Some((service_id, strategy)): Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, strategy FROM services WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
    else {
        tx.commit().await?;
        return Ok(ServiceRoutes {
            name: name.to_owned(),
            revision,
            strategy: "weighted".to_owned(),
            default_version: None,
            instances: Vec::new(),
            rollouts: Vec::new(),
            subject_rules: Vec::new(),
            available_to: Vec::new(),
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
          WHERE i.service_id = $1 AND i.status = 'active' AND v.status <> 'retired'
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
    let subject_rules = sqlx::query_as::<_, SubjectRuleRow>(&format!(
        "SELECT {SUBJECT_RULE} WHERE r.service_id = $1 ORDER BY r.tenant_id, r.position, r.created_at, r.id"
    ))
    .bind(service_id)
    .fetch_all(&mut *tx)
    .await?;
    let available_to: Vec<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM tenant_services WHERE service_id = $1 ORDER BY tenant_id",
    )
    .bind(service_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ServiceRoutes {
        name: name.to_owned(),
        revision,
        strategy,
        default_version,
        instances,
        rollouts,
        subject_rules,
        available_to,
    })
}

// ---------------------------------------------------------------- admin writes
//
// Each write is one statement; the triggers of migration 20261203000004 add the
// `routing.changed` outbox row in the same transaction, so every gateway
// re-mirrors the service at once, whoever wrote it.

/// A service as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// How instances are chosen.
    pub strategy: String,
    /// Version labels, oldest first.
    pub versions: Vec<String>,
    /// The default version, if any.
    pub default_version: Option<String>,
    /// Registered (not deregistered) instances.
    pub instances: i64,
    /// Each version's status (`active`, `draining`, `retired`).
    pub version_status: Option<serde_json::Value>,
}

/// One version of a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct VersionView {
    /// The label.
    pub version: String,
    /// Tenants without a rule get it.
    pub is_default: bool,
    /// `active`, `draining` or `retired`.
    pub status: String,
}

/// The service's versions, oldest first (empty for an unknown service).
pub async fn list_versions<'e>(
    db: impl sqlx::PgExecutor<'e>,
    service: &str,
) -> Result<Vec<VersionView>, StoreError> {
    Ok(sqlx::query_as::<_, VersionView>(
        "SELECT v.version, v.is_default, v.status
           FROM service_versions v JOIN services s ON s.id = v.service_id
          WHERE s.name = $1 ORDER BY v.created_at",
    )
    .bind(service)
    .fetch_all(db)
    .await?)
}

/// Moves a version to `status`; `false` when there is no such version.
/// The triggers of migration 20261203000008 refuse (`Conflict`, with the
/// reason) retiring a version in use.
pub async fn set_version_status(
    conn: &mut PgConnection,
    service: &str,
    version: &str,
    status: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE service_versions v SET status = $3
           FROM services s
          WHERE s.id = v.service_id AND s.name = $1 AND v.version = $2 AND v.status <> $3",
    )
    .bind(service)
    .bind(version)
    .bind(status)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(true);
    }
    Ok(list_versions(&mut *conn, service)
        .await?
        .iter()
        .any(|v| v.version == version))
}

/// Every service with its versions.
pub async fn list_services(pool: &PgPool) -> Result<Vec<ServiceView>, StoreError> {
    Ok(
        sqlx::query_as::<_, ServiceView>(&format!("{SERVICE_VIEW} GROUP BY s.id ORDER BY s.name"))
            .fetch_all(pool)
            .await?,
    )
}

/// The select of [`ServiceView`], before its `WHERE` and `GROUP BY s.id`.
const SERVICE_VIEW: &str = "SELECT s.name, s.description, s.strategy,
        COALESCE(array_agg(v.version ORDER BY v.created_at) FILTER (WHERE v.id IS NOT NULL), '{}') AS versions,
        max(v.version) FILTER (WHERE v.is_default) AS default_version,
        (SELECT count(*) FROM service_instances i
          WHERE i.service_id = s.id AND i.status <> 'deregistered') AS instances,
        jsonb_object_agg(v.version, v.status) FILTER (WHERE v.id IS NOT NULL) AS version_status
   FROM services s LEFT JOIN service_versions v ON v.service_id = s.id";

/// Creates a service (`Conflict` when the name is taken). `strategy` must
/// be one the schema allows (the caller checks it).
pub async fn create_service(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
    strategy: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO services (id, name, description, strategy) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(description)
        .bind(strategy)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Changes how a service's instances are chosen; `false` when there is no
/// such service.
pub async fn set_strategy(
    conn: &mut PgConnection,
    name: &str,
    strategy: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE services SET strategy = $2, updated_at = now() WHERE name = $1")
        .bind(name)
        .bind(strategy)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn service_id<'e>(
    db: impl sqlx::PgExecutor<'e>,
    name: &str,
) -> Result<Option<Uuid>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM services WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?,
    )
}

/// The id of `service` when it is available to the tenant: `NoService` when
/// it does not exist, `NotAvailable` when the platform has not made it
/// available to the tenant. (The foreign keys of migration 20261204000001
/// refuse a rollout or rule for a pair withdrawn meanwhile.)
async fn available_service_id(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &str,
) -> Result<Uuid, WriteError> {
    let found: Option<(Uuid, bool)> = sqlx::query_as(
        "SELECT s.id, EXISTS (SELECT 1 FROM tenant_services a
                               WHERE a.service_id = s.id AND a.tenant_id = $2)
           FROM services s WHERE s.name = $1",
    )
    .bind(service)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::from)?;
    match found {
        None => Err(WriteError::NoService(service.to_owned())),
        Some((_, false)) => Err(WriteError::NotAvailable(service.to_owned())),
        Some((id, true)) => Ok(id),
    }
}

/// A tenant a service is available to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct AvailabilityView {
    /// The tenant's slug.
    pub tenant: String,
    /// Since when.
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: time::OffsetDateTime,
}

/// The tenants `service` is available to, by slug; `None` for an unknown
/// service.
pub async fn service_tenants(
    pool: &PgPool,
    service: &str,
) -> Result<Option<Vec<AvailabilityView>>, StoreError> {
    let Some(service_id) = service_id(pool, service).await? else {
        return Ok(None);
    };
    Ok(Some(
        sqlx::query_as::<_, AvailabilityView>(
            "SELECT t.slug AS tenant, a.granted_at
               FROM tenant_services a JOIN tenants t ON t.id = a.tenant_id
              WHERE a.service_id = $1 ORDER BY t.slug",
        )
        .bind(service_id)
        .fetch_all(pool)
        .await?,
    ))
}

/// Makes `service` available to the tenant; `Ok(true)` when it was not yet.
pub async fn make_available(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &str,
    actor: Option<Uuid>,
) -> Result<bool, WriteError> {
    let service_id = service_id(&mut *conn, service)
        .await?
        .ok_or_else(|| WriteError::NoService(service.to_owned()))?;
    let done = sqlx::query(
        "INSERT INTO tenant_services (tenant_id, service_id, granted_by) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(service_id)
    .bind(actor)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from)?;
    Ok(done.rows_affected() == 1)
}

/// What withdrawing a service from a tenant removed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Withdrawn {
    /// The tenant's rollout of the service (0 or 1).
    pub rollouts: i64,
    /// The tenant's subject rules for the service.
    pub subject_rules: i64,
}

/// Withdraws `service` from the tenant, with the tenant's rollout and
/// subject rules for it (the foreign keys cascade), in one transaction;
/// `Ok(None)` when it was not available.
pub async fn withdraw(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &str,
) -> Result<Option<Withdrawn>, WriteError> {
    let service_id = service_id(&mut *conn, service)
        .await?
        .ok_or_else(|| WriteError::NoService(service.to_owned()))?;
    let (rollouts, subject_rules): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenant_rollouts WHERE tenant_id = $1 AND service_id = $2),
                (SELECT count(*) FROM service_subject_rules WHERE tenant_id = $1 AND service_id = $2)",
    )
    .bind(tenant_id)
    .bind(service_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::from)?;
    let done = sqlx::query("DELETE FROM tenant_services WHERE tenant_id = $1 AND service_id = $2")
        .bind(tenant_id)
        .bind(service_id)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from)?;
    Ok((done.rows_affected() == 1).then_some(Withdrawn {
        rollouts,
        subject_rules,
    }))
}

/// The services available to the tenant, with their versions.
pub async fn tenant_services(
    pool: &PgPool,
    tenant_id: Uuid,
) -> Result<Vec<ServiceView>, StoreError> {
    Ok(sqlx::query_as::<_, ServiceView>(&format!(
        "{SERVICE_VIEW} WHERE s.id IN (SELECT service_id FROM tenant_services WHERE tenant_id = $1)
          GROUP BY s.id ORDER BY s.name"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}

/// Adds a version to a service (the first one becomes the default).
/// `Ok(false)` when there is no such service; `Conflict` when it exists.
pub async fn create_version(
    conn: &mut PgConnection,
    service: &str,
    version: &str,
    make_default: bool,
) -> Result<bool, StoreError> {
    let Some(service_id) = service_id(&mut *conn, service).await? else {
        return Ok(false);
    };
    let has_default: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM service_versions WHERE service_id = $1 AND is_default)",
    )
    .bind(service_id)
    .fetch_one(&mut *conn)
    .await?;
    let default = make_default || !has_default;
    if default {
        sqlx::query(
            "UPDATE service_versions SET is_default = false WHERE service_id = $1 AND is_default",
        )
        .bind(service_id)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO service_versions (id, service_id, version, is_default) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(service_id)
    .bind(version)
    .bind(default)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Makes `version` the service's default. `Ok(false)` when either is unknown.
pub async fn set_default_version(
    conn: &mut PgConnection,
    service: &str,
    version: &str,
) -> Result<bool, StoreError> {
    let Some(service_id) = service_id(&mut *conn, service).await? else {
        return Ok(false);
    };
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM service_versions WHERE service_id = $1 AND version = $2)",
    )
    .bind(service_id)
    .bind(version)
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE service_versions SET is_default = (version = $2)
          WHERE service_id = $1 AND is_default <> (version = $2)",
    )
    .bind(service_id)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// A new instance.
#[derive(Debug, Clone)]
pub struct NewInstance<'a> {
    /// Its version label.
    pub version: &'a str,
    /// `host:port`.
    pub address: &'a str,
    /// Relative weight (0..=10000).
    pub weight: i32,
    /// `None`: static; else it must heartbeat within this.
    pub heartbeat_ttl_ms: Option<i32>,
}

/// Why an instance or a rollout could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No such service.
    #[error("no service {0:?}")]
    NoService(String),
    /// No such version of the service.
    #[error("service {service:?} has no version {version:?}")]
    NoVersion {
        /// The service.
        service: String,
        /// The version named.
        version: String,
    },
    /// The service exists but is not available to the tenant.
    #[error(
        "service {0:?} is not available to this tenant (a platform administrator makes it available with PUT /admin/api/v1/services/{0}/tenants/<tenant>)"
    )]
    NotAvailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Registers (or re-activates, with new settings) an instance; returns its id.
pub async fn register_instance(
    conn: &mut PgConnection,
    service: &str,
    instance: &NewInstance<'_>,
) -> Result<Uuid, WriteError> {
    let service_id = service_id(&mut *conn, service)
        .await?
        .ok_or_else(|| WriteError::NoService(service.to_owned()))?;
    let version_id: Uuid = sqlx::query_scalar(
        "SELECT id FROM service_versions WHERE service_id = $1 AND version = $2",
    )
    .bind(service_id)
    .bind(instance.version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::from)?
    .ok_or_else(|| WriteError::NoVersion {
        service: service.to_owned(),
        version: instance.version.to_owned(),
    })?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO service_instances (id, service_id, version_id, address, weight, heartbeat_ttl_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (version_id, address) DO UPDATE
            SET weight = EXCLUDED.weight, heartbeat_ttl_ms = EXCLUDED.heartbeat_ttl_ms,
                status = 'active', updated_at = now()
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(service_id)
    .bind(version_id)
    .bind(instance.address)
    .bind(instance.weight)
    .bind(instance.heartbeat_ttl_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::from)?;
    Ok(id)
}

/// An active instance's heartbeat TTL (`Some(None)`: static); `None` when the
/// service has no such active instance.
pub async fn instance_ttl(
    pool: &PgPool,
    service: &str,
    instance: Uuid,
) -> Result<Option<Option<i32>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT i.heartbeat_ttl_ms FROM service_instances i JOIN services s ON s.id = i.service_id
          WHERE s.name = $1 AND i.id = $2 AND i.status = 'active'",
    )
    .bind(service)
    .bind(instance)
    .fetch_optional(pool)
    .await?)
}

/// Deregisters an instance; `false` when the service has no such active one.
pub async fn deregister_instance(
    conn: &mut PgConnection,
    service: &str,
    instance: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE service_instances i SET status = 'deregistered', updated_at = now()
           FROM services s
          WHERE s.id = i.service_id AND s.name = $1 AND i.id = $2 AND i.status <> 'deregistered'",
    )
    .bind(service)
    .bind(instance)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A tenant's rollout as the admin API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct RolloutView {
    /// The service.
    pub service: String,
    /// The version most traffic stays on.
    pub stable: String,
    /// The version being rolled out.
    pub canary: Option<String>,
    /// Buckets (of 10 000) on the canary.
    pub canary_buckets: i32,
    /// Which tenants go first.
    pub salt: String,
    /// Split per user.
    pub per_user: bool,
    /// Bumped by every change.
    pub revision: i32,
    /// `steady`, `ramping`, `completed` or `rolled_back`.
    pub state: String,
    /// Why it is in that state (the analysis's finding, the step taken).
    pub state_reason: Option<String>,
    /// Canary buckets of each ramp step (empty: no ramp).
    pub ramp_steps: Vec<i32>,
    /// Seconds between ramp steps.
    pub ramp_interval_s: Option<i32>,
    /// When the next ramp step is due.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_step_at: Option<time::OffsetDateTime>,
    /// How the canary is judged (`gatehouse_routing::canary::Analysis`).
    pub analysis: Option<serde_json::Value>,
}

/// The columns of [`RolloutView`], for every query that returns one.
const ROLLOUT_VIEW: &str = "sv.name AS service, s.version AS stable, c.version AS canary,
    r.canary_buckets, r.salt, r.per_user, r.revision, r.state, r.state_reason, r.ramp_steps,
    r.ramp_interval_s, r.next_step_at, r.analysis";

/// The tenant's rollouts.
pub async fn list_rollouts<'e>(
    db: impl sqlx::PgExecutor<'e>,
    tenant_id: Uuid,
) -> Result<Vec<RolloutView>, StoreError> {
    Ok(sqlx::query_as::<_, RolloutView>(&format!(
        "SELECT {ROLLOUT_VIEW}
           FROM tenant_rollouts r
           JOIN services sv ON sv.id = r.service_id
           JOIN service_versions s ON s.id = r.stable_version_id
           LEFT JOIN service_versions c ON c.id = r.canary_version_id
          WHERE r.tenant_id = $1 ORDER BY sv.name"
    ))
    .bind(tenant_id)
    .fetch_all(db)
    .await?)
}

/// A rollout as written.
#[derive(Debug, Clone)]
pub struct NewRollout<'a> {
    /// The version most traffic stays on.
    pub stable: &'a str,
    /// The version being rolled out (`None`: a pin to `stable`).
    pub canary: Option<&'a str>,
    /// Buckets (of 10 000) on the canary.
    pub canary_buckets: i32,
    /// Which tenants go first.
    pub salt: &'a str,
    /// Split per user.
    pub per_user: bool,
    /// A ramp: canary buckets of each step (the first applies at once) and
    /// the seconds between steps. Empty: no ramp.
    pub ramp_steps: &'a [i32],
    /// Seconds between ramp steps (with `ramp_steps`).
    pub ramp_interval_s: Option<i32>,
    /// How the canary is judged (checked by the caller), or `None`.
    pub analysis: Option<&'a serde_json::Value>,
}

/// The id of `service`'s version `label`, or `NoVersion`.
async fn version_of(
    conn: &mut PgConnection,
    service_id: Uuid,
    service: &str,
    label: &str,
) -> Result<Uuid, WriteError> {
    sqlx::query_scalar::<_, Uuid>(
        "SELECT id FROM service_versions WHERE service_id = $1 AND version = $2",
    )
    .bind(service_id)
    .bind(label)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::from)?
    .ok_or_else(|| WriteError::NoVersion {
        service: service.to_owned(),
        version: label.to_owned(),
    })
}

/// Creates or replaces the tenant's rollout of `service`, keeping the
/// previous one in `previous`. With a ramp, the canary starts at the first
/// step and the rollout is `ramping`; else it is `steady`.
pub async fn put_rollout(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &str,
    rollout: &NewRollout<'_>,
    actor: Option<Uuid>,
) -> Result<RolloutView, WriteError> {
    let service_id = available_service_id(&mut *conn, tenant_id, service).await?;
    let stable = version_of(&mut *conn, service_id, service, rollout.stable).await?;
    let canary = match rollout.canary {
        Some(label) => Some(version_of(&mut *conn, service_id, service, label).await?),
        None => None,
    };
    sqlx::query(
        "INSERT INTO tenant_rollouts (tenant_id, service_id, stable_version_id, canary_version_id,
                                      canary_buckets, salt, per_user, updated_by, ramp_steps,
                                      ramp_interval_s, next_step_at, analysis, state, state_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::integer,
                 CASE WHEN cardinality($9::integer[]) > 1
                      THEN now() + make_interval(secs => $10::integer) END,
                 $11,
                 CASE WHEN cardinality($9::integer[]) > 0 THEN 'ramping' ELSE 'steady' END,
                 NULL)
         ON CONFLICT (tenant_id, service_id) DO UPDATE
            SET previous = jsonb_build_object(
                    'stable_version_id', tenant_rollouts.stable_version_id,
                    'canary_version_id', tenant_rollouts.canary_version_id,
                    'canary_buckets', tenant_rollouts.canary_buckets,
                    'salt', tenant_rollouts.salt, 'per_user', tenant_rollouts.per_user),
                stable_version_id = EXCLUDED.stable_version_id,
                canary_version_id = EXCLUDED.canary_version_id,
                canary_buckets = EXCLUDED.canary_buckets,
                salt = EXCLUDED.salt, per_user = EXCLUDED.per_user,
                updated_by = EXCLUDED.updated_by,
                ramp_steps = EXCLUDED.ramp_steps, ramp_interval_s = EXCLUDED.ramp_interval_s,
                next_step_at = EXCLUDED.next_step_at, analysis = EXCLUDED.analysis,
                state = EXCLUDED.state, state_reason = NULL,
                revision = tenant_rollouts.revision + 1, updated_at = now()",
    )
    .bind(tenant_id)
    .bind(service_id)
    .bind(stable)
    .bind(canary)
    .bind(match (canary, rollout.ramp_steps.first()) {
        (None, _) => 0,
        (Some(_), Some(first)) => *first,
        (Some(_), None) => rollout.canary_buckets,
    })
    .bind(rollout.salt)
    .bind(rollout.per_user)
    .bind(actor)
    .bind(rollout.ramp_steps)
    .bind(rollout.ramp_interval_s)
    .bind(rollout.analysis)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from)?;
    let views = list_rollouts(&mut *conn, tenant_id).await?;
    views
        .into_iter()
        .find(|v| v.service == service)
        .ok_or_else(|| WriteError::NoService(service.to_owned()))
}

/// Instant rollback: every bucket back on the stable version (the canary stays
/// named, at 0%). `None` when the tenant has no rollout of `service`.
pub async fn roll_back(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &str,
    actor: Option<Uuid>,
) -> Result<Option<RolloutView>, StoreError> {
    let done = sqlx::query(
        "UPDATE tenant_rollouts r
            SET previous = jsonb_build_object('canary_buckets', r.canary_buckets),
                canary_buckets = 0, updated_by = $3, revision = r.revision + 1, updated_at = now(),
                state = 'rolled_back', state_reason = 'rolled back by an operator',
                next_step_at = NULL
           FROM services s
          WHERE s.id = r.service_id AND r.tenant_id = $1 AND s.name = $2",
    )
    .bind(tenant_id)
    .bind(service)
    .bind(actor)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    Ok(list_rollouts(&mut *conn, tenant_id)
        .await?
        .into_iter()
        .find(|v| v.service == service))
}

/// Removes the tenant's rollout of `service` (it follows the default again).
pub async fn delete_rollout(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "DELETE FROM tenant_rollouts r USING services s
          WHERE s.id = r.service_id AND r.tenant_id = $1 AND s.name = $2",
    )
    .bind(tenant_id)
    .bind(service)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A rollout the canary controller watches: ramping, or judged by an analysis.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WatchedRollout {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The service.
    pub service: String,
    /// The version most traffic stays on.
    pub stable: String,
    /// The version being rolled out.
    pub canary: String,
    /// Buckets (of 10 000) on the canary now.
    pub canary_buckets: i32,
    /// Canary buckets of each ramp step.
    pub ramp_steps: Vec<i32>,
    /// Seconds between ramp steps.
    pub ramp_interval_s: Option<i32>,
    /// Whether the next step is due now (by the database's clock).
    pub step_due: bool,
    /// How the canary is judged, if at all.
    pub analysis: Option<serde_json::Value>,
    /// `ramping` or `steady`.
    pub state: String,
    /// The revision read: a transition applies only if it is still current.
    pub revision: i32,
}

/// Rollouts with a canary that are ramping, or that have an analysis and
/// traffic on the canary.
pub async fn watched_rollouts(pool: &PgPool) -> Result<Vec<WatchedRollout>, StoreError> {
    Ok(sqlx::query_as::<_, WatchedRollout>(
        "SELECT r.tenant_id, sv.name AS service, s.version AS stable, c.version AS canary,
                r.canary_buckets, r.ramp_steps, r.ramp_interval_s,
                COALESCE(r.next_step_at <= now(), false) AS step_due, r.analysis, r.state,
                r.revision
           FROM tenant_rollouts r
           JOIN services sv ON sv.id = r.service_id
           JOIN service_versions s ON s.id = r.stable_version_id
           JOIN service_versions c ON c.id = r.canary_version_id
          WHERE (r.state = 'ramping' OR r.analysis IS NOT NULL)
            AND r.state IN ('ramping', 'steady', 'completed') AND r.canary_buckets > 0
          ORDER BY sv.name, r.tenant_id",
    )
    .fetch_all(pool)
    .await?)
}

/// What the canary controller does to a rollout.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    /// Canary buckets from now on.
    pub canary_buckets: i32,
    /// The new state.
    pub state: &'a str,
    /// Why (shown in the admin API and the audit event).
    pub reason: &'a str,
    /// Seconds until the next ramp step, if another one follows.
    pub next_step_in_s: Option<i32>,
    /// The audit action (`rollout.step`, `rollout.completed`, `rollout.rolled_back`).
    pub action: &'a str,
}

/// Applies `transition` to the rollout as read at `watched.revision` and
/// audits it (actor: system), in one transaction. `false` when the rollout
/// changed since it was read (an operator, or another gateway, got there
/// first): nothing is written.
pub async fn transition_rollout(
    pool: &PgPool,
    watched: &WatchedRollout,
    transition: &Transition<'_>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE tenant_rollouts r
            SET previous = jsonb_build_object('canary_buckets', r.canary_buckets, 'state', r.state),
                canary_buckets = $4, state = $5, state_reason = $6,
                next_step_at = CASE WHEN $7::integer IS NULL THEN NULL
                                    ELSE now() + make_interval(secs => $7::integer) END,
                updated_by = NULL, revision = r.revision + 1, updated_at = now()
           FROM services s
          WHERE s.id = r.service_id AND r.tenant_id = $1 AND s.name = $2 AND r.revision = $3",
    )
    .bind(watched.tenant_id)
    .bind(&watched.service)
    .bind(watched.revision)
    .bind(transition.canary_buckets)
    .bind(transition.state)
    .bind(transition.reason)
    .bind(transition.next_step_in_s)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor_kind, action, target, outcome, details)
         VALUES ($1, 'system', $2, $3, 'success', $4)",
    )
    .bind(watched.tenant_id)
    .bind(transition.action)
    .bind(format!("rollout:{}", watched.service))
    .bind(serde_json::json!({
        "service": watched.service,
        "stable": watched.stable,
        "canary": watched.canary,
        "from_buckets": watched.canary_buckets,
        "to_buckets": transition.canary_buckets,
        "state": transition.state,
        "reason": transition.reason,
    }))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The tenant's subject rules for `service`, in the order they are tried.
pub async fn list_subject_rules(
    pool: &PgPool,
    tenant_id: Uuid,
    service: &str,
) -> Result<Vec<SubjectRuleRow>, StoreError> {
    Ok(sqlx::query_as::<_, SubjectRuleRow>(&format!(
        "SELECT {SUBJECT_RULE} WHERE r.tenant_id = $1 AND sv.name = $2
          ORDER BY r.position, r.created_at, r.id"
    ))
    .bind(tenant_id)
    .bind(service)
    .fetch_all(pool)
    .await?)
}

/// What a subject rule matches.
#[derive(Debug, Clone)]
pub enum SubjectMatch<'a> {
    /// Users holding this role.
    Role(&'a str),
    /// Users whose attribute equals the value.
    Attribute(&'a str, &'a serde_json::Value),
}

/// Adds a subject rule sending matching users of the tenant to `version`.
pub async fn add_subject_rule(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &str,
    version: &str,
    matches: &SubjectMatch<'_>,
    position: i32,
    actor: Option<Uuid>,
) -> Result<SubjectRuleRow, WriteError> {
    let service_id = available_service_id(&mut *conn, tenant_id, service).await?;
    let version_id = version_of(&mut *conn, service_id, service, version).await?;
    let (role, attribute, equals) = match matches {
        SubjectMatch::Role(role) => (Some(*role), None, None),
        SubjectMatch::Attribute(name, value) => (None, Some(*name), Some(*value)),
    };
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO service_subject_rules (id, tenant_id, service_id, version_id, role, attribute,
                                            equals, position, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(service_id)
    .bind(version_id)
    .bind(role)
    .bind(attribute)
    .bind(equals)
    .bind(position)
    .bind(actor)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from)?;
    Ok(SubjectRuleRow {
        id,
        tenant_id,
        service: service.to_owned(),
        version: version.to_owned(),
        role: role.map(str::to_owned),
        attribute: attribute.map(str::to_owned),
        equals: equals.cloned(),
        position,
    })
}

/// Removes one of the tenant's subject rules; `false` when there was none.
pub async fn delete_subject_rule(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    service: &str,
    id: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "DELETE FROM service_subject_rules r USING services s
          WHERE s.id = r.service_id AND r.tenant_id = $1 AND s.name = $2 AND r.id = $3",
    )
    .bind(tenant_id)
    .bind(service)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
