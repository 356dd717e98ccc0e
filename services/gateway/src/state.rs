//! Shared state handed to every handler. No globals: tests build their own.

use std::sync::Arc;

use gatehouse_app::services::{Redis as RedisPool, RefreshStore, Sessions as SessionStore};
use gatehouse_core::Clock;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use axum::extract::FromRef;

use crate::auth::cookies::CookieSettings;
use crate::auth::csrf::CsrfKey;
use crate::config::HttpSettings;
use gatehouse_app::login::LoginService;

/// Everything a handler may need: one `Arc`, so the clone every extractor
/// makes costs one atomic increment (cloning the fields one by one, Redis
/// clients with their connection strings among them, was 5% of a verify).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// Wraps the parts.
    #[must_use]
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct AppParts {
    /// Postgres: the source of truth.
    pub db: PgPool,
    /// Redis for state (sessions, counters, revocations, routing).
    pub redis: RedisPool,
    /// Redis for the L2 cache, when it is a different server than `redis`.
    pub redis_cache: Option<RedisPool>,
    /// Renders the Prometheus exposition text.
    pub metrics: PrometheusHandle,
    /// HTTP-level limits and switches.
    pub http: Arc<HttpSettings>,
    /// Sessions, sign-in, cookies and CSRF.
    pub auth: Arc<AuthState>,
    /// Token revocation: publishing and the in-process mirror.
    pub revocations: Arc<gatehouse_app::revocation::Revocations>,
    /// Access tokens: key ring, issue, verify.
    pub tokens: Arc<gatehouse_app::tokens::TokenService>,
    /// Verified service-client credentials (introspection).
    pub clients: Arc<gatehouse_app::clients::ServiceClients>,
    /// Admission (is this credential live, whose is it) and ending sessions.
    pub admission: Arc<gatehouse_app::admission::Admission>,
    /// What the session extractors need (admission, cookies, our origin).
    pub gate: Arc<crate::auth::gate::SessionGate>,
    /// Authorisation decisions (compiled tenant rules, subjects).
    pub authz: Arc<gatehouse_app::authz::AuthzService>,
    /// Cached reads of tenants, users and rules (the tiered cache).
    pub directory: Arc<gatehouse_app::directory::Directory>,
    /// Publishes committed outbox rows; kicked after every admin write.
    pub relay: Arc<gatehouse_app::outbox::Relay>,
    /// Grey routing: the Redis mirror of the routing configuration, and
    /// version and instance selection.
    pub routing: Arc<gatehouse_app::routing::Routing>,
    /// Spends refresh tokens (MAC, admission, rotation, reuse).
    pub refresher: gatehouse_app::refresh::Refresher,
    /// Authorisation data's admin reads and writes (in force here at once).
    pub authz_admin: gatehouse_app::authz_admin::AuthzAdmin,
    /// Routing's admin reads and writes, each write audited in its own
    /// transaction.
    pub routing_admin: gatehouse_app::routing_admin::RoutingAdmin,
    /// Host-scoped sessions for apps on their own origin (the handshake).
    pub app_sessions: Arc<gatehouse_app::app_sessions::AppSessions>,
    /// The last readiness answer: `/readyz` asks the stores at most once a
    /// second, however often it is called.
    pub readiness: ReadinessMemo,
    /// Bounds the audit rows denied admin calls write, per actor.
    pub denials: crate::audit::DenialAudit,
}

/// Each dependency's readiness (`Err` holds why not), as last measured.
pub type Readiness = Vec<(&'static str, Result<(), String>)>;

/// The last [`Readiness`] and when it was measured; callers that arrive
/// while it is being measured wait for that answer instead of asking again.
#[derive(Debug, Default)]
pub struct ReadinessMemo(pub tokio::sync::Mutex<Option<(std::time::Instant, Arc<Readiness>)>>);

/// What the sign-in and session handlers share.
pub struct AuthState {
    /// Redis sessions.
    pub sessions: SessionStore,
    /// Refresh-token families (one per session).
    pub refresh: RefreshStore,
    /// Password sign-in.
    pub login: LoginService,
    /// Signs CSRF tokens.
    pub csrf: CsrfKey,
    /// Cookie names and flags.
    pub cookies: CookieSettings,
    /// Public base URL (our own origin for CSRF checks).
    pub issuer: url::Url,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Signs known-device proofs.
    pub devices: gatehouse_app::devices::DeviceKey,
    /// Login throttling.
    pub throttle: gatehouse_ratelimit::Throttle,
}

impl FromRef<AppState> for Arc<HttpSettings> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.http)
    }
}

impl FromRef<AppState> for Arc<crate::auth::gate::SessionGate> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.gate)
    }
}

impl FromRef<AppState> for Arc<gatehouse_app::directory::Directory> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.directory)
    }
}

impl FromRef<AppState> for sqlx::PgPool {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}
