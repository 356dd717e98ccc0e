//! The sign-in handshake for apps on their own origin (as oauth2-proxy and
//! Pomerium do it): the user's session cookie never leaves the console's
//! origin, and each app's origin gets a session of its own.
//!
//! 1. A signed-out browser asks the app's origin for a page and is sent to
//!    `GET {issuer}/v1/proxy/handshake?to=<the app URL>` (the console's origin).
//! 2. There, a browser without a session goes through its tenant's sign-in
//!    and comes back; with one, a one-time code (60 s, bound to the session,
//!    the app's host and the path) is minted and the browser is sent to
//!    `<app origin>/.gatehouse/callback?code=…`.
//! 3. The app's origin redeems the code once and sets its own cookie, scoped
//!    to that host (see [`gatehouse_app::app_sessions`]), then sends the
//!    browser back to the page it first asked for.
//!
//! `to` must name a host the proxy serves, over the scheme we are served
//! on, so the handshake cannot be turned into an open redirect or hand a
//! code to another site.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Proxy;
use crate::error::ApiError;
use crate::extract::session::authenticate;
use crate::state::AppState;

/// The app origin's landing path, which no app's own path can take.
pub const CALLBACK_PATH: &str = "/.gatehouse/callback";

/// Every path under this prefix on an app's origin is ours (404 but the
/// callback), never the app's.
pub const RESERVED_PREFIX: &str = "/.gatehouse/";

/// `ANY /.gatehouse/{*rest}` on an app's origin, but the callback.
pub async fn reserved() -> ApiError {
    ApiError::not_found("paths under /.gatehouse/ belong to the gateway")
}

/// The console's handshake path.
pub const START_PATH: &str = crate::auth::return_to::HANDSHAKE_PATH;

/// Where a signed-out browser on an app's origin is sent: the console's
/// handshake, asked to return to `to` (an absolute URL on the app's origin).
#[must_use]
pub fn start_url(issuer: &url::Url, to: &str) -> String {
    format!(
        "{}{}",
        issuer.origin().ascii_serialization(),
        start_path(to)
    )
}

/// The handshake's path and query on the console's origin.
fn start_path(to: &str) -> String {
    format!(
        "{START_PATH}?to={}",
        url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
    )
}

/// `?to=` of the handshake.
#[derive(Debug, Deserialize)]
pub struct StartQuery {
    to: String,
}

/// `?code=` of the callback.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: String,
}

/// The app a handshake is for: its origin, its host (`name[:port]`) and
/// the path to return to.
struct AppTarget {
    origin: String,
    host: String,
    return_path: String,
}

fn app_target(state: &AppState, to: &str) -> Result<AppTarget, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("to: {why}"));
    if to.len() > 2048 {
        return Err(bad("longer than 2048 characters"));
    }
    let url = url::Url::parse(to).map_err(|_| bad("not an absolute URL"))?;
    let scheme = if state.auth.cookies.secure {
        "https"
    } else {
        "http"
    };
    if url.scheme() != scheme {
        return Err(bad(&format!("apps are served over {scheme} here")));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(bad("must not carry credentials or a fragment"));
    }
    let host = crate::auth::return_to::url_host(&url).ok_or_else(|| bad("has no host"))?;
    if state.http.proxy.service_for_host(&host).is_none() {
        return Err(bad("names no app this gateway serves"));
    }
    // `//host/...` would be a protocol-relative redirect to another site.
    let path = if url.path().starts_with("//") {
        "/"
    } else {
        url.path()
    };
    let return_path = match url.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    Ok(AppTarget {
        origin: url.origin().ascii_serialization(),
        host,
        return_path,
    })
}

/// `GET /v1/proxy/handshake?to=…` on the console's origin.
pub async fn start(
    State(state): State<AppState>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.http.proxy.hosts.is_empty() {
        return Err(ApiError::not_found(
            "no app is served on its own origin here",
        ));
    }
    let app = app_target(&state, &query.to)?;
    let Some(signed_in) = authenticate(&state.gate, &headers).await? else {
        let tenant = state
            .http
            .proxy
            .login_tenant
            .as_deref()
            .or(state.http.forward_auth_tenant.as_deref())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "sign in first: no sign-in tenant is configured for apps (GATEHOUSE_PROXY__LOGIN_TENANT)",
                )
            })?;
        let back = start_path(&query.to);
        let location = format!(
            "/t/{tenant}/login?return_to={}",
            url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
        );
        return Ok(see_other(&location, None));
    };
    let Some(code) = state
        .app_sessions
        .begin(&signed_in.session, &app.host, &app.return_path)
        .await?
    else {
        let window = gatehouse_app::app_sessions::ISSUE_WINDOW.as_secs();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!(
                "this session started {} app sign-ins within {window} s; wait and open the app again",
                gatehouse_app::app_sessions::ISSUES_PER_WINDOW
            ),
        )
        .with_retry_after(window));
    };
    let location = format!("{}{CALLBACK_PATH}?code={code}", app.origin);
    Ok(see_other(&location, None))
}

/// `GET /.gatehouse/callback?code=…` on an app's origin: redeems the code
/// for this host's own session cookie.
pub async fn callback(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    match complete(&proxy.state, &parts.uri, &parts.headers).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn complete(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = Query::<CallbackQuery>::try_from_uri(uri)
        .map_err(|_| ApiError::bad_request("code: missing"))?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| ApiError::bad_request("Host: missing"))?;
    let completed = state
        .app_sessions
        .complete(&query.code, &host)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(
                "code: this sign-in link is invalid, used or expired; open the app again",
            )
        })?;
    let cookie = state.auth.cookies.app_session(&completed.credential);
    Ok(see_other(&completed.return_path, Some(cookie)))
}

fn see_other(location: &str, cookie: Option<HeaderValue>) -> Response {
    let Ok(location) = HeaderValue::from_str(location) else {
        return ApiError::bad_request("to: cannot be sent back as a header").into_response();
    };
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
    )
        .into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
