//! Authorisation data: loading a tenant's rules and a subject for the engine,
//! and the admin writes that change them.
//!
//! Every write runs in one transaction that also (1) re-compiles the tenant's
//! whole rule set, so a write that would leave rules the engine cannot compile
//! is refused and nothing is stored, (2) bumps the tenant's data version,
//! (3) appends an outbox event and (4) an audit event. Either all of it
//! commits or none of it does.

use gatehouse_authz::{
    Assignment, CompileError, Effect, GrantDef, PolicyDef, PolicySet, RoleDef, TenantRules,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::StoreError;
use crate::audit::Actor;

/// A tenant's rules with the data version they were read at.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RulesSnapshot {
    /// `tenant_data_versions.version` when read; bumped by every change.
    pub version: i64,
    /// Roles, grants and policies.
    pub rules: TenantRules,
}

/// A user as the engine sees them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    /// User id.
    pub id: Uuid,
    /// Display username.
    pub username: String,
    /// `active` or `disabled`.
    pub status: String,
    /// ABAC `subject.*` attributes.
    pub attributes: Map<String, Value>,
    /// Role assignments, with expiry (unix seconds).
    pub assignments: Vec<Assignment>,
}

/// The current data version of a tenant (cheap: one primary-key read), so a
/// compiled set can be reused while it is current.
pub async fn data_version(pool: &PgPool, tenant_id: Uuid) -> Result<Option<i64>, StoreError> {
    crate::read_retrying(|| {
        sqlx::query_scalar("SELECT version FROM tenant_data_versions WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(pool)
    })
    .await
}

/// Reads a tenant's roles, grants, policies and data version as one
/// consistent snapshot.
pub async fn load_rules(pool: &PgPool, tenant_id: Uuid) -> Result<RulesSnapshot, StoreError> {
    match load_rules_once(pool, tenant_id).await {
        // A stale pooled connection: the failure retired the others; once more.
        // (Not on a pool timeout: that would only double the wait.)
        Err(StoreError::ConnectionLost(_)) => load_rules_once(pool, tenant_id).await,
        other => other,
    }
}

async fn load_rules_once(pool: &PgPool, tenant_id: Uuid) -> Result<RulesSnapshot, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let snapshot = load_rules_in(&mut tx, tenant_id).await?;
    tx.commit().await?;
    Ok(snapshot)
}

async fn load_rules_in(
    tx: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<RulesSnapshot, StoreError> {
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM tenant_data_versions WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(1);
    let roles: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT r.name, p.name FROM roles r LEFT JOIN roles p ON p.id = r.parent_id
         WHERE r.tenant_id = $1 ORDER BY r.name",
    )
    .bind(tenant_id)
    .fetch_all(&mut *tx)
    .await?;
    let grants: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT r.name, g.resource_pattern, g.action FROM role_permissions g
         JOIN roles r ON r.id = g.role_id WHERE g.tenant_id = $1
         ORDER BY r.name, g.resource_pattern, g.action",
    )
    .bind(tenant_id)
    .fetch_all(&mut *tx)
    .await?;
    let policies: Vec<PolicyRow> = sqlx::query_as(
        "SELECT name, description, priority, effect, document, active, version
         FROM policies WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(RulesSnapshot {
        version,
        rules: TenantRules {
            roles: roles
                .into_iter()
                .map(|(name, parent)| RoleDef { name, parent })
                .collect(),
            grants: grants
                .into_iter()
                .map(|(role, resource, action)| GrantDef {
                    role,
                    resource,
                    action,
                })
                .collect(),
            policies: policies.iter().map(PolicyRow::to_def).collect(),
        },
    })
}

