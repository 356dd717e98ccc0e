//! The authenticating reverse proxy (`/svc/{service}/...`) through the real
//! binary, to real `demo-upstream` instances on loopback: each tenant reaches
//! its version with our identity and nothing a client forged; who may pass;
//! a dead instance (idempotent requests retried elsewhere, a POST never;
//! ejected by its breaker, readmitted when it recovers); a 100 MiB upload in
//! bounded memory; an upgraded connection spliced through; routing from the
//! in-memory snapshot while Redis is away.

#![allow(
    clippy::too_many_lines,
    reason = "end-to-end scenarios read best as one story each"
)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    DEMO_PASSWORD, Process, client, demo_upstream, demo_upstream_on, expect_problem, json_login,
    seeded_app, until_in_force, wait_for_port,
};
use gatehouse_routing::Rule;
use gatehouse_testkit::{Gateway, TestDatabase, free_port};

/// Registers a static instance of `orders` `version` at `address`.
pub(crate) async fn register(pool: &sqlx::PgPool, version: &str, address: &str) {
    sqlx::query(
        "INSERT INTO service_instances (id, service_id, version_id, address)
         SELECT gen_random_uuid(), s.id, v.id, $2
           FROM services s JOIN service_versions v ON v.service_id = s.id
          WHERE s.name = 'orders' AND v.version = $1",
    )
    .bind(version)
    .bind(address)
    .execute(pool)
    .await
    .unwrap();
}

/// acme's share of the `orders` canary (v2), in buckets of 10 000.
async fn set_canary(pool: &sqlx::PgPool, buckets: i32) {
    sqlx::query("UPDATE tenant_rollouts SET canary_buckets = $1")
        .bind(buckets)
        .execute(pool)
        .await
        .unwrap();
}

/// A seeded gateway with `orders` v1 and v2 on two real upstreams.
struct Proxied {
    gateway: Gateway,
    db: TestDatabase,
    _upstreams: Vec<Process>,
    /// bob's access token (acme, member).
    bob: String,
}

/// The proxy's same-origin mode (`/svc/...` on the main listener).
pub(crate) const SAME_ORIGIN: (&str, &str) = ("GATEHOUSE_PROXY_SAME_ORIGIN", "true");

/// `extra` with the same-origin proxy switched on.
fn with_same_origin<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut vars = vec![SAME_ORIGIN];
    vars.extend_from_slice(extra);
    vars
}

async fn proxied(extra: &[(&str, &str)]) -> Proxied {
    let (gateway, db, _) = seeded_app(&with_same_origin(extra)).await;
    let (v1, v1_port) = demo_upstream("v1");
    let (v2, v2_port) = demo_upstream("v2");
    register(&db.pool, "v1", &format!("127.0.0.1:{v1_port}")).await;
    register(&db.pool, "v2", &format!("127.0.0.1:{v2_port}")).await;
    wait_for_port(v1_port).await;
    wait_for_port(v2_port).await;
    let bob = access_token(&gateway, "acme", "bob").await;
    Proxied {
        gateway,
        db,
        _upstreams: vec![v1, v2],
        bob,
    }
}

