//! Compiling a tenant's rules once into a [`PolicySet`] and deciding requests
//! against it.
//!
//! Compilation does all the work that does not depend on the request: role
//! names become indices, every role gets its ancestor list and the flattened
//! list of grants it holds (its own and inherited), and policies are parsed,
//! type-checked and sorted into evaluation order. A decision then only walks
//! the subject's few roles and the applicable policies, without allocating on
//! the non-explain path.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::condition::{Attr, Condition, ConditionError, Root};
use crate::model::{Decision, Effect, PolicyDef, PolicyTrace, Reason, Request, TenantRules, Trace};
use crate::pattern::{Pattern, PatternError};
use crate::{MAX_POLICIES, MAX_ROLE_DEPTH};

/// Most patterns in one policy target list.
const MAX_TARGET_PATTERNS: usize = 64;

/// Why a tenant's rules (or one policy) cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Two roles share a name.
    #[error("role {0:?} is defined twice")]
    DuplicateRole(String),
    /// A role names a parent that does not exist.
    #[error("role {role:?} has unknown parent {parent:?}")]
    UnknownParent {
        /// The child.
        role: String,
        /// The missing parent.
        parent: String,
    },
    /// Following parents from a role comes back to it.
    #[error("role hierarchy cycle through role {0:?}")]
    Cycle(String),
    /// A chain of parents is longer than [`MAX_ROLE_DEPTH`].
    #[error("role hierarchy deeper than {MAX_ROLE_DEPTH} levels at role {0:?}")]
    TooDeep(String),
    /// A grant names a role that does not exist.
    #[error("grant for unknown role {0:?}")]
    UnknownGrantRole(String),
    /// A grant's pattern is malformed.
    #[error("grant of role {role:?}: {source}")]
    BadGrantPattern {
        /// The role.
        role: String,
        /// The pattern fault.
        source: PatternError,
    },
    /// More policies than [`MAX_POLICIES`].
    #[error("{0} policies; a tenant may hold at most {MAX_POLICIES}")]
    TooManyPolicies(usize),
    /// Two policies share a name.
    #[error("policy {0:?} is defined twice")]
    DuplicatePolicy(String),
    /// A policy document is malformed; `path` points into the document.
    #[error("policy {policy:?}: {path}: {message}")]
    BadPolicy {
        /// The policy.
        policy: String,
        /// JSON path of the fault, e.g. `condition.all[2].value`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Something legal but probably not what the author meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The policy concerned.
    pub policy: String,
    /// Stable machine-readable kind: `shadowed`, `unknown_role`, `never_matches`.
    pub kind: String,
    /// Explanation for people.
    pub message: String,
}

/// A policy's target: which requests it is about.
#[derive(Debug, Clone)]
struct Target {
    resources: Vec<Pattern>,
    actions: Vec<Pattern>,
    role: TargetRole,
}

/// Who a policy is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetRole {
    /// Every subject.
    Anyone,
    /// Holders of the role (directly or through a descendant role).
    Holders(u32),
    /// The target names a role that does not exist: the policy never applies.
    UnknownRole,
}

/// A policy document split into its parts, before roles are resolved.
struct ParsedDocument {
    resources: Vec<Pattern>,
    actions: Vec<Pattern>,
    role: Option<String>,
    condition: Condition,
}

#[derive(Debug, Clone)]
struct CompiledPolicy {
    name: String,
    priority: i32,
    effect: Effect,
    target: Target,
    condition: Condition,
}

#[derive(Debug, Clone)]
struct FlatGrant {
    resource: Pattern,
    action: Pattern,
    /// The role that holds it directly (for explanations).
    role: u32,
}

/// A tenant's rules compiled for fast, deterministic decisions. Immutable and
/// cheap to share (`Arc<PolicySet>`); this is what the cache tiers hold.
#[derive(Debug, Clone)]
pub struct PolicySet {
    role_names: Vec<String>,
    role_index: HashMap<String, u32>,
    /// For each role: itself and all its ancestors.
    ancestors: Vec<Vec<u32>>,
    /// For each role: every grant it holds, own and inherited.
    grants: Vec<Vec<FlatGrant>>,
    /// Policies in evaluation order: priority desc, deny first, then name.
    policies: Vec<CompiledPolicy>,
    /// Policies (indices, ascending) whose every resource pattern lies inside
    /// one first segment (`orders` for `orders:*`), keyed by that segment.
    policies_by_segment: HashMap<String, Vec<u32>>,
    /// Policies that may match resources of any segment.
    policies_everywhere: Vec<u32>,
    warnings: Vec<Warning>,
}

