//! Admin API for grey routing: services, their versions and instances
//! (platform administrators), and each tenant's rollouts (its own
//! administrators, or the platform's).
//!
//! Every write is audited, and its trigger leaves a `routing.changed` event
//! in the same transaction: every gateway re-mirrors the service into Redis
//! within milliseconds (the relay is kicked at once). Deregistration also
//! removes the instance from selection directly, before the event arrives.

use axum::Json;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use gatehouse_app::directory::Tenant;
use gatehouse_app::routing_admin::{NewInstance, NewRollout, SubjectMatch, WriteError};
use gatehouse_core::{ServiceName, VersionLabel};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::client::ClientInfo;
use crate::error::ApiError;
use crate::extract::admin::{Access, SYSTEM_TENANT, admin_event, admin_tenant};
use crate::extract::session::CurrentSession;
use crate::state::AppState;

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
}

/// An unknown service is 404; an unknown version named in the body is the
/// body's mistake (422).
fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::NoService(_) | WriteError::NotAvailable(_) => {
            ApiError::not_found(e.to_string())
        }
        WriteError::NoVersion { .. } => invalid(e.to_string()),
        WriteError::Store(e) => e.into(),
    }
}

fn conflict(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", detail)
}

fn service_name(raw: &str) -> Result<ServiceName, ApiError> {
    ServiceName::parse(raw).map_err(|e| ApiError::not_found(format!("no service: {e}")))
}

fn version_label(field: &str, raw: &str) -> Result<VersionLabel, ApiError> {
    VersionLabel::parse(raw).map_err(|e| invalid(format!("{field}: {e}")))
}

/// `host:port` (a DNS name, an IPv4 address or a bracketed IPv6 address, and a
/// port 1-65535): what the proxy will connect to.
fn check_address(address: &str) -> Result<(), ApiError> {
    let bad = || {
        invalid(format!(
            "address {address:?} must be host:port (e.g. 10.0.0.7:9101)"
        ))
    };
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Where an instance may point: every address `address` resolves to now
/// must pass [`crate::config::HttpSettings::instance_destination`] (422
/// naming the first that does not). A name is resolved at registration only:
/// DNS that changes later is not re-checked.
async fn check_destination(state: &AppState, address: &str) -> Result<(), ApiError> {
    let resolved = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::lookup_host(address),
    )
    .await
    .map_err(|_| invalid(format!("address {address:?} did not resolve within 2 s")))?
    .map_err(|e| invalid(format!("address {address:?} does not resolve: {e}")))?;
    let mut any = false;
    for socket in resolved {
        any = true;
        if let Some(why) = state.http.instance_destination(socket) {
            return Err(invalid(format!("address {address:?}: {why}")));
        }
    }
    if any {
        Ok(())
    } else {
        Err(invalid(format!("address {address:?} resolves to nothing")))
    }
}

/// The signed-in administrator making a routing call, and from where (an
/// extractor: every handler here starts from it).
pub struct Operator {
    state: AppState,
    me: CurrentSession,
    client: ClientInfo,
    headers: HeaderMap,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let me = CurrentSession::from_request_parts(parts, state).await?;
        let Ok(client) = ClientInfo::from_request_parts(parts, state).await;
        Ok(Self {
            state: state.clone(),
            me,
            client,
            headers: parts.headers.clone(),
        })
    }
}

impl Operator {
    /// The platform tenant, when the caller may administer services.
    async fn platform(
        &self,
        access: Access,
        action: &'static str,
    ) -> Result<std::sync::Arc<Tenant>, ApiError> {
        let (state, me, client) = (&self.state, &self.me, &self.client);
        admin_tenant(state, me, client, SYSTEM_TENANT, "services", access, action).await
    }

    /// The tenant `raw`, when the caller may administer its rollouts.
    async fn tenant(
        &self,
        raw: &str,
        access: Access,
        action: &'static str,
    ) -> Result<std::sync::Arc<Tenant>, ApiError> {
        let (state, me, client) = (&self.state, &self.me, &self.client);
        admin_tenant(state, me, client, raw, "rollouts", access, action).await
    }

    /// The audit event of this caller's `action` on `tenant` (the write's
    /// operation fills in the target and records it in its transaction).
    fn event(&self, tenant: &Tenant, action: &'static str) -> gatehouse_app::audit::AuditEvent {
        admin_event(&self.me, tenant, action, None, &self.client, &self.headers)
    }

