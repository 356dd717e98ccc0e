//! `POST /v1/authz/check` and `/v1/authz/check-batch`: "may this subject do
//! this action on this resource?", answered by the engine.
//!
//! The caller is signed in. Asking about yourself in your own tenant needs no
//! permission; asking about another subject, or in another tenant (platform
//! users only), needs `read` on `admin:<tenant>:authz`, checked like every
//! admin call. So does `?explain=true`, even about yourself: the trace shows
//! the tenant's policies and their conditions (an office CIDR, say), which a
//! member could otherwise read or bisect.
//!
//! `subject` is a username or a user id (the `sub` a service finds in a
//! token).
//!
//! A self-check without that permission is a member's question, answered so
//! that policies cannot be bisected through it: its `context` may only hold
//! the keys the tenant marks as client-suppliable
//! (`settings.authz.client_context`, a list of names; others are refused
//! with 422), the server's own facts (`ip`) are added and win, and the
//! answer never names a deciding policy (a role grant, which is the
//! caller's own, is still named).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use gatehouse_app::directory::Tenant;
use gatehouse_core::Username;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::admin::{Access, admin_tenant};
use crate::extract::session::CurrentSession;
use crate::state::AppState;
use gatehouse_app::authz::{self, Question};

/// Most checks in one batch.
pub const MAX_BATCH: usize = 100;

/// One question.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Tenant slug; defaults to the caller's.
    #[serde(default)]
    tenant: Option<String>,
    /// Username or user id; defaults to the caller.
    #[serde(default)]
    subject: Option<String>,
    resource: String,
    action: String,
    #[serde(default)]
    context: Map<String, Value>,
    #[serde(default)]
    resource_attributes: Map<String, Value>,
}

/// `?explain=true`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    #[serde(default)]
    explain: bool,
}

/// A batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    checks: Vec<CheckRequest>,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
}

fn check_shape(check: &CheckRequest, at: &str) -> Result<(), ApiError> {
    if check.resource.is_empty() || check.resource.len() > 256 {
        return Err(invalid(format!(
            "{at}resource: must be 1 to 256 characters"
        )));
    }
    if check.action.is_empty() || check.action.len() > 64 {
        return Err(invalid(format!("{at}action: must be 1 to 64 characters")));
    }
    Ok(())
}

/// Resolves which tenant and subject a check is about, enforcing who may ask.
/// Guard results are memoised per tenant within one call.
struct Resolver<'a> {
    state: &'a AppState,
    me: &'a CurrentSession,
    client: &'a ClientInfo,
    /// Whether the answers carry the evaluation trace.
    explain: bool,
    admitted: HashMap<String, std::sync::Arc<Tenant>>,
}

/// Who a check is about, and whether the caller passed the admin guard for
/// it (a privileged check sees everything; a member's self-check does not).
#[derive(Debug, Clone, Copy)]
struct Resolved {
    tenant_id: Uuid,
    user_id: Uuid,
    privileged: bool,
}

impl Resolver<'_> {
    async fn resolve(&mut self, check: &CheckRequest) -> Result<Resolved, ApiError> {
        let session = &self.me.0.session;
        let tenant_slug = check
            .tenant
            .clone()
            .unwrap_or_else(|| session.tenant_slug.clone());
        let own_tenant = tenant_slug == session.tenant_slug;
        let about_me = own_tenant
            && check.subject.as_deref().is_none_or(|s| {
                let mine = Username::parse(&session.username);
                Uuid::try_parse(s).is_ok_and(|id| id == session.user_id)
                    || Username::parse(s)
                        .is_ok_and(|u| mine.is_ok_and(|m| m.normalized() == u.normalized()))
            });
        if about_me && !self.explain && !self.admitted.contains_key(&tenant_slug) {
            return Ok(Resolved {
                tenant_id: session.tenant_id,
                user_id: session.user_id,
                privileged: false,
            });
        }
        let tenant = if let Some(t) = self.admitted.get(&tenant_slug) {
            t.clone()
        } else {
            let t = admin_tenant(
                self.state,
                self.me,
                self.client,
                &tenant_slug,
                "authz",
                Access::Read,
                if self.explain {
                    "authz.explain"
                } else {
                    "authz.check"
                },
            )
            .await?;
            self.admitted.insert(tenant_slug.clone(), t.clone());
            t
        };
        if about_me {
            return Ok(Resolved {
                tenant_id: session.tenant_id,
                user_id: session.user_id,
                privileged: true,
            });
        }
        let raw = check
            .subject
            .as_deref()
            .ok_or_else(|| invalid("subject: required when asking about another tenant"))?;
        let subject = self.state.authz.subject_named(tenant.id, raw).await?;
        Ok(Resolved {
            tenant_id: tenant.id,
            user_id: subject.id,
            privileged: true,
        })
    }
}

