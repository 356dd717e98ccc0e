//! Configuration: an optional TOML file, then `GATEHOUSE_*` environment
//! variables (nested with `__`), then the conventional unprefixed `DATABASE_URL`,
//! `REDIS_URL` and `REDIS_CACHE_URL`. Later sources win.
//!
//! Everything is validated once, here, into [`Config`]; a bad value stops start-up
//! with a [`ConfigError`] naming the environment variable to fix. Every setting
//! is documented in `gatehouse.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use figment::Figment;
use figment::providers::{Format as _, Toml};
use gatehouse_app::settings::{DbSettings, RedisSettings};
use gatehouse_core::Argon2Cost;
use gatehouse_telemetry::LogFormat;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};
use serde::Deserialize;

/// Names of the environment variables, in one place (they are also the names
/// error messages use).
pub mod env {
    /// Path of an optional TOML configuration file.
    pub const CONFIG: &str = "GATEHOUSE_CONFIG";
    /// Socket address to listen on.
    pub const LISTEN: &str = "GATEHOUSE_LISTEN";
    /// Postgres URL.
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// Redis URL for state (sessions, counters, revocations, routing).
    pub const REDIS_URL: &str = "REDIS_URL";
    /// Redis URL for the L2 cache; defaults to `REDIS_URL`.
    pub const REDIS_CACHE_URL: &str = "REDIS_CACHE_URL";
    /// Token issuer URL.
    pub const ISSUER: &str = "GATEHOUSE_ISSUER";
    /// Base64 of 32 random bytes encrypting signing keys at rest.
    pub const KEY_ENCRYPTION_KEY: &str = "GATEHOUSE_KEY_ENCRYPTION_KEY";
    /// File holding the key-encryption key (alternative to the variable).
    pub const KEY_ENCRYPTION_KEY_FILE: &str = "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE";
    /// `false` only for plain-http development.
    pub const COOKIE_SECURE: &str = "GATEHOUSE_COOKIE_SECURE";
    /// `json` or `pretty`.
    pub const LOG_FORMAT: &str = "GATEHOUSE_LOG_FORMAT";
    /// Log filter (`info`, `gatehouse=debug,info`).
    pub const LOG: &str = "GATEHOUSE_LOG";
    /// Prefix of every Redis key.
    pub const REDIS_KEY_PREFIX: &str = "GATEHOUSE_REDIS_KEY_PREFIX";
    /// Password of the bootstrap admin.
    pub const ADMIN_PASSWORD: &str = gatehouse_app::bootstrap::ADMIN_PASSWORD_VAR;
    /// Password of the demo users.
    pub const DEMO_PASSWORD: &str = gatehouse_app::bootstrap::DEMO_PASSWORD_VAR;
}

/// A setting that could not be accepted; `setting` is the variable to fix.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The environment variable (or file key) at fault.
    pub setting: &'static str,
    /// What is wrong with it, without echoing secrets.
    pub message: String,
}

impl ConfigError {
    fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}

/// Raw settings as they come from the file and the environment.
#[derive(Debug, Deserialize)]
#[serde(default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "mirrors the file's and the environment's independent switches one to one"
)]
struct RawSettings {
    listen: String,
    /// Where `/metrics` is served (never on the public listener).
    metrics_listen: String,
    database_url: Option<String>,
    redis_url: Option<String>,
    redis_cache_url: Option<String>,
    issuer: Option<String>,
    key_encryption_key: Option<SecretString>,
    key_encryption_key_file: Option<PathBuf>,
    cookie_secure: bool,
    log_format: LogFormat,
    log: String,
    redis_key_prefix: String,
    max_body_bytes: usize,
    max_header_bytes: usize,
    request_timeout_ms: u64,
    shutdown_grace_ms: u64,
    migrate_on_start: bool,
    bench_endpoints: bool,
    db: RawDb,
    redis: RawRedis,
    argon2: Argon2Cost,
    session: RawSession,
    /// Most argon2 hashes running at once (default: half the CPU cores).
    password_workers: Option<usize>,
    /// How long a login waits for a hashing slot before 503.
    password_queue_timeout_ms: u64,
    /// CIDRs of proxies whose `X-Forwarded-For` is believed.
    trusted_proxies: ListOrCsv,
    /// Header family of forward auth (`nginx`, `traefik`, `envoy`).
    forward_auth: ForwardAuthMode,
    /// Tenant forward auth protects when the proxy names none.
    forward_auth_tenant: Option<String>,
    throttle: RawThrottle,
    tokens: RawTokens,
    cache: RawCache,
    proxy: RawProxy,
    connections: RawConnections,
    /// `GATEHOUSE_PROXY_LISTEN`: the apps' own listener (the `Host` picks the service).
    proxy_listen: Option<String>,
    /// `GATEHOUSE_PROXY_SAME_ORIGIN`: also serve `/svc/{service}/...` on the main listener.
    proxy_same_origin: bool,
    routing: RawRouting,
}

/// `GATEHOUSE_ROUTING__*`: instance selection, breakers and leases.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawRouting {
    /// Consecutive failures that open an instance's breaker.
    breaker_failures: u32,
    /// Cool-down of the first ejection; the n-th lasts n times as long.
    breaker_cooldown_ms: u64,
    /// The longest cool-down.
    breaker_max_cooldown_ms: u64,
    /// While half-open, one request per this interval is let through.
    probe_interval_ms: u64,
    /// Least-connections lease lifetime.
    lease_ttl_ms: u64,
    /// Below this share of healthy instances, all live ones are used.
    panic_percent: u8,
    /// How often the canary controller ramps and judges rollouts.
    canary_tick_ms: u64,
    /// Networks instances may be registered in through the admin API; when
    /// empty, anything but loopback, link-local and unspecified addresses.
    instance_networks: ListOrCsv,
}

impl Default for RawRouting {
    fn default() -> Self {
        let d = gatehouse_routing::SelectSettings::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            breaker_failures: d.breaker.failures,
            breaker_cooldown_ms: ms(d.breaker.base_cooldown),
            breaker_max_cooldown_ms: ms(d.breaker.max_cooldown),
            probe_interval_ms: ms(d.breaker.probe_interval),
            lease_ttl_ms: ms(d.lease_ttl),
            panic_percent: d.panic_percent,
            canary_tick_ms: 1_000,
            instance_networks: ListOrCsv::default(),
        }
    }
}

