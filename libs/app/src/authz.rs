//! Deciding requests: a tenant's compiled rules plus a subject, read through
//! the store.
//!
//! Every read goes through the [`Directory`]'s tiered cache: the tenant's
//! data version (raised by invalidation events), the subject at that
//! version, and the rules at that version, which are compiled once per
//! version and kept here. A warm decision touches neither Redis nor
//! Postgres; an answer's `tier` names the slowest tier any of its data came
//! from.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use gatehouse_authz::{Decision, PolicySet, Reason, Request, Trace};
use gatehouse_cache::Tier;
use gatehouse_store::access::Subject;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::directory::Directory;

/// Why a decision could not be made. The gateway maps these to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] gatehouse_store::StoreError),
    /// The tenant's stored rules do not compile (edited by hand): every
    /// decision is refused until fixed.
    #[error("the tenant's rules do not compile: {0}")]
    Uncompilable(String),
    /// The compile task failed (a bug).
    #[error("compile task failed: {0}")]
    Task(String),
    /// The signed-in caller's user no longer exists.
    #[error("the signed-in user no longer exists")]
    CallerGone,
    /// A request named a user the tenant does not have.
    #[error("no user {0:?} in this tenant")]
    NoSuchUser(String),
}

/// A tenant's compiled rules at one data version.
#[derive(Debug)]
pub struct CompiledTenant {
    /// The data version it was compiled from.
    pub version: i64,
    /// The compiled rules.
    pub set: PolicySet,
}

/// Compiles and keeps tenants' rule sets; decides requests.
pub struct AuthzService {
    directory: Arc<Directory>,
    compiled: RwLock<HashMap<Uuid, Arc<CompiledTenant>>>,
    /// One compilation at a time per tenant: concurrent requests that find
    /// the rules stale wait for the one compile instead of each doing it.
    compiling: std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

/// One decision and what it was made from.
#[derive(Debug)]
pub struct Answer {
    /// The subject as loaded (shared with the cache).
    pub subject: Arc<Subject>,
    /// The compiled rules used.
    pub rules: Arc<CompiledTenant>,
    /// The engine request.
    pub request: Request,
    /// The decision.
    pub decision: Decision,
    /// The slowest tier the data came from.
    pub tier: Tier,
}

/// A request context holding only the client address (`context.ip`).
#[must_use]
pub fn client_context(ip: &str) -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("ip".into(), Value::String(ip.to_owned()));
    context
}

/// What a caller asks about one subject.
#[derive(Debug, Clone)]
pub struct Question {
    /// Resource name.
    pub resource: String,
    /// Resource attributes.
    pub resource_attributes: Map<String, Value>,
    /// Action.
    pub action: String,
    /// Context attributes.
    pub context: Map<String, Value>,
    /// Decision time, unix seconds.
    pub now: i64,
}

