//! `demo-upstream`: a tiny versioned HTTP service used by the quickstart, the
//! tests and the benchmarks to prove which version a request was routed to.
//!
//! It answers every method and path with JSON naming its version, the method
//! and path (with query) it saw, every `X-Gatehouse-*` and `X-Forwarded-*`
//! header and the `Cookie` it received, and how many body bytes it read (streamed and counted, never buffered, so a
//! large upload through the proxy costs this process nothing either).
//!
//! Faults for tests and the canary demo: `--error-percent N` answers 500 to
//! exactly N of every 100 requests (deterministic, so a test can count),
//! `--fail-path P` answers 500 to every request whose path starts with `P`
//! (an endpoint with a bug, which only the callers who reach it trip), and
//! `--latency-ms N` delays every answer. A request asking to upgrade (any
//! `Upgrade` protocol) is switched and its bytes echoed back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use futures_util::StreamExt as _;
use hyper_util::rt::TokioIo;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "demo-upstream",
    version,
    about = "Echo service naming its version (for Gatehouse demos and tests)"
)]
struct Args {
    /// Version this instance reports (e.g. v1).
    #[arg(long)]
    name: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9101")]
    listen: SocketAddr,
    /// Answer 500 to this many of every 100 requests (0-100).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    error_percent: u8,
    /// Answer 500 to every request whose path starts with this prefix.
    #[arg(long)]
    fail_path: Option<String>,
    /// Delay every answer by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

/// The faults an instance injects (see the module doc).
#[derive(Debug, Clone, Default)]
struct Faults {
    /// 500 to this many of every 100 requests.
    error_percent: u8,
    /// 500 to every request under this path prefix.
    fail_path: Option<String>,
    /// Added to every answer.
    latency: Duration,
}

/// What every request sees.
struct Upstream {
    version: String,
    faults: Faults,
    served: AtomicU64,
}

async fn echo(State(upstream): State<Arc<Upstream>>, mut request: Request) -> Response {
    if let Some(protocol) = request.headers().get(header::UPGRADE).cloned() {
        return upgrade_echo(&mut request, protocol);
    }
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let n = upstream.served.fetch_add(1, Ordering::Relaxed);
    let mut body_bytes: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => body_bytes += bytes.len() as u64,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("body: {e}")).into_response();
            }
        }
    }
    let faults = &upstream.faults;
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let with_prefix = |prefix: &str| -> BTreeMap<String, String> {
        headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with(prefix))
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect()
    };
    let failing = n % 100 < u64::from(faults.error_percent)
        || faults
            .fail_path
            .as_deref()
            .is_some_and(|prefix| uri.path().starts_with(prefix));
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({
            "version": upstream.version,
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "headers": with_prefix("x-gatehouse-"),
            "forwarded": with_prefix("x-forwarded-"),
            "cookie": headers.get(header::COOKIE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            "body_bytes": body_bytes,
            "injected_error": failing,
        })),
    )
        .into_response()
}

/// Any request asking to upgrade gets `101` and then every byte it sends
/// echoed back: the proxy's upgrade pass-through is tested with it (the same
/// path a WebSocket takes, without a WebSocket library).
fn upgrade_echo(request: &mut Request, protocol: HeaderValue) -> Response {
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, protocol),
        ],
    )
        .into_response()
}

fn app(version: String, mut faults: Faults) -> Router {
    faults.error_percent = faults.error_percent.min(100);
    let upstream = Upstream {
        version,
        faults,
        served: AtomicU64::new(0),
    };
    Router::new().fallback(echo).with_state(Arc::new(upstream))
}

#[allow(clippy::print_stdout, reason = "prints the bound address for scripts")]
async fn run(args: Args) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "demo-upstream {} listening on {}",
        args.name,
        listener.local_addr()?
    );
    let faults = Faults {
        error_percent: args.error_percent,
        fail_path: args.fail_path,
        latency: Duration::from_millis(args.latency_ms),
    };
    axum::serve(listener, app(args.name, faults))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo-upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn echoes_version_method_path_and_only_identity_headers() {
        let response = app("v2".into(), Faults::default())
            .oneshot(
                Request::post("/orders/7?x=1")
                    .header("x-gatehouse-user", "alice")
                    .header("authorization", "Bearer secret")
                    .body(Body::from("twelve bytes"))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body: Value =
            serde_json::from_slice(&to_bytes(response.into_body(), 1 << 16).await.unwrap())
                .unwrap();
        assert_eq!(body["version"], "v2");
        assert_eq!(body["method"], "POST");
        assert_eq!(body["path"], "/orders/7");
        assert_eq!(body["query"], "x=1");
        assert_eq!(body["headers"]["x-gatehouse-user"], "alice");
        assert!(body["headers"].get("authorization").is_none());
        assert_eq!(body["body_bytes"], 12);
    }

    /// Exactly N of every 100 answers are injected errors, so a test can
    /// count what a canary should see.
    #[tokio::test]
    async fn injects_exactly_the_asked_share_of_errors() {
        let app = app(
            "v2".into(),
            Faults {
                error_percent: 20,
                ..Faults::default()
            },
        );
        let mut errors = 0;
        for _ in 0..200 {
            let response = app
                .clone()
                .oneshot(Request::get("/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
                errors += 1;
            }
        }
        assert_eq!(errors, 40);
    }

    /// Only the broken endpoint fails.
    #[tokio::test]
    async fn fails_every_request_under_the_broken_path_and_nothing_else() {
        let app = app(
            "v2".into(),
            Faults {
                fail_path: Some("/broken".into()),
                ..Faults::default()
            },
        );
        for (path, expected) in [
            ("/broken", StatusCode::INTERNAL_SERVER_ERROR),
            ("/broken/7", StatusCode::INTERNAL_SERVER_ERROR),
            ("/items", StatusCode::OK),
            ("/", StatusCode::OK),
        ] {
            let response = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), expected, "{path}");
        }
    }
}