    /// A write committed: wake the relay so its event (left by the
    /// trigger) goes out now.
    fn done(&self) {
        self.state.relay.kick();
    }

    /// Routing's admin operations.
    fn routing(&self) -> &gatehouse_app::routing_admin::RoutingAdmin {
        &self.state.routing_admin
    }
}

/// `GET /admin/api/v1/services`
pub async fn services_list(op: Operator) -> Result<Json<Value>, ApiError> {
    op.platform(Access::Read, "service.list").await?;
    let services = op.routing().services().await?;
    Ok(Json(json!({ "services": services })))
}

// ---------------------------------------------------------------- availability

/// The tenant a platform administrator names in a path (404 when unknown).
async fn named_tenant(op: &Operator, raw: &str) -> Result<std::sync::Arc<Tenant>, ApiError> {
    let slug = gatehouse_core::TenantSlug::parse(raw)
        .map_err(|e| ApiError::not_found(format!("no tenant: {e}")))?;
    op.state
        .directory
        .tenant_by_slug(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {slug}")))
}

/// `GET /admin/api/v1/services/{service}/tenants`: the tenants the service
/// is available to (platform administrators).
pub async fn service_tenants(
    op: Operator,
    Path(service): Path<String>,
) -> Result<Json<Value>, ApiError> {
    op.platform(Access::Read, "service.tenants").await?;
    let service = service_name(&service)?;
    let tenants = op
        .routing()
        .service_tenants(service.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no service {service}")))?;
    Ok(Json(
        json!({ "service": service.as_str(), "tenants": tenants }),
    ))
}

/// `PUT /admin/api/v1/services/{service}/tenants/{tenant}`: makes the
/// service available to the tenant (201 when it was not yet, 200 when it
/// already was). Until then nobody of that tenant is routed to it, and its
/// administrators cannot roll it out.
pub async fn service_tenant_put(
    op: Operator,
    Path((service, tenant)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    op.platform(Access::Write, "service.make_available").await?;
    let service = service_name(&service)?;
    let tenant = named_tenant(&op, &tenant).await?;
    let created = op
        .routing()
        .make_available(
            op.event(&tenant, "service.make_available"),
            tenant.id,
            service.as_str(),
            Some(op.me.0.session.user_id),
        )
        .await
        .map_err(write_error)?;
    let status = if created {
        op.done();
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "service": service.as_str(), "tenant": tenant.slug, "available": true })),
    ))
}

/// `DELETE /admin/api/v1/services/{service}/tenants/{tenant}`: withdraws
/// the service from the tenant, with the tenant's rollout and subject rules
/// for it (answered, so the caller sees what went).
pub async fn service_tenant_delete(
    op: Operator,
    Path((service, tenant)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    op.platform(Access::Write, "service.withdraw").await?;
    let service = service_name(&service)?;
    let tenant = named_tenant(&op, &tenant).await?;
    let withdrawn = op
        .routing()
        .withdraw(
            op.event(&tenant, "service.withdraw"),
            tenant.id,
            service.as_str(),
        )
        .await
        .map_err(write_error)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "service {service} is not available to tenant {}",
                tenant.slug
            ))
        })?;
    op.done();
    Ok(Json(json!({
        "service": service.as_str(),
        "tenant": tenant.slug,
        "available": false,
        "removed": withdrawn,
    })))
}

/// `GET /admin/api/v1/tenants/{tenant}/services`: what the tenant's
/// administrators may roll out (the services available to it, with their
/// versions and each version's status).
pub async fn tenant_services(
    op: Operator,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = op
        .tenant(&tenant, Access::Read, "service.list_available")
        .await?;
    let services = op.routing().tenant_services(tenant.id).await?;
    Ok(Json(json!({ "services": services })))
}

/// The body of `POST /admin/api/v1/services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    name: String,
    #[serde(default)]
    description: String,
    /// How instances are chosen (default `weighted`).
    #[serde(default)]
    strategy: Option<String>,
}

/// A strategy name as the selection scripts know it, or 422 listing them.
fn strategy(raw: &str) -> Result<gatehouse_routing::Strategy, ApiError> {
    gatehouse_routing::Strategy::parse(raw).ok_or_else(|| {
        let known: Vec<&str> = gatehouse_routing::Strategy::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        invalid(format!("strategy must be one of {}", known.join(", ")))
    })
}