fn routing_settings(raw: &RawRouting) -> Result<gatehouse_routing::SelectSettings, ConfigError> {
    let invalid = |detail: &str| ConfigError::new("GATEHOUSE_ROUTING__*", detail.to_owned());
    if raw.breaker_failures == 0 {
        return Err(invalid("breaker_failures must be at least 1"));
    }
    if raw.breaker_cooldown_ms == 0 || raw.breaker_max_cooldown_ms < raw.breaker_cooldown_ms {
        return Err(invalid(
            "breaker_cooldown_ms must be at least 1 and at most breaker_max_cooldown_ms",
        ));
    }
    if raw.lease_ttl_ms == 0 || raw.probe_interval_ms == 0 {
        return Err(invalid(
            "lease_ttl_ms and probe_interval_ms must be at least 1",
        ));
    }
    if !(100..=3_600_000).contains(&raw.canary_tick_ms) {
        return Err(invalid("canary_tick_ms must be 100-3600000"));
    }
    if raw.panic_percent > 100 {
        return Err(invalid("panic_percent is a percentage (0-100)"));
    }
    Ok(gatehouse_routing::SelectSettings {
        lease_ttl: Duration::from_millis(raw.lease_ttl_ms),
        panic_percent: raw.panic_percent,
        breaker: gatehouse_routing::BreakerSettings {
            failures: raw.breaker_failures,
            base_cooldown: Duration::from_millis(raw.breaker_cooldown_ms),
            max_cooldown: Duration::from_millis(raw.breaker_max_cooldown_ms),
            probe_interval: Duration::from_millis(raw.probe_interval_ms),
        },
    })
}

/// `GATEHOUSE_CONNECTIONS__*`: what every listener allows a connection.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawConnections {
    /// Most connections open at once per listener.
    max: usize,
    /// Most connections open at once from one IP address, per listener.
    max_per_address: usize,
    /// Deadline for a whole request head.
    header_read_timeout_ms: u64,
    /// A connection silent this long is closed.
    idle_timeout_ms: u64,
}

impl Default for RawConnections {
    fn default() -> Self {
        let limits = crate::listener::ConnectionLimits::default();
        Self {
            max: limits.max_connections,
            max_per_address: limits.max_per_address,
            header_read_timeout_ms: u64::try_from(limits.header_read_timeout.as_millis())
                .unwrap_or(u64::MAX),
            idle_timeout_ms: u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

fn connection_limits(
    raw: &RawConnections,
) -> Result<crate::listener::ConnectionLimits, ConfigError> {
    if raw.max == 0
        || raw.max_per_address == 0
        || raw.header_read_timeout_ms == 0
        || raw.idle_timeout_ms == 0
    {
        return Err(ConfigError::new(
            "GATEHOUSE_CONNECTIONS__*",
            "max, max_per_address, header_read_timeout_ms and idle_timeout_ms must be at least 1",
        ));
    }
    Ok(crate::listener::ConnectionLimits {
        max_connections: raw.max,
        max_per_address: raw.max_per_address,
        header_read_timeout: Duration::from_millis(raw.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(raw.idle_timeout_ms),
    })
}

/// `GATEHOUSE_PROXY__*`: the reverse proxy (`/svc/...`).
#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawProxy {
    /// Deadline for connecting to an instance.
    connect_timeout_ms: u64,
    /// Deadline for an instance's response headers (the body then streams as
    /// long as it needs).
    response_timeout_ms: u64,
    /// Idle pooled connections kept per instance.
    max_idle_per_instance: usize,
    /// Tenant whose sign-in page an unauthenticated browser is sent to.
    login_tenant: Option<String>,
    /// `host=service` pairs: which service the apps' listener serves for a `Host`.
    hosts: ListOrCsv,
    /// Services whose paths may carry encoded slashes (`%2F`), kept inside their segment.
    encoded_slashes: ListOrCsv,
    /// `service=protocol` pairs: upgrades other than `websocket` a service accepts.
    upgrades: ListOrCsv,
    /// How often an upgraded connection re-checks the credential that opened it.
    tunnel_recheck_ms: u64,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 1_000,
            response_timeout_ms: 30_000,
            max_idle_per_instance: 64,
            login_tenant: None,
            hosts: ListOrCsv::default(),
            encoded_slashes: ListOrCsv::default(),
            upgrades: ListOrCsv::default(),
            tunnel_recheck_ms: 5_000,
        }
    }
}

/// The reverse proxy's behaviour.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Deadline for connecting to an instance (a refused or timed-out connect
    /// is a failure before sending: idempotent requests try another instance).
    pub connect_timeout: Duration,
    /// Deadline for an instance's response headers (504 when it passes).
    pub response_timeout: Duration,
    /// Idle pooled connections kept per instance.
    pub max_idle_per_instance: usize,
    /// Tenant whose sign-in page an unauthenticated browser is sent to; else
    /// the forward-auth tenant; else the browser gets the 401.
    pub login_tenant: Option<String>,
    /// The apps' own listener (`GATEHOUSE_PROXY_LISTEN`): each app on its own
    /// origin, apart from the console and the auth API (the recommended way).
    pub listen: Option<SocketAddr>,
    /// `/svc/{service}/...` on the main listener too
    /// (`GATEHOUSE_PROXY_SAME_ORIGIN`): the apps' pages then share an origin
    /// with the console, so an app's script acts as whoever views it.
    pub same_origin: bool,
    /// Host name (lower case, no port) → service, for the apps' listener.
    pub hosts: std::collections::HashMap<String, gatehouse_core::ServiceName>,
    /// Services that opted in to encoded slashes in their paths.
    pub encoded_slashes: std::collections::HashSet<String>,
    /// `(service, protocol)` upgrades allowed besides `websocket`.
    pub upgrades: std::collections::HashSet<(String, String)>,
    /// How often an upgraded connection re-checks its credential (a revoked
    /// session or token closes the tunnel within this interval).
    pub tunnel_recheck: Duration,
}

impl ProxySettings {
    /// Whether `service` accepts an upgrade to `protocol` (`websocket` always).
    #[must_use]
    pub fn allows_upgrade(&self, service: &str, protocol: &str) -> bool {
        protocol.eq_ignore_ascii_case("websocket")
            || self
                .upgrades
                .contains(&(service.to_owned(), protocol.to_ascii_lowercase()))
    }

    /// The service the apps' listener serves for a `Host` header's value.
    #[must_use]
    pub fn service_for_host(&self, host: &str) -> Option<&gatehouse_core::ServiceName> {
        self.hosts.get(&host_name(host))
    }
}

/// The host part of a `Host` value, lower case, without the port.
#[must_use]
pub fn host_name(host: &str) -> String {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Default for ProxySettings {
    fn default() -> Self {
        let raw = RawProxy::default();
        Self {
            connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
            response_timeout: Duration::from_millis(raw.response_timeout_ms),
            max_idle_per_instance: raw.max_idle_per_instance,
            login_tenant: None,
            listen: None,
            same_origin: false,
            hosts: std::collections::HashMap::new(),
            encoded_slashes: std::collections::HashSet::new(),
            upgrades: std::collections::HashSet::new(),
            tunnel_recheck: Duration::from_millis(raw.tunnel_recheck_ms),
        }
    }
}

/// `GATEHOUSE_CACHE__*`: the tiered cache's sizes and lifetimes.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawCache {
    /// L1 lifetime of an entry (also the staleness bound when events are lost).
    l1_ttl_ms: u64,
    /// L2 lifetime.
    l2_ttl_ms: u64,
    /// Lifetime of a negative answer (unknown tenant or user).
    negative_ttl_ms: u64,
    /// L1 bound for subjects and principals, MiB each.
    l1_users_mib: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            l1_ttl_ms: 30_000,
            l2_ttl_ms: 300_000,
            negative_ttl_ms: 5_000,
            l1_users_mib: 128,
        }
    }
}

