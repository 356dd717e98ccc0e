//! `gatehouse-verify`, the tower layer for other Rust services, against a
//! real gateway: JWKS fetched from it, tokens issued by it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use gatehouse_testkit::run_gatehouse;
use gatehouse_verify::{
    AccessClaims, GatehouseAuthLayer, Introspection, JwksVerifier, VerifyConfig,
};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::{DEMO_PASSWORD, json_login, seeded_app};

async fn whoami(Extension(claims): Extension<AccessClaims>) -> String {
    format!("{}@{}", claims.name, claims.tid)
}

async fn call(app: &Router, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::builder().uri("/whoami");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn access_token(gateway: &gatehouse_testkit::Gateway) -> String {
    let body: Value = json_login(gateway, "acme", "bob", DEMO_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// The issuer the gateway publishes in its discovery document.
async fn issuer_of(gateway: &gatehouse_testkit::Gateway) -> String {
    let discovery: Value = crate::client()
        .get(gateway.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    discovery["issuer"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_service_behind_the_layer_accepts_gateway_tokens_and_follows_key_rotation() {
    let (gateway, _db, vars) = seeded_app(&[("GATEHOUSE_TOKENS__KEY_REFRESH_S", "1")]).await;
    let mut config = VerifyConfig::new(&issuer_of(&gateway).await, "gatehouse");
    config.jwks_url = gateway.url("/.well-known/jwks.json");
    config.refetch_min_interval = Duration::ZERO;
    config.tenant = Some("acme".into());
    let verifier = Arc::new(JwksVerifier::connect(config).await.unwrap());
    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(GatehouseAuthLayer::new(verifier));

    let token = access_token(&gateway).await;
    assert_eq!(
        call(&app, Some(&token)).await,
        (StatusCode::OK, "bob@acme".to_owned()),
        "claims reach the handler"
    );
    let (status, body) = call(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("urn:gatehouse:problem:unauthenticated"));
    assert_eq!(
        call(&app, Some(&format!("{token}x"))).await.0,
        StatusCode::UNAUTHORIZED,
        "tampered"
    );
    assert_eq!(
        call(&app, Some("not-a-jwt")).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Two rotations: the key that signs now was generated after the layer
    // fetched the JWKS, so the layer must refetch on the unknown kid.
    let fresh = token_after_two_rotations(&gateway, &vars, &token).await;
    assert_eq!(
        call(&app, Some(&fresh)).await,
        (StatusCode::OK, "bob@acme".to_owned()),
        "refetched the JWKS on the unknown kid"
    );
}

/// Rotates the signing key twice and returns a token signed with the key that
/// is current afterwards (generated after anything fetched before the call).
async fn token_after_two_rotations(
    gateway: &gatehouse_testkit::Gateway,
    vars: &[(String, String)],
    before: &str,
) -> String {
    for _ in 0..2 {
        let rotated = run_gatehouse(&["keys", "rotate"], vars).await;
        assert!(
            rotated.status.success(),
            "{}",
            String::from_utf8_lossy(&rotated.stderr)
        );
    }
    let mut fresh = before.to_owned();
    for _ in 0..100 {
        fresh = access_token(gateway).await;
        if fresh.split('.').next() != before.split('.').next() {
            break; // a different header: the new kid is in use
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        fresh.split('.').next(),
        before.split('.').next(),
        "the gateway signs with a new key"
    );
    fresh
}

#[tokio::test]
async fn keys_older_than_jwks_max_age_are_refetched_even_without_an_unknown_kid_refetch() {
    let (gateway, _db, vars) = seeded_app(&[("GATEHOUSE_TOKENS__KEY_REFRESH_S", "1")]).await;
    let issuer = issuer_of(&gateway).await;
    let layer = |max_age: Duration| {
        let mut config = VerifyConfig::new(&issuer, "gatehouse");
        config.jwks_url = gateway.url("/.well-known/jwks.json");
        // Unknown-kid refetches are rate-limited away: only the age can refetch.
        config.refetch_min_interval = Duration::from_secs(3600);
        config.jwks_max_age = max_age;
        config
    };
    let stale_ok = Arc::new(
        JwksVerifier::connect(layer(Duration::from_secs(3600)))
            .await
            .unwrap(),
    );
    let ageing = Arc::new(JwksVerifier::connect(layer(Duration::ZERO)).await.unwrap());
    let token = access_token(&gateway).await;
    let fresh = token_after_two_rotations(&gateway, &vars, &token).await;
    let app = |v: &Arc<JwksVerifier>| {
        Router::new()
            .route("/whoami", get(whoami))
            .layer(GatehouseAuthLayer::new(v.clone()))
    };
    assert_eq!(
        call(&app(&stale_ok), Some(&fresh)).await.0,
        StatusCode::UNAUTHORIZED,
        "control: no refetch allowed, the new key is unknown"
    );
    assert_eq!(
        call(&app(&ageing), Some(&fresh)).await,
        (StatusCode::OK, "bob@acme".to_owned()),
        "keys past jwks_max_age are refetched"
    );
}

#[tokio::test]
async fn with_introspection_the_layer_refuses_revoked_tokens_and_fails_closed() {
    let (gateway, _db, _) = seeded_app(&[]).await;
    let secret = crate::service_client(&gateway, "orders-svc", None).await;
    let issuer = issuer_of(&gateway).await;
    let layer_with = |introspection: Option<Introspection>| {
        let mut config = VerifyConfig::new(&issuer, "gatehouse");
        config.jwks_url = gateway.url("/.well-known/jwks.json");
        config.introspection = introspection.map(|mut i| {
            i.url = gateway.url("/oauth2/introspect");
            i
        });
        config
    };
    let mut checked = Introspection::new(&issuer, "orders-svc", &secret);
    checked.cache_for = Duration::ZERO;
    let plain = Router::new()
        .route("/whoami", get(whoami))
        .layer(GatehouseAuthLayer::new(Arc::new(
            JwksVerifier::connect(layer_with(None)).await.unwrap(),
        )));
    let strict = Router::new()
        .route("/whoami", get(whoami))
        .layer(GatehouseAuthLayer::new(Arc::new(
            JwksVerifier::connect(layer_with(Some(checked)))
                .await
                .unwrap(),
        )));
    let wrong = Router::new()
        .route("/whoami", get(whoami))
        .layer(GatehouseAuthLayer::new(Arc::new(
            JwksVerifier::connect(layer_with(Some(Introspection::new(
                &issuer,
                "orders-svc",
                "not-the-secret",
            ))))
            .await
            .unwrap(),
        )));

    let token = access_token(&gateway).await;
    assert_eq!(call(&strict, Some(&token)).await.0, StatusCode::OK);
    assert_eq!(
        call(&wrong, Some(&token)).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "revocation that cannot be checked fails closed"
    );

    let logout = crate::client()
        .post(gateway.url("/v1/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(logout.status().is_success(), "logout: {}", logout.status());
    let (status, body) = call(&strict, Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked: {body}");
    assert_eq!(
        call(&plain, Some(&token)).await.0,
        StatusCode::OK,
        "without introspection a revoked token is valid until it expires (documented)"
    );
}
