//! The authenticating reverse proxy: `ANY /svc/{service}/{*path}`.
//!
//! Each request is admitted like every other way in ([`admit`]: any tenant's
//! session or access token), authorised by the same decision forward auth
//! gives (`/{service}/{path}` mapped by the tenant's `settings.verify`, see
//! [`crate::auth::request_access`]), routed to the tenant's version and an
//! instance by the Lua selection (one Redis round trip, [`Routing::pick`]),
//! and sent on a pooled connection with:
//! - the prefix `/svc/{service}` removed from the path (`X-Forwarded-Prefix`
//!   names it);
//! - client-sent `X-Gatehouse-*` removed and our identity headers added;
//!   our own cookies removed (an upstream never sees a session);
//! - hop-by-hop headers dropped both ways, `X-Forwarded-*` set;
//! - bodies streamed both ways (no size cap, never buffered), upgrades
//!   (WebSocket) spliced through.
//!
//! The proxy has its own router and edge ([`crate::middleware::EdgeParts::PROXY`]):
//! no 64 KiB body limit, no whole-request deadline, and the upstream's answer
//! is never rewritten; its own deadlines are the connect and response-header
//! timeouts (`GATEHOUSE_PROXY__*`).
//!
//! Failures: a request that could not be sent (connect refused or timed out)
//! is tried once more on another instance if it is idempotent and has no
//! body; nothing else is retried. 502 when the instance failed, 504 when it
//! did not answer in time, 503 when the version has no healthy instance,
//! each as problem+json. Every outcome (a 5xx answer counts as a failure)
//! goes to the instance's breaker after the answer has left, off the
//! request's path ([`Routing::record`]): 2 Redis round trips per request,
//! one before and one after. An unauthenticated browser (`Accept: text/html`,
//! a GET) is sent to its tenant's sign-in page and back.
//!
//! [`admit`]: crate::extract::session::admit
//! [`Routing::pick`]: gatehouse_app::routing::Routing::pick
//! [`Routing::record`]: gatehouse_app::routing::Routing::record

pub mod headers;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use gatehouse_app::admission::{Admitted, Expect, Need, Via};
use gatehouse_core::ServiceName;
use gatehouse_routing::{Pick, Picked};
use percent_encoding::percent_decode_str;

use crate::auth::client::ClientInfo;
use crate::auth::csrf;
use crate::auth::request_access::{Granted, HttpRequest, authorise};
use crate::error::ApiError;
use crate::extract::session::admit;
use crate::middleware::{self, Edge, EdgeParts, SizeLimits};
use crate::state::AppState;
use upstream::{SendError, Upstreams};

/// The header naming the version that answered.
static UPSTREAM_VERSION: HeaderName = HeaderName::from_static("x-gatehouse-upstream-version");

/// What the proxy's handler needs.
pub struct Proxy {
    state: AppState,
    upstreams: Upstreams,
}

/// The proxy's router, with its own edge; merged beside the API's.
pub fn router(state: AppState) -> Router {
    let http = state.http.clone();
    let proxy = Arc::new(Proxy {
        upstreams: Upstreams::new(&http.proxy),
        state,
    });
    let edge = Arc::new(Edge::with_parts(
        SizeLimits {
            max_header_bytes: http.max_header_bytes,
            max_body_bytes: usize::MAX,
        },
        http.request_timeout,
        http.secure_transport,
        EdgeParts::PROXY,
    ));
    Router::new()
        .route("/svc/{service}", any(forward))
        .route("/svc/{service}/", any(forward))
        .route("/svc/{service}/{*path}", any(forward))
        .with_state(proxy)
        .layer(axum::middleware::from_fn_with_state(edge, middleware::edge))
}

/// The service and the path under it.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    service: ServiceName,
    /// `/svc/{service}`, as removed.
    prefix: String,
    /// The rest of the path (at least `/`), as the client encoded it.
    path: String,
    /// `path` and the query (`?…`, if any): what the instance is asked for.
    forward: String,
}

