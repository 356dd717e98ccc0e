//! A generated reference tenant, the same for every benchmark and comparison
//! (ours and other engines'), so figures are comparable across runs and
//! machines: 50 roles in hierarchies 4 deep, 500 grants, 50 ABAC policies
//! and 10 000 users. Deterministic: no randomness, no I/O.

use serde_json::{Map, Value, json};

use crate::model::{Assignment, Effect, GrantDef, PolicyDef, Request, RoleDef, TenantRules};

/// Departments; each owns a 4-deep role chain and its own resources.
pub const DEPARTMENTS: [&str; 10] = [
    "sales",
    "support",
    "finance",
    "eng",
    "ops",
    "legal",
    "hr",
    "marketing",
    "data",
    "security",
];
/// Resource kinds inside a department (`<dept>:<kind>:<id>`).
pub const KINDS: [&str; 5] = ["orders", "invoices", "reports", "tickets", "docs"];
/// Actions used by grants and requests.
pub const ACTIONS: [&str; 6] = ["read", "list", "write", "approve", "delete", "export"];
/// Levels of each department chain, parent first.
pub const LEVELS: [&str; 4] = ["viewer", "member", "lead", "admin"];
/// Roles outside the departments (no parent).
pub const GLOBAL_ROLES: [&str; 10] = [
    "auditor",
    "contractor",
    "oncall",
    "billing",
    "reporting",
    "support-tier2",
    "compliance",
    "partner",
    "intern",
    "platform",
];
/// Number of users generated.
pub const USERS: usize = 10_000;

/// Small deterministic generator (64-bit LCG, Knuth's constants): enough to
/// spread choices, nothing more.
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    /// A generator from a seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number below `bound` (> 0).
    pub fn below(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let high = usize::try_from(self.0 >> 33).unwrap_or(0);
        high % bound.max(1)
    }
}

/// The role name for a department and level.
#[must_use]
pub fn role_name(department: &str, level: &str) -> String {
    format!("{department}-{level}")
}

/// The tenant's rules: 50 roles, 500 grants, 50 policies.
#[must_use]
pub fn rules() -> TenantRules {
    let mut roles = Vec::new();
    let mut grants = Vec::new();
    for dept in DEPARTMENTS {
        for (depth, level) in LEVELS.iter().enumerate() {
            let parent = depth.checked_sub(1).map(|p| role_name(dept, LEVELS[p]));
            roles.push(RoleDef {
                name: role_name(dept, level),
                parent,
            });
        }
        // 40 grants per department: each level adds the actions it owns on
        // every kind, plus two wildcard grants at the top.
        let level_actions: [&[&str]; 4] = [
            &["read", "list"],
            &["write"],
            &["approve", "export"],
            &["delete"],
        ];
        for (level, actions) in LEVELS.iter().zip(level_actions) {
            for kind in KINDS {
                for action in actions {
                    grants.push(grant(
                        &role_name(dept, level),
                        &format!("{dept}:{kind}:*"),
                        action,
                    ));
                }
            }
        }
        grants.push(grant(&role_name(dept, "admin"), &format!("{dept}:*"), "*"));
        grants.push(grant(
            &role_name(dept, "lead"),
            &format!("{dept}:reports:*"),
            "*",
        ));
        grants.push(grant(&role_name(dept, "viewer"), "shared:*", "read"));
        grants.push(grant(&role_name(dept, "member"), "shared:*", "write"));
        grants.push(grant(
            &role_name(dept, "member"),
            &format!("{dept}:orders:archive"),
            "list",
        ));
        grants.push(grant(&role_name(dept, "admin"), "shared:*", "*"));
        grants.push(grant(
            &role_name(dept, "lead"),
            &format!("{dept}:tickets:escalated"),
            "write",
        ));
        grants.push(grant(
            &role_name(dept, "viewer"),
            &format!("{dept}:docs:handbook"),
            "read",
        ));
        grants.push(grant(
            &role_name(dept, "member"),
            &format!("{dept}:docs:handbook"),
            "write",
        ));
        grants.push(grant(
            &role_name(dept, "admin"),
            &format!("{dept}:docs:handbook"),
            "delete",
        ));
    }
    // 100 grants for the global roles: each reads/lists one kind in every department.
    for (i, name) in GLOBAL_ROLES.iter().enumerate() {
        roles.push(RoleDef {
            name: (*name).to_owned(),
            parent: None,
        });
        for dept in DEPARTMENTS {
            let kind = KINDS[i % KINDS.len()];
            grants.push(grant(
                name,
                &format!("{dept}:{kind}:*"),
                if i % 2 == 0 { "read" } else { "list" },
            ));
        }
    }
    TenantRules {
        roles,
        grants,
        policies: policies(),
    }
}

fn grant(role: &str, resource: &str, action: &str) -> GrantDef {
    GrantDef {
        role: role.to_owned(),
        resource: resource.to_owned(),
        action: action.to_owned(),
    }
}

