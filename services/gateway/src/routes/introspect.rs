//! `POST /oauth2/introspect` (RFC 7662) for service clients, and the admin
//! API that creates them (`/admin/api/v1/service-clients`).
//!
//! Clients authenticate with HTTP Basic (`client_id:client_secret`). Secrets
//! are generated 256-bit values stored as SHA-256, so checking one costs a
//! hash, not argon2: random credentials cannot queue the tenants' logins
//! behind the password pool. Clients created before that keep an argon2id
//! hash until their first successful check upgrades it. A successful check is
//! remembered in process for [`CLIENT_CACHE_TTL`] (deleting or disabling a
//! client takes effect within that time); every other attempt is throttled
//! per client id and per client address ([`CLIENT_AUTH_PER_ID`],
//! [`CLIENT_AUTH_PER_ADDRESS`] a minute) before any database read.
//!
//! The token is admitted by [`crate::admission`], like every credential:
//! anything that is not a live Gatehouse access token or session token —
//! revoked, of a disabled user or tenant, killed — answers `{"active": false}`.

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
use gatehouse_store::clients::{self, ServiceClient};
use gatehouse_store::directory;
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::admin::{Access, SYSTEM_TENANT, admin_tenant, audit_admin};
use crate::admission::{Expect, Need, Presented, Refusal};
use crate::auth::client::ClientInfo;
use crate::auth::extract::CurrentSession;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified client secret is trusted without argon2.
pub const CLIENT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Unverified client authentications allowed per client id and minute.
pub const CLIENT_AUTH_PER_ID: u32 = 10;
/// Unverified client authentications allowed per client address (IPv6: /64)
/// and minute.
pub const CLIENT_AUTH_PER_ADDRESS: u32 = 30;

/// A client whose secret (by SHA-256) was verified at the instant.
type VerifiedClient = (ServiceClient, [u8; 32], Instant);

type KeyedLimiter = governor::DefaultKeyedRateLimiter<String>;

/// Verified client credentials by client id, and the throttles on the rest.
pub struct ClientCache {
    verified: Mutex<HashMap<String, VerifiedClient>>,
    per_id: KeyedLimiter,
    per_address: KeyedLimiter,
}

impl Default for ClientCache {
    fn default() -> Self {
        let per_minute = |n: u32| {
            let n = std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
            governor::RateLimiter::keyed(governor::Quota::per_minute(n))
        };
        Self {
            verified: Mutex::new(HashMap::new()),
            per_id: per_minute(CLIENT_AUTH_PER_ID),
            per_address: per_minute(CLIENT_AUTH_PER_ADDRESS),
        }
    }
}

/// Keys kept by each throttle before idle ones are dropped.
const THROTTLE_KEYS_BOUND: usize = 10_000;

