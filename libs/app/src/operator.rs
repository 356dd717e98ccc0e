//! Operator commands on users (`gatehouse user ...`): what an on-call engineer
//! needs before the admin UI exists, and a scriptable path after.

use gatehouse_core::{TenantSlug, Username};
use gatehouse_store::audit::{Actor, AuditEvent, Outcome};
use gatehouse_store::directory;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The tenant or user does not exist, or an argument is malformed.
    #[error("{0}")]
    NotFound(String),
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] gatehouse_store::StoreError),
    /// Redis failed; the database change was made but sessions may remain.
    #[error("sessions could not be ended: {0}")]
    Sessions(#[from] gatehouse_session::SessionError),
}

async fn resolve(
    db: &PgPool,
    tenant: &str,
    username: &str,
) -> Result<(Uuid, Username), OperatorError> {
    let slug = TenantSlug::parse(tenant).map_err(|e| OperatorError::NotFound(e.to_string()))?;
    let username = Username::parse(username).map_err(|e| OperatorError::NotFound(e.to_string()))?;
    let tenant = directory::tenant_by_slug(db, &slug)
        .await?
        .ok_or_else(|| OperatorError::NotFound(format!("no tenant {slug}")))?;
    Ok((tenant.id, username))
}

async fn record(
    db: &PgPool,
    tenant_id: Uuid,
    action: &'static str,
    target: &Username,
    details: serde_json::Value,
) {
    let event = AuditEvent {
        tenant_id: Some(tenant_id),
        actor: Actor::System,
        action,
        target: Some(target.normalized().to_owned()),
        outcome: Outcome::Success,
        ip: None,
        user_agent: None,
        request_id: None,
        details,
    };
    if let Err(e) = gatehouse_store::audit::record(db, &event).await {
        tracing::error!(error = %e, action = event.action, "audit event not recorded");
    }
}

/// Disables (or re-enables) a user. Disabling ends every session of the
/// user; returns how many ended.
pub async fn set_user_enabled(
    db: &PgPool,
    revocations: &crate::revocation::Revocations,
    tenant: &str,
    username: &str,
    enabled: bool,
) -> Result<u64, OperatorError> {
    let (tenant_id, username) = resolve(db, tenant, username).await?;
    let user_id = directory::set_user_status(db, tenant_id, &username, enabled)
        .await?
        .ok_or_else(|| OperatorError::NotFound(format!("no user {username} in tenant {tenant}")))?;
    let ended = if enabled {
        0
    } else {
        revocations
            .end(crate::revocation::Ending::AllOfUser {
                tenant_id,
                user_id,
                keep: None,
            })
            .await?
    };
    let action = if enabled {
        "user.enable"
    } else {
        "user.disable"
    };
    record(
        db,
        tenant_id,
        action,
        &username,
        json!({ "ended_sessions": ended }),
    )
    .await;
    Ok(ended)
}

/// Sets a user's password hash and ends every session of the user.
pub async fn set_user_password(
    db: &PgPool,
    revocations: &crate::revocation::Revocations,
    tenant: &str,
    username: &str,
    new_hash: &str,
) -> Result<u64, OperatorError> {
    let (tenant_id, username) = resolve(db, tenant, username).await?;
    let user_id = directory::set_password(db, tenant_id, &username, new_hash)
        .await?
        .ok_or_else(|| OperatorError::NotFound(format!("no user {username} in tenant {tenant}")))?;
    let ended = revocations
        .end(crate::revocation::Ending::AllOfUser {
            tenant_id,
            user_id,
            keep: None,
        })
        .await?;
    record(
        db,
        tenant_id,
        "user.set_password",
        &username,
        json!({ "ended_sessions": ended }),
    )
    .await;
    Ok(ended)
}
