//! Selection against a real Redis (`scripts/test` provides one): rollouts as
//! the Lua scripts apply them (and as `Rule` computes them), every strategy,
//! heartbeats, breakers, leases and panic mode.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    reason = "test"
)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use gatehouse_redis::{Keyspace, RedisPool};
use gatehouse_routing::{
    Pick, PickRequest, Picked, RoutingStore, Rule, SelectSettings, Side, Strategy,
};
use gatehouse_testkit::TestRedis;

const NOW: u64 = 1_000_000_000;
const SERVICE: &str = "orders";

fn store() -> (RoutingStore, RedisPool, String) {
    let redis = TestRedis::shared();
    let pool = RedisPool::new(&gatehouse_testkit::redis_settings(redis.url.clone())).unwrap();
    let store = RoutingStore::new(
        pool.clone(),
        Keyspace::new(redis.prefix.clone()),
        SelectSettings::default(),
    );
    (store, pool, redis.prefix)
}

/// Registers instances `(id, version, weight)`, alive for ten minutes from NOW.
async fn instances(store: &RoutingStore, list: &[(&str, &str, u32)]) {
    for (id, version, weight) in list {
        store
            .put_instance(
                SERVICE,
                id,
                version,
                *weight,
                &format!("127.0.0.1:{}", 9000 + id.len()),
            )
            .await
            .unwrap();
        store
            .heartbeat(SERVICE, id, Duration::from_secs(600), NOW)
            .await
            .unwrap();
    }
}

fn request(strategy: Strategy, tenant: &str, now_ms: u64) -> PickRequest<'_> {
    PickRequest {
        service: SERVICE,
        strategy,
        tenant,
        user: None,
        forced_version: None,
        now_ms,
        lease: true,
        exclude: None,
    }
}

async fn pick(store: &RoutingStore, request: &PickRequest<'_>) -> Pick {
    match store.pick(request).await.unwrap() {
        Picked::Instance(pick) => pick,
        other => panic!("expected an instance, got {other:?}"),
    }
}

#[tokio::test]
async fn pins_the_default_and_per_tenant_rules_decide_the_version() {
    let (store, _, _) = store();
    instances(&store, &[("a1", "v1", 100), ("b1", "v2", 100)]).await;
    assert_eq!(
        store
            .pick(&request(Strategy::RoundRobin, "t-x", NOW))
            .await
            .unwrap(),
        Picked::NoVersion,
        "no default, no rule: no version"
    );
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    store
        .set_rule(SERVICE, Some("t-pinned"), &Rule::pin("v2").unwrap())
        .await
        .unwrap();
    for _ in 0..20 {
        let other = pick(&store, &request(Strategy::RoundRobin, "t-x", NOW)).await;
        assert_eq!(
            (other.version.as_str(), other.why.as_str()),
            ("v1", "default")
        );
        let pinned = pick(&store, &request(Strategy::RoundRobin, "t-pinned", NOW)).await;
        assert_eq!(
            (pinned.version.as_str(), pinned.instance.as_str()),
            ("v2", "b1")
        );
        assert_eq!(pinned.why, "tenant_rule");
    }
    // The version alone (for /v1/verify): the same answer, no instance chosen.
    assert_eq!(
        store
            .version(SERVICE, "t-pinned", None, None)
            .await
            .unwrap(),
        Some(("v2".to_owned(), "tenant_rule".to_owned()))
    );
    assert_eq!(
        store.version(SERVICE, "t-x", None, None).await.unwrap(),
        Some(("v1".to_owned(), "default".to_owned()))
    );
    // Instant rollback: the rule goes, the default applies on the next pick.
    store.clear_rule(SERVICE, Some("t-pinned")).await.unwrap();
    let back = pick(&store, &request(Strategy::RoundRobin, "t-pinned", NOW)).await;
    assert_eq!(back.version, "v1");
    // A subject rule (beta testers) overrides the rollout.
    let mut beta = request(Strategy::RoundRobin, "t-x", NOW);
    beta.forced_version = Some("v2");
    let forced = pick(&store, &beta).await;
    assert_eq!(
        (forced.version.as_str(), forced.why.as_str()),
        ("v2", "subject_rule")
    );
}

