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

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use gatehouse_core::Username;
use gatehouse_store::directory::Tenant;
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
    admitted: HashMap<String, Tenant>,
}

impl Resolver<'_> {
    async fn resolve(&mut self, check: &CheckRequest) -> Result<(Uuid, Uuid), ApiError> {
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
        if about_me && !self.explain {
            return Ok((session.tenant_id, session.user_id));
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
            return Ok((session.tenant_id, session.user_id));
        }
        let raw = check
            .subject
            .as_deref()
            .ok_or_else(|| invalid("subject: required when asking about another tenant"))?;
        let subject = self.state.authz.subject_named(tenant.id, raw).await?;
        Ok((tenant.id, subject.id))
    }
}

async fn answer(
    state: &AppState,
    tenant_id: Uuid,
    user_id: Uuid,
    check: CheckRequest,
    explain: bool,
) -> Result<Value, ApiError> {
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
    let mut out = json!({
        "allowed": decision.allowed,
        "reason": decision.reason,
        "policy": decision.decided_by,
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
    let (tenant_id, user_id) = resolver.resolve(&body).await?;
    Ok(Json(
        answer(&state, tenant_id, user_id, body, query.explain).await?,
    ))
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
    for check in &body.checks {
        subjects.push(resolver.resolve(check).await?);
    }
    let mut results = Vec::with_capacity(subjects.len());
    for ((tenant_id, user_id), check) in subjects.into_iter().zip(body.checks) {
        results.push(answer(&state, tenant_id, user_id, check, query.explain).await?);
    }
    Ok(Json(json!({ "results": results })))
}