fn pattern_list(value: Option<&Value>, path: &str) -> Result<Vec<Pattern>, (String, String)> {
    let Some(value) = value else {
        return Ok(vec![Pattern::Any]);
    };
    let items: Vec<&Value> = match value {
        Value::String(_) => vec![value],
        Value::Array(list) if !list.is_empty() && list.len() <= MAX_TARGET_PATTERNS => {
            list.iter().collect()
        }
        _ => {
            return Err((
                path.to_owned(),
                format!("must be a pattern or an array of 1 to {MAX_TARGET_PATTERNS} patterns"),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let raw = item
                .as_str()
                .ok_or_else(|| (format!("{path}[{i}]"), "must be a string".to_owned()))?;
            Pattern::parse(raw).map_err(|e| (format!("{path}[{i}]"), e.to_string()))
        })
        .collect()
}

/// Parses a policy document (`{"target": {...}, "condition": {...}}`) into
/// its target and condition, without resolving the role.
fn parse_document(document: &Value) -> Result<ParsedDocument, (String, String)> {
    let object = document
        .as_object()
        .ok_or_else(|| ("document".to_owned(), "must be an object".to_owned()))?;
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "target" | "condition"))
    {
        return Err((
            "document".to_owned(),
            format!("unknown key {key:?}; a policy document has target and condition"),
        ));
    }
    let empty = serde_json::Map::new();
    let target = match object.get("target") {
        None => &empty,
        Some(Value::Object(t)) => t,
        Some(_) => return Err(("target".to_owned(), "must be an object".to_owned())),
    };
    if let Some(key) = target
        .keys()
        .find(|k| !matches!(k.as_str(), "resources" | "actions" | "role"))
    {
        return Err((
            "target".to_owned(),
            format!("unknown key {key:?}; a target has resources, actions and role"),
        ));
    }
    let resources = pattern_list(target.get("resources"), "target.resources")?;
    let actions = pattern_list(target.get("actions"), "target.actions")?;
    let role = match target.get("role") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if !r.is_empty() && r.len() <= 64 => Some(r.clone()),
        Some(_) => return Err(("target.role".to_owned(), "must be a role name".to_owned())),
    };
    let condition = match object.get("condition") {
        None => Condition::All(Vec::new()),
        Some(c) => {
            Condition::parse(c).map_err(|ConditionError { path, message }| (path, message))?
        }
    };
    Ok(ParsedDocument {
        resources,
        actions,
        role,
        condition,
    })
}

/// Checks one policy document on its own (for write-time validation before the
/// rest of the tenant is known). Role existence is checked by [`PolicySet::compile`].
pub fn validate_policy_document(name: &str, document: &Value) -> Result<(), CompileError> {
    parse_document(document)
        .map(|_| ())
        .map_err(|(path, message)| CompileError::BadPolicy {
            policy: name.to_owned(),
            path,
            message,
        })
}