impl ClientCache {
    /// Takes one attempt from the client id's and the address's allowance;
    /// `Err(seconds)` to wait when either is spent. Memory stays bounded:
    /// past [`THROTTLE_KEYS_BOUND`] keys, those back at full allowance go.
    fn attempt(&self, client_id: &str, address: &str) -> Result<(), u64> {
        for limiter in [&self.per_id, &self.per_address] {
            if limiter.len() > THROTTLE_KEYS_BOUND {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        let clock = governor::clock::DefaultClock::default();
        let wait = |limiter: &KeyedLimiter, key: &str| {
            limiter.check_key(&key.to_owned()).err().map(|not_until| {
                use governor::clock::Clock as _;
                not_until.wait_time_from(clock.now()).as_secs().max(1)
            })
        };
        match wait(&self.per_id, client_id).or_else(|| wait(&self.per_address, address)) {
            Some(seconds) => Err(seconds),
            None => Ok(()),
        }
    }

    fn forget(&self, client_id: &str) {
        if let Ok(mut map) = self.verified.lock() {
            map.remove(client_id);
        }
    }
}

/// `sha256:<hex>`: how a generated client secret is stored.
fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn stored_form(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// Whether `stored` (`sha256:<hex>`) is the hash of the presented secret;
/// compares in constant time.
fn sha256_matches(stored: &str, digest: &[u8; 32]) -> bool {
    let Some(Ok(expected)) = stored.strip_prefix("sha256:").map(hex::decode) else {
        return false;
    };
    expected.len() == digest.len()
        && expected
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

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

/// Authenticates the calling service client: 401 for bad credentials, 429
/// (with the seconds to wait) when the client id or address has spent its
/// allowance of unverified attempts.
async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    address: &str,
) -> Result<ServiceClient, ApiError> {
    let (client_id, secret) = basic(headers)
        .ok_or_else(|| unauthorized("client authentication required (HTTP Basic)"))?;
    if client_id.len() > 64 || secret.len() > 128 {
        return Err(unauthorized("invalid client credentials"));
    }
    let digest = secret_digest(&secret);
    let cached = state
        .clients
        .verified
        .lock()
        .ok()
        .and_then(|map| map.get(&client_id).cloned());
    if let Some((client, known, at)) = cached
        && known == digest
        && at.elapsed() < CLIENT_CACHE_TTL
    {
        return Ok(client);
    }
    if let Err(seconds) = state.clients.attempt(&client_id, address) {
        metrics::counter!("gatehouse_introspection_total", "result" => "throttled").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!("too many client authentication attempts; retry after {seconds} s"),
        )
        .with_retry_after(seconds));
    }
    let row = clients::by_client_id(&state.db, &client_id)
        .await?
        .filter(|c| c.status == "active" && c.scopes.iter().any(|s| s == "introspect"));
    let verified = match row {
        Some(client) if sha256_matches(&client.secret_hash, &digest) => Some(client),
        Some(client) if client.secret_hash.starts_with("$argon2") => {
            legacy_check(state, client, secret, &digest).await?
        }
        _ => None,
    };
    let Some(client) = verified else {
        metrics::counter!("gatehouse_introspection_total", "result" => "bad_client").increment(1);
        return Err(unauthorized("invalid client credentials"));
    };
    if let Ok(mut map) = state.clients.verified.lock() {
        map.insert(client_id, (client.clone(), digest, Instant::now()));
    }
    Ok(client)
}

/// A client created before secrets were stored as SHA-256: argon2 once
/// (already behind the throttle), then the stored hash is upgraded.
async fn legacy_check(
    state: &AppState,
    client: ServiceClient,
    secret: String,
    digest: &[u8; 32],
) -> Result<Option<ServiceClient>, ApiError> {
    let verdict = state
        .auth
        .login
        .passwords()
        .verify(secret, Some(client.secret_hash.clone()))
        .await
        .map_err(|_| ApiError::unavailable("client authentication is busy; retry shortly", 1))?;
    if !matches!(
        verdict,
        Verification::Match | Verification::MatchNeedsRehash(_)
    ) {
        return Ok(None);
    }
    let upgraded = stored_form(digest);
    clients::upgrade_secret_hash(&state.db, &client.client_id, &client.secret_hash, &upgraded)
        .await?;
    Ok(Some(ServiceClient {
        secret_hash: upgraded,
        ..client
    }))
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
    caller: ClientInfo,
    headers: HeaderMap,
    Form(form): Form<IntrospectForm>,
) -> Result<Response, ApiError> {
    let address = gatehouse_ratelimit::ip_bucket(caller.addr);
    let client = match authenticate_client(&state, &headers, &address).await {
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
            let tenant = directory::tenant_by_slug(&state.db, &slug)
                .await?
                .ok_or_else(|| invalid(format!("tenant: no tenant {raw:?}")))?;
            Some(tenant.id)
        }
    };
    let mut raw_secret = [0u8; 32];
    rand::rng().fill_bytes(&mut raw_secret);
    let secret = format!("ghc1_{}", URL_SAFE_NO_PAD.encode(raw_secret));
    let hash = stored_form(&secret_digest(&secret));
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
    state.clients.forget(&client_id);
    Ok(StatusCode::NO_CONTENT)
}
