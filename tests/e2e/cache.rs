//! The tiered cache and its invalidation, seen from outside: two gateway
//! instances on one Postgres and one Redis, changes made through one (admin
//! API, CLI, SQL by hand) in force on the other, the stream cut, Redis down,
//! a cold tenant under a burst, and random tenant names.
#![allow(
    clippy::float_cmp,
    reason = "Prometheus counters are whole numbers, rendered exactly"
)]

use std::time::Duration;

use gatehouse_testkit::{Gateway, PrivateRedis, TestDatabase, run_gatehouse};
use reqwest::Method;
use serde_json::{Value, json};

use crate::authz::{call, check};
use crate::{
    DEMO_PASSWORD, client, forward_auth, json_login, seeded_app, session_token, until_in_force,
};

/// Sum of every sample of `name` whose labels contain all of `labels`.
async fn metric(gateway: &Gateway, name: &str, labels: &[&str]) -> f64 {
    let text = crate::metrics_text(gateway).await;
    text.lines()
        .filter(|line| {
            line.starts_with(name)
                && line[name.len()..].starts_with(['{', ' '])
                && labels.iter().all(|l| line.contains(l))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What bob may do with orders, asked of `gateway` by alice (an acme admin).
async fn bob_reads_orders(gateway: &Gateway, alice: &str) -> Value {
    check(
        gateway,
        alice,
        json!({"subject": "bob", "resource": "orders:7", "action": "read"}),
    )
    .await
}

/// Forward auth for `jwt` on `gateway`: the status.
async fn verify_status(gateway: &Gateway, jwt: &str) -> u16 {
    forward_auth(gateway, "acme")
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Outbox rows not yet published.
async fn unpublished(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// `vars` with `key` set to `value` (replacing it).
fn with_var(vars: &[(String, String)], key: &str, value: String) -> Vec<(String, String)> {
    let mut vars = vars.to_vec();
    vars.retain(|(k, _)| k != key);
    vars.push((key.to_owned(), value));
    vars
}

/// An instance that reaches `redis` through a link the test can cut.
async fn behind_a_link(
    redis: &PrivateRedis,
    vars: &[(String, String)],
) -> (Gateway, crate::CuttableLink) {
    let link = crate::CuttableLink::to(redis.url().trim_start_matches("redis://").to_owned()).await;
    let gateway = Gateway::spawn(&with_var(vars, "REDIS_URL", link.redis_url())).await;
    (gateway, link)
}

/// A second instance on the same database, Redis and key prefix.
async fn second(vars: &[(String, String)]) -> Gateway {
    Gateway::spawn(vars).await
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one story: four kinds of change, one after another"
)]
async fn changes_made_through_one_instance_are_in_force_on_another() {
    let (a, db, vars) = seeded_app(&[]).await;
    let b = second(&vars).await;
    let alice_a = session_token(&a, "acme", "alice", DEMO_PASSWORD).await;
    let alice_b = session_token(&b, "acme", "alice", DEMO_PASSWORD).await;
    assert_eq!(bob_reads_orders(&b, &alice_b).await["allowed"], true);
    let warm = bob_reads_orders(&b, &alice_b).await;
    assert_eq!(warm["tier"], "l1", "B answers from memory: {warm}");

    // A role assignment removed through A.
    let removed = call(
        &a,
        &alice_a,
        Method::DELETE,
        "/admin/api/v1/tenants/acme/users/bob/roles/member",
        None,
    )
    .await;
    assert_eq!(removed.status(), 204);
    let lag = until_in_force("assignment removed on A, on B", || async {
        bob_reads_orders(&b, &alice_b).await["allowed"] == false
    })
    .await;
    eprintln!("assignment removal reached B after {lag:?}");

    // Put back, then the grant deleted through A.
    let back = call(
        &a,
        &alice_a,
        Method::PUT,
        "/admin/api/v1/tenants/acme/users/bob/roles/member",
        Some(json!({})),
    )
    .await;
    assert_eq!(back.status(), 200);
    until_in_force("assignment restored", || async {
        bob_reads_orders(&b, &alice_b).await["allowed"] == true
    })
    .await;
    let grant_gone = call(
        &a,
        &alice_a,
        Method::DELETE,
        "/admin/api/v1/tenants/acme/roles/member/permissions?resource=orders:*&action=read",
        None,
    )
    .await;
    assert_eq!(grant_gone.status(), 204);
    until_in_force("grant deleted on A, on B", || async {
        bob_reads_orders(&b, &alice_b).await["allowed"] == false
    })
    .await;

    // A policy created, then changed, through A.
    let policy = |effect: &str| {
        json!({
            "name": "orders-window", "priority": 10, "effect": effect,
            "document": {"target": {"resources": ["orders:*"], "actions": ["read"]}}
        })
    };
    let created = call(
        &a,
        &alice_a,
        Method::POST,
        "/admin/api/v1/tenants/acme/policies",
        Some(policy("permit")),
    )
    .await;
    assert_eq!(created.status(), 201);
    until_in_force("policy created on A, on B", || async {
        bob_reads_orders(&b, &alice_b).await["allowed"] == true
    })
    .await;
    let mut changed = policy("deny");
    changed["version"] = json!(1);
    let updated = call(
        &a,
        &alice_a,
        Method::PUT,
        "/admin/api/v1/tenants/acme/policies/orders-window",
        Some(changed),
    )
    .await;
    assert_eq!(updated.status(), 200, "{:?}", updated.text().await);
    until_in_force("policy changed on A, on B", || async {
        bob_reads_orders(&b, &alice_b).await["allowed"] == false
    })
    .await;

    // A user disabled by the CLI (another process): its outbox row is
    // published and B refuses bob's token.
    let bob = json_login(&b, "acme", "bob", DEMO_PASSWORD).await;
    let bob: Value = bob.json().await.unwrap();
    let jwt = bob["access_token"].as_str().unwrap();
    assert_ne!(
        verify_status(&b, jwt).await,
        401,
        "control: bob's token is live"
    );
    let out = run_gatehouse(&["user", "disable", "--tenant", "acme", "bob"], &vars).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until_in_force("user disabled by the CLI, on B", || async {
        verify_status(&b, jwt).await == 401
    })
    .await;
    assert_eq!(unpublished(&db).await, 0, "every change was published");
}

#[tokio::test]
async fn a_session_ended_on_one_instance_is_refused_by_another() {
    let (a, _db, vars) = seeded_app(&[]).await;
    let b = second(&vars).await;
    let bob = session_token(&a, "acme", "bob", DEMO_PASSWORD).await;
    let me = |g: &Gateway| {
        let request = client().get(g.url("/v1/auth/me")).bearer_auth(&bob);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me(&b).await, 200);
    assert_eq!(me(&b).await, 200, "the second answer is from B's memory");
    let out = client()
        .post(a.url("/v1/auth/logout"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let lag = until_in_force("logout on A, on B", || async { me(&b).await == 401 }).await;
    eprintln!("session end reached B after {lag:?}");
    assert_eq!(me(&a).await, 401);
}

/// A demo deployment on its own Redis (tests that stop or cut it).
pub(crate) async fn private_app(
    redis: &PrivateRedis,
    extra: &[(&str, &str)],
) -> (Gateway, TestDatabase, Vec<(String, String)>) {
    let url = redis.url();
    let mut all: Vec<(&str, &str)> = vec![("REDIS_URL", url.as_str())];
    all.extend_from_slice(extra);
    seeded_app(&all).await
}

#[tokio::test]
async fn an_instance_whose_stream_was_cut_catches_up_or_clears_its_memory() {
    let redis = PrivateRedis::start().await;
    let (a, db, vars) = private_app(&redis, &[]).await;
    // B reaches Redis through a link the test can cut.
    let (b, link) = behind_a_link(&redis, &vars).await;
    let alice_a = session_token(&a, "acme", "alice", DEMO_PASSWORD).await;
    let alice_b = session_token(&b, "acme", "alice", DEMO_PASSWORD).await;
    assert_eq!(bob_reads_orders(&b, &alice_b).await["allowed"], true);
    let published = || async {
        until_in_force("the change published by A", || async {
            unpublished(&db).await == 0
        })
        .await
    };

    // 1. Cut, change on A, restore: B resumes from its last id and applies it.
    let reconnects_before = metric(&b, "gatehouse_event_stream_reconnects_total", &[]).await;
    link.cut();
    let removed = call(
        &a,
        &alice_a,
        Method::DELETE,
        "/admin/api/v1/tenants/acme/users/bob/roles/member",
        None,
    )
    .await;
    assert_eq!(removed.status(), 204);
    published().await;
    link.restore();
    until_in_force("a change made while B's stream was cut", || async {
        bob_reads_orders(&b, &alice_b).await["allowed"] == false
    })
    .await;
    assert!(metric(&b, "gatehouse_event_stream_reconnects_total", &[]).await > reconnects_before);
    let clears_before = metric(
        &b,
        "gatehouse_cache_l1_clears_total",
        &["cache=\"subjects\""],
    )
    .await;

    // 2. Cut, change on A, trim the stream past B's position, restore: B
    // cannot know what it missed, so it clears its memory (counted) and reads
    // the truth again.
    link.cut();
    let back = call(
        &a,
        &alice_a,
        Method::PUT,
        "/admin/api/v1/tenants/acme/users/bob/roles/member",
        Some(json!({})),
    )
    .await;
    assert_eq!(back.status(), 200);
    published().await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let streams: Vec<String> = redis::cmd("KEYS")
        .arg("*{ev}:stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!streams.is_empty());
    for stream in &streams {
        let _: i64 = redis::cmd("XTRIM")
            .arg(stream)
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    link.restore();
    until_in_force(
        "B cleared its memory and reads the restored role",
        || async { bob_reads_orders(&b, &alice_b).await["allowed"] == true },
    )
    .await;
    assert!(
        metric(
            &b,
            "gatehouse_cache_l1_clears_total",
            &["cache=\"subjects\""]
        )
        .await
            > clears_before,
        "the lost position was counted as an L1 clear"
    );
}

#[tokio::test]
async fn with_redis_down_decisions_come_from_memory_then_postgres() {
    let mut redis = PrivateRedis::start().await;
    let (g, _db, _) = private_app(&redis, &[("GATEHOUSE_CACHE__L1_TTL_MS", "300")]).await;
    let bob = json_login(&g, "acme", "bob", DEMO_PASSWORD).await;
    let bob: Value = bob.json().await.unwrap();
    let jwt = bob["access_token"].as_str().unwrap().to_owned();
    assert_eq!(verify_status(&g, &jwt).await, 200);
    redis.stop().await;
    assert_eq!(
        verify_status(&g, &jwt).await,
        200,
        "from memory while Redis is down"
    );
    let loads = metric(
        &g,
        "gatehouse_cache_loads_total",
        &["cache=\"subjects\"", "result=\"ok\""],
    )
    .await;
    until_in_force(
        "the subject reloaded from Postgres once L1 expired",
        || async {
            assert_eq!(
                verify_status(&g, &jwt).await,
                200,
                "still answered with Redis down"
            );
            metric(
                &g,
                "gatehouse_cache_loads_total",
                &["cache=\"subjects\"", "result=\"ok\""],
            )
            .await
                > loads
        },
    )
    .await;
    assert!(metric(&g, "gatehouse_cache_l2_errors_total", &[]).await >= 1.0);
    redis.resume().await;
}

#[tokio::test]
async fn a_cold_tenant_is_loaded_once_under_200_concurrent_requests() {
    let (g, db, _) = seeded_app(&[]).await;
    let bob = json_login(&g, "acme", "bob", DEMO_PASSWORD).await;
    let bob: Value = bob.json().await.unwrap();
    let jwt = bob["access_token"].as_str().unwrap().to_owned();
    // Signing in read bob's subject; a change to the tenant (new data
    // version) makes every cached entry of it unreachable: cold again.
    let seen = metric(&g, "gatehouse_cache_invalidations_total", &[]).await;
    sqlx::query("UPDATE tenants SET display_name = 'Acme (renamed)' WHERE slug = 'acme'")
        .execute(&db.pool)
        .await
        .unwrap();
    until_in_force("the tenant change reached the gateway", || async {
        metric(&g, "gatehouse_cache_invalidations_total", &[]).await > seen
    })
    .await;
    // A fill is an L3 load or an L2 hit (the version may already be in Redis:
    // the relay raised it when it published the bootstrap's change).
    let fills = |cache: &'static str| {
        let g = &g;
        async move {
            let label = format!("cache=\"{cache}\"");
            let loads = metric(g, "gatehouse_cache_loads_total", &[&label, "result=\"ok\""]).await;
            let l2 = metric(g, "gatehouse_cache_hits_total", &[&label, "tier=\"l2\""]).await;
            (loads, loads + l2)
        }
    };
    let caches = ["versions", "principals", "subjects", "rules"];
    let mut before = Vec::new();
    for cache in caches {
        before.push(fills(cache).await);
    }
    let compilations = metric(&g, "gatehouse_authz_compilations_total", &[]).await;
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let request = forward_auth(&g, "acme").bearer_auth(&jwt);
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for answer in burst {
        assert_eq!(answer.await.unwrap(), 200);
    }
    for (cache, before) in caches.iter().zip(before) {
        let after = fills(cache).await;
        assert!(
            after.0 - before.0 <= 1.0,
            "{cache}: at most one load from Postgres for 200 requests"
        );
        if *cache == "versions" {
            // The version may already be in memory: this instance's own
            // consumer saw the bootstrap's change event.
            assert!(after.1 - before.1 <= 1.0, "versions: at most one fill");
        } else {
            assert_eq!(
                after.1 - before.1,
                1.0,
                "{cache}: one fill for 200 requests"
            );
        }
    }
    assert_eq!(
        metric(&g, "gatehouse_authz_compilations_total", &[]).await - compilations,
        1.0,
        "one compilation"
    );
}

#[tokio::test]
async fn an_admin_write_whose_publish_failed_is_published_later() {
    let mut redis = PrivateRedis::start().await;
    let (a, db, vars) = private_app(&redis, &[]).await;
    let b = second(&vars).await;
    let bob = json_login(&b, "acme", "bob", DEMO_PASSWORD).await;
    let bob: Value = bob.json().await.unwrap();
    let jwt = bob["access_token"].as_str().unwrap().to_owned();
    assert_eq!(verify_status(&b, &jwt).await, 200);
    let alice = session_token(&a, "acme", "alice", DEMO_PASSWORD).await;
    // One admitted request: A now holds alice's validated session in memory.
    assert_eq!(bob_reads_orders(&a, &alice).await["allowed"], true);

    redis.stop().await;
    // Alice's session was validated moments ago, so A admits her from memory
    // and the write commits in Postgres; its event cannot be published.
    let removed = call(
        &a,
        &alice,
        Method::DELETE,
        "/admin/api/v1/tenants/acme/users/bob/roles/member",
        None,
    )
    .await;
    assert_eq!(removed.status(), 204);
    assert!(unpublished(&db).await >= 1, "the event waits in the outbox");
    redis.resume().await;
    until_in_force("the outbox row published after Redis came back", || async {
        unpublished(&db).await == 0
    })
    .await;
    until_in_force("B refuses bob's read of orders", || async {
        verify_status(&b, &jwt).await == 403
    })
    .await;
}

#[tokio::test]
async fn random_tenant_names_cost_postgres_a_bounded_number_of_queries() {
    let (g, db, _) = seeded_app(&[]).await;
    // Warm the slug index (one query) and let the statistics settle.
    let known = client().get(g.url("/t/acme/login")).send().await.unwrap();
    assert_eq!(known.status(), 200);
    let transactions = || async {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let before = transactions().await;
    let started = std::time::Instant::now();
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("nope-{}-{i}", gatehouse_testkit::unique_id()))
        .collect();
    let mut waves = names.chunks(100);
    for wave in waves.by_ref() {
        let answers: Vec<_> = wave
            .iter()
            .map(|name| {
                let request = client().get(g.url(&format!("/t/{name}/login")));
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        for answer in answers {
            assert_eq!(answer.await.unwrap(), 404);
        }
    }
    let elapsed = started.elapsed();
    let after = transactions().await;
    // Everything else this database sees meanwhile is background work: the
    // outbox relay's poll (two a second), connection set-up, our own reads.
    // 100 plus 10 a second bounds it loosely; without the slug index the
    // count would be 10 000 or more.
    let bound = 100 + 10 * i64::try_from(elapsed.as_secs() + 3).unwrap();
    let spent = after - before;
    eprintln!(
        "10 000 unknown tenants: {spent} Postgres transactions in {elapsed:?} (bound {bound})"
    );
    assert!(
        spent <= bound,
        "unknown names reached Postgres: {spent} transactions for 10 000 requests"
    );
    let tenant_loads = metric(&g, "gatehouse_cache_loads_total", &["cache=\"tenants\""]).await;
    assert!(
        tenant_loads <= 1.0,
        "the tenant cache loaded {tenant_loads} times"
    );
}

#[tokio::test]
async fn check_answers_name_the_tier_their_data_came_from() {
    let (a, _db, vars) = seeded_app(&[]).await;
    let alice_a = session_token(&a, "acme", "alice", DEMO_PASSWORD).await;
    let first = bob_reads_orders(&a, &alice_a).await;
    assert_eq!(first["tier"], "l3", "cold: {first}");
    let again = bob_reads_orders(&a, &alice_a).await;
    assert_eq!(again["tier"], "l1", "warm: {again}");
    // A new instance: nothing in memory, everything in Redis.
    let b = second(&vars).await;
    let alice_b = session_token(&b, "acme", "alice", DEMO_PASSWORD).await;
    let from_redis = bob_reads_orders(&b, &alice_b).await;
    assert_eq!(from_redis["tier"], "l2", "{from_redis}");
    assert_eq!(bob_reads_orders(&b, &alice_b).await["tier"], "l1");
}

/// `url` with its host and port replaced by the loopback `port`.
fn through(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, after) = rest.split_once('@').unwrap();
    let path = &after[after.find('/').unwrap()..];
    format!("{scheme}://{userinfo}@127.0.0.1:{port}{path}")
}

/// The Postgres host:port of a `postgres://` URL.
fn host_port(url: &str) -> String {
    let after = url.split_once('@').unwrap().1;
    after[..after.find('/').unwrap()].to_owned()
}

async fn login_status(gateway: &Gateway, user: &str) -> (u16, Option<String>) {
    let response = json_login(gateway, "acme", user, DEMO_PASSWORD).await;
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry)
}

#[tokio::test]
async fn a_postgres_outage_is_503_and_a_restart_costs_no_request() {
    let (_seeder, db, vars) = seeded_app(&[]).await;
    let link = crate::CuttableLink::to(host_port(&db.url)).await;
    let mut vars = with_var(&vars, "DATABASE_URL", through(&db.url, link.port()));
    vars.push((
        "GATEHOUSE_DB__ACQUIRE_TIMEOUT_MS".to_owned(),
        "500".to_owned(),
    ));
    let g = Gateway::spawn(&vars).await;
    let bob: Value = json_login(&g, "acme", "bob", DEMO_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let alice: Value = json_login(&g, "acme", "alice", DEMO_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let (bob_jwt, alice_jwt) = (
        bob["access_token"].as_str().unwrap(),
        alice["access_token"].as_str().unwrap(),
    );
    assert_eq!(
        verify_status(&g, bob_jwt).await,
        200,
        "bob's standing is now cached"
    );

    // Outage: what memory holds is still answered; what needs Postgres is a
    // 503 with Retry-After, never a 500.
    link.cut();
    assert_eq!(verify_status(&g, bob_jwt).await, 200, "served from L1");
    let unknown = forward_auth(&g, "acme")
        .bearer_auth(alice_jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 503, "alice's standing was never read");
    assert!(unknown.headers().contains_key("retry-after"));
    let (status, retry) = login_status(&g, "bob").await;
    assert_eq!(status, 503);
    assert!(retry.is_some(), "login's 503 says when to retry");
    let ready = client().get(g.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    // Restart: every pooled connection died with the old server. The first
    // requests after it must not meet a stale one.
    link.restore();
    for user in ["alice", "bob", "alice", "bob", "alice", "bob"] {
        let (status, _) = login_status(&g, user).await;
        assert_eq!(status, 200, "login of {user} right after the restart");
        assert_eq!(verify_status(&g, alice_jwt).await, 200);
    }

    // And once more with no request in between (the pool finds out itself).
    link.cut();
    link.restore();
    for user in ["alice", "bob", "alice", "bob"] {
        assert_eq!(
            login_status(&g, user).await.0,
            200,
            "login of {user} after a quiet restart"
        );
    }
}

#[tokio::test]
async fn a_redis_restart_costs_no_request() {
    let redis = PrivateRedis::start().await;
    let (_seeder, _db, vars) = private_app(&redis, &[]).await;
    let (g, link) = behind_a_link(&redis, &vars).await;
    let bob = session_token(&g, "acme", "bob", DEMO_PASSWORD).await;
    // Alice's session is in Redis only (never admitted, so not in memory).
    let alice = session_token(&g, "acme", "alice", DEMO_PASSWORD).await;
    let me = |token: &str| {
        let request = client().get(g.url("/v1/auth/me")).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me(&bob).await, 200);
    // Every connection to Redis dies at once, with no request in flight;
    // Redis is back at once (a fast restart that kept its data).
    link.cut();
    link.restore();
    assert_eq!(
        me(&alice).await,
        200,
        "the first request after the restart reads Redis"
    );
    for user in ["alice", "bob", "alice"] {
        assert_eq!(
            login_status(&g, user).await.0,
            200,
            "login of {user} after the restart"
        );
    }
    for _ in 0..3 {
        assert_eq!(me(&bob).await, 200);
        assert_eq!(me(&alice).await, 200);
    }
}
