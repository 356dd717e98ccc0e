//! The edge of every request, in one middleware ([`edge`]): request id,
//! size guards, the request's log context, problem+json for every error whoever
//! produced it, security headers, metrics and the access line. One pass
//! instead of a stack of eleven layers: each of these is cheap, but a layer
//! per concern cost two thirds of the framework's throughput before any work
//! was done (see BENCHMARKS.md, "the layer stack").

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};

use crate::error::{ApiError, PROBLEM_JSON};

/// Header carrying the request id, set when the client did not send one.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which parts of the edge run. Production runs all of them; the layer
/// benchmark (`benches/edge.rs`) switches one off at a time to price it.
#[derive(Debug, Clone, Copy)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent switches, one per part"
)]
pub struct EdgeParts {
    /// The request's log context (handlers' log lines carry its request id;
    /// a task-local, not a `tracing` span, see `gatehouse_telemetry::request_id`).
    pub span: bool,
    /// Request counters and latency histograms.
    pub metrics: bool,
    /// The access line.
    pub access_log: bool,
    /// Security headers on every answer.
    pub security_headers: bool,
    /// A handler panic becomes a 500 problem (else the connection drops).
    pub catch_panic: bool,
    /// The whole-request deadline (503 when it passes).
    pub timeout: bool,
    /// Error answers that are not problem+json become problem+json. Off for
    /// the reverse proxy, which never rewrites an upstream's answer.
    pub problems: bool,
}

impl EdgeParts {
    /// Everything on (what `serve` runs).
    pub const ALL: Self = Self {
        span: true,
        metrics: true,
        access_log: true,
        security_headers: true,
        catch_panic: true,
        timeout: true,
        problems: true,
    };

    /// The reverse proxy's edge (`/svc/...`): no whole-request deadline (an
    /// upload or a WebSocket lives as long as it needs; the proxy has its own
    /// connect and response deadlines), no security headers or problem
    /// rewriting on the upstream's answer.
    pub const PROXY: Self = Self {
        span: true,
        metrics: true,
        access_log: true,
        security_headers: false,
        catch_panic: true,
        timeout: false,
        problems: false,
    };
}

/// What the edge needs, built once.
pub struct Edge {
    /// Size bounds.
    pub limits: SizeLimits,
    /// Whole-request deadline.
    pub request_timeout: std::time::Duration,
    parts: EdgeParts,
    /// Response headers every answer carries unless the handler set them.
    security_headers: Vec<(HeaderName, HeaderValue)>,
    ids: RequestIds,
    meters: RouteMeters,
}

impl Edge {
    /// The edge for these limits and deadline; `hsts` adds
    /// Strict-Transport-Security.
    #[must_use]
    pub fn new(limits: SizeLimits, request_timeout: std::time::Duration, hsts: bool) -> Self {
        Self::with_parts(limits, request_timeout, hsts, EdgeParts::ALL)
    }

    /// [`Edge::new`] with some parts switched off (benchmarks).
    #[must_use]
    pub fn with_parts(
        limits: SizeLimits,
        request_timeout: std::time::Duration,
        hsts: bool,
        parts: EdgeParts,
    ) -> Self {
        let mut security_headers = vec![
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                ),
            ),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            // Identity answers must never sit in a shared cache; routes that
            // are cacheable (JWKS) set their own Cache-Control.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ];
        if hsts {
            security_headers.push((
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            ));
        }
        Self {
            limits,
            request_timeout,
            parts,
            security_headers,
            ids: RequestIds::new(),
            meters: RouteMeters::default(),
        }
    }
}

