//! Audit events from handlers: one place builds an event for a signed-in
//! caller, and one place decides what a failed write means (log it loudly;
//! the action itself has already happened and is not undone).

use axum::http::HeaderMap;
use gatehouse_app::admission::Session;
use gatehouse_app::audit::{Actor, AuditEvent, Outcome};
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
    if let Err(e) = gatehouse_app::audit::record(db, event).await {
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

/// Denied admin calls recorded per actor per minute before the rest are only
/// counted.
pub const DENIALS_PER_MINUTE: u32 = 10;

/// Actors remembered before idle ones are dropped.
const DENIAL_ACTORS_BOUND: usize = 10_000;

/// Bounds the audit rows denied calls write: each actor's first
/// [`DENIALS_PER_MINUTE`] denials a minute are recorded one by one; the rest
/// are counted, and the actor's next recorded denial carries how many were
/// left out (`details.suppressed`). A member hammering the admin API thus
/// writes at most ten rows a minute, and the log still says how much he tried.
#[derive(Debug)]
pub struct DenialAudit {
    allowance: governor::DefaultKeyedRateLimiter<uuid::Uuid>,
    suppressed: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, u64>>,
}

impl Default for DenialAudit {
    fn default() -> Self {
        let n = std::num::NonZeroU32::new(DENIALS_PER_MINUTE).unwrap_or(std::num::NonZeroU32::MIN);
        Self {
            allowance: governor::RateLimiter::keyed(governor::Quota::per_minute(n)),
            suppressed: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl DenialAudit {
    /// Whether `actor`'s denial is to be written now; if so, how many of its
    /// denials were left out since the last one written.
    pub fn admit(&self, actor: uuid::Uuid) -> Option<u64> {
        let mut suppressed = self
            .suppressed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.allowance.check_key(&actor).is_ok() {
            return Some(suppressed.remove(&actor).unwrap_or(0));
        }
        metrics::counter!("gatehouse_audit_denials_suppressed_total").increment(1);
        if suppressed.len() >= DENIAL_ACTORS_BOUND && !suppressed.contains_key(&actor) {
            // Counts for actors long gone are the least useful: drop them all
            // rather than grow (the metric above still counts every one).
            suppressed.clear();
            self.allowance.retain_recent();
        }
        *suppressed.entry(actor).or_insert(0) += 1;
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test")]
mod tests {
    use super::*;

    #[test]
    fn an_actors_denials_past_the_allowance_are_counted_into_the_next_row() {
        let denials = DenialAudit::default();
        let member = uuid::Uuid::new_v4();
        let other = uuid::Uuid::new_v4();
        for _ in 0..DENIALS_PER_MINUTE {
            assert_eq!(denials.admit(member), Some(0));
        }
        for _ in 0..490 {
            assert_eq!(denials.admit(member), None);
        }
        assert_eq!(denials.admit(other), Some(0), "others are not affected");
        assert_eq!(denials.suppressed.lock().unwrap()[&member], 490);
    }
}
