//! What each part of the request path costs, in process: the floor handler
//! (`"ok"`) driven with `oneshot`, bare and then behind the real stack, and
//! behind the stack with one part switched off at a time. The difference to
//! the full stack is that part's price per request. Logging goes through the
//! real JSON subscriber and non-blocking queue into `io::sink()`.
//!
//! `cargo bench -p gatehouse-gateway --bench edge`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_gateway::middleware::{self, Edge, EdgeParts, SizeLimits};
use tower::ServiceExt as _;

const LIMITS: SizeLimits = SizeLimits {
    max_header_bytes: 16 * 1024,
    max_body_bytes: 64 * 1024,
};

fn bare() -> Router {
    Router::new().route("/_bench/floor", get(|| async { "ok" }))
}

/// The gateway's stack (as `app.rs` builds it) with the given parts.
fn stack(parts: EdgeParts) -> Router {
    bare()
        .layer(DefaultBodyLimit::max(LIMITS.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Edge::with_parts(
                LIMITS,
                Duration::from_secs(30),
                false,
                parts,
            )),
            middleware::edge,
        ))
}

fn request() -> Request<Body> {
    Request::builder()
        .uri("/_bench/floor")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(Body::empty())
        .unwrap()
}

fn edge(c: &mut Criterion) {
    // The real logger (JSON, info, bounded queue), into a sink; the recorder
    // the gateway installs.
    let _log = gatehouse_telemetry::init_logging_into("info", std::io::sink()).unwrap();
    let _metrics = gatehouse_telemetry::init_metrics().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let all = EdgeParts::ALL;
    let variants: Vec<(&str, Router)> = vec![
        ("bare_handler", bare()),
        ("full_stack", stack(all)),
        (
            "without_access_log",
            stack(EdgeParts {
                access_log: false,
                ..all
            }),
        ),
        ("without_span", stack(EdgeParts { span: false, ..all })),
        (
            "without_metrics",
            stack(EdgeParts {
                metrics: false,
                ..all
            }),
        ),
        (
            "without_security_headers",
            stack(EdgeParts {
                security_headers: false,
                ..all
            }),
        ),
        (
            "without_catch_panic",
            stack(EdgeParts {
                catch_panic: false,
                ..all
            }),
        ),
        (
            "without_timeout",
            stack(EdgeParts {
                timeout: false,
                ..all
            }),
        ),
        (
            "edge_only_id_size_problem",
            stack(EdgeParts {
                span: false,
                metrics: false,
                access_log: false,
                security_headers: false,
                catch_panic: false,
                timeout: false,
                problems: true,
            }),
        ),
    ];

    let mut group = c.benchmark_group("edge");
    for (name, router) in variants {
        group.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| router.clone().oneshot(request()));
        });
    }
    group.finish();
}

criterion_group!(benches, edge);
criterion_main!(benches);