pub(crate) async fn access_token(gateway: &Gateway, tenant: &str, user: &str) -> String {
    let password = if tenant == "system" {
        crate::ADMIN_PASSWORD
    } else {
        DEMO_PASSWORD
    };
    let response = json_login(gateway, tenant, user, password).await;
    assert_eq!(response.status(), 200, "sign-in of {user}@{tenant}");
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// GET through the proxy as `token`: status, the version header, the body.
async fn get(gateway: &Gateway, path: &str, token: &str) -> (StatusCode, Option<String>, Value) {
    let response = client()
        .get(gateway.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let version = response
        .headers()
        .get("x-gatehouse-upstream-version")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, version, body)
}

#[tokio::test]
async fn each_tenant_reaches_its_version_with_our_identity_and_nothing_forged() {
    let p = proxied(&[]).await;
    let acme: String = sqlx::query_scalar("SELECT id::text FROM tenants WHERE slug = 'acme'")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    let demo = Rule::split("v1", "v2", 2000, "r1", false).unwrap();
    let expected = demo.version_for("orders", &acme, None).0.to_owned();
    until_in_force("the demo rollout is mirrored", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob)
            .await
            .1
            .as_deref()
            == Some(expected.as_str())
    })
    .await;

    let response = client()
        .get(p.gateway.url("/svc/orders/items/7?x=1&y=%20z"))
        .bearer_auth(&p.bob)
        .header("x-gatehouse-user", "admin")
        .header("X-Gatehouse-Roles", "platform-admin")
        .header("x-gatehouse-upstream-version", "v9")
        .header("x-forwarded-prefix", "/elsewhere")
        .header("cookie", "gh_session=not-for-upstreams; theme=dark")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-gatehouse-upstream-version"],
        expected.as_str()
    );
    assert!(response.headers().contains_key("x-request-id"));
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["version"], expected.as_str(), "{seen}");
    assert_eq!(
        seen["path"], "/items/7",
        "the /svc/orders prefix is removed"
    );
    assert_eq!(seen["query"], "x=1&y=%20z");
    let identity = seen["headers"].as_object().unwrap();
    assert_eq!(identity["x-gatehouse-user"], "bob");
    assert_eq!(identity["x-gatehouse-tenant"], "acme");
    assert!(
        identity["x-gatehouse-roles"]
            .as_str()
            .unwrap()
            .contains("member")
    );
    assert!(identity.contains_key("x-gatehouse-user-id"));
    assert_eq!(
        identity.len(),
        4,
        "only our four identity headers reach the upstream: {seen}"
    );
    let forwarded = seen["forwarded"].as_object().unwrap();
    assert_eq!(forwarded["x-forwarded-prefix"], "/svc/orders");
    assert!(
        forwarded["x-forwarded-for"]
            .as_str()
            .unwrap()
            .ends_with("127.0.0.1")
    );
    assert_eq!(forwarded["x-forwarded-proto"], "http");
    assert_eq!(
        seen["cookie"], "theme=dark",
        "our session cookie stays with us"
    );

    // A body goes through as sent.
    let body = vec![b'x'; 300_000];
    let posted = client()
        .post(p.gateway.url("/svc/orders/items"))
        .bearer_auth(&p.bob)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let posted: Value = posted.json().await.unwrap();
    assert_eq!(
        (posted["method"].as_str(), posted["body_bytes"].as_u64()),
        (Some("POST"), Some(300_000)),
        "no 64 KiB cap on the proxy: {posted}"
    );

    // 100% canary: v2; the rollout removed: the default, v1.
    set_canary(&p.db.pool, 10_000).await;
    until_in_force("100% canary", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob)
            .await
            .1
            .as_deref()
            == Some("v2")
    })
    .await;
    sqlx::query("DELETE FROM tenant_rollouts")
        .execute(&p.db.pool)
        .await
        .unwrap();
    until_in_force("rolled back", || async {
        let (status, version, body) = get(&p.gateway, "/svc/orders/items", &p.bob).await;
        status == 200 && version.as_deref() == Some("v1") && body["version"] == "v1"
    })
    .await;
}

