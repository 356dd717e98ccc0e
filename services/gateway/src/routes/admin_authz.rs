//! Admin API for a tenant's authorisation data: roles (with parent), role
//! permissions, user role assignments (with expiry) and ABAC policies, plus
//! `policies/validate` and `policies/simulate`.
//!
//! Every write goes through `gatehouse_app::authz_admin::AuthzAdmin::apply`: one
//! transaction that re-compiles the tenant's rules (refusing anything the
//! engine could not compile), bumps the data version and writes the outbox
//! and audit events. Input is checked here first so a bad request gets a
//! precise 422 before the database is touched.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use gatehouse_app::audit::Actor;
use gatehouse_app::authz_admin::{
    Applied, Change, ChangeContext, ChangeError, NewPolicy, Permission, RoleView,
};
use gatehouse_app::directory::Tenant;
use gatehouse_authz::{Effect, Pattern, PolicyDef, PolicySet, validate_policy_document};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::admin::{Access, admin_tenant};
use crate::extract::session::CurrentSession;
use crate::state::AppState;
use gatehouse_app::authz::{self, Question};

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound(detail) => ApiError::not_found(detail),
            ChangeError::Conflict(detail) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", detail)
            }
            ChangeError::Invalid(detail) => invalid(detail),
            ChangeError::Store(e) => e.into(),
        }
    }
}

/// Role and policy names: what the schema accepts, checked first so the
/// client learns the rule rather than a database error.
fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(invalid(format!(
            "{kind} name {:?} must be 1-64 characters of a-z, 0-9, '_', '.', ':' or '-', starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        )))
    }
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > 500 {
        return Err(invalid("description must be at most 500 characters"));
    }
    Ok(())
}

fn check_permission(p: &Permission) -> Result<(), ApiError> {
    Pattern::parse(&p.resource).map_err(|e| invalid(format!("resource: {e}")))?;
    if p.action.len() > 64 {
        return Err(invalid("action: must be at most 64 characters"));
    }
    Pattern::parse(&p.action).map_err(|e| invalid(format!("action: {e}")))?;
    Ok(())
}

/// Everything a write handler needs after the guard.
struct Writer<'a> {
    state: &'a AppState,
    context: ChangeContext,
}

impl Writer<'_> {
    async fn apply(&self, change: &Change) -> Result<Applied, ApiError> {
        Ok(self.state.authz_admin.apply(&self.context, change).await?)
    }
}

async fn writer<'a>(
    state: &'a AppState,
    me: &CurrentSession,
    client: &ClientInfo,
    headers: &HeaderMap,
    raw_tenant: &str,
    area: &str,
    action: &'static str,
) -> Result<(std::sync::Arc<Tenant>, Writer<'a>), ApiError> {
    let tenant = admin_tenant(state, me, client, raw_tenant, area, Access::Write, action).await?;
    let session = &me.0.session;
    let context = ChangeContext {
        tenant_id: tenant.id,
        actor: Actor::User(session.user_id),
        ip: Some(client.ip.clone()),
        user_agent: Some(client.user_agent.clone()),
        request_id: crate::audit::request_id(headers),
        details: json!({ "by": session.username, "by_tenant": session.tenant_slug }),
    };
    Ok((tenant, Writer { state, context }))
}

// ---------------------------------------------------------------- roles

async fn find_role(state: &AppState, tenant_id: Uuid, name: &str) -> Result<RoleView, ApiError> {
    let found = state
        .authz_admin
        .roles(tenant_id)
        .await?
        .into_iter()
        .find(|r| r.name == name);
    found.ok_or_else(|| ApiError::not_found(format!("no role {name:?}")))
}

/// `GET /admin/api/v1/tenants/{tenant}/roles`
pub async fn roles_list(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    me: CurrentSession,
) -> Result<Json<Value>, ApiError> {
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "roles",
        Access::Read,
        "roles.list",
    )
    .await?;
    let roles = state.authz_admin.roles(tenant.id).await?;
    Ok(Json(json!({ "roles": roles })))
}

/// Body of `POST .../roles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parent: Option<String>,
}

/// `POST /admin/api/v1/tenants/{tenant}/roles`
pub async fn roles_create(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    Json(body): Json<NewRole>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name("role", &body.name)?;
    check_description(&body.description)?;
    let (_, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "roles",
        "role.create",
    )
    .await?;
    let applied = writer
        .apply(&Change::CreateRole {
            name: body.name.clone(),
            description: body.description.clone(),
            parent: body.parent.clone(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": body.name, "description": body.description, "parent": body.parent,
            "permissions": [], "data_version": applied.data_version,
        })),
    ))
}

