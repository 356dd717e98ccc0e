//! The one composition root: every store connection and application service
//! of a gateway, built once from [`Settings`] and a clock. `serve` builds it
//! whole ([`Services::build`]); the CLI's commands build the parts they need
//! with the functions below, so no caller wires a store by hand.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{Argon2Cost, Clock};
use gatehouse_redis::{Keyspace, RedisError, RedisPool, RedisSettings};
use gatehouse_session::{SessionConfig, SessionStore};
use gatehouse_store::DbSettings;
use secrecy::ExposeSecret as _;
use sqlx::PgPool;

/// Handles of the stores' own clients, for what the gateway does with them
/// directly (readiness pings, background gauges, the session store's count).
pub use gatehouse_ratelimit::{Throttle, ThrottleSettings};
pub use gatehouse_redis::RedisPool as Redis;
pub use gatehouse_session::{RefreshStore, SessionStore as Sessions};

use crate::admission::Admission;
use crate::app_sessions::AppSessions;
use crate::authz::AuthzService;
use crate::authz_admin::AuthzAdmin;
use crate::clients::ServiceClients;
use crate::devices::DeviceKey;
use crate::directory::{Directory, DirectorySettings};
use crate::login::LoginService;
use crate::outbox::{Invalidation, Relay, RelaySettings};
use crate::passwords::PasswordPool;
use crate::refresh::Refresher;
use crate::revocation::Revocations;
use crate::routing::Routing;
use crate::routing_admin::RoutingAdmin;
use crate::tokens::{KeyEncryptionKey, TokenConfig, TokenService};

/// How long a sign-in handshake code may wait for the app's origin.
const HANDSHAKE_LIFETIME: Duration = Duration::from_secs(60);

/// What the services are built from (the gateway reads it from its
/// configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Postgres.
    pub db: DbSettings,
    /// Apply pending migrations when connecting.
    pub migrate_on_start: bool,
    /// Redis for state (sessions, counters, revocations, routing).
    pub redis_state: RedisSettings,
    /// Redis for the L2 cache (the same server when its URL is the same).
    pub redis_cache: RedisSettings,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Session lifetimes.
    pub session: SessionConfig,
    /// argon2 parameters.
    pub argon2: Argon2Cost,
    /// Hashing threads.
    pub password_workers: usize,
    /// Longest wait for a hashing thread.
    pub password_queue_timeout: Duration,
    /// Sign-in throttles.
    pub throttle: ThrottleSettings,
    /// Access tokens.
    pub tokens: TokenConfig,
    /// Our public base URL (`iss`).
    pub issuer: url::Url,
    /// The tiered cache.
    pub cache: DirectorySettings,
    /// Instance selection.
    pub routing: gatehouse_routing::SelectSettings,
}

/// Which store could not be reached or set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
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
    /// A Redis server did not answer.
    #[error("cannot reach Redis at {address}: {reason}")]
    Redis {
        /// The cache's server (`true`) or the state's.
        cache: bool,
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
}

