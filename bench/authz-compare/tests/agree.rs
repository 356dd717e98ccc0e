//! Agreement: gatehouse and the Cedar translation decide every request of the
//! reference streams the same way, with no Cedar evaluation errors, for both
//! grant layouts; plus a small tenant that exercises what the reference one
//! does not (a permit outranking denies, missing attributes under `not`,
//! action prefixes, role targets, `subject.roles`, expired assignments).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "test: panics are failures, the rate is printed for the record"
)]

use authz_compare::{GrantLayout, Translation};
use cedar_policy::{Authorizer, Decision};
use gatehouse_authz::reference::{self, User};
use gatehouse_authz::{
    Assignment, Effect, GrantDef, PolicyDef, PolicySet, Request, RoleDef, TenantRules,
};
use serde_json::{Map, Value, json};

/// Runs every request through both engines; returns (agreeing, allowed by
/// gatehouse) and panics on any disagreement or Cedar evaluation error, with
/// the request and the Cedar policies that decided.
fn check(
    rules: &TenantRules,
    users: &[User],
    requests: &[Request],
    layout: GrantLayout,
) -> (usize, usize) {
    let ours = PolicySet::compile(rules).unwrap();
    let cedar = Translation::new(rules, layout).unwrap();
    let world = cedar.world(users, requests).unwrap();
    let authorizer = Authorizer::new();
    let mut agree = 0;
    let mut allowed = 0;
    let mut disagreements = Vec::new();
    for (i, (request, cedar_request)) in requests.iter().zip(&world.requests).enumerate() {
        let decision = ours.decide(request, false);
        let response = authorizer.is_authorized(cedar_request, &cedar.policies, &world.entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "request {i}: cedar errors {errors:?}");
        allowed += usize::from(decision.allowed);
        if decision.allowed == (response.decision() == Decision::Allow) {
            agree += 1;
        } else {
            let reasons: Vec<String> = response
                .diagnostics()
                .reason()
                .map(ToString::to_string)
                .collect();
            disagreements.push(format!(
                "request {i} {request:?}: gatehouse {decision:?}, cedar {:?} by {reasons:?}",
                response.decision()
            ));
        }
    }
    println!(
        "{layout:?}: {agree}/{} agree ({:.2}%), {allowed} allowed, {} Cedar policies",
        requests.len(),
        100.0 * f64::from(u32::try_from(agree).unwrap())
            / f64::from(u32::try_from(requests.len()).unwrap()),
        cedar.policy_count
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements, first ones:\n{}\n\nCedar policies:\n{}",
        disagreements.len(),
        disagreements
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        cedar.policy_text()
    );
    (agree, allowed)
}

#[test]
fn reference_streams_agree_fully() {
    let rules = reference::rules();
    let users = reference::users();
    for (count, seed) in [(2000, 7), (4096, 11)] {
        let requests = reference::requests(&users, count, seed);
        for layout in [GrantLayout::PerGrant, GrantLayout::PerRole] {
            let (agree, allowed) = check(&rules, &users, &requests, layout);
            assert_eq!(agree, count, "100% agreement");
            assert!(
                allowed > count / 10 && allowed < count * 9 / 10,
                "a real mix"
            );
        }
    }
}

#[test]
fn reference_policies_read_as_plain_cedar() {
    // Every deny outranks the one permit policy, so no `unless` is needed.
    let cedar = Translation::new(&reference::rules(), GrantLayout::PerGrant).unwrap();
    let text = cedar.policy_text();
    assert!(!text.contains("unless"), "{text}");
    assert_eq!(cedar.policy_count, 500 + 50);
    assert!(text.contains("like \"sales:orders:*\""), "{text}");
    assert!(
        text.contains("ip(context.ip).isInRange(ip(\"10.0.0.0/8\"))"),
        "{text}"
    );
    let per_role = Translation::new(&reference::rules(), GrantLayout::PerRole).unwrap();
    assert_eq!(per_role.policy_count, 50 + 50);
}

fn policy(name: &str, priority: i32, effect: Effect, document: Value) -> PolicyDef {
    PolicyDef {
        name: name.to_owned(),
        priority,
        effect,
        document,
        active: true,
    }
}

