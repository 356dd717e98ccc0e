//! The admin write path without HTTP, on a real Postgres: each routing admin
//! operation commits its write, its audit row and its outbox event together,
//! or none of them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use gatehouse_app::audit::{Actor, AuditEvent, Outcome};
use gatehouse_app::routing_admin::{NewRollout, RoutingAdmin, WriteError};
use gatehouse_core::{Argon2Cost, PasswordHasher, TenantSlug};
use gatehouse_store::bootstrap::{self, Seed, TenantSeed};
use gatehouse_testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;

fn event(action: &'static str, tenant_id: Uuid) -> AuditEvent {
    AuditEvent {
        tenant_id: Some(tenant_id),
        actor: Actor::User(Uuid::nil()),
        action,
        target: None,
        outcome: Outcome::Success,
        ip: None,
        user_agent: None,
        request_id: None,
        details: serde_json::json!({}),
    }
}

/// Counts of (audit rows with `action`, `routing.changed` outbox rows).
async fn written(pool: &PgPool, action: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM audit_events WHERE action = $1),
                (SELECT count(*) FROM outbox_events WHERE kind = 'routing.changed')",
    )
    .bind(action)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A tenant `acme` and a service `billing` with v1 and v2, available to it.
async fn setup() -> (TestDatabase, RoutingAdmin, Uuid) {
    let db = TestDatabase::new().await;
    let hasher = PasswordHasher::new(Argon2Cost {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap();
    let seed = Seed {
        tenants: vec![TenantSeed {
            slug: TenantSlug::parse("acme").unwrap(),
            display_name: "Acme".into(),
            allowed_return_origins: vec![],
            roles: vec![],
            users: vec![],
            policies: vec![],
        }],
        ..Seed::default()
    };
    bootstrap::apply(&db.pool, &seed, &hasher).await.unwrap();
    let tenant: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = 'acme'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let admin = RoutingAdmin::new(db.pool.clone());
    admin
        .create_service(event("service.create", tenant), "billing", "", "weighted")
        .await
        .unwrap();
    for version in ["v1", "v2"] {
        assert!(
            admin
                .create_version(
                    event("service_version.create", tenant),
                    "billing",
                    version,
                    false
                )
                .await
                .unwrap()
        );
    }
    assert!(
        admin
            .make_available(
                event("service.make_available", tenant),
                tenant,
                "billing",
                None
            )
            .await
            .unwrap()
    );
    (db, admin, tenant)
}

fn rollout<'a>(stable: &'a str, canary: Option<&'a str>) -> NewRollout<'a> {
    NewRollout {
        stable,
        canary,
        canary_buckets: if canary.is_some() { 5000 } else { 0 },
        salt: "r1",
        per_user: false,
        ramp_steps: &[],
        ramp_interval_s: None,
        analysis: None,
    }
}

#[tokio::test]
async fn a_write_commits_with_its_audit_row_and_its_event() {
    let (db, admin, tenant) = setup().await;
    let before = written(&db.pool, "rollout.put").await;
    let view = admin
        .put_rollout(
            event("rollout.put", tenant),
            tenant,
            "billing",
            &rollout("v1", Some("v2")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(view.canary_buckets, 5000);
    let after = written(&db.pool, "rollout.put").await;
    assert_eq!(after.0, before.0 + 1, "one audit row");
    assert!(after.1 > before.1, "the trigger's routing.changed event");
    let target: String =
        sqlx::query_scalar("SELECT target FROM audit_events WHERE action = 'rollout.put'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(target, "billing: v1 -> v2 at 5000 of 10000");
}

#[tokio::test]
async fn a_refused_write_leaves_no_audit_row_and_no_event() {
    let (db, admin, tenant) = setup().await;
    let before = written(&db.pool, "rollout.put").await;
    let refused = admin
        .put_rollout(
            event("rollout.put", tenant),
            tenant,
            "billing",
            &rollout("v9", None),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, WriteError::NoVersion { .. }), "{refused}");
    // A no-op (nothing to delete) is not audited either.
    assert!(
        !admin
            .delete_rollout(event("rollout.delete", tenant), tenant, "billing")
            .await
            .unwrap()
    );
    assert_eq!(written(&db.pool, "rollout.put").await, before);
    assert_eq!(written(&db.pool, "rollout.delete").await.0, 0);
}

#[tokio::test]
async fn a_write_whose_audit_row_fails_is_not_committed() {
    let (db, admin, tenant) = setup().await;
    let before = written(&db.pool, "").await;
    // The audit table refuses an empty action: the rollout must go with it.
    let failed = admin
        .put_rollout(
            event("", tenant),
            tenant,
            "billing",
            &rollout("v2", None),
            None,
        )
        .await;
    assert!(failed.is_err());
    let rollouts: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_rollouts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rollouts, 0, "the write went with its audit row");
    assert_eq!(written(&db.pool, "").await, before, "no event either");
}
