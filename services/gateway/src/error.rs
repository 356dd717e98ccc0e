//! The one error type handlers return, rendered as RFC 9457 problem+json.
//!
//! 4xx bodies say precisely what was wrong with the request; 5xx bodies say only
//! that something failed and give the request id, while the cause goes to the
//! log. We render the document ourselves (a dozen lines) because the crates we
//! looked at model `type` as an `http::Uri`, which cannot hold the `urn:` type
//! identifiers we publish.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_core::ErrorKind;
use serde::Serialize;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error on its way to becoming a problem+json response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    /// Stable, machine-readable problem kind; becomes `urn:gatehouse:problem:<slug>`.
    slug: &'static str,
    detail: String,
    /// Seconds for `Retry-After` on 429/503.
    retry_after: Option<u64>,
    /// Extra members (RFC 9457 extensions), e.g. which dependency failed.
    extensions: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    problem_type: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extensions: Option<&'a serde_json::Value>,
}

impl ApiError {
    /// A problem with an explicit status, slug and detail.
    #[must_use]
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            retry_after: None,
            extensions: None,
        }
    }

    /// 400: the request is malformed; `detail` says how.
    #[must_use]
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 404: nothing here (or nothing the caller may know about).
    #[must_use]
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 503: a dependency is unavailable; clients may retry after `retry_after` s.
    #[must_use]
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            .with_retry_after(retry_after)
    }

    /// 500: a bug or unexpected state. The cause is logged, never sent.
    #[must_use]
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; quote the X-Request-Id header when reporting it",
        )
    }

    /// Adds `Retry-After`.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds extension members to the body.
    #[must_use]
    pub fn with_extensions(mut self, extensions: serde_json::Value) -> Self {
        self.extensions = Some(extensions);
        self
    }

    /// The HTTP status this error renders with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Maps a library error's kind to a problem; `detail` must be safe to show.
    #[must_use]
    pub fn from_kind(kind: ErrorKind, detail: impl Into<String>) -> Self {
        match kind {
            ErrorKind::Invalid => Self::bad_request(detail),
            ErrorKind::NotFound => Self::not_found(detail),
            ErrorKind::Conflict => Self::new(StatusCode::CONFLICT, "conflict", detail),
            ErrorKind::Unauthenticated => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
            }
            ErrorKind::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", detail),
            ErrorKind::Throttled => Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", detail),
            ErrorKind::Unavailable => Self::unavailable(detail, 1),
            ErrorKind::Internal => {
                let detail = detail.into();
                Self::internal(&detail)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            problem_type: format!("urn:gatehouse:problem:{}", self.slug),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            extensions: self.extensions.as_ref(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<gatehouse_app::StoreError> for ApiError {
    fn from(e: gatehouse_app::StoreError) -> Self {
        match e.kind() {
            ErrorKind::Unavailable => Self::unavailable("the database is unavailable", 1),
            ErrorKind::Internal => Self::internal(&e),
            kind => Self::from_kind(kind, e.to_string()),
        }
    }
}

impl From<gatehouse_app::SessionError> for ApiError {
    fn from(e: gatehouse_app::SessionError) -> Self {
        match e.kind() {
            ErrorKind::Unavailable => {
                tracing::warn!(error = %e, "session store call failed");
                Self::unavailable("the session store is unavailable", 1)
            }
            _ => Self::internal(&e),
        }
    }
}

impl From<gatehouse_app::admission::AdmissionError> for ApiError {
    fn from(e: gatehouse_app::admission::AdmissionError) -> Self {
        match e {
            gatehouse_app::admission::AdmissionError::Sessions(e) => e.into(),
            gatehouse_app::admission::AdmissionError::Store(e) => e.into(),
        }
    }
}

impl From<gatehouse_app::authz::AuthzError> for ApiError {
    fn from(e: gatehouse_app::authz::AuthzError) -> Self {
        use gatehouse_app::authz::AuthzError;
        match e {
            AuthzError::Store(e) => e.into(),
            AuthzError::CallerGone => Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the signed-in user no longer exists",
            ),
            AuthzError::NoSuchUser(name) => {
                Self::not_found(format!("no user {name:?} in this tenant"))
            }
            other @ (AuthzError::Uncompilable(_) | AuthzError::Task(_)) => Self::internal(&other),
        }
    }
}

impl From<gatehouse_app::tokens::AccessTokenError> for ApiError {
    fn from(e: gatehouse_app::tokens::AccessTokenError) -> Self {
        match e {
            gatehouse_app::tokens::AccessTokenError::Authz(e) => e.into(),
            gatehouse_app::tokens::AccessTokenError::Issue(e) => Self::internal(&e),
        }
    }
}

impl From<gatehouse_app::clients::ClientAuthError> for ApiError {
    fn from(e: gatehouse_app::clients::ClientAuthError) -> Self {
        use gatehouse_app::clients::ClientAuthError;
        match e {
            ClientAuthError::Invalid => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid-client",
                "invalid client credentials",
            ),
            ClientAuthError::Throttled(seconds) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("too many client authentication attempts; retry after {seconds} s"),
            )
            .with_retry_after(seconds),
            ClientAuthError::Busy => {
                Self::unavailable("client authentication is busy; retry shortly", 1)
            }
            ClientAuthError::Store(e) => e.into(),
        }
    }
}

impl From<gatehouse_app::RedisError> for ApiError {
    fn from(e: gatehouse_app::RedisError) -> Self {
        tracing::warn!(error = %e, "redis call failed");
        Self::unavailable("the session store is unavailable", 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn renders_rfc9457_members_and_content_type() {
        let response = ApiError::bad_request("field `tenant` is missing").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = body_of(response).await;
        assert_eq!(body["type"], "urn:gatehouse:problem:bad-request");
        assert_eq!(body["title"], "Bad Request");
        assert_eq!(body["status"], 400);
        assert_eq!(body["detail"], "field `tenant` is missing");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let response = ApiError::internal(&"password=hunter2 leaked in a panic").into_response();
        let body = body_of(response).await;
        assert_eq!(body["status"], 500);
        assert!(!body.to_string().contains("hunter2"));
    }

    #[tokio::test]
    async fn unavailable_sets_retry_after_and_extensions() {
        let response = ApiError::unavailable("not ready", 2)
            .with_extensions(serde_json::json!({"failing": ["redis"]}))
            .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = body_of(response).await;
        assert_eq!(body["failing"][0], "redis");
    }
}
