//! The admin API's writes to a tenant's authorisation data (roles, grants,
//! assignments, policies) and the reads around them, as application
//! operations. A write is checked (the whole rule set must still compile),
//! applied, versioned, audited and announced (outbox) in one transaction by
//! the store; then it is in force on this instance at once (read-your-writes)
//! and the relay is woken so every other instance learns it within
//! milliseconds. Whoever calls has been authorised already: the context
//! names them.

use std::sync::Arc;

use gatehouse_store::StoreError;
use gatehouse_store::access;
use sqlx::PgPool;
use uuid::Uuid;

pub use gatehouse_store::access::{
    Applied, AssignmentView, Change, ChangeContext, ChangeError, NewPolicy, Permission, PolicyRow,
    RoleView, RulesSnapshot,
};

use crate::directory::Directory;
use crate::outbox::Relay;

/// Authorisation data's admin reads and writes.
#[derive(Debug, Clone)]
pub struct AuthzAdmin {
    db: PgPool,
    directory: Arc<Directory>,
    relay: Arc<Relay>,
}

impl AuthzAdmin {
    /// Operations over `db`, raising versions in `directory` and waking
    /// `relay` after each write.
    #[must_use]
    pub fn new(db: PgPool, directory: Arc<Directory>, relay: Arc<Relay>) -> Self {
        Self {
            db,
            directory,
            relay,
        }
    }

    /// Applies one change for `context` (see the module doc).
    pub async fn apply(
        &self,
        context: &ChangeContext,
        change: &Change,
    ) -> Result<Applied, ChangeError> {
        let applied = access::apply_change(&self.db, context, change).await?;
        self.directory
            .tenant_changed(context.tenant_id, Some(applied.data_version), false);
        self.relay.kick();
        Ok(applied)
    }

    /// The tenant's roles.
    pub async fn roles(&self, tenant_id: Uuid) -> Result<Vec<RoleView>, StoreError> {
        access::list_roles(&self.db, tenant_id).await
    }

    /// The tenant's policies.
    pub async fn policies(&self, tenant_id: Uuid) -> Result<Vec<PolicyRow>, StoreError> {
        access::list_policies(&self.db, tenant_id).await
    }

    /// A user's role assignments.
    pub async fn assignments(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
    ) -> Result<Vec<AssignmentView>, StoreError> {
        access::user_assignments(&self.db, tenant_id, user_id).await
    }

    /// The tenant's whole rule set as stored (for validating a draft).
    pub async fn rules(&self, tenant_id: Uuid) -> Result<RulesSnapshot, StoreError> {
        access::load_rules(&self.db, tenant_id).await
    }
}
