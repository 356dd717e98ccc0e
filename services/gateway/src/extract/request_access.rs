//! Whether an admitted caller may make one HTTP request, and the identity
//! headers that say who they are: the decision forward auth (`/v1/verify`)
//! answers for a proxy and the reverse proxy (`/svc/...`) enforces itself.
//! One function, so a rule added here holds for both ways in.

use axum::http::{HeaderName, HeaderValue};
use gatehouse_app::directory::Tenant;
use gatehouse_authz::http::HttpMapping;
use serde_json::{Map, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use gatehouse_app::authz::{self, Question};

/// Who the caller is, for the upstream.
#[derive(Debug, Clone)]
pub struct Granted {
    /// The caller's username.
    pub username: String,
    /// The caller's id.
    pub user_id: Uuid,
    /// The caller's tenant slug.
    pub tenant: String,
    /// Effective roles (assigned or inherited, unexpired).
    pub roles: Vec<String>,
    /// The caller's attributes (subject rules of routing match on them).
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl Granted {
    /// What routing's subject rules look at.
    #[must_use]
    pub fn facts(&self) -> gatehouse_app::routing::SubjectFacts<'_> {
        gatehouse_app::routing::SubjectFacts {
            roles: &self.roles,
            attributes: &self.attributes,
        }
    }

    /// `X-Gatehouse-User`, `-User-Id`, `-Tenant` and `-Roles`.
    pub fn identity_headers(&self) -> Result<[(HeaderName, HeaderValue); 4], ApiError> {
        let value = |text: &str| HeaderValue::from_str(text).map_err(|e| ApiError::internal(&e));
        Ok([
            (
                HeaderName::from_static("x-gatehouse-user"),
                value(&self.username)?,
            ),
            (
                HeaderName::from_static("x-gatehouse-user-id"),
                value(&self.user_id.to_string())?,
            ),
            (
                HeaderName::from_static("x-gatehouse-tenant"),
                value(&self.tenant)?,
            ),
            (
                HeaderName::from_static("x-gatehouse-roles"),
                value(&self.roles.join(","))?,
            ),
        ])
    }
}

/// Why a request may not go ahead.
#[derive(Debug)]
pub enum Refused {
    /// The method or path cannot be mapped to an action and resource (400).
    Unmappable(String),
    /// The engine said no (403).
    Denied {
        /// The mapped action.
        action: String,
        /// The mapped resource.
        resource: String,
    },
    /// A store or the tenant's settings failed.
    Failed(ApiError),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Unmappable(detail) => Self::bad_request(detail),
            Refused::Denied { action, resource } => Self::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!("{action} on {resource} is not allowed"),
            ),
            Refused::Failed(e) => e,
        }
    }
}

/// The path a decision is made on.
#[derive(Debug, Clone, Copy)]
pub enum RequestPath<'a> {
    /// The path (and query) a proxy in front of us forwards (forward auth):
    /// decoded once and its dot segments resolved, as such proxies do.
    Uri(&'a str),
    /// The decoded segments the reverse proxy itself forwards, checked
    /// already (no dot segments, encoded slashes only where allowed):
    /// decided on exactly as sent, nothing decoded or resolved again.
    Segments(&'a [String]),
}

/// What one HTTP request asks for.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The path as the protected app sees it.
    pub path: RequestPath<'a>,
    /// The client's address (`context.ip`).
    pub client_ip: &'a str,
    /// The original host, when known (`context.host`).
    pub host: Option<&'a str>,
}

/// Maps `request` to an action and resource by the tenant's
/// `settings.verify` and asks the engine about the caller.
pub async fn authorise(
    state: &AppState,
    tenant: &Tenant,
    user_id: Uuid,
    request: HttpRequest<'_>,
) -> Result<Granted, Refused> {
    let mapping: HttpMapping = match tenant.settings.get("verify") {
        Some(raw) => serde_json::from_value(raw.clone()).map_err(|e| {
            tracing::error!(tenant = %tenant.slug, error = %e, "invalid verify settings; refusing");
            Refused::Failed(ApiError::internal(&e))
        })?,
        None => HttpMapping::default(),
    };
    let (action, resource) = match request.path {
        RequestPath::Uri(uri) => mapping.map(request.method, uri),
        RequestPath::Segments(segments) => mapping.map_segments(request.method, segments),
    }
    .map_err(|e| Refused::Unmappable(e.to_string()))?;
    let mut context = authz::client_context(request.client_ip);
    if let Some(host) = request.host {
        context.insert("host".into(), json!(host));
    }
    let question = Question {
        resource: resource.clone(),
        resource_attributes: Map::new(),
        action: action.clone(),
        context,
        now: state.auth.clock.now().unix_timestamp(),
    };
    let answer = state
        .authz
        .ask_as_caller(tenant.id, user_id, question)
        .await
        .map_err(|e| Refused::Failed(e.into()))?;
    if !answer.decision.allowed {
        return Err(Refused::Denied { action, resource });
    }
    // The subject is shared with the cache: only what the identity headers
    // need is copied (every verify and proxied request passes here).
    let roles = answer.rules.set.effective_roles(&answer.request);
    let subject = answer.subject;
    Ok(Granted {
        username: subject.username.clone(),
        user_id: subject.id,
        tenant: tenant.slug.clone(),
        roles,
        attributes: subject.attributes.clone(),
    })
}
