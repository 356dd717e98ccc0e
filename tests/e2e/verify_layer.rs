//! `gatehouse-verify`, the tower layer for other Rust services, against a
//! real gateway: JWKS fetched from it, tokens issued by it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use gatehouse_testkit::run_gatehouse;
use gatehouse_verify::{AccessClaims, GatehouseAuthLayer, JwksVerifier, VerifyConfig};
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

#[tokio::test]
async fn a_service_behind_the_layer_accepts_gateway_tokens_and_follows_key_rotation() {
    let (gateway, _db, vars) = seeded_app(&[("GATEHOUSE_TOKENS__KEY_REFRESH_S", "1")]).await;
    let discovery: Value = crate::client()
        .get(gateway.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut config = VerifyConfig::new(discovery["issuer"].as_str().unwrap(), "gatehouse");
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
    for _ in 0..2 {
        let rotated = run_gatehouse(&["keys", "rotate"], &vars).await;
        assert!(
            rotated.status.success(),
            "{}",
            String::from_utf8_lossy(&rotated.stderr)
        );
    }
    let mut fresh = token.clone();
    for _ in 0..100 {
        fresh = access_token(&gateway).await;
        if fresh.split('.').next() != token.split('.').next() {
            break; // a different header: the new kid is in use
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        fresh.split('.').next(),
        token.split('.').next(),
        "the gateway signs with a new key"
    );
    assert_eq!(
        call(&app, Some(&fresh)).await,
        (StatusCode::OK, "bob@acme".to_owned()),
        "refetched the JWKS on the unknown kid"
    );
}