/// Splits `/svc/{service}{rest}`. Dot segments (also percent-encoded) are
/// refused: the decision is made on the path the upstream will serve, and
/// `..` would let a request decided for one service climb into another's
/// resources.
fn target(uri: &Uri) -> Result<Target, ApiError> {
    let raw = uri.path();
    let under = raw.strip_prefix("/svc/").unwrap_or_default();
    let (service, rest) = under.split_at(under.find('/').unwrap_or(under.len()));
    let service =
        ServiceName::parse(service).map_err(|e| ApiError::bad_request(format!("service: {e}")))?;
    let path = if rest.is_empty() { "/" } else { rest };
    let dotted = path.split('/').any(|segment| {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    });
    if dotted {
        return Err(ApiError::bad_request(
            "path: dot segments (. and ..) are not accepted through the proxy",
        ));
    }
    let forward = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    Ok(Target {
        prefix: format!("/svc/{service}"),
        service,
        path: path.to_owned(),
        forward,
    })
}

/// `ANY /svc/{service}/{*path}`
pub async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let started = Instant::now();
    let mut service_label = None;
    let response = match proxy_request(&proxy, request, &mut service_label).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    if let Some(service) = service_label {
        let status = response.status().as_u16();
        let outcome = match status {
            101 => "upgraded",
            s if s < 400 => "ok",
            s if s < 500 => "client_error",
            _ => "server_error",
        };
        metrics::counter!("gatehouse_proxy_requests_total", "service" => service.clone(), "outcome" => outcome).increment(1);
        metrics::histogram!("gatehouse_proxy_duration_seconds", "service" => service)
            .record(started.elapsed().as_secs_f64());
    }
    response
}

async fn proxy_request(
    proxy: &Proxy,
    request: Request,
    service_label: &mut Option<String>,
) -> Result<Response, ApiError> {
    let state = &proxy.state;
    let (mut parts, body) = request.into_parts();
    let Ok(client) = ClientInfo::from_request_parts(&mut parts, state).await;
    let target = target(&parts.uri)?;
    let verdict = admit(&state.gate, &parts.headers, Expect::AnyTenant, Need::Token).await?;
    let Ok(caller) = verdict else {
        return Ok(unauthenticated(state, &parts));
    };
    let granted = decide(state, &parts, &client, &target, &caller).await?;
    *service_label = Some(target.service.to_string());

    let upgrade = headers::upgrade_protocol(&parts.headers);
    let retryable = upgrade.is_none() && idempotent(&parts.method) && bodyless(&parts.headers);
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let mut outgoing = outgoing_headers(
        state,
        std::mem::take(&mut parts.headers),
        &client,
        &target,
        &granted,
    )?;
    if let Some(protocol) = &upgrade {
        headers::keep_upgrade(&mut outgoing, protocol.clone());
    }
    let mut body = Some(body);
    let mut exclude: Option<String> = None;
    let forced =
        state
            .routing
            .forced_version(target.service.as_str(), caller.tenant.id, &granted.facts());
    loop {
        let pick = pick(
            state,
            &target.service,
            &caller,
            forced.as_deref(),
            exclude.as_deref(),
        )
        .await?;
        let uri: Uri = format!("http://{}{}", pick.address, target.forward)
            .parse()
            .map_err(|e| ApiError::bad_request(format!("path: {e}")))?;
        let mut upstream_request =
            axum::http::Request::new(body.take().unwrap_or_else(Body::empty));
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = if retryable && exclude.is_none() {
            outgoing.clone()
        } else {
            std::mem::take(&mut outgoing)
        };
        let sent = Instant::now();
        match proxy.upstreams.send(upstream_request).await {
            Ok(response) => {
                let ok = !response.status().is_server_error();
                record(state, &target.service, &pick, ok, sent);
                return Ok(answer(response, &pick, client_upgrade));
            }
            Err(SendError::Connect(e)) if retryable && exclude.is_none() => {
                tracing::warn!(service = %target.service, instance = %pick.instance, error = %e, "instance unreachable; trying another");
                record(state, &target.service, &pick, false, sent);
                exclude = Some(pick.instance);
            }
            Err(e) => {
                tracing::warn!(service = %target.service, instance = %pick.instance, address = %pick.address, error = %e, "proxied request failed");
                record(state, &target.service, &pick, false, sent);
                return Err(upstream_failure(&target.service, &pick, &e));
            }
        }
    }
}

