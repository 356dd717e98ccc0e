//! `/v1/verify`: forward auth for nginx `auth_request`, Traefik `ForwardAuth`
//! and Envoy `ext_authz` (HTTP mode).
//!
//! Trust is explicit, because the decision is only as good as the request it
//! is about:
//! - the call must come from a trusted proxy (`GATEHOUSE_TRUSTED_PROXIES`,
//!   the socket peer); anyone else gets 403, whatever it sends;
//! - the original method, URI and host are read from one header family, the
//!   one the deployment names (`GATEHOUSE_FORWARD_AUTH`, see
//!   [`ForwardAuthMode`]); headers of the other families are ignored, since a
//!   proxy passes client-sent headers it does not set itself;
//! - the protected app's tenant is named by the proxy configuration
//!   (`?tenant=` on the verify URL, or `GATEHOUSE_FORWARD_AUTH_TENANT`; in
//!   Envoy mode only the latter, since the query string there is the original
//!   request's), and a credential of another tenant is refused (401).
//!
//! The credential is admitted by [`gatehouse_app::admission`] (signature, claims,
//! revocations, marks, tenant and user standing), the request is mapped to an
//! action and resource (`gatehouse_authz::http`, per-tenant
//! `settings.verify`) and decided by the engine with `context.ip` = the
//! client address and `context.host` = the original host.
//!
//! 200 with `X-Gatehouse-User`, `X-Gatehouse-User-Id`, `X-Gatehouse-Tenant`,
//! `X-Gatehouse-Roles` (effective roles, comma-separated) and, when the proxy
//! names the protected service (`?service=orders`, not in Envoy mode),
//! `X-Gatehouse-Upstream-Version`: the tenant's (or user's) version of it by
//! its rollout, so nginx or Traefik can route each tenant to its version
//! without our proxy (`docs/nginx-grey-routing.conf`). That costs one Redis
//! round trip; when routing cannot answer, the header is left out (and
//! counted) and the proxy's default upstream applies. 401 when not
//! authenticated (or another tenant's credential); 403 when denied or not
//! called by a trusted proxy; 400 when the original request is missing or
//! cannot be mapped, or no tenant is named.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use gatehouse_core::{ServiceName, TenantSlug};

use crate::auth::client::ClientInfo;
use crate::config::ForwardAuthMode;
use crate::error::ApiError;
use crate::extract::request_access::{Granted, HttpRequest, Refused, RequestPath, authorise};
use crate::extract::session::admit;
use crate::state::AppState;
use gatehouse_app::admission::{Expect, Need};

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Envoy's HTTP `ext_authz` calls `path_prefix` + the original path.
const ENVOY_PREFIX: &str = "/v1/verify";

/// The request the proxy asks about.
#[derive(Debug, PartialEq, Eq)]
struct Original<'a> {
    method: &'a str,
    uri: &'a str,
    host: Option<&'a str>,
}

/// Reads the original request from the one header family of `mode`.
/// `Err` names what is missing.
fn original<'a>(
    mode: ForwardAuthMode,
    headers: &'a HeaderMap,
    method: &'a Method,
    uri: &'a Uri,
) -> Result<Original<'a>, String> {
    let (method_header, uri_header, host_header) = match mode {
        ForwardAuthMode::Nginx => ("x-original-method", "x-original-uri", "x-original-host"),
        ForwardAuthMode::Traefik => ("x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"),
        ForwardAuthMode::Envoy => {
            let line = uri.path_and_query().map_or("/", |p| p.as_str());
            let original = line
                .strip_prefix(ENVOY_PREFIX)
                .filter(|rest| rest.starts_with('/'))
                .ok_or_else(|| {
                    "in envoy mode the original path follows /v1/verify (path_prefix: /v1/verify)"
                        .to_owned()
                })?;
            return Ok(Original {
                method: method.as_str(),
                uri: original,
                host: None,
            });
        }
    };
    let required = |name: &'static str| {
        header(headers, name).ok_or_else(|| {
            format!(
                "{name} is required (GATEHOUSE_FORWARD_AUTH={})",
                mode.as_str()
            )
        })
    };
    Ok(Original {
        method: required(method_header)?,
        uri: required(uri_header)?,
        host: header(headers, host_header),
    })
}

