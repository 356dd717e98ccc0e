//! Templates for the server-rendered pages (askama, compiled in; HTML-escaped).

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The sign-in form.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// Tenant display name.
    pub tenant_name: String,
    /// Tenant slug for the form action.
    pub tenant_slug: String,
    /// CSRF token bound to the nonce cookie.
    pub csrf: String,
    /// Where to go after sign-in (validated again on submit).
    pub return_to: String,
    /// Username to pre-fill after a failure.
    pub username: String,
    /// Failure message.
    pub error: Option<String>,
    /// Informational message (signed out, ...).
    pub notice: Option<String>,
}

/// One row of the sessions table.
pub struct SessionRow {
    /// Public session id.
    pub id: String,
    /// Short device description from the user agent.
    pub device: String,
    /// Client IP at sign-in.
    pub ip: String,
    /// Sign-in time.
    pub created: String,
    /// Last use.
    pub last_seen: String,
    /// Whether this is the session viewing the page.
    pub current: bool,
}

/// The account page.
#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    /// Tenant display name.
    pub tenant_name: String,
    /// Tenant slug for form actions.
    pub tenant_slug: String,
    /// Signed-in username.
    pub username: String,
    /// Active role names.
    pub roles: Vec<String>,
    /// Live sessions, newest first.
    pub sessions: Vec<SessionRow>,
    /// CSRF token bound to the session.
    pub csrf: String,
    /// Informational message.
    pub notice: Option<String>,
}

/// A simple message page (errors a browser user can act on).
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    /// Heading.
    pub title: String,
    /// Explanation.
    pub message: String,
    /// Optional link to continue.
    pub link: Option<String>,
    /// Its text.
    pub link_text: String,
}

/// Renders a template as an HTML response with `status`.
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => {
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        Err(e) => crate::error::ApiError::internal(&e).into_response(),
    }
}

/// `GET /static/gatehouse.css`: the pages' only stylesheet (CSP allows 'self').
pub async fn stylesheet() -> Response {
    let mut response = include_str!("../../../web/static/gatehouse.css").into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// A short device label from a user agent ("Firefox on Linux").
#[must_use]
pub fn device_label(user_agent: &str) -> String {
    if user_agent.is_empty() {
        return "Unknown device".to_owned();
    }
    let browser = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| user_agent.contains(needle))
    .map(|(_, name)| *name);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| user_agent.contains(needle))
    .map(|(_, name)| *name);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => o.to_owned(),
        (None, None) => user_agent.chars().take(60).collect(),
    }
}

/// `2026-03-01 09:00 UTC` for a unix time.
#[must_use]
pub fn format_time(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_labels_are_short_and_readable() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(device_label(firefox), "Firefox on Linux");
        assert_eq!(device_label(""), "Unknown device");
        assert_eq!(device_label("curl/8.5.0"), "curl");
    }

    #[test]
    fn templates_escape_user_controlled_text() {
        let page = LoginPage {
            tenant_name: "Acme".into(),
            tenant_slug: "acme".into(),
            csrf: "t".into(),
            return_to: "\"><script>alert(1)</script>".into(),
            username: "<b>".into(),
            error: None,
            notice: None,
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<b>"));
    }
}
