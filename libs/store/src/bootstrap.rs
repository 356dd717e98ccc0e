//! Idempotent seeding of tenants, users, roles, policies and services.
//!
//! `gatehouse bootstrap` describes what must exist as a [`Seed`]; [`apply`] creates
//! whatever is missing in one transaction and leaves everything that exists alone
//! (an existing user's password is never overwritten). Running it twice changes
//! nothing, and concurrent runs serialise on an advisory lock.

use gatehouse_core::{PasswordHasher, ServiceName, TenantSlug, Username, VersionLabel};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::StoreError;

/// Everything that should exist after bootstrap.
#[derive(Debug, Clone, Default)]
pub struct Seed {
    /// Tenants with their users, roles and policies.
    pub tenants: Vec<TenantSeed>,
    /// Routed services with versions and instances.
    pub services: Vec<ServiceSeed>,
    /// Which version each tenant gets.
    pub rollouts: Vec<RolloutSeed>,
}

/// A tenant and the data it starts with.
#[derive(Debug, Clone)]
pub struct TenantSeed {
    /// Public name used in URLs.
    pub slug: TenantSlug,
    /// Human name shown on pages.
    pub display_name: String,
    /// Origins that login may redirect back to.
    pub allowed_return_origins: Vec<String>,
    /// Roles, parents listed before children.
    pub roles: Vec<RoleSeed>,
    /// Users and the roles they hold.
    pub users: Vec<UserSeed>,
    /// ABAC policies.
    pub policies: Vec<PolicySeed>,
}

/// A role, its optional parent and its grants.
#[derive(Debug, Clone)]
pub struct RoleSeed {
    /// Role name, unique per tenant.
    pub name: String,
    /// What the role is for.
    pub description: String,
    /// Parent role (inherits its grants); must be seeded earlier in the list.
    pub parent: Option<String>,
    /// `(resource_pattern, action)` pairs.
    pub grants: Vec<(String, String)>,
}

/// A user to create if absent.
#[derive(Debug, Clone)]
pub struct UserSeed {
    /// Login name.
    pub username: Username,
    /// Shown on the account page.
    pub display_name: String,
    /// Used only when the user is created; never overwrites an existing hash.
    pub password: String,
    /// Roles to assign (by name).
    pub roles: Vec<String>,
}

/// An ABAC policy to create if absent.
#[derive(Debug, Clone)]
pub struct PolicySeed {
    /// Policy name, unique per tenant.
    pub name: String,
    /// What the policy is for.
    pub description: String,
    /// Higher is evaluated first.
    pub priority: i32,
    /// `permit` or `deny`.
    pub effect: String,
    /// Target and conditions.
    pub document: serde_json::Value,
}

/// A routed service.
#[derive(Debug, Clone)]
pub struct ServiceSeed {
    /// Service name used in `/svc/{service}/...`.
    pub name: ServiceName,
    /// What the service is.
    pub description: String,
    /// Versions to create; the first is the default.
    pub versions: Vec<VersionLabel>,
    /// `(version, host:port)` instances to register.
    pub instances: Vec<(VersionLabel, String)>,
}

/// A tenant's rollout of a service.
#[derive(Debug, Clone)]
pub struct RolloutSeed {
    /// The tenant.
    pub tenant: TenantSlug,
    /// The service.
    pub service: ServiceName,
    /// Version most traffic goes to.
    pub stable: VersionLabel,
    /// Optional canary and its share of traffic (0..=100).
    pub canary: Option<(VersionLabel, i16)>,
}

/// What [`apply`] created; empty when everything already existed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One human-readable line per created item.
    pub created: Vec<String>,
    /// Users created in this run (their seeded password is now valid).
    pub created_users: Vec<(TenantSlug, Username)>,
}

/// Creates whatever part of `seed` is missing, in one transaction.
pub async fn apply(
    pool: &PgPool,
    seed: &Seed,
    hasher: &PasswordHasher,
) -> Result<Report, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('gatehouse.bootstrap'))")
        .execute(&mut *tx)
        .await?;
    let mut report = Report::default();
    for tenant in &seed.tenants {
        let before = report.created.len();
        let tenant_id = ensure_tenant(&mut tx, tenant, &mut report).await?;
        for role in &tenant.roles {
            ensure_role(&mut tx, tenant_id, tenant, role, &mut report).await?;
        }
        for user in &tenant.users {
            ensure_user(&mut tx, tenant_id, tenant, user, hasher, &mut report).await?;
        }
        for policy in &tenant.policies {
            ensure_policy(&mut tx, tenant_id, tenant, policy, &mut report).await?;
        }
        if report.created.len() > before {
            record_change(&mut tx, Some(tenant_id), &report.created[before..]).await?;
        }
    }
    for service in &seed.services {
        let before = report.created.len();
        ensure_service(&mut tx, service, &mut report).await?;
        if report.created.len() > before {
            record_change(&mut tx, None, &report.created[before..]).await?;
        }
    }
    for rollout in &seed.rollouts {
        let before = report.created.len();
        let tenant_id = ensure_rollout(&mut tx, rollout, &mut report).await?;
        if report.created.len() > before {
            record_change(&mut tx, Some(tenant_id), &report.created[before..]).await?;
        }
    }
    tx.commit().await?;
    Ok(report)
}

