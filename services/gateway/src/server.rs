//! Start-up and shutdown of `gatehouse serve`.
//!
//! [`Application::build`] checks every dependency before it binds, so a bad
//! setting stops start-up with a message naming it; [`Application::run_until_stopped`]
//! serves until the caller's shutdown future resolves, then drains in-flight
//! requests for at most the configured grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_redis::{RedisError, RedisPool, RedisSettings};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use secrecy::ExposeSecret as _;

use crate::auth::cookies::CookieSettings;
use crate::auth::csrf::CsrfKey;
use crate::config::HttpSettings;
use crate::config::{Config, env};
use crate::state::{AppParts, AppState, AuthState};
use gatehouse_app::devices::DeviceKey;
use gatehouse_app::login::LoginService;
use gatehouse_app::passwords::PasswordPool;

/// Why `serve` could not start; `setting()` names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Postgres did not answer.
    #[error("cannot reach Postgres at {address}: {reason}")]
    Database {
        /// Host and port, without credentials.
        address: String,
        /// What failed.
        reason: String,
    },
    /// Applying migrations failed.
    #[error("applying migrations failed: {0}")]
    Migrate(String),
    /// The apps' listener could not be bound.
    #[error("cannot listen on {address} (GATEHOUSE_PROXY_LISTEN): {reason}")]
    AppsBind {
        /// The address.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A Redis server did not answer.
    #[error("cannot reach Redis at {address}: {reason}")]
    Redis {
        /// `REDIS_URL` or `REDIS_CACHE_URL`.
        setting: &'static str,
        /// Host and port, without credentials.
        address: String,
        /// What failed.
        reason: String,
    },
    /// The argon2 parameters are unusable.
    #[error("invalid argon2 parameters: {0}")]
    Argon2(String),
    /// The signing keys could not be loaded (typically: the key-encryption
    /// key is not the one they were sealed with).
    #[error("cannot load signing keys: {0}")]
    Keys(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {reason}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The metrics listen address could not be bound.
    #[error("cannot listen for metrics on {address}: {reason}")]
    MetricsBind {
        /// The address.
        address: SocketAddr,
        /// What failed.
        reason: String,
    },
}

impl StartupError {
    /// The configuration variable an operator should look at.
    #[must_use]
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Database { .. } | Self::Migrate(_) => env::DATABASE_URL,
            Self::Redis { setting, .. } => setting,
            Self::Bind { .. } => env::LISTEN,
            Self::MetricsBind { .. } => "GATEHOUSE_METRICS_LISTEN",
            Self::AppsBind { .. } => "GATEHOUSE_PROXY_LISTEN",
            Self::Argon2(_) => "GATEHOUSE_ARGON2__*",
            Self::Keys(_) => env::KEY_ENCRYPTION_KEY,
        }
    }
}

/// How long a sign-in handshake code may wait for the app's origin to redeem it.
const HANDSHAKE_LIFETIME: Duration = Duration::from_secs(60);

/// A bound, ready-to-run gateway.
pub struct Application {
    metrics_listener: TcpListener,
    listener: TcpListener,
    /// The apps' own-origin listener (`GATEHOUSE_PROXY_LISTEN`), if any.
    apps_listener: Option<TcpListener>,
    connections: crate::listener::ConnectionLimits,
    state: AppState,
    shutdown_grace: Duration,
    canary_tick: Duration,
}

impl Application {
    /// Connects to Postgres and Redis (failing fast if either does not answer),
    /// applies migrations if configured, and binds the listener.
    pub async fn build(config: &Config, metrics: PrometheusHandle) -> Result<Self, StartupError> {
        Self::build_with_clock(config, metrics, Arc::new(gatehouse_core::SystemClock)).await
    }