/// `POST /admin/api/v1/services`
pub async fn services_create(
    op: Operator,
    Json(body): Json<NewService>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = ServiceName::parse(&body.name).map_err(|e| invalid(format!("name: {e}")))?;
    if body.description.chars().count() > 500 {
        return Err(invalid("description must be at most 500 characters"));
    }
    let chosen = strategy(body.strategy.as_deref().unwrap_or("weighted"))?;
    let tenant = op.platform(Access::Write, "service.create").await?;
    op.routing()
        .create_service(
            op.event(&tenant, "service.create"),
            name.as_str(),
            &body.description,
            chosen.as_str(),
        )
        .await
        .map_err(|e| match e.kind() {
            gatehouse_core::ErrorKind::Conflict => {
                conflict(format!("service {name} already exists"))
            }
            _ => e.into(),
        })?;
    op.done();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": name.as_str(), "description": body.description,
            "strategy": chosen.as_str(), "versions": [],
        })),
    ))
}

/// The body of `PATCH /admin/api/v1/services/{service}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceChange {
    strategy: String,
}

/// `PATCH /admin/api/v1/services/{service}`: how its instances are chosen.
pub async fn service_update(
    op: Operator,
    Path(service): Path<String>,
    Json(body): Json<ServiceChange>,
) -> Result<Json<Value>, ApiError> {
    let chosen = strategy(&body.strategy)?;
    let tenant = op.platform(Access::Write, "service.strategy").await?;
    let service = service_name(&service)?;
    let event = op.event(&tenant, "service.strategy");
    if !op
        .routing()
        .set_strategy(event, service.as_str(), chosen.as_str())
        .await?
    {
        return Err(ApiError::not_found(format!("no service {service}")));
    }
    op.done();
    Ok(Json(
        json!({ "name": service.as_str(), "strategy": chosen.as_str() }),
    ))
}

/// The body of `POST /admin/api/v1/services/{service}/versions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    version: String,
    /// Make it the default (the first version always is).
    #[serde(default)]
    default: bool,
}

/// `POST /admin/api/v1/services/{service}/versions`
pub async fn versions_create(
    op: Operator,
    Path(service): Path<String>,
    Json(body): Json<NewVersion>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let version = version_label("version", &body.version)?;
    let tenant = op.platform(Access::Write, "service_version.create").await?;
    let service = service_name(&service)?;
    let created = op
        .routing()
        .create_version(
            op.event(&tenant, "service_version.create"),
            service.as_str(),
            version.as_str(),
            body.default,
        )
        .await
        .map_err(|e| match e.kind() {
            gatehouse_core::ErrorKind::Conflict => {
                conflict(format!("service {service} already has version {version}"))
            }
            _ => e.into(),
        })?;
    if !created {
        return Err(ApiError::not_found(format!("no service {service}")));
    }
    op.done();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "service": service.as_str(), "version": version.as_str() })),
    ))
}

/// The body of `PATCH /admin/api/v1/services/{service}/versions/{version}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionChange {
    /// `true` makes it the default (there is always exactly one).
    #[serde(default)]
    default: Option<bool>,
    /// `active`, `draining` or `retired` (see migration 20261203000008).
    #[serde(default)]
    status: Option<String>,
}

