//! Translates gatehouse-authz rules and requests into Cedar (`cedar-policy`),
//! so both engines can be benchmarked and cross-checked on the SAME rules.
//!
//! # Mapping
//!
//! | gatehouse | Cedar |
//! | --- | --- |
//! | role `R` (parent `P`) | entity `Role::"R"` with parent `Role::"P"` |
//! | subject `u1` with assignments | entity `User::"u1"`, parents = its *unexpired* `Role`s; attributes = subject attributes (+ `id`, + `roles` when a policy reads it) |
//! | request resource `sales:orders:7` + attributes | entity `Resource::"<i>"` (one per request `i`), attributes = resource attributes, the name under [`NAME_ATTR`] (+ `id`) |
//! | action `read` | `Action::"read"` |
//! | request context (+ derived `time`, `hour_utc`, `weekday`) | `context` record |
//! | grant `R: action on pattern` | `permit (principal in Role::"R", action == Action::"a", resource) when { resource["gatehouse:name"] like "pattern*" };` |
//! | ABAC permit | `permit (target scope) when { resources && condition };` |
//! | ABAC deny at priority `p` | `forbid (target scope) when { resources && condition } unless { some permit policy of priority > p applies };` |
//!
//! # Combining rules: where the engines differ, and why the translation agrees
//!
//! Gatehouse groups ABAC policies by priority; the highest group with an
//! applicable policy decides (deny overrides permit inside the group), and
//! only when no ABAC policy applies do role grants (RBAC) decide. Cedar has
//! no priorities and no "ABAC before RBAC" tier: any satisfied `forbid`
//! wins, otherwise any satisfied `permit` allows, otherwise deny.
//!
//! The translation makes these coincide. The gatehouse decision is "deny"
//! exactly when the winning priority group holds an applicable deny, so a
//! deny at priority `p` becomes a `forbid` that is switched off (`unless`)
//! when a permit policy of strictly higher priority applies: then a higher
//! group containing a permit exists, and if that group also holds a deny,
//! that deny's own `forbid` fires. Conversely if the winning group is all
//! permits, every applicable deny is below one of them and is switched off.
//! With no forbid firing, the request is allowed iff an ABAC permit applies
//! (it must then be in the winning group) or, when no policy applies, a
//! grant matches: exactly the `permit`s emitted. In the reference tenant
//! every deny outranks the only permit policy, so no `unless` is emitted and
//! the policies read as plain Cedar.
//!
//! # Conditions
//!
//! A gatehouse comparison on a missing attribute is false; in Cedar reading
//! a missing attribute is an *error*, and a policy whose condition errors is
//! skipped (for a `forbid` that means "does not deny", which flips the
//! meaning under `not`). Every comparison is therefore guarded with `has`
//! (`context has hour_utc && …`), which makes missing attributes agree.
//!
//! Known differences that the translation cannot remove (none occurs in the
//! reference tenant or its request streams; the agreement test checks that
//! Cedar reports no evaluation errors):
//! - **Type mismatches.** `lt`/`le`/`gt`/`ge`/`between`/`before`/`after` on
//!   a non-number, `prefix` on a non-string, `contains` on a non-list and
//!   `cidr` on a string that is not an IP address are *false* in gatehouse
//!   but an evaluation *error* in Cedar (the policy is skipped). Positively
//!   used they agree; under `not` a gatehouse deny can become a Cedar allow.
//! - **Numbers.** Cedar has 64-bit integers only. Attribute values that are
//!   fractional numbers (or `null`) are refused by [`Translation::world`];
//!   fractional bounds in policies are rounded to the equivalent integer bound
//!   (`lt 2.5` becomes `< 3`), which is exact for integer attributes.
//! - **`cidr` on a CIDR string.** Cedar's `ip("10.0.0.0/8")` accepts a range
//!   as a value, gatehouse only an address; a context `ip` holding a range
//!   would match in Cedar and not in gatehouse.
//! - **Times as RFC 3339 strings** (`before`/`after` with a string operand)
//!   are refused ([`TranslateError::Unsupported`]); unix seconds translate.
//! - **Role expiry** is resolved when the entity store is built (Cedar has
//!   no clock): [`Translation::world`] builds it for the earliest request
//!   time and refuses a request stream in which an assignment expires
//!   between requests.
//!
//! Both sides parse the IP address string per evaluation (gatehouse in its
//! `cidr` operator, Cedar in `ip(context.ip)`), so neither gets a pre-parsed
//! address.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Display, Write as _};
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet as CedarPolicySet, Request as CedarRequest, RestrictedExpression,
};
use gatehouse_authz::reference::User;
use gatehouse_authz::{Effect, Pattern, PolicySet, Request, TenantRules};
use serde_json::{Map, Value};

