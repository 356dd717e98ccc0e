//! Routing resolution through the real binary: the demo's `orders` service,
//! with instances and rollouts written in Postgres by hand (as an operator
//! would; the admin API for them is still to come), mirrored into Redis by the
//! `routing.changed` events their triggers write, and resolved by the Lua
//! selection scripts. Then who may ask, and what bad requests get; then the
//! admin API that operators and tenant administrators use instead of SQL.

#![allow(
    clippy::too_many_lines,
    reason = "end-to-end scenarios read best as one story each"
)]

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

/// `method path` with `session` and an optional JSON body.
async fn call(
    gateway: &Gateway,
    session: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = client()
        .request(method, gateway.url(&format!("/admin/api/v1{path}")))
        .bearer_auth(session);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// acme's rollouts, as its administrator `session` lists them.
async fn rollouts(gateway: &Gateway, session: &str) -> Value {
    let response = call(
        gateway,
        session,
        reqwest::Method::GET,
        "/tenants/acme/rollouts",
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn operators_register_versions_and_instances_and_roll_out_through_the_api() {
    use reqwest::Method;
    let (gateway, db, _) = seeded_app(&[]).await;
    let admin = crate::session_token(&gateway, "system", "admin", crate::ADMIN_PASSWORD).await;
    let alice = crate::session_token(&gateway, "acme", "alice", crate::DEMO_PASSWORD).await;
    let secret = service_client(&gateway, "router", None).await;
    let create = || {
        call(
            &gateway,
            &admin,
            Method::POST,
            "/services",
            Some(json!({"name": "billing"})),
        )
    };
    assert_eq!(create().await.status(), 201);
    expect_problem(create().await, 409).await;
    for version in ["v1", "v2"] {
        let response = call(
            &gateway,
            &admin,
            Method::POST,
            "/services/billing/versions",
            Some(json!({ "version": version })),
        )
        .await;
        assert_eq!(response.status(), 201);
    }
    let listed: Value = call(&gateway, &admin, Method::GET, "/services", None)
        .await
        .json()
        .await
        .unwrap();
    let billing = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "billing")
        .unwrap()
        .clone();
    assert_eq!(billing["versions"], json!(["v1", "v2"]));
    assert_eq!(
        billing["default_version"], "v1",
        "the first version is the default"
    );
    let register = |body: Value| {
        call(
            &gateway,
            &admin,
            Method::POST,
            "/services/billing/instances",
            Some(body),
        )
    };
    let v1: Value = register(json!({"version": "v1", "address": "127.0.0.1:19201"}))
        .await
        .json()
        .await
        .unwrap();
    let v2 =
        register(json!({"version": "v2", "address": "127.0.0.1:19202", "heartbeat_ttl_ms": 1000}))
            .await;
    assert_eq!(v2.status(), 201);
    let v2: Value = v2.json().await.unwrap();
    let ask = json!({ "tenant": "acme", "service": "billing" });
    // billing is not available to acme yet: nobody of acme is routed to it,
    // acme's administrator cannot roll it out or add rules for it, and
    // cannot make it available herself (platform calls are 404 to her, as
    // every other tenant's are).
    let problem = expect_problem(resolve(&gateway, "router", &secret, &ask).await, 404).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not available to tenant acme"),
        "{problem}"
    );
    for (path, body) in [
        ("/tenants/acme/rollouts/billing", json!({"stable": "v1"})),
        (
            "/tenants/acme/rollouts/billing/subject-rules",
            json!({"version": "v2", "role": "member"}),
        ),
    ] {
        let method = if path.ends_with("subject-rules") {
            Method::POST
        } else {
            Method::PUT
        };
        let problem =
            expect_problem(call(&gateway, &alice, method, path, Some(body)).await, 404).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("not available"),
            "{path}: {problem}"
        );
    }
    let listed: Value = call(
        &gateway,
        &alice,
        Method::GET,
        "/tenants/acme/services",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"], "{listed}");
    let make_available = || {
        call(
            &gateway,
            &admin,
            Method::PUT,
            "/services/billing/tenants/acme",
            None,
        )
    };
    expect_problem(
        call(
            &gateway,
            &alice,
            Method::PUT,
            "/services/billing/tenants/acme",
            None,
        )
        .await,
        404,
    )
    .await;
    for (path, status) in [
        ("/services/nothing/tenants/acme", 404),
        ("/services/billing/tenants/nobody", 404),
        ("/services/Bad%20Name/tenants/acme", 404),
    ] {
        expect_problem(
            call(&gateway, &admin, Method::PUT, path, None).await,
            status,
        )
        .await;
    }
    assert_eq!(make_available().await.status(), 201);
    assert_eq!(make_available().await.status(), 200, "idempotent");
    let granted: Value = call(
        &gateway,
        &admin,
        Method::GET,
        "/services/billing/tenants",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(granted["tenants"][0]["tenant"], "acme", "{granted}");
    assert_eq!(granted["tenants"].as_array().unwrap().len(), 1);
    let answer = || async {
        let response = resolve(&gateway, "router", &secret, &ask).await;
        match response.status() {
            StatusCode::OK => response.json::<Value>().await.unwrap()["instance"]
                .as_str()
                .unwrap()
                .to_owned(),
            other => other.as_u16().to_string(),
        }
    };
    until_in_force("the default version's instance", || async {
        answer().await == "127.0.0.1:19201"
    })
    .await;

    // acme's own administrator rolls v2 out to all of acme.
    let put = call(
        &gateway,
        &alice,
        Method::PUT,
        "/tenants/acme/rollouts/billing",
        Some(json!({"stable": "v1", "canary": "v2", "percent": 100})),
    )
    .await;
    assert_eq!(put.status(), 200);
    let put: Value = put.json().await.unwrap();
    assert_eq!(put["rollout"]["canary_buckets"], 10_000);
    // v2 heart-beats (its TTL is 1 s): it takes acme's requests while it does.
    let beat = || async {
        let path = format!(
            "/services/billing/instances/{}/heartbeat",
            v2["id"].as_str().unwrap()
        );
        assert_eq!(
            call(&gateway, &admin, Method::POST, &path, None)
                .await
                .status(),
            204
        );
    };
    until_in_force("acme on v2", || async {
        beat().await;
        answer().await == "127.0.0.1:19202"
    })
    .await;
    // Its heartbeats stop: it drops out of selection by itself (503: v2 has
    // no live instance), and comes back with the next heartbeat.
    until_in_force("a silent instance drops out", || async {
        answer().await == "503"
    })
    .await;
    until_in_force("back with a heartbeat", || async {
        beat().await;
        answer().await == "127.0.0.1:19202"
    })
    .await;
    // Instant rollback: every bucket back on v1.
    let rolled: Value = call(
        &gateway,
        &alice,
        Method::POST,
        "/tenants/acme/rollouts/billing/rollback",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rolled["rollout"]["canary_buckets"], 0);
    until_in_force("rolled back", || async {
        answer().await == "127.0.0.1:19201"
    })
    .await;
    let listed: Value = rollouts(&gateway, &alice).await;
    assert!(
        listed["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["service"] == "billing")
    );
    // The rollout removed: acme follows the default; removing it twice is 404.
    let removed = call(
        &gateway,
        &alice,
        Method::DELETE,
        "/tenants/acme/rollouts/billing",
        None,
    )
    .await;
    assert_eq!(removed.status(), 204);
    expect_problem(
        call(
            &gateway,
            &alice,
            Method::DELETE,
            "/tenants/acme/rollouts/billing",
            None,
        )
        .await,
        404,
    )
    .await;
    // v1's instance deregistered: nothing can take acme's billing requests.
    let path = format!("/services/billing/instances/{}", v1["id"].as_str().unwrap());
    assert_eq!(
        call(&gateway, &admin, Method::DELETE, &path, None)
            .await
            .status(),
        204
    );
    until_in_force("deregistered", || async { answer().await == "503" }).await;
    // Withdrawn from acme: its rollout and subject rules go with it, and
    // nobody of acme is routed to billing any more.
    assert_eq!(
        call(
            &gateway,
            &alice,
            Method::PUT,
            "/tenants/acme/rollouts/billing",
            Some(json!({"stable": "v1", "canary": "v2", "percent": 50})),
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        call(
            &gateway,
            &alice,
            Method::POST,
            "/tenants/acme/rollouts/billing/subject-rules",
            Some(json!({"version": "v2", "role": "member"})),
        )
        .await
        .status(),
        201
    );
    let withdraw = || {
        call(
            &gateway,
            &admin,
            Method::DELETE,
            "/services/billing/tenants/acme",
            None,
        )
    };
    let withdrawn = withdraw().await;
    assert_eq!(withdrawn.status(), 200);
    let withdrawn: Value = withdrawn.json().await.unwrap();
    assert_eq!(
        withdrawn["removed"],
        json!({"rollouts": 1, "subject_rules": 1})
    );
    expect_problem(withdraw().await, 404).await;
    until_in_force("not available any more", || async {
        answer().await == "404"
    })
    .await;
    let listed: Value = rollouts(&gateway, &alice).await;
    assert!(
        listed["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["service"] != "billing"),
        "{listed}"
    );
    let rules = call(
        &gateway,
        &alice,
        Method::GET,
        "/tenants/acme/rollouts/billing/subject-rules",
        None,
    )
    .await;
    let rules: Value = rules.json().await.unwrap();
    assert_eq!(rules["subject_rules"], json!([]));
    // Every change is in the audit log, under the tenant it concerns.
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE action LIKE 'rollout.%' OR action LIKE 'service%' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for action in [
        "service.create",
        "service_version.create",
        "service_instance.register",
        "rollout.put",
        "rollout.rollback",
        "rollout.delete",
        "service_instance.deregister",
        "service.make_available",
        "service.withdraw",
    ] {
        assert!(
            audited.iter().any(|a| a == action),
            "{action} not audited: {audited:?}"
        );
    }
}

/// A refused admin call: who, what, the body, the status and a word the
/// problem's detail must contain.
type Refusal<'a> = (
    &'a str,
    reqwest::Method,
    &'a str,
    Option<Value>,
    u16,
    &'a str,
);

#[tokio::test]
async fn bad_routing_writes_are_refused_with_the_reason_and_change_nothing() {
    use reqwest::Method;
    let (gateway, db, _) = seeded_app(&[]).await;
    let admin = crate::session_token(&gateway, "system", "admin", crate::ADMIN_PASSWORD).await;
    let alice = crate::session_token(&gateway, "acme", "alice", crate::DEMO_PASSWORD).await;
    let bob = crate::session_token(&gateway, "acme", "bob", crate::DEMO_PASSWORD).await;
    let outbox_before: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let (instances, rollout) = (
        "/services/orders/instances",
        "/tenants/acme/rollouts/orders",
    );
    let cases: Vec<Refusal> = vec![
        (
            &admin,
            Method::POST,
            "/services",
            Some(json!({"name": "Bad Name"})),
            422,
            "name",
        ),
        (
            &admin,
            Method::POST,
            "/services/nosuch/versions",
            Some(json!({"version": "v1"})),
            404,
            "nosuch",
        ),
        (
            &admin,
            Method::POST,
            "/services/orders/versions",
            Some(json!({"version": "v 1"})),
            422,
            "version",
        ),
        (
            &admin,
            Method::POST,
            "/services/orders/versions",
            Some(json!({"version": "v1"})),
            409,
            "already",
        ),
        (
            &admin,
            Method::POST,
            instances,
            Some(json!({"version": "v1", "address": "nope"})),
            422,
            "address",
        ),
        (
            &admin,
            Method::POST,
            instances,
            Some(json!({"version": "v1", "address": "http://x:80"})),
            422,
            "address",
        ),
        (
            &admin,
            Method::POST,
            instances,
            Some(json!({"version": "v1", "address": "a:1", "weight": 20000})),
            422,
            "weight",
        ),
        (
            &admin,
            Method::POST,
            instances,
            Some(json!({"version": "v1", "address": "a:1", "heartbeat_ttl_ms": 5})),
            422,
            "heartbeat_ttl_ms",
        ),
        (
            &admin,
            Method::POST,
            instances,
            Some(json!({"version": "v9", "address": "127.0.0.1:1"})),
            422,
            "no version",
        ),
        (
            &admin,
            Method::POST,
            "/services/orders/instances/not-a-uuid/heartbeat",
            None,
            404,
            "instance",
        ),
        (
            &alice,
            Method::PUT,
            rollout,
            Some(json!({"stable": "v1", "canary": "v2", "percent": 150})),
            422,
            "percent",
        ),
        (
            &alice,
            Method::PUT,
            rollout,
            Some(json!({"stable": "v1", "canary": "v2", "percent": 5, "canary_buckets": 500})),
            422,
            "not both",
        ),
        (
            &alice,
            Method::PUT,
            rollout,
            Some(json!({"stable": "v1", "canary": "v1", "percent": 5})),
            422,
            "differ",
        ),
        (
            &alice,
            Method::PUT,
            rollout,
            Some(json!({"stable": "v1", "canary": "v9", "percent": 5})),
            422,
            "no version",
        ),
        (
            &alice,
            Method::PUT,
            rollout,
            Some(json!({"stable": "v1", "canary": "v2"})),
            422,
            "needs percent",
        ),
        (
            &alice,
            Method::PUT,
            rollout,
            Some(json!({"stable": "v1", "percent": 5})),
            422,
            "need a canary",
        ),
        (
            &alice,
            Method::PUT,
            rollout,
            Some(json!({"stable": "v1", "salt": "bad salt"})),
            422,
            "salt",
        ),
        (
            &alice,
            Method::PUT,
            "/tenants/acme/rollouts/nosuch",
            Some(json!({"stable": "v1"})),
            404,
            "nosuch",
        ),
        // Who may: services are the platform's (hidden from a tenant admin), a
        // tenant's rollouts are its admins' (another tenant's are hidden), a
        // member may not change them.
        (
            &alice,
            Method::POST,
            "/services",
            Some(json!({"name": "billing"})),
            404,
            "tenant",
        ),
        (
            &alice,
            Method::PUT,
            "/tenants/system/rollouts/orders",
            Some(json!({"stable": "v1"})),
            404,
            "tenant",
        ),
        (
            &bob,
            Method::PUT,
            rollout,
            Some(json!({"stable": "v2"})),
            403,
            "roles",
        ),
    ];
    for (session, method, path, body, status, detail) in cases {
        let problem =
            expect_problem(call(&gateway, session, method, path, body).await, status).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{path}: {problem} should mention {detail:?}"
        );
    }
    let unknown_field = call(
        &gateway,
        &alice,
        Method::PUT,
        rollout,
        Some(json!({"stable": "v1", "weight": 3})),
    )
    .await;
    assert!(unknown_field.status().is_client_error());
    // Nothing was written: no service, no outbox event, acme's demo rollout unchanged.
    let outbox_after: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(outbox_after, outbox_before, "a refused write left an event");
    let listed: Value = rollouts(&gateway, &alice).await;
    assert_eq!(listed["rollouts"][0]["canary_buckets"], 2000, "{listed}");
    assert_eq!(listed["rollouts"][0]["canary"], "v2");
}

/// Each service chooses its instances its own way, changeable at run time:
/// round robin alternates between two instances; user hashing (by tenant
/// when, as here, no user is named) keeps one.
#[tokio::test]
async fn a_services_strategy_is_its_own_and_changes_at_run_time() {
    use reqwest::Method;
    let (gateway, _db, _) = seeded_app(&[]).await;
    let admin = crate::session_token(&gateway, "system", "admin", crate::ADMIN_PASSWORD).await;
    let secret = service_client(&gateway, "router", None).await;
    let bad = call(
        &gateway,
        &admin,
        Method::POST,
        "/services",
        Some(json!({"name": "search", "strategy": "fastest"})),
    )
    .await;
    let problem = expect_problem(bad, 422).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("round_robin"),
        "{problem}"
    );
    let created = call(
        &gateway,
        &admin,
        Method::POST,
        "/services",
        Some(json!({"name": "search", "strategy": "round_robin"})),
    )
    .await;
    assert_eq!(created.status(), 201);
    let path = "/services/search/versions";
    assert_eq!(
        call(
            &gateway,
            &admin,
            Method::POST,
            path,
            Some(json!({"version": "v1"}))
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        call(
            &gateway,
            &admin,
            Method::PUT,
            "/services/search/tenants/acme",
            None
        )
        .await
        .status(),
        201
    );
    for port in [19301, 19302] {
        let body = json!({"version": "v1", "address": format!("127.0.0.1:{port}")});
        let registered = call(
            &gateway,
            &admin,
            Method::POST,
            "/services/search/instances",
            Some(body),
        )
        .await;
        assert_eq!(registered.status(), 201);
    }
    let ask = json!({ "tenant": "acme", "service": "search" });
    // Two answers in a row, once both instances are mirrored.
    let two = || async {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let response = resolve(&gateway, "router", &secret, &ask).await;
            if response.status() != StatusCode::OK {
                return Vec::new();
            }
            let body: Value = response.json().await.unwrap();
            seen.push(body["instance"].as_str().unwrap().to_owned());
        }
        seen
    };
    until_in_force("round robin alternates", || async {
        let seen = two().await;
        seen.len() == 2 && seen[0] != seen[1]
    })
    .await;
    let changed = call(
        &gateway,
        &admin,
        Method::PATCH,
        "/services/search",
        Some(json!({"strategy": "user_hash"})),
    )
    .await;
    assert_eq!(changed.status(), 200);
    until_in_force("hashing keeps one instance", || async {
        let seen = two().await;
        seen.len() == 2 && seen[0] == seen[1]
    })
    .await;
    for _ in 0..10 {
        let seen = two().await;
        assert_eq!(seen[0], seen[1], "sticky once hashing is in force");
    }
    let listed: Value = call(&gateway, &admin, Method::GET, "/services", None)
        .await
        .json()
        .await
        .unwrap();
    let search = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "search")
        .unwrap()
        .clone();
    assert_eq!(search["strategy"], "user_hash");
    let unknown = call(
        &gateway,
        &admin,
        Method::PATCH,
        "/services/nosuch",
        Some(json!({"strategy": "random"})),
    )
    .await;
    expect_problem(unknown, 404).await;
}

/// Routing's error paths with Redis gone: resolve answers 503 (never a
/// guess), and forward auth still decides from memory but leaves the
/// upstream-version header out, so the proxy's default applies.
#[tokio::test]
async fn with_redis_down_resolve_is_503_and_verify_answers_without_a_version() {
    let mut redis = gatehouse_testkit::PrivateRedis::start().await;
    let (gateway, db, _) = crate::cache::private_app(&redis, &[]).await;
    add_instances(&db.pool).await;
    let secret = service_client(&gateway, "router", None).await;
    let ask = json!({ "tenant": "acme", "service": "orders" });
    let bob = json_login(&gateway, "acme", "bob", crate::DEMO_PASSWORD).await;
    let bob: Value = bob.json().await.unwrap();
    let jwt = bob["access_token"].as_str().unwrap().to_owned();
    let verify = || {
        client()
            .get(gateway.url("/v1/verify?tenant=acme&service=orders"))
            .bearer_auth(&jwt)
            .header("x-original-method", "GET")
            .header("x-original-uri", "/orders/1")
            .send()
    };
    until_in_force("mirrored", || async {
        resolve(&gateway, "router", &secret, &ask).await.status() == StatusCode::OK
    })
    .await;
    let before = verify().await.unwrap();
    assert_eq!(before.status(), 200);
    assert!(
        before
            .headers()
            .contains_key("x-gatehouse-upstream-version")
    );
    redis.stop().await;
    let problem = expect_problem(resolve(&gateway, "router", &secret, &ask).await, 503).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("routing store"),
        "{problem}"
    );
    let during = verify().await.unwrap();
    assert_eq!(during.status(), 200, "the decision itself needs no Redis");
    assert!(
        !during
            .headers()
            .contains_key("x-gatehouse-upstream-version")
    );
}