    /// [`Application::build`] with the time source given: in-process tests
    /// pass a manual clock and move it instead of sleeping.
    pub async fn build_with_clock(
        config: &Config,
        metrics: PrometheusHandle,
        clock: Arc<dyn gatehouse_core::Clock>,
    ) -> Result<Self, StartupError> {
        let (db, redis, redis_cache) = connect_stores(config).await?;
        let (listener, metrics_listener, apps_listener) = bind_listeners(config).await?;

        let auth = auth_state(config, &db, &redis, clock)?;
        let tokens = gatehouse_app::tokens::TokenService::start(
            db.clone(),
            gatehouse_app::tokens::kek_from(&config.key_encryption_key),
            config.tokens.clone(),
            &config.issuer,
            auth.clock.clone(),
        )
        .await
        .map_err(|e| StartupError::Keys(e.to_string()))?;
        let (directory, clients, revocations, routing) =
            wire_cache_and_events(config, &db, &redis, redis_cache.as_ref(), &auth).await?;
        let revocations = Arc::new(revocations);
        let tokens = Arc::new(tokens);
        let relay = Arc::new(gatehouse_app::outbox::Relay::new(
            db.clone(),
            revocations.stream().clone(),
            directory.clone(),
            gatehouse_app::outbox::RelaySettings::default(),
        ));
        let admission = Arc::new(gatehouse_app::admission::Admission::new(
            directory.clone(),
            auth.sessions.clone(),
            tokens.clone(),
            revocations.clone(),
            auth.clock.clone(),
        ));
        let gate = Arc::new(crate::auth::gate::SessionGate {
            admission: Arc::clone(&admission),
            cookies: auth.cookies.clone(),
            issuer: auth.issuer.clone(),
            failures: crate::auth::failures::FailedPresentations::default(),
        });
        let app_sessions = app_sessions(config, &redis, &admission);
        let authz = Arc::new(gatehouse_app::authz::AuthzService::new(directory.clone()));
        let refresher = gatehouse_app::refresh::Refresher::new(
            auth.refresh.clone(),
            Arc::clone(&admission),
            Arc::clone(&tokens),
            Arc::clone(&authz),
            db.clone(),
            auth.clock.clone(),
        );
        let authz_admin = gatehouse_app::authz_admin::AuthzAdmin::new(
            db.clone(),
            directory.clone(),
            relay.clone(),
        );
        let state = AppState::new(AppParts {
            refresher,
            readiness: crate::state::ReadinessMemo::default(),
            denials: crate::audit::DenialAudit::default(),
            app_sessions,
            revocations,
            tokens,
            admission,
            gate,
            clients,
            authz,
            directory,
            relay,
            routing,
            routing_admin: gatehouse_app::routing_admin::RoutingAdmin::new(db.clone()),
            authz_admin,
            db,
            redis,
            redis_cache,
            metrics,
            auth: Arc::new(auth),
            http: Arc::new(http_settings(
                config,
                &listener,
                &metrics_listener,
                apps_listener.as_ref(),
            )),
        });
        Ok(Self {
            metrics_listener,
            listener,
            apps_listener,
            connections: config.connections,
            state,
            shutdown_grace: config.shutdown_grace,
            canary_tick: config.canary_tick,
        })
    }

    /// The whole HTTP application over this instance's state, for driving it
    /// in process with `oneshot` (no socket: the client address is unknown).
    pub fn router(&self) -> axum::Router {
        crate::app(self.state.clone())
    }

