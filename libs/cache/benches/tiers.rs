//! The cost of one cache read at each tier: an L1 hit, an L2 hit (one Redis
//! GET + decode), and an L3 load (the loader here is a no-op, so the figure is
//! the cache's own miss path: read-or-lock, then fill-and-unlock, two round trips). Needs
//! `GATEHOUSE_BENCH_REDIS_URL` (`scripts/bench` starts a Redis).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark"
)]

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_cache::{CacheKey, CacheSettings, CacheValue, RemoteTier, TieredCache};
use gatehouse_redis::{Keyspace, RedisPool, RedisSettings};
use serde::{Deserialize, Serialize};

#[derive(Clone, Hash, PartialEq, Eq)]
struct Key(u64);

impl CacheKey for Key {
    fn tag(&self) -> String {
        "bench".into()
    }
    fn id(&self) -> String {
        self.0.to_string()
    }
}

/// About the size of a subject: a name, attributes and a few roles.
#[derive(Clone, Serialize, Deserialize)]
struct Subject {
    username: String,
    attributes: serde_json::Value,
    roles: Vec<(String, Option<i64>)>,
}

impl CacheValue for Subject {
    const SCHEMA: u8 = 1;
    fn weight(&self) -> usize {
        256
    }
}

fn subject() -> Subject {
    Subject {
        username: "alice".into(),
        attributes: serde_json::json!({"department": "sales", "level": 3}),
        roles: vec![
            ("editor".into(), None),
            ("viewer".into(), Some(1_900_000_000)),
        ],
    }
}

fn tiers(c: &mut Criterion) {
    let url = std::env::var("GATEHOUSE_BENCH_REDIS_URL")
        .expect("GATEHOUSE_BENCH_REDIS_URL (run scripts/bench)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _context = runtime.enter();
    let pool = RedisPool::new(&RedisSettings::new(url)).unwrap();
    let remote = RemoteTier::new(pool, Keyspace::new("bench:cache:"));
    let with_l2 =
        TieredCache::<Key, Subject>::new("bench", CacheSettings::default(), Some(remote.clone()));
    let load = || async { Ok::<_, std::convert::Infallible>(Some(subject())) };

    runtime.block_on(with_l2.get(&Key(1), load)).unwrap();
    c.bench_function("cache/l1_hit", |b| {
        b.iter(|| runtime.block_on(with_l2.get(&Key(1), load)).unwrap());
    });

    // L2 hit: a second process-local cache (empty L1) over the same Redis.
    let next = AtomicU64::new(0);
    let reader = TieredCache::<Key, Subject>::new(
        "bench",
        CacheSettings {
            l1_capacity_bytes: 0,
            ..CacheSettings::default()
        },
        Some(remote.clone()),
    );
    c.bench_function("cache/l2_hit", |b| {
        b.iter(|| {
            let lookup = runtime.block_on(reader.get(&Key(1), load)).unwrap();
            assert_eq!(lookup.tier, gatehouse_cache::Tier::L2);
        });
    });

    c.bench_function("cache/l3_load_miss_path", |b| {
        b.iter(|| {
            let key = Key(1_000_000 + next.fetch_add(1, Ordering::Relaxed));
            let lookup = runtime.block_on(with_l2.get(&key, load)).unwrap();
            assert_eq!(lookup.tier, gatehouse_cache::Tier::L3);
        });
    });
}

criterion_group!(benches, tiers);
criterion_main!(benches);
