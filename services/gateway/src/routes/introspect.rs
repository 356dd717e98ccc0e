//! `POST /oauth2/introspect` (RFC 7662) for service clients, and the admin
//! API that creates them (`/admin/api/v1/service-clients`).
//!
//! Clients authenticate with HTTP Basic (`client_id:client_secret`). The
//! secret is stored as argon2id; a successful check is remembered in process
//! for [`CLIENT_CACHE_TTL`] keyed by the secret's SHA-256, so introspection
//! does not pay argon2 per call (deleting or disabling a client takes effect
//! within that time). Every token that is not a live Gatehouse access token
//! or session token answers `{"active": false}` — including revoked ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse_core::{TenantSlug, Verification};
use gatehouse_session::SessionToken;
use gatehouse_store::clients::{self, ServiceClient};
use gatehouse_store::directory;
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::admin::{Access, SYSTEM_TENANT, admin_tenant, audit_admin};
use crate::auth::client::ClientInfo;
use crate::auth::extract::CurrentSession;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified client secret is trusted without argon2.
pub const CLIENT_CACHE_TTL: Duration = Duration::from_secs(60);

/// A client whose secret (by SHA-256) was verified at the instant.
type VerifiedClient = (ServiceClient, [u8; 32], Instant);

/// Verified client credentials, by client id.
#[derive(Default)]
pub struct ClientCache(Mutex<HashMap<String, VerifiedClient>>);

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid-client",
        detail.to_owned(),
    )
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Authenticates the calling service client, or 401.
async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<ServiceClient, ApiError> {
    let (client_id, secret) = basic(headers)
        .ok_or_else(|| unauthorized("client authentication required (HTTP Basic)"))?;
    if client_id.len() > 64 || secret.len() > 128 {
        return Err(unauthorized("invalid client credentials"));
    }
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let cached = state
        .clients
        .0
        .lock()
        .ok()
        .and_then(|map| map.get(&client_id).cloned());
    if let Some((client, known, at)) = cached
        && known == digest
        && at.elapsed() < CLIENT_CACHE_TTL
    {
        return Ok(client);
    }
    let row = clients::by_client_id(&state.db, &client_id).await?;
    let stored = row
        .as_ref()
        .filter(|c| c.status == "active")
        .map(|c| c.secret_hash.clone());
    let verdict = state
        .auth
        .login
        .passwords()
        .verify(secret, stored)
        .await
        .map_err(|_| ApiError::unavailable("client authentication is busy; retry shortly", 1))?;
    match (row, verdict) {
        (Some(client), Verification::Match | Verification::MatchNeedsRehash(_))
            if client.scopes.iter().any(|s| s == "introspect") =>
        {
            if let Ok(mut map) = state.clients.0.lock() {
                map.insert(client_id, (client.clone(), digest, Instant::now()));
            }
            Ok(client)
        }
        _ => {
            metrics::counter!("gatehouse_introspection_total", "result" => "bad_client")
                .increment(1);
            Err(unauthorized("invalid client credentials"))
        }
    }
}

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
    headers: HeaderMap,
    Form(form): Form<IntrospectForm>,
) -> Result<Response, ApiError> {
    let client = match authenticate_client(&state, &headers).await {
        Ok(client) => client,
        Err(e) => {
            let mut response = e.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gatehouse\""),
            );
            return Ok(response);
        }
    };
    let now = state.auth.clock.unix_seconds();
    let allowed_tenant = |tenant: &str| client.tenant_slug.as_deref().is_none_or(|t| t == tenant);
    if let Some(session_token) = SessionToken::parse(&form.token) {
        let validated = state.auth.sessions.validate(&session_token).await?;
        let Some(session) = crate::auth::extract::unless_killed(&state, validated).await else {
            return Ok(inactive("inactive").into_response());
        };
        if !allowed_tenant(&session.tenant_slug) {
            return Ok(inactive("other_tenant").into_response());
        }
        metrics::counter!("gatehouse_introspection_total", "result" => "active").increment(1);
        return Ok(Json(json!({
            "active": true,
            "token_type": "session",
            "sub": session.user_id,
            "username": session.username,
            "tid": session.tenant_slug,
            "sid": session.id,
            "exp": session.idle_expires_at.min(session.absolute_expires_at),
            "iat": session.created_at,
            "client_id": client.client_id,
        }))
        .into_response());
    }
    let Ok(claims) = state.tokens.verify(&form.token, now) else {
        return Ok(inactive("inactive").into_response());
    };
    if !allowed_tenant(&claims.tid) {
        return Ok(inactive("other_tenant").into_response());
    }
    let live = match (
        gatehouse_session::SessionId::parse(&claims.sid),
        uuid::Uuid::try_parse(&claims.tenant_id),
    ) {
        (Some(id), Ok(tenant_id)) => state
            .auth
            .sessions
            .validate_id(tenant_id, id)
            .await?
            .is_some(),
        _ => false,
    };
    if !live {
        return Ok(inactive("revoked").into_response());
    }
    metrics::counter!("gatehouse_introspection_total", "result" => "active").increment(1);
    Ok(Json(json!({
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
    }))
    .into_response())
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
            let tenant = directory::tenant_by_slug(&state.db, &slug)
                .await?
                .ok_or_else(|| invalid(format!("tenant: no tenant {raw:?}")))?;
            Some(tenant.id)
        }
    };
    let mut raw_secret = [0u8; 32];
    rand::rng().fill_bytes(&mut raw_secret);
    let secret = format!("ghc1_{}", URL_SAFE_NO_PAD.encode(raw_secret));
    let hash = state
        .auth
        .login
        .passwords()
        .hash(secret.clone())
        .await
        .map_err(|_| ApiError::unavailable("hashing is busy; retry shortly", 1))?;
    clients::create(
        &state.db,
        &body.client_id,
        tenant_id,
        &hash,
        &body.description,
    )
    .await
    .map_err(|e| match e.kind() {
        gatehouse_core::ErrorKind::Conflict => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("client {:?} already exists", body.client_id),
        ),
        _ => e.into(),
    })?;
    let target = match &body.tenant {
        Some(t) => format!("{} (tenant {t})", body.client_id),
        None => body.client_id.clone(),
    };
    audit_admin(
        &state,
        &me,
        &platform,
        "service_client.create",
        Some(target),
        &client,
        &headers,
    )
    .await;
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
        json!({ "service_clients": clients::list(&state.db).await? }),
    ))
}

/// `DELETE /admin/api/v1/service-clients/{client_id}`
pub async fn clients_delete(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    client: ClientInfo,
    me: CurrentSession,
) -> Result<StatusCode, ApiError> {
    admin_tenant(
        &state,
        &me,
        &client,
        SYSTEM_TENANT,
        "service-clients",
        Access::Write,
        "service_client.delete",
    )
    .await?;
    if !clients::delete(&state.db, &client_id).await? {
        return Err(ApiError::not_found(format!("no client {client_id:?}")));
    }
    if let Ok(mut map) = state.clients.0.lock() {
        map.remove(&client_id);
    }
    Ok(StatusCode::NO_CONTENT)
}