impl PolicySet {
    /// Compiles a tenant's rules: resolves the hierarchy (rejecting cycles,
    /// unknown parents and chains deeper than [`MAX_ROLE_DEPTH`]), flattens
    /// grants, parses policies and reports shadowed or inert policies as
    /// warnings.
    pub fn compile(rules: &TenantRules) -> Result<Self, CompileError> {
        let mut role_index = HashMap::with_capacity(rules.roles.len());
        let mut role_names = Vec::with_capacity(rules.roles.len());
        for role in &rules.roles {
            let id = u32::try_from(role_names.len())
                .map_err(|_| CompileError::TooDeep(role.name.clone()))?;
            if role_index.insert(role.name.clone(), id).is_some() {
                return Err(CompileError::DuplicateRole(role.name.clone()));
            }
            role_names.push(role.name.clone());
        }
        let ancestors = ancestor_chains(rules, &role_index, &role_names)?;
        let grants = flatten_grants(rules, &role_index, &role_names, &ancestors)?;

        if rules.policies.len() > MAX_POLICIES {
            return Err(CompileError::TooManyPolicies(rules.policies.len()));
        }
        let mut seen = HashSet::new();
        let mut policies = Vec::new();
        let mut warnings = Vec::new();
        for def in &rules.policies {
            if !seen.insert(def.name.as_str()) {
                return Err(CompileError::DuplicatePolicy(def.name.clone()));
            }
            if !def.active {
                continue;
            }
            policies.push(compile_policy(def, &role_index, &mut warnings)?);
        }
        policies.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| (a.effect == Effect::Permit).cmp(&(b.effect == Effect::Permit)))
                .then_with(|| a.name.cmp(&b.name))
        });
        shadowing_warnings(&policies, &mut warnings);
        let (policies_by_segment, policies_everywhere) = index_policies(&policies);
        Ok(Self {
            role_names,
            role_index,
            ancestors,
            grants,
            policies,
            policies_by_segment,
            policies_everywhere,
            warnings,
        })
    }

    /// Warnings found while compiling (shadowed policies, unknown roles).
    #[must_use]
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Number of roles, for metrics and sanity checks.
    #[must_use]
    pub fn role_count(&self) -> usize {
        self.role_names.len()
    }

    /// Number of active policies.
    #[must_use]
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// Roles in force for the assignments at `now`: unexpired assignments of
    /// known roles and all their ancestors, sorted by name.
    #[must_use]
    pub fn effective_roles(&self, request: &Request) -> Vec<String> {
        self.effective_role_names(&self.live_roles(request))
    }

    /// Role ids of unexpired assignments (unknown roles are ignored),
    /// resolved once per decision.
    fn live_roles(&self, request: &Request) -> LiveRoles {
        let mut live = LiveRoles::default();
        for assignment in &request.assignments {
            if assignment.expires_at.is_none_or(|t| t > request.now)
                && let Some(&id) = self.role_index.get(&assignment.role)
            {
                live.push(id);
            }
        }
        live
    }

    fn has_role(&self, live: &LiveRoles, role: u32) -> bool {
        live.as_slice()
            .iter()
            .any(|&r| self.ancestors[r as usize].contains(&role))
    }

    fn effective_role_names(&self, live: &LiveRoles) -> Vec<String> {
        let mut ids: Vec<u32> = live
            .as_slice()
            .iter()
            .flat_map(|&r| self.ancestors[r as usize].iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut names: Vec<String> = ids
            .into_iter()
            .map(|r| self.role_names[r as usize].clone())
            .collect();
        names.sort();
        names
    }

    fn lookup<'r>(
        &self,
        request: &'r Request,
        live: &LiveRoles,
        attr: &Attr,
    ) -> Option<Cow<'r, Value>> {
        let field = attr.field.as_str();
        match attr.root {
            Root::Action => Some(Cow::Owned(Value::String(request.action.clone()))),
            Root::Subject => match request.subject_attributes.get(field) {
                Some(v) => Some(Cow::Borrowed(v)),
                None if field == "id" => Some(Cow::Owned(Value::String(request.subject.clone()))),
                None if field == "roles" => Some(Cow::Owned(Value::Array(
                    self.effective_role_names(live)
                        .into_iter()
                        .map(Value::String)
                        .collect(),
                ))),
                None => None,
            },
            Root::Resource => match request.resource_attributes.get(field) {
                Some(v) => Some(Cow::Borrowed(v)),
                None if field == "id" => Some(Cow::Owned(Value::String(request.resource.clone()))),
                None => None,
            },
            Root::Context => match request.context.get(field) {
                Some(v) => Some(Cow::Borrowed(v)),
                None => derived_context(field, request.now).map(Cow::Owned),
            },
        }
    }

    /// Whether a policy applies: `Err(outcome)` says why not.
    fn applies(
        &self,
        policy: &CompiledPolicy,
        request: &Request,
        live: &LiveRoles,
    ) -> Result<(), &'static str> {
        let target = &policy.target;
        let role_ok = match target.role {
            TargetRole::Anyone => true,
            TargetRole::UnknownRole => false,
            TargetRole::Holders(role) => self.has_role(live, role),
        };
        if !role_ok
            || !target
                .resources
                .iter()
                .any(|p| p.matches(&request.resource))
            || !target.actions.iter().any(|p| p.matches(&request.action))
        {
            return Err("target did not match");
        }
        if !policy
            .condition
            .eval(&|attr: &Attr| self.lookup(request, live, attr))
        {
            return Err("condition false");
        }
        Ok(())
    }

    fn matching_grant(&self, request: &Request, live: &LiveRoles) -> Option<&FlatGrant> {
        live.as_slice().iter().find_map(|&r| {
            self.grants[r as usize].iter().find(|g| {
                g.action.matches(&request.action) && g.resource.matches(&request.resource)
            })
        })
    }

    fn grant_label(&self, grant: &FlatGrant) -> String {
        format!(
            "{}: {} on {}",
            self.role_names[grant.role as usize], grant.action, grant.resource
        )
    }

    /// The first applicable policy in evaluation order, looking only at the
    /// policies that can match the resource's first segment. Policies are
    /// sorted priority desc with denies first inside a priority, so this is
    /// the winner of the highest applicable priority: a deny if any deny
    /// there applies, else a permit.
    fn first_applicable(&self, request: &Request, live: &LiveRoles) -> Option<usize> {
        let in_segment = resource_segment(&request.resource)
            .and_then(|segment| self.policies_by_segment.get(segment))
            .map_or(&[][..], Vec::as_slice);
        merge_ascending(in_segment, &self.policies_everywhere)
            .map(|i| i as usize)
            .find(|&i| self.applies(&self.policies[i], request, live).is_ok())
    }

    /// The explain path: every policy in order, each with its outcome.
    fn first_applicable_traced(
        &self,
        request: &Request,
        live: &LiveRoles,
        trace: &mut Trace,
    ) -> Option<usize> {
        let mut winner: Option<usize> = None;
        for (i, policy) in self.policies.iter().enumerate() {
            let outcome = match winner {
                Some(w) if policy.priority != self.policies[w].priority => "not reached",
                Some(_) => match self.applies(policy, request, live) {
                    Ok(()) => "applied (overridden within its priority)",
                    Err(why) => why,
                },
                None => match self.applies(policy, request, live) {
                    Ok(()) => {
                        winner = Some(i);
                        "applied"
                    }
                    Err(why) => why,
                },
            };
            trace.policies.push(PolicyTrace {
                name: policy.name.clone(),
                priority: policy.priority,
                effect: policy.effect,
                outcome: outcome.to_owned(),
            });
        }
        winner
    }

    /// Decides a request; with `explain`, the decision carries a [`Trace`].
    #[must_use]
    pub fn decide(&self, request: &Request, explain: bool) -> Decision {
        let live = self.live_roles(request);
        let mut trace = explain.then(|| Trace {
            effective_roles: self.effective_role_names(&live),
            expired_assignments: request
                .assignments
                .iter()
                .filter(|a| a.expires_at.is_some_and(|t| t <= request.now))
                .map(|a| a.role.clone())
                .collect(),
            ..Trace::default()
        });
        let winner = match trace.as_mut() {
            Some(t) => self.first_applicable_traced(request, &live, t),
            None => self.first_applicable(request, &live),
        };
        if let Some(w) = winner {
            let policy = &self.policies[w];
            let allowed = policy.effect == Effect::Permit;
            if let Some(t) = trace.as_mut() {
                t.conclusion = format!(
                    "policy {:?} (priority {}) applied and is the highest-priority applicable {}; ABAC decides over roles",
                    policy.name,
                    policy.priority,
                    if allowed {
                        "policy and no deny of that priority applied"
                    } else {
                        "deny (deny overrides within a priority)"
                    },
                );
            }
            return Decision {
                allowed,
                reason: if allowed {
                    Reason::PolicyPermit
                } else {
                    Reason::PolicyDeny
                },
                decided_by: Some(policy.name.clone()),
                trace,
            };
        }
        if let Some(grant) = self.matching_grant(request, &live) {
            let label = self.grant_label(grant);
            if let Some(t) = trace.as_mut() {
                t.matched_grants = self.all_matching_grants(request, &live);
                t.conclusion = format!("no policy applied; role grant {label} permits");
            }
            return Decision {
                allowed: true,
                reason: Reason::RoleGrant,
                decided_by: Some(label),
                trace,
            };
        }
        if let Some(t) = trace.as_mut() {
            "no policy applied and no role grant matched: denied by default"
                .clone_into(&mut t.conclusion);
        }
        Decision {
            allowed: false,
            reason: Reason::NoMatch,
            decided_by: None,
            trace,
        }
    }

    fn all_matching_grants(&self, request: &Request, live: &LiveRoles) -> Vec<String> {
        let mut labels: Vec<String> = live
            .as_slice()
            .iter()
            .flat_map(|&r| self.grants[r as usize].iter())
            .filter(|g| g.action.matches(&request.action) && g.resource.matches(&request.resource))
            .map(|g| self.grant_label(g))
            .collect();
        labels.sort();
        labels.dedup();
        labels
    }
}

