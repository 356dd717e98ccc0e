//! `POST /v1/routing/resolve`: which version of a service a tenant gets, and
//! which instance would take its next request, for services and proxies that
//! route themselves (the same answer `/svc/...` acts on).
//!
//! Callers are service clients (HTTP Basic, as for introspection): routing
//! reveals internal addresses, so it is not for end users. A client bound to a
//! tenant may only ask about that tenant (403); a platform client about any.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use gatehouse_app::routing::RoutingServiceError;
use gatehouse_core::{ServiceName, TenantSlug};
use gatehouse_routing::Picked;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::service_client::authenticate_client;
use crate::state::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Tenant slug.
    tenant: String,
    /// Service name.
    service: String,
}

/// `POST /v1/routing/resolve`
pub async fn resolve(
    State(state): State<AppState>,
    caller: ClientInfo,
    headers: HeaderMap,
    Json(body): Json<ResolveRequest>,
) -> Result<Json<Value>, ApiError> {
    let address = gatehouse_ratelimit::ip_bucket(caller.addr);
    let client = authenticate_client(
        &state,
        &headers,
        &address,
        "gatehouse_routing_resolve_clients_total",
    )
    .await?;
    let slug = TenantSlug::parse(&body.tenant)
        .map_err(|e| ApiError::bad_request(format!("tenant: {e}")))?;
    let service = ServiceName::parse(&body.service)
        .map_err(|e| ApiError::bad_request(format!("service: {e}")))?;
    if let Some(bound) = client.tenant_slug.as_deref()
        && bound != slug.as_str()
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this client may only resolve routes of tenant {bound}"),
        ));
    }
    let tenant = state
        .directory
        .tenant_by_slug(&slug)
        .await?
        .filter(|t| t.status == "active")
        .ok_or_else(|| ApiError::not_found(format!("no active tenant {slug}")))?;
    let picked = state
        .routing
        .resolve(service.as_str(), tenant.id, None)
        .await
        .map_err(|e| match e {
            RoutingServiceError::NotAvailable(_) => ApiError::not_found(format!(
                "service {service} is not available to tenant {slug}"
            )),
            e => {
                tracing::warn!(error = %e, "routing store unavailable");
                ApiError::unavailable("the routing store is unavailable", 1)
            }
        })?;
    match picked {
        Picked::Instance(pick) => Ok(Json(json!({
            "version": pick.version,
            "instance": pick.address,
            "instance_id": pick.instance,
            "reason": pick.why,
            "panic": pick.panic,
        }))),
        Picked::NoInstance { version } => Err(ApiError::unavailable(
            format!("no healthy instance of {service} {version}"),
            1,
        )),
        Picked::NoVersion => Err(ApiError::not_found(format!(
            "no version of service {service} for tenant {slug} (no such service, or no default version)"
        ))),
    }
}
