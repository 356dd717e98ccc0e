//! `demo-upstream`: a tiny versioned HTTP service used by the quickstart, the
//! tests and the benchmarks to prove which version a request was routed to.
//!
//! It answers every method and path with JSON naming its version, the method
//! and path (with query) it saw, and every `X-Gatehouse-*` header it received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use clap::Parser;
use serde_json::{Value, json};

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
}

async fn echo(
    State(version): State<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Json<Value> {
    let identity: BTreeMap<String, String> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-gatehouse-"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    Json(json!({
        "version": version,
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": identity,
    }))
}

fn app(version: String) -> Router {
    Router::new().fallback(echo).with_state(version)
}

#[allow(clippy::print_stdout, reason = "prints the bound address for scripts")]
async fn run(args: Args) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "demo-upstream {} listening on {}",
        args.name,
        listener.local_addr()?
    );
    axum::serve(listener, app(args.name))
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
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn echoes_version_method_path_and_only_identity_headers() {
        let response = app("v2".into())
            .oneshot(
                Request::post("/orders/7?x=1")
                    .header("x-gatehouse-user", "alice")
                    .header("authorization", "Bearer secret")
                    .body(Body::empty())
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
    }
}
