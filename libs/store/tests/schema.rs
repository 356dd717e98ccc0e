//! The schema's own guarantees, tested against a real Postgres: no writer
//! (API, CLI or psql) can store what the engine would have to defend against.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use gatehouse_core::{Argon2Cost, PasswordHasher, TenantSlug, Username};
use gatehouse_store::bootstrap::{self, RoleSeed, Seed, TenantSeed, UserSeed};
use gatehouse_testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;

fn cheap_hasher() -> PasswordHasher {
    PasswordHasher::new(Argon2Cost {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap()
}

fn tenant(slug: &str, roles: Vec<RoleSeed>, users: Vec<UserSeed>) -> TenantSeed {
    TenantSeed {
        slug: TenantSlug::parse(slug).unwrap(),
        display_name: slug.to_uppercase(),
        allowed_return_origins: vec![],
        roles,
        users,
        policies: vec![],
    }
}

fn role(name: &str, parent: Option<&str>) -> RoleSeed {
    RoleSeed {
        name: name.into(),
        description: String::new(),
        parent: parent.map(Into::into),
        grants: vec![("orders:*".into(), "read".into())],
    }
}

async fn role_id(pool: &PgPool, tenant: &str, name: &str) -> Uuid {
    sqlx::query_scalar(
        "SELECT r.id FROM roles r JOIN tenants t ON t.id = r.tenant_id WHERE t.slug = $1 AND r.name = $2",
    )
    .bind(tenant)
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn two_tenants(db: &TestDatabase) {
    let seed = Seed {
        tenants: vec![
            tenant(
                "acme",
                vec![role("a", None), role("b", Some("a")), role("c", Some("b"))],
                vec![],
            ),
            tenant("globex", vec![role("x", None)], vec![]),
        ],
        ..Seed::default()
    };
    bootstrap::apply(&db.pool, &seed, &cheap_hasher())
        .await
        .unwrap();
}

#[tokio::test]
async fn role_hierarchy_cycles_are_rejected() {
    let db = TestDatabase::new().await;
    two_tenants(&db).await;
    let a = role_id(&db.pool, "acme", "a").await;
    let c = role_id(&db.pool, "acme", "c").await;
    let err = sqlx::query("UPDATE roles SET parent_id = $1 WHERE id = $2")
        .bind(c)
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    let self_parent = sqlx::query("UPDATE roles SET parent_id = id WHERE id = $1")
        .bind(a)
        .execute(&db.pool)
        .await;
    assert!(self_parent.is_err());
}

#[tokio::test]
async fn a_role_cannot_inherit_from_another_tenants_role() {
    let db = TestDatabase::new().await;
    two_tenants(&db).await;
    let a = role_id(&db.pool, "acme", "a").await;
    let x = role_id(&db.pool, "globex", "x").await;
    let err = sqlx::query("UPDATE roles SET parent_id = $1 WHERE id = $2")
        .bind(x)
        .bind(a)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("same tenant"), "{err}");
}

#[tokio::test]
async fn role_hierarchy_depth_is_bounded() {
    let db = TestDatabase::new().await;
    let mut roles = vec![role("r0", None)];
    for i in 1..16 {
        roles.push(role(&format!("r{i}"), Some(&format!("r{}", i - 1))));
    }
    let seed = Seed {
        tenants: vec![tenant("deep", roles, vec![])],
        ..Seed::default()
    };
    bootstrap::apply(&db.pool, &seed, &cheap_hasher())
        .await
        .unwrap();
    let too_deep = Seed {
        tenants: vec![tenant("deep", vec![role("r16", Some("r15"))], vec![])],
        ..Seed::default()
    };
    let err = bootstrap::apply(&db.pool, &too_deep, &cheap_hasher())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deeper than 16"), "{err}");
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM roles WHERE name = 'r16'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(created, 0, "the failed seed left nothing behind");
}

#[tokio::test]
async fn user_roles_cannot_cross_tenants() {
    let db = TestDatabase::new().await;
    let hasher = cheap_hasher();
    let seed = Seed {
        tenants: vec![
            tenant(
                "acme",
                vec![role("a", None)],
                vec![UserSeed {
                    username: Username::parse("alice").unwrap(),
                    display_name: "Alice".into(),
                    password: "irrelevant-password".into(),
                    roles: vec![],
                }],
            ),
            tenant("globex", vec![role("x", None)], vec![]),
        ],
        ..Seed::default()
    };
    bootstrap::apply(&db.pool, &seed, &hasher).await.unwrap();
    let x = role_id(&db.pool, "globex", "x").await;
    let err = sqlx::query(
        "INSERT INTO user_roles (tenant_id, user_id, role_id)
         SELECT u.tenant_id, u.id, $1 FROM users u WHERE u.username_normalized = 'alice'",
    )
    .bind(x)
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(
        err.as_database_error().unwrap().is_foreign_key_violation(),
        "{err}"
    );
}

#[tokio::test]
async fn usernames_are_unique_per_tenant_only() {
    let db = TestDatabase::new().await;
    two_tenants(&db).await;
    let insert = |slug: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO users (id, tenant_id, username_normalized, username_display, password_hash)
                 SELECT $1, id, 'carol', 'Carol', '$argon2id$v=19$m=256,t=1,p=1$x$y' FROM tenants WHERE slug = $2",
            )
            .bind(Uuid::now_v7())
            .bind(slug)
            .execute(&pool)
            .await
        }
    };
    insert("acme").await.unwrap();
    insert("globex").await.unwrap();
    let duplicate = insert("acme").await.unwrap_err();
    assert!(duplicate.as_database_error().unwrap().is_unique_violation());
}