/// `PATCH /admin/api/v1/services/{service}/versions/{version}`: make it the
/// default, or move it through its life (active, draining, retired). A
/// change the version's users forbid (retiring the default, or a version a
/// rollout or subject rule names) is 409 with the reason.
pub async fn version_update(
    op: Operator,
    Path((service, version)): Path<(String, String)>,
    Json(body): Json<VersionChange>,
) -> Result<Json<Value>, ApiError> {
    if body.default == Some(false) {
        return Err(invalid(
            "default: a service always has a default version; make another one the default instead",
        ));
    }
    if let Some(status) = &body.status
        && !["active", "draining", "retired"].contains(&status.as_str())
    {
        return Err(invalid("status must be active, draining or retired"));
    }
    if body.default.is_none() && body.status.is_none() {
        return Err(invalid("give default: true, or a status"));
    }
    let tenant = op.platform(Access::Write, "service_version.update").await?;
    let service = service_name(&service)?;
    let version = VersionLabel::parse(&version)
        .map_err(|e| ApiError::not_found(format!("no version: {e}")))?;
    let missing = || ApiError::not_found(format!("no version {version} of service {service}"));
    // A refusal by the version's users (a trigger) says why: 409.
    let refused = |e: gatehouse_app::StoreError| match e {
        gatehouse_app::StoreError::Conflict(reason) => conflict(reason),
        other => other.into(),
    };
    if let Some(status) = &body.status {
        let event = op.event(&tenant, "service_version.status");
        if !op
            .routing()
            .set_version_status(event, service.as_str(), version.as_str(), status)
            .await
            .map_err(refused)?
        {
            return Err(missing());
        }
        op.done();
    }
    if body.default == Some(true) {
        let event = op.event(&tenant, "service_version.default");
        if !op
            .routing()
            .set_default_version(event, service.as_str(), version.as_str())
            .await
            .map_err(refused)?
        {
            return Err(missing());
        }
        op.done();
    }
    let view = op
        .routing()
        .versions(service.as_str())
        .await?
        .into_iter()
        .find(|v| v.version == version.as_str())
        .ok_or_else(missing)?;
    Ok(Json(json!({
        "service": service.as_str(),
        "version": view.version,
        "default": view.is_default,
        "status": view.status,
    })))
}

/// The body of `POST /admin/api/v1/services/{service}/instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceRegistration {
    version: String,
    address: String,
    #[serde(default = "default_weight")]
    weight: i32,
    /// Without it the instance is static (alive until deregistered).
    #[serde(default)]
    heartbeat_ttl_ms: Option<i32>,
}

fn default_weight() -> i32 {
    100
}

async fn heartbeat(state: &AppState, service: &str, id: Uuid, ttl_ms: i32) -> Result<(), ApiError> {
    let ttl = std::time::Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
    state
        .routing
        .heartbeat(service, id, ttl)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "routing store unavailable");
            ApiError::unavailable("the routing store is unavailable", 1)
        })
}

/// `POST /admin/api/v1/services/{service}/instances`: registers (or
/// re-registers) an instance; an instance with a TTL is alive for one TTL.
pub async fn instances_register(
    op: Operator,
    Path(service): Path<String>,
    Json(body): Json<InstanceRegistration>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let version = version_label("version", &body.version)?;
    check_address(&body.address)?;
    if !(0..=10_000).contains(&body.weight) {
        return Err(invalid(
            "weight must be 0-10000 (0: registered but never picked)",
        ));
    }
    if let Some(ttl) = body.heartbeat_ttl_ms
        && !(1000..=3_600_000).contains(&ttl)
    {
        return Err(invalid("heartbeat_ttl_ms must be 1000-3600000"));
    }
    let tenant = op
        .platform(Access::Write, "service_instance.register")
        .await?;
    let service = service_name(&service)?;
    // Resolved only for a caller allowed to register: nobody else makes the
    // gateway look names up.
    check_destination(&op.state, &body.address).await?;
    let instance = NewInstance {
        version: version.as_str(),
        address: &body.address,
        weight: body.weight,
        heartbeat_ttl_ms: body.heartbeat_ttl_ms,
    };
    let event = op.event(&tenant, "service_instance.register");
    let id = op
        .routing()
        .register_instance(event, service.as_str(), &instance)
        .await
        .map_err(write_error)?;
    op.done();
    if let Some(ttl) = body.heartbeat_ttl_ms {
        heartbeat(&op.state, service.as_str(), id, ttl).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id, "service": service.as_str(), "version": version.as_str(),
            "address": body.address, "weight": body.weight, "heartbeat_ttl_ms": body.heartbeat_ttl_ms,
        })),
    ))
}

fn instance_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::not_found("no such instance"))
}

