//! Session store behaviour against a real Redis, with a manual clock so expiry
//! is tested without sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::ManualClock;
use gatehouse_redis::redis;
use gatehouse_redis::{Keyspace, RedisPool};
use gatehouse_session::{NewSession, SessionConfig, SessionId, SessionStore, SessionToken};
use gatehouse_testkit::TestRedis;
use uuid::Uuid;

const IDLE: u64 = 30 * 60;
const ABSOLUTE: u64 = 2 * 60 * 60;
const TOUCH: u64 = 60;

struct Fixture {
    store: SessionStore,
    clock: ManualClock,
    pool: RedisPool,
    prefix: String,
}

fn fixture() -> Fixture {
    let redis = TestRedis::shared();
    let pool = RedisPool::new(&gatehouse_testkit::redis_settings(redis.url.clone())).unwrap();
    let clock = ManualClock::at(time::macros::datetime!(2026-03-01 09:00 UTC));
    let config = SessionConfig {
        idle_timeout: Duration::from_secs(IDLE),
        absolute_timeout: Duration::from_secs(ABSOLUTE),
        touch_interval: Duration::from_secs(TOUCH),
    };
    let store = SessionStore::new(
        pool.clone(),
        Keyspace::new(redis.prefix.clone()),
        Arc::new(clock.clone()),
        config,
    );
    Fixture {
        store,
        clock,
        pool,
        prefix: redis.prefix,
    }
}

fn new_session(tenant_id: Uuid, user_id: Uuid) -> NewSession {
    NewSession {
        tenant_id,
        tenant_slug: "acme".into(),
        user_id,
        username: "alice".into(),
        ip: "127.0.0.1".into(),
        user_agent: "test-agent/1.0".into(),
    }
}

fn minutes(m: i64) -> time::Duration {
    time::Duration::minutes(m)
}