/// May this signed-in caller make this request? The origin check for
/// cookies, the service known here, then the decision forward auth gives on
/// `/{service}/{path}`.
async fn decide(
    state: &AppState,
    parts: &Parts,
    client: &ClientInfo,
    target: &Target,
    caller: &Admitted,
) -> Result<Granted, ApiError> {
    refuse_cross_site(state, parts, caller)?;
    // Only a signed-in caller learns which services exist.
    if !state.routing.routes_anyone(target.service.as_str()) {
        return Err(ApiError::not_found(format!(
            "no service {} is routed here",
            target.service
        )));
    }
    let decided_uri = format!("/{}{}", target.service, target.forward);
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    Ok(authorise(
        state,
        &caller.tenant,
        caller.user_id,
        HttpRequest {
            method: parts.method.as_str(),
            uri: &decided_uri,
            client_ip: &client.ip,
            host,
        },
    )
    .await?)
}

/// The headers the instance gets: see [`headers`] for what changes and why.
fn outgoing_headers(
    state: &AppState,
    mut outgoing: HeaderMap,
    client: &ClientInfo,
    target: &Target,
    granted: &Granted,
) -> Result<HeaderMap, ApiError> {
    headers::remove_hop_by_hop(&mut outgoing);
    headers::remove_gatehouse_headers(&mut outgoing);
    let cookies = &state.auth.cookies;
    headers::remove_cookies(
        &mut outgoing,
        &[
            &cookies.session_name,
            &cookies.nonce_name,
            &cookies.device_name,
        ],
    );
    let peer = client.peer.map(|p| p.to_string()).unwrap_or_default();
    headers::set_forwarded(
        &mut outgoing,
        &headers::Forwarding {
            peer: &peer,
            peer_trusted: client.from_trusted_proxy(&state.http.trusted_proxies),
            proto: if state.http.secure_transport {
                "https"
            } else {
                "http"
            },
            prefix: &target.prefix,
        },
    );
    for (name, value) in granted.identity_headers()? {
        outgoing.insert(name, value);
    }
    Ok(outgoing)
}

/// The tenant's (or a subject rule's) version of `service` and an instance of it.
async fn pick(
    state: &AppState,
    service: &ServiceName,
    caller: &Admitted,
    forced: Option<&str>,
    exclude: Option<&str>,
) -> Result<Pick, ApiError> {
    let picked = state
        .routing
        .pick(
            service.as_str(),
            caller.tenant.id,
            Some(caller.user_id),
            forced,
            exclude,
        )
        .await
        .map_err(|e| {
            tracing::warn!(%service, error = %e, "routing cannot answer");
            ApiError::unavailable("routing is unavailable; retry shortly", 1)
        })?;
    match picked {
        Picked::Instance(pick) => Ok(pick),
        Picked::NoInstance { version } => Err(ApiError::unavailable(
            format!("no healthy instance of {service} {version}"),
            1,
        )),
        Picked::NoVersion => Err(ApiError::not_found(format!(
            "no version of service {service} for tenant {} (no such service, or no default version)",
            caller.tenant.slug
        ))),
    }
}

/// Reports the outcome after the answer has left (off the request's path).
/// A plain success is only counted in memory (batched); anything else goes
/// to Redis in a task of its own.
fn record(state: &AppState, service: &ServiceName, pick: &Pick, ok: bool, sent: Instant) {
    let latency = sent.elapsed();
    if state
        .routing
        .batch_success(pick, service.as_str(), ok, latency)
    {
        return;
    }
    let routing = Arc::clone(&state.routing);
    let (service, pick) = (service.to_string(), pick.clone());
    tokio::spawn(async move {
        routing.record(&pick, &service, ok, latency).await;
    });
}