    /// The apps' listener's bound address, when it is configured.
    pub fn apps_addr(&self) -> Option<SocketAddr> {
        self.apps_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// for at most the grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        let gauge_task = tokio::spawn(report_active_sessions(self.state.auth.sessions.clone()));
        let keys_task = tokio::spawn(refresh_keys(self.state.tokens.clone()));
        let upkeep_task = tokio::spawn(metrics_upkeep(self.state.metrics.clone()));
        let _relay = self.state.relay.spawn();
        let cache_gauges = tokio::spawn(report_cache_sizes(self.state.directory.clone()));
        let routing_task = self.state.routing.spawn_resync();
        let routing_upkeep = self.state.routing.spawn_upkeep();
        let canary_task = Arc::new(gatehouse_app::canary::CanaryController::new(
            self.state.db.clone(),
            self.state.routing.clone(),
            self.canary_tick,
        ))
        .spawn();
        let metrics_addr = self.metrics_listener.local_addr()?;
        let metrics_task = tokio::spawn({
            let router = crate::app::metrics_app(self.state.clone());
            let listener = self.metrics_listener;
            async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            }
        });
        tracing::info!(addr = %metrics_addr, "metrics listening");
        tracing::info!(addr = %addr, "listening");
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut stop_rx = stop_rx.clone();
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }
        };
        let apps_task = self.apps_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(addr = %addr, "apps listening (each app on its own origin)");
            }
            let router = crate::proxy::apps_router(self.state.clone());
            tokio::spawn(crate::listener::serve(
                listener,
                router,
                self.connections,
                "apps",
                stopped(),
            ))
        });
        let router = crate::app(self.state);
        let server = crate::listener::serve(
            self.listener,
            router,
            self.connections,
            "main",
            async move {
                shutdown.await;
                tracing::info!("shutdown requested; draining in-flight requests");
                let _ = stop_tx.send(true);
                notify.notify_one();
            },
        );
        let grace = self.shutdown_grace;
        let result = tokio::select! {
            () = server => Ok(()),
            () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                    "grace period over; closing remaining connections");
                Ok(())
            }
        };
        if let Some(task) = apps_task {
            task.abort();
        }
        gauge_task.abort();
        metrics_task.abort();
        keys_task.abort();
        upkeep_task.abort();
        cache_gauges.abort();
        routing_task.abort();
        routing_upkeep.abort();
        canary_task.abort();
        result
    }
}

/// Binds the public, the metrics and (when configured) the apps listener.
async fn bind_listeners(
    config: &Config,
) -> Result<(TcpListener, TcpListener, Option<TcpListener>), StartupError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartupError::Bind {
            address: config.listen,
            reason: e.to_string(),
        })?;
    let apps_listener = match config.proxy.listen {
        Some(address) => {
            Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|e| StartupError::AppsBind {
                        address,
                        reason: e.to_string(),
                    })?,
            )
        }
        None => None,
    };
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| StartupError::MetricsBind {
            address: config.metrics_listen,
            reason: e.to_string(),
        })?;
    Ok((listener, metrics_listener, apps_listener))
}

/// Handshakes and host-scoped sessions for apps on their own origin.
fn app_sessions(
    config: &Config,
    redis: &RedisPool,
    admission: &Arc<gatehouse_app::admission::Admission>,
) -> Arc<gatehouse_app::app_sessions::AppSessions> {
    Arc::new(gatehouse_app::app_sessions::AppSessions::new(
        gatehouse_session::Handshakes::new(
            redis.clone(),
            gatehouse_redis::Keyspace::new(config.redis_key_prefix.clone()),
            HANDSHAKE_LIFETIME,
        ),
        config.key_encryption_key.expose_secret(),
        Arc::clone(admission),
    ))
}

/// The HTTP settings, with the addresses actually bound (a port 0 in the
/// configuration is known only now): no instance may be one of them.
fn http_settings(
    config: &Config,
    listener: &TcpListener,
    metrics_listener: &TcpListener,
    apps_listener: Option<&TcpListener>,
) -> HttpSettings {
    HttpSettings {
        own_listeners: [
            listener.local_addr().ok(),
            metrics_listener.local_addr().ok(),
            apps_listener.and_then(|l| l.local_addr().ok()),
        ]
        .into_iter()
        .flatten()
        .collect(),
        ..HttpSettings::from_config(config)
    }
}

