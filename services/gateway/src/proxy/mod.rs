//! The authenticating reverse proxy, in two deployments:
//! - **apps on their own origin** (recommended): a listener of its own
//!   (`GATEHOUSE_PROXY_LISTEN`) where the request's `Host` selects the
//!   service, so no app shares an origin with the console or the auth API.
//!   A signed-out browser is sent through the sign-in handshake
//!   ([`handshake`]) and comes back with a session cookie scoped to the
//!   app's host, which ends when the user's session does;
//! - **same origin**: `ANY /svc/{service}/{*path}` on the main listener, only
//!   with `GATEHOUSE_PROXY_SAME_ORIGIN=true`; the apps' pages then share the
//!   console's origin (trust every app as much as the console).
//!
//! Each request is admitted like every other way in ([`admit`]: any tenant's
//! session or access token), authorised by the same decision forward auth
//! gives (`/{service}/{path}` mapped by the tenant's `settings.verify`, see
//! [`crate::extract::request_access`]), routed to the tenant's version and an
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

pub mod handshake;
pub mod headers;
pub mod path;
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
use gatehouse_app::admission::{Admitted, Expect, Need, Presented, Verdict, Via};
use gatehouse_app::routing::RoutingServiceError;
use gatehouse_core::ServiceName;
use gatehouse_routing::{Pick, Picked};
use uuid::Uuid;

use crate::auth::client::ClientInfo;
use crate::auth::csrf;
use crate::config::ProxySettings;
use crate::error::ApiError;
use crate::extract::request_access::{Granted, HttpRequest, RequestPath, authorise};
use crate::extract::session::{bearer, bearer_token};
use crate::middleware::{self, Edge, EdgeParts, SizeLimits};
use crate::state::AppState;
use upstream::{SendError, Upstreams};

/// The header naming the version that answered.
static UPSTREAM_VERSION: HeaderName = HeaderName::from_static("x-gatehouse-upstream-version");

/// Which deployment a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `/svc/{service}/...` on the main listener.
    SamePrefix,
    /// The apps' listener: the `Host` names the service.
    OwnOrigin,
}

/// What the proxy's handler needs.
pub struct Proxy {
    state: AppState,
    upstreams: Upstreams,
    mode: Mode,
}

fn edge_for(state: &AppState) -> Arc<Edge> {
    let http = &state.http;
    Arc::new(Edge::with_parts(
        SizeLimits {
            max_header_bytes: http.max_header_bytes,
            max_body_bytes: usize::MAX,
        },
        http.request_timeout,
        http.secure_transport,
        EdgeParts::PROXY,
    ))
}

/// The same-origin proxy's router (`/svc/...`), with its own edge; merged
/// beside the API's. Empty unless `GATEHOUSE_PROXY_SAME_ORIGIN=true`.
pub fn router(state: AppState) -> Router {
    if !state.http.proxy.same_origin {
        return Router::new();
    }
    let edge = edge_for(&state);
    let proxy = Arc::new(Proxy {
        upstreams: Upstreams::new(&state.http.proxy),
        state,
        mode: Mode::SamePrefix,
    });
    Router::new()
        .route("/svc/{service}", any(forward))
        .route("/svc/{service}/", any(forward))
        .route("/svc/{service}/{*path}", any(forward))
        .with_state(proxy)
        .layer(axum::middleware::from_fn_with_state(edge, middleware::edge))
}

/// The apps' listener's router (`GATEHOUSE_PROXY_LISTEN`): the handshake's
/// landing path under `/.gatehouse/`, which no app can use, and every other
/// path proxied to the service the `Host` names.
pub fn apps_router(state: AppState) -> Router {
    let edge = edge_for(&state);
    let proxy = Arc::new(Proxy {
        upstreams: Upstreams::new(&state.http.proxy),
        state,
        mode: Mode::OwnOrigin,
    });
    Router::new()
        .route(handshake::CALLBACK_PATH, any(handshake::callback))
        .route(
            &format!("{}{{*rest}}", handshake::RESERVED_PREFIX),
            any(handshake::reserved),
        )
        .fallback(forward)
        .with_state(proxy)
        .layer(axum::middleware::from_fn_with_state(edge, middleware::edge))
}

/// The service and the path under it.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    service: ServiceName,
    /// `/svc/{service}`, as removed; empty on the apps' listener.
    prefix: String,
    /// `[service, segments...]`, each segment decoded on its own: exactly
    /// what the decision is made on.
    decided: Vec<String>,
    /// The path as the client encoded it (at least `/`) and the query: what
    /// the instance is asked for.
    forward: String,
}

