//! Audit events from handlers: one place builds an event for a signed-in
//! caller, and one place decides what a failed write means (log it loudly;
//! the action itself has already happened and is not undone).

use axum::http::HeaderMap;
use gatehouse_session::Session;
use gatehouse_store::audit::{Actor, AuditEvent, Outcome};
use sqlx::PgPool;

/// The request id the request-id layer put on the request.
#[must_use]
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Appends `event`; a failure is logged with the action, never returned.
pub async fn record(db: &PgPool, event: &AuditEvent) {
    if let Err(e) = gatehouse_store::audit::record(db, event).await {
        tracing::error!(error = %e, action = event.action, "audit event not recorded");
    }
}

/// Records a successful action by the user of `session`.
pub async fn session_event(
    db: &PgPool,
    session: &Session,
    action: &'static str,
    target: String,
    headers: &HeaderMap,
    details: serde_json::Value,
) {
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let event = AuditEvent {
        tenant_id: Some(session.tenant_id),
        actor: Actor::User(session.user_id),
        action,
        target: Some(target),
        outcome: Outcome::Success,
        ip: None,
        user_agent,
        request_id: request_id(headers),
        details,
    };
    record(db, &event).await;
}