/// The resource attribute holding the resource's name (gatehouse's
/// `Request::resource`). It contains a `:`, which gatehouse attribute fields
/// cannot, so no translated condition can read it by accident.
pub const NAME_ATTR: &str = "gatehouse:name";
/// The context attribute holding the action name, added only when a policy
/// needs it as a string (an action prefix pattern or an `action` condition).
pub const ACTION_ATTR: &str = "gatehouse:action";

/// How role grants become Cedar policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantLayout {
    /// One `permit` per grant (500 for the reference tenant): the literal
    /// translation.
    PerGrant,
    /// One `permit` per role whose `when` is the disjunction of the role's
    /// grants (50 for the reference tenant): what a Cedar user might write
    /// to keep the policy count down.
    PerRole,
}

/// Why rules or requests could not be translated faithfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// Gatehouse itself refuses the rules (the translation accepts exactly
    /// what `PolicySet::compile` accepts, minus [`Self::Unsupported`]).
    Gatehouse(String),
    /// A rule construct this translation cannot express faithfully.
    Unsupported {
        /// The policy (or grant) concerned.
        policy: String,
        /// What cannot be translated.
        what: String,
    },
    /// Request or user data Cedar cannot carry (fractional numbers, `null`,
    /// a reserved attribute name).
    Data(String),
    /// A request's subject is not among the users, or its assignments or
    /// attributes differ from the user's.
    Subject(String),
    /// An assignment of the subject expires between the snapshot time and
    /// the request's time, so one entity store cannot serve both.
    StaleRoles {
        /// The subject.
        subject: String,
    },
    /// Cedar refused something the translation built (a bug here).
    Cedar(String),
}

impl Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gatehouse(e) => write!(f, "gatehouse refuses the rules: {e}"),
            Self::Unsupported { policy, what } => {
                write!(f, "{policy}: cannot translate {what} faithfully")
            }
            Self::Data(e) => write!(f, "data Cedar cannot carry: {e}"),
            Self::Subject(e) => write!(f, "subject mismatch: {e}"),
            Self::StaleRoles { subject } => write!(
                f,
                "an assignment of {subject} expires inside the request stream's time span"
            ),
            Self::Cedar(e) => write!(f, "cedar: {e}"),
        }
    }
}

impl std::error::Error for TranslateError {}

fn cedar_err<E: Display>(what: &'static str) -> impl Fn(E) -> TranslateError {
    move |e| TranslateError::Cedar(format!("{what}: {e}"))
}

/// A tenant's rules as a Cedar policy set, plus what is needed to build
/// matching entities and requests.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The Cedar policies.
    pub policies: CedarPolicySet,
    /// Number of Cedar policies emitted.
    pub policy_count: usize,
    /// Role name to parent, for the `Role` entities.
    roles: BTreeMap<String, Option<String>>,
    /// Derived context fields (`time`, `hour_utc`, `weekday`) some condition reads.
    derived_context: BTreeSet<String>,
    /// Whether some policy reads the action as a string ([`ACTION_ATTR`]).
    needs_action_name: bool,
    /// Whether some policy reads `subject.roles`.
    needs_role_list: bool,
}

/// Entities and requests for a request stream, built once, outside any timing.
#[derive(Debug, Clone)]
pub struct World {
    /// Roles, users (parents = unexpired roles) and one resource per request.
    pub entities: Entities,
    /// The requests, in the order given (request `i` uses `Resource::"i"`).
    pub requests: Vec<CedarRequest>,
}

