//! What goes in (rules and requests) and what comes out (decisions).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A role and its optional parent (the role inherits every grant of its parent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDef {
    /// Unique within the tenant.
    pub name: String,
    /// Parent role name.
    pub parent: Option<String>,
}

/// "Role `role` may do `action` on resources matching `resource`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantDef {
    /// Role name.
    pub role: String,
    /// Resource pattern (`orders:*`, `*`, exact).
    pub resource: String,
    /// Action pattern (`read`, `*`).
    pub action: String,
}

/// What an applicable policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Allow.
    Permit,
    /// Refuse.
    Deny,
}

/// An ABAC policy as stored: the document holds `target` and `condition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDef {
    /// Unique within the tenant.
    pub name: String,
    /// Higher is evaluated first.
    pub priority: i32,
    /// Permit or deny when applicable.
    pub effect: Effect,
    /// `{"target": {...}, "condition": {...}}` (see `docs/policy.schema.json`).
    pub document: Value,
    /// Inactive policies are ignored.
    #[serde(default = "default_true")]
    pub active: bool,
}

fn default_true() -> bool {
    true
}

/// Everything a tenant's decisions depend on, as loaded from the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantRules {
    /// Roles and hierarchy.
    pub roles: Vec<RoleDef>,
    /// Grants.
    pub grants: Vec<GrantDef>,
    /// ABAC policies.
    pub policies: Vec<PolicyDef>,
}

/// A role held by the subject, maybe until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Role name.
    pub role: String,
    /// Unix seconds after which the assignment no longer counts.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// One question for the engine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Request {
    /// Subject id (exposed to conditions as `subject.id`).
    pub subject: String,
    /// The subject's role assignments.
    pub assignments: Vec<Assignment>,
    /// Subject attributes (`subject.*`).
    #[serde(default)]
    pub subject_attributes: Map<String, Value>,
    /// Resource name, e.g. `orders:42` (exposed as `resource.id`).
    pub resource: String,
    /// Resource attributes (`resource.*`).
    #[serde(default)]
    pub resource_attributes: Map<String, Value>,
    /// Action, e.g. `read`.
    pub action: String,
    /// Request context (`context.*`, e.g. `ip`); `time`, `hour_utc` and
    /// `weekday` are derived from `now` unless given.
    #[serde(default)]
    pub context: Map<String, Value>,
    /// The decision time, unix seconds.
    pub now: i64,
}

/// Why the decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An applicable permit policy decided.
    PolicyPermit,
    /// An applicable deny policy decided.
    PolicyDeny,
    /// No policy applied; a role grant matched.
    RoleGrant,
    /// Nothing granted the request.
    NoMatch,
    /// The subject is disabled: denied before any rule is looked at (set by
    /// the caller, which knows the subject's status; the engine never is asked).
    SubjectDisabled,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The deciding policy, or the grant (`role: action on resource`).
    pub decided_by: Option<String>,
    /// The evaluation trace, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
}

/// What the engine looked at, for `?explain=true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Roles in force (unexpired assignments and their ancestors), sorted.
    pub effective_roles: Vec<String>,
    /// Assignments ignored because they expired.
    pub expired_assignments: Vec<String>,
    /// Policies in evaluation order with whether each applied and why not.
    pub policies: Vec<PolicyTrace>,
    /// Grants that matched (when RBAC decided).
    pub matched_grants: Vec<String>,
    /// One sentence on why the final effect won.
    pub conclusion: String,
}

/// One policy's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTrace {
    /// Policy name.
    pub name: String,
    /// Its priority.
    pub priority: i32,
    /// Its effect.
    pub effect: Effect,
    /// `applied`, `target did not match`, `condition false`, or `not reached`.
    pub outcome: String,
}