/// Lua and Rust put every tenant on the same side; the share is close to the
/// percentage, and a growing share only adds tenants.
#[tokio::test]
async fn a_split_sends_its_share_of_tenants_and_the_set_only_grows() {
    let (store, _, _) = store();
    instances(&store, &[("a1", "v1", 100), ("b1", "v2", 100)]).await;
    let tenants: Vec<String> = (0..600).map(|i| format!("tenant-{i:04}")).collect();
    let mut previous: HashSet<String> = HashSet::new();
    for buckets in [1000, 3000, 6000] {
        let rule = Rule::split("v1", "v2", buckets, "r1", false).unwrap();
        store.set_rule(SERVICE, None, &rule).await.unwrap();
        let mut canary = HashSet::new();
        for tenant in &tenants {
            let got = pick(&store, &request(Strategy::RoundRobin, tenant, NOW)).await;
            let (want, side) = rule.version_for(SERVICE, tenant, None);
            assert_eq!(got.version, want, "Lua and Rust disagree for {tenant}");
            if side == Side::Canary {
                assert_eq!(got.why, "default:canary");
                canary.insert(tenant.clone());
            }
        }
        let share = canary.len() as f64 / tenants.len() as f64;
        let target = f64::from(buckets) / 10_000.0;
        assert!((share - target).abs() < 0.06, "{buckets}: {share}");
        assert!(
            previous.is_subset(&canary),
            "a tenant left the canary as it grew"
        );
        previous = canary;
    }
    // Per user: Lua hashes the user in too, as Rust does.
    let per_user = Rule::split("v1", "v2", 5000, "r2", true).unwrap();
    store.set_rule(SERVICE, None, &per_user).await.unwrap();
    for u in 0..50 {
        let user = format!("user-{u}");
        let mut r = request(Strategy::RoundRobin, "acme", NOW);
        r.user = Some(&user);
        let got = pick(&store, &r).await;
        assert_eq!(
            got.version,
            per_user.version_for(SERVICE, "acme", Some(&user)).0
        );
    }
}

#[tokio::test]
async fn weighted_round_robin_gives_each_instance_its_share() {
    let (store, _, _) = store();
    instances(
        &store,
        &[("a", "v1", 100), ("bb", "v1", 200), ("ccc", "v1", 700)],
    )
    .await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut last = String::new();
    let mut longest_run = 0;
    let mut run = 0;
    for _ in 0..10_000 {
        let got = pick(&store, &request(Strategy::Weighted, "t", NOW)).await;
        run = if got.instance == last { run + 1 } else { 1 };
        longest_run = longest_run.max(run);
        last.clone_from(&got.instance);
        *counts.entry(got.instance).or_default() += 1;
    }
    for (id, weight) in [("a", 100.0), ("bb", 200.0), ("ccc", 700.0)] {
        let share = f64::from(counts[id]) / 10_000.0;
        let want = weight / 1000.0;
        assert!((share - want).abs() <= 0.02, "{id}: {share} vs {want}");
    }
    // Smooth: the heavy instance never takes a long burst.
    assert!(longest_run <= 3, "longest run {longest_run}");
}

/// The proxy's retry leaves out the instance that failed, whatever the
/// strategy (user hashing would otherwise send it straight back); with no
/// other instance there is none to retry on.
#[tokio::test]
async fn an_excluded_instance_is_never_picked_by_any_strategy() {
    let (store, _pool, _prefix) = store();
    instances(
        &store,
        &[("a", "v1", 100), ("b", "v1", 100), ("c", "v2", 100)],
    )
    .await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    for strategy in Strategy::ALL {
        for round in 0..20 {
            let mut request = request(strategy, "t", NOW);
            let user = format!("user-{round}");
            request.user = Some(&user);
            request.exclude = Some("a");
            let pick = pick(&store, &request).await;
            assert_eq!(pick.instance, "b", "{strategy:?}");
            store
                .record(SERVICE, &pick.instance, true, pick.lease.as_deref(), NOW)
                .await
                .unwrap();
        }
    }
    let mut request = request(Strategy::RoundRobin, "t", NOW);
    store
        .set_rule(SERVICE, None, &Rule::pin("v2").unwrap())
        .await
        .unwrap();
    request.exclude = Some("c");
    assert_eq!(
        store.pick(&request).await.unwrap(),
        Picked::NoInstance {
            version: "v2".into()
        }
    );
}