/// A member's self-check context: only the keys the tenant lets clients
/// supply, then the server's own facts on top.
fn member_context(
    me: &CurrentSession,
    client: &ClientInfo,
    supplied: Map<String, Value>,
    at: &str,
) -> Result<Map<String, Value>, ApiError> {
    let allowed: Vec<&str> =
        me.0.tenant
            .settings
            .get("authz")
            .and_then(|a| a.get("client_context"))
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
    if let Some(refused) = supplied.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "{at}context.{refused}: not a key this tenant lets clients supply (settings.authz.client_context)"
        )));
    }
    let mut context = supplied;
    context.extend(authz::client_context(&client.ip));
    Ok(context)
}

async fn answer(
    state: &AppState,
    resolved: Resolved,
    check: CheckRequest,
    explain: bool,
) -> Result<Value, ApiError> {
    let Resolved {
        tenant_id,
        user_id,
        privileged,
    } = resolved;
    let question = Question {
        resource: check.resource,
        resource_attributes: check.resource_attributes,
        action: check.action,
        context: check.context,
        now: state.auth.clock.now().unix_timestamp(),
    };
    let authz::Answer {
        rules,
        decision,
        tier,
        ..
    } = state
        .authz
        .ask(tenant_id, user_id, question, explain)
        .await?
        .ok_or_else(|| ApiError::not_found("the subject no longer exists"))?;
    let by_policy = matches!(
        decision.reason,
        gatehouse_authz::Reason::PolicyPermit | gatehouse_authz::Reason::PolicyDeny
    );
    let named = if by_policy && !privileged {
        None
    } else {
        decision.decided_by
    };
    let mut out = json!({
        "allowed": decision.allowed,
        "reason": decision.reason,
        "policy": named,
        "tier": tier.label(),
        "data_version": rules.version,
    });
    if let Some(trace) = decision.trace {
        out["trace"] = json!(trace);
    }
    Ok(out)
}

/// `POST /v1/authz/check`
pub async fn check(
    State(state): State<AppState>,
    Query(query): Query<ExplainQuery>,
    client: ClientInfo,
    me: CurrentSession,
    Json(body): Json<CheckRequest>,
) -> Result<Json<Value>, ApiError> {
    check_shape(&body, "")?;
    let mut resolver = Resolver {
        state: &state,
        me: &me,
        client: &client,
        explain: query.explain,
        admitted: HashMap::new(),
    };
    let about = resolver.resolve(&body).await?;
    let mut body = body;
    if !about.privileged {
        body.context = member_context(&me, &client, std::mem::take(&mut body.context), "")?;
    }
    Ok(Json(answer(&state, about, body, query.explain).await?))
}

/// `POST /v1/authz/check-batch`: every check is validated and authorised
/// before any is answered, so a bad item fails the batch as a whole.
pub async fn check_batch(
    State(state): State<AppState>,
    Query(query): Query<ExplainQuery>,
    client: ClientInfo,
    me: CurrentSession,
    Json(body): Json<BatchRequest>,
) -> Result<Json<Value>, ApiError> {
    if body.checks.is_empty() || body.checks.len() > MAX_BATCH {
        return Err(invalid(format!(
            "checks: must hold 1 to {MAX_BATCH} checks"
        )));
    }
    for (i, check) in body.checks.iter().enumerate() {
        check_shape(check, &format!("checks[{i}]."))?;
    }
    let mut resolver = Resolver {
        state: &state,
        me: &me,
        client: &client,
        explain: query.explain,
        admitted: HashMap::new(),
    };
    let mut subjects = Vec::with_capacity(body.checks.len());
    let mut checks = body.checks;
    for (i, check) in checks.iter_mut().enumerate() {
        let about = resolver.resolve(check).await?;
        if !about.privileged {
            check.context = member_context(
                &me,
                &client,
                std::mem::take(&mut check.context),
                &format!("checks[{i}]."),
            )?;
        }
        subjects.push(about);
    }
    let mut results = Vec::with_capacity(subjects.len());
    for (resolved, check) in subjects.into_iter().zip(checks) {
        results.push(answer(&state, resolved, check, query.explain).await?);
    }
    Ok(Json(json!({ "results": results })))
}