/// Five policy templates per department, at different priorities.
fn policies() -> Vec<PolicyDef> {
    let mut out = Vec::new();
    for dept in DEPARTMENTS {
        let policy = |suffix: &str, priority: i32, effect: Effect, document: Value| PolicyDef {
            name: format!("{dept}-{suffix}"),
            priority,
            effect,
            document,
            active: true,
        };
        out.push(policy(
            "writes-in-office-hours",
            10,
            Effect::Deny,
            json!({"target": {"resources": [format!("{dept}:*")], "actions": ["write", "approve", "delete"]},
                   "condition": {"not": {"op": "between", "attr": "context.hour_utc", "value": [6, 20]}}}),
        ));
        out.push(policy(
            "admin-from-corp-network",
            20,
            Effect::Deny,
            json!({"target": {"resources": [format!("{dept}:*")], "actions": ["delete"], "role": role_name(dept, "admin")},
                   "condition": {"not": {"op": "cidr", "attr": "context.ip", "value": ["10.0.0.0/8", "fd00::/8"]}}}),
        ));
        out.push(policy(
            "owners-read-own",
            5,
            Effect::Permit,
            json!({"target": {"resources": [format!("{dept}:orders:*"), format!("{dept}:tickets:*")], "actions": ["read"]},
                   "condition": {"op": "eq", "attr": "resource.owner_is_subject", "value": true}}),
        ));
        out.push(policy(
            "approvals-need-level",
            15,
            Effect::Deny,
            json!({"target": {"resources": [format!("{dept}:invoices:*")], "actions": ["approve"]},
                   "condition": {"op": "lt", "attr": "subject.level", "value": 3}}),
        ));
        out.push(policy(
            "same-region-exports",
            8,
            Effect::Deny,
            json!({"target": {"resources": [format!("{dept}:*")], "actions": ["export"]},
            "condition": {"all": [
                {"not": {"op": "in", "attr": "subject.region", "value": ["eu", "us"]}},
                {"op": "ne", "attr": "subject.clearance", "value": "global"}
            ]}}),
        ));
    }
    out
}

/// A user: id, role assignments and attributes.
#[derive(Debug, Clone)]
pub struct User {
    /// `u<n>`.
    pub id: String,
    /// One to three roles.
    pub assignments: Vec<Assignment>,
    /// `level` (1-5), `region`, `clearance`.
    pub attributes: Map<String, Value>,
}

/// The 10 000 users: most hold one department role, some a second one or a
/// global role, a few have an expired assignment.
#[must_use]
pub fn users() -> Vec<User> {
    let mut rng = Lcg::new(42);
    (0..USERS)
        .map(|n| {
            let dept = DEPARTMENTS[rng.below(DEPARTMENTS.len())];
            let level = LEVELS[rng.below(LEVELS.len())];
            let mut assignments = vec![Assignment {
                role: role_name(dept, level),
                expires_at: None,
            }];
            if rng.below(4) == 0 {
                assignments.push(Assignment {
                    role: GLOBAL_ROLES[rng.below(GLOBAL_ROLES.len())].to_owned(),
                    expires_at: if rng.below(5) == 0 {
                        Some(1_700_000_000)
                    } else {
                        None
                    },
                });
            }
            if rng.below(10) == 0 {
                let other = DEPARTMENTS[rng.below(DEPARTMENTS.len())];
                assignments.push(Assignment {
                    role: role_name(other, "viewer"),
                    expires_at: None,
                });
            }
            let mut attributes = Map::new();
            attributes.insert("level".into(), json!(1 + rng.below(5)));
            attributes.insert("region".into(), json!(["eu", "us", "apac"][rng.below(3)]));
            attributes.insert("clearance".into(), json!(["local", "global"][rng.below(2)]));
            User {
                id: format!("u{n}"),
                assignments,
                attributes,
            }
        })
        .collect()
}

/// `count` requests spread over users, departments, kinds and actions, at
/// 2026-11-23 (hours vary), half from the corporate network.
#[must_use]
pub fn requests(users: &[User], count: usize, seed: u64) -> Vec<Request> {
    let mut rng = Lcg::new(seed);
    (0..count)
        .map(|_| {
            let user = &users[rng.below(users.len())];
            // Mostly the user's own department, as in real traffic.
            let own = user.assignments[0]
                .role
                .split('-')
                .next()
                .unwrap_or("sales");
            let dept = if rng.below(10) < 7 {
                own
            } else {
                DEPARTMENTS[rng.below(DEPARTMENTS.len())]
            };
            let kind = KINDS[rng.below(KINDS.len())];
            let mut resource_attributes = Map::new();
            resource_attributes.insert("owner_is_subject".into(), json!(rng.below(3) == 0));
            let mut context = Map::new();
            context.insert(
                "ip".into(),
                json!(if rng.below(2) == 0 {
                    "10.2.3.4"
                } else {
                    "198.51.100.7"
                }),
            );
            let hour = i64::try_from(rng.below(24)).unwrap_or(0);
            Request {
                subject: user.id.clone(),
                assignments: user.assignments.clone(),
                subject_attributes: user.attributes.clone(),
                resource: format!("{dept}:{kind}:{}", rng.below(1000)),
                resource_attributes,
                action: ACTIONS[rng.below(ACTIONS.len())].to_owned(),
                context,
                now: 1_795_392_000 + hour * 3600,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicySet;

    #[test]
    fn the_reference_tenant_has_the_advertised_shape() {
        let rules = rules();
        assert_eq!(rules.roles.len(), 50);
        assert_eq!(rules.grants.len(), 500);
        assert_eq!(rules.policies.len(), 50);
        assert_eq!(users().len(), USERS);
        let set = PolicySet::compile(&rules).unwrap();
        assert!(set.warnings().is_empty(), "{:?}", set.warnings());
        let decisions: Vec<bool> = requests(&users(), 2000, 7)
            .iter()
            .map(|r| set.decide(r, false).allowed)
            .collect();
        let allowed = decisions.iter().filter(|a| **a).count();
        assert!(
            allowed > 200 && allowed < 1800,
            "a useful mix of permits and denies, got {allowed}/2000"
        );
    }
}
