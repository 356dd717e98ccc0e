//! Cross-cutting request handling: metrics, size guards, and making sure every
//! error leaves as problem+json, whoever produced it.

use std::any::Any;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, PROBLEM_JSON};

/// Counts requests and records latency per route template (never the raw
/// path, which would explode label cardinality).
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route: metrics::SharedString = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(metrics::SharedString::const_str("unmatched"), |p| {
            p.as_str().to_owned().into()
        });
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("gatehouse_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("gatehouse_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A static label for the method (no allocation per request); unusual
/// methods share one label so clients cannot grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Request size bounds enforced before any handler runs.
#[derive(Debug, Clone, Copy)]
pub struct SizeLimits {
    /// Largest total of header names, values and the URI.
    pub max_header_bytes: usize,
    /// Largest declared `Content-Length`; streamed bodies are cut at the same
    /// size by the extractors' `DefaultBodyLimit`.
    pub max_body_bytes: usize,
}

/// Refuses oversized headers with 431 and a declared oversized body with 413,
/// before the body is read.
pub async fn limit_sizes(limits: SizeLimits, request: Request, next: Next) -> Response {
    let total: usize = request.uri().path().len()
        + request.uri().query().map_or(0, str::len)
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if total > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "request headers and URI total {total} bytes; the limit is {}",
                limits.max_header_bytes
            ),
        )
        .into_response();
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > limits.max_body_bytes as u64
    {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!(
                "request body of {length} bytes exceeds the limit of {} bytes",
                limits.max_body_bytes
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Rewrites any error response that is not already problem+json (404 from the
/// router, 405, 413 from the body limit, extractor rejections, timeouts) into
/// problem+json, keeping the status and headers such as `Allow`. For 4xx the
/// framework's own message (which names the bad field) becomes the `detail`.
/// HTML error pages from browser routes pass through untouched.
pub async fn errors_as_problems(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with(PROBLEM_JSON) || content_type.starts_with("text/html") {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = if status.is_client_error() {
        let bytes = to_bytes(body, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        if text.is_empty() {
            default_detail(status).to_owned()
        } else {
            text
        }
    } else {
        default_detail(status).to_owned()
    };
    let problem = ApiError::new(status, slug_for(status), detail).into_response();
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, problem_body)
}

fn slug_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

fn default_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no such resource",
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed here; see the Allow header",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than the configured limit",
        StatusCode::SERVICE_UNAVAILABLE => {
            "the request could not be completed in time; retry later"
        }
        s if s.is_server_error() => {
            "an internal error occurred; quote the X-Request-Id header when reporting it"
        }
        _ => "the request was refused",
    }
}

/// Turns a handler panic into a 500 problem (the panic message is logged, not sent).
#[allow(
    clippy::needless_pass_by_value,
    reason = "signature required by CatchPanicLayer"
)]
pub fn panic_to_problem(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    ApiError::internal(&format_args!("handler panicked: {message}")).into_response()
}