/// Cedar source for a string literal (Rust's debug escapes are a subset of
/// Cedar's: `\"`, `\\`, `\n`, `\t`, `\r`, `\0`, `\u{…}`).
fn lit(s: &str) -> String {
    format!("\"{}\"", s.escape_debug())
}

/// Cedar source for a `like` pattern matching names starting with `prefix`.
fn like_prefix(prefix: &str) -> String {
    let escaped = prefix.escape_debug().to_string().replace('*', "\\*");
    format!("\"{escaped}*\"")
}

fn entity_literal(kind: &str, id: &str) -> String {
    format!("{kind}::{}", lit(id))
}

/// `container.key` / `container has key`, or the bracket forms for keys that
/// are not Cedar identifiers.
struct Access {
    get: String,
    has: String,
}

fn access(container: &str, key: &str) -> Access {
    let ident = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            key,
            "true"
                | "false"
                | "if"
                | "then"
                | "else"
                | "in"
                | "is"
                | "like"
                | "has"
                | "permit"
                | "forbid"
                | "when"
                | "unless"
                | "principal"
                | "action"
                | "resource"
                | "context"
        );
    if ident {
        Access {
            get: format!("{container}.{key}"),
            has: format!("{container} has {key}"),
        }
    } else {
        Access {
            get: format!("{container}[{}]", lit(key)),
            has: format!("{container} has {}", lit(key)),
        }
    }
}

/// A scalar operand as a Cedar literal; `None` for a number no Cedar value
/// can equal (fractional or outside i64).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(lit(s)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(_) => integral(value).map(|n| n.to_string()),
        _ => None,
    }
}

/// A JSON number that is an integer (including `3.0`) as i64.
fn integral(value: &Value) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        reason = "checked: integral and within i64's range"
    )]
    let n = (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64);
    n
}

/// Which integer bound makes an integer comparison against `bound` exact.
#[derive(Clone, Copy)]
enum Round {
    Up,
    Down,
}

fn integer_bound(value: &Value, round: Round) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    let r = match round {
        Round::Up => f.ceil(),
        Round::Down => f.floor(),
    };
    integral(&Value::from(r))
}

/// A policy's target and condition in Cedar terms.
struct Translated {
    name: String,
    priority: i32,
    effect: Effect,
    /// `principal in Role::"R"`, when the target names a role.
    role: Option<String>,
    /// Scope-level action constraint (`action in [...]`), when expressible.
    action_scope: Option<String>,
    /// Action constraint that needs the action name (prefix patterns).
    action_when: Option<String>,
    /// The resource patterns, as a disjunction (`None` = any resource).
    resources: Option<String>,
    /// The condition.
    condition: String,
}

impl Translated {
    /// The parts of the `when` clause.
    fn when_parts(&self) -> Vec<&str> {
        [&self.action_when, &self.resources]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain((self.condition != "true").then_some(self.condition.as_str()))
            .collect()
    }

    /// One boolean expression: "this policy applies".
    fn applies(&self) -> String {
        let parts: Vec<&str> = [&self.role, &self.action_scope]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(self.when_parts())
            .collect();
        if parts.is_empty() {
            "true".to_owned()
        } else {
            parts
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" && ")
        }
    }

    /// The Cedar policy text; `overridden_by` are the `applies` expressions
    /// of higher-priority permits (used for forbids only).
    fn source(&self, overridden_by: &[String]) -> String {
        let effect = match self.effect {
            Effect::Permit => "permit",
            Effect::Deny => "forbid",
        };
        let principal = self.role.as_deref().unwrap_or("principal");
        let action = self.action_scope.as_deref().unwrap_or("action");
        let mut text = format!(
            "@gatehouse_priority(\"{}\")\n{effect} (\n  {principal},\n  {action},\n  resource\n)",
            self.priority
        );
        let when = self.when_parts();
        if !when.is_empty() {
            let body: Vec<String> = when.iter().map(|p| format!("({p})")).collect();
            // Writing to a String cannot fail.
            let _ = write!(text, "\nwhen {{ {} }}", body.join(" && "));
        }
        if !overridden_by.is_empty() {
            let body: Vec<String> = overridden_by.iter().map(|p| format!("({p})")).collect();
            let _ = write!(text, "\nunless {{ {} }}", body.join(" || "));
        }
        text.push(';');
        text
    }
}