/// Splits `/svc/{service}{rest}` and checks `rest` ([`path::segments`]).
fn target(uri: &Uri, settings: &ProxySettings) -> Result<Target, ApiError> {
    let raw = uri.path();
    let under = raw.strip_prefix("/svc/").unwrap_or_default();
    let (service, rest) = under.split_at(under.find('/').unwrap_or(under.len()));
    let service =
        ServiceName::parse(service).map_err(|e| ApiError::bad_request(format!("service: {e}")))?;
    let path = if rest.is_empty() { "/" } else { rest };
    let prefix = format!("/svc/{service}");
    finish_target(service, prefix, path, uri, settings)
}

/// The service the `Host` names on the apps' listener, and the whole path.
fn host_target(
    uri: &Uri,
    host: Option<&str>,
    settings: &ProxySettings,
) -> Result<Target, ApiError> {
    let service = host
        .and_then(|h| settings.service_for_host(h))
        .cloned()
        .ok_or_else(|| ApiError::not_found("no app is served at this host name"))?;
    finish_target(service, String::new(), uri.path(), uri, settings)
}

fn finish_target(
    service: ServiceName,
    prefix: String,
    path: &str,
    uri: &Uri,
    settings: &ProxySettings,
) -> Result<Target, ApiError> {
    let encoded_slashes = settings.encoded_slashes.contains(service.as_str());
    let mut decided = vec![service.to_string()];
    path::segments_into(path, encoded_slashes, &mut decided)
        .map_err(|e| ApiError::bad_request(format!("path: {e}")))?;
    let forward = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    Ok(Target {
        service,
        prefix,
        decided,
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
    let settings = &state.http.proxy;
    let (mut parts, body) = request.into_parts();
    let Ok(client) = ClientInfo::from_request_parts(&mut parts, state).await;
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let target = match proxy.mode {
        Mode::SamePrefix => target(&parts.uri, settings)?,
        Mode::OwnOrigin => host_target(&parts.uri, host.as_deref(), settings)?,
    };
    let credential = Credential::of(proxy.mode, &parts.headers, &state.auth.cookies, host);
    let Some(credential) = credential else {
        return Ok(unauthenticated(state, proxy.mode, &parts));
    };
    state.gate.refuse_flooding(&client.ip)?;
    let verdict = credential.admit(state).await?;
    state.gate.note_refusal(&client.ip, &verdict);
    let Ok(caller) = verdict else {
        return Ok(unauthenticated(state, proxy.mode, &parts));
    };
    // Only upgrades the service accepts are passed on; any other is ignored
    // (RFC 9110 §7.8) and the request goes on as a plain one.
    let upgrade = headers::upgrade_protocol(&parts.headers).filter(|protocol| {
        protocol
            .to_str()
            .is_ok_and(|p| settings.allows_upgrade(target.service.as_str(), p))
    });
    let granted = decide(
        state,
        proxy.mode,
        &parts,
        &client,
        &target,
        &caller,
        upgrade.is_some(),
    )
    .await?;
    *service_label = Some(target.service.to_string());

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
        caller.via,
    )?;
    if let Some(protocol) = &upgrade {
        headers::keep_upgrade(&mut outgoing, protocol.clone());
    }
    let forced =
        state
            .routing
            .forced_version(target.service.as_str(), caller.tenant.id, &granted.facts());
    let prepared = Prepared {
        method: parts.method,
        headers: outgoing,
        body,
        retryable,
        client_upgrade,
        credential,
    };
    send(proxy, &target, &caller, forced.as_deref(), prepared).await
}

/// A request ready for an instance: what [`send`] needs.
struct Prepared {
    method: Method,
    headers: HeaderMap,
    body: Body,
    /// Idempotent, bodyless, not an upgrade: may go to another instance once
    /// when the first cannot be reached.
    retryable: bool,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    credential: Credential,
}

/// Picks an instance and sends `prepared` to it (once more to another
/// instance when a retryable request could not connect), recording the
/// outcome; the answer as the client gets it.
async fn send(
    proxy: &Proxy,
    target: &Target,
    caller: &Admitted,
    forced: Option<&str>,
    prepared: Prepared,
) -> Result<Response, ApiError> {
    let state = &proxy.state;
    let Prepared {
        method,
        headers: mut outgoing,
        body,
        retryable,
        client_upgrade,
        credential,
    } = prepared;
    let client_fault = ClientFault::default();
    let mut body = Some(client_fault.watch(body));
    let mut exclude: Option<String> = None;
    loop {
        let pick = pick(state, &target.service, caller, forced, exclude.as_deref()).await?;
        let uri: Uri = format!("http://{}{}", pick.address, target.forward)
            .parse()
            .map_err(|e| ApiError::bad_request(format!("path: {e}")))?;
        let mut upstream_request =
            axum::http::Request::new(body.take().unwrap_or_else(Body::empty));
        *upstream_request.method_mut() = method.clone();
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = if retryable && exclude.is_none() {
            outgoing.clone()
        } else {
            std::mem::take(&mut outgoing)
        };
        let sent = Instant::now();
        match proxy.upstreams.send(upstream_request).await {
            Ok(response) => {
                if response.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none()
                {
                    // An instance switching protocols unasked would get a
                    // tunnel past every later decision.
                    record(state, &target.service, caller.tenant.id, &pick, false, sent);
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "bad-gateway",
                        format!(
                            "{} switched protocols without being asked to",
                            target.service
                        ),
                    ));
                }
                let ok = !response.status().is_server_error();
                record(state, &target.service, caller.tenant.id, &pick, ok, sent);
                let tunnel = client_upgrade.map(|upgrade| Tunnel {
                    client: upgrade,
                    credential,
                    state: state.clone(),
                });
                return Ok(answer(state, response, &pick, tunnel));
            }
            Err(_) if client_fault.happened() => {
                // The client's side of the body failed (bad framing, a reset,
                // a stall): not the instance's fault, so nothing is recorded
                // against it or its version.
                metrics::counter!("gatehouse_proxy_client_faults_total").increment(1);
                return Err(ApiError::bad_request(
                    "the request body could not be read from the client (bad framing or the connection broke)",
                ));
            }
            Err(SendError::Connect(e)) if retryable && exclude.is_none() => {
                tracing::warn!(service = %target.service, instance = %pick.instance, error = %e, "instance unreachable; trying another");
                record(state, &target.service, caller.tenant.id, &pick, false, sent);
                exclude = Some(pick.instance);
            }
            Err(e) => {
                tracing::warn!(service = %target.service, instance = %pick.instance, address = %pick.address, error = %e, "proxied request failed");
                record(state, &target.service, caller.tenant.id, &pick, false, sent);
                return Err(upstream_failure(&target.service, &pick, &e));
            }
        }
    }
}