/// The tenant of the protected app: the proxy's `?tenant=` (not in Envoy
/// mode), else the deployment's default.
fn pinned_tenant<'a>(
    mode: ForwardAuthMode,
    uri: &'a Uri,
    default: Option<&'a str>,
) -> Result<TenantSlug, String> {
    let from_query = if mode == ForwardAuthMode::Envoy {
        None
    } else {
        uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "tenant")
                .map(|(_, v)| v.into_owned())
        })
    };
    let raw = match (from_query, default) {
        (Some(raw), _) => raw,
        (None, Some(default)) => default.to_owned(),
        (None, None) => {
            return Err(
                "missing query parameter tenant: name the protected app's tenant (/v1/verify?tenant=<slug>) or set GATEHOUSE_FORWARD_AUTH_TENANT"
                    .to_owned(),
            );
        }
    };
    TenantSlug::parse(&raw).map_err(|e| format!("tenant: {e}"))
}

/// The protected service the proxy names (`?service=`, not in Envoy mode,
/// where the query string is the original request's): `Ok(None)` when none.
fn named_service(mode: ForwardAuthMode, uri: &Uri) -> Result<Option<ServiceName>, String> {
    if mode == ForwardAuthMode::Envoy {
        return Ok(None);
    }
    let Some(raw) = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.into_owned())
    }) else {
        return Ok(None);
    };
    ServiceName::parse(&raw)
        .map(Some)
        .map_err(|e| format!("service: {e}"))
}

fn outcome(result: &'static str, started: Instant) {
    /// Registered once (a labelled macro call looks its key up every time);
    /// the recorder is installed before the first request.
    static DURATION: std::sync::LazyLock<metrics::Histogram> =
        std::sync::LazyLock::new(|| metrics::histogram!("gatehouse_verify_duration_seconds"));
    static ALLOWED: std::sync::LazyLock<metrics::Counter> = std::sync::LazyLock::new(
        || metrics::counter!("gatehouse_verify_total", "result" => "allowed"),
    );
    if result == "allowed" {
        ALLOWED.increment(1);
    } else {
        metrics::counter!("gatehouse_verify_total", "result" => result).increment(1);
    }
    DURATION.record(started.elapsed().as_secs_f64());
}

/// `ANY /v1/verify`
pub async fn verify(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    client: ClientInfo,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let http = &state.http;
    if !client.from_trusted_proxy(&http.trusted_proxies) {
        outcome("untrusted_proxy", started);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "untrusted-proxy",
            "forward auth answers only trusted proxies (GATEHOUSE_TRUSTED_PROXIES); this peer is not one",
        ));
    }
    let mode = http.forward_auth;
    let bad_request = |detail: String| {
        outcome("bad_request", started);
        ApiError::bad_request(detail)
    };
    let slug =
        pinned_tenant(mode, &uri, http.forward_auth_tenant.as_deref()).map_err(bad_request)?;
    let original = original(mode, &headers, &method, &uri).map_err(bad_request)?;
    let service = named_service(mode, &uri).map_err(bad_request)?;
    state.gate.refuse_flooding(&client.ip)?;
    let verdict = admit(
        &state.gate,
        &headers,
        Expect::Tenant(slug.as_str()),
        Need::Token,
    )
    .await?;
    state.gate.note_refusal(&client.ip, &verdict);
    let Ok(caller) = verdict else {
        outcome("unauthenticated", started);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!(
                "a valid session or access token of tenant {slug} is required (session cookie or Authorization: Bearer)"
            ),
        ));
    };
    let tenant = caller.tenant;
    // A tenant reaches only the services made available to it: a proxy
    // routing by `service=` must not send anyone else to its default
    // upstream. (403: what an auth_request proxy understands.)
    if let Some(service) = &service
        && !state.routing.available(service.as_str(), tenant.id)
    {
        outcome("denied", started);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("service {service} is not available to tenant {slug}"),
        ));
    }
    let request = HttpRequest {
        method: original.method,
        path: RequestPath::Uri(original.uri),
        client_ip: &client.ip,
        host: original.host,
    };
    let granted = match authorise(&state, &tenant, caller.user_id, request).await {
        Ok(granted) => granted,
        Err(refused) => {
            outcome(
                match &refused {
                    Refused::Unmappable(_) => "bad_request",
                    Refused::Denied { .. } => "denied",
                    Refused::Failed(_) => "error",
                },
                started,
            );
            return Err(refused.into());
        }
    };
    outcome("allowed", started);
    let upstream_version = match &service {
        Some(service) => upstream_version(&state, service, tenant.id, &granted).await,
        None => None,
    };
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    for (name, value) in granted.identity_headers()? {
        out.insert(name, value);
    }
    if let Some(version) = upstream_version
        && let Ok(value) = HeaderValue::from_str(&version)
    {
        out.insert(
            HeaderName::from_static("x-gatehouse-upstream-version"),
            value,
        );
    }
    Ok(response)
}