impl AuthzService {
    /// A service reading through `directory`.
    #[must_use]
    pub fn new(directory: Arc<Directory>) -> Self {
        Self {
            directory,
            compiled: RwLock::new(HashMap::new()),
            compiling: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's compiled rules at its current data version, and the
    /// slowest tier consulted. A stale or missing set is compiled once
    /// (single flight per tenant), on a blocking thread, never on the async
    /// workers.
    pub async fn rules(&self, tenant_id: Uuid) -> Result<(Arc<CompiledTenant>, Tier), AuthzError> {
        let (current, version_tier) = self.directory.version(tenant_id).await?;
        self.rules_at(tenant_id, current.max(1), version_tier).await
    }

    /// [`AuthzService::rules`] once the current version is known.
    async fn rules_at(
        &self,
        tenant_id: Uuid,
        current: i64,
        version_tier: Tier,
    ) -> Result<(Arc<CompiledTenant>, Tier), AuthzError> {
        if let Some(hit) = self.cached(tenant_id).filter(|c| c.version >= current) {
            return Ok((hit, version_tier));
        }
        let flight = {
            let mut map = self
                .compiling
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry(tenant_id).or_default())
        };
        let _turn = flight.lock().await;
        // Whoever held the turn before us may have compiled what we need.
        if let Some(hit) = self.cached(tenant_id).filter(|c| c.version >= current) {
            return Ok((hit, version_tier));
        }
        let (snapshot, rules_tier) = self.directory.rules(tenant_id, current).await?;
        let version = snapshot.version;
        let rules = snapshot.rules;
        let set = tokio::task::spawn_blocking(move || PolicySet::compile(&rules))
            .await
            .map_err(|e| AuthzError::Task(e.to_string()))?
            .map_err(|e| {
                // Writes are compile-checked, so this means someone edited the
                // tables by hand. Fail closed and say why in the log.
                tracing::error!(%tenant_id, error = %e, "tenant rules do not compile; denying");
                AuthzError::Uncompilable(e.to_string())
            })?;
        let compiled = Arc::new(CompiledTenant { version, set });
        if let Ok(mut map) = self.compiled.write() {
            map.insert(tenant_id, Arc::clone(&compiled));
        }
        metrics::counter!("gatehouse_authz_compilations_total").increment(1);
        Ok((compiled, rules_tier.max(version_tier)))
    }

    fn cached(&self, tenant_id: Uuid) -> Option<Arc<CompiledTenant>> {
        self.compiled.read().ok()?.get(&tenant_id).cloned()
    }

    /// Decides `question` for user `user_id` of the tenant, reading the user
    /// and the compiled rules; `Ok(None)` when the user no longer exists.
    pub async fn ask(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        question: Question,
        explain: bool,
    ) -> Result<Option<Answer>, AuthzError> {
        let (current, version_tier) = self.directory.version(tenant_id).await?;
        let current = current.max(1);
        // The rules and the subject at the same version, read side by side:
        // after an invalidation both miss, and neither waits for the other.
        let (rules, subject) = tokio::join!(
            Box::pin(self.rules_at(tenant_id, current, version_tier)),
            self.directory.subject(tenant_id, current, user_id)
        );
        let (rules, rules_tier) = rules?;
        let (subject, subject_tier) = if rules.version == current {
            subject?
        } else {
            // The rules are newer than the version we read: so must the subject be.
            self.directory
                .subject(tenant_id, rules.version, user_id)
                .await?
        };
        let Some(subject) = subject else {
            return Ok(None);
        };
        let request = request_for(&subject, question);
        let decision = decide(&subject, &rules.set, &request, explain);
        Ok(Some(Answer {
            subject,
            rules,
            request,
            decision,
            tier: rules_tier.max(subject_tier),
        }))
    }

    /// [`AuthzService::ask`] about the signed-in caller (no explanation): a
    /// user deleted since signing in is [`AuthzError::CallerGone`] (401, like
    /// any invalid session).
    pub async fn ask_as_caller(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        question: Question,
    ) -> Result<Answer, AuthzError> {
        self.ask(tenant_id, user_id, question, false)
            .await?
            .ok_or(AuthzError::CallerGone)
    }

    /// The user's effective roles at `now` (unexpired assignments and their
    /// ancestors); empty for an unknown or disabled user.
    pub async fn effective_roles(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        now: i64,
    ) -> Result<Vec<String>, AuthzError> {
        Ok(match self.rules_and_subject(tenant_id, user_id).await? {
            Some((rules, subject)) => effective_of(&rules, &subject, now),
            None => Vec::new(),
        })
    }

    /// The user's roles at `now`, both ways, from the cache: `effective`
    /// (what tokens, `X-Gatehouse-Roles` and decisions use: unexpired
    /// assignments and every role they inherit) and `direct` (the unexpired
    /// assignments themselves). Empty for an unknown or disabled user.
    pub async fn role_names(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        now: i64,
    ) -> Result<RoleNames, AuthzError> {
        let Some((rules, subject)) = self.rules_and_subject(tenant_id, user_id).await? else {
            return Ok(RoleNames::default());
        };
        if subject.status != "active" {
            return Ok(RoleNames::default());
        }
        let mut direct: Vec<String> = subject
            .assignments
            .iter()
            .filter(|a| a.expires_at.is_none_or(|at| at > now))
            .map(|a| a.role.clone())
            .collect();
        direct.sort();
        direct.dedup();
        let mut effective = effective_of(&rules, &subject, now);
        effective.sort();
        Ok(RoleNames { effective, direct })
    }

    /// The tenant's compiled rules and the user at their version (`None`:
    /// no such user).
    async fn rules_and_subject(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<(Arc<CompiledTenant>, Arc<Subject>)>, AuthzError> {
        let (rules, _) = self.rules(tenant_id).await?;
        let subject = self
            .directory
            .subject(tenant_id, rules.version, user_id)
            .await?
            .0;
        Ok(subject.map(|subject| (rules, subject)))
    }

    /// Loads a subject by id (through the cache, at the current version).
    pub async fn subject_by_id(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<Arc<Subject>>, AuthzError> {
        let (version, _) = self.directory.version(tenant_id).await?;
        Ok(self
            .directory
            .subject(tenant_id, version.max(1), user_id)
            .await?
            .0)
    }

    /// The user a request names by user id (the `sub` of a token) or by
    /// username, or 404 saying so (an unparseable name is simply not found).
    pub async fn subject_named(
        &self,
        tenant_id: Uuid,
        raw: &str,
    ) -> Result<Arc<Subject>, AuthzError> {
        let not_found = || AuthzError::NoSuchUser(raw.chars().take(64).collect());
        if let Ok(user_id) = Uuid::try_parse(raw) {
            return self
                .subject_by_id(tenant_id, user_id)
                .await?
                .ok_or_else(not_found);
        }
        let username = gatehouse_core::Username::parse(raw).map_err(|_| not_found())?;
        self.subject_by_username(tenant_id, username.normalized())
            .await?
            .ok_or_else(not_found)
    }

    /// Loads a subject by normalised username.
    pub async fn subject_by_username(
        &self,
        tenant_id: Uuid,
        normalized: &str,
    ) -> Result<Option<Arc<Subject>>, AuthzError> {
        let (version, _) = self.directory.version(tenant_id).await?;
        Ok(self
            .directory
            .subject_by_name(tenant_id, version.max(1), normalized)
            .await?
            .0)
    }
}

/// Builds the engine request for a subject. A disabled user holds no roles
/// and no attributes (their effective roles are empty); [`decide_for`] denies
/// them outright.
#[must_use]
pub fn request_for(subject: &Subject, question: Question) -> Request {
    let active = subject.status == "active";
    Request {
        subject: subject.id.to_string(),
        assignments: if active {
            subject.assignments.clone()
        } else {
            Vec::new()
        },
        subject_attributes: if active {
            subject.attributes.clone()
        } else {
            Map::new()
        },
        resource: question.resource,
        resource_attributes: question.resource_attributes,
        action: question.action,
        context: question.context,
        now: question.now,
    }
}

/// The effective roles of `subject` under `rules` at `now` (none for a
/// disabled user: [`request_for`] gives them no assignments).
fn effective_of(rules: &CompiledTenant, subject: &Subject, now: i64) -> Vec<String> {
    let question = Question {
        resource: String::new(),
        resource_attributes: Map::new(),
        action: String::new(),
        context: Map::new(),
        now,
    };
    rules.set.effective_roles(&request_for(subject, question))
}

/// A user's roles, named one way everywhere: `effective` are the roles that
/// count (tokens, identity headers, decisions); `direct` are the ones
/// assigned to the user, shown where an administrator needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoleNames {
    /// Assigned (unexpired) and inherited, sorted.
    pub effective: Vec<String>,
    /// Assigned to the user directly (unexpired), sorted.
    pub direct: Vec<String>,
}

/// The engine's answer for `subject`, with one rule of the gateway's in front:
/// a disabled user is denied before any rule is looked at, so not even an
/// unconditional permit policy reaches them. Simulations use this too, so they
/// agree with real decisions.
#[must_use]
pub fn decide_for(
    subject: &Subject,
    set: &PolicySet,
    request: &Request,
    explain: bool,
) -> Decision {
    if subject.status == "active" {
        set.decide(request, explain)
    } else {
        Decision {
            allowed: false,
            reason: Reason::SubjectDisabled,
            decided_by: None,
            trace: explain.then(Trace::default),
        }
    }
}

/// [`decide_for`], recording the decision's metrics.
#[must_use]
pub fn decide(subject: &Subject, set: &PolicySet, request: &Request, explain: bool) -> Decision {
    /// Registered once: a labelled macro call looks its key up every time.
    static DURATION: std::sync::LazyLock<metrics::Histogram> = std::sync::LazyLock::new(|| {
        metrics::histogram!("gatehouse_authz_decision_duration_seconds")
    });
    static DECISIONS: std::sync::LazyLock<[metrics::Counter; 2]> = std::sync::LazyLock::new(|| {
        [
            metrics::counter!("gatehouse_authz_decisions_total", "allowed" => "false"),
            metrics::counter!("gatehouse_authz_decisions_total", "allowed" => "true"),
        ]
    });
    let started = Instant::now();
    let decision = decide_for(subject, set, request, explain);
    DURATION.record(started.elapsed().as_secs_f64());
    DECISIONS[usize::from(decision.allowed)].increment(1);
    decision
}