/// `POST /admin/api/v1/services/{service}/instances/{id}/heartbeat`
pub async fn instance_heartbeat(
    op: Operator,
    Path((service, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    op.platform(Access::Write, "service_instance.heartbeat")
        .await?;
    let service = service_name(&service)?;
    let id = instance_id(&id)?;
    match op.routing().instance_ttl(service.as_str(), id).await? {
        None => Err(ApiError::not_found(
            "no such active instance (register it again)",
        )),
        // A static instance needs no heartbeat; accepting it keeps clients simple.
        Some(None) => Ok(StatusCode::NO_CONTENT),
        Some(Some(ttl)) => {
            heartbeat(&op.state, service.as_str(), id, ttl).await?;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

/// `DELETE /admin/api/v1/services/{service}/instances/{id}`
pub async fn instance_deregister(
    op: Operator,
    Path((service, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = op
        .platform(Access::Write, "service_instance.deregister")
        .await?;
    let service = service_name(&service)?;
    let id = instance_id(&id)?;
    let event = op.event(&tenant, "service_instance.deregister");
    if !op
        .routing()
        .deregister_instance(event, service.as_str(), id)
        .await?
    {
        return Err(ApiError::not_found("no such active instance"));
    }
    op.done();
    // Out of selection now; the event re-mirrors the service everywhere.
    if let Err(e) = op
        .state
        .routing
        .store()
        .remove_instance(service.as_str(), &id.to_string())
        .await
    {
        tracing::warn!(error = %e, "instance deregistered; it leaves selection with the next mirror");
    }

    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- rollouts

/// `GET /admin/api/v1/tenants/{tenant}/rollouts`
pub async fn rollouts_list(
    op: Operator,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = op.tenant(&tenant, Access::Read, "rollout.list").await?;
    let rollouts = op.routing().rollouts(tenant.id).await?;
    Ok(Json(json!({ "rollouts": rollouts })))
}

/// The body of `PUT /admin/api/v1/tenants/{tenant}/rollouts/{service}`: a pin
/// (`stable` only) or a split (`canary` with `percent` or `canary_buckets`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutBody {
    stable: String,
    #[serde(default)]
    canary: Option<String>,
    /// Share of tenants (or users) on the canary, 0-100, to 0.01.
    #[serde(default)]
    percent: Option<f64>,
    /// The same share in buckets of 10 000.
    #[serde(default)]
    canary_buckets: Option<i32>,
    #[serde(default = "default_salt")]
    salt: String,
    #[serde(default)]
    per_user: bool,
    /// Ramp the canary through these shares on a schedule.
    #[serde(default)]
    ramp: Option<RampBody>,
    /// Judge the canary against the stable version, and roll it back by
    /// itself when it does worse (`gatehouse_routing::canary`).
    #[serde(default)]
    analysis: Option<gatehouse_routing::Analysis>,
}

/// A ramp: `percents` ascending to 100 (the first applies at once), one step
/// every `interval_s` seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampBody {
    percents: Vec<f64>,
    interval_s: i32,
}

/// The ramp's steps in buckets, checked: 1-20 steps, each above the one
/// before, the last 100%.
fn ramp_steps(ramp: &RampBody) -> Result<Vec<i32>, ApiError> {
    if ramp.percents.is_empty() || ramp.percents.len() > 20 {
        return Err(invalid("ramp.percents needs 1-20 steps"));
    }
    if !(1..=604_800).contains(&ramp.interval_s) {
        return Err(invalid("ramp.interval_s must be 1-604800 (a week)"));
    }
    let mut steps = Vec::with_capacity(ramp.percents.len());
    for p in &ramp.percents {
        if !(p.is_finite() && *p > 0.0 && *p <= 100.0) {
            return Err(invalid(
                "ramp.percents must each be above 0 and at most 100",
            ));
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "1..=10000 after the range check"
        )]
        let buckets = ((p * 100.0).round() as i32).max(1);
        if steps.last().is_some_and(|last| *last >= buckets) {
            return Err(invalid("ramp.percents must rise with every step"));
        }
        steps.push(buckets);
    }
    if steps.last() != Some(&10_000) {
        return Err(invalid("ramp.percents must end at 100"));
    }
    Ok(steps)
}

fn default_salt() -> String {
    "r1".to_owned()
}

/// The canary share in buckets, from exactly one of `percent` and `canary_buckets`.
fn canary_share(body: &RolloutBody) -> Result<i32, ApiError> {
    if body.ramp.is_some() || body.analysis.is_some() {
        if body.canary.is_none() {
            return Err(invalid("ramp and analysis need a canary version"));
        }
        if body.ramp.is_some() {
            if body.percent.is_some() || body.canary_buckets.is_some() {
                return Err(invalid(
                    "give ramp or percent/canary_buckets, not both (the ramp's first step is the share)",
                ));
            }
            return Ok(0);
        }
    }
    match (&body.canary, body.percent, body.canary_buckets) {
        (None, None, None) => Ok(0),
        (None, _, _) => Err(invalid("percent and canary_buckets need a canary version")),
        (Some(_), Some(_), Some(_)) => Err(invalid("give percent or canary_buckets, not both")),
        (Some(_), None, None) => Err(invalid(
            "a canary needs percent (0-100) or canary_buckets (0-10000)",
        )),
        (Some(_), Some(p), None) => {
            if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
                return Err(invalid("percent must be 0-100"));
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "0..=10000 after the range check"
            )]
            Ok((p * 100.0).round() as i32)
        }
        (Some(_), None, Some(b)) if (0..=10_000).contains(&b) => Ok(b),
        (Some(_), None, Some(_)) => Err(invalid("canary_buckets must be 0-10000")),
    }
}

/// `PUT /admin/api/v1/tenants/{tenant}/rollouts/{service}`
pub async fn rollout_put(
    op: Operator,
    Path((tenant, service)): Path<(String, String)>,
    Json(body): Json<RolloutBody>,
) -> Result<Json<Value>, ApiError> {
    let stable = version_label("stable", &body.stable)?;
    let canary = body
        .canary
        .as_deref()
        .map(|c| version_label("canary", c))
        .transpose()?;
    if canary.as_ref() == Some(&stable) {
        return Err(invalid("canary must differ from stable"));
    }
    let buckets = canary_share(&body)?;
    gatehouse_routing::check_salt(&body.salt).map_err(|e| invalid(format!("salt: {e}")))?;
    let steps = body
        .ramp
        .as_ref()
        .map(ramp_steps)
        .transpose()?
        .unwrap_or_default();
    if let Some(analysis) = &body.analysis {
        analysis.check().map_err(invalid)?;
    }
    let analysis = body
        .analysis
        .map(|a| serde_json::to_value(a).map_err(|e| ApiError::internal(&e)))
        .transpose()?;
    let tenant = op.tenant(&tenant, Access::Write, "rollout.put").await?;
    let service = service_name(&service)?;
    let rollout = NewRollout {
        stable: stable.as_str(),
        canary: canary.as_ref().map(VersionLabel::as_str),
        canary_buckets: buckets,
        salt: &body.salt,
        per_user: body.per_user,
        ramp_steps: &steps,
        ramp_interval_s: body.ramp.as_ref().map(|r| r.interval_s),
        analysis: analysis.as_ref(),
    };
    let view = op
        .routing()
        .put_rollout(
            op.event(&tenant, "rollout.put"),
            tenant.id,
            service.as_str(),
            &rollout,
            Some(op.me.0.session.user_id),
        )
        .await
        .map_err(write_error)?;
    op.done();
    Ok(Json(json!({ "rollout": view })))
}

/// `POST /admin/api/v1/tenants/{tenant}/rollouts/{service}/rollback`: every
/// bucket back on the stable version, at once.
pub async fn rollout_rollback(
    op: Operator,
    Path((tenant, service)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = op
        .tenant(&tenant, Access::Write, "rollout.rollback")
        .await?;
    let service = service_name(&service)?;
    let view = op
        .routing()
        .roll_back(
            op.event(&tenant, "rollout.rollback"),
            tenant.id,
            service.as_str(),
            Some(op.me.0.session.user_id),
        )
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "tenant {} has no rollout of {service}",
                tenant.slug
            ))
        })?;
    op.done();
    Ok(Json(json!({ "rollout": view })))
}

