//! The whole application driven in process with `oneshot` (no socket), on a
//! real Postgres and Redis, with a manual clock: what used to need real
//! sleeps (session timeouts) is decided by moving the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation is a test failure with its location"
)]

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use gatehouse_core::ManualClock;
use gatehouse_gateway::{Application, Config};
use gatehouse_testkit::{TestDatabase, TestRedis, gateway_env, run_gatehouse};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PASSWORD: &str = "demo-password-in-process";

/// A seeded tenant and the application over it, on a clock the test moves.
async fn app_with(extra: &[(&str, &str)]) -> (Router, ManualClock, TestDatabase) {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let mut vars = gateway_env(&db, &redis.url, &redis.prefix);
    for (k, v) in [
        ("GATEHOUSE_METRICS_LISTEN", "127.0.0.1:0"),
        ("GATEHOUSE_ARGON2__MEMORY_KIB", "1024"),
        ("GATEHOUSE_ARGON2__ITERATIONS", "1"),
        ("GATEHOUSE_ADMIN_PASSWORD", PASSWORD),
        ("GATEHOUSE_DEMO_PASSWORD", PASSWORD),
    ]
    .iter()
    .chain(extra)
    {
        vars.retain(|(key, _)| key != k);
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    let seeded = run_gatehouse(&["bootstrap", "--demo"], &vars).await;
    assert!(seeded.status.success(), "bootstrap");
    let config = Config::load(&vars).expect("test config");
    let clock = ManualClock::at(time::OffsetDateTime::now_utc());
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let app = Application::build_with_clock(&config, metrics, Arc::new(clock.clone()))
        .await
        .expect("build the application");
    (app.router(), clock, db)
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn login(app: &Router, user: &str) -> Value {
    let request = Request::post("/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"tenant": "acme", "username": user, "password": PASSWORD}).to_string(),
        ))
        .unwrap();
    let (status, body) = call(app, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn me(app: &Router, token: &str) -> StatusCode {
    let request = Request::get("/v1/auth/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    call(app, request).await.0
}

fn seconds(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

#[tokio::test]
async fn an_idle_session_ends_at_its_idle_timeout_and_not_before() {
    let (app, clock, _db) = app_with(&[
        ("GATEHOUSE_SESSION__IDLE_TIMEOUT_S", "600"),
        ("GATEHOUSE_SESSION__TOUCH_INTERVAL_S", "0"),
    ])
    .await;
    let token = login(&app, "bob").await["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(seconds(599));
    assert_eq!(me(&app, &token).await, StatusCode::OK, "alive just inside");
    clock.advance(seconds(599));
    assert_eq!(
        me(&app, &token).await,
        StatusCode::OK,
        "use slid the deadline"
    );
    clock.advance(seconds(601));
    assert_eq!(me(&app, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_busy_session_ends_at_its_absolute_timeout() {
    let (app, clock, _db) = app_with(&[
        ("GATEHOUSE_SESSION__IDLE_TIMEOUT_S", "600"),
        ("GATEHOUSE_SESSION__ABSOLUTE_TIMEOUT_S", "1800"),
        ("GATEHOUSE_SESSION__TOUCH_INTERVAL_S", "0"),
    ])
    .await;
    let token = login(&app, "bob").await["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        clock.advance(seconds(500));
        assert_eq!(me(&app, &token).await, StatusCode::OK, "used within idle");
    }
    clock.advance(seconds(301));
    assert_eq!(
        me(&app, &token).await,
        StatusCode::UNAUTHORIZED,
        "used, but past the absolute timeout"
    );
}

/// An access token outlives nothing: past its `exp` (plus leeway) it is
/// refused, decided by the same clock.
#[tokio::test]
async fn an_access_token_is_refused_after_it_expires() {
    let (app, clock, _db) = app_with(&[("GATEHOUSE_TOKENS__ACCESS_TTL_S", "60")]).await;
    let jwt = login(&app, "bob").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(me(&app, &jwt).await, StatusCode::OK);
    clock.advance(seconds(60 + 30 + 1));
    assert_eq!(me(&app, &jwt).await, StatusCode::UNAUTHORIZED);
}