/// The credential a proxied request presented, kept so that an upgraded
/// connection can be re-checked while it lasts.
#[derive(Debug, Clone)]
enum Credential {
    /// `Authorization: Bearer` (wins over any cookie).
    Bearer(HeaderValue),
    /// The console's session cookie (same-origin mode only).
    SessionCookie(String),
    /// An app's host-scoped cookie (apps' listener only), with the host.
    AppCookie { value: String, host: String },
}

impl Credential {
    fn of(
        mode: Mode,
        headers: &HeaderMap,
        cookies: &crate::auth::cookies::CookieSettings,
        host: Option<String>,
    ) -> Option<Self> {
        if bearer(headers).is_some() {
            return headers
                .get(header::AUTHORIZATION)
                .cloned()
                .map(Self::Bearer);
        }
        match mode {
            Mode::SamePrefix => {
                crate::auth::cookies::read(headers, &cookies.session_name).map(Self::SessionCookie)
            }
            Mode::OwnOrigin => {
                let value = crate::auth::cookies::read(headers, &cookies.app_name)?;
                Some(Self::AppCookie { value, host: host? })
            }
        }
    }

    /// Admission, by the rules of the credential's kind.
    async fn admit(&self, state: &AppState) -> Result<Verdict, ApiError> {
        let presented = match self {
            Self::Bearer(value) => Presented::Bearer(bearer_token(value).unwrap_or_default()),
            Self::SessionCookie(value) => Presented::Cookie(value),
            Self::AppCookie { value, host } => {
                return Ok(state.app_sessions.admit(value, host).await?);
            }
        };
        state
            .gate
            .admit_presented(presented, Expect::AnyTenant, Need::Token)
            .await
    }
}

/// An upgraded connection waiting to be joined to the instance's.
struct Tunnel {
    client: hyper::upgrade::OnUpgrade,
    credential: Credential,
    state: AppState,
}

/// Watches a request body for failures on the client's side.
#[derive(Debug, Clone, Default)]
struct ClientFault(Arc<std::sync::atomic::AtomicBool>);

impl ClientFault {
    /// `body`, noting here when reading it from the client fails; its length
    /// and end are passed on unchanged, so the framing towards the instance
    /// is the client's.
    fn watch(&self, body: Body) -> Body {
        Body::new(Watched {
            inner: body,
            fault: Arc::clone(&self.0),
        })
    }