impl RawCache {
    fn settings(&self) -> gatehouse_app::directory::DirectorySettings {
        let mut settings = gatehouse_app::directory::DirectorySettings::default();
        let l1_ttl = Duration::from_millis(self.l1_ttl_ms.max(1));
        let l2_ttl = Duration::from_millis(self.l2_ttl_ms.max(1));
        let negative_ttl = Duration::from_millis(self.negative_ttl_ms.max(1));
        for tier in [&mut settings.users, &mut settings.tenants] {
            tier.l1_ttl = l1_ttl;
            tier.l2_ttl = l2_ttl;
            tier.negative_ttl = negative_ttl;
        }
        settings.users.l1_capacity_bytes = self.l1_users_mib.max(1) << 20;
        settings.versions.l1_ttl = l1_ttl;
        settings
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawTokens {
    audience: String,
    access_ttl_s: u64,
    leeway_s: u64,
    signing_alg: String,
    rotate_every_days: u64,
    key_refresh_s: u64,
}

impl Default for RawTokens {
    fn default() -> Self {
        Self {
            audience: "gatehouse".to_owned(),
            access_ttl_s: 600,
            leeway_s: 30,
            signing_alg: "EdDSA".to_owned(),
            rotate_every_days: 30,
            key_refresh_s: 30,
        }
    }
}

pub use gatehouse_app::tokens::{KeyEncryptionKey, TokenConfig};

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
    /// The reverse proxy (`/svc/...`).
    pub proxy: ProxySettings,
    /// Where instances may be registered ([`HttpSettings::instance_destination`]).
    pub instance_networks: Vec<ipnet::IpNet>,
    /// The gateway's own listeners, which no instance may be.
    pub own_listeners: Vec<SocketAddr>,
}

impl HttpSettings {
    /// Why an instance may not be at `address`, or `None`. The gateway's own
    /// listeners never (an instance there would let `/svc` reach the metrics
    /// listener, say); with `instance_networks` set, only addresses inside
    /// them; without, anything but loopback, link-local, unspecified and
    /// multicast addresses.
    #[must_use]
    pub fn instance_destination(&self, address: SocketAddr) -> Option<String> {
        let ip = address.ip();
        let own = self.own_listeners.iter().any(|listener| {
            listener.port() == address.port()
                && (listener.ip() == ip
                    || listener.ip().is_unspecified()
                    || (listener.ip().is_loopback() && ip.is_loopback()))
        });
        if own {
            return Some(format!("{address} is one of the gateway's own listeners"));
        }
        if !self.instance_networks.is_empty() {
            return (!self.instance_networks.iter().any(|n| n.contains(&ip))).then(|| {
                format!("{ip} is outside the networks instances may use (GATEHOUSE_ROUTING__INSTANCE_NETWORKS)")
            });
        }
        let link_local = match ip {
            std::net::IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
            std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        (ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local).then(|| {
            format!(
                "{ip} is a loopback, link-local, unspecified or multicast address; list it in GATEHOUSE_ROUTING__INSTANCE_NETWORKS to allow it"
            )
        })
    }

    /// The HTTP behaviour `config` asks for.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_body_bytes: config.max_body_bytes,
            max_header_bytes: config.max_header_bytes,
            request_timeout: config.request_timeout,
            secure_transport: config.cookie_secure,
            trusted_proxies: config.trusted_proxies.clone(),
            forward_auth: config.forward_auth,
            forward_auth_tenant: config.forward_auth_tenant.clone(),
            bench_endpoints: config.bench_endpoints,
            proxy: config.proxy.clone(),
            instance_networks: config.instance_networks.clone(),
            own_listeners: [
                Some(config.listen),
                Some(config.metrics_listen),
                config.proxy.listen,
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }
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
            proxy: ProxySettings::default(),
            instance_networks: Vec::new(),
            own_listeners: Vec::new(),
        }
    }
}

/// A list given as a TOML array or as one comma-separated string (env).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListOrCsv {
    List(Vec<String>),
    Csv(String),
}

