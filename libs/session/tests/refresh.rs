//! Refresh-token families against a real Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "tests; the family size is printed for BENCHMARKS.md"
)]

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::ManualClock;
use gatehouse_redis::redis;
use gatehouse_redis::{Keyspace, RedisPool};
use gatehouse_session::{
    NewSession, RefreshKey, RefreshLimits, RefreshStore, RefreshToken, Rotation, Session,
    SessionConfig, SessionStore,
};
use gatehouse_testkit::TestRedis;
use uuid::Uuid;

struct Fixture {
    sessions: SessionStore,
    refresh: RefreshStore,
    clock: Arc<ManualClock>,
    pool: RedisPool,
    keys: Keyspace,
}

fn fixture() -> Fixture {
    fixture_with(RefreshLimits::default())
}

fn fixture_with(limits: RefreshLimits) -> Fixture {
    let redis = TestRedis::shared();
    let pool = RedisPool::new(&gatehouse_testkit::redis_settings(redis.url.clone())).unwrap();
    let clock = Arc::new(ManualClock::at(
        time::macros::datetime!(2026-03-01 09:00 UTC),
    ));
    let keys = Keyspace::new(redis.prefix.clone());
    let config = SessionConfig {
        idle_timeout: Duration::from_secs(1800),
        absolute_timeout: Duration::from_secs(7200),
        touch_interval: Duration::from_secs(60),
    };
    Fixture {
        sessions: SessionStore::new(pool.clone(), keys.clone(), clock.clone(), config),
        refresh: RefreshStore::new(
            pool.clone(),
            keys.clone(),
            clock.clone(),
            RefreshKey::derive(&[3u8; 32]),
            limits,
        ),
        clock,
        pool,
        keys,
    }
}

async fn session(f: &Fixture) -> Session {
    let new = NewSession {
        tenant_id: Uuid::new_v4(),
        tenant_slug: "acme".into(),
        user_id: Uuid::new_v4(),
        username: "bob".into(),
        ip: "127.0.0.1".into(),
        user_agent: "test".into(),
    };
    f.sessions.create(new).await.unwrap().1
}

fn rotated(r: Rotation) -> RefreshToken {
    match r {
        Rotation::Rotated { token, .. } => token,
        other => panic!("expected a rotation, got {other:?}"),
    }
}

#[tokio::test]
async fn every_use_rotates_and_a_family_is_issued_once_per_session() {
    let f = fixture();
    let s = session(&f).await;
    let first = f.refresh.issue(&s).await.unwrap();
    assert!(f.refresh.issue(&s).await.is_err(), "one family per session");
    let second = rotated(f.refresh.rotate(&first).await.unwrap());
    let third = f.refresh.rotate(&second).await.unwrap();
    assert!(
        matches!(third, Rotation::Rotated { generation: 3, .. }),
        "{third:?}"
    );
}

#[tokio::test]
async fn reuse_of_a_spent_token_revokes_the_whole_family() {
    let f = fixture();
    let s = session(&f).await;
    let first = f.refresh.issue(&s).await.unwrap();
    let second = rotated(f.refresh.rotate(&first).await.unwrap());
    // The thief replays the first token: reuse, with the user to end the session of.
    assert_eq!(
        f.refresh.rotate(&first).await.unwrap(),
        Rotation::Reused {
            user_id: Some(s.user_id)
        }
    );
    // The legitimate holder's (unspent) token is now dead too.
    assert_eq!(
        f.refresh.rotate(&second).await.unwrap(),
        Rotation::Refused { why: "revoked" }
    );
}

#[tokio::test]
async fn refresh_fails_once_the_session_has_ended_or_for_tokens_never_issued() {
    let f = fixture();
    let s = session(&f).await;
    let token = f.refresh.issue(&s).await.unwrap();
    assert!(f.sessions.end(s.tenant_id, s.user_id, &s.id).await.unwrap());
    assert_eq!(
        f.refresh.rotate(&token).await.unwrap(),
        Rotation::Refused { why: "ended" }
    );

    let other = session(&f).await;
    f.refresh.issue(&other).await.unwrap();
    // Right session, right shape, but a MAC we never issued: refused
    // without touching the family (it stays usable).
    let issued = f.refresh.issue(&other).await;
    assert!(issued.is_err(), "issued once above");
    let genuine = RefreshToken::parse(&format!(
        "ghr2_{}_{}_1_{}",
        other.tenant_id.simple(),
        other.id,
        "A".repeat(43)
    ))
    .unwrap();
    assert_eq!(
        f.refresh.rotate(&genuine).await.unwrap(),
        Rotation::Refused { why: "forged" }
    );
    // A legacy-shaped token whose digest Redis never held.
    let legacy = RefreshToken::parse(&format!(
        "ghr1_{}_{}_{}",
        other.tenant_id.simple(),
        other.id,
        "A".repeat(43)
    ))
    .unwrap();
    assert_eq!(
        f.refresh.rotate(&legacy).await.unwrap(),
        Rotation::Refused { why: "unknown" }
    );
}