/// `GET /admin/api/v1/tenants/{tenant}/roles/{role}`
pub async fn role_get(
    State(state): State<AppState>,
    Path((tenant, role)): Path<(String, String)>,
    client: ClientInfo,
    me: CurrentSession,
) -> Result<Json<Value>, ApiError> {
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "roles",
        Access::Read,
        "roles.get",
    )
    .await?;
    let found = find_role(&state, tenant.id, &role).await?;
    Ok(Json(json!(found)))
}

/// Body of `PATCH .../roles/{role}`: absent fields stay, `"parent": null`
/// clears the parent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[expect(
        clippy::option_option,
        reason = "absent, null and a name are three different edits"
    )]
    parent: Option<Option<String>>,
}

/// Distinguishes a present `null` from an absent field.
#[expect(
    clippy::option_option,
    reason = "absent, null and a name are three different edits"
)]
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /admin/api/v1/tenants/{tenant}/roles/{role}`
pub async fn role_update(
    State(state): State<AppState>,
    Path((tenant, role)): Path<(String, String)>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    Json(body): Json<RolePatch>,
) -> Result<Json<Value>, ApiError> {
    if let Some(d) = &body.description {
        check_description(d)?;
    }
    let (tenant, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "roles",
        "role.update",
    )
    .await?;
    let applied = writer
        .apply(&Change::UpdateRole {
            name: role.clone(),
            description: body.description,
            parent: body.parent,
        })
        .await?;
    let view = state
        .authz_admin
        .roles(tenant.id)
        .await?
        .into_iter()
        .find(|r| r.name == role);
    Ok(Json(
        json!({ "role": view, "data_version": applied.data_version }),
    ))
}

/// `DELETE /admin/api/v1/tenants/{tenant}/roles/{role}`
pub async fn role_delete(
    State(state): State<AppState>,
    Path((tenant, role)): Path<(String, String)>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    let (_, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "roles",
        "role.delete",
    )
    .await?;
    writer.apply(&Change::DeleteRole { name: role }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/api/v1/tenants/{tenant}/roles/{role}/permissions`
pub async fn permissions_list(
    State(state): State<AppState>,
    Path((tenant, role)): Path<(String, String)>,
    client: ClientInfo,
    me: CurrentSession,
) -> Result<Json<Value>, ApiError> {
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "roles",
        Access::Read,
        "roles.permissions.list",
    )
    .await?;
    let found = find_role(&state, tenant.id, &role).await?;
    Ok(Json(json!({ "permissions": found.permissions })))
}

/// `POST /admin/api/v1/tenants/{tenant}/roles/{role}/permissions`
/// `{"resource","action"}`
pub async fn permissions_add(
    State(state): State<AppState>,
    Path((tenant, role)): Path<(String, String)>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    Json(body): Json<PermissionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let permission = Permission {
        resource: body.resource,
        action: body.action,
    };
    check_permission(&permission)?;
    let (_, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "roles",
        "role.permission.add",
    )
    .await?;
    let applied = writer
        .apply(&Change::AddPermission {
            role,
            permission: permission.clone(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "resource": permission.resource, "action": permission.action, "data_version": applied.data_version }),
        ),
    ))
}

/// A grant in a body or query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionBody {
    resource: String,
    action: String,
}