/// Accumulates what the translated conditions need from the request side.
#[derive(Default)]
struct Needs {
    derived_context: BTreeSet<String>,
    action_name: bool,
    role_list: bool,
}

impl Needs {
    /// The Cedar access for a gatehouse attribute path.
    fn attribute(&mut self, raw: &str, policy: &str) -> Result<Access, TranslateError> {
        if raw == "action" {
            self.action_name = true;
            return Ok(access("context", ACTION_ATTR));
        }
        let unsupported = || TranslateError::Unsupported {
            policy: policy.to_owned(),
            what: format!("attribute {raw:?}"),
        };
        let (root, field) = raw.split_once('.').ok_or_else(unsupported)?;
        match root {
            "subject" => {
                if field == "roles" {
                    self.role_list = true;
                }
                Ok(access("principal", field))
            }
            "resource" => Ok(access("resource", field)),
            "context" => {
                if matches!(field, "time" | "hour_utc" | "weekday") {
                    self.derived_context.insert(field.to_owned());
                }
                Ok(access("context", field))
            }
            _ => Err(unsupported()),
        }
    }

    /// An action pattern as a Cedar expression (`None` = any action).
    fn action_expr(&mut self, pattern: &Pattern) -> Option<String> {
        match pattern {
            Pattern::Any => None,
            Pattern::Exact(a) => Some(format!("action == {}", entity_literal("Action", a))),
            Pattern::Prefix(p) => {
                self.action_name = true;
                Some(format!(
                    "{} like {}",
                    access("context", ACTION_ATTR).get,
                    like_prefix(p)
                ))
            }
        }
    }

