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

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use secrecy::ExposeSecret as _;

use crate::auth::cookies::CookieSettings;
use crate::auth::csrf::CsrfKey;
use crate::config::HttpSettings;
use crate::config::{Config, env};
use crate::state::{AppParts, AppState, AuthState};

/// Why `serve` could not start; `setting()` names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A store could not be reached or set up, or the keys not loaded.
    #[error(transparent)]
    Services(#[from] gatehouse_app::services::BuildError),
    /// The apps' listener could not be bound.
    #[error("cannot listen on {address} (GATEHOUSE_PROXY_LISTEN): {reason}")]
    AppsBind {
        /// The address.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
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
        use gatehouse_app::services::BuildError;
        match self {
            Self::Services(BuildError::Database { .. } | BuildError::Migrate(_)) => {
                env::DATABASE_URL
            }
            Self::Services(BuildError::Redis { cache: false, .. }) => env::REDIS_URL,
            Self::Services(BuildError::Redis { cache: true, .. }) => env::REDIS_CACHE_URL,
            Self::Services(BuildError::Argon2(_)) => "GATEHOUSE_ARGON2__*",
            Self::Services(BuildError::Keys(_)) => env::KEY_ENCRYPTION_KEY,
            Self::Bind { .. } => env::LISTEN,
            Self::MetricsBind { .. } => "GATEHOUSE_METRICS_LISTEN",
            Self::AppsBind { .. } => "GATEHOUSE_PROXY_LISTEN",
        }
    }
}

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
        let services = gatehouse_app::services::Services::build(
            &config.services(),
            &config.key_encryption_key,
            clock,
        )
        .await?;
        let (listener, metrics_listener, apps_listener) = bind_listeners(config).await?;
        let auth = AuthState {
            login: services.login,
            refresh: services.refresh,
            sessions: services.sessions,
            csrf: CsrfKey::derive(config.key_encryption_key.expose_secret()),
            cookies: CookieSettings::new(config.session_cookie_name.clone(), config.cookie_secure),
            issuer: config.issuer.clone(),
            clock: services.clock,
            devices: services.devices,
            throttle: services.throttle,
        };
        let admission = services.admission;
        let gate = Arc::new(crate::auth::gate::SessionGate {
            admission: Arc::clone(&admission),
            cookies: auth.cookies.clone(),
            issuer: auth.issuer.clone(),
            failures: crate::auth::failures::FailedPresentations::default(),
        });
        let state = AppState::new(AppParts {
            refresher: services.refresher,
            readiness: crate::state::ReadinessMemo::default(),
            denials: crate::audit::DenialAudit::default(),
            app_sessions: services.app_sessions,
            revocations: services.revocations,
            tokens: services.tokens,
            admission,
            gate,
            clients: services.clients,
            authz: services.authz,
            directory: services.directory,
            relay: services.relay,
            routing: services.routing,
            routing_admin: services.routing_admin,
            authz_admin: services.authz_admin,
            db: services.db,
            redis: services.redis,
            redis_cache: services.redis_cache,
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

/// Refreshes the `gatehouse_sessions_active` gauge every 15 s. The figure is
/// approximate: sessions not ended and not past their absolute deadline (an
/// idled-out session counts until its absolute deadline). See
/// `SessionStore::count_active`.
async fn report_active_sessions(sessions: gatehouse_app::services::Sessions) {
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
