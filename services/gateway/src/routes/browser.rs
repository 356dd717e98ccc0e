//! The server-rendered sign-in and account pages (`/t/{tenant}/...`). They work
//! without JavaScript; every form carries a CSRF token and state-changing
//! posts must come from our own origin.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_app::admission::SessionId;
use gatehouse_app::directory::Tenant;
use serde::Deserialize;
use serde_json::json;

use crate::auth::client::ClientInfo;
use crate::auth::{cookies, csrf, return_to};
use crate::error::ApiError;
use crate::extract::session::{Authenticated, authenticate};
use crate::extract::tenant::ActiveTenant;
use crate::pages::{
    AccountPage, LoginPage, MessagePage, SessionRow, device_label, format_time, html,
};
use crate::state::AppState;
use gatehouse_app::login::{Credentials, LoggedIn, LoginError};
use gatehouse_app::revocation::Ending;

const LOGIN_PURPOSE: &str = "login";
const SESSION_PURPOSE: &str = "session";

fn login_path(tenant: &Tenant) -> String {
    format!("/t/{}/login", tenant.slug)
}

fn account_path(tenant: &Tenant) -> String {
    format!("/t/{}/account", tenant.slug)
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Whether the client asked for HTML (browsers send `text/html` in `Accept`).
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// "45 seconds", "3 minutes": how long to wait, for people.
fn human_wait(seconds: u64) -> String {
    match seconds {
        1 => "1 second".to_owned(),
        s if s < 90 => format!("{s} seconds"),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

/// Query of the login page.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Where to go after sign-in.
    #[serde(default)]
    pub return_to: String,
    /// Set after sign-out to show a notice.
    #[serde(default)]
    pub signed_out: Option<String>,
}

/// Renders the login form with a fresh nonce cookie and matching CSRF token.
fn login_form(
    state: &AppState,
    tenant: &Tenant,
    status: StatusCode,
    return_to: String,
    username: String,
    error: Option<String>,
    notice: Option<String>,
) -> Response {
    let nonce = csrf::new_nonce();
    let page_return_to = return_to.clone();
    let page = LoginPage {
        tenant_name: tenant.display_name.clone(),
        tenant_slug: tenant.slug.clone(),
        csrf: state
            .auth
            .csrf
            .token(LOGIN_PURPOSE, &format!("{}:{nonce}", tenant.id)),
        return_to,
        username,
        error,
        notice,
    };
    let mut response = html(status, &page);
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, state.auth.cookies.login_nonce(&nonce));
    // Chromium applies form-action to the redirect after a form post, so the
    // tenant's allowed return origins must be listed or the 303 is blocked.
    let mut csp = String::from(
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    let app = return_to::handshake_origin(&page_return_to, |host| {
        state.http.proxy.service_for_host(host).is_some()
    });
    for origin in tenant.allowed_return_origins.iter().chain(app.iter()) {
        if origin
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'\''))
        {
            csp.push(' ');
            csp.push_str(origin);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// `GET /t/{tenant}/login`
pub async fn login_page(
    State(state): State<AppState>,
    ActiveTenant(tenant): ActiveTenant,
    Query(query): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let notice = query
        .signed_out
        .map(|_| "You have been signed out.".to_owned());
    Ok(login_form(
        &state,
        &tenant,
        StatusCode::OK,
        query.return_to,
        String::new(),
        None,
        notice,
    ))
}

/// The login form as posted.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// Username as typed.
    #[serde(default)]
    pub username: String,
    /// Password as typed.
    #[serde(default)]
    pub password: String,
    /// CSRF token from the form.
    #[serde(default)]
    pub csrf: String,
    /// Where to go after sign-in.
    #[serde(default)]
    pub return_to: String,
}

fn forbidden_page(message: &str, retry: &str) -> Response {
    html(
        StatusCode::FORBIDDEN,
        &MessagePage {
            title: "Request refused".into(),
            message: message.into(),
            link: Some(retry.to_owned()),
            link_text: "Try again".into(),
        },
    )
}

fn unavailable_page(retry: &str) -> Response {
    let mut response = html(
        StatusCode::SERVICE_UNAVAILABLE,
        &MessagePage {
            title: "Sign-in is temporarily unavailable".into(),
            message: "Please try again in a moment.".into(),
            link: Some(retry.to_owned()),
            link_text: "Try again".into(),
        },
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    response
}

/// `POST /t/{tenant}/login`
pub async fn login_submit(
    State(state): State<AppState>,
    ActiveTenant(tenant): ActiveTenant,
    client: ClientInfo,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let auth = &state.auth;
    let origins = csrf::own_origins(&headers, &auth.issuer, auth.cookies.secure);
    let nonce = cookies::read(&headers, &auth.cookies.nonce_name).unwrap_or_default();
    let csrf_ok = !nonce.is_empty()
        && auth
            .csrf
            .verify(LOGIN_PURPOSE, &format!("{}:{nonce}", tenant.id), &form.csrf);
    if !csrf::same_origin(&headers, &origins) || !csrf_ok {
        metrics::counter!("gatehouse_logins_total", "result" => "csrf_rejected").increment(1);
        return Ok(forbidden_page(
            "This sign-in form expired or did not come from this site. Please sign in again.",
            &login_path(&tenant),
        ));
    }
    let previous = authenticate(&state.gate, &headers).await.ok().flatten();
    let device_proof = cookies::read(&headers, &auth.cookies.device_name);
    let result = auth
        .login
        .login(Credentials {
            tenant: &tenant,
            username: &form.username,
            password: form.password,
            client: &client.origin(),
            request_id: crate::audit::request_id(&headers),
            device_proof: device_proof.as_deref(),
        })
        .await;
    match result {
        Ok(LoggedIn {
            token,
            device_proof,
            ..
        }) => {
            // The browser's previous session (if any) is ended, not reused.
            if let Some(old) = previous {
                let _ = state
                    .admission
                    .end(Ending::One {
                        tenant_id: old.session.tenant_id,
                        user_id: old.session.user_id,
                        id: &old.session.id,
                    })
                    .await;
            }
            let target = return_to::resolve(&form.return_to, &tenant.allowed_return_origins)
                .unwrap_or_else(|| account_path(&tenant));
            let mut response = redirect(&target);
            let h = response.headers_mut();
            h.append(header::SET_COOKIE, auth.cookies.session(token.expose()));
            h.append(header::SET_COOKIE, auth.cookies.clear_login_nonce());
            h.append(header::SET_COOKIE, auth.cookies.device(&device_proof));
            Ok(response)
        }
        Err(LoginError::InvalidCredentials) => Ok(login_form(
            &state,
            &tenant,
            StatusCode::UNAUTHORIZED,
            form.return_to,
            form.username,
            Some("Incorrect username or password.".into()),
            None,
        )),
        Err(LoginError::Throttled { retry_after, .. }) => {
            let seconds = gatehouse_app::login::retry_after_secs(retry_after);
            // A person gets the form back with the wait spelled out; a script
            // posting the form (no text/html in Accept) gets problem+json.
            if !accepts_html(&headers) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    format!("too many sign-in attempts; retry after {seconds} s"),
                )
                .with_retry_after(seconds));
            }
            let mut response = login_form(
                &state,
                &tenant,
                StatusCode::TOO_MANY_REQUESTS,
                form.return_to,
                form.username,
                Some(format!(
                    "Too many sign-in attempts. Try again in {}.",
                    human_wait(seconds)
                )),
                None,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            Ok(response)
        }
        Err(LoginError::Busy | LoginError::Unavailable(_)) => {
            Ok(unavailable_page(&login_path(&tenant)))
        }
        Err(LoginError::Internal(reason)) => Err(ApiError::internal(&reason)),
    }
}

/// The signed-in session for this tenant's pages, or a redirect to sign in.
async fn page_session(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
) -> Result<Result<Authenticated, Response>, ApiError> {
    let to_login = || {
        let back = account_path(tenant);
        redirect(&format!("{}?return_to={}", login_path(tenant), back))
    };
    match authenticate(&state.gate, headers).await {
        Ok(Some(a)) if a.session.tenant_id == tenant.id => Ok(Ok(a)),
        Ok(_) => Ok(Err(to_login())),
        Err(_) => Ok(Err(unavailable_page(&account_path(tenant)))),
    }
}

/// Query of the account page.
#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    /// Set after ending a session to show a notice.
    #[serde(default)]
    pub ended: Option<String>,
}