/// The caller's version of `service` (a subject rule's, else the rollout's);
/// `None` (logged and counted) when
/// routing has no rule for it or cannot answer, so the proxy's default applies.
async fn upstream_version(
    state: &AppState,
    service: &ServiceName,
    tenant: uuid::Uuid,
    granted: &Granted,
) -> Option<String> {
    let forced = state
        .routing
        .forced_version(service.as_str(), tenant, &granted.facts());
    match state
        .routing
        .version(
            service.as_str(),
            tenant,
            Some(granted.user_id),
            forced.as_deref(),
        )
        .await
    {
        Ok(Some(version)) => Some(version),
        Ok(None) => {
            metrics::counter!("gatehouse_verify_upstream_version_total", "result" => "no_rule")
                .increment(1);
            None
        }
        Err(e) => {
            tracing::warn!(%service, error = %e, "routing unavailable; verify answers without an upstream version");
            metrics::counter!("gatehouse_verify_upstream_version_total", "result" => "unavailable")
                .increment(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h
    }

    /// A client's header of another family never reaches the decision:
    /// nginx passes client-sent `X-Forwarded-Method` through untouched.
    #[test]
    fn only_the_configured_family_names_the_original_request() {
        let sent = headers(&[
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/orders/42"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orders/1"),
            ("x-forwarded-host", "spoofed.example"),
        ]);
        let (get, uri) = (Method::GET, Uri::from_static("/v1/verify?tenant=acme"));
        let nginx = original(ForwardAuthMode::Nginx, &sent, &get, &uri).unwrap();
        assert_eq!(
            nginx,
            Original {
                method: "DELETE",
                uri: "/orders/42",
                host: None
            }
        );
        let traefik = original(ForwardAuthMode::Traefik, &sent, &get, &uri).unwrap();
        assert_eq!(traefik.method, "GET");
        assert_eq!(traefik.host, Some("spoofed.example"));
        // Envoy: the request line, whatever headers say.
        let envoy_uri = Uri::from_static("/v1/verify/orders/7?x=1");
        let envoy = original(ForwardAuthMode::Envoy, &sent, &Method::PUT, &envoy_uri).unwrap();
        assert_eq!((envoy.method, envoy.uri), ("PUT", "/orders/7?x=1"));
        // A missing header of the configured family is an error naming it,
        // never a fall-back to another family.
        let only_traefik = headers(&[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/a")]);
        let e = original(ForwardAuthMode::Nginx, &only_traefik, &get, &uri).unwrap_err();
        assert!(e.contains("x-original-method"), "{e}");
        assert!(original(ForwardAuthMode::Envoy, &sent, &get, &uri).is_err());
    }

    #[test]
    fn the_service_is_optional_checked_and_never_read_from_envoys_query() {
        let named = Uri::from_static("/v1/verify?tenant=acme&service=orders");
        assert_eq!(
            named_service(ForwardAuthMode::Nginx, &named)
                .unwrap()
                .unwrap()
                .as_str(),
            "orders"
        );
        let none = Uri::from_static("/v1/verify?tenant=acme");
        assert!(
            named_service(ForwardAuthMode::Traefik, &none)
                .unwrap()
                .is_none()
        );
        let bad = Uri::from_static("/v1/verify?tenant=acme&service=..%2Fx");
        let e = named_service(ForwardAuthMode::Nginx, &bad).unwrap_err();
        assert!(e.starts_with("service"), "{e}");
        let envoy = Uri::from_static("/v1/verify/orders/1?service=evil");
        assert!(
            named_service(ForwardAuthMode::Envoy, &envoy)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_tenant_comes_from_the_proxy_configuration() {
        let q = Uri::from_static("/v1/verify?tenant=acme");
        assert_eq!(
            pinned_tenant(ForwardAuthMode::Nginx, &q, Some("other"))
                .unwrap()
                .as_str(),
            "acme"
        );
        let none = Uri::from_static("/v1/verify");
        assert_eq!(
            pinned_tenant(ForwardAuthMode::Traefik, &none, Some("other"))
                .unwrap()
                .as_str(),
            "other"
        );
        let e = pinned_tenant(ForwardAuthMode::Nginx, &none, None).unwrap_err();
        assert!(e.contains("missing query parameter tenant"), "{e}");
        // In Envoy mode the query is the original request's: never a tenant.
        let envoy = Uri::from_static("/v1/verify/orders/1?tenant=evil");
        assert!(pinned_tenant(ForwardAuthMode::Envoy, &envoy, None).is_err());
        assert_eq!(
            pinned_tenant(ForwardAuthMode::Envoy, &envoy, Some("acme"))
                .unwrap()
                .as_str(),
            "acme"
        );
        let bad = Uri::from_static("/v1/verify?tenant=..%2F");
        assert!(pinned_tenant(ForwardAuthMode::Nginx, &bad, None).is_err());
    }
}
