//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// `GET /healthz`: 200 whenever the process can answer at all.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /_bench/floor` (only with `bench_endpoints`): no work at all, so a
/// load run against it measures the framework and the shared layers; other
/// scenarios are read as a fraction of it.
pub async fn bench_floor() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 only when Postgres and Redis (both roles) answer;
/// otherwise 503 naming each failing dependency. Checks run concurrently and
/// each is bounded by its pool's deadline.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let cache = async {
        match &state.redis_cache {
            Some(pool) => Some(pool.ping().await),
            None => None,
        }
    };
    let (postgres, redis, redis_cache) =
        tokio::join!(gatehouse_store::ping(&state.db), state.redis.ping(), cache);
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    let mut record =
        |name: &'static str, result: Result<(), String>| {
            metrics::gauge!("gatehouse_dependency_up", "dependency" => name)
                .set(if result.is_ok() { 1.0 } else { 0.0 });
            match result {
                Ok(()) => {
                    checks.insert(name.to_owned(), json!("ok"));
                }
                Err(e) => {
                    tracing::warn!(dependency = name, error = %e, "readiness check failed");
                    checks.insert(name.to_owned(), json!("unavailable"));
                    failing.push(name);
                }
            }
        };
    record("postgres", postgres.map_err(|e| e.to_string()));
    record("redis", redis.map_err(|e| e.to_string()));
    if let Some(result) = redis_cache {
        record("redis_cache", result.map_err(|e| e.to_string()));
    }
    if failing.is_empty() {
        return Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    ApiError::unavailable(format!("not ready: {} unavailable", failing.join(", ")), 1)
        .with_extensions(json!({ "failing": failing, "checks": checks }))
        .into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!("gatehouse_db_pool_connections").set(f64::from(state.db.size()));
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Fallback for paths no route matches.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}