#[tokio::test]
async fn non_argon2id_password_hashes_cannot_be_stored() {
    let db = TestDatabase::new().await;
    two_tenants(&db).await;
    let err = sqlx::query(
        "INSERT INTO users (id, tenant_id, username_normalized, username_display, password_hash)
         SELECT $1, id, 'dave', 'dave', 'plaintext' FROM tenants WHERE slug = 'acme'",
    )
    .bind(Uuid::now_v7())
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(
        err.as_database_error().unwrap().is_check_violation(),
        "{err}"
    );
}

#[tokio::test]
async fn audit_events_are_append_only() {
    let db = TestDatabase::new().await;
    two_tenants(&db).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(rows > 0, "seeding is audited");
    let update = sqlx::query("UPDATE audit_events SET outcome = 'failure'")
        .execute(&db.pool)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_events")
        .execute(&db.pool)
        .await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
}

#[tokio::test]
async fn each_seeded_change_bumps_the_tenant_version_once_with_an_outbox_event() {
    let db = TestDatabase::new().await;
    two_tenants(&db).await;
    let version: i64 = sqlx::query_scalar(
        "SELECT v.version FROM tenant_data_versions v JOIN tenants t ON t.id = v.tenant_id WHERE t.slug = 'acme'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(version, 2, "created at 1, bumped once by the seed");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events o JOIN tenants t ON t.id = o.tenant_id
         WHERE t.slug = 'acme' AND o.kind = 'tenant.data_changed' AND o.published_at IS NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(events, 1);
    // Applying the same seed again is a no-op: no version bump, no event.
    two_tenants(&db).await;
    let again: i64 = sqlx::query_scalar(
        "SELECT v.version FROM tenant_data_versions v JOIN tenants t ON t.id = v.tenant_id WHERE t.slug = 'acme'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(again, 2);
}

#[tokio::test]
async fn only_one_signing_key_can_be_current() {
    let db = TestDatabase::new().await;
    let insert = |kid: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, private_key_encrypted, public_jwk, state)
                 VALUES ($1, 'EdDSA', '\\x00', '{}', 'current')",
            )
            .bind(kid)
            .execute(&pool)
            .await
        }
    };
    insert("key-0001").await.unwrap();
    assert!(
        insert("key-0002")
            .await
            .unwrap_err()
            .as_database_error()
            .unwrap()
            .is_unique_violation()
    );
}

/// A rollout or subject rule exists only for a service available to its
/// tenant, whoever writes it (migration 20261204000001), and withdrawing the
/// service takes them with it.
#[tokio::test]
async fn rollouts_and_rules_exist_only_for_available_services() {
    let db = TestDatabase::new().await;
    two_tenants(&db).await;
    let pool = &db.pool;
    let tenant: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = 'acme'")
        .fetch_one(pool)
        .await
        .unwrap();
    let (service, version) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO services (id, name) VALUES ($1, 'billing')")
        .bind(service)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO service_versions (id, service_id, version, is_default) VALUES ($1, $2, 'v1', true)",
    )
    .bind(version)
    .bind(service)
    .execute(pool)
    .await
    .unwrap();
    let rollout = || {
        sqlx::query(
            "INSERT INTO tenant_rollouts (tenant_id, service_id, stable_version_id) VALUES ($1, $2, $3)",
        )
        .bind(tenant)
        .bind(service)
        .bind(version)
        .execute(pool)
    };
    let rule = || {
        sqlx::query(
            "INSERT INTO service_subject_rules (id, tenant_id, service_id, version_id, role)
             VALUES (gen_random_uuid(), $1, $2, $3, 'beta')",
        )
        .bind(tenant)
        .bind(service)
        .bind(version)
        .execute(pool)
    };
    let refused = rollout().await.unwrap_err();
    assert!(
        refused.to_string().contains("tenant_rollouts_available"),
        "{refused}"
    );
    let refused = rule().await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("service_subject_rules_available"),
        "{refused}"
    );
    sqlx::query("INSERT INTO tenant_services (tenant_id, service_id) VALUES ($1, $2)")
        .bind(tenant)
        .bind(service)
        .execute(pool)
        .await
        .unwrap();
    rollout().await.unwrap();
    rule().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let withdrawn = gatehouse_store::routing::withdraw(&mut conn, tenant, "billing")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((withdrawn.rollouts, withdrawn.subject_rules), (1, 1));
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenant_rollouts WHERE service_id = $1),
                (SELECT count(*) FROM service_subject_rules WHERE service_id = $1)",
    )
    .bind(service)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(left, (0, 0));
    assert!(
        gatehouse_store::routing::withdraw(&mut conn, tenant, "billing")
            .await
            .unwrap()
            .is_none()
    );
}