/// Rotations per session are limited; a throttled token is not spent and
/// works once the window has passed.
#[tokio::test]
async fn rotations_beyond_the_per_session_limit_wait_without_spending_the_token() {
    let f = fixture_with(RefreshLimits {
        per_window: 3,
        window: Duration::from_secs(60),
    });
    let s = session(&f).await;
    let mut token = f.refresh.issue(&s).await.unwrap();
    for _ in 0..3 {
        token = rotated(f.refresh.rotate(&token).await.unwrap());
    }
    let throttled = f.refresh.rotate(&token).await.unwrap();
    assert!(
        matches!(throttled, Rotation::Throttled { retry_after } if retry_after <= Duration::from_secs(60)),
        "{throttled:?}"
    );
    // Another session of the same user is not held back.
    let other = session(&f).await;
    let other_token = f.refresh.issue(&other).await.unwrap();
    rotated(f.refresh.rotate(&other_token).await.unwrap());
    f.clock.advance(time::Duration::seconds(61));
    let next = f.refresh.rotate(&token).await.unwrap();
    assert!(
        matches!(next, Rotation::Rotated { generation: 5, .. }),
        "the throttled token was kept: {next:?}"
    );
}

async fn family_bytes(f: &Fixture, s: &Session) -> i64 {
    let family = f
        .keys
        .tenant_key(&s.tenant_id.simple().to_string(), &format!("rf:{}", s.id));
    f.pool
        .run(|mut conn| async move {
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&family)
                .query_async(&mut conn)
                .await
        })
        .await
        .unwrap()
}

async fn keys_of_tenant(f: &Fixture, s: &Session) -> usize {
    let pattern = format!(
        "{}*",
        f.keys.tenant_key(&s.tenant_id.simple().to_string(), "")
    );
    f.pool
        .run(|mut conn| async move {
            redis::cmd("KEYS")
                .arg(&pattern)
                .query_async::<Vec<String>>(&mut conn)
                .await
        })
        .await
        .unwrap()
        .len()
}

/// A family's memory does not grow with use: after 1 000 rotations it holds
/// the same fields, and no key per spent token exists (the figure printed
/// here is in BENCHMARKS.md).
#[tokio::test]
async fn a_family_stays_the_same_size_after_a_thousand_rotations() {
    let f = fixture_with(RefreshLimits {
        per_window: 10_000,
        window: Duration::from_secs(60),
    });
    let s = session(&f).await;
    let mut token = f.refresh.issue(&s).await.unwrap();
    token = rotated(f.refresh.rotate(&token).await.unwrap());
    let (bytes_after_one, keys_after_one) =
        (family_bytes(&f, &s).await, keys_of_tenant(&f, &s).await);
    let first = token.clone();
    for _ in 0..999 {
        token = rotated(f.refresh.rotate(&token).await.unwrap());
    }
    let (bytes_after_1000, keys_after_1000) =
        (family_bytes(&f, &s).await, keys_of_tenant(&f, &s).await);
    println!(
        "refresh family after 1 rotation: {bytes_after_one} bytes; after 1000: {bytes_after_1000} bytes"
    );
    assert_eq!(keys_after_1000, keys_after_one, "no key per spent token");
    assert!(
        bytes_after_1000 <= bytes_after_one + 16,
        "the family hash does not grow: {bytes_after_one} -> {bytes_after_1000}"
    );
    // Reuse is still detected 999 generations later.
    assert!(matches!(
        f.refresh.rotate(&first).await.unwrap(),
        Rotation::Reused { .. }
    ));
}

/// A family issued by the previous build (digest per token) rotates once into
/// the generation form, and its spent legacy token still counts as reuse.
#[tokio::test]
async fn a_legacy_family_moves_to_the_generation_form() {
    let f = fixture();
    let s = session(&f).await;
    let legacy = format!(
        "ghr1_{}_{}_{}",
        s.tenant_id.simple(),
        s.id,
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 32])
    );
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(legacy.as_bytes()))
    };
    let tenant = s.tenant_id.simple().to_string();
    let (family, record) = (
        f.keys.tenant_key(&tenant, &format!("rf:{}", s.id)),
        f.keys.tenant_key(&tenant, &format!("rt:{digest}")),
    );
    let user = s.user_id.simple().to_string();
    f.pool
        .run(|mut conn| async move {
            redis::pipe()
                .cmd("HSET")
                .arg(&family)
                .arg(&[
                    "current",
                    &digest,
                    "generation",
                    "1",
                    "revoked",
                    "0",
                    "user",
                    &user,
                ])
                .ignore()
                .cmd("HSET")
                .arg(&record)
                .arg(&["state", "live"])
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        })
        .await
        .unwrap();
    let legacy = RefreshToken::parse(&legacy).unwrap();
    let successor = rotated(f.refresh.rotate(&legacy).await.unwrap());
    assert!(successor.expose().starts_with("ghr2_"));
    let third = f.refresh.rotate(&successor).await.unwrap();
    assert!(
        matches!(third, Rotation::Rotated { generation: 3, .. }),
        "{third:?}"
    );
    assert!(matches!(
        f.refresh.rotate(&legacy).await.unwrap(),
        Rotation::Reused { .. }
    ));
}

#[tokio::test]
async fn concurrent_presentations_of_one_token_rotate_once() {
    let f = fixture();
    let s = session(&f).await;
    let token = f.refresh.issue(&s).await.unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let (store, token) = (f.refresh.clone(), token.clone());
            tokio::spawn(async move { store.rotate(&token).await.unwrap() })
        })
        .collect();
    let mut successes = 0;
    for attempt in attempts {
        if matches!(attempt.await.unwrap(), Rotation::Rotated { .. }) {
            successes += 1;
        }
    }
    assert_eq!(
        successes, 1,
        "the script is atomic: one winner, the rest are reuse"
    );
}
