//! The authorisation API and the admin API for roles, grants, assignments and
//! policies, through the real binary against real Postgres and Redis.

#![allow(
    clippy::too_many_lines,
    reason = "end-to-end scenarios read best as one story each"
)]

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::{DEMO_PASSWORD, client, expect_problem, metrics_text, seeded_app, session_token};
use gatehouse_testkit::{Gateway, TestDatabase};

/// Sends `body` (JSON, when given) with `token` as Bearer.
pub(crate) async fn call(
    gateway: &Gateway,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = client()
        .request(method, gateway.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

pub(crate) async fn ok_json(response: Response, status: u16) -> Value {
    let code = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(code, status, "{body}");
    body
}

pub(crate) async fn check(gateway: &Gateway, token: &str, body: Value) -> Value {
    ok_json(
        call(gateway, token, Method::POST, "/v1/authz/check", Some(body)).await,
        200,
    )
    .await
}

async fn data_version(db: &TestDatabase, tenant: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT v.version FROM tenant_data_versions v JOIN tenants t ON t.id = v.tenant_id WHERE t.slug = $1",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

struct Demo {
    gateway: Gateway,
    db: TestDatabase,
    alice: String,
    bob: String,
    admin: String,
}

async fn demo() -> Demo {
    let (gateway, db, _) = seeded_app(&[]).await;
    let alice = session_token(&gateway, "acme", "alice", DEMO_PASSWORD).await;
    let bob = session_token(&gateway, "acme", "bob", DEMO_PASSWORD).await;
    let admin = session_token(&gateway, "system", "admin", crate::ADMIN_PASSWORD).await;
    Demo {
        gateway,
        db,
        alice,
        bob,
        admin,
    }
}

#[tokio::test]
async fn a_user_checks_their_own_permissions_with_an_explanation() {
    let d = demo().await;
    let read = check(
        &d.gateway,
        &d.bob,
        json!({"resource": "orders:7", "action": "read"}),
    )
    .await;
    assert_eq!(read["allowed"], true, "{read}");
    assert_eq!(read["reason"], "role_grant");
    assert_eq!(read["policy"], "member: read on orders:*");
    // Which tier depends on what earlier requests warmed; cache.rs shows
    // each tier on purpose.
    assert!(
        ["l1", "l2", "l3"].contains(&read["tier"].as_str().unwrap()),
        "{read}"
    );
    let refund = check(
        &d.gateway,
        &d.bob,
        json!({"resource": "orders:7", "action": "refund"}),
    )
    .await;
    assert_eq!(
        (refund["allowed"].clone(), refund["reason"].clone()),
        (json!(false), json!("no_match"))
    );

    let explained = ok_json(
        call(
            &d.gateway,
            &d.alice,
            Method::POST,
            "/v1/authz/check?explain=true",
            Some(json!({"resource": "orders:7", "action": "read"})),
        )
        .await,
        200,
    )
    .await;
    let trace = &explained["trace"];
    assert_eq!(
        trace["effective_roles"],
        json!(["member", "tenant-admin"]),
        "{explained}"
    );
    assert!(
        trace["matched_grants"].as_array().unwrap().len() >= 2,
        "{trace}"
    );
    assert!(
        trace["policies"][0]["outcome"]
            .as_str()
            .unwrap()
            .contains("target did not match"),
        "{trace}"
    );
    assert!(
        trace["conclusion"]
            .as_str()
            .unwrap()
            .contains("no policy applied"),
        "{trace}"
    );

    // The trace shows the tenant's policies and conditions: a member may not
    // have it, not even about themselves.
    let members_trace = call(
        &d.gateway,
        &d.bob,
        Method::POST,
        "/v1/authz/check?explain=true",
        Some(json!({"resource": "orders:7", "action": "read"})),
    )
    .await;
    expect_problem(members_trace, 403).await;

    // `subject` may be a user id, the `sub` a service finds in a token.
    let bob_me = ok_json(
        call(&d.gateway, &d.bob, Method::GET, "/v1/auth/me", None).await,
        200,
    )
    .await;
    let bob_id = bob_me["sub"].as_str().unwrap();
    let by_id = check(
        &d.gateway,
        &d.alice,
        json!({"subject": bob_id, "resource": "orders:7", "action": "refund"}),
    )
    .await;
    assert_eq!(by_id["reason"], "no_match", "{by_id}");
    let own_id = check(
        &d.gateway,
        &d.bob,
        json!({"subject": bob_id, "resource": "orders:7", "action": "read"}),
    )
    .await;
    assert_eq!(
        own_id["allowed"], true,
        "bob asks about himself by id: {own_id}"
    );
}

#[tokio::test]
async fn asking_about_others_needs_the_authz_permission_and_stays_in_the_tenant() {
    let d = demo().await;
    let about_bob = json!({"subject": "bob", "resource": "orders:7", "action": "create"});
    expect_problem(
        call(
            &d.gateway,
            &d.bob,
            Method::POST,
            "/v1/authz/check",
            Some(json!({"subject": "alice", "resource": "orders:7", "action": "delete"})),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(
        check(&d.gateway, &d.alice, about_bob.clone()).await["allowed"],
        true
    );
    // The platform admin asks in acme; alice cannot ask in system.
    let from_platform = check(
        &d.gateway,
        &d.admin,
        json!({"tenant": "acme", "subject": "bob", "resource": "orders:7", "action": "create"}),
    )
    .await;
    assert_eq!(from_platform["allowed"], true);
    expect_problem(
        call(
            &d.gateway,
            &d.alice,
            Method::POST,
            "/v1/authz/check",
            Some(
                json!({"tenant": "system", "subject": "admin", "resource": "x", "action": "read"}),
            ),
        )
        .await,
        404,
    )
    .await;
    expect_problem(
        call(
            &d.gateway,
            &d.alice,
            Method::POST,
            "/v1/authz/check",
            Some(json!({"subject": "nobody", "resource": "x", "action": "read"})),
        )
        .await,
        404,
    )
    .await;
    let anonymous = client()
        .post(d.gateway.url("/v1/authz/check"))
        .json(&about_bob)
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, 401).await;
}

#[tokio::test]
async fn batches_answer_in_order_and_fail_whole_on_a_bad_item() {
    let d = demo().await;
    let body = json!({"checks": [
        {"resource": "orders:1", "action": "read"},
        {"resource": "orders:1", "action": "refund"},
        {"resource": "orders:2", "action": "create"}
    ]});
    let answer = ok_json(
        call(
            &d.gateway,
            &d.bob,
            Method::POST,
            "/v1/authz/check-batch",
            Some(body),
        )
        .await,
        200,
    )
    .await;
    let allowed: Vec<bool> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(allowed, [true, false, true]);

    let bad_item = json!({"checks": [{"resource": "orders:1", "action": "read"}, {"resource": "", "action": "read"}]});
    let problem = expect_problem(
        call(
            &d.gateway,
            &d.bob,
            Method::POST,
            "/v1/authz/check-batch",
            Some(bad_item),
        )
        .await,
        422,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("checks[1].resource"),
        "{problem}"
    );
    let too_many = json!({"checks": vec![json!({"resource": "a", "action": "b"}); 101]});
    expect_problem(
        call(
            &d.gateway,
            &d.bob,
            Method::POST,
            "/v1/authz/check-batch",
            Some(too_many),
        )
        .await,
        422,
    )
    .await;
    let unknown_field = json!({"resource": "a", "action": "b", "subjekt": "x"});
    let problem = expect_problem(
        call(
            &d.gateway,
            &d.bob,
            Method::POST,
            "/v1/authz/check",
            Some(unknown_field),
        )
        .await,
        422,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("subjekt"),
        "{problem}"
    );
}

#[tokio::test]
async fn role_grant_and_assignment_writes_take_effect_at_once_and_are_recorded() {
    let d = demo().await;
    let g = &d.gateway;
    let before = data_version(&d.db, "acme").await;
    let reports = json!({"resource": "reports:q3", "action": "read"});
    assert_eq!(check(g, &d.bob, reports.clone()).await["allowed"], false);

    let created = ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/roles",
            Some(json!({"name": "auditor", "description": "Reads reports", "parent": "member"})),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(created["parent"], "member");
    ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/roles/auditor/permissions",
            Some(json!({"resource": "reports:*", "action": "read"})),
        )
        .await,
        201,
    )
    .await;
    let assigned = ok_json(
        call(
            g,
            &d.alice,
            Method::PUT,
            "/admin/api/v1/tenants/acme/users/bob/roles/auditor",
            Some(json!({"expires_at": "2099-01-01T00:00:00Z"})),
        )
        .await,
        200,
    )
    .await;
    assert!(
        assigned["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["role"] == "auditor" && r["expires_at"] == "2099-01-01T00:00:00Z"),
        "{assigned}"
    );
    let now = check(g, &d.bob, reports.clone()).await;
    assert_eq!(
        now["allowed"], true,
        "the next decision sees the write: {now}"
    );
    assert_eq!(now["policy"], "auditor: read on reports:*");
    assert_eq!(
        data_version(&d.db, "acme").await,
        before + 3,
        "one version bump per write"
    );

    // Each write left one outbox event and one audit event, with the version.
    let outbox: Vec<(String, Value)> = sqlx::query_as(
        "SELECT kind, payload FROM outbox_events WHERE kind = 'tenant.authz_changed' ORDER BY id",
    )
    .fetch_all(&d.db.pool)
    .await
    .unwrap();
    let changes: Vec<&str> = outbox
        .iter()
        .map(|(_, p)| p["change"].as_str().unwrap())
        .collect();
    assert_eq!(
        changes,
        ["role.create", "role.permission.add", "user.role.assign"]
    );
    assert_eq!(outbox[2].1["data_version"], before + 3);
    let audited: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, outcome FROM audit_events WHERE action IN ('role.create', 'role.permission.add', 'user.role.assign') ORDER BY id",
    )
    .fetch_all(&d.db.pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 3, "{audited:?}");

    let removed = call(
        g,
        &d.alice,
        Method::DELETE,
        "/admin/api/v1/tenants/acme/users/bob/roles/auditor",
        None,
    )
    .await;
    assert_eq!(removed.status(), 204);
    assert_eq!(check(g, &d.bob, reports).await["allowed"], false);
    let gone = call(
        g,
        &d.alice,
        Method::DELETE,
        "/admin/api/v1/tenants/acme/roles/auditor/permissions?resource=reports:*&action=read",
        None,
    )
    .await;
    assert_eq!(gone.status(), 204);
    expect_problem(
        call(
            g,
            &d.alice,
            Method::DELETE,
            "/admin/api/v1/tenants/acme/roles/auditor/permissions?resource=reports:*&action=read",
            None,
        )
        .await,
        404,
    )
    .await;
    assert_eq!(
        call(
            g,
            &d.alice,
            Method::DELETE,
            "/admin/api/v1/tenants/acme/roles/auditor",
            None
        )
        .await
        .status(),
        204
    );
}

#[tokio::test]
async fn bad_writes_get_precise_errors_and_change_nothing() {
    let d = demo().await;
    let g = &d.gateway;
    let before = data_version(&d.db, "acme").await;
    let roles_before = ok_json(
        call(
            g,
            &d.alice,
            Method::GET,
            "/admin/api/v1/tenants/acme/roles",
            None,
        )
        .await,
        200,
    )
    .await;

    // A cycle: member -> tenant-admin -> member.
    let cycle = expect_problem(
        call(
            g,
            &d.alice,
            Method::PATCH,
            "/admin/api/v1/tenants/acme/roles/member",
            Some(json!({"parent": "tenant-admin"})),
        )
        .await,
        422,
    )
    .await;
    assert!(
        cycle["detail"].as_str().unwrap().contains("cycle"),
        "{cycle}"
    );
    let cases = [
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/roles",
            json!({"name": "Bad Name"}),
            422,
            "role name",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/roles",
            json!({"name": "member"}),
            409,
            "already exists",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/roles",
            json!({"name": "x", "parent": "ghost"}),
            422,
            "ghost",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/roles/member/permissions",
            json!({"resource": "or*ders", "action": "read"}),
            422,
            "'*' may only end",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/roles/ghost/permissions",
            json!({"resource": "orders:*", "action": "read"}),
            404,
            "ghost",
        ),
        (
            Method::PUT,
            "/admin/api/v1/tenants/acme/users/bob/roles/member",
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            422,
            "past",
        ),
        (
            Method::PUT,
            "/admin/api/v1/tenants/acme/users/bob/roles/member",
            json!({"expires_at": "tomorrow"}),
            422,
            "expires_at",
        ),
        (
            Method::PUT,
            "/admin/api/v1/tenants/acme/users/nobody/roles/member",
            json!({}),
            404,
            "nobody",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/policies",
            json!({"name": "p", "effect": "deny", "document": {"condition": {"op": "lt", "attr": "subject.level", "value": "high"}}}),
            422,
            "condition.value",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/policies",
            json!({"name": "p", "effect": "deny", "document": {"condition": {"op": "eq", "attr": "user.x", "value": 1}}}),
            422,
            "unknown attribute root",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/policies",
            json!({"name": "p", "effect": "deny", "document": {"condition": {"op": "cidr", "attr": "context.ip", "value": "10.0.0.0/33"}}}),
            422,
            "CIDR",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/policies",
            json!({"name": "p", "effect": "deny", "document": {"target": {"role": "ghost"}}}),
            422,
            "ghost",
        ),
        (
            Method::POST,
            "/admin/api/v1/tenants/acme/policies",
            json!({"name": "p", "effect": "maybe", "document": {}}),
            422,
            "effect",
        ),
        (
            Method::DELETE,
            "/admin/api/v1/tenants/acme/policies/ghost",
            Value::Null,
            404,
            "ghost",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let body = (!body.is_null()).then_some(body.clone());
        let problem = expect_problem(
            call(g, &d.alice, method.clone(), path, body.clone()).await,
            status,
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{method} {path} {body:?}: {problem}"
        );
    }
    assert_eq!(
        data_version(&d.db, "acme").await,
        before,
        "refused writes bump nothing"
    );
    let roles_after = ok_json(
        call(
            g,
            &d.alice,
            Method::GET,
            "/admin/api/v1/tenants/acme/roles",
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(roles_before, roles_after);
    let outbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events WHERE kind = 'tenant.authz_changed'",
    )
    .fetch_one(&d.db.pool)
    .await
    .unwrap();
    assert_eq!(outbox, 0);
}

#[tokio::test]
async fn policies_restrict_and_extend_roles_with_validate_simulate_and_versioned_edits() {
    let d = demo().await;
    let g = &d.gateway;
    let policy = json!({
        "name": "no-orders-for-bob", "priority": 50, "effect": "deny",
        "document": {"target": {"resources": ["orders:*"], "actions": ["read"]},
                     "condition": {"op": "eq", "attr": "subject.id", "value": "placeholder"}}
    });
    // Simulate a draft that denies every read of orders: nothing is saved.
    let mut draft = policy.clone();
    draft["document"] = json!({"target": {"resources": ["orders:*"], "actions": ["read"]}});
    let simulated = ok_json(
        call(g, &d.alice, Method::POST, "/admin/api/v1/tenants/acme/policies/simulate", Some(json!({"policy": draft, "request": {"subject": "bob", "resource": "orders:1", "action": "read"}}))).await,
        200,
    )
    .await;
    assert_eq!(simulated["with_draft"]["allowed"], false, "{simulated}");
    assert_eq!(simulated["with_draft"]["decided_by"], "no-orders-for-bob");
    assert_eq!(simulated["current"]["allowed"], true);
    assert_eq!(simulated["changed"], true);
    assert_eq!(
        check(g, &d.bob, json!({"resource": "orders:1", "action": "read"})).await["allowed"],
        true,
        "simulate saved nothing"
    );

    // Validate reports a draft that a higher-priority unconditional policy shadows.
    let shadowed = json!({"name": "late", "priority": 1, "effect": "permit", "document": {"target": {"resources": ["orders:*"], "actions": ["delete"]}}});
    let blocker = json!({"name": "block-deletes", "priority": 200, "effect": "deny", "document": {"target": {"resources": ["orders:*"], "actions": ["delete"]}}});
    ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/policies",
            Some(blocker),
        )
        .await,
        201,
    )
    .await;
    let validated = ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/policies/validate",
            Some(shadowed),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(validated["valid"], true);
    assert_eq!(validated["warnings"][0]["kind"], "shadowed", "{validated}");

    // An ABAC permit extends what roles grant: bob may refund his own orders.
    let extend = json!({"name": "owners-refund", "priority": 10, "effect": "permit",
        "document": {"target": {"resources": ["orders:*"], "actions": ["refund"], "role": "member"},
                     "condition": {"op": "eq", "attr": "resource.owner", "value": "bob"}}});
    let created = ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/policies",
            Some(extend.clone()),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(created["version"], 1);
    let own = check(g, &d.bob, json!({"resource": "orders:9", "action": "refund", "resource_attributes": {"owner": "bob"}})).await;
    assert_eq!(
        (
            own["allowed"].clone(),
            own["reason"].clone(),
            own["policy"].clone()
        ),
        (json!(true), json!("policy_permit"), Value::Null),
        "a member's self-check never names the deciding policy"
    );
    // Nor can a member feed it context to bisect a policy's conditions: only
    // what the tenant lets clients supply, and the server's own address wins.
    let forged = call(
        g,
        &d.bob,
        Method::POST,
        "/v1/authz/check",
        Some(json!({"resource": "orders:9", "action": "read", "context": {"ip": "10.0.0.1"}})),
    )
    .await;
    let problem = ok_json(forged, 422).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("context.ip"),
        "{problem}"
    );
    // An admin's check about bob still names it.
    let admin_view = check(g, &d.alice, json!({"subject": "bob", "resource": "orders:9", "action": "refund", "resource_attributes": {"owner": "bob"}})).await;
    assert_eq!(admin_view["policy"], "owners-refund");
    let other = check(g, &d.bob, json!({"resource": "orders:9", "action": "refund", "resource_attributes": {"owner": "carol"}})).await;
    assert_eq!(other["allowed"], false);

    // Versioned edits: a stale version is refused, the current one applies.
    let mut edit = extend.clone();
    edit["version"] = json!(1);
    edit["effect"] = json!("deny");
    let updated = ok_json(
        call(
            g,
            &d.alice,
            Method::PUT,
            "/admin/api/v1/tenants/acme/policies/owners-refund",
            Some(edit.clone()),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(updated["version"], 2);
    let stale = expect_problem(
        call(
            g,
            &d.alice,
            Method::PUT,
            "/admin/api/v1/tenants/acme/policies/owners-refund",
            Some(edit),
        )
        .await,
        409,
    )
    .await;
    assert!(
        stale["detail"].as_str().unwrap().contains("version 2"),
        "{stale}"
    );
    assert_eq!(check(g, &d.bob, json!({"resource": "orders:9", "action": "refund", "resource_attributes": {"owner": "bob"}})).await["reason"], "policy_deny");
    assert_eq!(
        call(
            g,
            &d.alice,
            Method::DELETE,
            "/admin/api/v1/tenants/acme/policies/owners-refund",
            None
        )
        .await
        .status(),
        204
    );
    let listed = ok_json(
        call(
            g,
            &d.alice,
            Method::GET,
            "/admin/api/v1/tenants/acme/policies",
            None,
        )
        .await,
        200,
    )
    .await;
    let names: Vec<&str> = listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["block-deletes", "orders-delete-office-hours"]);
}

/// Every admin read and write, as (method, path under the tenant, body).
fn admin_endpoints() -> Vec<(Method, &'static str, Option<Value>)> {
    let policy = json!({"name": "p1", "effect": "deny", "document": {}});
    vec![
        (Method::GET, "roles", None),
        (Method::POST, "roles", Some(json!({"name": "intruder"}))),
        (Method::GET, "roles/member", None),
        (
            Method::PATCH,
            "roles/member",
            Some(json!({"description": "changed"})),
        ),
        (Method::DELETE, "roles/member", None),
        (Method::GET, "roles/member/permissions", None),
        (
            Method::POST,
            "roles/member/permissions",
            Some(json!({"resource": "*", "action": "*"})),
        ),
        (
            Method::DELETE,
            "roles/member/permissions?resource=orders:*&action=read",
            None,
        ),
        (Method::GET, "users/bob/roles", None),
        (Method::PUT, "users/bob/roles/tenant-admin", Some(json!({}))),
        (Method::DELETE, "users/bob/roles/member", None),
        (Method::GET, "policies", None),
        (Method::POST, "policies", Some(policy.clone())),
        (Method::GET, "policies/orders-delete-office-hours", None),
        (
            Method::PUT,
            "policies/orders-delete-office-hours",
            Some(
                json!({"name": "orders-delete-office-hours", "effect": "permit", "document": {}, "version": 1}),
            ),
        ),
        (Method::DELETE, "policies/orders-delete-office-hours", None),
        (Method::POST, "policies/validate", Some(policy.clone())),
        (
            Method::POST,
            "policies/simulate",
            Some(
                json!({"policy": policy, "request": {"subject": "bob", "resource": "x", "action": "read"}}),
            ),
        ),
        (Method::GET, "lockouts", None),
        (Method::DELETE, "lockouts/0123456789abcdef", None),
        (
            Method::POST,
            "revocations",
            Some(json!({"all_tokens": true})),
        ),
    ]
}

#[tokio::test]
async fn no_admin_endpoint_crosses_tenants_or_opens_to_members() {
    let d = demo().await;
    let g = &d.gateway;
    // Give system everything the paths below name, so a 404 can only mean
    // "refused as if absent", never "not found".
    for (path, body) in [
        ("roles", json!({"name": "tenant-admin"})),
        (
            "policies",
            json!({"name": "orders-delete-office-hours", "effect": "deny",
                   "document": {"target": {"resources": ["orders:*"], "actions": ["delete"]}}}),
        ),
    ] {
        let created = call(
            g,
            &d.admin,
            Method::POST,
            &format!("/admin/api/v1/tenants/system/{path}"),
            Some(body),
        )
        .await;
        assert_eq!(created.status(), 201, "seeding system {path}");
    }
    let acme = data_version(&d.db, "acme").await;
    let system = data_version(&d.db, "system").await;
    for (method, path, body) in admin_endpoints() {
        // acme's tenant admin against the system tenant (which has a role
        // `platform-admin`, user `admin`): always 404, as if it did not exist.
        let system_path = format!(
            "/admin/api/v1/tenants/system/{}",
            path.replace("member", "platform-admin")
                .replace("bob", "admin")
        );
        expect_problem(
            call(g, &d.alice, method.clone(), &system_path, body.clone()).await,
            404,
        )
        .await;
        // A member of acme: 403 in their own tenant, 404 elsewhere.
        expect_problem(
            call(
                g,
                &d.bob,
                method.clone(),
                &format!("/admin/api/v1/tenants/acme/{path}"),
                body.clone(),
            )
            .await,
            403,
        )
        .await;
        expect_problem(
            call(
                g,
                &d.bob,
                method.clone(),
                &format!("/admin/api/v1/tenants/nonexistent/{path}"),
                body.clone(),
            )
            .await,
            404,
        )
        .await;
    }
    assert_eq!(
        data_version(&d.db, "acme").await,
        acme,
        "no refused write changed acme"
    );
    assert_eq!(
        data_version(&d.db, "system").await,
        system,
        "no refused write changed system"
    );
    // No refused kill switch went through: both tenants' sessions still work.
    for token in [&d.alice, &d.bob, &d.admin] {
        let me = call(g, token, Method::GET, "/v1/auth/me", None).await;
        assert_eq!(me.status(), 200, "sessions survive refused revocations");
    }
    let denied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE outcome = 'denied'")
            .fetch_one(&d.db.pool)
            .await
            .unwrap();
    // Refusals are audited, at most ten rows per actor a minute; the rest
    // are counted (and carried by the actor's next row).
    let suppressed: f64 = crate::metrics_text(g)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_audit_denials_suppressed_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    let refused = i64::try_from(admin_endpoints().len() * 2).unwrap();
    #[expect(clippy::cast_possible_truncation, reason = "a count of requests")]
    let accounted = denied + suppressed as i64;
    assert!(
        denied > 0 && accounted >= refused,
        "refusals are audited ({denied} rows, {suppressed} counted, {refused} refused)"
    );
    let per_actor: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE outcome = 'denied' GROUP BY actor_id",
    )
    .fetch_all(&d.db.pool)
    .await
    .unwrap();
    assert!(per_actor.iter().all(|n| *n <= 10), "{per_actor:?}");

    // The platform admin reaches acme's admin reads.
    for (method, path, _) in admin_endpoints()
        .into_iter()
        .filter(|(m, _, _)| *m == Method::GET)
    {
        let response = call(
            g,
            &d.admin,
            method,
            &format!("/admin/api/v1/tenants/acme/{path}"),
            None,
        )
        .await;
        assert_eq!(response.status(), 200, "platform admin GET {path}");
    }
}