    /// A condition document as a Cedar expression.
    fn condition(&mut self, value: &Value, policy: &str) -> Result<String, TranslateError> {
        let bad = |what: &str| TranslateError::Unsupported {
            policy: policy.to_owned(),
            what: what.to_owned(),
        };
        let object = value
            .as_object()
            .ok_or_else(|| bad("a non-object condition"))?;
        if let Some(children) = object.get("all").or_else(|| object.get("any")) {
            let all = object.contains_key("all");
            let list = children
                .as_array()
                .ok_or_else(|| bad("a non-array all/any"))?;
            let parts = list
                .iter()
                .map(|c| self.condition(c, policy).map(|s| format!("({s})")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(match (parts.is_empty(), all) {
                (true, true) => "true".to_owned(),
                (true, false) => "false".to_owned(),
                (false, true) => parts.join(" && "),
                (false, false) => parts.join(" || "),
            });
        }
        if let Some(child) = object.get("not") {
            return Ok(format!("!({})", self.condition(child, policy)?));
        }
        let op = object.get("op").and_then(Value::as_str).unwrap_or_default();
        let raw_attr = object
            .get("attr")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let operand = object.get("value").unwrap_or(&Value::Null);
        let Access { get, has } = self.attribute(raw_attr, policy)?;
        let guarded = |expr: String| format!("{has} && {expr}");
        let bound = |round: Round| {
            integer_bound(operand, round).ok_or_else(|| bad(&format!("{op} bound {operand}")))
        };
        Ok(match op {
            "eq" => scalar(operand)
                .map_or_else(|| "false".to_owned(), |v| guarded(format!("{get} == {v}"))),
            "ne" => {
                scalar(operand).map_or_else(|| has.clone(), |v| guarded(format!("{get} != {v}")))
            }
            "in" => {
                let items: Vec<String> = operand
                    .as_array()
                    .ok_or_else(|| bad("in without a list"))?
                    .iter()
                    .filter_map(scalar)
                    .collect();
                if items.is_empty() {
                    "false".to_owned()
                } else {
                    guarded(format!("[{}].contains({get})", items.join(", ")))
                }
            }
            "contains" => scalar(operand).map_or_else(
                || "false".to_owned(),
                |v| guarded(format!("{get}.contains({v})")),
            ),
            "lt" => guarded(format!("{get} < {}", bound(Round::Up)?)),
            "le" => guarded(format!("{get} <= {}", bound(Round::Down)?)),
            "gt" => guarded(format!("{get} > {}", bound(Round::Down)?)),
            "ge" => guarded(format!("{get} >= {}", bound(Round::Up)?)),
            "between" => {
                let pair = operand
                    .as_array()
                    .filter(|p| p.len() == 2)
                    .ok_or_else(|| bad("between"))?;
                let lo = integer_bound(&pair[0], Round::Up).ok_or_else(|| bad("between low"))?;
                let hi = integer_bound(&pair[1], Round::Down).ok_or_else(|| bad("between high"))?;
                guarded(format!("{get} >= {lo} && {get} <= {hi}"))
            }
            "prefix" => {
                let p = operand.as_str().ok_or_else(|| bad("prefix"))?;
                guarded(format!("{get} like {}", like_prefix(p)))
            }
            "cidr" => {
                let nets: Vec<&str> = match operand {
                    Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                    single => single.as_str().into_iter().collect(),
                };
                let tests: Vec<String> = nets
                    .iter()
                    .map(|n| format!("ip({get}).isInRange(ip({}))", lit(n)))
                    .collect();
                guarded(format!("({})", tests.join(" || ")))
            }
            "before" | "after" => {
                let t = operand
                    .as_i64()
                    .ok_or_else(|| bad(&format!("{op} with a non-integer time {operand}")))?;
                let cmp = if op == "before" { "<" } else { ">" };
                guarded(format!("{get} {cmp} {t}"))
            }
            other => return Err(bad(&format!("operator {other:?}"))),
        })
    }

    /// A policy (already validated by gatehouse) in Cedar terms; `None` when
    /// its target role does not exist (gatehouse: it never applies).
    fn policy(
        &mut self,
        def: &gatehouse_authz::PolicyDef,
        roles: &BTreeMap<String, Option<String>>,
    ) -> Result<Option<Translated>, TranslateError> {
        let bad = |what: &str| TranslateError::Unsupported {
            policy: def.name.clone(),
            what: what.to_owned(),
        };
        let empty = Map::new();
        let target = def
            .document
            .get("target")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let patterns = |key: &str| -> Result<Vec<Pattern>, TranslateError> {
            let raw: Vec<&str> = match target.get(key) {
                None => return Ok(vec![Pattern::Any]),
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
                Some(_) => return Err(bad(key)),
            };
            raw.into_iter()
                .map(|p| Pattern::parse(p).map_err(|e| bad(&e.to_string())))
                .collect()
        };
        let resources = patterns("resources")?;
        let actions = patterns("actions")?;
        let role = match target.get("role").and_then(Value::as_str) {
            Some(r) if !roles.contains_key(r) => return Ok(None),
            Some(r) => Some(format!("principal in {}", entity_literal("Role", r))),
            None => None,
        };
        let (action_scope, action_when) = if actions.contains(&Pattern::Any) {
            (None, None)
        } else if let Some(exact) = actions
            .iter()
            .map(|a| match a {
                Pattern::Exact(e) => Some(entity_literal("Action", e)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            let scope = if let [one] = exact.as_slice() {
                format!("action == {one}")
            } else {
                format!("action in [{}]", exact.join(", "))
            };
            (Some(scope), None)
        } else {
            let parts: Vec<String> = actions.iter().filter_map(|a| self.action_expr(a)).collect();
            (None, Some(parts.join(" || ")))
        };
        let resources = if resources.contains(&Pattern::Any) {
            None
        } else {
            let parts: Vec<String> = resources.iter().filter_map(resource_expr).collect();
            Some(parts.join(" || "))
        };
        let condition = match def.document.get("condition") {
            None => "true".to_owned(),
            Some(c) => self.condition(c, &def.name)?,
        };
        Ok(Some(Translated {
            name: def.name.clone(),
            priority: def.priority,
            effect: def.effect,
            role,
            action_scope,
            action_when,
            resources,
            condition,
        }))
    }

    /// One grant as a Cedar expression over action and resource.
    fn grant(&mut self, action: &Pattern, resource: &Pattern) -> String {
        let parts: Vec<String> = self
            .action_expr(action)
            .into_iter()
            .chain(resource_expr(resource))
            .collect();
        if parts.is_empty() {
            "true".to_owned()
        } else {
            parts.join(" && ")
        }
    }
}

/// A resource pattern as a Cedar expression on the resource's name (`None`
/// = any resource): `like "prefix*"` or `==`.
fn resource_expr(pattern: &Pattern) -> Option<String> {
    let name = access("resource", NAME_ATTR).get;
    match pattern {
        Pattern::Any => None,
        Pattern::Prefix(p) => Some(format!("{name} like {}", like_prefix(p))),
        Pattern::Exact(e) => Some(format!("{name} == {}", lit(e))),
    }
}

impl Translation {
    /// Translates a tenant's rules. The rules are first compiled by gatehouse,
    /// so exactly the rule sets gatehouse accepts are translated (or refused
    /// with [`TranslateError::Unsupported`]).
    pub fn new(rules: &TenantRules, layout: GrantLayout) -> Result<Self, TranslateError> {
        PolicySet::compile(rules).map_err(|e| TranslateError::Gatehouse(e.to_string()))?;
        let hierarchy: BTreeMap<String, Option<String>> = rules
            .roles
            .iter()
            .map(|r| (r.name.clone(), r.parent.clone()))
            .collect();
        let mut needs = Needs::default();
        let mut sources: Vec<(String, String)> = Vec::new();

        // Role grants: permits, scoped to holders of the role (descendant
        // roles inherit through the entity hierarchy, as in gatehouse).
        let mut by_role: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (i, grant) in rules.grants.iter().enumerate() {
            let parse =
                |p: &str| Pattern::parse(p).map_err(|e| TranslateError::Gatehouse(e.to_string()));
            let (resource, action) = (parse(&grant.resource)?, parse(&grant.action)?);
            let principal = format!("principal in {}", entity_literal("Role", &grant.role));
            match layout {
                GrantLayout::PerGrant => {
                    // Exact actions go in the scope, as a Cedar author would write them.
                    let (action_scope, action_when) = match &action {
                        Pattern::Exact(a) => {
                            (format!("action == {}", entity_literal("Action", a)), None)
                        }
                        other => ("action".to_owned(), needs.action_expr(other)),
                    };
                    let when: Vec<String> = action_when
                        .into_iter()
                        .chain(resource_expr(&resource))
                        .collect();
                    let when = if when.is_empty() {
                        String::new()
                    } else {
                        format!("\nwhen {{ {} }}", when.join(" && "))
                    };
                    sources.push((
                        format!("grant/{i}"),
                        format!(
                            "permit (\n  {principal},\n  {action_scope},\n  resource\n){when};"
                        ),
                    ));
                }
                GrantLayout::PerRole => by_role
                    .entry(grant.role.as_str())
                    .or_default()
                    .push(needs.grant(&action, &resource)),
            }
        }
        for (role, grants) in by_role {
            let body: Vec<String> = grants.iter().map(|g| format!("({g})")).collect();
            sources.push((
                format!("grants/{role}"),
                format!(
                    "permit (\n  principal in {},\n  action,\n  resource\n)\nwhen {{ {} }};",
                    entity_literal("Role", role),
                    body.join(" || ")
                ),
            ));
        }

        // ABAC policies: permits as they are, denies switched off by any
        // applicable permit of higher priority (see the module docs).
        let mut translated = Vec::new();
        for def in rules.policies.iter().filter(|p| p.active) {
            if let Some(t) = needs.policy(def, &hierarchy)? {
                translated.push(t);
            }
        }
        for policy in &translated {
            let overridden_by: Vec<String> = match policy.effect {
                Effect::Permit => Vec::new(),
                Effect::Deny => translated
                    .iter()
                    .filter(|p| p.effect == Effect::Permit && p.priority > policy.priority)
                    .map(Translated::applies)
                    .collect(),
            };
            sources.push((
                format!("policy/{}", policy.name),
                policy.source(&overridden_by),
            ));
        }

        let mut policies = CedarPolicySet::new();
        let policy_count = sources.len();
        for (id, text) in sources {
            let policy = Policy::parse(Some(PolicyId::new(&id)), &text)
                .map_err(|e| TranslateError::Cedar(format!("{id}: {e}\n{text}")))?;
            policies.add(policy).map_err(cedar_err("adding a policy"))?;
        }
        Ok(Self {
            policies,
            policy_count,
            roles: hierarchy,
            derived_context: needs.derived_context,
            needs_action_name: needs.action_name,
            needs_role_list: needs.role_list,
        })
    }

    /// The Cedar text of every policy (for reading and debugging).
    #[must_use]
    pub fn policy_text(&self) -> String {
        let mut text = String::new();
        for p in self.policies.policies() {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "// {}\n{p}", p.id());
        }
        text
    }

    /// The roles in force for `assignments` at `now`: unexpired assignments of
    /// known roles (gatehouse ignores unknown ones).
    fn live_roles<'a>(
        &self,
        assignments: &'a [gatehouse_authz::Assignment],
        now: i64,
    ) -> BTreeSet<&'a str> {
        assignments
            .iter()
            .filter(|a| a.expires_at.is_none_or(|t| t > now) && self.roles.contains_key(&a.role))
            .map(|a| a.role.as_str())
            .collect()
    }

    /// The live roles and all their ancestors (`subject.roles`).
    fn effective_roles(&self, live: &BTreeSet<&str>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for role in live {
            let mut cursor = Some((*role).to_owned());
            while let Some(r) = cursor {
                cursor = self.roles.get(&r).cloned().flatten();
                if !out.insert(r) {
                    break;
                }
            }
        }
        out
    }

    /// Builds the entity store and the Cedar requests for a request stream.
    ///
    /// User entities are built for every user at the earliest request time;
    /// each request must carry exactly its user's assignments and attributes,
    /// and no assignment may expire between that time and the request's
    /// (checked: [`TranslateError::Subject`], [`TranslateError::StaleRoles`]).
    pub fn world(&self, users: &[User], requests: &[Request]) -> Result<World, TranslateError> {
        let as_of = requests.iter().map(|r| r.now).min().unwrap_or(0);
        let by_id: HashMap<&str, &User> = users.iter().map(|u| (u.id.as_str(), u)).collect();
        for request in requests {
            let user = by_id
                .get(request.subject.as_str())
                .ok_or_else(|| TranslateError::Subject(format!("unknown {}", request.subject)))?;
            if user.assignments != request.assignments
                || user.attributes != request.subject_attributes
            {
                return Err(TranslateError::Subject(format!(
                    "request for {} carries other assignments or attributes",
                    request.subject
                )));
            }
            if self.live_roles(&user.assignments, as_of)
                != self.live_roles(&request.assignments, request.now)
            {
                return Err(TranslateError::StaleRoles {
                    subject: request.subject.clone(),
                });
            }
        }

        let mut entities = Vec::with_capacity(self.roles.len() + users.len() + requests.len());
        for (name, parent) in &self.roles {
            let parents = parent
                .iter()
                .map(|p| uid("Role", p))
                .collect::<Result<_, _>>()?;
            entities.push(Entity::new_no_attrs(uid("Role", name)?, parents));
        }
        for user in users {
            let live = self.live_roles(&user.assignments, as_of);
            let parents = live
                .iter()
                .map(|r| uid("Role", r))
                .collect::<Result<_, _>>()?;
            let mut attrs = record(&user.attributes)?;
            attrs
                .entry("id".to_owned())
                .or_insert_with(|| RestrictedExpression::new_string(user.id.clone()));
            if self.needs_role_list && !attrs.contains_key("roles") {
                let roles = self.effective_roles(&live);
                attrs.insert(
                    "roles".to_owned(),
                    RestrictedExpression::new_set(
                        roles.into_iter().map(RestrictedExpression::new_string),
                    ),
                );
            }
            entities.push(
                Entity::new(uid("User", &user.id)?, attrs, parents)
                    .map_err(cedar_err("user entity"))?,
            );
        }
        for (i, request) in requests.iter().enumerate() {
            let mut attrs = record(&request.resource_attributes)?;
            if attrs.contains_key(NAME_ATTR) {
                return Err(TranslateError::Data(format!(
                    "resource attribute {NAME_ATTR:?} is reserved"
                )));
            }
            attrs.insert(
                NAME_ATTR.to_owned(),
                RestrictedExpression::new_string(request.resource.clone()),
            );
            attrs
                .entry("id".to_owned())
                .or_insert_with(|| RestrictedExpression::new_string(request.resource.clone()));
            entities.push(
                Entity::new(uid("Resource", &i.to_string())?, attrs, HashSet::new())
                    .map_err(cedar_err("resource entity"))?,
            );
        }
        let entities = Entities::from_entities(entities, None).map_err(cedar_err("entities"))?;
        let requests = requests
            .iter()
            .enumerate()
            .map(|(i, r)| self.request(i, r))
            .collect::<Result<_, _>>()?;
        Ok(World { entities, requests })
    }

    /// The Cedar request for gatehouse request number `index` of the stream
    /// given to [`Self::world`]: principal, action, `Resource::"index"` and
    /// the context (request context plus the derived fields policies read).
    pub fn request(&self, index: usize, request: &Request) -> Result<CedarRequest, TranslateError> {
        let mut context = record(&request.context)?;
        for field in &self.derived_context {
            if !context.contains_key(field) {
                context.insert(field.clone(), derived_context(field, request.now));
            }
        }
        if self.needs_action_name
            && context
                .insert(
                    ACTION_ATTR.to_owned(),
                    RestrictedExpression::new_string(request.action.clone()),
                )
                .is_some()
        {
            return Err(TranslateError::Data(format!(
                "context attribute {ACTION_ATTR:?} is reserved"
            )));
        }
        let context = Context::from_pairs(context).map_err(cedar_err("context"))?;
        CedarRequest::new(
            uid("User", &request.subject)?,
            uid("Action", &request.action)?,
            uid("Resource", &index.to_string())?,
            context,
            None,
        )
        .map_err(cedar_err("request"))
    }
}

/// `Kind::"id"`.
fn uid(kind: &str, id: &str) -> Result<EntityUid, TranslateError> {
    let kind = EntityTypeName::from_str(kind).map_err(cedar_err("entity type"))?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

/// A JSON object as Cedar attributes.
fn record(
    map: &Map<String, Value>,
) -> Result<HashMap<String, RestrictedExpression>, TranslateError> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), value(v)?)))
        .collect()
}

