//! The router and the layers every request passes through.
//!
//! Outermost first: the edge (`middleware::edge`: request id, size guard,
//! span, deadline, panic guard, problem+json, security headers, metrics,
//! access line, in one pass) → handler, whose body extractors enforce the
//! body limit (`DefaultBodyLimit`) while streaming. The reverse proxy
//! (`/svc/...`, [`crate::proxy`]) is a router of its own with a lighter edge.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, delete, get, patch, post, put};

use crate::middleware;
use crate::pages;
use crate::proxy;
use crate::routes;
use crate::state::AppState;

pub use crate::middleware::REQUEST_ID;

/// The admin API for grey routing: services, versions, instances, rollouts.
fn routing_admin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/api/v1/services",
            get(routes::admin_routing::services_list).post(routes::admin_routing::services_create),
        )
        .route(
            "/admin/api/v1/services/{service}",
            patch(routes::admin_routing::service_update),
        )
        .route(
            "/admin/api/v1/services/{service}/versions",
            post(routes::admin_routing::versions_create),
        )
        .route(
            "/admin/api/v1/services/{service}/tenants",
            get(routes::admin_routing::service_tenants),
        )
        .route(
            "/admin/api/v1/services/{service}/tenants/{tenant}",
            put(routes::admin_routing::service_tenant_put)
                .delete(routes::admin_routing::service_tenant_delete),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/services",
            get(routes::admin_routing::tenant_services),
        )
        .route(
            "/admin/api/v1/services/{service}/versions/{version}",
            patch(routes::admin_routing::version_update),
        )
        .route(
            "/admin/api/v1/services/{service}/instances",
            post(routes::admin_routing::instances_register),
        )
        .route(
            "/admin/api/v1/services/{service}/instances/{id}",
            delete(routes::admin_routing::instance_deregister),
        )
        .route(
            "/admin/api/v1/services/{service}/instances/{id}/heartbeat",
            post(routes::admin_routing::instance_heartbeat),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/rollouts",
            get(routes::admin_routing::rollouts_list),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/rollouts/{service}",
            put(routes::admin_routing::rollout_put).delete(routes::admin_routing::rollout_delete),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/rollouts/{service}/rollback",
            post(routes::admin_routing::rollout_rollback),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/rollouts/{service}/subject-rules",
            get(routes::admin_routing::subject_rules_list)
                .post(routes::admin_routing::subject_rule_add),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/rollouts/{service}/subject-rules/{id}",
            delete(routes::admin_routing::subject_rule_delete),
        )
}

/// The admin API (`/admin/api/v1`): every handler passes the admin guard.
fn admin_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/admin/api/v1/tenants/{tenant}/revocations",
            post(routes::revocations::revoke),
        )
        .merge(routing_admin_routes())
        .route(
            "/admin/api/v1/tenants/{tenant}/lockouts",
            get(routes::admin::lockouts_list),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/lockouts/{id}",
            delete(routes::admin::lockouts_delete),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/roles",
            get(routes::admin_authz::roles_list).post(routes::admin_authz::roles_create),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/roles/{role}",
            get(routes::admin_authz::role_get)
                .patch(routes::admin_authz::role_update)
                .delete(routes::admin_authz::role_delete),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/roles/{role}/permissions",
            get(routes::admin_authz::permissions_list)
                .post(routes::admin_authz::permissions_add)
                .delete(routes::admin_authz::permissions_remove),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/users/{user}/roles",
            get(routes::admin_authz::user_roles_list),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/users/{user}/roles/{role}",
            put(routes::admin_authz::user_role_put).delete(routes::admin_authz::user_role_delete),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/policies",
            get(routes::admin_authz::policies_list).post(routes::admin_authz::policies_create),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/policies/validate",
            post(routes::admin_authz::policies_validate),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/policies/simulate",
            post(routes::admin_authz::policies_simulate),
        )
        .route(
            "/admin/api/v1/tenants/{tenant}/policies/{policy}",
            get(routes::admin_authz::policy_get)
                .put(routes::admin_authz::policy_update)
                .delete(routes::admin_authz::policy_delete),
        )
        .route(
            "/admin/api/v1/service-clients",
            get(routes::introspect::clients_list).post(routes::introspect::clients_create),
        )
        .route(
            "/admin/api/v1/service-clients/{client_id}",
            delete(routes::introspect::clients_delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::extract::admin::same_origin_only,
        ))
}

/// Every route of the gateway, before the shared layers.
fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/static/gatehouse.css", get(pages::stylesheet))
        .route(
            "/t/{tenant}/login",
            get(routes::browser::login_page).post(routes::browser::login_submit),
        )
        .route("/t/{tenant}/account", get(routes::browser::account_page))
        .route("/t/{tenant}/logout", post(routes::browser::logout_submit))
        .route(
            "/t/{tenant}/account/sessions/end-all",
            post(routes::browser::account_sessions_end_all),
        )
        .route(
            "/t/{tenant}/account/sessions/{id}/end",
            post(routes::browser::account_session_end),
        )
        .route("/.well-known/jwks.json", get(routes::wellknown::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(routes::wellknown::openid_configuration),
        )
        .route("/oauth2/introspect", post(routes::introspect::introspect))
        .route("/v1/routing/resolve", post(routes::routing::resolve))
        .route(proxy::handshake::START_PATH, get(proxy::handshake::start))
        .route("/v1/verify", any(routes::verify::verify))
        // Envoy ext_authz (HTTP): `path_prefix: /v1/verify` + the original path.
        .route("/v1/verify/{*original}", any(routes::verify::verify))
        .route("/v1/authz/check", post(routes::authz_api::check))
        .route(
            "/v1/authz/check-batch",
            post(routes::authz_api::check_batch),
        )
        .route("/v1/auth/login", post(routes::auth_api::login))
        .route("/v1/auth/refresh", post(routes::auth_api::refresh))
        .route("/v1/auth/logout", post(routes::auth_api::logout))
        .route("/v1/auth/logout-all", post(routes::auth_api::logout_all))
        .route("/v1/auth/me", get(routes::auth_api::me))
        .route("/v1/auth/password", post(routes::auth_api::password_change))
        .route("/v1/auth/sessions", get(routes::auth_api::sessions_list))
        .route(
            "/v1/auth/sessions/{id}",
            delete(routes::auth_api::sessions_delete),
        )
        .merge(admin_routes(state))
        .fallback(routes::health::not_found)
}

/// The metrics listener's application (`GATEHOUSE_METRICS_LISTEN`): only
/// `GET /metrics`, so the public listener never shows internal figures.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::health::metrics))
        .fallback(routes::health::not_found)
        .with_state(state)
}

/// Builds the whole HTTP application for `state`. Tests call this directly and
/// drive it with `oneshot`, without a socket.
pub fn app(state: AppState) -> Router {
    let http = state.http.clone();
    let mut router = routes(state.clone());
    if http.bench_endpoints {
        // The framework floor for load runs: same layers, no work.
        router = router.route("/_bench/floor", get(routes::health::bench_floor));
    }
    let edge = Arc::new(middleware::Edge::new(
        middleware::SizeLimits {
            max_header_bytes: http.max_header_bytes,
            max_body_bytes: http.max_body_bytes,
        },
        http.request_timeout.max(Duration::from_millis(1)),
        http.secure_transport,
    ));
    let api = router
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(edge, middleware::edge))
        .with_state(state.clone());
    // The reverse proxy keeps its own edge: no body cap, no deadline, no
    // rewriting of upstream answers (see `crate::proxy`).
    proxy::router(state).merge(api)
}