/// Loads a user of the tenant by id, with unexpired and expired assignments
/// (the engine decides what counts at decision time).
pub async fn subject_by_id(
    pool: &PgPool,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Subject>, StoreError> {
    subject_where(pool, tenant_id, "u.id = $2", SubjectKey::Id(user_id)).await
}

/// Loads a user of the tenant by normalised username.
pub async fn subject_by_username(
    pool: &PgPool,
    tenant_id: Uuid,
    normalized: &str,
) -> Result<Option<Subject>, StoreError> {
    subject_where(
        pool,
        tenant_id,
        "u.username_normalized = $2",
        SubjectKey::Name(normalized),
    )
    .await
}

#[derive(Clone, Copy)]
enum SubjectKey<'a> {
    Id(Uuid),
    Name(&'a str),
}

async fn subject_where(
    pool: &PgPool,
    tenant_id: Uuid,
    filter: &str,
    key: SubjectKey<'_>,
) -> Result<Option<Subject>, StoreError> {
    let sql = format!(
        "SELECT u.id, u.username_display, u.status, u.attributes,
                COALESCE(array_agg(r.name ORDER BY r.name) FILTER (WHERE r.name IS NOT NULL), '{{}}') AS roles,
                COALESCE(array_agg(ur.expires_at ORDER BY r.name) FILTER (WHERE r.name IS NOT NULL), '{{}}') AS expiries
         FROM users u
         LEFT JOIN user_roles ur ON ur.user_id = u.id AND ur.tenant_id = u.tenant_id
         LEFT JOIN roles r ON r.id = ur.role_id
         WHERE u.tenant_id = $1 AND {filter}
         GROUP BY u.id"
    );
    let Some(row) = crate::read_retrying(|| {
        let query = sqlx::query_as::<_, SubjectRow>(&sql).bind(tenant_id);
        let query = match key {
            SubjectKey::Id(id) => query.bind(id),
            SubjectKey::Name(name) => query.bind(name.to_owned()),
        };
        query.fetch_optional(pool)
    })
    .await?
    else {
        return Ok(None);
    };
    let assignments = row
        .roles
        .into_iter()
        .zip(row.expiries)
        .map(|(role, expires)| Assignment {
            role,
            expires_at: expires.map(OffsetDateTime::unix_timestamp),
        })
        .collect();
    Ok(Some(Subject {
        id: row.id,
        username: row.username_display,
        status: row.status,
        attributes: match row.attributes {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        assignments,
    }))
}

#[derive(sqlx::FromRow)]
struct SubjectRow {
    id: Uuid,
    username_display: String,
    status: String,
    attributes: Value,
    roles: Vec<String>,
    expiries: Vec<Option<OffsetDateTime>>,
}

/// A policy as stored, with its edit version.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PolicyRow {
    /// Unique name within the tenant.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Higher first.
    pub priority: i32,
    /// `permit` or `deny`.
    pub effect: String,
    /// Target and condition.
    pub document: Value,
    /// Inactive policies are kept but ignored.
    pub active: bool,
    /// Optimistic-concurrency version, bumped on every update.
    pub version: i32,
}

impl PolicyRow {
    fn to_def(&self) -> PolicyDef {
        PolicyDef {
            name: self.name.clone(),
            priority: self.priority,
            effect: if self.effect == "permit" {
                Effect::Permit
            } else {
                Effect::Deny
            },
            document: self.document.clone(),
            active: self.active,
        }
    }
}

/// A role with its parent and grants, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleView {
    /// Unique name within the tenant.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Parent role name.
    pub parent: Option<String>,
    /// `(resource pattern, action)` grants held directly.
    pub permissions: Vec<Permission>,
}

/// One grant of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Permission {
    /// Resource pattern.
    pub resource: String,
    /// Action pattern.
    pub action: String,
}

/// A role assignment of a user, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssignmentView {
    /// Role name.
    pub role: String,
    /// When it stops counting.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Lists a tenant's roles with their grants.
pub async fn list_roles(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<RoleView>, StoreError> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT r.name, r.description, p.name FROM roles r LEFT JOIN roles p ON p.id = r.parent_id
         WHERE r.tenant_id = $1 ORDER BY r.name",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    let grants: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT r.name, g.resource_pattern, g.action FROM role_permissions g
         JOIN roles r ON r.id = g.role_id WHERE g.tenant_id = $1
         ORDER BY r.name, g.resource_pattern, g.action",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, description, parent)| RoleView {
            permissions: grants
                .iter()
                .filter(|(role, _, _)| *role == name)
                .map(|(_, resource, action)| Permission {
                    resource: resource.clone(),
                    action: action.clone(),
                })
                .collect(),
            name,
            description,
            parent,
        })
        .collect())
}

