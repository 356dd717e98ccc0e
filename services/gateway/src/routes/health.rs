//! Liveness, readiness and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::state::{AppState, Readiness};

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

/// How long a readiness answer is served before the stores are asked again.
const READINESS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /readyz`: 200 only when Postgres and Redis (both roles) answer;
/// otherwise 503 naming each failing dependency. Checks run concurrently,
/// each bounded by its pool's deadline, at most once a second: a flood of
/// probes costs the stores nothing more.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = {
        let mut memo = state.readiness.0.lock().await;
        match memo.as_ref() {
            Some((at, readiness)) if at.elapsed() < READINESS_MAX_AGE => Arc::clone(readiness),
            _ => {
                let measured = Arc::new(measure(&state).await);
                *memo = Some((std::time::Instant::now(), Arc::clone(&measured)));
                measured
            }
        }
    };
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    for (name, result) in readiness.iter() {
        let ok = result.is_ok();
        checks.insert(
            (*name).to_owned(),
            json!(if ok { "ok" } else { "unavailable" }),
        );
        if !ok {
            failing.push(*name);
        }
    }
    if failing.is_empty() {
        return Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    ApiError::unavailable(format!("not ready: {} unavailable", failing.join(", ")), 1)
        .with_extensions(json!({ "failing": failing, "checks": checks }))
        .into_response()
}

/// Asks every store once, concurrently.
async fn measure(state: &AppState) -> Readiness {
    let cache = async {
        match &state.redis_cache {
            Some(pool) => Some(pool.ping().await),
            None => None,
        }
    };
    let (postgres, redis, redis_cache) = tokio::join!(
        gatehouse_app::ping_database(&state.db),
        state.redis.ping(),
        cache
    );
    let mut readiness: Readiness = vec![
        ("postgres", postgres.map_err(|e| e.to_string())),
        ("redis", redis.map_err(|e| e.to_string())),
    ];
    if let Some(result) = redis_cache {
        readiness.push(("redis_cache", result.map_err(|e| e.to_string())));
    }
    for (name, result) in &readiness {
        metrics::gauge!("gatehouse_dependency_up", "dependency" => *name).set(if result.is_ok() {
            1.0
        } else {
            0.0
        });
        if let Err(e) = result {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
        }
    }
    readiness
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
