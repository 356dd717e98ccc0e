//! The revocation stream against a real Redis: two "instances" (separate
//! pools and mirrors) on one server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests; the delay figures are printed for BENCHMARKS.md"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_events::{
    EventStream, Revocation, RevocationMirror, StreamSettings, TokenFacts, spawn_tailer,
};
use gatehouse_redis::{Keyspace, RedisPool, redis};
use gatehouse_testkit::{PrivateRedis, TestRedis};
use uuid::Uuid;

const NOW: i64 = 1_795_424_400;

fn instance(redis: &TestRedis, settings: StreamSettings) -> EventStream {
    let pool = RedisPool::new(&gatehouse_testkit::redis_settings(redis.url.clone())).unwrap();
    EventStream::new(pool, Keyspace::new(redis.prefix.clone()), settings)
}

fn clock() -> Arc<dyn Fn() -> i64 + Send + Sync> {
    Arc::new(|| NOW)
}

fn token(jti: &str) -> TokenFacts<'_> {
    TokenFacts {
        jti,
        sid: "no-session",
        tenant_id: Uuid::nil(),
        user_id: Uuid::nil(),
        iat: NOW - 10,
    }
}

async fn until(mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not propagated within 5 s"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_revocation_written_by_one_instance_reaches_another_and_new_instances_load_it() {
    let redis = TestRedis::shared();
    let (a, b) = (
        instance(&redis, StreamSettings::default()),
        instance(&redis, StreamSettings::default()),
    );
    a.revoke(
        &Revocation::Token {
            jti: "before-start".into(),
            expires_at: NOW + 600,
        },
        NOW,
    )
    .await
    .unwrap();
    let mirror = Arc::new(RevocationMirror::default());
    let _tailer = spawn_tailer(b.clone(), mirror.clone(), Vec::new(), clock())
        .await
        .unwrap();
    assert!(
        mirror.is_revoked(token("before-start")),
        "loaded from the deny list at start"
    );

    // Many trials: revoke on A, time until B's mirror has it.
    let mut delays = Vec::new();
    for i in 0..200 {
        let jti = format!("trial-{i}");
        let started = Instant::now();
        a.revoke(
            &Revocation::Token {
                jti: jti.clone(),
                expires_at: NOW + 600,
            },
            NOW,
        )
        .await
        .unwrap();
        until(|| mirror.is_revoked(token(&jti))).await;
        delays.push(started.elapsed());
    }
    delays.sort();
    let (p50, p99) = (delays[delays.len() / 2], delays[delays.len() * 99 / 100]);
    println!(
        "revocation visible on the other instance: p50 {p50:?}, p99 {p99:?}, max {:?} (200 trials)",
        delays[delays.len() - 1]
    );
    assert!(
        p99 < Duration::from_secs(2),
        "generous bound; the figure is in BENCHMARKS.md"
    );

    // Session, user and tenant revocations travel the same way.
    let (tenant, user) = (Uuid::new_v4(), Uuid::new_v4());
    a.revoke(
        &Revocation::User {
            tenant_id: tenant,
            user_id: user,
            before: NOW,
        },
        NOW,
    )
    .await
    .unwrap();
    until(|| {
        mirror.is_revoked(TokenFacts {
            jti: "x",
            sid: "y",
            tenant_id: tenant,
            user_id: user,
            iat: NOW - 1,
        })
    })
    .await;
    a.revoke(
        &Revocation::Session {
            sid: "sess-9".into(),
            expires_at: NOW + 600,
        },
        NOW,
    )
    .await
    .unwrap();
    until(|| {
        mirror.is_revoked(TokenFacts {
            jti: "x",
            sid: "sess-9",
            tenant_id: Uuid::nil(),
            user_id: Uuid::nil(),
            iat: NOW,
        })
    })
    .await;
}

#[tokio::test]
async fn a_tailer_whose_connection_is_cut_catches_up_after_reconnecting() {
    // A private server: CLIENT KILL must not cut other tests' connections.
    let private = PrivateRedis::start().await;
    let redis = TestRedis {
        url: private.url(),
        prefix: "t:".to_owned(),
    };
    let (a, b) = (
        instance(&redis, StreamSettings::default()),
        instance(&redis, StreamSettings::default()),
    );
    let mirror = Arc::new(RevocationMirror::default());
    let _tailer = spawn_tailer(b, mirror.clone(), Vec::new(), clock())
        .await
        .unwrap();
    // Cut every blocking client (the tailer's XREAD connection) server-side.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let mut cut = 0;
    for _ in 0..50 {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .unwrap_or(0);
        cut += killed;
        if cut > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cut > 0, "the tailer's connection was cut");
    a.revoke(
        &Revocation::Token {
            jti: "while-cut".into(),
            expires_at: NOW + 600,
        },
        NOW,
    )
    .await
    .unwrap();
    until(|| mirror.is_revoked(token("while-cut"))).await;
}

#[tokio::test]
async fn a_position_trimmed_away_reloads_the_mirror_from_the_deny_list() {
    let redis = TestRedis::shared();
    let small = StreamSettings {
        max_len: 10,
        ..StreamSettings::default()
    };
    let writer = instance(&redis, small);
    let mirror = RevocationMirror::default();
    let mut last = writer.last_id().await.unwrap();
    assert!(
        !writer.resume(&mirror, &mut last, NOW).await.unwrap(),
        "nothing trimmed yet"
    );
    writer
        .revoke(
            &Revocation::Token {
                jti: "early".into(),
                expires_at: NOW + 600,
            },
            NOW,
        )
        .await
        .unwrap();
    for i in 0..400 {
        writer
            .revoke(
                &Revocation::Token {
                    jti: format!("filler-{i}"),
                    expires_at: NOW + 600,
                },
                NOW,
            )
            .await
            .unwrap();
    }
    // The event for "early" is gone from the stream, so replay cannot find it.
    assert!(
        writer.resume(&mirror, &mut last, NOW).await.unwrap(),
        "trimmed past our position"
    );
    assert!(
        mirror.is_revoked(token("early")),
        "reloaded from the deny list"
    );
    assert!(mirror.is_revoked(token("filler-399")));
    assert_eq!(last, writer.last_id().await.unwrap());
}