/// For each role: itself followed by its ancestors, nearest first. Refuses
/// unknown parents, cycles and chains deeper than [`MAX_ROLE_DEPTH`].
fn ancestor_chains(
    rules: &TenantRules,
    role_index: &HashMap<String, u32>,
    role_names: &[String],
) -> Result<Vec<Vec<u32>>, CompileError> {
    let parents: Vec<Option<u32>> = rules
        .roles
        .iter()
        .map(|role| match &role.parent {
            None => Ok(None),
            Some(parent) => role_index.get(parent).copied().map(Some).ok_or_else(|| {
                CompileError::UnknownParent {
                    role: role.name.clone(),
                    parent: parent.clone(),
                }
            }),
        })
        .collect::<Result<_, _>>()?;
    let mut ancestors = Vec::with_capacity(role_names.len());
    for (id, name) in role_names.iter().enumerate() {
        let mut chain = vec![index(id)];
        let mut cursor = parents[id];
        while let Some(parent) = cursor {
            if parent == index(id) {
                return Err(CompileError::Cycle(name.clone()));
            }
            chain.push(parent);
            if chain.len() > MAX_ROLE_DEPTH {
                return Err(CompileError::TooDeep(name.clone()));
            }
            cursor = parents[parent as usize];
        }
        ancestors.push(chain);
    }
    Ok(ancestors)
}

