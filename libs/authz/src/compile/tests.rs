use super::*;
use crate::model::{Assignment, GrantDef, RoleDef};
use serde_json::json;

fn role(name: &str, parent: Option<&str>) -> RoleDef {
    RoleDef {
        name: name.into(),
        parent: parent.map(Into::into),
    }
}

fn grant(role: &str, resource: &str, action: &str) -> GrantDef {
    GrantDef {
        role: role.into(),
        resource: resource.into(),
        action: action.into(),
    }
}

fn policy(name: &str, priority: i32, effect: Effect, document: Value) -> PolicyDef {
    PolicyDef {
        name: name.into(),
        priority,
        effect,
        document,
        active: true,
    }
}

fn request(roles: &[&str], resource: &str, action: &str) -> Request {
    Request {
        subject: "u1".into(),
        assignments: roles
            .iter()
            .map(|r| Assignment {
                role: (*r).into(),
                expires_at: None,
            })
            .collect(),
        resource: resource.into(),
        action: action.into(),
        now: 1_795_424_400, // 2026-11-23T09:00:00Z, a Monday
        ..Request::default()
    }
}

/// viewer <- editor <- admin; viewer reads orders, editor writes them.
fn base() -> TenantRules {
    TenantRules {
        roles: vec![
            role("viewer", None),
            role("editor", Some("viewer")),
            role("admin", Some("editor")),
            role("other", None),
        ],
        grants: vec![
            grant("viewer", "orders:*", "read"),
            grant("editor", "orders:*", "write"),
            grant("admin", "*", "*"),
        ],
        policies: vec![],
    }
}

fn with(policies: Vec<PolicyDef>) -> PolicySet {
    PolicySet::compile(&TenantRules { policies, ..base() }).unwrap()
}

#[test]
fn rbac_grants_inherit_down_the_hierarchy() {
    let set = with(vec![]);
    let d = set.decide(&request(&["editor"], "orders:7", "read"), false);
    assert!(d.allowed);
    assert_eq!(d.reason, Reason::RoleGrant);
    assert_eq!(d.decided_by.as_deref(), Some("viewer: read on orders:*"));
    assert!(
        set.decide(&request(&["admin"], "billing:1", "delete"), false)
            .allowed
    );
    assert!(
        !set.decide(&request(&["viewer"], "orders:7", "write"), false)
            .allowed
    );
    assert!(
        !set.decide(&request(&["other"], "orders:7", "read"), false)
            .allowed
    );
}

#[test]
fn nothing_that_grants_means_deny() {
    let d = with(vec![]).decide(&request(&[], "orders:7", "read"), false);
    assert_eq!(
        (d.allowed, d.reason, d.decided_by),
        (false, Reason::NoMatch, None)
    );
    let unknown = with(vec![]).decide(&request(&["ghost"], "orders:7", "read"), false);
    assert!(
        !unknown.allowed,
        "an assignment of a deleted role grants nothing"
    );
}

#[test]
fn expired_assignments_do_not_count_from_their_expiry_instant() {
    let set = with(vec![]);
    let mut req = request(&["editor"], "orders:7", "write");
    req.assignments[0].expires_at = Some(req.now + 1);
    assert!(set.decide(&req, false).allowed);
    req.assignments[0].expires_at = Some(req.now);
    let d = set.decide(&req, true);
    assert!(!d.allowed);
    assert_eq!(
        d.trace.unwrap().expired_assignments,
        vec!["editor".to_owned()]
    );
}

#[test]
fn an_applicable_deny_restricts_what_roles_grant() {
    let set = with(vec![policy(
        "no-eu-writes",
        0,
        Effect::Deny,
        json!({"target": {"resources": ["orders:eu:*"], "actions": ["write"]}}),
    )]);
    let d = set.decide(&request(&["editor"], "orders:eu:1", "write"), false);
    assert_eq!(
        (d.allowed, d.reason, d.decided_by.as_deref()),
        (false, Reason::PolicyDeny, Some("no-eu-writes"))
    );
    assert!(
        set.decide(&request(&["editor"], "orders:us:1", "write"), false)
            .allowed,
        "outside the target RBAC decides"
    );
}