/// `GET /t/{tenant}/account`
pub async fn account_page(
    State(state): State<AppState>,
    ActiveTenant(tenant): ActiveTenant,
    Query(query): Query<AccountQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let me = match page_session(&state, &tenant, &headers).await? {
        Ok(me) => me,
        Err(response) => return Ok(response),
    };
    let roles = state
        .authz
        .role_names(
            tenant.id,
            me.session.user_id,
            state.auth.clock.unix_seconds(),
        )
        .await?
        .effective;
    let sessions = state
        .auth
        .sessions
        .list_for_user(tenant.id, me.session.user_id)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            current: s.id == me.session.id,
            id: s.id.to_string(),
            device: device_label(&s.user_agent),
            ip: s.ip,
            created: format_time(s.created_at),
            last_seen: format_time(s.last_seen_at),
        })
        .collect();
    let page = AccountPage {
        tenant_name: tenant.display_name.clone(),
        tenant_slug: tenant.slug.clone(),
        username: me.session.username.clone(),
        roles,
        sessions,
        csrf: state
            .auth
            .csrf
            .token(SESSION_PURPOSE, me.session.id.as_str()),
        notice: query
            .ended
            .map(|_| "The session was signed out.".to_owned()),
    };
    Ok(html(StatusCode::OK, &page))
}