#[tokio::test]
async fn least_connections_prefers_the_idle_instance_and_leases_expire() {
    let (store, pool, prefix) = store();
    instances(&store, &[("a", "v1", 100), ("b", "v1", 100)]).await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    let lc = |now| request(Strategy::LeastConnections, "t", now);
    let first = pick(&store, &lc(NOW)).await;
    let second = pick(&store, &lc(NOW)).await;
    assert_ne!(
        first.instance, second.instance,
        "the idle one takes the next request"
    );
    // The first finishes: its instance is the idle one again.
    store
        .record(SERVICE, &first.instance, true, first.lease.as_deref(), NOW)
        .await
        .unwrap();
    let third = pick(&store, &lc(NOW)).await;
    assert_eq!(third.instance, first.instance);
    // Leases nobody closes (a gateway died mid-request) stop counting at
    // their deadline: the next pick after it sees both idle again.
    for _ in 0..10 {
        pick(&store, &lc(NOW)).await;
    }
    let later = NOW + 61_000;
    pick(&store, &lc(later)).await;
    let inflight = format!("{prefix}{{svc:{SERVICE}}}:inflight");
    let counts: HashMap<String, i64> = pool
        .run(|mut conn| async move {
            redis::cmd("HGETALL")
                .arg(&inflight)
                .query_async(&mut conn)
                .await
        })
        .await
        .unwrap();
    assert_eq!(
        counts.values().sum::<i64>(),
        1,
        "only the newest lease: {counts:?}"
    );
    // An advisory pick (resolve) opens no lease: nothing more counts.
    let mut advisory = lc(later);
    advisory.lease = false;
    for _ in 0..5 {
        assert!(pick(&store, &advisory).await.lease.is_none());
    }
    let inflight = format!("{prefix}{{svc:{SERVICE}}}:inflight");
    let counts: HashMap<String, i64> = pool
        .run(|mut conn| async move {
            redis::cmd("HGETALL")
                .arg(&inflight)
                .query_async(&mut conn)
                .await
        })
        .await
        .unwrap();
    assert_eq!(
        counts.values().sum::<i64>(),
        1,
        "advisory picks counted: {counts:?}"
    );
    // Closing an expired lease does not drive a count below zero.
    store
        .record(
            SERVICE,
            &second.instance,
            true,
            second.lease.as_deref(),
            later,
        )
        .await
        .unwrap();
    let counts: HashMap<String, i64> = pool
        .run(|mut conn| async move {
            redis::cmd("HGETALL")
                .arg(format!("{prefix}{{svc:{SERVICE}}}:inflight"))
                .query_async(&mut conn)
                .await
        })
        .await
        .unwrap();
    assert!(counts.values().all(|c| *c >= 0), "{counts:?}");
}

#[tokio::test]
async fn a_silent_instance_drops_out_and_no_live_instance_is_no_instance() {
    let (store, _, _) = store();
    instances(&store, &[("a", "v1", 100), ("b", "v1", 100)]).await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    // Heartbeats good for a minute; then b stops: its deadline passes.
    for id in ["a", "b"] {
        store
            .heartbeat(SERVICE, id, Duration::from_secs(60), NOW)
            .await
            .unwrap();
    }
    store
        .heartbeat(SERVICE, "a", Duration::from_secs(60), NOW + 50_000)
        .await
        .unwrap();
    let later = NOW + 70_000;
    for _ in 0..10 {
        assert_eq!(
            pick(&store, &request(Strategy::RoundRobin, "t", later))
                .await
                .instance,
            "a"
        );
    }
    assert_eq!(
        store
            .pick(&request(Strategy::RoundRobin, "t", NOW + 200_000))
            .await
            .unwrap(),
        Picked::NoInstance {
            version: "v1".into()
        }
    );
    // Deregistered: gone even while its heartbeat would still hold.
    store.remove_instance(SERVICE, "a").await.unwrap();
    for _ in 0..10 {
        assert_eq!(
            pick(&store, &request(Strategy::RoundRobin, "t", NOW))
                .await
                .instance,
            "b"
        );
    }
}