/// `DELETE /admin/api/v1/tenants/{tenant}/rollouts/{service}`: the tenant
/// follows the service's default version again.
pub async fn rollout_delete(
    op: Operator,
    Path((tenant, service)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = op.tenant(&tenant, Access::Write, "rollout.delete").await?;
    let service = service_name(&service)?;
    let event = op.event(&tenant, "rollout.delete");
    if !op
        .routing()
        .delete_rollout(event, tenant.id, service.as_str())
        .await?
    {
        return Err(ApiError::not_found(format!(
            "tenant {} has no rollout of {service}",
            tenant.slug
        )));
    }
    op.done();
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- subject rules

/// The body of `POST .../rollouts/{service}/subject-rules`: users holding
/// `role`, or whose `attribute` equals `equals`, go to `version`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectRuleBody {
    version: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    attribute: Option<String>,
    #[serde(default)]
    equals: Option<Value>,
    #[serde(default)]
    position: i32,
}

/// What the rule matches, checked: exactly one of a role name or an
/// attribute name with a value of at most 1 KiB.
fn subject_match(body: &SubjectRuleBody) -> Result<SubjectMatch<'_>, ApiError> {
    let name_ok = |name: &str, first: fn(char) -> bool, rest: fn(char) -> bool| {
        name.len() <= 63 && name.chars().next().is_some_and(first) && name.chars().all(rest)
    };
    match (&body.role, &body.attribute, &body.equals) {
        (Some(role), None, None) => {
            let ok = name_ok(
                role,
                |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
                |c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c),
            );
            if !ok {
                return Err(invalid("role: a role name (a-z, 0-9, _ . -, at most 63)"));
            }
            Ok(SubjectMatch::Role(role))
        }
        (None, Some(attribute), Some(equals)) => {
            let ok = name_ok(
                attribute,
                |c| c.is_ascii_alphabetic() || c == '_',
                |c| c.is_ascii_alphanumeric() || c == '_',
            );
            if !ok {
                return Err(invalid("attribute: an attribute name (letters, digits, _)"));
            }
            if equals.to_string().len() > 1024 {
                return Err(invalid("equals: at most 1 KiB of JSON"));
            }
            Ok(SubjectMatch::Attribute(attribute, equals))
        }
        (None, Some(_), None) => Err(invalid("attribute needs equals (the value to match)")),
        _ => Err(invalid(
            "give either role, or attribute with equals (not both, not neither)",
        )),
    }
}