    fn happened(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A request body that flags its own read errors.
struct Watched {
    inner: Body,
    fault: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(_))) = &polled {
            this.fault.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// May this signed-in caller make this request? The origin check for
/// cookies (and for every upgrade a cookie opens), the service known here,
/// then the decision forward auth gives on exactly the forwarded segments.
async fn decide(
    state: &AppState,
    mode: Mode,
    parts: &Parts,
    client: &ClientInfo,
    target: &Target,
    caller: &Admitted,
    upgrade: bool,
) -> Result<Granted, ApiError> {
    refuse_cross_site(state, mode, parts, caller, upgrade)?;
    // Only a signed-in caller learns which services exist, and only those
    // the platform made available to its tenant.
    if !state
        .routing
        .serves(target.service.as_str(), caller.tenant.id)
    {
        return Err(not_routed(&target.service));
    }
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
            path: RequestPath::Segments(&target.decided),
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
    via: Via,
) -> Result<HeaderMap, ApiError> {
    headers::remove_hop_by_hop(&mut outgoing);
    headers::remove_gatehouse_headers(&mut outgoing);
    headers::remove_cookies(&mut outgoing, &state.auth.cookies.ours());
    if via == Via::Bearer {
        // Our session token or access token: the upstream learns who the
        // caller is from the identity headers, never by holding a
        // credential it could replay against us.
        outgoing.remove(header::AUTHORIZATION);
    }
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

/// 404 for a service that is unknown here or not available to the caller's
/// tenant (the two look the same to a tenant).
fn not_routed(service: &ServiceName) -> ApiError {
    ApiError::not_found(format!("no service {service} is routed here"))
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
        .map_err(|e| match e {
            // Withdrawn between the decision and the pick.
            RoutingServiceError::NotAvailable(_) => not_routed(service),
            e => {
                tracing::warn!(%service, error = %e, "routing cannot answer");
                ApiError::unavailable("routing is unavailable; retry shortly", 1)
            }
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
fn record(
    state: &AppState,
    service: &ServiceName,
    tenant: Uuid,
    pick: &Pick,
    ok: bool,
    sent: Instant,
) {
    let latency = sent.elapsed();
    if state
        .routing
        .batch_success(pick, service.as_str(), tenant, ok, latency)
    {
        return;
    }
    let routing = Arc::clone(&state.routing);
    let (service, pick) = (service.to_string(), pick.clone());
    tokio::spawn(async move {
        routing.record(&pick, &service, tenant, ok, latency).await;
    });
}

/// The instance's answer as the client gets it: hop-by-hop headers dropped
/// (or the upgrade kept, and the two connections spliced), our cookies never
/// set by it, the version named.
fn answer(
    state: &AppState,
    mut response: axum::http::Response<hyper::body::Incoming>,
    pick: &Pick,
    tunnel: Option<Tunnel>,
) -> Response {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let protocol = response.headers().get(header::UPGRADE).cloned();
    if switching && let Some(tunnel) = tunnel {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(splice_while_admitted(tunnel, upstream_upgrade));
    }
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::remove_set_cookies(&mut parts.headers, &state.auth.cookies.ours());
    if switching && let Some(protocol) = protocol {
        headers::keep_upgrade(&mut parts.headers, protocol);
    }
    if let Ok(version) = HeaderValue::from_str(&pick.version) {
        parts.headers.insert(UPSTREAM_VERSION.clone(), version);
    }
    Response::from_parts(parts, Body::new(body))
}

/// Splices the tunnel and re-checks the credential that opened it every
/// `tunnel_recheck`: a session or token revoked (or ended, or expired)
/// closes the tunnel within that interval. A store that cannot answer keeps
/// the tunnel (revocations themselves are checked in memory).
async fn splice_while_admitted(tunnel: Tunnel, upstream: hyper::upgrade::OnUpgrade) {
    let Tunnel {
        client,
        credential,
        state,
    } = tunnel;
    let every = state.http.proxy.tunnel_recheck;
    let watch = async {
        loop {
            tokio::time::sleep(every).await;
            match credential.admit(&state).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => return,
            }
        }
    };
    tokio::select! {
        () = upstream::splice(client, upstream) => {}
        () = watch => {
            metrics::counter!("gatehouse_proxy_tunnels_closed_total", "reason" => "credential_ended")
                .increment(1);
            tracing::info!("an upgraded connection was closed: its credential ended");
        }
    }
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

/// A cookie-presented session on an unsafe method, or opening an upgraded
/// connection (a WebSocket is not bound by CORS), must come from the
/// origin it is served on: another site cannot make a browser act through
/// the proxy.
fn refuse_cross_site(
    state: &AppState,
    mode: Mode,
    parts: &Parts,
    caller: &Admitted,
    upgrade: bool,
) -> Result<(), ApiError> {
    let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if caller.via == Via::Cookie && (unsafe_method || upgrade) {
        let origins = match mode {
            Mode::SamePrefix => csrf::own_origins(
                &parts.headers,
                &state.auth.issuer,
                state.auth.cookies.secure,
            ),
            Mode::OwnOrigin => app_origin(state, &parts.headers).into_iter().collect(),
        };
        let same = csrf::same_origin(&parts.headers, &origins);
        // A cross-site WebSocket always carries `Origin`: without one there
        // is no browser to protect, so only its presence is required here.
        let named = !upgrade || parts.headers.contains_key(header::ORIGIN);
        if !same || !named {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "cookie-authenticated requests must come from this site's own origin",
            ));
        }
    }
    Ok(())
}

/// `scheme://host[:port]` of the app the request was sent to.
fn app_origin(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let scheme = if state.auth.cookies.secure {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// A browser asking for a page goes to its tenant's sign-in (same origin)
/// or through the sign-in handshake (own origin) and comes back; anyone
/// else gets the 401.
fn unauthenticated(state: &AppState, mode: Mode, parts: &Parts) -> Response {
    let wants_page = matches!(parts.method, Method::GET | Method::HEAD)
        && parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    let back = parts
        .uri
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str);
    let location = match mode {
        Mode::OwnOrigin => app_origin(state, &parts.headers)
            .map(|origin| handshake::start_url(&state.auth.issuer, &format!("{origin}{back}"))),
        Mode::SamePrefix => state
            .http
            .proxy
            .login_tenant
            .as_deref()
            .or(state.http.forward_auth_tenant.as_deref())
            .map(|tenant| {
                format!(
                    "/t/{tenant}/login?return_to={}",
                    url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
                )
            }),
    };
    if wants_page
        && let Some(location) = location
        && let Ok(location) = HeaderValue::from_str(&location)
    {
        return (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response();
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

    fn settings() -> ProxySettings {
        let mut settings = ProxySettings::default();
        settings.encoded_slashes.insert("files".to_owned());
        settings.hosts.insert(
            "orders.example".to_owned(),
            ServiceName::parse("orders").unwrap(),
        );
        settings
    }

    #[test]
    fn the_target_is_the_service_and_the_raw_rest_of_the_path() {
        let s = settings();
        let t = target(&Uri::from_static("/svc/orders/a/b%20c?x=1"), &s).unwrap();
        assert_eq!(
            (t.service.as_str(), t.prefix.as_str(), t.forward.as_str()),
            ("orders", "/svc/orders", "/a/b%20c?x=1")
        );
        assert_eq!(t.decided, ["orders", "a", "b c"]);
        assert_eq!(
            target(&Uri::from_static("/svc/orders"), &s)
                .unwrap()
                .forward,
            "/"
        );
        assert_eq!(
            target(&Uri::from_static("/svc/orders/"), &s)
                .unwrap()
                .forward,
            "/"
        );
        let own =
            host_target(&Uri::from_static("/a/7?q"), Some("Orders.Example:8443"), &s).unwrap();
        assert_eq!((own.prefix.as_str(), own.forward.as_str()), ("", "/a/7?q"));
        assert_eq!(own.decided, ["orders", "a", "7"]);
        assert!(host_target(&Uri::from_static("/"), Some("billing.example"), &s).is_err());
        assert!(host_target(&Uri::from_static("/"), None, &s).is_err());
    }

    #[test]
    fn paths_that_could_move_the_decision_and_bad_names_are_refused() {
        let s = settings();
        for uri in [
            "/svc/orders/../billing/1",
            "/svc/orders/a/%2e%2e/b",
            "/svc/orders/./x",
            "/svc/orders/%2E",
            "/svc/orders/..%2Fadmin:x",
            "/svc/other/..%2Forders%2F1",
            "/svc/orders/a%2fb",
            "/svc/orders/a%5cb",
            "/svc/Orders!/x",
            "/svc/files/..%2Fx",
        ] {
            assert!(target(&Uri::try_from(uri).unwrap(), &s).is_err(), "{uri}");
        }
        assert!(target(&Uri::from_static("/svc/orders/..x/y"), &s).is_ok());
        let opted_in = target(&Uri::from_static("/svc/files/a%2Fb/c"), &s).unwrap();
        assert_eq!(opted_in.decided, ["files", "a/b", "c"]);
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
