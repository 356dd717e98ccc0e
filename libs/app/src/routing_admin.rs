//! The admin API's routing operations (services, versions, instances, which
//! tenants may use a service, rollouts and subject rules) as application
//! operations: each runs its store write and records its audit event in one
//! transaction, and the table triggers add the `routing.changed` outbox event
//! to the same transaction. A change is never committed without its audit
//! row, and nothing is audited that did not commit (before, the gateway
//! audited after the write had committed). Whoever calls has been
//! authorised already: the event names them.
//!
//! The types the operations take and return are re-exported here, so the
//! gateway names no store type.

use gatehouse_store::StoreError;
use gatehouse_store::audit::{self, AuditEvent};
use gatehouse_store::routing as config;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub use gatehouse_store::routing::{
    AvailabilityView, NewInstance, NewRollout, RolloutView, ServiceView, SubjectMatch,
    SubjectRuleRow, VersionView, Withdrawn, WriteError,
};

/// Routing's admin reads and audited writes over Postgres.
#[derive(Debug, Clone)]
pub struct RoutingAdmin {
    db: PgPool,
}

/// Whether a write changed anything, and so is audited.
fn changed(done: bool, target: String) -> Option<String> {
    done.then_some(target)
}

impl RoutingAdmin {
    /// Operations over `db`.
    #[must_use]
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// A transaction for one audited write.
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.db.begin().await?)
    }

    /// Records `event` against `target` and commits the write with it; with
    /// no target (the write changed nothing) the transaction is dropped, so
    /// nothing commits.
    async fn commit_audited(
        mut tx: Transaction<'static, Postgres>,
        mut event: AuditEvent,
        target: Option<String>,
    ) -> Result<(), StoreError> {
        let Some(target) = target else {
            return Ok(());
        };
        event.target = Some(target);
        audit::record(&mut *tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------ reads

    /// Every service with its versions.
    pub async fn services(&self) -> Result<Vec<ServiceView>, StoreError> {
        config::list_services(&self.db).await
    }

    /// The tenants `service` is available to; `None` for an unknown service.
    pub async fn service_tenants(
        &self,
        service: &str,
    ) -> Result<Option<Vec<AvailabilityView>>, StoreError> {
        config::service_tenants(&self.db, service).await
    }

    /// The services available to a tenant.
    pub async fn tenant_services(&self, tenant_id: Uuid) -> Result<Vec<ServiceView>, StoreError> {
        config::tenant_services(&self.db, tenant_id).await
    }

    /// A service's versions, oldest first.
    pub async fn versions(&self, service: &str) -> Result<Vec<VersionView>, StoreError> {
        config::list_versions(&self.db, service).await
    }

    /// An active instance's heartbeat TTL: `None` when there is no such
    /// active instance, `Some(None)` for a static one.
    pub async fn instance_ttl(
        &self,
        service: &str,
        id: Uuid,
    ) -> Result<Option<Option<i32>>, StoreError> {
        config::instance_ttl(&self.db, service, id).await
    }

    /// A tenant's rollouts.
    pub async fn rollouts(&self, tenant_id: Uuid) -> Result<Vec<RolloutView>, StoreError> {
        config::list_rollouts(&self.db, tenant_id).await
    }

    /// A tenant's subject rules for `service`.
    pub async fn subject_rules(
        &self,
        tenant_id: Uuid,
        service: &str,
    ) -> Result<Vec<SubjectRuleRow>, StoreError> {
        config::list_subject_rules(&self.db, tenant_id, service).await
    }

    // ------------------------------------------------------------ writes

    /// Creates a service (`Conflict` when the name is taken).
    pub async fn create_service(
        &self,
        event: AuditEvent,
        name: &str,
        description: &str,
        strategy: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        config::create_service(&mut tx, name, description, strategy).await?;
        Self::commit_audited(tx, event, Some(name.to_owned())).await
    }

    /// Changes a service's strategy; `false` when there is no such service.
    pub async fn set_strategy(
        &self,
        event: AuditEvent,
        service: &str,
        strategy: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = config::set_strategy(&mut tx, service, strategy).await?;
        let target = changed(done, format!("{service}: {strategy}"));
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Adds a version; `false` when there is no such service.
    pub async fn create_version(
        &self,
        event: AuditEvent,
        service: &str,
        version: &str,
        make_default: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = config::create_version(&mut tx, service, version, make_default).await?;
        let target = changed(done, format!("{service}@{version}"));
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Moves a version to `status`; `false` when there is no such version.
    /// A change its users forbid is `Conflict` with the reason.
    pub async fn set_version_status(
        &self,
        event: AuditEvent,
        service: &str,
        version: &str,
        status: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = config::set_version_status(&mut tx, service, version, status).await?;
        let target = changed(done, format!("{service}@{version}: {status}"));
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Makes a version the default; `false` when there is no such version.
    pub async fn set_default_version(
        &self,
        event: AuditEvent,
        service: &str,
        version: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = config::set_default_version(&mut tx, service, version).await?;
        let target = changed(done, format!("{service}@{version}"));
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Registers (or re-activates) an instance; returns its id.
    pub async fn register_instance(
        &self,
        event: AuditEvent,
        service: &str,
        instance: &NewInstance<'_>,
    ) -> Result<Uuid, WriteError> {
        let mut tx = self.begin().await?;
        let done = config::register_instance(&mut tx, service, instance).await?;
        let target = Some(format!(
            "{service}@{} {}",
            instance.version, instance.address
        ));
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Deregisters an instance; `false` when there was no such active one.
    pub async fn deregister_instance(
        &self,
        event: AuditEvent,
        service: &str,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = config::deregister_instance(&mut tx, service, id).await?;
        let target = changed(done, format!("{service} {id}"));
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Makes `service` available to the tenant; `true` when it was not yet
    /// (only then is anything written or audited).
    pub async fn make_available(
        &self,
        event: AuditEvent,
        tenant_id: Uuid,
        service: &str,
        actor: Option<Uuid>,
    ) -> Result<bool, WriteError> {
        let mut tx = self.begin().await?;
        let done = config::make_available(&mut tx, tenant_id, service, actor).await?;
        let target = changed(done, service.to_owned());
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Withdraws `service` from the tenant with its rollout and subject
    /// rules; `None` when it was not available.
    pub async fn withdraw(
        &self,
        event: AuditEvent,
        tenant_id: Uuid,
        service: &str,
    ) -> Result<Option<Withdrawn>, WriteError> {
        let mut tx = self.begin().await?;
        let done = config::withdraw(&mut tx, tenant_id, service).await?;
        let target = done.map(|w| {
            format!(
                "{service}: {} rollout(s), {} subject rule(s) removed",
                w.rollouts, w.subject_rules
            )
        });
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Creates or replaces the tenant's rollout of `service`.
    pub async fn put_rollout(
        &self,
        event: AuditEvent,
        tenant_id: Uuid,
        service: &str,
        rollout: &NewRollout<'_>,
        actor: Option<Uuid>,
    ) -> Result<RolloutView, WriteError> {
        let mut tx = self.begin().await?;
        let done = config::put_rollout(&mut tx, tenant_id, service, rollout, actor).await?;
        let target = Some(format!("{service}: {}", rule_text(&done)));
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Every bucket of the tenant's rollout back on stable; `None` when it
    /// has no rollout of `service`.
    pub async fn roll_back(
        &self,
        event: AuditEvent,
        tenant_id: Uuid,
        service: &str,
        actor: Option<Uuid>,
    ) -> Result<Option<RolloutView>, StoreError> {
        let mut tx = self.begin().await?;
        let done = config::roll_back(&mut tx, tenant_id, service, actor).await?;
        let target = done.as_ref().map(|_| service.to_owned());
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Removes the tenant's rollout; `false` when it had none.
    pub async fn delete_rollout(
        &self,
        event: AuditEvent,
        tenant_id: Uuid,
        service: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = config::delete_rollout(&mut tx, tenant_id, service).await?;
        let target = changed(done, service.to_owned());
        Self::commit_audited(tx, event, target).await?;
        Ok(done)
    }

    /// Adds a subject rule sending matching users of the tenant to `version`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the rule's fields, named at the call"
    )]
    pub async fn add_subject_rule(
        &self,
        event: AuditEvent,
        tenant_id: Uuid,
        service: &str,
        version: &str,
        matches: &SubjectMatch<'_>,
        position: i32,
        actor: Option<Uuid>,
    ) -> Result<SubjectRuleRow, WriteError> {
        let mut tx = self.begin().await?;
        let rule = config::add_subject_rule(
            &mut tx, tenant_id, service, version, matches, position, actor,
        )
        .await?;
        let what = match (&rule.role, &rule.attribute) {
            (Some(name), _) => format!("role {name}"),
            (None, Some(attribute)) => {
                format!("{attribute} = {}", rule.equals.clone().unwrap_or_default())
            }
            (None, None) => String::new(),
        };
        let target = format!("{service}: {what} -> {}", rule.version);
        Self::commit_audited(tx, event, Some(target)).await?;
        Ok(rule)
    }

    /// Removes one of the tenant's subject rules; `false` when there was none.
    pub async fn delete_subject_rule(
        &self,
        event: AuditEvent,
        tenant_id: Uuid,
        service: &str,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = config::delete_subject_rule(&mut tx, tenant_id, service, id).await?;
        Self::commit_audited(tx, event, changed(done, format!("{service} {id}"))).await?;
        Ok(done)
    }
}

/// A rollout in words, for its audit row.
#[must_use]
pub fn rule_text(view: &RolloutView) -> String {
    match &view.canary {
        Some(canary) => format!(
            "{} -> {canary} at {} of 10000",
            view.stable, view.canary_buckets
        ),
        None => format!("pinned to {}", view.stable),
    }
}