/// For each role: every grant it holds, own and inherited.
fn flatten_grants(
    rules: &TenantRules,
    role_index: &HashMap<String, u32>,
    role_names: &[String],
    ancestors: &[Vec<u32>],
) -> Result<Vec<Vec<FlatGrant>>, CompileError> {
    let mut own: Vec<Vec<FlatGrant>> = vec![Vec::new(); role_names.len()];
    for grant in &rules.grants {
        let role = *role_index
            .get(&grant.role)
            .ok_or_else(|| CompileError::UnknownGrantRole(grant.role.clone()))?;
        let bad = |source| CompileError::BadGrantPattern {
            role: grant.role.clone(),
            source,
        };
        let resource = Pattern::parse(&grant.resource).map_err(bad)?;
        let action = Pattern::parse(&grant.action).map_err(bad)?;
        own[role as usize].push(FlatGrant {
            resource,
            action,
            role,
        });
    }
    // Flattened and sorted by (role, action, resource) so the grant named in
    // a decision does not depend on the order rules were stored in.
    let grants: Vec<Vec<FlatGrant>> = ancestors
        .iter()
        .map(|chain| {
            let mut flat: Vec<FlatGrant> = chain
                .iter()
                .flat_map(|&r| own[r as usize].iter().cloned())
                .collect();
            flat.sort_by(|a, b| {
                (
                    role_names[a.role as usize].as_str(),
                    a.action.to_string(),
                    a.resource.to_string(),
                )
                    .cmp(&(
                        role_names[b.role as usize].as_str(),
                        b.action.to_string(),
                        b.resource.to_string(),
                    ))
            });
            flat.dedup_by(|a, b| {
                a.role == b.role && a.action == b.action && a.resource == b.resource
            });
            flat
        })
        .collect();
    Ok(grants)
}

/// Up to eight role ids inline (the common case), more spill to the heap.
#[derive(Debug, Default)]
struct LiveRoles {
    inline: [u32; 8],
    len: usize,
    spill: Vec<u32>,
}

impl LiveRoles {
    fn push(&mut self, id: u32) {
        if self.spill.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = id;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline[..self.len]);
            }
            self.spill.push(id);
        }
    }

    fn as_slice(&self) -> &[u32] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

/// The part of a resource name before its first `:`, if it has one.
fn resource_segment(resource: &str) -> Option<&str> {
    resource.split_once(':').map(|(segment, _)| segment)
}

/// The one first segment every name matched by the pattern has, if any.
fn pattern_segment(pattern: &Pattern) -> Option<&str> {
    match pattern {
        Pattern::Any => None,
        Pattern::Prefix(literal) | Pattern::Exact(literal) => resource_segment(literal),
    }
}

/// Splits policies into those tied to first segments and the rest, so a
/// decision looks only at policies that can match its resource.
fn index_policies(policies: &[CompiledPolicy]) -> (HashMap<String, Vec<u32>>, Vec<u32>) {
    let mut by_segment: HashMap<String, Vec<u32>> = HashMap::new();
    let mut everywhere = Vec::new();
    for (i, policy) in policies.iter().enumerate() {
        let segments: Option<Vec<&str>> = policy
            .target
            .resources
            .iter()
            .map(pattern_segment)
            .collect();
        match segments {
            Some(mut segments) => {
                segments.sort_unstable();
                segments.dedup();
                for segment in segments {
                    by_segment
                        .entry(segment.to_owned())
                        .or_default()
                        .push(index(i));
                }
            }
            None => everywhere.push(index(i)),
        }
    }
    (by_segment, everywhere)
}