/// Request ids: a client's own id when it is a sane token (so a trace can
/// cross our gateway), else a UUID-shaped id from a per-process random
/// prefix and a counter (unique, no syscall per request).
struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            prefix: uuid::Uuid::new_v4().as_u64_pair().0,
            next: AtomicU64::new(1),
        }
    }

    fn generate(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = uuid::Uuid::from_u64_pair(self.prefix, n);
        let mut buffer = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }

    /// The client's id if it is 1-128 visible ASCII characters, else a new one.
    fn for_request(&self, given: Option<&HeaderValue>) -> HeaderValue {
        match given {
            Some(v)
                if (1..=128).contains(&v.len())
                    && v.as_bytes().iter().all(u8::is_ascii_graphic) =>
            {
                v.clone()
            }
            _ => self.generate(),
        }
    }
}

/// Metric handles per route template, method and status, registered once
/// (the `metrics` macros look their key up on every call otherwise). Bounded:
/// routes are templates, methods fold into nine labels, statuses are < 1000.
#[derive(Default)]
struct RouteMeters {
    by_route: RwLock<HashMap<String, Vec<MeterSlot>>>,
}

/// The handles of one (method, status) under a route.
type MeterSlot = (&'static str, u16, Counter, Histogram);

impl RouteMeters {
    fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        // Recorded under the read lock: no handle clone on the hot path.
        if let Ok(map) = self.by_route.read()
            && let Some((_, _, counter, histogram)) = map.get(route).and_then(|slots| {
                slots
                    .iter()
                    .find(|(m, s, _, _)| *m == method && *s == status)
            })
        {
            counter.increment(1);
            histogram.record(seconds);
            return;
        }
        let (counter, histogram) = self.register(route, method, status);
        counter.increment(1);
        histogram.record(seconds);
    }

    fn register(&self, route: &str, method: &'static str, status: u16) -> (Counter, Histogram) {
        let label: metrics::SharedString = route.to_owned().into();
        let counter = metrics::counter!("gatehouse_http_requests_total", "method" => method, "route" => label.clone(), "status" => status.to_string());
        let histogram = metrics::histogram!("gatehouse_http_request_duration_seconds", "method" => method, "route" => label);
        if let Ok(mut map) = self.by_route.write() {
            map.entry(route.to_owned()).or_default().push((
                method,
                status,
                counter.clone(),
                histogram.clone(),
            ));
        }
        (counter, histogram)
    }
}

/// The edge: see the module doc. Outermost on every request.
pub async fn edge(State(edge): State<Arc<Edge>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = edge.ids.for_request(request.headers().get(&REQUEST_ID));
    request.headers_mut().insert(REQUEST_ID.clone(), id.clone());
    let method = method_label(request.method());
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let uri = request.uri().clone();
    let mut response = match refuse_oversized(edge.limits, &request) {
        Some(refusal) => refusal,
        None => handle(&edge, &id, request, next).await,
    };
    let status = response.status();
    if edge.parts.problems && (status.is_client_error() || status.is_server_error()) {
        response = as_problem(response).await;
    }
    let headers = response.headers_mut();
    if edge.parts.security_headers {
        headers.reserve(edge.security_headers.len() + 1);
        for (name, value) in &edge.security_headers {
            headers.entry(name).or_insert_with(|| value.clone());
        }
    }
    headers.insert(REQUEST_ID.clone(), id.clone());
    let elapsed = started.elapsed();
    if edge.parts.metrics {
        let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
        edge.meters
            .record(route, method, status.as_u16(), elapsed.as_secs_f64());
    }
    if edge.parts.access_log {
        access_line(&id, method, uri.path(), status, elapsed);
    }
    response
}

/// Runs the handler in the request's log context, under the deadline and the
/// panic guard.
async fn handle(edge: &Edge, id: &HeaderValue, request: Request, next: Next) -> Response {
    use futures_util::FutureExt as _;
    let run = next.run(request);
    let run = async {
        if edge.parts.timeout {
            tokio::time::timeout(edge.request_timeout, run)
                .await
                .unwrap_or_else(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())
        } else {
            run.await
        }
    };
    let run = async {
        if edge.parts.catch_panic {
            std::panic::AssertUnwindSafe(run)
                .catch_unwind()
                .await
                .unwrap_or_else(panic_to_problem)
        } else {
            run.await
        }
    };
    if edge.parts.span {
        gatehouse_telemetry::with_request_id(id.to_str().unwrap_or("-"), run).await
    } else {
        run.await
    }
}

