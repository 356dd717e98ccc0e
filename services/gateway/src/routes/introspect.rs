//! `POST /oauth2/introspect` (RFC 7662) for service clients, and the admin
//! API that creates them (`/admin/api/v1/service-clients`).
//!
//! Clients authenticate with HTTP Basic (`client_id:client_secret`), checked
//! by `gatehouse_app::clients` (SHA-256 secrets, throttled per client id and
//! address). The token is admitted by `gatehouse_app::admission`, like every
//! credential:
//! anything that is not a live Gatehouse access token or session token —
//! revoked, of a disabled user or tenant, killed — answers `{"active": false}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use gatehouse_core::TenantSlug;
use serde::Deserialize;
use serde_json::{Value, json};

use gatehouse_app::admission::{Expect, Need, Presented, Refusal};

use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::admin::{Access, SYSTEM_TENANT, admin_event, admin_tenant};
use crate::extract::service_client::authenticate_client;
use crate::extract::session::CurrentSession;
use crate::state::AppState;

/// RFC 7662 request form.
#[derive(Debug, Deserialize)]
pub struct IntrospectForm {
    token: String,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted per RFC 7662; every kind of token is recognised by its shape"
    )]
    token_type_hint: Option<String>,
}

fn inactive(result: &'static str) -> Json<Value> {
    metrics::counter!("gatehouse_introspection_total", "result" => result).increment(1);
    Json(json!({ "active": false }))
}

/// `POST /oauth2/introspect`
pub async fn introspect(
    State(state): State<AppState>,
    caller: ClientInfo,
    headers: HeaderMap,
    Form(form): Form<IntrospectForm>,
) -> Result<Response, ApiError> {
    let address = gatehouse_ratelimit::ip_bucket(caller.addr);
    let client = match authenticate_client(
        &state,
        &headers,
        &address,
        "gatehouse_introspection_total",
    )
    .await
    {
        Ok(client) => client,
        Err(e) if e.status() == StatusCode::TOO_MANY_REQUESTS => return Err(e),
        Err(e) => {
            let mut response = e.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gatehouse\""),
            );
            return Ok(response);
        }
    };
    // A client bound to a tenant learns nothing about other tenants' tokens.
    let expect = client
        .tenant_slug
        .as_deref()
        .map_or(Expect::AnyTenant, Expect::Tenant);
    let verdict = state
        .admission
        .admit(Presented::Bearer(&form.token), expect, Need::Session)
        .await?;
    let admitted = match verdict {
        Ok(admitted) => admitted,
        Err(Refusal::OtherTenant) => return Ok(inactive("other_tenant").into_response()),
        Err(Refusal::Revoked) => return Ok(inactive("revoked").into_response()),
        Err(_) => return Ok(inactive("inactive").into_response()),
    };
    metrics::counter!("gatehouse_introspection_total", "result" => "active").increment(1);
    let body = match (&admitted.access, &admitted.session) {
        (Some(claims), _) => json!({
            "active": true,
            "token_type": "Bearer",
            "sub": claims.sub,
            "username": claims.name,
            "iss": claims.iss,
            "aud": claims.aud,
            "exp": claims.exp,
            "iat": claims.iat,
            "nbf": claims.nbf,
            "jti": claims.jti,
            "tid": claims.tid,
            "sid": claims.sid,
            "roles": claims.roles,
            "client_id": client.client_id,
        }),
        (None, Some(session)) => json!({
            "active": true,
            "token_type": "session",
            "sub": session.user_id,
            "username": session.username,
            "tid": session.tenant_slug,
            "sid": session.id,
            "exp": session.idle_expires_at.min(session.absolute_expires_at),
            "iat": session.created_at,
            "client_id": client.client_id,
        }),
        (None, None) => return Ok(inactive("inactive").into_response()),
    };
    Ok(Json(body).into_response())
}

/// Body of `POST /admin/api/v1/service-clients`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    client_id: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    description: String,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
}

/// `POST /admin/api/v1/service-clients` (platform admins): the secret is in
/// this response only.
pub async fn clients_create(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
    Json(body): Json<NewClient>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let valid_id = (3..=64).contains(&body.client_id.len())
        && body
            .client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !valid_id {
        return Err(invalid(
            "client_id must be 3-64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
        ));
    }
    if body.description.chars().count() > 500 {
        return Err(invalid("description must be at most 500 characters"));
    }
    let platform = admin_tenant(
        &state,
        &me,
        &client,
        SYSTEM_TENANT,
        "service-clients",
        Access::Write,
        "service_client.create",
    )
    .await?;
    let tenant_id = match &body.tenant {
        None => None,
        Some(raw) => {
            let slug = TenantSlug::parse(raw).map_err(|e| invalid(format!("tenant: {e}")))?;
            let tenant = state
                .directory
                .tenant_by_slug(&slug)
                .await?
                .ok_or_else(|| invalid(format!("tenant: no tenant {raw:?}")))?;
            Some(tenant.id)
        }
    };
    let target = match &body.tenant {
        Some(t) => format!("{} (tenant {t})", body.client_id),
        None => body.client_id.clone(),
    };
    let event = admin_event(
        &me,
        &platform,
        "service_client.create",
        Some(target),
        &client,
        &headers,
    );
    let secret = state
        .clients
        .create(&event, &body.client_id, tenant_id, &body.description)
        .await
        .map_err(|e| match e.kind() {
            gatehouse_core::ErrorKind::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("client {:?} already exists", body.client_id),
            ),
            _ => e.into(),
        })?;
    state.relay.kick();
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "client_id": body.client_id, "client_secret": secret, "tenant": body.tenant, "scopes": ["introspect"] }),
        ),
    ))
}

/// `GET /admin/api/v1/service-clients`
pub async fn clients_list(
    State(state): State<AppState>,
    client: ClientInfo,
    me: CurrentSession,
) -> Result<Json<Value>, ApiError> {
    admin_tenant(
        &state,
        &me,
        &client,
        SYSTEM_TENANT,
        "service-clients",
        Access::Read,
        "service_client.list",
    )
    .await?;
    Ok(Json(
        json!({ "service_clients": state.clients.list().await? }),
    ))
}

/// `DELETE /admin/api/v1/service-clients/{client_id}`
pub async fn clients_delete(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    client: ClientInfo,
    headers: HeaderMap,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    let platform = admin_tenant(
        &state,
        &me,
        &client,
        SYSTEM_TENANT,
        "service-clients",
        Access::Write,
        "service_client.delete",
    )
    .await?;
    let event = admin_event(
        &me,
        &platform,
        "service_client.delete",
        Some(client_id.clone()),
        &client,
        &headers,
    );
    if !state.clients.delete(&event, &client_id).await? {
        return Err(ApiError::not_found(format!("no client {client_id:?}")));
    }
    state.relay.kick();
    Ok(StatusCode::NO_CONTENT)
}