#[tokio::test]
async fn a_failing_instance_is_ejected_probed_and_readmitted() {
    let (store, _, _) = store();
    instances(
        &store,
        &[("a", "v1", 100), ("b", "v1", 100), ("c", "v1", 100)],
    )
    .await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    for n in 1..=5 {
        let state = store.record(SERVICE, "a", false, None, NOW).await.unwrap();
        assert_eq!(
            state.opened_now,
            n == 5,
            "opens at the fifth consecutive failure"
        );
    }
    let rr = |now| request(Strategy::RoundRobin, "t", now);
    for _ in 0..20 {
        assert_ne!(pick(&store, &rr(NOW + 1)).await.instance, "a", "ejected");
    }
    // After the 30 s cool-down: half-open, one probe per second.
    let half_open = NOW + 30_001;
    let probes = {
        let mut n = 0;
        for _ in 0..20 {
            if pick(&store, &rr(half_open)).await.instance == "a" {
                n += 1;
            }
        }
        n
    };
    assert_eq!(probes, 1, "one probe per interval");
    // The probe fails: open again, for twice as long.
    let state = store
        .record(SERVICE, "a", false, None, half_open)
        .await
        .unwrap();
    assert!(state.opened_now);
    assert_eq!(
        (state.ejections, state.open_until_ms),
        (2, half_open + 60_000)
    );
    // The next probe succeeds: closed, and a takes its turn again.
    let second_probe = half_open + 60_001;
    let mut readmitted_probe = false;
    for _ in 0..6 {
        if pick(&store, &rr(second_probe)).await.instance == "a" {
            readmitted_probe = true;
        }
    }
    assert!(readmitted_probe);
    let state = store
        .record(SERVICE, "a", true, None, second_probe)
        .await
        .unwrap();
    assert!(!state.open);
    let back: HashSet<String> = {
        let mut seen = HashSet::new();
        for _ in 0..6 {
            seen.insert(pick(&store, &rr(second_probe + 10)).await.instance);
        }
        seen
    };
    assert!(back.contains("a"), "readmitted: {back:?}");
}