/// Every store client and application service of one gateway.
pub struct Services {
    /// Postgres: the source of truth.
    pub db: PgPool,
    /// Redis for state.
    pub redis: RedisPool,
    /// Redis for the cache, when it is another server.
    pub redis_cache: Option<RedisPool>,
    /// Sessions in Redis.
    pub sessions: SessionStore,
    /// Refresh-token families.
    pub refresh: RefreshStore,
    /// Password sign-in and password changes.
    pub login: LoginService,
    /// Known-device proofs.
    pub devices: DeviceKey,
    /// Sign-in throttles.
    pub throttle: Throttle,
    /// Access tokens: key ring, issue, verify.
    pub tokens: Arc<TokenService>,
    /// Cached reads of tenants, users and rules.
    pub directory: Arc<Directory>,
    /// Service-client credentials.
    pub clients: Arc<ServiceClients>,
    /// Revocation: publishing and the in-process mirror.
    pub revocations: Arc<Revocations>,
    /// Grey routing.
    pub routing: Arc<Routing>,
    /// The outbox relay.
    pub relay: Arc<Relay>,
    /// Admission and the ending of sessions.
    pub admission: Arc<Admission>,
    /// Authorisation decisions.
    pub authz: Arc<AuthzService>,
    /// Spending refresh tokens.
    pub refresher: Refresher,
    /// Routing's admin operations.
    pub routing_admin: RoutingAdmin,
    /// Authorisation data's admin operations.
    pub authz_admin: AuthzAdmin,
    /// Handshakes and host-scoped sessions for apps on their own origin.
    pub app_sessions: Arc<AppSessions>,
    /// The time source everything above reads.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    /// Connects the stores (migrating when configured), loads the signing
    /// keys (generating the first ones on a fresh install) and wires every
    /// service.
    pub async fn build(
        settings: &Settings,
        kek: &KeyEncryptionKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        let (db, redis, redis_cache) = connect_stores(settings).await?;
        let keys = Keyspace::new(settings.key_prefix.clone());
        let sign_in = SignIn::wire(settings, kek, &db, &redis, &keys, &clock)?;
        let tokens = Arc::new(
            TokenService::start(
                db.clone(),
                crate::tokens::kek_from(kek),
                settings.tokens.clone(),
                &settings.issuer,
                clock.clone(),
            )
            .await
            .map_err(|e| BuildError::Keys(e.to_string()))?,
        );
        let cache_redis = redis_cache.as_ref().unwrap_or(&redis).clone();
        let directory = directory(settings, &db, cache_redis, &keys);
        let clients = Arc::new(ServiceClients::new(db.clone(), sign_in.passwords.clone()));
        let routing = Arc::new(Routing::new(
            db.clone(),
            gatehouse_routing::RoutingStore::new(
                redis.clone(),
                keys.clone(),
                settings.routing.clone(),
            ),
            gatehouse_routing::Strategy::Weighted,
            clock.clone(),
        ));
        let invalidation: Arc<dyn gatehouse_events::EventConsumer> = Arc::new(Invalidation::new(
            directory.clone(),
            clients.clone(),
            Some(routing.clone()),
        ));
        let revocations = Arc::new(
            Revocations::start(
                sign_in.sessions.clone(),
                redis.clone(),
                keys.clone(),
                &settings.tokens,
                vec![invalidation],
                clock.clone(),
            )
            .await
            .map_err(|e| BuildError::Redis {
                cache: false,
                address: settings.redis_state.redacted_address(),
                reason: e.to_string(),
            })?,
        );
        let relay = Arc::new(Relay::new(
            db.clone(),
            revocations.stream().clone(),
            directory.clone(),
            RelaySettings::default(),
        ));
        let admission = Arc::new(Admission::new(
            directory.clone(),
            sign_in.sessions.clone(),
            tokens.clone(),
            revocations.clone(),
            clock.clone(),
        ));
        let authz = Arc::new(AuthzService::new(directory.clone()));
        Ok(Self {
            refresher: Refresher::new(
                sign_in.refresh.clone(),
                admission.clone(),
                tokens.clone(),
                authz.clone(),
                db.clone(),
                clock.clone(),
            ),
            app_sessions: Arc::new(AppSessions::new(
                gatehouse_session::Handshakes::new(redis.clone(), keys, HANDSHAKE_LIFETIME),
                kek.expose_secret(),
                admission.clone(),
            )),
            routing_admin: RoutingAdmin::new(db.clone()),
            authz_admin: AuthzAdmin::new(db.clone(), directory.clone(), relay.clone()),
            db,
            redis,
            redis_cache,
            sessions: sign_in.sessions,
            refresh: sign_in.refresh,
            login: sign_in.login,
            devices: sign_in.devices,
            throttle: sign_in.throttle,
            tokens,
            directory,
            clients,
            revocations,
            routing,
            relay,
            admission,
            authz,
            clock,
        })
    }
}

/// The tiered cache over Postgres, with its L2 in `redis`.
fn directory(
    settings: &Settings,
    db: &PgPool,
    redis: RedisPool,
    keys: &Keyspace,
) -> Arc<Directory> {
    Arc::new(Directory::new(
        db.clone(),
        Some(gatehouse_cache::RemoteTier::new(redis, keys.clone())),
        settings.cache.clone(),
    ))
}

/// Sessions, refresh families, sign-in and its throttles.
struct SignIn {
    sessions: SessionStore,
    refresh: RefreshStore,
    passwords: PasswordPool,
    login: LoginService,
    devices: DeviceKey,
    throttle: Throttle,
}

impl SignIn {
    fn wire(
        settings: &Settings,
        kek: &KeyEncryptionKey,
        db: &PgPool,
        redis: &RedisPool,
        keys: &Keyspace,
        clock: &Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        let sessions =
            SessionStore::new(redis.clone(), keys.clone(), clock.clone(), settings.session);
        let hasher = gatehouse_core::PasswordHasher::new(settings.argon2)
            .map_err(|e| BuildError::Argon2(e.to_string()))?;
        let passwords = PasswordPool::new(
            hasher,
            settings.password_workers,
            settings.password_queue_timeout,
        );
        let devices = DeviceKey::derive(kek.expose_secret());
        let throttle = Throttle::new(
            redis.clone(),
            keys.clone(),
            clock.clone(),
            settings.throttle,
        );
        let login = LoginService::new(
            db.clone(),
            sessions.clone(),
            passwords.clone(),
            throttle.clone(),
            devices.clone(),
            clock.clone(),
        );
        let refresh = RefreshStore::new(
            redis.clone(),
            keys.clone(),
            clock.clone(),
            gatehouse_session::RefreshKey::derive(kek.expose_secret()),
            gatehouse_session::RefreshLimits::default(),
        );
        Ok(Self {
            sessions,
            refresh,
            passwords,
            login,
            devices,
            throttle,
        })
    }
}