#[tokio::test]
async fn an_abac_policy_can_restrict_the_admin_api_itself() {
    let d = demo().await;
    let g = &d.gateway;
    // The platform admin forbids acme's admins from changing policies from outside 10.0.0.0/8.
    let lock = json!({"name": "admin-writes-from-office", "priority": 1000, "effect": "deny",
        "document": {"target": {"resources": ["admin:acme:policies"], "actions": ["write"]},
                     "condition": {"not": {"op": "cidr", "attr": "context.ip", "value": ["10.0.0.0/8"]}}}});
    ok_json(
        call(
            g,
            &d.admin,
            Method::POST,
            "/admin/api/v1/tenants/acme/policies",
            Some(lock),
        )
        .await,
        201,
    )
    .await;
    let refused = call(
        g,
        &d.alice,
        Method::DELETE,
        "/admin/api/v1/tenants/acme/policies/admin-writes-from-office",
        None,
    )
    .await;
    expect_problem(refused, 403).await;
    // Reads are still allowed.
    assert_eq!(
        call(
            g,
            &d.alice,
            Method::GET,
            "/admin/api/v1/tenants/acme/policies",
            None
        )
        .await
        .status(),
        200
    );
}

async fn verify(gateway: &Gateway, token: Option<&str>, headers: &[(&str, &str)]) -> Response {
    let mut request = client().get(gateway.url("/v1/verify?tenant=acme"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn forward_auth_maps_the_original_request_and_authorises_it() {
    let d = demo().await;
    let g = &d.gateway;
    // nginx (the default family): X-Original-Method + X-Original-URI.
    let allowed = verify(
        g,
        Some(&d.bob),
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/orders/42?expand=1"),
        ],
    )
    .await;
    assert_eq!(allowed.status(), 200);
    let h = allowed.headers();
    assert_eq!(h["x-gatehouse-user"], "bob");
    assert_eq!(h["x-gatehouse-tenant"], "acme");
    assert_eq!(h["x-gatehouse-roles"], "member");
    assert!(!h["x-gatehouse-user-id"].is_empty());
    // bob may not delete orders.
    let denied = verify(
        g,
        Some(&d.bob),
        &[
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/orders/42"),
        ],
    )
    .await;
    let problem = expect_problem(denied, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("delete on orders:42"),
        "{problem}"
    );
    // Dot segments and encoded dots resolve before mapping: this is `admin:users`, not `orders:*`.
    for sneaky in [
        "/orders/../admin/users",
        "/orders/%2e%2e/admin/users",
        "/orders%2F..%2Fadmin/users",
    ] {
        let r = verify(
            g,
            Some(&d.bob),
            &[("x-original-method", "GET"), ("x-original-uri", sneaky)],
        )
        .await;
        expect_problem(r, 403).await;
    }
    let climbing = verify(
        g,
        Some(&d.bob),
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/../../etc/passwd"),
        ],
    )
    .await;
    expect_problem(climbing, 400).await;
    let bad_method = verify(
        g,
        Some(&d.bob),
        &[
            ("x-original-method", "G E T"),
            ("x-original-uri", "/orders/1"),
        ],
    )
    .await;
    expect_problem(bad_method, 400).await;
    // No session, or a forged one: 401.
    expect_problem(
        verify(
            g,
            None,
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/orders/1"),
            ],
        )
        .await,
        401,
    )
    .await;
    expect_problem(
        verify(
            g,
            Some(
                "gs1_00000000000000000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/orders/1"),
            ],
        )
        .await,
        401,
    )
    .await;
    // A session cookie works the same way as a Bearer token.
    let cookie = crate::forward_auth(g, "acme")
        .header("cookie", format!("gh_session={}", d.bob))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);
}