impl Default for ListOrCsv {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl ListOrCsv {
    fn items(&self) -> Vec<String> {
        match self {
            Self::List(items) => items
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            Self::Csv(text) => text
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawThrottle {
    redis_timeout_ms: u64,
    breaker_open_ms: u64,
    expected_instances: u32,
}

impl Default for RawThrottle {
    fn default() -> Self {
        Self {
            redis_timeout_ms: 150,
            breaker_open_ms: 5_000,
            expected_instances: 1,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawSession {
    cookie_name: Option<String>,
    idle_timeout_s: u64,
    absolute_timeout_s: u64,
    touch_interval_s: u64,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            cookie_name: None,
            idle_timeout_s: 30 * 60,
            absolute_timeout_s: 12 * 60 * 60,
            touch_interval_s: 60,
        }
    }
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            metrics_listen: "127.0.0.1:9464".to_owned(),
            database_url: None,
            redis_url: None,
            redis_cache_url: None,
            issuer: None,
            key_encryption_key: None,
            key_encryption_key_file: None,
            cookie_secure: true,
            log_format: LogFormat::Json,
            log: "info".to_owned(),
            redis_key_prefix: "gh:".to_owned(),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            migrate_on_start: true,
            bench_endpoints: false,
            db: RawDb::default(),
            redis: RawRedis::default(),
            argon2: Argon2Cost::default(),
            session: RawSession::default(),
            password_workers: None,
            password_queue_timeout_ms: 5_000,
            trusted_proxies: ListOrCsv::default(),
            forward_auth: ForwardAuthMode::Nginx,
            forward_auth_tenant: None,
            throttle: RawThrottle::default(),
            tokens: RawTokens::default(),
            cache: RawCache::default(),
            proxy: RawProxy::default(),
            connections: RawConnections::default(),
            proxy_listen: None,
            proxy_same_origin: false,
            routing: RawRouting::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawDb {
    max_connections: u32,
    acquire_timeout_ms: u64,
    statement_timeout_ms: u64,
}

impl Default for RawDb {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout_ms: 3_000,
            statement_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawRedis {
    connections: usize,
    command_timeout_ms: u64,
    connect_timeout_ms: u64,
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            connections: 4,
            command_timeout_ms: 250,
            connect_timeout_ms: 500,
        }
    }
}

/// Validated configuration of `gatehouse serve`.
#[derive(Debug)]
pub struct Config {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// Where `/metrics` is served: a listener of its own, so the public one
    /// never shows internal figures (default `127.0.0.1:9464`).
    pub metrics_listen: SocketAddr,
    /// Postgres connection and deadlines.
    pub db: DbSettings,
    /// Redis for state.
    pub redis_state: RedisSettings,
    /// Redis for the L2 cache (same server as state unless `REDIS_CACHE_URL`).
    pub redis_cache: RedisSettings,
    /// Issuer URL placed in tokens and discovery documents.
    pub issuer: url::Url,
    /// Encrypts signing keys at rest.
    pub key_encryption_key: KeyEncryptionKey,
    /// Whether cookies carry `Secure` (and HSTS is sent).
    pub cookie_secure: bool,
    /// How logs are rendered.
    pub log_format: LogFormat,
    /// Log filter directive.
    pub log_filter: String,
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest accepted total size of request headers.
    pub max_header_bytes: usize,
    /// Deadline for a whole request.
    pub request_timeout: Duration,
    /// How long in-flight requests may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Mount `/_bench/floor`, a bare endpoint behind the same layers, so load
    /// runs can measure the framework floor in the same binary. Off in production.
    pub bench_endpoints: bool,
    /// argon2id cost for password hashing.
    pub argon2: Argon2Cost,
    /// Session lifetimes.
    pub session: gatehouse_app::settings::SessionConfig,
    /// Session cookie name (default `__Host-gh_session`, or `gh_session` without Secure).
    pub session_cookie_name: Option<String>,
    /// Most argon2 hashes running at once.
    pub password_workers: usize,
    /// How long a login waits for a hashing slot.
    pub password_queue_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` and forward-auth headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Header family forward auth reads the original request from.
    pub forward_auth: ForwardAuthMode,
    /// Tenant forward auth protects when the proxy names none (`?tenant=`).
    pub forward_auth_tenant: Option<String>,
    /// Login throttle behaviour (the limits themselves are per tenant).
    pub throttle: gatehouse_ratelimit::ThrottleSettings,
    /// Access tokens and signing keys.
    pub tokens: TokenConfig,
    /// The tiered cache's sizes and lifetimes (`GATEHOUSE_CACHE__*`).
    pub cache: gatehouse_app::directory::DirectorySettings,
    /// The reverse proxy (`GATEHOUSE_PROXY__*`).
    pub proxy: ProxySettings,
    /// Head deadline, idle timeout and caps of every listener
    /// (`GATEHOUSE_CONNECTIONS__*`).
    pub connections: crate::listener::ConnectionLimits,
    /// Instance selection, breakers and leases (`GATEHOUSE_ROUTING__*`).
    pub routing: gatehouse_routing::SelectSettings,
    /// How often the canary controller runs (`GATEHOUSE_ROUTING__CANARY_TICK_MS`).
    pub canary_tick: Duration,
    /// Where instances may point (`GATEHOUSE_ROUTING__INSTANCE_NETWORKS`).
    pub instance_networks: Vec<ipnet::IpNet>,
}

/// Half the cores (rounded up): a login flood can then take at most half the
/// CPU from request serving. Measured with `bench/load/run` on 2 cores: with
/// one hash per core, verify p99 beside a flood was 2.01x its quiet value; with
/// one hash at a time, 1.78x (at 49 instead of 68 logins/s).
fn default_password_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .div_ceil(2)
}

/// Reads the layered sources. `vars` stands in for the process environment so
/// tests can pass their own without touching global state.
fn figment(config_file: Option<&Path>, vars: &[(String, String)]) -> Figment {
    let mut figment = Figment::new();
    if let Some(path) = config_file {
        figment = figment.merge(Toml::file_exact(path));
    }
    let prefixed: Vec<(String, String)> = vars
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("GATEHOUSE_")
                .filter(|rest| !rest.is_empty() && *rest != "CONFIG")
                .map(|rest| (rest.to_ascii_lowercase().replace("__", "."), v.clone()))
        })
        .collect();
    let plain: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| {
            [env::DATABASE_URL, env::REDIS_URL, env::REDIS_CACHE_URL].contains(&k.as_str())
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    for (key, value) in prefixed.into_iter().chain(plain) {
        // A dotted key (`db.max_connections`) nests, like `GATEHOUSE_DB__MAX_CONNECTIONS`.
        figment = figment.merge((key, parse_scalar(&value)));
    }
    figment
}

/// Reads the config file on its own and refuses keys no setting has, naming
/// them (`trusted_proxy`, `db.max_conections`): a misspelt setting must not
/// silently leave its default in force.
fn check_file_keys(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(env::CONFIG, format!("cannot read {}: {e}", path.display()))
    })?;
    let mut unknown = Vec::new();
    let parsed: Result<RawSettings, _> =
        serde_ignored::deserialize(toml::Deserializer::new(&text), |key| {
            unknown.push(key.to_string());
        });
    if let Err(e) = parsed {
        return Err(ConfigError::new(
            env::CONFIG,
            format!("{}: {}", path.display(), e.message()),
        ));
    }
    if !unknown.is_empty() {
        return Err(ConfigError::new(
            env::CONFIG,
            format!(
                "{}: unknown key{} {}",
                path.display(),
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Environment values are strings; read booleans and integers the way
/// figment's own `Env` provider does, so `false` and `5000` type-check.
fn parse_scalar(raw: &str) -> figment::value::Value {
    use figment::value::Value;
    let trimmed = raw.trim();
    if let Ok(b) = trimmed.parse::<bool>() {
        return Value::from(b);
    }
    if let Ok(n) = trimmed.parse::<u64>() {
        return Value::from(n);
    }
    Value::from(raw.to_owned())
}

impl Config {
    /// What the application's services are built from.
    #[must_use]
    pub fn services(&self) -> gatehouse_app::services::Settings {
        gatehouse_app::services::Settings {
            db: self.db.clone(),
            migrate_on_start: self.migrate_on_start,
            redis_state: self.redis_state.clone(),
            redis_cache: self.redis_cache.clone(),
            key_prefix: self.redis_key_prefix.clone(),
            session: self.session,
            argon2: self.argon2,
            password_workers: self.password_workers,
            password_queue_timeout: self.password_queue_timeout,
            throttle: self.throttle,
            tokens: self.tokens.clone(),
            issuer: self.issuer.clone(),
            cache: self.cache.clone(),
            routing: self.routing.clone(),
        }
    }

    /// Loads from the process environment (and `GATEHOUSE_CONFIG` if set).
    pub fn from_process_env() -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load(&vars)
    }

    /// Loads from the given variables (and the file `GATEHOUSE_CONFIG` names).
    pub fn load(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let config_file = vars
            .iter()
            .find(|(k, _)| k == env::CONFIG)
            .map(|(_, v)| PathBuf::from(v));
        if let Some(path) = &config_file
            && !path.is_file()
        {
            return Err(ConfigError::new(
                env::CONFIG,
                format!("config file {} does not exist", path.display()),
            ));
        }
        if let Some(path) = &config_file {
            check_file_keys(path)?;
        }
        let raw: RawSettings = figment(config_file.as_deref(), vars)
            .extract()
            .map_err(|e| ConfigError::new(setting_of(&e), e.to_string()))?;
        Self::validate(raw)
    }

    fn validate(raw: RawSettings) -> Result<Self, ConfigError> {
        check_limits(&raw)?;
        let listen = socket_addr(&raw.listen, env::LISTEN, "127.0.0.1:8080")?;
        let metrics_listen = socket_addr(
            &raw.metrics_listen,
            "GATEHOUSE_METRICS_LISTEN",
            "127.0.0.1:9464",
        )?;

        let database_url = raw.database_url.ok_or_else(|| {
            ConfigError::new(
                env::DATABASE_URL,
                "is not set (postgres://user@host:port/db)",
            )
        })?;
        let mut db = DbSettings::from_url(&database_url).map_err(|e| {
            ConfigError::new(
                env::DATABASE_URL,
                format!("cannot be parsed as a postgres URL: {e}"),
            )
        })?;
        db.max_connections = raw.db.max_connections.max(1);
        db.acquire_timeout = Duration::from_millis(raw.db.acquire_timeout_ms.max(1));
        db.statement_timeout = Duration::from_millis(raw.db.statement_timeout_ms.max(1));

        let redis_url = raw
            .redis_url
            .ok_or_else(|| ConfigError::new(env::REDIS_URL, "is not set (redis://host:port)"))?;
        let redis_state = redis_settings(env::REDIS_URL, redis_url.clone(), &raw.redis)?;
        let redis_cache = redis_settings(
            env::REDIS_CACHE_URL,
            raw.redis_cache_url.unwrap_or(redis_url),
            &raw.redis,
        )?;

        let issuer_raw = raw.issuer.unwrap_or_else(|| format!("http://{listen}"));
        let issuer = url::Url::parse(&issuer_raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ConfigError::new(
                    env::ISSUER,
                    format!("{issuer_raw:?} is not an absolute http(s) URL"),
                )
            })?;

        let trusted_proxies = trusted_proxies(&raw.trusted_proxies)?;
        let forward_auth_tenant = forward_auth_tenant(raw.forward_auth_tenant)?;
        let key_encryption_key = key_encryption_key(
            raw.key_encryption_key,
            raw.key_encryption_key_file.as_deref(),
        )?;

        Ok(Self {
            listen,
            metrics_listen,
            db,
            redis_state,
            redis_cache,
            issuer,
            key_encryption_key,
            cookie_secure: raw.cookie_secure,
            log_format: raw.log_format,
            log_filter: raw.log,
            redis_key_prefix: raw.redis_key_prefix,
            max_body_bytes: raw.max_body_bytes,
            max_header_bytes: raw.max_header_bytes,
            request_timeout: Duration::from_millis(raw.request_timeout_ms.max(1)),
            shutdown_grace: Duration::from_millis(raw.shutdown_grace_ms),
            migrate_on_start: raw.migrate_on_start,
            bench_endpoints: raw.bench_endpoints,
            argon2: raw.argon2,
            session: gatehouse_app::settings::SessionConfig {
                idle_timeout: Duration::from_secs(raw.session.idle_timeout_s.max(1)),
                absolute_timeout: Duration::from_secs(raw.session.absolute_timeout_s.max(1)),
                touch_interval: Duration::from_secs(raw.session.touch_interval_s),
            },
            session_cookie_name: raw.session.cookie_name,
            cache: raw.cache.settings(),
            password_workers: raw
                .password_workers
                .unwrap_or_else(default_password_workers)
                .max(1),
            password_queue_timeout: Duration::from_millis(raw.password_queue_timeout_ms),
            trusted_proxies,
            forward_auth: raw.forward_auth,
            forward_auth_tenant,
            throttle: throttle_settings(&raw.throttle),
            tokens: token_config(&raw.tokens)?,
            proxy: proxy_settings(
                raw.proxy,
                raw.proxy_listen.as_deref(),
                raw.proxy_same_origin,
            )?,
            connections: connection_limits(&raw.connections)?,
            routing: routing_settings(&raw.routing)?,
            canary_tick: Duration::from_millis(raw.routing.canary_tick_ms),
            instance_networks: networks(
                &raw.routing.instance_networks,
                "GATEHOUSE_ROUTING__INSTANCE_NETWORKS",
            )?,
        })
    }
}

/// A listen address, or an error naming its setting with an example.
fn socket_addr(raw: &str, setting: &'static str, example: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse().map_err(|_| {
        ConfigError::new(
            setting,
            format!("{raw:?} is not a socket address like {example}"),
        )
    })
}

/// The trusted proxies' addresses and networks.
fn trusted_proxies(raw: &ListOrCsv) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    networks(raw, "GATEHOUSE_TRUSTED_PROXIES")
}

/// A list of addresses and networks, as networks.
fn networks(raw: &ListOrCsv, setting: &'static str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.items()
        .iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        setting,
                        format!("{item:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                    )
                })
        })
        .collect()
}

/// The default forward-auth tenant, checked to be a tenant slug.
fn forward_auth_tenant(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    raw.filter(|t| !t.is_empty())
        .map(|raw_slug| {
            gatehouse_core::TenantSlug::parse(&raw_slug)
                .map(|slug| slug.as_str().to_owned())
                .map_err(|e| ConfigError::new("GATEHOUSE_FORWARD_AUTH_TENANT", e.to_string()))
        })
        .transpose()
}

fn proxy_settings(
    raw: RawProxy,
    listen: Option<&str>,
    same_origin: bool,
) -> Result<ProxySettings, ConfigError> {
    const HOSTS: &str = "GATEHOUSE_PROXY__HOSTS";
    let login_tenant = raw
        .login_tenant
        .filter(|t| !t.is_empty())
        .map(|raw_slug| {
            gatehouse_core::TenantSlug::parse(&raw_slug)
                .map(|slug| slug.as_str().to_owned())
                .map_err(|e| ConfigError::new("GATEHOUSE_PROXY__LOGIN_TENANT", e.to_string()))
        })
        .transpose()?;
    if raw.response_timeout_ms == 0 || raw.connect_timeout_ms == 0 || raw.tunnel_recheck_ms == 0 {
        return Err(ConfigError::new(
            "GATEHOUSE_PROXY__*",
            "connect_timeout_ms, response_timeout_ms and tunnel_recheck_ms must be at least 1",
        ));
    }
    let listen = listen
        .filter(|l| !l.is_empty())
        .map(|l| socket_addr(l, "GATEHOUSE_PROXY_LISTEN", "127.0.0.1:8081"))
        .transpose()?;
    let service = |setting: &'static str, name: &str| {
        gatehouse_core::ServiceName::parse(name.trim())
            .map_err(|e| ConfigError::new(setting, format!("{name:?}: {e}")))
    };
    let mut hosts = std::collections::HashMap::new();
    for pair in raw.hosts.items() {
        let (host, name) = pair.split_once('=').ok_or_else(|| {
            ConfigError::new(
                HOSTS,
                format!("{pair:?} is not host=service (orders.example.com=orders)"),
            )
        })?;
        let host = host.trim().to_ascii_lowercase();
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid_host {
            return Err(ConfigError::new(
                HOSTS,
                format!("{host:?} is not a host name (letters, digits, '-' and '.', no port)"),
            ));
        }
        if hosts.insert(host.clone(), service(HOSTS, name)?).is_some() {
            return Err(ConfigError::new(HOSTS, format!("{host:?} is named twice")));
        }
    }
    if listen.is_some() && hosts.is_empty() {
        return Err(ConfigError::new(
            HOSTS,
            "GATEHOUSE_PROXY_LISTEN is set but no host names a service (orders.example.com=orders)",
        ));
    }
    let encoded_slashes = raw
        .encoded_slashes
        .items()
        .iter()
        .map(|name| service("GATEHOUSE_PROXY__ENCODED_SLASHES", name).map(|s| s.to_string()))
        .collect::<Result<_, _>>()?;
    let mut upgrades = std::collections::HashSet::new();
    for pair in raw.upgrades.items() {
        let (name, protocol) = pair.split_once('=').ok_or_else(|| {
            ConfigError::new(
                "GATEHOUSE_PROXY__UPGRADES",
                format!("{pair:?} is not service=protocol (chat=mqtt)"),
            )
        })?;
        let protocol = protocol.trim().to_ascii_lowercase();
        if protocol.is_empty() || !protocol.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(ConfigError::new(
                "GATEHOUSE_PROXY__UPGRADES",
                format!("{protocol:?} is not a protocol token"),
            ));
        }
        upgrades.insert((
            service("GATEHOUSE_PROXY__UPGRADES", name)?.to_string(),
            protocol,
        ));
    }
    Ok(ProxySettings {
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
        response_timeout: Duration::from_millis(raw.response_timeout_ms),
        max_idle_per_instance: raw.max_idle_per_instance,
        login_tenant,
        listen,
        same_origin,
        hosts,
        encoded_slashes,
        upgrades,
        tunnel_recheck: Duration::from_millis(raw.tunnel_recheck_ms),
    })
}

fn throttle_settings(raw: &RawThrottle) -> gatehouse_ratelimit::ThrottleSettings {
    gatehouse_ratelimit::ThrottleSettings {
        redis_timeout: Duration::from_millis(raw.redis_timeout_ms.clamp(1, 1_000)),
        breaker_open_for: Duration::from_millis(raw.breaker_open_ms),
        expected_instances: raw.expected_instances.max(1),
    }
}

fn token_config(raw: &RawTokens) -> Result<TokenConfig, ConfigError> {
    let signing_alg =
        gatehouse_tokens::SigningAlgorithm::parse(&raw.signing_alg).ok_or_else(|| {
            ConfigError::new(
                "GATEHOUSE_TOKENS__SIGNING_ALG",
                format!("{:?} is not EdDSA, RS256 or ES256", raw.signing_alg),
            )
        })?;
    if !(30..=86_400).contains(&raw.access_ttl_s) {
        return Err(ConfigError::new(
            "GATEHOUSE_TOKENS__ACCESS_TTL_S",
            "must be between 30 and 86400 seconds",
        ));
    }
    if raw.leeway_s > 300 {
        return Err(ConfigError::new(
            "GATEHOUSE_TOKENS__LEEWAY_S",
            "must be at most 300 seconds",
        ));
    }
    if raw.audience.is_empty() {
        return Err(ConfigError::new(
            "GATEHOUSE_TOKENS__AUDIENCE",
            "must not be empty",
        ));
    }
    Ok(TokenConfig {
        audience: raw.audience.clone(),
        access_ttl: Duration::from_secs(raw.access_ttl_s),
        leeway: Duration::from_secs(raw.leeway_s),
        signing_alg,
        rotate_every: (raw.rotate_every_days > 0)
            .then(|| Duration::from_secs(raw.rotate_every_days * 86_400)),
        key_refresh: Duration::from_secs(raw.key_refresh_s.clamp(1, 3600)),
    })
}

/// What `migrate` and `bootstrap` need: only the database (and argon2 cost,
/// and the issuer's origin for the demo tenant's allowed redirects).
#[derive(Debug)]
pub struct DatabaseConfig {
    /// Postgres connection and deadlines.
    pub db: DbSettings,
    /// argon2id cost for seeded passwords.
    pub argon2: Argon2Cost,
    /// `GATEHOUSE_ISSUER` when set.
    pub issuer: Option<url::Url>,
    /// Redis for state, when `REDIS_URL` is set (operator commands that end sessions need it).
    pub redis: Option<RedisSettings>,
    /// Redis for the L2 cache (`REDIS_CACHE_URL`, else `REDIS_URL`): the CLI
    /// raises a changed tenant's cached data version there.
    pub redis_cache: Option<RedisSettings>,
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// Token lifetimes (how long a revocation published by the CLI matters).
    pub tokens: TokenConfig,
}

impl DatabaseConfig {
    /// Loads from the given variables; other settings are not required.
    pub fn load(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let config_file = vars
            .iter()
            .find(|(k, _)| k == env::CONFIG)
            .map(|(_, v)| PathBuf::from(v));
        if let Some(path) = config_file.as_deref().filter(|p| p.is_file()) {
            check_file_keys(path)?;
        }
        let raw: RawSettings = figment(config_file.as_deref(), vars)
            .extract()
            .map_err(|e| ConfigError::new(setting_of(&e), e.to_string()))?;
        let url = raw.database_url.ok_or_else(|| {
            ConfigError::new(
                env::DATABASE_URL,
                "is not set (postgres://user@host:port/db)",
            )
        })?;
        let mut db = DbSettings::from_url(&url).map_err(|e| {
            ConfigError::new(
                env::DATABASE_URL,
                format!("cannot be parsed as a postgres URL: {e}"),
            )
        })?;
        db.acquire_timeout = Duration::from_millis(raw.db.acquire_timeout_ms.max(1));
        db.statement_timeout = Duration::from_millis(raw.db.statement_timeout_ms.max(1));
        db.max_connections = 2;
        let issuer = match raw.issuer {
            Some(i) => Some(
                url::Url::parse(&i).map_err(|e| ConfigError::new(env::ISSUER, e.to_string()))?,
            ),
            None => None,
        };
        let redis = match raw.redis_url {
            Some(url) => Some(redis_settings(env::REDIS_URL, url, &raw.redis)?),
            None => None,
        };
        let redis_cache = match raw.redis_cache_url {
            Some(url) => Some(redis_settings(env::REDIS_CACHE_URL, url, &raw.redis)?),
            None => redis.clone(),
        };
        Ok(Self {
            db,
            argon2: raw.argon2,
            issuer,
            redis,
            redis_cache,
            tokens: token_config(&raw.tokens)?,
            redis_key_prefix: raw.redis_key_prefix,
        })
    }
}

/// Range checks of the plain numeric and naming settings.
fn check_limits(raw: &RawSettings) -> Result<(), ConfigError> {
    if raw.redis_key_prefix.is_empty()
        || raw.redis_key_prefix.len() > 32
        || raw.redis_key_prefix.contains(['{', '}', ' '])
    {
        return Err(ConfigError::new(
            env::REDIS_KEY_PREFIX,
            "must be 1 to 32 characters without braces or spaces",
        ));
    }
    if raw.max_body_bytes < 1024 {
        return Err(ConfigError::new(
            "GATEHOUSE_MAX_BODY_BYTES",
            "must be at least 1024",
        ));
    }
    if raw.max_header_bytes < 1024 {
        return Err(ConfigError::new(
            "GATEHOUSE_MAX_HEADER_BYTES",
            "must be at least 1024",
        ));
    }
    if raw.session.touch_interval_s >= raw.session.idle_timeout_s {
        return Err(ConfigError::new(
            "GATEHOUSE_SESSION__TOUCH_INTERVAL_S",
            "must be shorter than GATEHOUSE_SESSION__IDLE_TIMEOUT_S, or sessions never slide",
        ));
    }
    if raw.session.idle_timeout_s > raw.session.absolute_timeout_s {
        return Err(ConfigError::new(
            "GATEHOUSE_SESSION__IDLE_TIMEOUT_S",
            "must not exceed GATEHOUSE_SESSION__ABSOLUTE_TIMEOUT_S",
        ));
    }
    if let Some(name) = &raw.session.cookie_name
        && (name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        return Err(ConfigError::new(
            "GATEHOUSE_SESSION__COOKIE_NAME",
            "must be non-empty ASCII letters, digits, '_' or '-'",
        ));
    }
    if raw.argon2.memory_kib < 8 * raw.argon2.parallelism.max(1) || raw.argon2.iterations == 0 {
        return Err(ConfigError::new(
            "GATEHOUSE_ARGON2__*",
            "argon2 needs iterations >= 1 and memory_kib >= 8 x parallelism",
        ));
    }

    Ok(())
}

fn redis_settings(
    setting: &'static str,
    url: String,
    raw: &RawRedis,
) -> Result<RedisSettings, ConfigError> {
    let parsed = url::Url::parse(&url)
        .map_err(|e| ConfigError::new(setting, format!("cannot be parsed as a redis URL: {e}")))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(ConfigError::new(
            setting,
            format!("scheme {:?} is not redis:// or rediss://", parsed.scheme()),
        ));
    }
    let mut settings = RedisSettings::new(url);
    settings.connections = raw.connections.max(1);
    settings.command_timeout = Duration::from_millis(raw.command_timeout_ms.max(1));
    settings.connect_timeout = Duration::from_millis(raw.connect_timeout_ms.max(1));
    Ok(settings)
}

fn key_encryption_key(
    inline: Option<SecretString>,
    file: Option<&Path>,
) -> Result<KeyEncryptionKey, ConfigError> {
    let (setting, encoded) = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                env::KEY_ENCRYPTION_KEY,
                format!(
                    "set either it or {}, not both",
                    env::KEY_ENCRYPTION_KEY_FILE
                ),
            ));
        }
        (Some(value), None) => (env::KEY_ENCRYPTION_KEY, value),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    env::KEY_ENCRYPTION_KEY_FILE,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            (env::KEY_ENCRYPTION_KEY_FILE, SecretString::from(text))
        }
        (None, None) => {
            return Err(ConfigError::new(
                env::KEY_ENCRYPTION_KEY,
                format!(
                    "is not set (nor {}); generate one with `openssl rand -base64 32`",
                    env::KEY_ENCRYPTION_KEY_FILE
                ),
            ));
        }
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.expose_secret().trim())
        .map_err(|_| ConfigError::new(setting, "is not valid base64"))?;
    let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        ConfigError::new(setting, format!("must decode to 32 bytes, got {}", b.len()))
    })?;
    Ok(SecretBox::new(Box::new(key)))
}

/// Maps a figment error to the variable a person would change.
fn setting_of(error: &figment::Error) -> &'static str {
    match error.path.first().map(String::as_str) {
        Some("cookie_secure") => env::COOKIE_SECURE,
        Some("log_format") => env::LOG_FORMAT,
        Some("listen") => env::LISTEN,
        Some("metrics_listen") => "GATEHOUSE_METRICS_LISTEN",
        Some("database_url") => env::DATABASE_URL,
        Some("redis_url") => env::REDIS_URL,
        Some("redis_cache_url") => env::REDIS_CACHE_URL,
        Some("issuer") => env::ISSUER,
        Some("db") => "GATEHOUSE_DB__*",
        Some("redis") => "GATEHOUSE_REDIS__*",
        Some("argon2") => "GATEHOUSE_ARGON2__*",
        Some("session") => "GATEHOUSE_SESSION__*",
        Some("trusted_proxies") => "GATEHOUSE_TRUSTED_PROXIES",
        Some("forward_auth") => "GATEHOUSE_FORWARD_AUTH",
        Some("forward_auth_tenant") => "GATEHOUSE_FORWARD_AUTH_TENANT",
        Some("throttle") => "GATEHOUSE_THROTTLE__*",
        Some("cache") => "GATEHOUSE_CACHE__*",
        Some("proxy") => "GATEHOUSE_PROXY__*",
        Some("connections") => "GATEHOUSE_CONNECTIONS__*",
        Some("proxy_listen") => "GATEHOUSE_PROXY_LISTEN",
        Some("proxy_same_origin") => "GATEHOUSE_PROXY_SAME_ORIGIN",
        Some("routing") => "GATEHOUSE_ROUTING__*",
        _ => "GATEHOUSE_*",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEK: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn minimal() -> Vec<(String, String)> {
        vars(&[
            ("DATABASE_URL", "postgres://gh@127.0.0.1:5432/gh"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("GATEHOUSE_KEY_ENCRYPTION_KEY", KEK),
        ])
    }

    fn with(mut base: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
        base.retain(|(k, _)| k != key);
        base.push((key.to_owned(), value.to_owned()));
        base
    }

    fn error_setting(v: &[(String, String)]) -> &'static str {
        Config::load(v).expect_err("must be refused").setting
    }

    #[test]
    fn minimal_configuration_gets_safe_defaults() {
        let c = Config::load(&minimal()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.cookie_secure);
        assert_eq!(c.redis_cache.url, c.redis_state.url);
        assert_eq!(c.issuer.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(c.redis_key_prefix, "gh:");
    }

    #[test]
    fn nested_and_boolean_settings_come_from_env() {
        let v = with(minimal(), "GATEHOUSE_COOKIE_SECURE", "false");
        let v = with(v, "GATEHOUSE_DB__STATEMENT_TIMEOUT_MS", "1234");
        let v = with(v, "REDIS_CACHE_URL", "redis://127.0.0.1:6380");
        let c = Config::load(&v).unwrap();
        assert!(!c.cookie_secure);
        assert_eq!(c.db.statement_timeout, Duration::from_millis(1234));
        assert_ne!(c.redis_cache.url, c.redis_state.url);
    }

    #[test]
    fn each_bad_setting_is_named() {
        assert_eq!(
            error_setting(&with(minimal(), "DATABASE_URL", "mysql://x")),
            "DATABASE_URL"
        );
        assert_eq!(
            error_setting(&with(minimal(), "DATABASE_URL", "::::")),
            "DATABASE_URL"
        );
        assert_eq!(
            error_setting(&with(minimal(), "REDIS_URL", "http://x")),
            "REDIS_URL"
        );
        assert_eq!(
            error_setting(&with(minimal(), "GATEHOUSE_LISTEN", "nowhere")),
            "GATEHOUSE_LISTEN"
        );
        assert_eq!(
            error_setting(&with(minimal(), "GATEHOUSE_ISSUER", "not a url")),
            "GATEHOUSE_ISSUER"
        );
        assert_eq!(
            error_setting(&with(minimal(), "GATEHOUSE_COOKIE_SECURE", "maybe")),
            "GATEHOUSE_COOKIE_SECURE"
        );
        assert_eq!(
            error_setting(&with(
                minimal(),
                "GATEHOUSE_CONFIG",
                "/nonexistent/gatehouse.toml"
            )),
            "GATEHOUSE_CONFIG"
        );
    }

    #[test]
    fn missing_required_settings_are_named() {
        for required in ["DATABASE_URL", "REDIS_URL", "GATEHOUSE_KEY_ENCRYPTION_KEY"] {
            let mut v = minimal();
            v.retain(|(k, _)| k != required);
            assert_eq!(error_setting(&v), required);
        }
    }

    #[test]
    fn forward_auth_names_one_header_family_and_a_valid_default_tenant() {
        let c = Config::load(&minimal()).unwrap();
        assert_eq!(c.forward_auth, ForwardAuthMode::Nginx);
        assert_eq!(c.forward_auth_tenant, None);
        let v = with(
            with(minimal(), "GATEHOUSE_FORWARD_AUTH", "traefik"),
            "GATEHOUSE_FORWARD_AUTH_TENANT",
            "acme",
        );
        let c = Config::load(&v).unwrap();
        assert_eq!(c.forward_auth, ForwardAuthMode::Traefik);
        assert_eq!(c.forward_auth_tenant.as_deref(), Some("acme"));
        let e = Config::load(&with(minimal(), "GATEHOUSE_FORWARD_AUTH", "haproxy")).unwrap_err();
        assert_eq!(e.setting, "GATEHOUSE_FORWARD_AUTH");
        let e = Config::load(&with(
            minimal(),
            "GATEHOUSE_FORWARD_AUTH_TENANT",
            "Not A Slug!",
        ))
        .unwrap_err();
        assert_eq!(e.setting, "GATEHOUSE_FORWARD_AUTH_TENANT");
    }

    #[test]
    fn trusted_proxies_come_as_a_list_or_comma_separated() {
        let v = with(
            minimal(),
            "GATEHOUSE_TRUSTED_PROXIES",
            "10.0.0.0/8, 192.168.1.7",
        );
        let c = Config::load(&v).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.trusted_proxies[1].to_string(), "192.168.1.7/32");
        let bad = with(
            minimal(),
            "GATEHOUSE_TRUSTED_PROXIES",
            "10.0.0.0/8,proxy.local",
        );
        assert_eq!(error_setting(&bad), "GATEHOUSE_TRUSTED_PROXIES");
    }

    #[test]
    fn sessions_must_be_able_to_slide() {
        let v = with(minimal(), "GATEHOUSE_SESSION__IDLE_TIMEOUT_S", "60");
        let v = with(v, "GATEHOUSE_SESSION__TOUCH_INTERVAL_S", "60");
        assert_eq!(error_setting(&v), "GATEHOUSE_SESSION__TOUCH_INTERVAL_S");
        let v = with(minimal(), "GATEHOUSE_SESSION__IDLE_TIMEOUT_S", "90000");
        assert_eq!(error_setting(&v), "GATEHOUSE_SESSION__IDLE_TIMEOUT_S");
    }

    #[test]
    fn key_encryption_key_must_be_32_bytes_of_base64() {
        let short = with(minimal(), "GATEHOUSE_KEY_ENCRYPTION_KEY", "c2hvcnQ=");
        let err = Config::load(&short).unwrap_err();
        assert_eq!(err.setting, "GATEHOUSE_KEY_ENCRYPTION_KEY");
        assert!(err.message.contains("32 bytes"), "{}", err.message);
        let garbage = with(minimal(), "GATEHOUSE_KEY_ENCRYPTION_KEY", "%%%");
        assert_eq!(error_setting(&garbage), "GATEHOUSE_KEY_ENCRYPTION_KEY");
    }

    #[test]
    fn key_encryption_key_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("gh-kek-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kek");
        std::fs::write(&path, format!("{KEK}\n")).unwrap();
        let mut v = minimal();
        v.retain(|(k, _)| k != "GATEHOUSE_KEY_ENCRYPTION_KEY");
        let v = with(
            v,
            "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE",
            path.to_str().unwrap(),
        );
        let c = Config::load(&v).unwrap();
        assert_eq!(c.key_encryption_key.expose_secret()[0], b'0');
        let both = with(v, "GATEHOUSE_KEY_ENCRYPTION_KEY", KEK);
        assert_eq!(error_setting(&both), "GATEHOUSE_KEY_ENCRYPTION_KEY");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_example_file_parses_and_documents_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../gatehouse.example.toml");
        let from_file = Config::load(&with(minimal(), "GATEHOUSE_CONFIG", example)).unwrap();
        let defaults = Config::load(&minimal()).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn bad_token_settings_name_the_setting() {
        for (var, value) in [
            ("GATEHOUSE_TOKENS__SIGNING_ALG", "HS256"),
            ("GATEHOUSE_TOKENS__SIGNING_ALG", "none"),
            ("GATEHOUSE_TOKENS__ACCESS_TTL_S", "5"),
            ("GATEHOUSE_TOKENS__ACCESS_TTL_S", "999999"),
            ("GATEHOUSE_TOKENS__LEEWAY_S", "3600"),
            ("GATEHOUSE_TOKENS__AUDIENCE", ""),
        ] {
            assert_eq!(
                error_setting(&with(minimal(), var, value)),
                var,
                "{var}={value}"
            );
        }
        let c = Config::load(&with(minimal(), "GATEHOUSE_TOKENS__ROTATE_EVERY_DAYS", "0")).unwrap();
        assert!(c.tokens.rotate_every.is_none());
    }

    #[test]
    fn unknown_keys_in_the_config_file_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("gh-cfg-unknown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gatehouse.toml");
        std::fs::write(
            &path,
            "trusted_proxy = \"10.0.0.0/8\"\n[db]\nmax_conections = 3\n",
        )
        .unwrap();
        let v = with(minimal(), "GATEHOUSE_CONFIG", path.to_str().unwrap());
        let e = Config::load(&v).unwrap_err();
        assert_eq!(e.setting, "GATEHOUSE_CONFIG");
        assert!(e.message.contains("trusted_proxy"), "{}", e.message);
        assert!(e.message.contains("db.max_conections"), "{}", e.message);
        let e = DatabaseConfig::load(&with(
            vec![(
                "DATABASE_URL".to_owned(),
                "postgres://x@127.0.0.1/db".to_owned(),
            )],
            "GATEHOUSE_CONFIG",
            path.to_str().unwrap(),
        ))
        .unwrap_err();
        assert!(e.message.contains("trusted_proxy"), "{}", e.message);
        std::fs::write(&path, "listen = [\n").unwrap();
        let e = Config::load(&v).unwrap_err();
        assert_eq!(
            e.setting, "GATEHOUSE_CONFIG",
            "a malformed file names the file"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn env_overrides_the_config_file() {
        let dir = std::env::temp_dir().join(format!("gh-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gatehouse.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nlog = \"debug\"\n[db]\nmax_connections = 3\n",
        )
        .unwrap();
        let v = with(minimal(), "GATEHOUSE_CONFIG", path.to_str().unwrap());
        let v = with(v, "GATEHOUSE_LISTEN", "127.0.0.1:9001");
        let c = Config::load(&v).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.log_filter, "debug");
        assert_eq!(c.db.max_connections, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