impl Fixture {
    async fn raw_field(&self, tenant: Uuid, id: &SessionId, field: &str) -> Option<String> {
        let key = format!("{}{{t:{}}}:s:{id}", self.prefix, tenant.simple());
        let field = field.to_owned();
        self.pool
            .run(|mut c| async move {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg(&field)
                    .query_async(&mut c)
                    .await
            })
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_created_session_validates_and_carries_what_login_knew() {
    let f = fixture();
    let (tenant, user) = (Uuid::new_v4(), Uuid::new_v4());
    let (token, created) = f.store.create(new_session(tenant, user)).await.unwrap();
    let session = f
        .store
        .validate(&token)
        .await
        .unwrap()
        .expect("live session");
    assert_eq!(session, created);
    assert_eq!(session.user_id, user);
    assert_eq!(session.user_agent, "test-agent/1.0");
}

#[tokio::test]
async fn the_record_is_stored_under_the_token_hash_never_the_token() {
    let f = fixture();
    let (token, _) = f
        .store
        .create(new_session(Uuid::new_v4(), Uuid::new_v4()))
        .await
        .unwrap();
    let pattern = format!("{}*", f.prefix);
    let keys: Vec<String> = f
        .pool
        .run(|mut c| async move { redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await })
        .await
        .unwrap();
    let secret = &token.expose()[37..];
    assert!(keys.iter().any(|k| k.ends_with(token.id().as_str())));
    assert!(keys.iter().all(|k| !k.contains(secret)), "{keys:?}");
}

#[tokio::test]
async fn unknown_and_forged_tokens_do_not_validate() {
    let f = fixture();
    let tenant = Uuid::new_v4();
    f.store
        .create(new_session(tenant, Uuid::new_v4()))
        .await
        .unwrap();
    let forged = SessionToken::generate(tenant);
    assert!(f.store.validate(&forged).await.unwrap().is_none());
}

#[tokio::test]
async fn an_unused_session_ends_after_the_idle_timeout_and_is_deleted() {
    let f = fixture();
    let tenant = Uuid::new_v4();
    let (token, _) = f
        .store
        .create(new_session(tenant, Uuid::new_v4()))
        .await
        .unwrap();
    f.clock.advance(minutes(29));
    assert!(
        f.store.validate(&token).await.unwrap().is_some(),
        "29 minutes idle is fine"
    );
    f.clock.advance(minutes(31));
    assert!(
        f.store.validate(&token).await.unwrap().is_none(),
        "31 more idle minutes end it"
    );
    assert!(
        f.raw_field(tenant, &token.id(), "user_id").await.is_none(),
        "the record is gone"
    );
}

#[tokio::test]
async fn use_slides_the_idle_deadline() {
    let f = fixture();
    let (token, _) = f
        .store
        .create(new_session(Uuid::new_v4(), Uuid::new_v4()))
        .await
        .unwrap();
    for _ in 0..3 {
        f.clock.advance(minutes(20));
        assert!(f.store.validate(&token).await.unwrap().is_some());
    }
    // 60 minutes after sign-in, more than the idle timeout, yet alive.
}

#[tokio::test]
async fn the_idle_deadline_is_written_back_at_most_once_per_touch_interval() {
    let f = fixture();
    let tenant = Uuid::new_v4();
    let (token, created) = f
        .store
        .create(new_session(tenant, Uuid::new_v4()))
        .await
        .unwrap();
    f.clock.advance(time::Duration::seconds(30));
    f.store.validate(&token).await.unwrap();
    let stored = f
        .raw_field(tenant, &token.id(), "last_seen_at")
        .await
        .unwrap();
    assert_eq!(
        stored,
        created.last_seen_at.to_string(),
        "no write within the interval"
    );
    f.clock.advance(time::Duration::seconds(31));
    let seen = f.store.validate(&token).await.unwrap().unwrap();
    assert_eq!(
        seen.last_seen_at,
        created.last_seen_at + 61,
        "written once the interval passed"
    );
}

#[tokio::test]
async fn a_busy_session_still_ends_at_the_absolute_timeout() {
    let f = fixture();
    let (token, _) = f
        .store
        .create(new_session(Uuid::new_v4(), Uuid::new_v4()))
        .await
        .unwrap();
    for _ in 0..11 {
        f.clock.advance(minutes(10));
        assert!(f.store.validate(&token).await.unwrap().is_some());
    }
    f.clock.advance(minutes(10)); // 120 minutes after sign-in
    assert!(f.store.validate(&token).await.unwrap().is_none());
}

#[tokio::test]
async fn listing_shows_every_live_session_of_the_user_only() {
    let f = fixture();
    let (tenant, alice, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (a1, _) = f.store.create(new_session(tenant, alice)).await.unwrap();
    f.clock.advance(time::Duration::seconds(1));
    let (a2, _) = f.store.create(new_session(tenant, alice)).await.unwrap();
    f.store.create(new_session(tenant, bob)).await.unwrap();
    let listed: Vec<SessionId> = f
        .store
        .list_for_user(tenant, alice)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        listed,
        vec![a2.id(), a1.id()],
        "newest first, bob's not included"
    );
    // Another tenant's user with the same id sees nothing.
    assert!(
        f.store
            .list_for_user(Uuid::new_v4(), alice)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ending_one_session_leaves_the_others() {
    let f = fixture();
    let (tenant, user) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, _) = f.store.create(new_session(tenant, user)).await.unwrap();
    let (b, _) = f.store.create(new_session(tenant, user)).await.unwrap();
    assert!(f.store.end(tenant, user, &a.id()).await.unwrap());
    assert!(
        !f.store.end(tenant, user, &a.id()).await.unwrap(),
        "already ended"
    );
    assert!(f.store.validate(&a).await.unwrap().is_none());
    assert!(f.store.validate(&b).await.unwrap().is_some());
}

#[tokio::test]
async fn a_user_cannot_end_another_users_session_by_id() {
    let f = fixture();
    let (tenant, alice, mallory) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (alices, _) = f.store.create(new_session(tenant, alice)).await.unwrap();
    assert!(!f.store.end(tenant, mallory, &alices.id()).await.unwrap());
    assert!(f.store.validate(&alices).await.unwrap().is_some());
}

#[tokio::test]
async fn ending_all_sessions_ends_every_device_but_the_kept_one() {
    let f = fixture();
    let (tenant, user) = (Uuid::new_v4(), Uuid::new_v4());
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(f.store.create(new_session(tenant, user)).await.unwrap().0);
    }
    let keep = tokens[0].id();
    assert_eq!(
        f.store
            .end_all_for_user(tenant, user, Some(&keep))
            .await
            .unwrap()
            .count,
        4
    );
    assert!(f.store.validate(&tokens[0]).await.unwrap().is_some());
    for token in &tokens[1..] {
        assert!(f.store.validate(token).await.unwrap().is_none());
    }
    assert_eq!(
        f.store
            .end_all_for_user(tenant, user, None)
            .await
            .unwrap()
            .count,
        1
    );
    assert!(
        f.store
            .list_for_user(tenant, user)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ending_a_tenants_sessions_ends_every_user_there_and_nothing_elsewhere() {
    let f = fixture();
    let (tenant, other_tenant) = (Uuid::new_v4(), Uuid::new_v4());
    let mut doomed = Vec::new();
    for _ in 0..3 {
        let user = Uuid::new_v4();
        for _ in 0..2 {
            doomed.push(f.store.create(new_session(tenant, user)).await.unwrap().0);
        }
    }
    let elsewhere = f
        .store
        .create(new_session(other_tenant, Uuid::new_v4()))
        .await
        .unwrap()
        .0;
    let ended = f.store.end_all_for_tenant(tenant).await.unwrap();
    assert_eq!(ended.count, 6);
    assert_eq!(ended.ids.len(), 6);
    for token in &doomed {
        assert!(f.store.validate(token).await.unwrap().is_none());
    }
    assert!(f.store.validate(&elsewhere).await.unwrap().is_some());
    assert_eq!(
        f.store.end_all_for_tenant(tenant).await.unwrap().count,
        0,
        "idempotent"
    );
}

#[tokio::test]
async fn active_count_follows_creation_and_ending() {
    let f = fixture();
    let (tenant, user) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(f.store.count_active().await.unwrap(), 0);
    let (a, _) = f.store.create(new_session(tenant, user)).await.unwrap();
    f.store.create(new_session(tenant, user)).await.unwrap();
    assert_eq!(f.store.count_active().await.unwrap(), 2);
    f.store.end(tenant, user, &a.id()).await.unwrap();
    assert_eq!(f.store.count_active().await.unwrap(), 1);
    f.clock.advance(minutes(121));
    assert_eq!(
        f.store.count_active().await.unwrap(),
        0,
        "past the absolute deadline"
    );
}
