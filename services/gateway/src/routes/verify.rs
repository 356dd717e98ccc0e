//! `/v1/verify`: forward auth for nginx `auth_request`, Traefik `ForwardAuth`
//! and Envoy `ext_authz` (HTTP mode).
//!
//! The proxy sends the client's cookie or `Authorization` header and names the
//! original request in `X-Forwarded-Method` + `X-Forwarded-Uri` (Traefik),
//! `X-Original-Method` + `X-Original-URI` (nginx), or — for Envoy, which
//! forwards the request itself with `path_prefix: /v1/verify` — the request
//! line of this call: method as sent, path after `/v1/verify`. The request
//! is mapped to an action and resource (`gatehouse_authz::http`, per-tenant
//! `settings.verify`) and decided by the engine with `context.ip` = the
//! client address and `context.host` = `X-Forwarded-Host`.
//!
//! 200 with `X-Gatehouse-User`, `X-Gatehouse-User-Id`, `X-Gatehouse-Tenant`,
//! `X-Gatehouse-Roles` (effective roles, comma-separated); 401 when not
//! authenticated; 403 when authenticated but denied; 400 when the forwarded
//! request cannot be mapped. A Bearer access token (JWT) is checked in
//! process — signature, claims and the revocation mirror — with no Redis
//! round trip; session cookies and session tokens are validated in Redis.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use gatehouse_authz::http::HttpMapping;
use gatehouse_core::TenantSlug;
use gatehouse_store::directory;
use serde_json::{Map, json};

use crate::auth::client::ClientInfo;
use crate::auth::extract::authenticate;
use crate::authz::{self, Question};
use crate::error::ApiError;
use crate::state::AppState;

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Envoy's HTTP `ext_authz` calls `path_prefix` + the original path.
const ENVOY_PREFIX: &str = "/v1/verify";

/// The original method and URI as the proxy reported them.
fn forwarded<'a>(headers: &'a HeaderMap, method: &'a Method, uri: &'a Uri) -> (&'a str, &'a str) {
    let method = header(headers, "x-forwarded-method")
        .or_else(|| header(headers, "x-original-method"))
        .unwrap_or(method.as_str());
    let uri = header(headers, "x-forwarded-uri")
        .or_else(|| header(headers, "x-original-uri"))
        .unwrap_or_else(|| {
            let line = uri.path_and_query().map_or("/", |p| p.as_str());
            line.strip_prefix(ENVOY_PREFIX)
                .filter(|rest| rest.starts_with('/'))
                .unwrap_or(line)
        });
    (method, uri)
}

fn outcome(result: &'static str, started: Instant) {
    metrics::counter!("gatehouse_verify_total", "result" => result).increment(1);
    metrics::histogram!("gatehouse_verify_duration_seconds")
        .record(started.elapsed().as_secs_f64());
}

/// Who is calling, however they proved it.
struct Caller {
    tenant_id: uuid::Uuid,
    tenant_slug: String,
    user_id: uuid::Uuid,
}

/// A Bearer access token is checked in process (signature, claims,
/// revocation mirror: no Redis call); otherwise the session cookie or
/// session token is validated in Redis.
async fn identify(state: &AppState, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
    if let Some(raw) = crate::auth::extract::bearer_jwt(headers) {
        return Ok(
            crate::auth::extract::verify_access_token(state, raw).and_then(|claims| {
                Some(Caller {
                    tenant_id: uuid::Uuid::try_parse(&claims.tenant_id).ok()?,
                    tenant_slug: claims.tid,
                    user_id: uuid::Uuid::try_parse(&claims.sub).ok()?,
                })
            }),
        );
    }
    Ok(authenticate(state, headers).await?.map(|me| Caller {
        tenant_id: me.session.tenant_id,
        tenant_slug: me.session.tenant_slug,
        user_id: me.session.user_id,
    }))
}

/// `ANY /v1/verify`
pub async fn verify(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    client: ClientInfo,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Some(caller) = identify(&state, &headers).await? else {
        outcome("unauthenticated", started);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid session or access token is required (session cookie or Authorization: Bearer)",
        ));
    };
    let slug = TenantSlug::parse(&caller.tenant_slug).map_err(|e| ApiError::internal(&e))?;
    let tenant = directory::tenant_by_slug(&state.db, &slug)
        .await?
        .filter(|t| t.is_active() && t.id == caller.tenant_id)
        .ok_or_else(|| {
            outcome("unauthenticated", started);
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the caller's tenant is not active",
            )
        })?;
    let mapping: HttpMapping = match tenant.settings.get("verify") {
        Some(raw) => serde_json::from_value(raw.clone()).map_err(|e| {
            tracing::error!(tenant = %tenant.slug, error = %e, "invalid verify settings; refusing");
            outcome("error", started);
            ApiError::internal(&e)
        })?,
        None => HttpMapping::default(),
    };
    let (original_method, original_uri) = forwarded(&headers, &method, &uri);
    let (action, resource) = mapping.map(original_method, original_uri).map_err(|e| {
        outcome("bad_request", started);
        ApiError::bad_request(e.to_string())
    })?;
    let mut context = authz::client_context(&client.ip);
    if let Some(host) = header(&headers, "x-forwarded-host") {
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
        .ask_as_caller(tenant.id, caller.user_id, question)
        .await?;
    if !answer.decision.allowed {
        outcome("denied", started);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{action} on {resource} is not allowed"),
        ));
    }
    outcome("allowed", started);
    let effective_roles = answer.rules.set.effective_roles(&answer.request).join(",");
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    for (name, value) in [
        ("x-gatehouse-user", answer.subject.username.as_str()),
        ("x-gatehouse-user-id", &answer.subject.id.to_string()),
        ("x-gatehouse-tenant", tenant.slug.as_str()),
        ("x-gatehouse-roles", effective_roles.as_str()),
    ] {
        let value = HeaderValue::from_str(value).map_err(|e| ApiError::internal(&e))?;
        out.insert(HeaderName::from_static(name), value);
    }
    Ok(response)
}
