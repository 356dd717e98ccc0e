//! Discovery for services that verify Gatehouse tokens themselves:
//! `/.well-known/jwks.json` and `/.well-known/openid-configuration`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// Verifiers may cache the key set this long. A key is published as `next`
/// at least one rotation period before it signs, and a key that stopped
/// signing stays published for the longest token life after, so a cache of
/// this age never misses a key in normal operation; a verifier that meets an
/// unknown `kid` refetches anyway.
const JWKS_MAX_AGE_S: u32 = 300;

/// `GET /.well-known/jwks.json`: the `next`, `current` and `previous` public keys.
pub async fn jwks(State(state): State<AppState>) -> Response {
    let ring = state.tokens.ring();
    (
        [
            (
                header::CACHE_CONTROL,
                format!("public, max-age={JWKS_MAX_AGE_S}"),
            ),
            (header::CONTENT_TYPE, "application/jwk-set+json".to_owned()),
        ],
        ring.jwks.to_string(),
    )
        .into_response()
}

/// `GET /.well-known/openid-configuration`: issuer, key set, introspection
/// endpoint and the signing algorithms in use.
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    let issuer = &state.tokens.settings().issuer;
    let ring = state.tokens.ring();
    let mut algs: Vec<&str> = ring.jwks["keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k["alg"].as_str()).collect())
        .unwrap_or_default();
    algs.sort_unstable();
    algs.dedup();
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "token_endpoint": format!("{issuer}/v1/auth/login"),
        "id_token_signing_alg_values_supported": algs,
        "access_token_signing_alg_values_supported": algs,
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tid", "tenant_id", "sid", "roles", "name"],
    });
    (
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={JWKS_MAX_AGE_S}"),
        )],
        axum::Json(body),
    )
        .into_response()
}