/// The tiered cache, the service clients and the revocation mirror, whose
/// tailer also feeds the cache's invalidation consumer.
async fn wire_cache_and_events(
    config: &Config,
    db: &sqlx::PgPool,
    redis: &RedisPool,
    redis_cache: Option<&RedisPool>,
    auth: &AuthState,
) -> Result<
    (
        Arc<gatehouse_app::directory::Directory>,
        Arc<gatehouse_app::clients::ServiceClients>,
        gatehouse_app::revocation::Revocations,
        Arc<gatehouse_app::routing::Routing>,
    ),
    StartupError,
> {
    let keys = gatehouse_redis::Keyspace::new(config.redis_key_prefix.clone());
    let directory = Arc::new(gatehouse_app::directory::Directory::new(
        db.clone(),
        Some(gatehouse_cache::RemoteTier::new(
            redis_cache.unwrap_or(redis).clone(),
            keys.clone(),
        )),
        config.cache.clone(),
    ));
    let clients = Arc::new(gatehouse_app::clients::ServiceClients::new(
        db.clone(),
        auth.login.passwords().clone(),
    ));
    let routing = Arc::new(gatehouse_app::routing::Routing::new(
        db.clone(),
        gatehouse_routing::RoutingStore::new(redis.clone(), keys.clone(), config.routing.clone()),
        gatehouse_routing::Strategy::Weighted,
        auth.clock.clone(),
    ));
    let invalidation: Arc<dyn gatehouse_events::EventConsumer> =
        Arc::new(gatehouse_app::outbox::Invalidation::new(
            directory.clone(),
            clients.clone(),
            Some(routing.clone()),
        ));
    let revocations = gatehouse_app::revocation::Revocations::start(
        auth.sessions.clone(),
        redis.clone(),
        keys,
        &config.tokens,
        vec![invalidation],
        auth.clock.clone(),
    )
    .await
    .map_err(|e| StartupError::Redis {
        setting: env::REDIS_URL,
        address: config.redis_state.redacted_address(),
        reason: e.to_string(),
    })?;
    Ok((directory, clients, revocations, routing))
}

/// Publishes each L1 tier's entries and weighted bytes every 5 s
/// (`gatehouse_cache_l1_entries`, `gatehouse_cache_l1_bytes`).
async fn report_cache_sizes(directory: Arc<gatehouse_app::directory::Directory>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for (cache, entries, bytes) in directory.l1_usage().await {
            #[allow(clippy::cast_precision_loss, reason = "a gauge")]
            {
                metrics::gauge!("gatehouse_cache_l1_entries", "cache" => cache).set(entries as f64);
                metrics::gauge!("gatehouse_cache_l1_bytes", "cache" => cache).set(bytes as f64);
            }
        }
    }
}

/// Folds recorded histogram samples into their buckets every few seconds.
/// The recorder buffers every sample until upkeep (or a scrape) drains it, so
/// without this a gateway nobody scrapes grows by every request it serves.
async fn metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

/// Postgres (migrated when configured), Redis for state, and Redis for the
/// cache when it is another server.
async fn connect_stores(
    config: &Config,
) -> Result<(sqlx::PgPool, RedisPool, Option<RedisPool>), StartupError> {
    let db_address = format!(
        "{}:{}",
        config.db.connect.get_host(),
        config.db.connect.get_port()
    );
    let db = gatehouse_store::connect(&config.db)
        .await
        .map_err(|e| StartupError::Database {
            address: db_address.clone(),
            reason: e.to_string(),
        })?;
    if config.migrate_on_start {
        gatehouse_store::migrate(&db)
            .await
            .map_err(|e| StartupError::Migrate(e.to_string()))?;
    }

    let redis = connect_redis(env::REDIS_URL, &config.redis_state).await?;
    let redis_cache = if config.redis_cache.url == config.redis_state.url {
        None
    } else {
        Some(connect_redis(env::REDIS_CACHE_URL, &config.redis_cache).await?)
    };

    Ok((db, redis, redis_cache))
}

