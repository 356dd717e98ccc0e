//! Routing resolution through the real binary: the demo's `orders` service,
//! with instances and rollouts written in Postgres by hand (as an operator
//! would; the admin API for them is still to come), mirrored into Redis by the
//! `routing.changed` events their triggers write, and resolved by the Lua
//! selection scripts. Then who may ask, and what bad requests get.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{client, expect_problem, json_login, seeded_app, service_client, until_in_force};
use gatehouse_routing::Rule;
use gatehouse_testkit::Gateway;

async fn resolve(gateway: &Gateway, id: &str, secret: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/routing/resolve"))
        .basic_auth(id, Some(secret))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// One instance per demo version, static (no heartbeat TTL).
async fn add_instances(pool: &sqlx::PgPool) {
    sqlx::query(
        "INSERT INTO service_instances (id, service_id, version_id, address)
         SELECT gen_random_uuid(), s.id, v.id,
                CASE v.version WHEN 'v1' THEN '127.0.0.1:19101' ELSE '127.0.0.1:19102' END
           FROM services s JOIN service_versions v ON v.service_id = s.id
          WHERE s.name = 'orders'",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn resolution_follows_the_rollout_and_every_change_to_it() {
    let (gateway, db, _) = seeded_app(&[]).await;
    add_instances(&db.pool).await;
    let secret = service_client(&gateway, "router", None).await;
    let acme: String = sqlx::query_scalar("SELECT id::text FROM tenants WHERE slug = 'acme'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let ask = json!({ "tenant": "acme", "service": "orders" });
    let answer = || async {
        let response = resolve(&gateway, "router", &secret, &ask).await;
        if response.status() != StatusCode::OK {
            return Value::Null;
        }
        response.json::<Value>().await.unwrap()
    };
    // The demo rollout: v1 → v2 for 20% of tenants, per tenant. Which side
    // acme is on is the stable bucket's answer, the same one Rust computes.
    let demo = Rule::split("v1", "v2", 2000, "r1", false).unwrap();
    let (expected, _) = demo.version_for("orders", &acme, None);
    let expected = expected.to_owned();
    until_in_force("the demo rollout is mirrored", || async {
        answer().await["version"] == expected.as_str()
    })
    .await;
    let first = answer().await;
    let port = if expected == "v1" { "19101" } else { "19102" };
    assert_eq!(first["instance"], format!("127.0.0.1:{port}"), "{first}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .starts_with("tenant_rule:")
    );

    // The canary grows to 100%: acme is on v2.
    sqlx::query("UPDATE tenant_rollouts SET canary_buckets = 10000")
        .execute(&db.pool)
        .await
        .unwrap();
    until_in_force("100% canary", || async {
        answer().await["version"] == "v2"
    })
    .await;
    // Rollback: the rollout is removed; acme follows the default (v1).
    sqlx::query("DELETE FROM tenant_rollouts")
        .execute(&db.pool)
        .await
        .unwrap();
    until_in_force("rolled back to the default", || async {
        let a = answer().await;
        a["version"] == "v1" && a["reason"] == "default"
    })
    .await;
    // v1's only instance is deregistered: no healthy instance, 503.
    sqlx::query(
        "UPDATE service_instances SET status = 'deregistered' WHERE address = '127.0.0.1:19101'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    until_in_force("deregistered", || async {
        resolve(&gateway, "router", &secret, &ask).await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let problem = expect_problem(resolve(&gateway, "router", &secret, &ask).await, 503).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no healthy instance of orders v1"),
        "{problem}"
    );
}

#[tokio::test]
async fn only_service_clients_may_ask_and_only_about_their_tenant() {
    let (gateway, db, _) = seeded_app(&[]).await;
    add_instances(&db.pool).await;
    let ask = json!({ "tenant": "acme", "service": "orders" });
    // Nobody, a wrong secret, a user's session: 401.
    let anonymous = client()
        .post(gateway.url("/v1/routing/resolve"))
        .json(&ask)
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, 401).await;
    let platform = service_client(&gateway, "router", None).await;
    expect_problem(
        resolve(&gateway, "router", "not-the-secret", &ask).await,
        401,
    )
    .await;
    let user = json_login(&gateway, "acme", "alice", crate::DEMO_PASSWORD).await;
    let user: Value = user.json().await.unwrap();
    let as_user = client()
        .post(gateway.url("/v1/routing/resolve"))
        .bearer_auth(user["access_token"].as_str().unwrap())
        .json(&ask)
        .send()
        .await
        .unwrap();
    expect_problem(as_user, 401).await;
    // A client bound to another tenant learns nothing about acme's routes.
    let bound = service_client(&gateway, "system-router", Some("system")).await;
    let refused = expect_problem(resolve(&gateway, "system-router", &bound, &ask).await, 403).await;
    assert!(refused["detail"].as_str().unwrap().contains("system"));
    // Bad input: the field is named; unknown names are 404, never 500.
    let bad_tenant = json!({ "tenant": "../acme", "service": "orders" });
    let problem = expect_problem(
        resolve(&gateway, "router", &platform, &bad_tenant).await,
        400,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().starts_with("tenant"),
        "{problem}"
    );
    let bad_service = json!({ "tenant": "acme", "service": "Orders Service" });
    let problem = expect_problem(
        resolve(&gateway, "router", &platform, &bad_service).await,
        400,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().starts_with("service"),
        "{problem}"
    );
    let unknown = json!({ "tenant": "acme", "service": "billing" });
    expect_problem(resolve(&gateway, "router", &platform, &unknown).await, 404).await;
    let no_tenant = json!({ "tenant": "nosuch", "service": "orders" });
    expect_problem(
        resolve(&gateway, "router", &platform, &no_tenant).await,
        404,
    )
    .await;
    let extra = json!({ "tenant": "acme", "service": "orders", "instance": "x" });
    let status = resolve(&gateway, "router", &platform, &extra)
        .await
        .status();
    assert!(status.is_client_error(), "{status}");
}