/// A form that only carries a CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// CSRF token bound to the session.
    #[serde(default)]
    pub csrf: String,
}

/// The caller of a signed-in form post: session valid for the tenant,
/// origin and session-bound CSRF token checked. `Ok(Err(page))` is what to
/// show instead (sign-in redirect, 403 form expired, 503).
async fn signed_in_form(
    state: &AppState,
    tenant: std::sync::Arc<Tenant>,
    headers: &HeaderMap,
    form: &CsrfForm,
) -> Result<Result<(std::sync::Arc<Tenant>, Authenticated), Response>, ApiError> {
    let me = match page_session(state, &tenant, headers).await? {
        Ok(me) => me,
        Err(response) => return Ok(Err(response)),
    };
    let origins = csrf::own_origins(headers, &state.auth.issuer, state.auth.cookies.secure);
    let token_ok = state
        .auth
        .csrf
        .verify(SESSION_PURPOSE, me.session.id.as_str(), &form.csrf);
    if !csrf::same_origin(headers, &origins) || !token_ok {
        return Ok(Err(forbidden_page(
            "This form expired. Please try again.",
            &account_path(&tenant),
        )));
    }
    Ok(Ok((tenant, me)))
}

fn signed_out(state: &AppState, tenant: &Tenant) -> Response {
    let mut response = redirect(&format!("{}?signed_out=1", login_path(tenant)));
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.auth.cookies.clear_session());
    response
}

/// `POST /t/{tenant}/logout`
pub async fn logout_submit(
    State(state): State<AppState>,
    ActiveTenant(tenant): ActiveTenant,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    let (tenant, me) = match signed_in_form(&state, tenant, &headers, &form).await? {
        Ok(caller) => caller,
        Err(response) => return Ok(response),
    };
    state
        .admission
        .end(Ending::One {
            tenant_id: tenant.id,
            user_id: me.session.user_id,
            id: &me.session.id,
        })
        .await?;
    crate::audit::session_event(
        &state.db,
        &me.session,
        "logout",
        me.session.id.to_string(),
        &headers,
        json!({}),
    )
    .await;
    Ok(signed_out(&state, &tenant))
}

/// `POST /t/{tenant}/account/sessions/{id}/end`: "sign out this one".
pub async fn account_session_end(
    State(state): State<AppState>,
    ActiveTenant(tenant): ActiveTenant,
    Path((_, session_id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    let (tenant, me) = match signed_in_form(&state, tenant, &headers, &form).await? {
        Ok(caller) => caller,
        Err(response) => return Ok(response),
    };
    let Some(id) = SessionId::parse(&session_id) else {
        return Err(ApiError::not_found("no such session"));
    };
    let ended = state
        .admission
        .end(Ending::One {
            tenant_id: tenant.id,
            user_id: me.session.user_id,
            id: &id,
        })
        .await?;
    if ended == 0 {
        return Err(ApiError::not_found("no such session"));
    }
    crate::audit::session_event(
        &state.db,
        &me.session,
        "session.revoke",
        id.to_string(),
        &headers,
        json!({}),
    )
    .await;
    if id == me.session.id {
        return Ok(signed_out(&state, &tenant));
    }
    Ok(redirect(&format!("{}?ended=1", account_path(&tenant))))
}

/// `POST /t/{tenant}/account/sessions/end-all`: "sign out everywhere".
pub async fn account_sessions_end_all(
    State(state): State<AppState>,
    ActiveTenant(tenant): ActiveTenant,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    let (tenant, me) = match signed_in_form(&state, tenant, &headers, &form).await? {
        Ok(caller) => caller,
        Err(response) => return Ok(response),
    };
    let ended = state
        .admission
        .end(Ending::AllOfUser {
            tenant_id: tenant.id,
            user_id: me.session.user_id,
            keep: None,
        })
        .await?;
    crate::audit::session_event(
        &state.db,
        &me.session,
        "logout_all",
        me.session.username.clone(),
        &headers,
        json!({ "ended": ended }),
    )
    .await;
    Ok(signed_out(&state, &tenant))
}
