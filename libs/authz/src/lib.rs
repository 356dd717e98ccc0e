//! The authorisation engine: "may this subject do this action on this
//! resource, here and now?", answered from a tenant's roles, grants and ABAC
//! policies.
//!
//! Architecture invariant: no I/O, no clock, no randomness. Everything the
//! engine knows arrives in [`TenantRules`] (compiled once into a [`PolicySet`],
//! which is what the caches hold) and in each [`Request`] (including its time),
//! so every decision is deterministic, repeatable and explainable.
//!
//! Combining rule (see `docs/authz.md`):
//! 1. ABAC policies are grouped by priority, highest first. The first group
//!    with an *applicable* policy (target matches and condition holds) decides:
//!    within it, deny overrides permit.
//! 2. If no policy applies, RBAC decides: permit if any effective role (an
//!    unexpired assignment, or an ancestor of one) has a grant matching the
//!    resource and action.
//! 3. Otherwise deny.
//!
//! So ABAC can both restrict (deny) and extend (permit) what roles grant.

mod compile;
mod condition;
pub mod http;
mod model;
mod pattern;
pub mod reference;

pub use compile::{CompileError, PolicySet, Warning, validate_policy_document};
pub use condition::{Condition, ConditionError, Operator};
pub use model::{
    Assignment, Decision, Effect, GrantDef, PolicyDef, PolicyTrace, Reason, Request, RoleDef,
    TenantRules, Trace,
};
pub use pattern::Pattern;

/// Deepest role hierarchy accepted (the database enforces the same bound).
pub const MAX_ROLE_DEPTH: usize = 16;

/// Most policies one tenant may hold (active or not). Compilation checks
/// every policy against the ones before it for shadowing (quadratic), so the
/// bound keeps one compile in the low milliseconds.
pub const MAX_POLICIES: usize = 500;