async fn ensure_tenant(
    tx: &mut PgConnection,
    tenant: &TenantSeed,
    report: &mut Report,
) -> Result<Uuid, StoreError> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO tenants (id, slug, display_name, allowed_return_origins)
         VALUES ($1, $2, $3, $4) ON CONFLICT (slug) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.slug.as_str())
    .bind(&tenant.display_name)
    .bind(&tenant.allowed_return_origins)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = inserted {
        sqlx::query("INSERT INTO tenant_data_versions (tenant_id) VALUES ($1)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        report.created.push(format!("tenant {}", tenant.slug));
        return Ok(id);
    }
    Ok(sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
        .bind(tenant.slug.as_str())
        .fetch_one(&mut *tx)
        .await?)
}

async fn role_id(tx: &mut PgConnection, tenant_id: Uuid, name: &str) -> Result<Uuid, StoreError> {
    sqlx::query_scalar("SELECT id FROM roles WHERE tenant_id = $1 AND name = $2")
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("role {name} is not defined in the seed")))
}

async fn ensure_role(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    tenant: &TenantSeed,
    role: &RoleSeed,
    report: &mut Report,
) -> Result<(), StoreError> {
    let parent_id = match &role.parent {
        Some(parent) => Some(role_id(tx, tenant_id, parent).await?),
        None => None,
    };
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO roles (id, tenant_id, name, description, parent_id)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&role.name)
    .bind(&role.description)
    .bind(parent_id)
    .fetch_optional(&mut *tx)
    .await?;
    let id = match inserted {
        Some(id) => {
            report
                .created
                .push(format!("role {}/{}", tenant.slug, role.name));
            id
        }
        None => role_id(tx, tenant_id, &role.name).await?,
    };
    for (resource, action) in &role.grants {
        let done = sqlx::query(
            "INSERT INTO role_permissions (id, tenant_id, role_id, resource_pattern, action)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (role_id, resource_pattern, action) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(id)
        .bind(resource)
        .bind(action)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            report.created.push(format!(
                "grant {}/{}: {action} on {resource}",
                tenant.slug, role.name
            ));
        }
    }
    Ok(())
}

async fn ensure_user(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    tenant: &TenantSeed,
    user: &UserSeed,
    hasher: &PasswordHasher,
    report: &mut Report,
) -> Result<(), StoreError> {
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM users WHERE tenant_id = $1 AND username_normalized = $2",
    )
    .bind(tenant_id)
    .bind(user.username.normalized())
    .fetch_optional(&mut *tx)
    .await?;
    let user_id = if let Some(id) = existing {
        id
    } else {
        {
            let id = Uuid::now_v7();
            let hash = hasher.hash(&user.password)?;
            sqlx::query(
                "INSERT INTO users (id, tenant_id, username_normalized, username_display,
                                    display_name, password_hash)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(tenant_id)
            .bind(user.username.normalized())
            .bind(user.username.display())
            .bind(&user.display_name)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
            report
                .created
                .push(format!("user {}/{}", tenant.slug, user.username));
            report
                .created_users
                .push((tenant.slug.clone(), user.username.clone()));
            id
        }
    };
    for role in &user.roles {
        let role_id = role_id(tx, tenant_id, role).await?;
        let done = sqlx::query(
            "INSERT INTO user_roles (tenant_id, user_id, role_id) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, role_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(role_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            report.created.push(format!(
                "assignment {}/{} -> {role}",
                tenant.slug, user.username
            ));
        }
    }
    Ok(())
}

async fn ensure_policy(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    tenant: &TenantSeed,
    policy: &PolicySeed,
    report: &mut Report,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "INSERT INTO policies (id, tenant_id, name, description, priority, effect, document)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, name) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&policy.name)
    .bind(&policy.description)
    .bind(policy.priority)
    .bind(&policy.effect)
    .bind(&policy.document)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        report
            .created
            .push(format!("policy {}/{}", tenant.slug, policy.name));
    }
    Ok(())
}