#[test]
fn an_applicable_permit_extends_what_roles_grant() {
    let set = with(vec![policy(
        "owners-read-invoices",
        0,
        Effect::Permit,
        json!({"target": {"resources": "invoices:*", "actions": "read"},
               "condition": {"op": "eq", "attr": "resource.owner", "value": "u1"}}),
    )]);
    let mut req = request(&[], "invoices:9", "read");
    assert!(!set.decide(&req, false).allowed);
    req.resource_attributes.insert("owner".into(), json!("u1"));
    let d = set.decide(&req, false);
    assert_eq!((d.allowed, d.reason), (true, Reason::PolicyPermit));
}

#[test]
fn within_a_priority_deny_overrides_permit() {
    let set = with(vec![
        policy("a-permit", 5, Effect::Permit, json!({})),
        policy(
            "z-deny",
            5,
            Effect::Deny,
            json!({"target": {"actions": ["read"]}}),
        ),
    ]);
    let d = set.decide(&request(&["admin"], "orders:1", "read"), true);
    assert_eq!(
        (d.allowed, d.decided_by.as_deref()),
        (false, Some("z-deny"))
    );
    let trace = d.trace.unwrap();
    assert_eq!(trace.policies[0].name, "z-deny");
    assert_eq!(
        trace.policies[1].outcome,
        "applied (overridden within its priority)"
    );
}

#[test]
fn a_higher_priority_permit_beats_a_lower_deny() {
    let set = with(vec![
        policy("deny-all", 0, Effect::Deny, json!({})),
        policy(
            "break-glass",
            10,
            Effect::Permit,
            json!({"condition": {"op": "eq", "attr": "subject.on_call", "value": true}}),
        ),
    ]);
    let mut req = request(&["admin"], "orders:1", "read");
    assert!(!set.decide(&req, false).allowed);
    req.subject_attributes.insert("on_call".into(), json!(true));
    let d = set.decide(&req, true);
    assert_eq!(
        (d.allowed, d.decided_by.as_deref()),
        (true, Some("break-glass"))
    );
    let trace = d.trace.unwrap();
    assert_eq!(trace.policies[1].outcome, "not reached");
    assert!(
        trace.conclusion.contains("break-glass"),
        "{}",
        trace.conclusion
    );
}

#[test]
fn a_policy_whose_condition_is_false_falls_through() {
    let set = with(vec![policy(
        "office-hours",
        1,
        Effect::Deny,
        json!({"condition": {"not": {"op": "between", "attr": "context.hour_utc", "value": [8, 17]}}}),
    )]);
    let mut req = request(&["viewer"], "orders:1", "read");
    let d = set.decide(&req, true);
    assert_eq!(
        d.reason,
        Reason::RoleGrant,
        "09:00 UTC is inside office hours"
    );
    assert_eq!(d.trace.unwrap().policies[0].outcome, "condition false");
    req.now += 12 * 3600;
    assert_eq!(set.decide(&req, false).reason, Reason::PolicyDeny);
}

#[test]
fn target_roles_include_inherited_roles() {
    let set = with(vec![policy(
        "editors-only",
        0,
        Effect::Deny,
        json!({"target": {"role": "editor", "actions": ["read"]}}),
    )]);
    assert!(
        !set.decide(&request(&["admin"], "orders:1", "read"), false)
            .allowed,
        "admin inherits editor"
    );
    assert!(
        set.decide(&request(&["viewer"], "orders:1", "read"), false)
            .allowed
    );
}

#[test]
fn inactive_policies_are_ignored() {
    let mut p = policy("off", 0, Effect::Deny, json!({}));
    p.active = false;
    assert!(
        with(vec![p])
            .decide(&request(&["viewer"], "orders:1", "read"), false)
            .allowed
    );
}