/// Lists a tenant's policies.
pub async fn list_policies(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<PolicyRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT name, description, priority, effect, document, active, version
         FROM policies WHERE tenant_id = $1 ORDER BY priority DESC, name",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}

/// Lists a user's role assignments (empty for an unknown user: check first).
pub async fn user_assignments(
    pool: &PgPool,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Vec<AssignmentView>, StoreError> {
    let rows: Vec<(String, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT r.name, ur.expires_at FROM user_roles ur JOIN roles r ON r.id = ur.role_id
         WHERE ur.tenant_id = $1 AND ur.user_id = $2 ORDER BY r.name",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(role, expires_at)| AssignmentView { role, expires_at })
        .collect())
}

/// Who made a change and from where: the audit row's context.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    /// The tenant changed.
    pub tenant_id: Uuid,
    /// Who.
    pub actor: Actor,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Extra audit details (who, from which tenant).
    pub details: Value,
}

/// One admin change to a tenant's authorisation data.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create a role.
    CreateRole {
        /// Name.
        name: String,
        /// Description.
        description: String,
        /// Parent role name.
        parent: Option<String>,
    },
    /// Change a role's description and/or parent (`Some(None)` clears it).
    UpdateRole {
        /// Name.
        name: String,
        /// New description.
        description: Option<String>,
        /// New parent.
        parent: Option<Option<String>>,
    },
    /// Delete a role (its grants and assignments go with it; children lose
    /// their parent).
    DeleteRole {
        /// Name.
        name: String,
    },
    /// Add a grant to a role.
    AddPermission {
        /// Role.
        role: String,
        /// The grant.
        permission: Permission,
    },
    /// Remove a grant from a role.
    RemovePermission {
        /// Role.
        role: String,
        /// The grant.
        permission: Permission,
    },
    /// Assign a role to a user (or change the expiry of an assignment).
    Assign {
        /// User id.
        user_id: Uuid,
        /// Role.
        role: String,
        /// Optional expiry.
        expires_at: Option<OffsetDateTime>,
    },
    /// Remove a role from a user.
    Unassign {
        /// User id.
        user_id: Uuid,
        /// Role.
        role: String,
    },
    /// Create a policy.
    CreatePolicy(NewPolicy),
    /// Replace a policy, if its version is still `expected_version`.
    UpdatePolicy {
        /// The new content (same name).
        policy: NewPolicy,
        /// The version the editor read.
        expected_version: i32,
    },
    /// Delete a policy.
    DeletePolicy {
        /// Name.
        name: String,
    },
}

/// A policy as written by an admin.
#[derive(Debug, Clone)]
pub struct NewPolicy {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Priority.
    pub priority: i32,
    /// Effect.
    pub effect: Effect,
    /// Target and condition.
    pub document: Value,
    /// Whether it is in force.
    pub active: bool,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The named role, user, grant or policy does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It already exists, or the policy was edited since it was read.
    #[error("{0}")]
    Conflict(String),
    /// The result would not compile (cycle, depth, bad pattern, bad policy,
    /// policy naming a missing role).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ChangeError {
    fn from(e: sqlx::Error) -> Self {
        // The hierarchy trigger names its constraint; report it as the input
        // problem it is rather than as a database failure.
        if let sqlx::Error::Database(db) = &e
            && matches!(
                db.constraint(),
                Some("roles_no_cycle" | "roles_max_depth" | "roles_parent_same_tenant")
            )
        {
            return Self::Invalid(db.message().to_owned());
        }
        Self::Store(StoreError::from(e))
    }
}

/// What a committed change produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The tenant's data version after the change.
    pub data_version: i64,
    /// The policy's new edit version, for policy writes.
    pub policy_version: Option<i32>,
}

/// Applies one change atomically with its compile check, version bump,
/// outbox event and audit event.
pub async fn apply_change(
    pool: &PgPool,
    context: &ChangeContext,
    change: &Change,
) -> Result<Applied, ChangeError> {
    let mut tx = pool.begin().await?;
    // Serialise writers of one tenant so the compile check sees every
    // concurrent change (two individually valid edits cannot combine into an
    // invalid set).
    sqlx::query("SELECT version FROM tenant_data_versions WHERE tenant_id = $1 FOR UPDATE")
        .bind(context.tenant_id)
        .execute(&mut *tx)
        .await?;
    let (action, target, policy_version) = write(&mut tx, context.tenant_id, change).await?;
    let snapshot = load_rules_in(&mut tx, context.tenant_id).await?;
    // Compilation is CPU work bounded by the tenant's size (MAX_POLICIES):
    // on a blocking thread, so a large tenant's write never stalls requests.
    let rules = snapshot.rules;
    let compiled = tokio::task::spawn_blocking(move || PolicySet::compile(&rules))
        .await
        .map_err(|e| ChangeError::Store(StoreError::Unavailable(format!("compile task: {e}"))))?
        .map_err(|e| ChangeError::Invalid(describe(&e)))?;
    if let Change::CreatePolicy(p) | Change::UpdatePolicy { policy: p, .. } = change
        && let Some(w) = compiled
            .warnings()
            .iter()
            .find(|w| w.policy == p.name && w.kind == "unknown_role")
    {
        return Err(ChangeError::Invalid(w.message.clone()));
    }
    let data_version: i64 = sqlx::query_scalar(
        "UPDATE tenant_data_versions SET version = version + 1, updated_at = now()
         WHERE tenant_id = $1 RETURNING version",
    )
    .bind(context.tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO outbox_events (tenant_id, kind, payload) VALUES ($1, 'tenant.authz_changed', $2)")
        .bind(context.tenant_id)
        .bind(json!({ "data_version": data_version, "change": action, "target": target }))
        .execute(&mut *tx)
        .await?;
    let (actor_kind, actor_id) = match context.actor {
        Actor::User(id) => ("user", Some(id)),
        Actor::Anonymous => ("anonymous", None),
        Actor::System => ("system", None),
    };
    let mut details = context.details.clone();
    if let Value::Object(map) = &mut details {
        map.insert("data_version".into(), json!(data_version));
    }
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor_id, actor_kind, action, target, outcome, ip,
                                   user_agent, request_id, details)
         VALUES ($1, $2, $3, $4, $5, 'success', $6::inet, $7, $8, $9)",
    )
    .bind(context.tenant_id)
    .bind(actor_id)
    .bind(actor_kind)
    .bind(action)
    .bind(&target)
    .bind(
        context
            .ip
            .as_deref()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
    )
    .bind(&context.user_agent)
    .bind(&context.request_id)
    .bind(&details)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Applied {
        data_version,
        policy_version,
    })
}