#[tokio::test]
async fn who_may_pass_and_what_bad_requests_get() {
    let p = proxied(&[("GATEHOUSE_PROXY__LOGIN_TENANT", "acme")]).await;
    until_in_force("mirrored", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob).await.0 == 200
    })
    .await;
    // Nobody: an API client gets 401, a browser the sign-in page and back.
    let anonymous = client()
        .get(p.gateway.url("/svc/orders/items"))
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, 401).await;
    let browser = client()
        .get(p.gateway.url("/svc/orders/items?x=1"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 303);
    assert_eq!(
        browser.headers()["location"],
        "/t/acme/login?return_to=%2Fsvc%2Forders%2Fitems%3Fx%3D1"
    );
    let forged = client()
        .get(p.gateway.url("/svc/orders/items"))
        .header("x-gatehouse-user", "bob")
        .header("x-gatehouse-tenant", "acme")
        .send()
        .await
        .unwrap();
    expect_problem(forged, 401).await;
    // bob may read orders but not delete them (the same decision as forward auth).
    let delete = client()
        .delete(p.gateway.url("/svc/orders/1"))
        .bearer_auth(&p.bob)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(delete, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("delete on orders:1")
    );
    // Another tenant's platform admin: orders is not available to the system
    // tenant, so for him it does not exist (404, before any decision)...
    let admin = access_token(&p.gateway, "system", "admin").await;
    let as_admin = || async {
        client()
            .get(p.gateway.url("/svc/orders/items"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
    };
    let problem = expect_problem(as_admin().await, 404).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no service orders"),
        "{problem}"
    );
    // ...and once it is available, he still has no grant on it.
    crate::make_available(&p.gateway, "orders", "system", || async {
        as_admin().await.status() == 403
    })
    .await;
    // Dot segments, sent as they are (an HTTP library would resolve them).
    for path in ["/svc/orders/a/../../billing", "/svc/orders/%2e%2e/billing"] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port_of(&p.gateway)))
            .await
            .unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            p.bob
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("dot segments"), "{path}: {answer}");
    }
    // Bad names, unknown services.
    for (path, status, says) in [
        ("/svc/Orders!/x", 400, "service"),
        ("/svc/billing/x", 404, "no service billing is routed here"),
    ] {
        let response = client()
            .get(p.gateway.url(path))
            .bearer_auth(&p.bob)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, status).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{path}: {problem}"
        );
    }
    // A session cookie works for pages, and an unsafe method needs our origin.
    let session = crate::session_token(&p.gateway, "acme", "bob", DEMO_PASSWORD).await;
    let cookie = format!("gh_session={session}");
    let page = client()
        .get(p.gateway.url("/svc/orders/items"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cross_site = client()
        .post(p.gateway.url("/svc/orders/items"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    expect_problem(cross_site, 403).await;
    let same_site = client()
        .post(p.gateway.url("/svc/orders/items"))
        .header("cookie", &cookie)
        .header("origin", &p.gateway.base_url)
        .send()
        .await
        .unwrap();
    assert_eq!(same_site.status(), 200);
    // Signed out everywhere: the token is refused at once.
    let out = client()
        .post(p.gateway.url("/v1/auth/logout-all"))
        .bearer_auth(&p.bob)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success(), "{}", out.status());
    expect_problem(
        client()
            .get(p.gateway.url("/svc/orders/items"))
            .bearer_auth(&p.bob)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
}

#[tokio::test]
async fn a_dead_instance_costs_idempotent_requests_nothing_is_ejected_and_comes_back() {
    // Breakers open after 3 failures for 5 s (then 10 s, ...), probing every 100 ms.
    let p = proxied(&[
        ("GATEHOUSE_ROUTING__BREAKER_FAILURES", "3"),
        ("GATEHOUSE_ROUTING__BREAKER_COOLDOWN_MS", "5000"),
        ("GATEHOUSE_ROUTING__PROBE_INTERVAL_MS", "100"),
    ])
    .await;
    // acme on v1, chosen round robin between the live instance and a dead one.
    let dead_port = free_port();
    register(&p.db.pool, "v1", &format!("127.0.0.1:{dead_port}")).await;
    set_canary(&p.db.pool, 0).await;
    sqlx::query("UPDATE services SET strategy = 'round_robin' WHERE name = 'orders'")
        .execute(&p.db.pool)
        .await
        .unwrap();
    let post = || async {
        client()
            .post(p.gateway.url("/svc/orders/items"))
            .bearer_auth(&p.bob)
            .body("{}")
            .send()
            .await
            .unwrap()
    };
    // Wait until both v1 instances are mirrored: a POST then fails on the dead
    // one (502) instead of being retried, since a POST is not idempotent.
    let started = std::time::Instant::now();
    loop {
        let response = post().await;
        if response.status() == StatusCode::BAD_GATEWAY {
            let problem = expect_problem(response, 502).await;
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("could not connect"),
                "{problem}"
            );
            break;
        }
        assert_eq!(response.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the dead instance was never picked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // GETs are idempotent and bodyless: one on the dead instance is tried
    // again on the live one. They keep failing there, so its breaker opens.
    for _ in 0..6 {
        let (status, version, body) = get(&p.gateway, "/svc/orders/items", &p.bob).await;
        assert_eq!(
            (status, version.as_deref()),
            (StatusCode::OK, Some("v1")),
            "{body}"
        );
    }
    let metrics = crate::metrics_text(&p.gateway).await;
    assert!(
        metrics.contains("gatehouse_routing_ejections_total{service=\"orders\"} 1"),
        "the dead instance was ejected once"
    );
    // Ejected: POSTs no longer reach it. (A half-open probe could only land if
    // this loop outlasted the 5 s cool-down; one failed probe re-opens it for
    // 10 s, so at most one POST could fail even on a stalled host.)
    let mut failed = 0;
    for _ in 0..20 {
        if post().await.status() != StatusCode::OK {
            failed += 1;
        }
    }
    assert!(failed <= 1, "{failed} POSTs reached the ejected instance");
    // It comes back (under another label, to tell it apart): a half-open
    // probe succeeds after the cool-down and it takes requests again.
    let (_revived, _) = demo_upstream_on("v1-revived", dead_port, &[]);
    wait_for_port(dead_port).await;
    let started = std::time::Instant::now();
    loop {
        let (_, _, body) = get(&p.gateway, "/svc/orders/items", &p.bob).await;
        if body["version"] == "v1-revived" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the recovered instance was not readmitted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gateway's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The gateway's port.
pub(crate) fn port_of(gateway: &Gateway) -> u16 {
    gateway
        .base_url
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads one HTTP/1.1 response head (up to the blank line).
pub(crate) async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed"
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn a_100_mib_upload_streams_through_in_bounded_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let p = proxied(&[]).await;
    until_in_force("mirrored", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob).await.0 == 200
    })
    .await;
    let before = peak_rss_kib(p.gateway.pid());
    let port = port_of(&p.gateway);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "POST /svc/orders/upload HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\ncontent-length: {SIZE}\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n",
        p.bob
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![7u8; 1024 * 1024];
    for _ in 0..100 {
        stream.write_all(&chunk).await.unwrap();
    }
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(
        answer.contains(&format!("\"body_bytes\":{SIZE}")),
        "every byte reached the upstream: {answer}"
    );
    let after = peak_rss_kib(p.gateway.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 32,
        "the gateway's peak memory grew by {grown_mib} MiB for a 100 MiB upload"
    );
}

#[tokio::test]
async fn an_upgraded_connection_is_spliced_through_both_ways() {
    let p = proxied(&[("GATEHOUSE_PROXY__UPGRADES", "orders=gatehouse-echo")]).await;
    until_in_force("mirrored", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob).await.0 == 200
    })
    .await;
    let port = port_of(&p.gateway);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "GET /svc/orders/echo HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\nconnection: Upgrade\r\nupgrade: gatehouse-echo\r\n\r\n",
        p.bob
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_head(&mut stream).await.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 101"), "{answer}");
    assert!(answer.contains("upgrade: gatehouse-echo"), "{answer}");
    assert!(
        answer.contains("x-gatehouse-upstream-version: v"),
        "{answer}"
    );
    for message in ["ping", "a longer message, both ways"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
}

#[tokio::test]
async fn with_redis_away_requests_are_routed_from_the_last_snapshot() {
    let mut redis = gatehouse_testkit::PrivateRedis::start().await;
    let (gateway, db, _) = crate::cache::private_app(&redis, &[SAME_ORIGIN]).await;
    let (_v1, v1_port) = demo_upstream("v1");
    let (_v2, v2_port) = demo_upstream("v2");
    register(&db.pool, "v1", &format!("127.0.0.1:{v1_port}")).await;
    register(&db.pool, "v2", &format!("127.0.0.1:{v2_port}")).await;
    set_canary(&db.pool, 10_000).await;
    wait_for_port(v1_port).await;
    wait_for_port(v2_port).await;
    let bob = access_token(&gateway, "acme", "bob").await;
    until_in_force("acme on v2", || async {
        get(&gateway, "/svc/orders/items", &bob).await.1.as_deref() == Some("v2")
    })
    .await;
    redis.stop().await;
    for _ in 0..5 {
        let (status, version, body) = get(&gateway, "/svc/orders/items", &bob).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(version.as_deref(), Some("v2"), "the rollout still applies");
        assert_eq!(body["version"], "v2");
    }
    let metrics = crate::metrics_text(&gateway).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gatehouse_routing_local_picks_total ") && !l.ends_with(" 0")),
        "picks were counted as local"
    );
}

/// acme's tenant admin, for the admin API.
pub(crate) async fn alice(gateway: &Gateway) -> String {
    crate::session_token(gateway, "acme", "alice", DEMO_PASSWORD).await
}

async fn put_rollout(gateway: &Gateway, admin: &str, body: &Value) -> reqwest::Response {
    client()
        .put(gateway.url("/admin/api/v1/tenants/acme/rollouts/orders"))
        .bearer_auth(admin)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn acme_rollout(gateway: &Gateway, admin: &str) -> Value {
    let list: Value = client()
        .get(gateway.url("/admin/api/v1/tenants/acme/rollouts"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "orders")
        .cloned()
        .unwrap()
}

/// Polls `probe` every 50 ms for at most `bound` (generous: the canary
/// controller ticks every 200 ms here, ramps step every second).
async fn within<F, Fut>(what: &str, bound: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !probe().await {
        assert!(started.elapsed() < bound, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn system_audit(db: &TestDatabase) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT action, details FROM audit_events
          WHERE actor_kind = 'system' AND action LIKE 'rollout.%' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_canary_failing_a_fifth_of_its_requests_is_rolled_back_by_itself() {
    let (gateway, db, _) =
        seeded_app(&[SAME_ORIGIN, ("GATEHOUSE_ROUTING__CANARY_TICK_MS", "200")]).await;
    let (_v1, v1_port) = demo_upstream("v1");
    let (_v2, v2_port) = demo_upstream_on("v2", free_port(), &["--error-percent", "20"]);
    register(&db.pool, "v1", &format!("127.0.0.1:{v1_port}")).await;
    register(&db.pool, "v2", &format!("127.0.0.1:{v2_port}")).await;
    wait_for_port(v1_port).await;
    wait_for_port(v2_port).await;
    let bob = access_token(&gateway, "acme", "bob").await;
    let admin = alice(&gateway).await;
    let put = put_rollout(
        &gateway,
        &admin,
        &serde_json::json!({
            "stable": "v1", "canary": "v2", "percent": 100,
            "analysis": { "max_error_rate_increase": 0.05, "min_requests": 20, "window_s": 30 }
        }),
    )
    .await;
    assert_eq!(put.status(), 200);
    let put: Value = put.json().await.unwrap();
    assert_eq!(put["rollout"]["state"], "steady");
    until_in_force("acme on the canary", || async {
        get(&gateway, "/svc/orders/items", &bob).await.1.as_deref() == Some("v2")
    })
    .await;
    // Traffic: v2 fails exactly 20 of every 100 (5xx passes through to bob).
    let mut failed = 0;
    for _ in 0..40 {
        let (status, _, _) = get(&gateway, "/svc/orders/items", &bob).await;
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            failed += 1;
        }
    }
    assert!(failed >= 6, "the canary failed {failed} of 40");
    within(
        "rolled back by the analysis",
        Duration::from_secs(15),
        || async { acme_rollout(&gateway, &admin).await["state"] == "rolled_back" },
    )
    .await;
    let rollout = acme_rollout(&gateway, &admin).await;
    assert_eq!(rollout["canary_buckets"], 0);
    let reason = rollout["state_reason"].as_str().unwrap();
    assert!(reason.starts_with("error rate"), "{reason}");
    until_in_force("acme back on v1", || async {
        get(&gateway, "/svc/orders/items", &bob).await.1.as_deref() == Some("v1")
    })
    .await;
    let audit = system_audit(&db).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].0, "rollout.rolled_back");
    assert_eq!(audit[0].1["reason"], reason);
    assert_eq!(audit[0].1["from_buckets"], 10_000);
}

/// Finding 5b of the second security round: canary verdicts pooled every
/// tenant's traffic on a version, so the users of one tenant could roll back
/// another tenant's canary by calling a broken endpoint of that version. Now
/// each tenant's canary is judged on its own traffic: the attacker's tenant
/// (here `system`, also on a canary of v2) is rolled back by its own failures,
/// and acme's canary of the same version, healthy in acme's traffic, stays.
#[tokio::test]
async fn another_tenants_failures_never_roll_back_a_tenants_canary() {
    let (gateway, db, _) =
        seeded_app(&[SAME_ORIGIN, ("GATEHOUSE_ROUTING__CANARY_TICK_MS", "200")]).await;
    let (_v1, v1_port) = demo_upstream("v1");
    let (_v2, v2_port) = demo_upstream_on("v2", free_port(), &["--fail-path", "/broken"]);
    register(&db.pool, "v1", &format!("127.0.0.1:{v1_port}")).await;
    register(&db.pool, "v2", &format!("127.0.0.1:{v2_port}")).await;
    wait_for_port(v1_port).await;
    wait_for_port(v2_port).await;
    let analysis =
        serde_json::json!({ "max_error_rate_increase": 0.05, "min_requests": 20, "window_s": 60 });
    crate::make_available(&gateway, "orders", "system", || async { true }).await;
    let canary =
        serde_json::json!({"stable": "v1", "canary": "v2", "percent": 100, "analysis": analysis});
    // acme rolls v2 out to all of its traffic, judged by the analysis.
    let alice = alice(&gateway).await;
    assert_eq!(put_rollout(&gateway, &alice, &canary).await.status(), 200);
    // The attacker's tenant runs the same canary, and its user may call orders.
    let platform = crate::session_token(&gateway, "system", "admin", crate::ADMIN_PASSWORD).await;
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/admin/api/v1/tenants/system/roles/platform-admin/permissions",
            serde_json::json!({"resource": "orders:*", "action": "read"}),
        ),
        (
            reqwest::Method::PUT,
            "/admin/api/v1/tenants/system/rollouts/orders",
            canary.clone(),
        ),
    ] {
        let response = admin_call(&gateway, &platform, method, path, Some(body)).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    let attacker = access_token(&gateway, "system", "admin").await;
    let bob = access_token(&gateway, "acme", "bob").await;
    until_in_force("both tenants on the canary", || async {
        get(&gateway, "/svc/orders/items", &bob).await.1.as_deref() == Some("v2")
            && get(&gateway, "/svc/orders/items", &attacker)
                .await
                .1
                .as_deref()
                == Some("v2")
    })
    .await;
    // acme's own traffic on v2 is healthy and enough to be judged...
    for _ in 0..30 {
        assert_eq!(
            get(&gateway, "/svc/orders/items", &bob).await.0,
            StatusCode::OK
        );
    }
    // ...while the attacker sends up to twice as many failures to the same
    // version (fewer reach it if the controller rolls the attacker's own
    // canary back meanwhile: then v1 answers the rest).
    let mut failed_on_v2 = 0;
    for _ in 0..60 {
        let (status, version, _) = get(&gateway, "/svc/orders/broken", &attacker).await;
        match (status, version.as_deref()) {
            (StatusCode::INTERNAL_SERVER_ERROR, Some("v2")) => failed_on_v2 += 1,
            (StatusCode::OK, Some("v1")) => {}
            other => panic!("unexpected answer to the attacker: {other:?}"),
        }
    }
    assert!(
        failed_on_v2 >= 20,
        "the attacker's failures on v2 ({failed_on_v2}) are enough to be judged"
    );
    let system_rollout = || async {
        let path = "/admin/api/v1/tenants/system/rollouts";
        let list: Value = admin_call(&gateway, &platform, reqwest::Method::GET, path, None)
            .await
            .json()
            .await
            .unwrap();
        list["rollouts"][0].clone()
    };
    // The controller judged with the failures counted: the attacker's own
    // canary is rolled back by them...
    within(
        "the attacker's tenant rolled back by its own failures",
        Duration::from_secs(15),
        || async { system_rollout().await["state"] == "rolled_back" },
    )
    .await;
    // ...and acme's is untouched, judged healthy on acme's traffic, through
    // further ticks.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rollout = acme_rollout(&gateway, &alice).await;
    assert_eq!(rollout["state"], "steady", "{rollout}");
    assert_eq!(rollout["canary_buckets"], 10_000);
    assert_eq!(
        get(&gateway, "/svc/orders/items", &bob).await.1.as_deref(),
        Some("v2")
    );
    let audit = system_audit(&db).await;
    assert_eq!(audit.len(), 1, "one rollback, the attacker's: {audit:?}");
}

#[tokio::test]
async fn a_ramp_steps_on_its_schedule_and_bad_ramps_are_refused() {
    let (gateway, db, _) =
        seeded_app(&[SAME_ORIGIN, ("GATEHOUSE_ROUTING__CANARY_TICK_MS", "200")]).await;
    let admin = alice(&gateway).await;
    for (body, says) in [
        (
            serde_json::json!({"stable": "v1", "canary": "v2", "ramp": {"percents": [10, 50], "interval_s": 1}}),
            "end at 100",
        ),
        (
            serde_json::json!({"stable": "v1", "canary": "v2", "ramp": {"percents": [50, 10, 100], "interval_s": 1}}),
            "rise",
        ),
        (
            serde_json::json!({"stable": "v1", "canary": "v2", "ramp": {"percents": [100], "interval_s": 0}}),
            "interval_s",
        ),
        (
            serde_json::json!({"stable": "v1", "canary": "v2", "percent": 5, "ramp": {"percents": [100], "interval_s": 1}}),
            "not both",
        ),
        (
            serde_json::json!({"stable": "v1", "ramp": {"percents": [100], "interval_s": 1}}),
            "need a canary",
        ),
        (
            serde_json::json!({"stable": "v1", "canary": "v2", "percent": 5, "analysis": {"window_s": 5}}),
            "window_s",
        ),
        (
            serde_json::json!({"stable": "v1", "canary": "v2", "percent": 5, "analysis": {"max_p99_ratio": 0.5}}),
            "max_p99_ratio",
        ),
    ] {
        // The admin API answers a well-formed body it cannot accept with 422.
        let problem = expect_problem(put_rollout(&gateway, &admin, &body).await, 422).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{body}: {problem}"
        );
    }
    assert!(system_audit(&db).await.is_empty());

    let put = put_rollout(
        &gateway,
        &admin,
        &serde_json::json!({"stable": "v1", "canary": "v2", "ramp": {"percents": [10, 50, 100], "interval_s": 1}}),
    )
    .await;
    assert_eq!(put.status(), 200);
    let put: Value = put.json().await.unwrap();
    assert_eq!(put["rollout"]["state"], "ramping");
    assert_eq!(
        put["rollout"]["canary_buckets"], 1000,
        "the first step at once"
    );
    assert_eq!(
        put["rollout"]["ramp_steps"],
        serde_json::json!([1000, 5000, 10_000])
    );
    within("the ramp completes", Duration::from_secs(20), || async {
        acme_rollout(&gateway, &admin).await["state"] == "completed"
    })
    .await;
    assert_eq!(
        acme_rollout(&gateway, &admin).await["canary_buckets"],
        10_000
    );
    let steps: Vec<(String, i64)> = system_audit(&db)
        .await
        .into_iter()
        .map(|(action, details)| (action, details["to_buckets"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("rollout.step".to_owned(), 5000),
            ("rollout.completed".to_owned(), 10_000)
        ]
    );
}

#[tokio::test]
async fn a_rollback_on_one_gateway_is_in_force_on_another_at_once() {
    let (a, db, vars) = seeded_app(&[SAME_ORIGIN]).await;
    let b = Gateway::spawn(&vars).await;
    let (_v1, v1_port) = demo_upstream("v1");
    let (_v2, v2_port) = demo_upstream("v2");
    register(&db.pool, "v1", &format!("127.0.0.1:{v1_port}")).await;
    register(&db.pool, "v2", &format!("127.0.0.1:{v2_port}")).await;
    wait_for_port(v1_port).await;
    wait_for_port(v2_port).await;
    let bob = access_token(&b, "acme", "bob").await;
    let admin = alice(&a).await;
    let put = put_rollout(
        &a,
        &admin,
        &serde_json::json!({"stable": "v1", "canary": "v2", "percent": 100}),
    )
    .await;
    assert_eq!(put.status(), 200);
    until_in_force("B routes acme to the canary", || async {
        get(&b, "/svc/orders/items", &bob).await.1.as_deref() == Some("v2")
    })
    .await;
    let rolled = client()
        .post(a.url("/admin/api/v1/tenants/acme/rollouts/orders/rollback"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(rolled.status(), 200);
    let lag = until_in_force("B routes acme back to v1", || async {
        get(&b, "/svc/orders/items", &bob).await.1.as_deref() == Some("v1")
    })
    .await;
    // The figure (target: 100 ms) is measured, not asserted: see BENCHMARKS.md.
    eprintln!("rollback on A in force on B after {} ms", lag.as_millis());
}

/// An admin API call as `admin`.
async fn admin_call(
    gateway: &Gateway,
    admin: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = client()
        .request(method, gateway.url(path))
        .bearer_auth(admin);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn beta_testers_reach_the_new_version_whatever_the_rollout() {
    use reqwest::Method;
    let p = proxied(&[]).await;
    let admin = alice(&p.gateway).await;
    // acme pinned to v1 for everyone.
    let pinned = put_rollout(&p.gateway, &admin, &serde_json::json!({"stable": "v1"})).await;
    assert_eq!(pinned.status(), 200);
    let rules = "/admin/api/v1/tenants/acme/rollouts/orders/subject-rules";
    // Bad rules are refused, naming the field; none is written.
    for (body, says) in [
        (serde_json::json!({"version": "v2"}), "either role"),
        (
            serde_json::json!({"version": "v2", "role": "beta", "attribute": "x", "equals": 1}),
            "either role",
        ),
        (
            serde_json::json!({"version": "v2", "attribute": "beta"}),
            "equals",
        ),
        (
            serde_json::json!({"version": "v2", "role": "Beta Testers"}),
            "role",
        ),
        (
            serde_json::json!({"version": "v2", "attribute": "1x", "equals": true}),
            "attribute",
        ),
        (serde_json::json!({"version": "v9", "role": "beta"}), "v9"),
    ] {
        let response =
            admin_call(&p.gateway, &admin, Method::POST, rules, Some(body.clone())).await;
        let problem = expect_problem(response, 422).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{body}: {problem}"
        );
    }
    let bob_admin = crate::session_token(&p.gateway, "acme", "bob", DEMO_PASSWORD).await;
    expect_problem(
        admin_call(
            &p.gateway,
            &bob_admin,
            Method::POST,
            rules,
            Some(serde_json::json!({"version": "v2", "role": "member"})),
        )
        .await,
        403,
    )
    .await;

    // Beta testers (a role) go to v2.
    let added = admin_call(
        &p.gateway,
        &admin,
        Method::POST,
        rules,
        Some(serde_json::json!({"version": "v2", "role": "beta-tester"})),
    )
    .await;
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    let rule_id = added["subject_rule"]["id"].as_str().unwrap().to_owned();
    let role = admin_call(
        &p.gateway,
        &admin,
        Method::POST,
        "/admin/api/v1/tenants/acme/roles",
        Some(serde_json::json!({"name": "beta-tester", "description": "Tries new versions first", "parent": "member"})),
    )
    .await;
    assert_eq!(role.status(), 201);
    until_in_force("bob, no beta tester yet, on v1", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob)
            .await
            .1
            .as_deref()
            == Some("v1")
    })
    .await;
    let assigned = admin_call(
        &p.gateway,
        &admin,
        Method::PUT,
        "/admin/api/v1/tenants/acme/users/bob/roles/beta-tester",
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(assigned.status(), 200);
    until_in_force("bob the beta tester on v2", || async {
        let (_, version, body) = get(&p.gateway, "/svc/orders/items", &p.bob).await;
        version.as_deref() == Some("v2") && body["version"] == "v2"
    })
    .await;
    // Forward auth names the same version for nginx.
    let verify = client()
        .get(p.gateway.url("/v1/verify?tenant=acme&service=orders"))
        .bearer_auth(&p.bob)
        .header("x-original-method", "GET")
        .header("x-original-uri", "/orders/1")
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), 200);
    assert_eq!(verify.headers()["x-gatehouse-upstream-version"], "v2");
    // alice is no beta tester: v1.
    let alice_jwt = access_token(&p.gateway, "acme", "alice").await;
    assert_eq!(
        get(&p.gateway, "/svc/orders/items", &alice_jwt)
            .await
            .1
            .as_deref(),
        Some("v1")
    );
    // The rule listed, then deleted: bob is back on the rollout's version.
    let listed: Value = admin_call(&p.gateway, &admin, Method::GET, rules, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["subject_rules"][0]["role"], "beta-tester");
    let deleted = admin_call(
        &p.gateway,
        &admin,
        Method::DELETE,
        &format!("{rules}/{rule_id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    until_in_force("bob back on v1", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob)
            .await
            .1
            .as_deref()
            == Some("v1")
    })
    .await;
    expect_problem(
        admin_call(
            &p.gateway,
            &admin,
            Method::DELETE,
            &format!("{rules}/{rule_id}"),
            None,
        )
        .await,
        404,
    )
    .await;
    // An attribute rule: users whose plan is "gold".
    sqlx::query(
        "UPDATE users SET attributes = '{\"plan\": \"gold\"}' WHERE username_normalized = 'alice'",
    )
    .execute(&p.db.pool)
    .await
    .unwrap();
    let gold = admin_call(
        &p.gateway,
        &admin,
        Method::POST,
        rules,
        Some(serde_json::json!({"version": "v2", "attribute": "plan", "equals": "gold"})),
    )
    .await;
    assert_eq!(gold.status(), 201);
    until_in_force("alice (gold) on v2", || async {
        get(&p.gateway, "/svc/orders/items", &alice_jwt)
            .await
            .1
            .as_deref()
            == Some("v2")
    })
    .await;
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE action LIKE 'subject_rule.%' AND outcome = 'success' ORDER BY id",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "subject_rule.add",
            "subject_rule.delete",
            "subject_rule.add"
        ]
    );
}