async fn ensure_service(
    tx: &mut PgConnection,
    service: &ServiceSeed,
    report: &mut Report,
) -> Result<(), StoreError> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO services (id, name, description) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(service.name.as_str())
    .bind(&service.description)
    .fetch_optional(&mut *tx)
    .await?;
    let service_id = match inserted {
        Some(id) => {
            report.created.push(format!("service {}", service.name));
            id
        }
        None => {
            sqlx::query_scalar("SELECT id FROM services WHERE name = $1")
                .bind(service.name.as_str())
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let has_default: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM service_versions WHERE service_id = $1 AND is_default)",
    )
    .bind(service_id)
    .fetch_one(&mut *tx)
    .await?;
    for (index, version) in service.versions.iter().enumerate() {
        let done = sqlx::query(
            "INSERT INTO service_versions (id, service_id, version, is_default)
             VALUES ($1, $2, $3, $4) ON CONFLICT (service_id, version) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(service_id)
        .bind(version.as_str())
        .bind(index == 0 && !has_default)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            report
                .created
                .push(format!("version {}@{version}", service.name));
        }
    }
    for (version, address) in &service.instances {
        let version_id = version_id(tx, service_id, &service.name, version).await?;
        let done = sqlx::query(
            "INSERT INTO service_instances (id, service_id, version_id, address)
             VALUES ($1, $2, $3, $4) ON CONFLICT (version_id, address) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(service_id)
        .bind(version_id)
        .bind(address)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            report
                .created
                .push(format!("instance {}@{version} at {address}", service.name));
        }
    }
    Ok(())
}

async fn version_id(
    tx: &mut PgConnection,
    service_id: Uuid,
    service: &ServiceName,
    version: &VersionLabel,
) -> Result<Uuid, StoreError> {
    sqlx::query_scalar("SELECT id FROM service_versions WHERE service_id = $1 AND version = $2")
        .bind(service_id)
        .bind(version.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("service {service} has no version {version}")))
}

/// Makes the service available to the tenant and creates the rollout;
/// returns the tenant's id.
async fn ensure_rollout(
    tx: &mut PgConnection,
    rollout: &RolloutSeed,
    report: &mut Report,
) -> Result<Uuid, StoreError> {
    let tenant_id: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1")
        .bind(rollout.tenant.as_str())
        .fetch_one(&mut *tx)
        .await?;
    let service_id: Uuid = sqlx::query_scalar("SELECT id FROM services WHERE name = $1")
        .bind(rollout.service.as_str())
        .fetch_one(&mut *tx)
        .await?;
    // A seeded rollout makes the service available to its tenant (a rollout
    // exists only for an available pair).
    let granted = sqlx::query(
        "INSERT INTO tenant_services (tenant_id, service_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(service_id)
    .execute(&mut *tx)
    .await?;
    if granted.rows_affected() == 1 {
        report.created.push(format!(
            "{} available to {}",
            rollout.service, rollout.tenant
        ));
    }
    let stable = version_id(tx, service_id, &rollout.service, &rollout.stable).await?;
    let (canary, percent) = match &rollout.canary {
        Some((label, percent)) => (
            Some(version_id(tx, service_id, &rollout.service, label).await?),
            *percent,
        ),
        None => (None, 0),
    };
    let done = sqlx::query(
        "INSERT INTO tenant_rollouts (tenant_id, service_id, stable_version_id, canary_version_id, canary_buckets)
         VALUES ($1, $2, $3, $4, $5 * 100) ON CONFLICT (tenant_id, service_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(service_id)
    .bind(stable)
    .bind(canary)
    .bind(percent)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        report
            .created
            .push(format!("rollout {}/{}", rollout.tenant, rollout.service));
    }
    Ok(tenant_id)
}

/// Bumps the tenant's data version and writes the outbox and audit rows that
/// every change must carry, in the caller's transaction.
async fn record_change(
    tx: &mut PgConnection,
    tenant_id: Option<Uuid>,
    created: &[String],
) -> Result<(), StoreError> {
    let version: Option<i64> = match tenant_id {
        Some(id) => Some(
            sqlx::query_scalar(
                "UPDATE tenant_data_versions SET version = version + 1, updated_at = now()
                 WHERE tenant_id = $1 RETURNING version",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?,
        ),
        None => None,
    };
    let kind = if tenant_id.is_some() {
        "tenant.data_changed"
    } else {
        "routing.config_changed"
    };
    sqlx::query("INSERT INTO outbox_events (tenant_id, kind, payload) VALUES ($1, $2, $3)")
        .bind(tenant_id)
        .bind(kind)
        .bind(json!({ "source": "bootstrap", "data_version": version }))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor_kind, action, outcome, details)
         VALUES ($1, 'system', 'bootstrap.seed', 'success', $2)",
    )
    .bind(tenant_id)
    .bind(json!({ "created": created }))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
