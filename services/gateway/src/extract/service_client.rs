//! Service clients: other services calling with HTTP Basic
//! (`client_id:client_secret`), checked by `gatehouse_app::clients` (SHA-256
//! secrets, throttled per client id and address). Introspection and routing
//! resolution use it.

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_app::clients::ClientAuthError;
use gatehouse_app::clients::ServiceClient;

use crate::error::ApiError;
use crate::state::AppState;

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

/// Authenticates the calling service client: 401 for missing or bad
/// credentials, 429 (with the seconds to wait) when the client id or address
/// has spent its allowance of unverified attempts. Failures are counted in
/// the endpoint's own `metric` (`result` = `bad_client`, `throttled`, `error`).
pub async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    address: &str,
    metric: &'static str,
) -> Result<ServiceClient, ApiError> {
    let (client_id, secret) = basic(headers)
        .ok_or_else(|| unauthorized("client authentication required (HTTP Basic)"))?;
    state
        .clients
        .authenticate(&client_id, &secret, address)
        .await
        .map_err(|e| {
            let result = match &e {
                ClientAuthError::Throttled(_) => "throttled",
                ClientAuthError::Invalid => "bad_client",
                _ => "error",
            };
            metrics::counter!(metric, "result" => result).increment(1);
            match e {
                ClientAuthError::Invalid => unauthorized("invalid client credentials"),
                other => other.into(),
            }
        })
}