#[test]
fn derived_context_and_subject_attributes() {
    let set = with(vec![policy(
        "monday-admins-from-office",
        0,
        Effect::Permit,
        json!({"condition": {"all": [
            {"op": "eq", "attr": "context.weekday", "value": "mon"},
            {"op": "contains", "attr": "subject.roles", "value": "viewer"},
            {"op": "eq", "attr": "subject.id", "value": "u1"},
            {"op": "prefix", "attr": "resource.id", "value": "reports:"},
            {"op": "eq", "attr": "action", "value": "export"},
            {"op": "cidr", "attr": "context.ip", "value": ["10.0.0.0/8", "2001:db8::/32"]}
        ]}}),
    )]);
    let mut req = request(&["editor"], "reports:q3", "export");
    req.context.insert("ip".into(), json!("2001:db8::7"));
    assert_eq!(set.decide(&req, false).reason, Reason::PolicyPermit);
    req.now += 86_400; // Tuesday
    assert_eq!(set.decide(&req, false).reason, Reason::NoMatch);
}

#[test]
fn explain_lists_effective_roles_and_matching_grants() {
    let d = with(vec![]).decide(&request(&["admin"], "orders:1", "read"), true);
    let trace = d.trace.unwrap();
    assert_eq!(trace.effective_roles, ["admin", "editor", "viewer"]);
    assert_eq!(
        trace.matched_grants,
        ["admin: * on *", "viewer: read on orders:*"]
    );
    assert!(trace.conclusion.contains("no policy applied"));
}

#[test]
fn bad_hierarchies_are_refused_with_the_role_named() {
    let cycle = TenantRules {
        roles: vec![role("a", Some("b")), role("b", Some("a"))],
        ..TenantRules::default()
    };
    assert!(matches!(
        PolicySet::compile(&cycle),
        Err(CompileError::Cycle(_))
    ));
    let unknown = TenantRules {
        roles: vec![role("a", Some("zz"))],
        ..TenantRules::default()
    };
    assert!(matches!(
        PolicySet::compile(&unknown),
        Err(CompileError::UnknownParent { .. })
    ));
    let dup = TenantRules {
        roles: vec![role("a", None), role("a", None)],
        ..TenantRules::default()
    };
    assert_eq!(
        PolicySet::compile(&dup).unwrap_err(),
        CompileError::DuplicateRole("a".into())
    );
    let mut deep = vec![role("r0", None)];
    for i in 1..=MAX_ROLE_DEPTH {
        deep.push(RoleDef {
            name: format!("r{i}"),
            parent: Some(format!("r{}", i - 1)),
        });
    }
    let err = PolicySet::compile(&TenantRules {
        roles: deep.clone(),
        ..TenantRules::default()
    })
    .unwrap_err();
    assert_eq!(err, CompileError::TooDeep(format!("r{MAX_ROLE_DEPTH}")));
    deep.pop();
    assert!(
        PolicySet::compile(&TenantRules {
            roles: deep,
            ..TenantRules::default()
        })
        .is_ok(),
        "exactly the limit is fine"
    );
}

#[test]
fn bad_grants_and_policies_are_refused_with_a_path() {
    let mut rules = base();
    rules.grants.push(grant("viewer", "or*ders", "read"));
    assert!(matches!(
        PolicySet::compile(&rules),
        Err(CompileError::BadGrantPattern { .. })
    ));
    let cases = [
        (json!({"target": {"resources": []}}), "target.resources"),
        (
            json!({"target": {"resources": ["ok", 3]}}),
            "target.resources[1]",
        ),
        (json!({"target": {"who": "x"}}), "target"),
        (json!({"rules": []}), "document"),
        (
            json!({"condition": {"op": "lt", "attr": "subject.age", "value": "x"}}),
            "condition.value",
        ),
        (json!("deny"), "document"),
    ];
    for (doc, want) in cases {
        match validate_policy_document("p", &doc) {
            Err(CompileError::BadPolicy { path, .. }) => assert_eq!(path, want, "{doc}"),
            other => panic!("{doc}: {other:?}"),
        }
    }
}