/// Sessions, sign-in, throttling, cookies and CSRF, wired from the config.
fn auth_state(
    config: &Config,
    db: &sqlx::PgPool,
    redis: &RedisPool,
    clock: Arc<dyn gatehouse_core::Clock>,
) -> Result<AuthState, StartupError> {
    let sessions = gatehouse_session::SessionStore::new(
        redis.clone(),
        gatehouse_redis::Keyspace::new(config.redis_key_prefix.clone()),
        clock.clone(),
        config.session,
    );
    let hasher = gatehouse_core::PasswordHasher::new(config.argon2)
        .map_err(|e| StartupError::Argon2(e.to_string()))?;
    let passwords = PasswordPool::new(
        hasher,
        config.password_workers,
        config.password_queue_timeout,
    );
    let devices = DeviceKey::derive(config.key_encryption_key.expose_secret());
    let throttle = gatehouse_ratelimit::Throttle::new(
        redis.clone(),
        gatehouse_redis::Keyspace::new(config.redis_key_prefix.clone()),
        clock.clone(),
        config.throttle,
    );
    let auth = AuthState {
        login: LoginService::new(
            db.clone(),
            sessions.clone(),
            passwords,
            throttle.clone(),
            devices.clone(),
            clock.clone(),
        ),
        devices,
        throttle,
        refresh: gatehouse_session::RefreshStore::new(
            redis.clone(),
            gatehouse_redis::Keyspace::new(config.redis_key_prefix.clone()),
            clock.clone(),
            gatehouse_session::RefreshKey::derive(config.key_encryption_key.expose_secret()),
            gatehouse_session::RefreshLimits::default(),
        ),
        sessions,
        csrf: CsrfKey::derive(config.key_encryption_key.expose_secret()),
        cookies: CookieSettings::new(config.session_cookie_name.clone(), config.cookie_secure),
        issuer: config.issuer.clone(),
        clock,
    };
    Ok(auth)
}

/// Reloads the key ring and runs key maintenance every refresh period, so a
/// rotation by any instance (or the CLI) reaches this one within a period.
async fn refresh_keys(tokens: Arc<gatehouse_app::tokens::TokenService>) {
    let mut tick = tokio::time::interval(tokens.refresh_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match tokens.refresh().await {
            Ok(report) if report.changed() => tracing::info!(
                rotated = report.rotated,
                generated = ?report.generated,
                retired = ?report.retired,
                "signing keys changed"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reloading signing keys failed; keeping the loaded ones");
            }
        }
    }
}

async fn connect_redis(
    setting: &'static str,
    settings: &RedisSettings,
) -> Result<RedisPool, StartupError> {
    let fail = |reason: String| StartupError::Redis {
        setting,
        address: settings.redacted_address(),
        reason,
    };
    let pool = RedisPool::new(settings).map_err(|e| fail(e.to_string()))?;
    // A start-up check may wait longer than a request would: a server that is
    // just coming up gets a few attempts.
    let mut last = RedisError::Timeout(settings.command_timeout);
    for attempt in 0..3u32 {
        match pool.warm_up().await {
            Ok(()) => return Ok(pool),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1))).await;
    }
    Err(fail(last.to_string()))
}

/// Refreshes the `gatehouse_sessions_active` gauge every 15 s. The figure is
/// approximate: sessions not ended and not past their absolute deadline (an
/// idled-out session counts until its absolute deadline). See
/// `SessionStore::count_active`.
async fn report_active_sessions(sessions: gatehouse_session::SessionStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        match sessions.count_active().await {
            #[allow(
                clippy::cast_precision_loss,
                reason = "a gauge; precision beyond 2^53 sessions is moot"
            )]
            Ok(count) => metrics::gauge!("gatehouse_sessions_active").set(count as f64),
            Err(e) => tracing::debug!(error = %e, "active session count unavailable"),
        }
    }
}