/// `DELETE /admin/api/v1/tenants/{tenant}/roles/{role}/permissions?resource=..&action=..`
pub async fn permissions_remove(
    State(state): State<AppState>,
    Path((tenant, role)): Path<(String, String)>,
    Query(query): Query<PermissionBody>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    let (_, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "roles",
        "role.permission.remove",
    )
    .await?;
    writer
        .apply(&Change::RemovePermission {
            role,
            permission: Permission {
                resource: query.resource,
                action: query.action,
            },
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- assignments

async fn user_id(state: &AppState, tenant: &Tenant, raw: &str) -> Result<Uuid, ApiError> {
    Ok(state.authz.subject_named(tenant.id, raw).await?.id)
}

/// `GET /admin/api/v1/tenants/{tenant}/users/{user}/roles`
pub async fn user_roles_list(
    State(state): State<AppState>,
    Path((tenant, user)): Path<(String, String)>,
    client: ClientInfo,
    me: CurrentSession,
) -> Result<Json<Value>, ApiError> {
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "users",
        Access::Read,
        "user.roles.list",
    )
    .await?;
    let id = user_id(&state, &tenant, &user).await?;
    let roles = state.authz_admin.assignments(tenant.id, id).await?;
    Ok(Json(json!({ "roles": roles })))
}

/// Body of `PUT .../users/{user}/roles/{role}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentBody {
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

/// `PUT /admin/api/v1/tenants/{tenant}/users/{user}/roles/{role}`
/// `{"expires_at": RFC 3339 | null}` (the body may be omitted).
pub async fn user_role_put(
    State(state): State<AppState>,
    Path((tenant, user, role)): Path<(String, String, String)>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    body: Option<Json<AssignmentBody>>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    if body.expires_at.is_some_and(|t| t <= state.auth.clock.now()) {
        return Err(invalid("expires_at is in the past"));
    }
    let (tenant, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "users",
        "user.role.assign",
    )
    .await?;
    let id = user_id(&state, &tenant, &user).await?;
    let applied = writer
        .apply(&Change::Assign {
            user_id: id,
            role: role.clone(),
            expires_at: body.expires_at,
        })
        .await?;
    let roles = state.authz_admin.assignments(tenant.id, id).await?;
    Ok(Json(
        json!({ "roles": roles, "data_version": applied.data_version }),
    ))
}

/// `DELETE /admin/api/v1/tenants/{tenant}/users/{user}/roles/{role}`
pub async fn user_role_delete(
    State(state): State<AppState>,
    Path((tenant, user, role)): Path<(String, String, String)>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    let (tenant, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "users",
        "user.role.unassign",
    )
    .await?;
    let id = user_id(&state, &tenant, &user).await?;
    writer
        .apply(&Change::Unassign { user_id: id, role })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- policies

/// A policy as written by an admin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    priority: i32,
    effect: Effect,
    document: Value,
    #[serde(default = "yes")]
    active: bool,
    /// For updates: the version the editor read (optimistic concurrency).
    #[serde(default)]
    version: Option<i32>,
}

fn yes() -> bool {
    true
}

impl PolicyBody {
    /// Checks everything that does not need the rest of the tenant.
    fn check(&self) -> Result<(), ApiError> {
        check_name("policy", &self.name)?;
        check_description(&self.description)?;
        validate_policy_document(&self.name, &self.document).map_err(|e| invalid(e.to_string()))
    }

    fn to_new(&self) -> NewPolicy {
        NewPolicy {
            name: self.name.clone(),
            description: self.description.clone(),
            priority: self.priority,
            effect: self.effect,
            document: self.document.clone(),
            active: self.active,
        }
    }

    fn to_def(&self) -> PolicyDef {
        PolicyDef {
            name: self.name.clone(),
            priority: self.priority,
            effect: self.effect,
            document: self.document.clone(),
            active: self.active,
        }
    }
}

/// `GET /admin/api/v1/tenants/{tenant}/policies`
pub async fn policies_list(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    me: CurrentSession,
) -> Result<Json<Value>, ApiError> {
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "policies",
        Access::Read,
        "policies.list",
    )
    .await?;
    let policies = state.authz_admin.policies(tenant.id).await?;
    let warnings = state
        .authz
        .rules(tenant.id)
        .await?
        .0
        .set
        .warnings()
        .to_vec();
    Ok(Json(json!({ "policies": policies, "warnings": warnings })))
}

/// `GET /admin/api/v1/tenants/{tenant}/policies/{policy}`
pub async fn policy_get(
    State(state): State<AppState>,
    Path((tenant, name)): Path<(String, String)>,
    client: ClientInfo,
    me: CurrentSession,
) -> Result<Json<Value>, ApiError> {
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "policies",
        Access::Read,
        "policies.get",
    )
    .await?;
    let found = state
        .authz_admin
        .policies(tenant.id)
        .await?
        .into_iter()
        .find(|p| p.name == name);
    Ok(Json(json!(found.ok_or_else(|| ApiError::not_found(
        format!("no policy {name:?}")
    ))?)))
}

/// `POST /admin/api/v1/tenants/{tenant}/policies`
pub async fn policies_create(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    Json(body): Json<PolicyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    body.check()?;
    let (tenant, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "policies",
        "policy.create",
    )
    .await?;
    let applied = writer.apply(&Change::CreatePolicy(body.to_new())).await?;
    let warnings = policy_warnings(&state, tenant.id, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "name": body.name, "version": applied.policy_version, "data_version": applied.data_version, "warnings": warnings }),
        ),
    ))
}