#[test]
fn shadowed_and_inert_policies_are_warned_about() {
    let set = with(vec![
        policy(
            "deny-orders",
            10,
            Effect::Deny,
            json!({"target": {"resources": ["orders:*"]}}),
        ),
        policy(
            "permit-eu-orders",
            5,
            Effect::Permit,
            json!({"target": {"resources": ["orders:eu:*"]}}),
        ),
        policy(
            "permit-billing",
            5,
            Effect::Permit,
            json!({"target": {"resources": ["billing:*"]}}),
        ),
        policy(
            "ghost-role",
            0,
            Effect::Permit,
            json!({"target": {"role": "ghost"}}),
        ),
        policy(
            "conditional",
            10,
            Effect::Deny,
            json!({"condition": {"op": "eq", "attr": "subject.x", "value": 1}}),
        ),
    ]);
    let kinds: Vec<(&str, &str)> = set
        .warnings()
        .iter()
        .map(|w| (w.policy.as_str(), w.kind.as_str()))
        .collect();
    assert!(
        kinds.contains(&("permit-eu-orders", "shadowed")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("ghost-role", "unknown_role")), "{kinds:?}");
    assert!(
        !kinds
            .iter()
            .any(|(p, _)| *p == "permit-billing" || *p == "conditional"),
        "{kinds:?}"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 4] = ["orders:1", "orders:2", "billing:1", "reports:1"];
    const ACTIONS: [&str; 3] = ["read", "write", "delete"];

    /// Up to 8 roles forming a forest (a parent always has a lower index).
    fn arb_roles() -> impl Strategy<Value = Vec<RoleDef>> {
        prop::collection::vec(any::<prop::sample::Index>(), 1..8).prop_map(|parents| {
            parents
                .iter()
                .enumerate()
                .map(|(i, p)| RoleDef {
                    name: format!("r{i}"),
                    parent: if i == 0 || p.index(3) == 0 {
                        None
                    } else {
                        Some(format!("r{}", p.index(i)))
                    },
                })
                .collect()
        })
    }

    fn arb_pattern(names: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            prop::sample::select(names).prop_map(str::to_owned),
            prop::sample::select(names).prop_map(|n| format!("{}*", &n[..n.len().min(3)])),
            prop::sample::select(names).prop_map(|n| match n.split_once(':') {
                Some((segment, _)) => format!("{segment}:*"),
                None => format!("{n}*"),
            }),
        ]
    }

    fn arb_grant(roles: usize) -> impl Strategy<Value = GrantDef> {
        (0..roles, arb_pattern(&NAMES), arb_pattern(&ACTIONS)).prop_map(|(r, resource, action)| {
            GrantDef {
                role: format!("r{r}"),
                resource,
                action,
            }
        })
    }

    fn arb_condition() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({})),
            (0i64..4).prop_map(|n| json!({"op": "ge", "attr": "subject.level", "value": n})),
            prop::sample::select(&ACTIONS[..])
                .prop_map(|a| json!({"not": {"op": "eq", "attr": "action", "value": a}})),
            Just(json!({"op": "cidr", "attr": "context.ip", "value": "10.0.0.0/8"})),
        ]
    }

    fn arb_policy(roles: usize, index: usize) -> impl Strategy<Value = PolicyDef> {
        (
            -2i32..3,
            any::<bool>(),
            arb_pattern(&NAMES),
            arb_pattern(&ACTIONS),
            prop::option::of(0..roles),
            arb_condition(),
        )
            .prop_map(move |(priority, deny, resource, action, role, condition)| {
                let mut target = json!({"resources": [resource], "actions": [action]});
                if let Some(r) = role {
                    target["role"] = json!(format!("r{r}"));
                }
                let mut document = json!({"target": target});
                if condition != json!({}) {
                    document["condition"] = condition;
                }
                PolicyDef {
                    name: format!("p{index}"),
                    priority,
                    effect: if deny { Effect::Deny } else { Effect::Permit },
                    document,
                    active: true,
                }
            })
    }

    fn arb_rules() -> impl Strategy<Value = TenantRules> {
        arb_roles().prop_flat_map(|roles| {
            let n = roles.len();
            let policies = (0..6usize)
                .map(move |i| arb_policy(n, i))
                .collect::<Vec<_>>();
            (
                Just(roles),
                prop::collection::vec(arb_grant(n), 0..12),
                policies,
                0..=6usize,
            )
                .prop_map(|(roles, grants, mut policies, keep)| {
                    policies.truncate(keep);
                    TenantRules {
                        roles,
                        grants,
                        policies,
                    }
                })
        })
    }

    fn arb_request(roles: usize) -> impl Strategy<Value = Request> {
        (
            prop::collection::vec((0..roles + 1, prop::option::of(-5i64..5)), 0..3),
            prop::sample::select(&NAMES[..]),
            prop::sample::select(&ACTIONS[..]),
            0i64..5,
            any::<bool>(),
        )
            .prop_map(|(assigned, resource, action, level, office)| {
                let now = 1_795_424_400;
                let mut req = Request {
                    subject: "u".into(),
                    // Index `roles` names a role that does not exist.
                    assignments: assigned
                        .into_iter()
                        .map(|(r, exp)| Assignment {
                            role: format!("r{r}"),
                            expires_at: exp.map(|e| now + e),
                        })
                        .collect(),
                    resource: resource.into(),
                    action: action.into(),
                    now,
                    ..Request::default()
                };
                req.subject_attributes.insert("level".into(), json!(level));
                req.context.insert(
                    "ip".into(),
                    json!(if office { "10.1.1.1" } else { "192.0.2.1" }),
                );
                req
            })
    }

    fn rules_and_request() -> impl Strategy<Value = (TenantRules, Request)> {
        arb_rules().prop_flat_map(|rules| {
            let n = rules.roles.len();
            (Just(rules), arb_request(n))
        })
    }

    fn outcome(d: &Decision) -> (bool, Reason, Option<String>) {
        (d.allowed, d.reason, d.decided_by.clone())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A holder of a role may do whatever any ancestor of it, at any
        /// distance, was granted (when no policy intervenes).
        #[test]
        fn inheritance_is_transitive(rules in arb_rules(), pick in any::<prop::sample::Index>()) {
            let rules = TenantRules { policies: vec![], ..rules };
            let set = PolicySet::compile(&rules).unwrap();
            let holder = pick.index(rules.roles.len());
            let mut cursor = Some(format!("r{holder}"));
            while let Some(current) = cursor {
                for g in rules.grants.iter().filter(|g| g.role == current) {
                    for resource in NAMES.iter().filter(|n| Pattern::parse(&g.resource).unwrap().matches(n)) {
                        for action in ACTIONS.iter().filter(|a| Pattern::parse(&g.action).unwrap().matches(a)) {
                            let req = request(&[&format!("r{holder}")], resource, action);
                            prop_assert!(set.decide(&req, false).allowed, "r{holder} should inherit {current}'s {g:?}");
                        }
                    }
                }
                cursor = rules.roles.iter().find(|r| r.name == current).and_then(|r| r.parent.clone());
            }
        }

        /// Adding a deny policy never turns a deny into a permit.
        #[test]
        fn a_new_deny_never_permits((rules, req) in rules_and_request(), extra in arb_policy(8, 99)) {
            let before = PolicySet::compile(&rules).unwrap().decide(&req, false);
            let mut more = rules.clone();
            more.policies.push(PolicyDef { effect: Effect::Deny, ..extra });
            let after = PolicySet::compile(&more).unwrap().decide(&req, false);
            prop_assert!(before.allowed || !after.allowed, "deny policy turned {before:?} into {after:?}");
        }

        /// Storage order of roles, grants and policies changes nothing.
        #[test]
        fn decisions_do_not_depend_on_storage_order((rules, req) in rules_and_request(), seed in any::<u64>()) {
            let mut shuffled = rules.clone();
            shuffle(&mut shuffled.roles, seed);
            shuffle(&mut shuffled.grants, seed ^ 0x9e37_79b9_7f4a_7c15);
            shuffle(&mut shuffled.policies, seed.rotate_left(17));
            let a = PolicySet::compile(&rules).unwrap().decide(&req, true);
            let b = PolicySet::compile(&shuffled).unwrap().decide(&req, true);
            prop_assert_eq!(outcome(&a), outcome(&b));
            prop_assert_eq!(a.trace, b.trace);
        }

        /// The indexed fast path and the explain path (which looks at every
        /// policy) always agree.
        #[test]
        fn the_fast_path_agrees_with_explain((rules, req) in rules_and_request()) {
            let set = PolicySet::compile(&rules).unwrap();
            prop_assert_eq!(outcome(&set.decide(&req, false)), outcome(&set.decide(&req, true)));
        }

        /// An expired assignment decides exactly as no assignment at all.
        #[test]
        fn expired_assignments_never_grant((rules, mut req) in rules_and_request()) {
            let set = PolicySet::compile(&rules).unwrap();
            for a in &mut req.assignments {
                a.expires_at = Some(req.now - 1);
            }
            let expired = set.decide(&req, false);
            req.assignments.clear();
            prop_assert_eq!(outcome(&expired), outcome(&set.decide(&req, false)));
        }

        /// The policy parser never panics, whatever the document.
        #[test]
        fn the_policy_parser_never_panics(doc in arb_json()) {
            let _ = validate_policy_document("p", &doc);
            let _ = Condition::parse(&doc);
        }

        /// Nor on documents shaped almost like real ones.
        #[test]
        fn the_policy_parser_never_panics_on_near_misses(doc in arb_near_miss()) {
            let _ = validate_policy_document("p", &doc);
            let _ = Condition::parse(&doc);
        }
    }

    /// An arbitrary permutation chosen by `seed` (Fisher-Yates over a
    /// splitmix64 stream), so proptest explores every storage order.
    fn shuffle<T>(items: &mut [T], seed: u64) {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for i in (1..items.len()).rev() {
            let j = usize::try_from(next() % (i as u64 + 1)).unwrap();
            items.swap(i, j);
        }
    }

    fn arb_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,24}".prop_map(Value::from),
        ]
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        arb_scalar().prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,12}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_near_miss() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "all",
            "any",
            "not",
            "op",
            "attr",
            "value",
            "target",
            "condition",
            "resources",
            "actions",
            "role",
        ]);
        let leaf = prop_oneof![
            arb_scalar(),
            prop::sample::select(vec![
                "eq",
                "in",
                "cidr",
                "between",
                "before",
                "subject.a",
                "context.ip",
                "*",
                "orders:*",
                "10.0.0.0/8",
                "2026-01-01T00:00:00Z"
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(8, 96, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..4).prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }
}

#[test]
fn the_published_schema_examples_are_accepted() {
    let schema: Value =
        serde_json::from_str(include_str!("../../../../docs/policy.schema.json")).unwrap();
    let examples = schema["examples"].as_array().unwrap();
    assert!(examples.len() >= 4);
    for example in examples {
        validate_policy_document("example", example).unwrap_or_else(|e| panic!("{example}: {e}"));
    }
    // The operator list in the schema is the parser's.
    let ops = schema["$defs"]["comparison"]["properties"]["op"]["enum"]
        .as_array()
        .unwrap();
    for op in ops {
        let doc = json!({"condition": {"op": op, "attr": "subject.x", "value": 0}});
        if let Err(CompileError::BadPolicy { path, .. }) = validate_policy_document("p", &doc) {
            assert_ne!(
                path, "condition.op",
                "schema operator {op} unknown to the parser"
            );
        }
    }
}

/// A tenant holds at most `MAX_POLICIES` policies: compilation (with its
/// quadratic shadowing check) stays bounded whatever an admin writes.
#[test]
fn more_than_the_policy_limit_is_refused_by_name() {
    let many = |n: usize| {
        (0..n)
            .map(|i| {
                policy(
                    &format!("p{i}"),
                    0,
                    Effect::Deny,
                    json!({"target": {"resources": [format!("r{i}:*")], "actions": ["read"]}}),
                )
            })
            .collect::<Vec<_>>()
    };
    let at_limit = TenantRules {
        policies: many(crate::MAX_POLICIES),
        ..base()
    };
    assert!(PolicySet::compile(&at_limit).is_ok());
    let over = TenantRules {
        policies: many(crate::MAX_POLICIES + 1),
        ..base()
    };
    let e = PolicySet::compile(&over).unwrap_err();
    assert_eq!(e, CompileError::TooManyPolicies(crate::MAX_POLICIES + 1));
    assert!(e.to_string().contains("at most 500"), "{e}");
    // Patterns per target list are bounded too.
    let wide = policy(
        "wide",
        0,
        Effect::Deny,
        json!({"target": {"resources": (0..65).map(|i| format!("r{i}")).collect::<Vec<_>>(), "actions": ["read"]}}),
    );
    let e = PolicySet::compile(&TenantRules {
        policies: vec![wide],
        ..base()
    })
    .unwrap_err();
    assert!(e.to_string().contains("1 to 64 patterns"), "{e}");
}