#[tokio::test]
async fn the_tailer_purges_revocations_whose_tokens_have_all_expired() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let redis = TestRedis::shared();
    let settings = StreamSettings {
        block: Duration::from_millis(20),
        ..StreamSettings::default()
    };
    let (a, b) = (instance(&redis, settings), instance(&redis, settings));
    let now = Arc::new(AtomicI64::new(NOW));
    let tick = now.clone();
    let clock: Arc<dyn Fn() -> i64 + Send + Sync> = Arc::new(move || tick.load(Ordering::SeqCst));
    let mirror = Arc::new(RevocationMirror::default());
    let _tailer = spawn_tailer(b, mirror.clone(), Vec::new(), clock)
        .await
        .unwrap();
    a.revoke(
        &Revocation::Token {
            jti: "short-lived".into(),
            expires_at: NOW + 60,
        },
        NOW,
    )
    .await
    .unwrap();
    a.revoke(
        &Revocation::Token {
            jti: "long-lived".into(),
            expires_at: NOW + 6_000,
        },
        NOW,
    )
    .await
    .unwrap();
    until(|| mirror.is_revoked(token("long-lived")) && mirror.is_revoked(token("short-lived")))
        .await;
    let before = mirror.len();
    // The short-lived token has expired: its entry can no longer match anything.
    now.store(NOW + 120, Ordering::SeqCst);
    until(|| mirror.len() < before).await;
    assert!(
        !mirror.is_revoked(token("short-lived")),
        "the expired entry is gone"
    );
    assert!(mirror.is_revoked(token("long-lived")), "live entries stay");
}

#[tokio::test]
async fn an_unreadable_revocation_event_reloads_the_mirror_instead_of_being_skipped() {
    let redis = TestRedis::shared();
    let b = instance(&redis, StreamSettings::default());
    let mirror = Arc::new(RevocationMirror::default());
    let _tailer = spawn_tailer(b, mirror.clone(), Vec::new(), clock())
        .await
        .unwrap();
    // A deny-list entry the mirror could only learn by reloading, then an event
    // from a newer layout this build cannot read.
    let keys = Keyspace::new(redis.prefix.clone());
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(keys.events_key("deny:jti:from-the-future"))
        .arg(1)
        .arg("EX")
        .arg(600)
        .query_async(&mut conn)
        .await
        .unwrap();
    // A newer build indexes its entries as this one does.
    let _: () = redis::cmd("ZADD")
        .arg(keys.events_key("revocations"))
        .arg(NOW + 600)
        .arg("deny:jti:from-the-future")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(keys.events_key("stream"))
        .arg("*")
        .arg(&[
            "v",
            "99",
            "kind",
            "revoke.token",
            "at",
            "0",
            "payload",
            "{\"shape\":\"new\"}",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    until(|| mirror.is_revoked(token("from-the-future"))).await;
}

/// The mirror loads from the revocation index, in pages, so a keyspace full
/// of unrelated keys costs nothing; entries written before the index existed
/// are indexed once (a marker key stops later scans); expired members drop
/// out of the index as new revocations are written.
#[tokio::test]
async fn mirrors_load_from_the_index_and_legacy_entries_are_indexed_once() {
    let redis = TestRedis::shared();
    let stream = instance(&redis, StreamSettings::default());
    let pool = RedisPool::new(&gatehouse_testkit::redis_settings(redis.url.clone())).unwrap();
    let keys = Keyspace::new(redis.prefix.clone());
    // A deny-list entry as an older build wrote it: no index member.
    let legacy = keys.events_key("deny:jti:legacy-1");
    pool.run(|mut conn| async move {
        redis::cmd("SET")
            .arg(&legacy)
            .arg(1)
            .arg("EX")
            .arg(600)
            .query_async::<()>(&mut conn)
            .await
    })
    .await
    .unwrap();
    // More than one page of indexed revocations.
    let count = gatehouse_events::LOAD_PAGE + 7;
    for i in 0..count {
        stream
            .revoke(
                &Revocation::Token {
                    jti: format!("paged-{i}"),
                    expires_at: NOW + 600,
                },
                NOW,
            )
            .await
            .unwrap();
    }
    let loaded = stream.load_revocations(NOW).await.unwrap();
    let mirror = RevocationMirror::default();
    mirror.replace(&loaded);
    assert_eq!(loaded.len(), count + 1, "every page and the legacy entry");
    assert!(mirror.is_revoked(token("legacy-1")));
    assert!(mirror.is_revoked(token(&format!("paged-{}", count - 1))));
    let index = keys.events_key("revocations");
    let members = |pool: RedisPool, index: String| async move {
        pool.run(|mut conn| async move {
            redis::cmd("ZCARD")
                .arg(&index)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
        .unwrap()
    };
    assert_eq!(
        members(pool.clone(), index.clone()).await,
        i64::try_from(count + 1).unwrap(),
        "the legacy entry was added to the index"
    );
    // A later revocation, written after the first ones expired, sweeps them
    // from the index: it stays as small as the deny list.
    stream
        .revoke(
            &Revocation::Token {
                jti: "late".to_owned(),
                expires_at: NOW + 2_000,
            },
            NOW + 1_000,
        )
        .await
        .unwrap();
    assert_eq!(members(pool, index).await, 1);
}