/// A JSON value as a Cedar value: strings, booleans, integers, sets, records.
fn value(v: &Value) -> Result<RestrictedExpression, TranslateError> {
    Ok(match v {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(_) => RestrictedExpression::new_long(
            integral(v).ok_or_else(|| TranslateError::Data(format!("non-integer number {v}")))?,
        ),
        Value::Array(items) => {
            RestrictedExpression::new_set(items.iter().map(value).collect::<Result<Vec<_>, _>>()?)
        }
        Value::Object(fields) => {
            RestrictedExpression::new_record(record(fields)?).map_err(cedar_err("record"))?
        }
        Value::Null => return Err(TranslateError::Data("null attribute".to_owned())),
    })
}

/// gatehouse's derived context fields, computed from the decision time
/// exactly as `libs/authz` does.
fn derived_context(field: &str, now: i64) -> RestrictedExpression {
    match field {
        "hour_utc" => RestrictedExpression::new_long(now.rem_euclid(86_400) / 3600),
        "weekday" => {
            // 1970-01-01 was a Thursday.
            let days = ["thu", "fri", "sat", "sun", "mon", "tue", "wed"];
            let day = usize::try_from(now.div_euclid(86_400).rem_euclid(7)).unwrap_or(0);
            RestrictedExpression::new_string(days[day].to_owned())
        }
        _ => RestrictedExpression::new_long(now),
    }
}