/// `PUT /admin/api/v1/tenants/{tenant}/policies/{policy}` (body carries the
/// `version` read; a stale version answers 409).
pub async fn policy_update(
    State(state): State<AppState>,
    Path((tenant, name)): Path<(String, String)>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    Json(body): Json<PolicyBody>,
) -> Result<Json<Value>, ApiError> {
    if body.name != name {
        return Err(invalid(format!(
            "the body names policy {:?} but the path names {name:?}",
            body.name
        )));
    }
    body.check()?;
    let expected_version = body
        .version
        .ok_or_else(|| invalid("version: required on update (the version you read)"))?;
    let (tenant, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "policies",
        "policy.update",
    )
    .await?;
    let applied = writer
        .apply(&Change::UpdatePolicy {
            policy: body.to_new(),
            expected_version,
        })
        .await?;
    let warnings = policy_warnings(&state, tenant.id, &body.name).await?;
    Ok(Json(
        json!({ "name": body.name, "version": applied.policy_version, "data_version": applied.data_version, "warnings": warnings }),
    ))
}

/// `DELETE /admin/api/v1/tenants/{tenant}/policies/{policy}`
pub async fn policy_delete(
    State(state): State<AppState>,
    Path((tenant, name)): Path<(String, String)>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    let (_, writer) = writer(
        &state,
        &me,
        &client,
        &headers,
        &tenant,
        "policies",
        "policy.delete",
    )
    .await?;
    writer.apply(&Change::DeletePolicy { name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn policy_warnings(
    state: &AppState,
    tenant_id: Uuid,
    name: &str,
) -> Result<Vec<gatehouse_authz::Warning>, ApiError> {
    let (rules, _) = state.authz.rules(tenant_id).await?;
    Ok(rules
        .set
        .warnings()
        .iter()
        .filter(|w| w.policy == name)
        .cloned()
        .collect())
}

/// The tenant's rules with `draft` added (or replacing the policy of the same
/// name), compiled; 422 when that would not compile.
async fn with_draft(
    state: &AppState,
    tenant_id: Uuid,
    draft: &PolicyBody,
) -> Result<PolicySet, ApiError> {
    let mut rules = state.authz_admin.rules(tenant_id).await?.rules;
    rules.policies.retain(|p| p.name != draft.name);
    rules.policies.push(draft.to_def());
    PolicySet::compile(&rules).map_err(|e| invalid(e.to_string()))
}

/// `POST /admin/api/v1/tenants/{tenant}/policies/validate`: checks a draft
/// against the tenant's current rules without saving it.
pub async fn policies_validate(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    me: CurrentSession,
    Json(body): Json<PolicyBody>,
) -> Result<Json<Value>, ApiError> {
    body.check()?;
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "policies",
        Access::Read,
        "policies.validate",
    )
    .await?;
    let set = with_draft(&state, tenant.id, &body).await?;
    let warnings: Vec<_> = set
        .warnings()
        .iter()
        .filter(|w| w.policy == body.name)
        .cloned()
        .collect();
    Ok(Json(json!({ "valid": true, "warnings": warnings })))
}

/// Body of `policies/simulate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateBody {
    policy: PolicyBody,
    request: SimulatedRequest,
}

/// The request to evaluate in a simulation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedRequest {
    /// Username of the subject.
    subject: String,
    resource: String,
    action: String,
    #[serde(default)]
    resource_attributes: Map<String, Value>,
    #[serde(default)]
    context: Map<String, Value>,
}

/// `POST /admin/api/v1/tenants/{tenant}/policies/simulate`: evaluates a
/// request against the tenant's rules with a draft policy in place, beside
/// the decision without it, saving nothing.
pub async fn policies_simulate(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    client: ClientInfo,
    me: CurrentSession,
    Json(body): Json<SimulateBody>,
) -> Result<Json<Value>, ApiError> {
    body.policy.check()?;
    let tenant = admin_tenant(
        &state,
        &me,
        &client,
        &tenant,
        "policies",
        Access::Read,
        "policies.simulate",
    )
    .await?;
    let draft_set = with_draft(&state, tenant.id, &body.policy).await?;
    let (current, _) = state.authz.rules(tenant.id).await?;
    let id = user_id(&state, &tenant, &body.request.subject).await?;
    let subject = state
        .authz
        .subject_by_id(tenant.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    let question = Question {
        resource: body.request.resource,
        resource_attributes: body.request.resource_attributes,
        action: body.request.action,
        context: body.request.context,
        now: state.auth.clock.now().unix_timestamp(),
    };
    let request = authz::request_for(&subject, question);
    let with_draft = authz::decide_for(&subject, &draft_set, &request, true);
    let without = authz::decide_for(&subject, &current.set, &request, false);
    Ok(Json(json!({
        "with_draft": with_draft,
        "current": without,
        "changed": with_draft.allowed != without.allowed,
        "warnings": draft_set.warnings().iter().filter(|w| w.policy == body.policy.name).collect::<Vec<_>>(),
    })))
}
