//! Refresh-token families against a real Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::ManualClock;
use gatehouse_redis::{Keyspace, RedisPool, RedisSettings};
use gatehouse_session::{
    NewSession, RefreshStore, RefreshToken, Rotation, Session, SessionConfig, SessionStore,
};
use gatehouse_testkit::TestRedis;
use uuid::Uuid;

struct Fixture {
    sessions: SessionStore,
    refresh: RefreshStore,
}

fn fixture() -> Fixture {
    let redis = TestRedis::shared();
    let pool = RedisPool::new(&RedisSettings::new(redis.url.clone())).unwrap();
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
        refresh: RefreshStore::new(pool, keys, clock),
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
    // Right session, right shape, but a secret we never issued.
    let forged = format!(
        "ghr1_{}_{}_{}",
        other.tenant_id.simple(),
        other.id,
        "A".repeat(43)
    );
    let forged = RefreshToken::parse(&forged).unwrap();
    assert_eq!(
        f.refresh.rotate(&forged).await.unwrap(),
        Rotation::Refused { why: "unknown" }
    );
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