/// The instance's answer as the client gets it: hop-by-hop headers dropped
/// (or the upgrade kept, and the two connections spliced), the version named.
fn answer(
    mut response: axum::http::Response<hyper::body::Incoming>,
    pick: &Pick,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let protocol = response.headers().get(header::UPGRADE).cloned();
    if switching && let Some(client_upgrade) = client_upgrade {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(upstream::splice(client_upgrade, upstream_upgrade));
    }
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    if switching && let Some(protocol) = protocol {
        headers::keep_upgrade(&mut parts.headers, protocol);
    }
    if let Ok(version) = HeaderValue::from_str(&pick.version) {
        parts.headers.insert(UPSTREAM_VERSION.clone(), version);
    }
    Response::from_parts(parts, Body::new(body))
}

fn upstream_failure(service: &ServiceName, pick: &Pick, error: &SendError) -> ApiError {
    let (status, slug) = match error {
        SendError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"),
        SendError::Connect(_) | SendError::Failed(_) => (StatusCode::BAD_GATEWAY, "bad-gateway"),
    };
    ApiError::new(
        status,
        slug,
        format!(
            "{service} {} (instance {}) {error}",
            pick.version, pick.instance
        ),
    )
}

/// Safe to send twice (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// No body to replay: neither a length above zero nor a chunked body.
fn bodyless(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0");
    !length && !headers.contains_key(header::TRANSFER_ENCODING)
}

/// A cookie-presented session on an unsafe method must come from our own
/// origin, as on the API: another site cannot make a browser act through
/// the proxy.
fn refuse_cross_site(state: &AppState, parts: &Parts, caller: &Admitted) -> Result<(), ApiError> {
    let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if caller.via == Via::Cookie && unsafe_method {
        let origins = csrf::own_origins(
            &parts.headers,
            &state.auth.issuer,
            state.auth.cookies.secure,
        );
        if !csrf::same_origin(&parts.headers, &origins) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "cookie-authenticated requests must come from this site's own origin",
            ));
        }
    }
    Ok(())
}

/// A browser asking for a page goes to its tenant's sign-in and comes back;
/// anyone else gets the 401.
fn unauthenticated(state: &AppState, parts: &Parts) -> Response {
    let wants_page = matches!(parts.method, Method::GET | Method::HEAD)
        && parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    let tenant = state
        .http
        .proxy
        .login_tenant
        .as_deref()
        .or(state.http.forward_auth_tenant.as_deref());
    if wants_page && let Some(tenant) = tenant {
        let back = parts
            .uri
            .path_and_query()
            .map_or("/", axum::http::uri::PathAndQuery::as_str);
        let location = format!(
            "/t/{tenant}/login?return_to={}",
            url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
        );
        if let Ok(location) = HeaderValue::from_str(&location) {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
        }
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "a valid session or access token is required (session cookie or Authorization: Bearer)",
    )
    .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_service_and_the_raw_rest_of_the_path() {
        let t = target(&Uri::from_static("/svc/orders/a/b%20c?x=1")).unwrap();
        assert_eq!(
            (t.service.as_str(), t.prefix.as_str(), t.path.as_str()),
            ("orders", "/svc/orders", "/a/b%20c")
        );
        assert_eq!(target(&Uri::from_static("/svc/orders")).unwrap().path, "/");
        assert_eq!(target(&Uri::from_static("/svc/orders/")).unwrap().path, "/");
    }

    #[test]
    fn dot_segments_and_bad_names_are_refused() {
        for uri in [
            "/svc/orders/../billing/1",
            "/svc/orders/a/%2e%2e/b",
            "/svc/orders/./x",
            "/svc/orders/%2E",
            "/svc/Orders!/x",
        ] {
            assert!(target(&Uri::try_from(uri).unwrap()).is_err(), "{uri}");
        }
        assert!(target(&Uri::from_static("/svc/orders/..x/y")).is_ok());
    }

    #[test]
    fn only_bodyless_idempotent_requests_are_retried() {
        assert!(idempotent(&Method::GET) && idempotent(&Method::DELETE));
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH));
        let mut h = HeaderMap::new();
        assert!(bodyless(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(bodyless(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(!bodyless(&h));
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(!bodyless(&chunked));
    }
}