/// Merges two ascending index lists into one ascending sequence.
fn merge_ascending<'a>(mut a: &'a [u32], mut b: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    std::iter::from_fn(move || match (a.first(), b.first()) {
        (Some(&x), Some(&y)) if x <= y => {
            a = &a[1..];
            Some(x)
        }
        (_, Some(&y)) => {
            b = &b[1..];
            Some(y)
        }
        (Some(&x), None) => {
            a = &a[1..];
            Some(x)
        }
        (None, None) => None,
    })
}

fn index(i: usize) -> u32 {
    // Role counts are bounded far below u32::MAX by `compile` (ids are assigned
    // with a checked conversion), so this cannot truncate.
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// `context.time` (unix s), `context.hour_utc` (0-23), `context.weekday`
/// (`mon` … `sun`), derived from the decision time unless the
/// request supplies them.
fn derived_context(field: &str, now: i64) -> Option<Value> {
    match field {
        "time" => Some(Value::from(now)),
        "hour_utc" => Some(Value::from(now.rem_euclid(86_400) / 3600)),
        // 1970-01-01 was a Thursday.
        "weekday" => {
            let days = ["thu", "fri", "sat", "sun", "mon", "tue", "wed"];
            let day = usize::try_from(now.div_euclid(86_400).rem_euclid(7)).unwrap_or(0);
            Some(Value::from(days[day]))
        }
        _ => None,
    }
}

fn compile_policy(
    def: &PolicyDef,
    role_index: &HashMap<String, u32>,
    warnings: &mut Vec<Warning>,
) -> Result<CompiledPolicy, CompileError> {
    let ParsedDocument {
        resources,
        actions,
        role: role_name,
        condition,
    } = parse_document(&def.document).map_err(|(path, message)| CompileError::BadPolicy {
        policy: def.name.clone(),
        path,
        message,
    })?;
    let role = role_name.map_or(TargetRole::Anyone, |name| {
        let Some(&id) = role_index.get(&name) else {
            warnings.push(Warning {
                policy: def.name.clone(),
                kind: "unknown_role".to_owned(),
                message: format!(
                    "target role {name:?} does not exist, so the policy never applies"
                ),
            });
            return TargetRole::UnknownRole;
        };
        TargetRole::Holders(id)
    });
    if matches!(&condition, Condition::Any(c) if c.is_empty()) {
        warnings.push(Warning {
            policy: def.name.clone(),
            kind: "never_matches".to_owned(),
            message: "the condition is an empty \"any\", which is always false".to_owned(),
        });
    }
    Ok(CompiledPolicy {
        name: def.name.clone(),
        priority: def.priority,
        effect: def.effect,
        target: Target {
            resources,
            actions,
            role,
        },
        condition,
    })
}

/// Whether every request `inner` targets is also targeted by `outer`.
fn target_covered(inner: &Target, outer: &Target) -> bool {
    let role_covered = outer.role == TargetRole::Anyone || outer.role == inner.role;
    role_covered
        && inner
            .resources
            .iter()
            .all(|r| outer.resources.iter().any(|o| r.is_covered_by(o)))
        && inner
            .actions
            .iter()
            .all(|a| outer.actions.iter().any(|o| a.is_covered_by(o)))
}

/// Reports policies that can never decide: an earlier unconditional policy
/// whose target covers theirs always applies first (higher priority), or wins
/// inside the same priority (a deny over a permit, or an equal effect).
fn shadowing_warnings(policies: &[CompiledPolicy], warnings: &mut Vec<Warning>) {
    for (i, later) in policies.iter().enumerate() {
        let shadow = policies[..i].iter().find(|earlier| {
            earlier.condition.is_always_true() && target_covered(&later.target, &earlier.target)
        });
        if let Some(earlier) = shadow {
            let why = if earlier.priority > later.priority {
                format!(
                    "higher-priority policy {:?} has no condition and covers its whole target",
                    earlier.name
                )
            } else {
                format!(
                    "policy {:?} of the same priority has no condition, covers its whole target and wins ({})",
                    earlier.name,
                    if earlier.effect == later.effect {
                        "same effect"
                    } else {
                        "deny overrides"
                    }
                )
            };
            warnings.push(Warning {
                policy: later.name.clone(),
                kind: "shadowed".to_owned(),
                message: format!("never decides: {why}"),
            });
        }
    }
}

#[cfg(test)]
mod tests;
