//! Shared state handed to every handler. No globals: tests build their own.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Clock;
use gatehouse_redis::RedisPool;
use gatehouse_session::SessionStore;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::cookies::CookieSettings;
use crate::auth::csrf::CsrfKey;
use crate::auth::login::LoginService;

/// Everything a handler may need, cheap to clone (all fields are handles).
#[derive(Clone)]
pub struct AppState {
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
    pub revocations: Arc<crate::revocation::Revocations>,
    /// Access tokens: key ring, issue, verify.
    pub tokens: Arc<crate::tokens::TokenService>,
    /// Verified service-client credentials (introspection).
    pub clients: Arc<crate::routes::introspect::ClientCache>,
    /// Admission (is this credential live, whose is it) and ending sessions.
    pub admission: Arc<crate::admission::Admission>,
    /// Authorisation decisions (compiled tenant rules, subjects).
    pub authz: Arc<crate::authz::AuthzService>,
}

/// What the sign-in and session handlers share.
pub struct AuthState {
    /// Redis sessions.
    pub sessions: SessionStore,
    /// Refresh-token families (one per session).
    pub refresh: gatehouse_session::RefreshStore,
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
    pub devices: crate::auth::device::DeviceKey,
    /// Login throttling.
    pub throttle: gatehouse_ratelimit::Throttle,
}

/// HTTP behaviour shared by the router's layers.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest accepted total size of request headers (and URI).
    pub max_header_bytes: usize,
    /// Deadline for a whole request.
    pub request_timeout: Duration,
    /// Whether we are served over https (adds HSTS, `Secure` cookies).
    pub secure_transport: bool,
    /// Peers whose `X-Forwarded-For` (and forward-auth headers) are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which header family names the original request in forward auth.
    pub forward_auth: ForwardAuthMode,
    /// The tenant forward auth protects when `?tenant=` is absent.
    pub forward_auth_tenant: Option<String>,
    /// Mount the load-test floor endpoint (`/_bench/floor`).
    pub bench_endpoints: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            secure_transport: true,
            trusted_proxies: Vec::new(),
            forward_auth: ForwardAuthMode::Nginx,
            forward_auth_tenant: None,
            bench_endpoints: false,
        }
    }
}

/// Where forward auth (`/v1/verify`) reads the original request from: one
/// header family, chosen by the deployment, so a client cannot slip in a
/// header of another family that the proxy passes through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardAuthMode {
    /// nginx `auth_request`: `X-Original-Method`, `X-Original-URI`,
    /// `X-Original-Host` (set by `proxy_set_header`, which replaces any
    /// client-sent value).
    Nginx,
    /// Traefik `ForwardAuth`: `X-Forwarded-Method`, `-Uri`, `-Host` (Traefik
    /// overwrites them, client values included).
    Traefik,
    /// Envoy `ext_authz` HTTP with `path_prefix: /v1/verify`: the method
    /// and the path after the prefix of the check request itself.
    Envoy,
}

impl ForwardAuthMode {
    /// The setting's value, as written in `GATEHOUSE_FORWARD_AUTH`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Traefik => "traefik",
            Self::Envoy => "envoy",
        }
    }
}
