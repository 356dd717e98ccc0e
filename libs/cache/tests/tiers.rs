//! The cache's tiers against a real Redis (`scripts/test` provides one):
//! another build's value is a miss and is removed; a cold key is loaded once
//! by a cluster of caches; "no such thing" is cached too.
#![allow(clippy::unwrap_used, reason = "test")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gatehouse_cache::{CacheKey, CacheSettings, CacheValue, RemoteTier, Tier, TieredCache};
use gatehouse_redis::{Keyspace, RedisPool};
use gatehouse_testkit::TestRedis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Key(&'static str);

impl CacheKey for Key {
    fn tag(&self) -> String {
        "t1".into()
    }
    fn id(&self) -> String {
        self.0.into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Value {
    name: String,
}

impl CacheValue for Value {
    const SCHEMA: u8 = 3;
    fn weight(&self) -> usize {
        self.name.len()
    }
}

fn remote() -> (RemoteTier, RedisPool) {
    let redis = TestRedis::shared();
    let pool = RedisPool::new(&gatehouse_testkit::redis_settings(redis.url.clone())).unwrap();
    (
        RemoteTier::new(pool.clone(), Keyspace::new(redis.prefix)),
        pool,
    )
}

/// A cache as one gateway instance has it (its own L1, the shared L2).
fn instance(l2: &RemoteTier) -> TieredCache<Key, Value> {
    TieredCache::new("test", CacheSettings::default(), Some(l2.clone()))
}

#[tokio::test]
async fn another_builds_value_is_a_miss_and_is_removed() {
    let (l2, pool) = remote();
    let cache = instance(&l2);
    let key = Key("k");
    let l2_key = cache.l2_key(&key).unwrap();
    let written = l2_key.clone();
    // Schema byte 9 (a newer build), then bytes this build cannot read.
    pool.run(|mut conn| async move {
        redis::cmd("SET")
            .arg(&written)
            .arg(vec![9u8, 1, 0xff, 0x00])
            .query_async::<()>(&mut conn)
            .await
    })
    .await
    .unwrap();
    let lookup = cache
        .get(&key, || async {
            Ok::<_, std::convert::Infallible>(Some(Value {
                name: "fresh".into(),
            }))
        })
        .await
        .unwrap();
    assert_eq!(lookup.tier, Tier::L3, "the unreadable value was not used");
    assert_eq!(lookup.value.unwrap().name, "fresh");
    // Replaced by this build's value: a second instance reads it from L2.
    let other = instance(&l2);
    let again = other
        .get(&key, || async { Ok::<_, std::convert::Infallible>(None) })
        .await
        .unwrap();
    assert_eq!(again.tier, Tier::L2);
    assert_eq!(again.value.unwrap().name, "fresh");
}

#[tokio::test]
async fn a_cold_key_is_loaded_once_by_a_cluster_of_instances() {
    let (l2, _) = remote();
    let instances: Vec<Arc<TieredCache<Key, Value>>> =
        (0..4).map(|_| Arc::new(instance(&l2))).collect();
    let loads = Arc::new(AtomicU32::new(0));
    let mut calls = Vec::new();
    for i in 0..100 {
        let cache = Arc::clone(&instances[i % instances.len()]);
        let loads = Arc::clone(&loads);
        calls.push(tokio::spawn(async move {
            cache
                .get(&Key("cold"), || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // A slow Postgres: the others must wait, not load.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::convert::Infallible>(Some(Value { name: "v".into() }))
                })
                .await
                .unwrap()
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().value.unwrap().name, "v");
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one load for four instances and 100 callers"
    );
}

#[tokio::test]
async fn no_such_thing_is_cached_too() {
    let (l2, _) = remote();
    let cache = instance(&l2);
    let loads = AtomicU32::new(0);
    for _ in 0..50 {
        let lookup = cache
            .get(&Key("absent"), || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(None)
            })
            .await
            .unwrap();
        assert!(lookup.value.is_none());
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // And across instances, through L2.
    let other = instance(&l2);
    let lookup = other
        .get(&Key("absent"), || async {
            Ok::<_, std::convert::Infallible>(Some(Value { name: "x".into() }))
        })
        .await
        .unwrap();
    assert_eq!(lookup.tier, Tier::L2);
    assert!(lookup.value.is_none());
}

/// Whether the fill lock of `key` is held in Redis.
async fn lock_held(pool: &RedisPool, l2_key: &str) -> bool {
    let lock = format!("{l2_key}:lock");
    pool.run(|mut conn| async move {
        redis::cmd("EXISTS")
            .arg(&lock)
            .query_async::<bool>(&mut conn)
            .await
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_fill_releases_its_lock_and_so_does_a_failed_load() {
    let (l2, pool) = remote();
    let cache = instance(&l2);
    let filled = Key("filled");
    cache
        .get(&filled, || async {
            Ok::<_, std::convert::Infallible>(Some(Value { name: "v".into() }))
        })
        .await
        .unwrap();
    assert!(!lock_held(&pool, &cache.l2_key(&filled).unwrap()).await);

    let failing = Key("failing");
    let error = cache
        .get(&failing, || async {
            Err::<Option<Value>, _>("postgres is down")
        })
        .await
        .unwrap_err();
    assert_eq!(*error, "postgres is down");
    let l2_key = cache.l2_key(&failing).unwrap();
    assert!(
        !lock_held(&pool, &l2_key).await,
        "a failed load must not leave others waiting on its lock"
    );
    // Nothing was stored for the failure: the next instance loads the truth.
    let other = instance(&l2);
    let lookup = other
        .get(&failing, || async {
            Ok::<_, std::convert::Infallible>(Some(Value {
                name: "back".into(),
            }))
        })
        .await
        .unwrap();
    assert_eq!(lookup.tier, Tier::L3);
    assert_eq!(lookup.value.unwrap().name, "back");
}