/// Postgres (migrated when configured), Redis for state, and Redis for the
/// cache when it is another server.
async fn connect_stores(
    settings: &Settings,
) -> Result<(PgPool, RedisPool, Option<RedisPool>), BuildError> {
    let db = connect_database(&settings.db).await?;
    if settings.migrate_on_start {
        migrate(&db).await?;
    }
    let redis = connect_redis(&settings.redis_state, false).await?;
    let redis_cache = if settings.redis_cache.url == settings.redis_state.url {
        None
    } else {
        Some(connect_redis(&settings.redis_cache, true).await?)
    };
    Ok((db, redis, redis_cache))
}

/// Connects to Postgres (what the CLI's database commands need).
pub async fn connect_database(settings: &DbSettings) -> Result<PgPool, BuildError> {
    gatehouse_store::connect(settings)
        .await
        .map_err(|e| BuildError::Database {
            address: format!(
                "{}:{}",
                settings.connect.get_host(),
                settings.connect.get_port()
            ),
            reason: e.to_string(),
        })
}

/// Applies pending migrations.
pub async fn migrate(db: &PgPool) -> Result<(), BuildError> {
    gatehouse_store::migrate(db)
        .await
        .map_err(|e| BuildError::Migrate(e.to_string()))
}

/// A Redis client that has answered once: a server that is just coming up
/// gets a few attempts.
async fn connect_redis(settings: &RedisSettings, cache: bool) -> Result<RedisPool, BuildError> {
    let fail = |reason: String| BuildError::Redis {
        cache,
        address: settings.redacted_address(),
        reason,
    };
    let pool = RedisPool::new(settings).map_err(|e| fail(e.to_string()))?;
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

/// What `gatehouse user ...` needs to end a user's sessions: the session
/// store and a revocation writer on `redis` (no tailer).
pub fn user_revocations(
    redis: &RedisSettings,
    key_prefix: &str,
    tokens: &TokenConfig,
    clock: Arc<dyn Clock>,
) -> Result<Revocations, RedisError> {
    let redis = RedisPool::new(redis)?;
    let sessions = SessionStore::new(
        redis.clone(),
        Keyspace::new(key_prefix.to_owned()),
        clock.clone(),
        SessionConfig::default(),
    );
    Ok(Revocations::writer(
        sessions,
        redis,
        Keyspace::new(key_prefix.to_owned()),
        tokens,
        clock,
    ))
}

/// Publishes every unpublished outbox row now (what a CLI change does so
/// running gateways apply it at once; they would also find the rows on their
/// next relay pass), through `revocations`'s event stream and raising the
/// L2 versions in the cache's Redis (`cache`, when it is another server).
pub async fn publish_outbox_now(
    db: PgPool,
    revocations: &Revocations,
    cache: Option<&RedisSettings>,
    key_prefix: &str,
) -> Result<u64, PublishError> {
    let cache_tier = match cache {
        Some(settings) => Some(gatehouse_cache::RemoteTier::new(
            RedisPool::new(settings)?,
            Keyspace::new(key_prefix.to_owned()),
        )),
        None => None,
    };
    let directory = Arc::new(Directory::new(
        db.clone(),
        cache_tier,
        DirectorySettings::default(),
    ));
    let relay = Relay::new(
        db,
        revocations.stream().clone(),
        directory,
        RelaySettings::default(),
    );
    Ok(relay.drain().await?)
}

/// Why [`publish_outbox_now`] did not publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The cache's Redis settings are unusable.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A relay pass failed.
    #[error(transparent)]
    Relay(#[from] crate::outbox::RelayError),
}

/// Rotates the signing keys now (`gatehouse keys rotate`), after checking
/// that `kek` opens the keys in use (new keys sealed under another KEK than
/// the old ones would be unusable together). Returns what changed and the
/// new current key's id.
pub async fn rotate_keys_now(
    db: &PgPool,
    kek: &KeyEncryptionKey,
    tokens: &TokenConfig,
    issuer: &url::Url,
    clock: Arc<dyn Clock>,
) -> Result<(gatehouse_store::keys::KeyReport, String), RotateError> {
    TokenService::start(
        db.clone(),
        crate::tokens::kek_from(kek),
        tokens.clone(),
        issuer,
        clock.clone(),
    )
    .await
    .map_err(RotateError::WrongKek)?;
    let report =
        crate::tokens::maintain(db, &crate::tokens::kek_from(kek), tokens, true, clock.now())
            .await
            .map_err(RotateError::Rotation)?;
    let current = gatehouse_store::keys::published(db)
        .await
        .map_err(|e| RotateError::Rotation(e.into()))?
        .into_iter()
        .find(|k| k.state == "current")
        .map(|k| k.kid)
        .unwrap_or_default();
    Ok((report, current))
}

/// Why [`rotate_keys_now`] did not rotate.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The configured KEK does not open the keys in use.
    #[error(transparent)]
    WrongKek(crate::tokens::KeyRingError),
    /// The rotation itself failed.
    #[error("rotation failed: {0}")]
    Rotation(crate::tokens::KeyRingError),
}
