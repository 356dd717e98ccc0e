//! The signing-key life cycle against a real Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use gatehouse_store::keys::{self, KeyPolicy, NewKey};
use gatehouse_testkit::TestDatabase;
use serde_json::json;

fn factory() -> impl FnMut() -> Result<NewKey, String> + Send {
    let mut n = 0;
    move || {
        n += 1;
        Ok(NewKey {
            kid: format!("test-key-{n:04}"),
            alg: "EdDSA".into(),
            sealed: vec![0; 40],
            public_jwk: json!({"kty": "OKP"}),
        })
    }
}

fn policy() -> KeyPolicy {
    KeyPolicy {
        rotate_every: None,
        retire_after: Duration::from_secs(3600),
        force_rotate: false,
        now: time::OffsetDateTime::now_utc(),
    }
}

async fn states(db: &TestDatabase) -> Vec<(String, String)> {
    sqlx::query_as("SELECT kid, state FROM signing_keys ORDER BY kid")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_fresh_install_gets_a_current_and_a_published_next_key_once() {
    let db = TestDatabase::new().await;
    let mut make = factory();
    let first = keys::maintain(&db.pool, policy(), &mut make).await.unwrap();
    assert_eq!(first.generated.len(), 2);
    assert_eq!(
        states(&db).await,
        [
            ("test-key-0001".into(), "current".into()),
            ("test-key-0002".into(), "next".into())
        ]
    );
    let again = keys::maintain(&db.pool, policy(), &mut make).await.unwrap();
    assert!(!again.changed(), "idempotent: {again:?}");
    let published: Vec<String> = keys::published(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.state)
        .collect();
    assert_eq!(published, ["current", "next"]);
}

#[tokio::test]
async fn rotation_promotes_the_published_next_key_and_keeps_the_previous_until_its_tokens_expire() {
    let db = TestDatabase::new().await;
    let mut make = factory();
    keys::maintain(&db.pool, policy(), &mut make).await.unwrap();
    let forced = KeyPolicy {
        force_rotate: true,
        ..policy()
    };
    let report = keys::maintain(&db.pool, forced, &mut make).await.unwrap();
    assert!(report.rotated);
    assert_eq!(
        states(&db).await,
        [
            ("test-key-0001".into(), "previous".into()),
            ("test-key-0002".into(), "current".into()),
            ("test-key-0003".into(), "next".into())
        ],
        "the key that becomes current is the one already published as next"
    );
    // Still within the longest token life: the previous key stays published.
    keys::maintain(&db.pool, policy(), &mut make).await.unwrap();
    assert_eq!(keys::published(&db.pool).await.unwrap().len(), 3);
    // Once its tokens have expired it is retired and unpublished.
    let expired = KeyPolicy {
        retire_after: Duration::ZERO,
        ..policy()
    };
    let report = keys::maintain(&db.pool, expired, &mut make).await.unwrap();
    assert_eq!(report.retired, ["test-key-0001"]);
    let published: Vec<String> = keys::published(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(published, ["test-key-0002", "test-key-0003"]);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'keys.maintain'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 3, "every change is audited, the no-op is not");
}

#[tokio::test]
async fn scheduled_rotation_happens_once_however_many_instances_run_it() {
    let db = TestDatabase::new().await;
    keys::maintain(&db.pool, policy(), &mut factory())
        .await
        .unwrap();
    let due = KeyPolicy {
        rotate_every: Some(Duration::ZERO),
        ..policy()
    };
    let mut runs = Vec::new();
    for i in 0..4 {
        let pool = db.pool.clone();
        runs.push(tokio::spawn(async move {
            let mut n = 0;
            let mut make = move || {
                n += 1;
                Ok(NewKey {
                    kid: format!("inst{i}-key-{n:04}"),
                    alg: "EdDSA".into(),
                    sealed: vec![0; 40],
                    public_jwk: json!({}),
                })
            };
            keys::maintain(&pool, due, &mut make).await.unwrap()
        }));
    }
    let mut rotations = 0;
    for run in runs {
        rotations += usize::from(run.await.unwrap().rotated);
    }
    // Each run finds the key it promoted "due" again (rotate_every = 0), so
    // they rotate one after another, never at the same time: one current key.
    assert!(rotations >= 1);
    let current: i64 =
        sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE state = 'current'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(current, 1);
    let next: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE state = 'next'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(next, 1);
}