#[tokio::test]
async fn envoy_ext_authz_sends_the_original_request_under_the_path_prefix() {
    let (gateway, _db, _) = seeded_app(&[
        ("GATEHOUSE_FORWARD_AUTH", "envoy"),
        ("GATEHOUSE_FORWARD_AUTH_TENANT", "acme"),
    ])
    .await;
    let g = &gateway;
    let bob = session_token(g, "acme", "bob", DEMO_PASSWORD).await;
    // Envoy HTTP ext_authz with `path_prefix: /v1/verify`: original method, and
    // the original path appended to the prefix; no X-Forwarded-* headers.
    let allowed = client()
        .get(g.url("/v1/verify/orders/42?expand=1"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-gatehouse-user"], "bob");
    let denied = client()
        .delete(g.url("/v1/verify/orders/42"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(denied, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("delete on orders:42"),
        "{problem}"
    );
    // Dot segments cannot climb out of the original path either.
    let sneaky = client()
        .get(g.url("/v1/verify/orders/%2e%2e/admin/users"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    expect_problem(sneaky, 403).await;
    expect_problem(
        client()
            .get(g.url("/v1/verify/orders/42"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
}

#[tokio::test]
async fn forward_auth_mapping_is_configurable_per_tenant_and_follows_rule_changes() {
    let d = demo().await;
    let g = &d.gateway;
    sqlx::query("UPDATE tenants SET settings = settings || $1 WHERE slug = 'acme'")
        .bind(json!({"verify": {"strip_prefix": "/api", "actions": {"POST": "refund"}}}))
        .execute(&d.db.pool)
        .await
        .unwrap();
    let read = verify(
        g,
        Some(&d.bob),
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/api/orders/7"),
        ],
    )
    .await;
    assert_eq!(read.status(), 200, "/api/orders/7 maps to orders:7");
    let refund = verify(
        g,
        Some(&d.bob),
        &[
            ("x-original-method", "POST"),
            ("x-original-uri", "/api/orders/7"),
        ],
    )
    .await;
    expect_problem(refund, 403).await;
    ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/roles/member/permissions",
            Some(json!({"resource": "orders:*", "action": "refund"})),
        )
        .await,
        201,
    )
    .await;
    let now_allowed = verify(
        g,
        Some(&d.bob),
        &[
            ("x-original-method", "POST"),
            ("x-original-uri", "/api/orders/7"),
        ],
    )
    .await;
    assert_eq!(
        now_allowed.status(),
        200,
        "the grant is in force for the next verify"
    );
}

#[tokio::test]
async fn a_tenant_admin_cannot_grant_their_way_into_another_tenant() {
    let d = demo().await;
    let g = &d.gateway;
    // alice gives acme's tenant-admin every admin permission there is...
    ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/roles/tenant-admin/permissions",
            Some(json!({"resource": "*", "action": "*"})),
        )
        .await,
        201,
    )
    .await;
    // ...which still does not reach the system tenant: only system users cross tenants.
    expect_problem(
        call(
            g,
            &d.alice,
            Method::GET,
            "/admin/api/v1/tenants/system/roles",
            None,
        )
        .await,
        404,
    )
    .await;
    expect_problem(
        call(
            g,
            &d.alice,
            Method::POST,
            "/v1/authz/check",
            Some(
                json!({"tenant": "system", "subject": "admin", "resource": "x", "action": "read"}),
            ),
        )
        .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_disabled_user_is_denied_even_by_an_unconditional_permit_policy() {
    let d = demo().await;
    let g = &d.gateway;
    let open_reports = json!({
        "name": "reports-for-all", "priority": 10, "effect": "permit",
        "document": {"target": {"resources": ["reports:*"], "actions": ["read"]}}
    });
    let created = call(
        g,
        &d.alice,
        Method::POST,
        "/admin/api/v1/tenants/acme/policies",
        Some(open_reports),
    )
    .await;
    assert_eq!(created.status(), 201);
    let question = json!({"subject": "bob", "resource": "reports:q3", "action": "read"});
    let before = check(g, &d.alice, question.clone()).await;
    assert_eq!(before["allowed"], true, "{before}");
    sqlx::query(
        "UPDATE users SET status = 'disabled' WHERE username_normalized = 'bob' \
         AND tenant_id = (SELECT id FROM tenants WHERE slug = 'acme')",
    )
    .execute(&d.db.pool)
    .await
    .unwrap();
    crate::until_in_force("bob disabled by hand", || async {
        check(g, &d.alice, question.clone()).await["allowed"] == false
    })
    .await;
    let after = check(g, &d.alice, question).await;
    assert_eq!(after["allowed"], false, "{after}");
    assert_eq!(after["reason"], "subject_disabled", "{after}");
    // A simulation agrees with the real decision.
    let simulated = ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/policies/simulate",
            Some(json!({
                "policy": {"name": "draft", "effect": "permit",
                           "document": {"target": {"resources": ["reports:*"]}}},
                "request": {"subject": "bob", "resource": "reports:q3", "action": "read"}
            })),
        )
        .await,
        200,
    )
    .await;
    for side in ["with_draft", "current"] {
        assert_eq!(simulated[side]["reason"], "subject_disabled", "{simulated}");
        assert_eq!(simulated[side]["allowed"], false, "{simulated}");
    }
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// After a rule change, 50 concurrent decisions find the rules stale at
/// once; they compile the tenant's set once (single flight), not 50 times.
#[tokio::test]
async fn a_rule_change_is_compiled_once_however_many_requests_find_it_stale() {
    let d = demo().await;
    let g = &d.gateway;
    check(g, &d.bob, json!({"resource": "orders:1", "action": "read"})).await;
    ok_json(
        call(
            g,
            &d.alice,
            Method::POST,
            "/admin/api/v1/tenants/acme/roles/member/permissions",
            Some(json!({"resource": "orders:*", "action": "refund"})),
        )
        .await,
        201,
    )
    .await;
    let before = counter(&metrics_text(g).await, "gatehouse_authz_compilations_total");
    let checks: Vec<_> = (0..50)
        .map(|_| {
            let url = g.url("/v1/authz/check");
            let bob = d.bob.clone();
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(bob)
                    .json(&json!({"resource": "orders:1", "action": "refund"}))
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        })
        .collect();
    for answer in checks {
        assert_eq!(
            answer.await.unwrap()["allowed"],
            true,
            "the new grant is in force"
        );
    }
    let after = counter(&metrics_text(g).await, "gatehouse_authz_compilations_total");
    assert!(
        (after - before - 1.0).abs() < f64::EPSILON,
        "compiled {} times",
        after - before
    );
}
