//! The audit log: append-only rows in `audit_events`.

use serde_json::Value;
use uuid::Uuid;

use crate::StoreError;

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in (or signing-in) user.
    User(Uuid),
    /// Nobody identified yet (failed login of an unknown user).
    Anonymous,
    /// Gatehouse itself or an operator's CLI.
    System,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Tried and failed.
    Failure,
    /// Refused by policy.
    Denied,
}

/// One security-relevant event.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Tenant concerned, if any.
    pub tenant_id: Option<Uuid>,
    /// Who.
    pub actor: Actor,
    /// What, as `area.verb` (`login`, `logout`, `session.revoke`).
    pub action: &'static str,
    /// On what (a username, a session id).
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Request id, to join with logs.
    pub request_id: Option<String>,
    /// Anything else (never secrets).
    pub details: Value,
}

/// Appends an event, on a pool or inside the caller's transaction (so a
/// change and its audit row commit together).
pub async fn record<'e, E>(pool: E, event: &AuditEvent) -> Result<(), StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let (actor_kind, actor_id) = match event.actor {
        Actor::User(id) => ("user", Some(id)),
        Actor::Anonymous => ("anonymous", None),
        Actor::System => ("system", None),
    };
    let outcome = match event.outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Denied => "denied",
    };
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor_id, actor_kind, action, target, outcome, ip,
                                   user_agent, request_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7::inet, $8, $9, $10)",
    )
    .bind(event.tenant_id)
    .bind(actor_id)
    .bind(actor_kind)
    .bind(event.action)
    .bind(&event.target)
    .bind(outcome)
    .bind(
        event
            .ip
            .as_deref()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
    )
    .bind(&event.user_agent)
    .bind(&event.request_id)
    .bind(&event.details)
    .execute(pool)
    .await?;
    Ok(())
}