#[tokio::test]
async fn a_version_drains_then_retires_only_when_nothing_names_it() {
    use reqwest::Method;
    let p = proxied(&[]).await;
    let platform = crate::session_token(&p.gateway, "system", "admin", crate::ADMIN_PASSWORD).await;
    let tenant_admin = alice(&p.gateway).await;
    let patch = |version: &'static str, body: Value| {
        let (gateway, platform) = (&p.gateway, platform.clone());
        async move {
            admin_call(
                gateway,
                &platform,
                Method::PATCH,
                &format!("/admin/api/v1/services/orders/versions/{version}"),
                Some(body),
            )
            .await
        }
    };
    // The demo rollout names v1 (stable) and v2 (canary); v1 is the default.
    let problem = expect_problem(
        patch("v2", serde_json::json!({"status": "retired"})).await,
        409,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("tenant rollout"),
        "{problem}"
    );
    let problem = expect_problem(
        patch("v1", serde_json::json!({"status": "retired"})).await,
        409,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("default"),
        "{problem}"
    );
    expect_problem(
        patch("v2", serde_json::json!({"status": "gone"})).await,
        422,
    )
    .await;
    expect_problem(patch("v2", serde_json::json!({})).await, 422).await;
    // A tenant admin may not change versions (the platform tenant is not theirs: 404).
    expect_problem(
        admin_call(
            &p.gateway,
            &tenant_admin,
            Method::PATCH,
            "/admin/api/v1/services/orders/versions/v2",
            Some(serde_json::json!({"status": "draining"})),
        )
        .await,
        404,
    )
    .await;

    // Draining: the tenants it has keep it, nobody new gets it.
    let drained = patch("v2", serde_json::json!({"status": "draining"})).await;
    assert_eq!(drained.status(), 200);
    let drained: Value = drained.json().await.unwrap();
    assert_eq!(drained["status"], "draining");
    let kept = put_rollout(
        &p.gateway,
        &tenant_admin,
        &serde_json::json!({"stable": "v1", "canary": "v2", "percent": 50}),
    )
    .await;
    assert_eq!(
        kept.status(),
        200,
        "a rollout already naming v2 may keep it"
    );
    let problem = expect_problem(
        admin_call(
            &p.gateway,
            &tenant_admin,
            Method::POST,
            "/admin/api/v1/tenants/acme/rollouts/orders/subject-rules",
            Some(serde_json::json!({"version": "v2", "role": "member"})),
        )
        .await,
        409,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("draining"),
        "{problem}"
    );
    expect_problem(patch("v2", serde_json::json!({"default": true})).await, 409).await;

    // Once no rollout names it, it retires (its instances leave the mirror),
    // and nothing can name it again, not even SQL by hand (the trigger).
    let removed = admin_call(
        &p.gateway,
        &tenant_admin,
        Method::DELETE,
        "/admin/api/v1/tenants/acme/rollouts/orders",
        None,
    )
    .await;
    assert_eq!(removed.status(), 204);
    let retired = patch("v2", serde_json::json!({"status": "retired"})).await;
    assert_eq!(retired.status(), 200);
    let problem = expect_problem(
        put_rollout(
            &p.gateway,
            &tenant_admin,
            &serde_json::json!({"stable": "v2"}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("retired"),
        "{problem}"
    );
    let listed: Value = admin_call(
        &p.gateway,
        &platform,
        Method::GET,
        "/admin/api/v1/services",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let orders = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders["version_status"]["v2"], "retired", "{orders}");
    until_in_force("acme on the default", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob)
            .await
            .1
            .as_deref()
            == Some("v1")
    })
    .await;
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT target FROM audit_events WHERE action = 'service_version.status' ORDER BY id",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, ["orders@v2: draining", "orders@v2: retired"]);
}