#[tokio::test]
async fn when_most_instances_are_ejected_every_live_one_is_used_and_flagged() {
    let (store, _, _) = store();
    instances(
        &store,
        &[("a", "v1", 100), ("b", "v1", 100), ("c", "v1", 100)],
    )
    .await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    for id in ["a", "b"] {
        for _ in 0..5 {
            store.record(SERVICE, id, false, None, NOW).await.unwrap();
        }
    }
    // One of three healthy (33% < 50%): panic, all three take traffic.
    let mut seen = HashSet::new();
    for _ in 0..9 {
        let got = pick(&store, &request(Strategy::RoundRobin, "t", NOW + 1)).await;
        assert!(got.panic);
        seen.insert(got.instance);
    }
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn user_hashing_is_sticky_and_a_removed_instance_moves_only_its_users() {
    let (store, _, _) = store();
    instances(
        &store,
        &[("a", "v1", 100), ("b", "v1", 100), ("c", "v1", 100)],
    )
    .await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    let users: Vec<String> = (0..300).map(|u| format!("user-{u}")).collect();
    let mut placed = HashMap::new();
    for user in &users {
        let mut r = request(Strategy::UserHash, "t", NOW);
        r.user = Some(user);
        let first = pick(&store, &r).await.instance;
        assert_eq!(pick(&store, &r).await.instance, first, "sticky");
        placed.insert(user.clone(), first);
    }
    let per: HashSet<&String> = placed.values().collect();
    assert_eq!(per.len(), 3, "every instance gets users");
    store.remove_instance(SERVICE, "b").await.unwrap();
    for user in &users {
        let mut r = request(Strategy::UserHash, "t", NOW);
        r.user = Some(user);
        let now = pick(&store, &r).await.instance;
        if placed[user] != "b" {
            assert_eq!(now, placed[user], "{user} moved though its instance stayed");
        }
    }
}

#[tokio::test]
async fn weighted_random_sends_less_to_an_unhealthy_instance() {
    let (store, _, _) = store();
    instances(&store, &[("a", "v1", 100), ("b", "v1", 100)]).await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    // Four failures: not ejected, but health falls (100 → 40).
    for _ in 0..4 {
        let state = store.record(SERVICE, "a", false, None, NOW).await.unwrap();
        assert!(!state.open);
    }
    let mut to_a = 0;
    for _ in 0..2000 {
        if pick(&store, &request(Strategy::Random, "t", NOW))
            .await
            .instance
            == "a"
        {
            to_a += 1;
        }
    }
    let share = f64::from(to_a) / 2000.0;
    assert!((0.2..0.4).contains(&share), "a's share {share}");
    // Successes bring it back.
    let mut health = 0;
    for _ in 0..40 {
        health = store
            .record(SERVICE, "a", true, None, NOW)
            .await
            .unwrap()
            .health;
    }
    assert_eq!(health, 100);
}

#[tokio::test]
async fn scripts_come_back_after_redis_forgets_them() {
    let (store, pool, _) = store();
    instances(&store, &[("a", "v1", 100)]).await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    pick(&store, &request(Strategy::Weighted, "t", NOW)).await;
    pool.run(|mut conn| async move {
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async::<()>(&mut conn)
            .await
    })
    .await
    .unwrap();
    assert_eq!(
        pick(&store, &request(Strategy::Weighted, "t", NOW))
            .await
            .instance,
        "a"
    );
    store.record(SERVICE, "a", true, None, NOW).await.unwrap();
}

#[tokio::test]
async fn a_mirror_replaces_everything_but_never_with_an_older_snapshot() {
    use gatehouse_routing::MirroredInstance;
    let (store, _, _) = store();
    let instance = |id: &str, version: &str| MirroredInstance {
        id: id.into(),
        version: version.into(),
        weight: 100,
        address: format!("127.0.0.1:1{}", id.len()),
        is_static: true,
    };
    let newer = [(None, Rule::pin("v2").unwrap())];
    assert!(
        store
            .mirror(
                SERVICE,
                5,
                &newer,
                &[instance("a", "v1"), instance("bb", "v2")]
            )
            .await
            .unwrap()
    );
    // Static instances are alive without heartbeats.
    let got = pick(&store, &request(Strategy::RoundRobin, "t", NOW)).await;
    assert_eq!((got.version.as_str(), got.instance.as_str()), ("v2", "bb"));
    // A slower relay's older snapshot is refused and changes nothing.
    let older = [(None, Rule::pin("v1").unwrap())];
    assert!(
        !store
            .mirror(SERVICE, 3, &older, &[instance("a", "v1")])
            .await
            .unwrap()
    );
    assert_eq!(
        pick(&store, &request(Strategy::RoundRobin, "t", NOW))
            .await
            .version,
        "v2"
    );
    // A newer one replaces rules and instances wholesale: bb is gone.
    let tenant_rule = [(Some("t".to_owned()), Rule::pin("v1").unwrap())];
    assert!(
        store
            .mirror(SERVICE, 6, &tenant_rule, &[instance("a", "v1")])
            .await
            .unwrap()
    );
    let got = pick(&store, &request(Strategy::RoundRobin, "t", NOW)).await;
    assert_eq!(
        (got.version.as_str(), got.why.as_str()),
        ("v1", "tenant_rule")
    );
    assert_eq!(
        store
            .pick(&request(Strategy::RoundRobin, "other", NOW))
            .await
            .unwrap(),
        Picked::NoVersion,
        "the default went with the old snapshot"
    );
}

/// Canary analysis reads what the outcomes counted: per tenant and version,
/// over the slots of its window, failures and the latency histogram included.
/// One tenant's failures never appear in another tenant's statistics.
#[tokio::test]
async fn outcomes_are_counted_per_tenant_and_version_over_the_window() {
    use gatehouse_routing::{Outcome, STATS_SLOT_MS};
    let (store, _pool, _prefix) = store();
    let record = |tenant: &'static str, version: &'static str, ok: bool, ms: u64, now_ms: u64| {
        let store = store.clone();
        async move {
            store
                .record_request(&Outcome {
                    service: SERVICE,
                    instance: "a",
                    version,
                    tenant,
                    ok,
                    latency: Duration::from_millis(ms),
                    lease: None,
                    now_ms,
                })
                .await
                .unwrap();
        }
    };
    // An old slot, outside a 20 s window.
    record("t", "v2", false, 5, NOW - 5 * STATS_SLOT_MS).await;
    for n in 0..10 {
        record("t", "v2", n % 5 != 0, 8, NOW - STATS_SLOT_MS).await;
        record("t", "v1", true, 4, NOW).await;
        // Another tenant's failures on the same version.
        record("other", "v2", false, 3000, NOW).await;
    }
    record("t", "v2", true, 900, NOW).await;
    // No tenant named: no statistics at all.
    record("", "v2", false, 5, NOW).await;
    let stats = store
        .version_stats(SERVICE, "t", Duration::from_secs(20), NOW)
        .await
        .unwrap();
    let (v1, v2) = (&stats["v1"], &stats["v2"]);
    assert_eq!((v1.requests, v1.errors), (10, 0));
    assert_eq!((v2.requests, v2.errors), (11, 2), "{v2:?}");
    assert!(v1.p99_ms().unwrap() < 8.0);
    assert!(v2.p99_ms().unwrap() >= 900.0, "{:?}", v2.p99_ms());
    let other = store
        .version_stats(SERVICE, "other", Duration::from_secs(20), NOW)
        .await
        .unwrap();
    assert_eq!(other.len(), 1, "{other:?}");
    assert_eq!((other["v2"].requests, other["v2"].errors), (10, 10));
    // A plain record (no version) counts nowhere.
    store.record(SERVICE, "a", true, None, NOW).await.unwrap();
    let again = store
        .version_stats(SERVICE, "t", Duration::from_secs(20), NOW)
        .await
        .unwrap();
    assert_eq!(again["v1"].requests + again["v2"].requests, 21);
    // Batched counts land in each tenant's own statistics too.
    let mut batch: std::collections::HashMap<
        String,
        std::collections::HashMap<String, gatehouse_routing::VersionStats>,
    > = std::collections::HashMap::new();
    batch
        .entry("other".to_owned())
        .or_default()
        .entry("v1".to_owned())
        .or_default()
        .count(true, Duration::from_millis(2));
    store.add_stats(SERVICE, &batch, NOW).await.unwrap();
    let other = store
        .version_stats(SERVICE, "other", Duration::from_secs(20), NOW)
        .await
        .unwrap();
    assert_eq!(other["v1"].requests, 1);
    let mine = store
        .version_stats(SERVICE, "t", Duration::from_secs(20), NOW)
        .await
        .unwrap();
    assert_eq!(mine["v1"].requests, 10, "another tenant's batch stays out");
}

/// Only picks made by a tenant's own split count for its canary.
#[test]
fn only_a_tenants_split_counts_for_its_canary() {
    use gatehouse_routing::counts_for_canary;
    for why in [
        "tenant_rule:canary",
        "tenant_rule:stable",
        "local:tenant_rule:canary",
    ] {
        assert!(counts_for_canary(why), "{why}");
    }
    for why in [
        "tenant_rule",
        "default",
        "default:canary",
        "subject_rule",
        "local:default",
    ] {
        assert!(!counts_for_canary(why), "{why}");
    }
}

/// The gateway's in-memory fast path chooses as the Lua script does: the same
/// user lands on the same instance either way (so switching paths moves nobody).
#[tokio::test]
async fn memory_and_lua_user_hashing_agree() {
    use gatehouse_routing::MirroredInstance;
    use gatehouse_routing::local::{LocalRequest, choose};
    let (store, _pool, _prefix) = store();
    let list = [("a", "v1", 100), ("b", "v1", 100), ("c", "v1", 300)];
    instances(&store, &list).await;
    store
        .set_rule(SERVICE, None, &Rule::pin("v1").unwrap())
        .await
        .unwrap();
    let mirrored: Vec<MirroredInstance> = list
        .iter()
        .map(|(id, version, weight)| MirroredInstance {
            id: (*id).to_owned(),
            version: (*version).to_owned(),
            weight: *weight,
            address: format!("127.0.0.1:{}", 9000 + id.len()),
            is_static: false,
        })
        .collect();
    let view = store.health_view(SERVICE, NOW).await.unwrap();
    assert_eq!(view.alive.len(), 3);
    for n in 0..40 {
        let user = format!("user-{n}");
        let mut lua = request(Strategy::UserHash, "t", NOW);
        lua.user = Some(&user);
        let from_lua = pick(&store, &lua).await.instance;
        let local = LocalRequest {
            strategy: Strategy::UserHash,
            version: "v1",
            key: &user,
            exclude: None,
            now_ms: NOW,
            random: 0,
            panic_percent: 50,
        };
        let from_memory = choose(&mirrored, Some(&view), &local)
            .unwrap()
            .instance
            .id
            .clone();
        assert_eq!(from_lua, from_memory, "{user}");
    }
}