fn describe(e: &CompileError) -> String {
    match e {
        CompileError::BadPolicy {
            policy,
            path,
            message,
        } => format!("policy {policy:?}: {path}: {message}"),
        other => other.to_string(),
    }
}

async fn role_id(tx: &mut PgConnection, tenant_id: Uuid, name: &str) -> Result<Uuid, ChangeError> {
    sqlx::query_scalar("SELECT id FROM roles WHERE tenant_id = $1 AND name = $2")
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ChangeError::NotFound(format!("no role {name:?}")))
}

fn require(rows: u64, what: impl FnOnce() -> String) -> Result<(), ChangeError> {
    if rows == 0 {
        Err(ChangeError::NotFound(what()))
    } else {
        Ok(())
    }
}

fn unique(e: sqlx::Error, what: impl FnOnce() -> String) -> ChangeError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => ChangeError::Conflict(what()),
        _ => ChangeError::from(e),
    }
}

/// Performs the write; returns the audit action, its target and (for policy
/// writes) the policy's new version.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per kind of change reads best together"
)]
async fn write(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: Uuid,
    change: &Change,
) -> Result<(&'static str, String, Option<i32>), ChangeError> {
    match change {
        Change::CreateRole {
            name,
            description,
            parent,
        } => {
            let parent_id = match parent {
                Some(p) => Some(role_id(tx, tenant_id, p).await.map_err(|_| {
                    ChangeError::Invalid(format!("parent role {p:?} does not exist"))
                })?),
                None => None,
            };
            sqlx::query("INSERT INTO roles (id, tenant_id, name, description, parent_id) VALUES ($1, $2, $3, $4, $5)")
                .bind(Uuid::now_v7())
                .bind(tenant_id)
                .bind(name)
                .bind(description)
                .bind(parent_id)
                .execute(&mut **tx)
                .await
                .map_err(|e| unique(e, || format!("role {name:?} already exists")))?;
            Ok(("role.create", name.clone(), None))
        }
        Change::UpdateRole {
            name,
            description,
            parent,
        } => {
            let id = role_id(tx, tenant_id, name).await?;
            if let Some(description) = description {
                sqlx::query("UPDATE roles SET description = $2, updated_at = now() WHERE id = $1")
                    .bind(id)
                    .bind(description)
                    .execute(&mut **tx)
                    .await?;
            }
            if let Some(parent) = parent {
                let parent_id = match parent {
                    Some(p) if p == name => {
                        return Err(ChangeError::Invalid(format!(
                            "role {name:?} cannot be its own parent"
                        )));
                    }
                    Some(p) => Some(role_id(tx, tenant_id, p).await.map_err(|_| {
                        ChangeError::Invalid(format!("parent role {p:?} does not exist"))
                    })?),
                    None => None,
                };
                sqlx::query("UPDATE roles SET parent_id = $2, updated_at = now() WHERE id = $1")
                    .bind(id)
                    .bind(parent_id)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(("role.update", name.clone(), None))
        }
        Change::DeleteRole { name } => {
            let rows = sqlx::query("DELETE FROM roles WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            require(rows, || format!("no role {name:?}"))?;
            Ok(("role.delete", name.clone(), None))
        }
        Change::AddPermission { role, permission } => {
            let id = role_id(tx, tenant_id, role).await?;
            sqlx::query("INSERT INTO role_permissions (id, tenant_id, role_id, resource_pattern, action) VALUES ($1, $2, $3, $4, $5)")
                .bind(Uuid::now_v7())
                .bind(tenant_id)
                .bind(id)
                .bind(&permission.resource)
                .bind(&permission.action)
                .execute(&mut **tx)
                .await
                .map_err(|e| unique(e, || format!("role {role:?} already has {} on {}", permission.action, permission.resource)))?;
            Ok((
                "role.permission.add",
                format!("{role}: {} on {}", permission.action, permission.resource),
                None,
            ))
        }
        Change::RemovePermission { role, permission } => {
            let id = role_id(tx, tenant_id, role).await?;
            let rows = sqlx::query("DELETE FROM role_permissions WHERE tenant_id = $1 AND role_id = $2 AND resource_pattern = $3 AND action = $4")
                .bind(tenant_id)
                .bind(id)
                .bind(&permission.resource)
                .bind(&permission.action)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            require(rows, || {
                format!(
                    "role {role:?} has no {} on {}",
                    permission.action, permission.resource
                )
            })?;
            Ok((
                "role.permission.remove",
                format!("{role}: {} on {}", permission.action, permission.resource),
                None,
            ))
        }
        Change::Assign {
            user_id,
            role,
            expires_at,
        } => {
            let id = role_id(tx, tenant_id, role).await?;
            let user: Option<String> = sqlx::query_scalar(
                "SELECT username_display FROM users WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id)
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
            let user = user.ok_or_else(|| ChangeError::NotFound("no such user".to_owned()))?;
            sqlx::query(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, role_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            )
            .bind(tenant_id)
            .bind(user_id)
            .bind(id)
            .bind(expires_at)
            .execute(&mut **tx)
            .await?;
            Ok(("user.role.assign", format!("{user}: {role}"), None))
        }
        Change::Unassign { user_id, role } => {
            let id = role_id(tx, tenant_id, role).await?;
            let rows = sqlx::query(
                "DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2 AND role_id = $3",
            )
            .bind(tenant_id)
            .bind(user_id)
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            require(rows, || format!("the user does not hold role {role:?}"))?;
            Ok(("user.role.unassign", format!("{user_id}: {role}"), None))
        }
        Change::CreatePolicy(p) => {
            sqlx::query(
                "INSERT INTO policies (id, tenant_id, name, description, priority, effect, document, active)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(Uuid::now_v7())
            .bind(tenant_id)
            .bind(&p.name)
            .bind(&p.description)
            .bind(p.priority)
            .bind(effect_name(p.effect))
            .bind(&p.document)
            .bind(p.active)
            .execute(&mut **tx)
            .await
            .map_err(|e| unique(e, || format!("policy {:?} already exists", p.name)))?;
            Ok(("policy.create", p.name.clone(), Some(1)))
        }
        Change::UpdatePolicy {
            policy: p,
            expected_version,
        } => {
            let current: Option<i32> = sqlx::query_scalar(
                "SELECT version FROM policies WHERE tenant_id = $1 AND name = $2",
            )
            .bind(tenant_id)
            .bind(&p.name)
            .fetch_optional(&mut **tx)
            .await?;
            match current {
                None => return Err(ChangeError::NotFound(format!("no policy {:?}", p.name))),
                Some(v) if v != *expected_version => {
                    return Err(ChangeError::Conflict(format!(
                        "policy {:?} is at version {v}, not {expected_version}: it was changed since you read it",
                        p.name
                    )));
                }
                Some(_) => {}
            }
            let version: i32 = sqlx::query_scalar(
                "UPDATE policies SET description = $3, priority = $4, effect = $5, document = $6, active = $7,
                        version = version + 1, updated_at = now()
                 WHERE tenant_id = $1 AND name = $2 RETURNING version",
            )
            .bind(tenant_id)
            .bind(&p.name)
            .bind(&p.description)
            .bind(p.priority)
            .bind(effect_name(p.effect))
            .bind(&p.document)
            .bind(p.active)
            .fetch_one(&mut **tx)
            .await?;
            Ok(("policy.update", p.name.clone(), Some(version)))
        }
        Change::DeletePolicy { name } => {
            let rows = sqlx::query("DELETE FROM policies WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            require(rows, || format!("no policy {name:?}"))?;
            Ok(("policy.delete", name.clone(), None))
        }
    }
}

fn effect_name(effect: Effect) -> &'static str {
    match effect {
        Effect::Permit => "permit",
        Effect::Deny => "deny",
    }
}