#[tokio::test]
async fn random_and_hash_strategies_pick_in_memory_and_still_eject_a_dead_instance() {
    let p = proxied(&[
        ("GATEHOUSE_ROUTING__BREAKER_FAILURES", "3"),
        ("GATEHOUSE_ROUTING__BREAKER_COOLDOWN_MS", "60000"),
    ])
    .await;
    let dead_port = free_port();
    register(&p.db.pool, "v1", &format!("127.0.0.1:{dead_port}")).await;
    set_canary(&p.db.pool, 0).await;
    sqlx::query("UPDATE services SET strategy = 'random' WHERE name = 'orders'")
        .execute(&p.db.pool)
        .await
        .unwrap();
    let memory_picks = || async {
        crate::metrics_text(&p.gateway)
            .await
            .lines()
            .find_map(|l| l.strip_prefix("gatehouse_routing_memory_picks_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    until_in_force("picks are made in memory", || async {
        get(&p.gateway, "/svc/orders/items", &p.bob).await;
        memory_picks().await > 0.0
    })
    .await;
    // POSTs are not retried: the dead instance fails some until its breaker
    // opens (3 failures, recorded at once), and the health view read a few
    // times a second takes it out of the in-memory picks too.
    let post = || async {
        client()
            .post(p.gateway.url("/svc/orders/items"))
            .bearer_auth(&p.bob)
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
    };
    let started = std::time::Instant::now();
    let mut clean_run = 0;
    let mut failures = 0;
    while clean_run < 30 {
        if post().await == StatusCode::OK {
            clean_run += 1;
        } else {
            failures += 1;
            clean_run = 0;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the dead instance is still picked after {failures} failures"
        );
    }
    // (How many POSTs failed first depends on timing: the spawned outcome
    // record races the next request. Not asserted.)
    let _ = failures;
    let metrics = crate::metrics_text(&p.gateway).await;
    assert!(
        metrics.contains("gatehouse_routing_ejections_total{service=\"orders\"} 1"),
        "the dead instance was ejected (by retried GETs or failed POSTs)"
    );
    let before = memory_picks().await;
    for _ in 0..20 {
        assert_eq!(get(&p.gateway, "/svc/orders/items", &p.bob).await.0, 200);
    }
    assert!(
        memory_picks().await >= before + 20.0,
        "every pick was made in memory"
    );
}