/// `GET /admin/api/v1/tenants/{tenant}/rollouts/{service}/subject-rules`
pub async fn subject_rules_list(
    op: Operator,
    Path((tenant, service)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = op
        .tenant(&tenant, Access::Read, "subject_rule.list")
        .await?;
    let service = service_name(&service)?;
    let rules = op
        .routing()
        .subject_rules(tenant.id, service.as_str())
        .await?;
    Ok(Json(json!({ "subject_rules": rules })))
}

/// `POST /admin/api/v1/tenants/{tenant}/rollouts/{service}/subject-rules`
pub async fn subject_rule_add(
    op: Operator,
    Path((tenant, service)): Path<(String, String)>,
    Json(body): Json<SubjectRuleBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let version = version_label("version", &body.version)?;
    let matches = subject_match(&body)?;
    if !(0..=1_000_000).contains(&body.position) {
        return Err(invalid("position must be 0-1000000"));
    }
    let tenant = op
        .tenant(&tenant, Access::Write, "subject_rule.add")
        .await?;
    let service = service_name(&service)?;
    let rule = op
        .routing()
        .add_subject_rule(
            op.event(&tenant, "subject_rule.add"),
            tenant.id,
            service.as_str(),
            version.as_str(),
            &matches,
            body.position,
            Some(op.me.0.session.user_id),
        )
        .await
        .map_err(write_error)?;
    op.done();
    Ok((StatusCode::CREATED, Json(json!({ "subject_rule": rule }))))
}

/// `DELETE /admin/api/v1/tenants/{tenant}/rollouts/{service}/subject-rules/{id}`
pub async fn subject_rule_delete(
    op: Operator,
    Path((tenant, service, id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = op
        .tenant(&tenant, Access::Write, "subject_rule.delete")
        .await?;
    let service = service_name(&service)?;
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::not_found(format!("no subject rule {id}")))?;
    let event = op.event(&tenant, "subject_rule.delete");
    if !op
        .routing()
        .delete_subject_rule(event, tenant.id, service.as_str(), id)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "tenant {} has no subject rule {id} for {service}",
            tenant.slug
        )));
    }
    op.done();
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port_and_nothing_else() {
        for ok in [
            "127.0.0.1:9101",
            "[::1]:80",
            "orders-v2.internal:8080",
            "a:1",
        ] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            "host:0",
            "host:70000",
            ":80",
            "ho st:80",
            "-x:80",
            "a..b:80",
            "http://x:80",
            "x:80/path",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