/// A tenant built to hit the combining corners: a permit above denies (so
/// the translation needs `unless`), equal-priority deny/permit, a missing
/// attribute under `not`, an action prefix, a role target, `subject.roles`,
/// an inactive policy and an unknown target role.
fn corner_rules() -> TenantRules {
    let grant = |role: &str, resource: &str, action: &str| GrantDef {
        role: role.to_owned(),
        resource: resource.to_owned(),
        action: action.to_owned(),
    };
    TenantRules {
        roles: vec![
            RoleDef { name: "reader".into(), parent: None },
            RoleDef { name: "writer".into(), parent: Some("reader".into()) },
            RoleDef { name: "boss".into(), parent: Some("writer".into()) },
        ],
        grants: vec![
            grant("reader", "docs:*", "read"),
            grant("writer", "docs:*", "write"),
            grant("writer", "docs:frozen:*", "ex*"),
            grant("boss", "*", "*"),
        ],
        policies: vec![
            policy("owner-may-write", 30, Effect::Permit, json!({
                "target": {"resources": ["docs:*"], "actions": ["write"]},
                "condition": {"op": "eq", "attr": "resource.owner", "value": true}})),
            policy("frozen-stays-frozen", 30, Effect::Deny, json!({
                "target": {"resources": ["docs:frozen:*"]},
                "condition": {"op": "eq", "attr": "resource.frozen", "value": true}})),
            policy("night-writes", 20, Effect::Deny, json!({
                "target": {"resources": ["docs:*"], "actions": ["write", "delete"]},
                "condition": {"not": {"op": "between", "attr": "context.hour_utc", "value": [8, 18]}}})),
            policy("no-clearance-no-reports", 15, Effect::Deny, json!({
                "target": {"resources": ["reports:*"]},
                "condition": {"not": {"op": "eq", "attr": "subject.clearance", "value": "high"}}})),
            policy("vpn-readers", 10, Effect::Permit, json!({
                "target": {"resources": "reports:*", "actions": ["read"]},
                "condition": {"all": [
                    {"op": "cidr", "attr": "context.ip", "value": ["10.0.0.0/8"]},
                    {"op": "contains", "attr": "subject.roles", "value": "reader"}]}})),
            policy("boss-exports-by-day", 10, Effect::Deny, json!({
                "target": {"actions": ["ex*"], "role": "boss"},
                "condition": {"any": [
                    {"op": "lt", "attr": "context.hour_utc", "value": 7.5},
                    {"op": "ne", "attr": "action", "value": "export"}]}})),
            policy("inactive", 99, Effect::Deny, json!({})),
            policy("ghost-role", 50, Effect::Deny, json!({"target": {"role": "nobody"}})),
        ]
        .into_iter()
        .map(|mut p| {
            p.active = p.name != "inactive";
            p
        })
        .collect(),
    }
}

fn corner_users() -> Vec<User> {
    let user = |id: &str, roles: &[(&str, Option<i64>)], attributes: Value| User {
        id: id.to_owned(),
        assignments: roles
            .iter()
            .map(|(r, e)| Assignment {
                role: (*r).to_owned(),
                expires_at: *e,
            })
            .collect(),
        attributes: attributes.as_object().cloned().unwrap_or_default(),
    };
    vec![
        user("nobody", &[], json!({})),
        user("reader", &[("reader", None)], json!({"clearance": "high"})),
        user("writer", &[("writer", None)], json!({"clearance": "low"})),
        user("boss", &[("boss", None)], json!({})),
        user(
            "lapsed-boss",
            &[("boss", Some(1_000)), ("reader", None)],
            json!({"clearance": "high"}),
        ),
        user(
            "unknown-role",
            &[("ghost", None)],
            json!({"clearance": "high"}),
        ),
    ]
}

/// Every combination of user, resource, action, hour, ip and resource flags.
fn corner_requests(users: &[User]) -> Vec<Request> {
    let mut out = Vec::new();
    for user in users {
        for resource in ["docs:1", "docs:frozen:2", "reports:3", "other:4"] {
            for action in ["read", "write", "delete", "export", "extract"] {
                for hour in [3_i64, 7, 12, 19] {
                    for ip in ["10.1.2.3", "192.0.2.1"] {
                        for (owner, frozen) in [(false, false), (true, false), (true, true)] {
                            let mut resource_attributes = Map::new();
                            resource_attributes.insert("owner".into(), json!(owner));
                            if frozen {
                                resource_attributes.insert("frozen".into(), json!(true));
                            }
                            let mut context = Map::new();
                            context.insert("ip".into(), json!(ip));
                            out.push(Request {
                                subject: user.id.clone(),
                                assignments: user.assignments.clone(),
                                subject_attributes: user.attributes.clone(),
                                resource: resource.to_owned(),
                                resource_attributes,
                                action: action.to_owned(),
                                context,
                                now: 1_795_392_000 + hour * 3600,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn corner_tenant_agrees_fully() {
    let rules = corner_rules();
    let users = corner_users();
    let requests = corner_requests(&users);
    for layout in [GrantLayout::PerGrant, GrantLayout::PerRole] {
        let (agree, allowed) = check(&rules, &users, &requests, layout);
        assert_eq!(agree, requests.len());
        assert!(allowed > 0 && allowed < requests.len());
    }
    // The permit at priority 30 outranks the denies below it: `unless` needed.
    let text = Translation::new(&rules, GrantLayout::PerGrant)
        .unwrap()
        .policy_text();
    assert!(text.contains("unless"), "{text}");
}

#[test]
fn a_stream_across_an_expiry_is_refused() {
    let rules = corner_rules();
    let users = corner_users();
    let mut requests = corner_requests(&users);
    let lapsed = requests
        .iter()
        .position(|r| r.subject == "lapsed-boss")
        .unwrap();
    requests[lapsed].now = 500;
    let cedar = Translation::new(&rules, GrantLayout::PerGrant).unwrap();
    assert!(matches!(
        cedar.world(&users, &requests),
        Err(authz_compare::TranslateError::StaleRoles { .. })
    ));
}