/// Writes the request's access line (when info logging is on).
fn access_line(
    id: &HeaderValue,
    method: &str,
    path: &str,
    status: StatusCode,
    elapsed: std::time::Duration,
) {
    if !tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO) {
        return;
    }
    let Some(log) = gatehouse_telemetry::access_log() else {
        return;
    };
    let id = id.to_str().unwrap_or("-");
    let micros = elapsed.as_micros();
    // The access line is stamped with the real time, whatever clock decides.
    let now = gatehouse_core::Clock::now(&gatehouse_core::SystemClock);
    let mut line = String::with_capacity(256);
    if log.json() {
        let _ = write!(
            line,
            "{{\"timestamp\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\",\"level\":\"INFO\",\"message\":\"response\",\"target\":\"gatehouse::access\",\"method\":\"{method}\",\"path\":",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond(),
        );
        gatehouse_telemetry::request_id::push_json_string(&mut line, path);
        let _ = write!(
            line,
            ",\"status\":{},\"latency_us\":{micros},\"request_id\":",
            status.as_u16()
        );
        gatehouse_telemetry::request_id::push_json_string(&mut line, id);
        line.push_str("}\n");
    } else {
        let _ = writeln!(
            line,
            "{now} INFO {method} {path} {} {micros}us request_id={id}",
            status.as_u16()
        );
    }
    log.write(line.as_bytes());
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

/// 431 for oversized headers, 413 for a declared oversized body, before the
/// body is read; `None` when the request is within bounds.
fn refuse_oversized(limits: SizeLimits, request: &Request) -> Option<Response> {
    let total: usize = request.uri().path().len()
        + request.uri().query().map_or(0, str::len)
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if total > limits.max_header_bytes {
        return Some(
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                format!(
                    "request headers and URI total {total} bytes; the limit is {}",
                    limits.max_header_bytes
                ),
            )
            .into_response(),
        );
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > limits.max_body_bytes as u64
    {
        return Some(
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                format!(
                    "request body of {length} bytes exceeds the limit of {} bytes",
                    limits.max_body_bytes
                ),
            )
            .into_response(),
        );
    }
    None
}

/// Rewrites an error response that is not already problem+json (404 from the
/// router, 405, 413 from the body limit, extractor rejections, timeouts) into
/// problem+json, keeping the status and headers such as `Allow`. For 4xx the
/// framework's own message (which names the bad field) becomes the `detail`.
/// HTML error pages from browser routes pass through untouched.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
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
    reason = "the payload `catch_unwind` hands over"
)]
pub fn panic_to_problem(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    ApiError::internal(&format_args!("handler panicked: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_and_ids_stay_one_valid_json_string() {
        for text in [
            "/plain",
            "/q\"uote",
            "/back\\slash",
            "/new\nline\r\t\u{1}",
            "/ünï/😀",
        ] {
            let mut out = String::new();
            gatehouse_telemetry::request_id::push_json_string(&mut out, text);
            assert!(!out.contains('\n'), "{out}");
            let parsed: String = serde_json::from_str(&out).unwrap();
            assert_eq!(parsed, text);
        }
    }

    #[test]
    fn request_ids_are_the_clients_when_sane_and_unique_otherwise() {
        let ids = RequestIds::new();
        let given = HeaderValue::from_static("trace-7f3a");
        assert_eq!(ids.for_request(Some(&given)), given);
        let spaced = HeaderValue::from_static("has space");
        assert_ne!(ids.for_request(Some(&spaced)), spaced);
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_ne!(ids.for_request(Some(&long)), long);
        let (a, b) = (ids.generate(), ids.generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
    }
}
