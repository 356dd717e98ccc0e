//! The `gatehouse` command line: the binary's edge, where errors become one
//! line on stderr and an exit code.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are clap's --help text, shown verbatim without markdown"
)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gatehouse_app::bootstrap::{self, Passwords, Upstream};
use gatehouse_gateway::config::{self, Config, DatabaseConfig};
use gatehouse_gateway::{Application, ConfigError};

/// mimalloc gives freed memory back to the OS; with glibc's allocator a login
/// flood left the gateway at ~450 MiB RSS (argon2's 19 MiB working buffers
/// fragment the heap). Measured by `bench/load/run` (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration and usage errors (as sysexits' EX_CONFIG is
/// too obscure, we use 2 like clap does for usage errors).
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Gatehouse: multi-tenant authentication and authorisation gateway",
    long_about = "Gatehouse: multi-tenant authentication and authorisation gateway.\n\n\
        Configuration comes from GATEHOUSE_* environment variables (nested settings as \
        GATEHOUSE_SECTION__KEY), DATABASE_URL, REDIS_URL and REDIS_CACHE_URL, and an optional \
        TOML file named by GATEHOUSE_CONFIG (environment wins). See gatehouse.example.toml."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP gateway.
    ///
    /// Needs DATABASE_URL, REDIS_URL and GATEHOUSE_KEY_ENCRYPTION_KEY (or _FILE); checks that
    /// Postgres and Redis answer, applies pending migrations, then listens on
    /// GATEHOUSE_LISTEN (default 127.0.0.1:8080) until SIGINT/SIGTERM.
    Serve,
    /// Apply pending database migrations (needs only DATABASE_URL).
    Migrate,
    /// Create the `system` tenant and platform admin `admin` (idempotent).
    ///
    /// With --demo also the tenant `acme` with users `alice` (tenant admin) and `bob`
    /// (member), roles, a policy, and the service `orders` with versions v1 and v2.
    /// Passwords come from GATEHOUSE_ADMIN_PASSWORD and GATEHOUSE_DEMO_PASSWORD, else are
    /// generated and printed once. Existing data is never changed.
    Bootstrap {
        /// Also create the demo tenant, users and service.
        #[arg(long)]
        demo: bool,
        /// An instance of the demo service: VERSION=HOST:PORT (repeatable).
        #[arg(long = "upstream", value_name = "VERSION=HOST:PORT")]
        upstreams: Vec<Upstream>,
    },
    /// Manage signing keys (needs the same settings as `serve`).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage a user: disable, enable, or set a password (needs DATABASE_URL and REDIS_URL).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Rotate now: the published `next` key starts signing, the current key stays
    /// published as `previous` until its tokens expire, and a new `next` key is
    /// published. Running gateways pick it up within GATEHOUSE_TOKENS__KEY_REFRESH_S.
    Rotate,
}

#[derive(Subcommand)]
enum UserAction {
    /// Disable a user: they can no longer sign in and every session of theirs ends.
    Disable {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Username.
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Username.
        username: String,
    },
    /// Set a user's password and end every session of theirs. The password is read from
    /// GATEHOUSE_NEW_PASSWORD, else from the first line of standard input.
    SetPassword {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Username.
        username: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(&vars).await,
            Command::Migrate => migrate(&vars).await,
            Command::Bootstrap { demo, upstreams } => run_bootstrap(&vars, demo, &upstreams).await,
            Command::Keys {
                action: KeysAction::Rotate,
            } => rotate_keys(&vars).await,
            Command::User { action } => run_user(&vars, action).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("gatehouse: configuration error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A configuration problem (exit 2) or a failure while running (exit 1).
enum Failure {
    Config(String),
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

async fn serve(vars: &[(String, String)]) -> Result<(), Failure> {
    let config = Config::load(vars)?;
    let log = std::sync::Arc::new(
        gatehouse_telemetry::init_logging(config.log_format, &config.log_filter)
            .map_err(|e| Failure::Config(format!("{}: {e}", config::env::LOG)))?,
    );
    let metrics = gatehouse_telemetry::init_metrics().map_err(anyhow::Error::from)?;
    let dropped = {
        let log = std::sync::Arc::clone(&log);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                metrics::counter!("gatehouse_log_lines_dropped_total")
                    .absolute(log.dropped_lines());
            }
        })
    };
    let app = Application::build(&config, metrics)
        .await
        .map_err(|e| Failure::Config(format!("{}: {e}", e.setting())))?;
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("server failed: {e}"))?;
    dropped.abort();
    tracing::info!("stopped");
    Ok(())
}

#[allow(
    clippy::print_stdout,
    reason = "the CLI reports to the operator on stdout"
)]
async fn rotate_keys(vars: &[(String, String)]) -> Result<(), Failure> {
    let config = Config::load(vars)?;
    let pool = connect_database(&config.db).await?;
    let clock: Arc<dyn gatehouse_core::Clock> = Arc::new(gatehouse_core::SystemClock);
    let (report, current) = gatehouse_app::services::rotate_keys_now(
        &pool,
        &config.key_encryption_key,
        &config.tokens,
        &config.issuer,
        clock,
    )
    .await
    .map_err(|e| match e {
        gatehouse_app::services::RotateError::WrongKek(e) => {
            Failure::Config(format!("{}: {e}", config::env::KEY_ENCRYPTION_KEY))
        }
        other @ gatehouse_app::services::RotateError::Rotation(_) => {
            Failure::Runtime(anyhow::Error::from(other))
        }
    })?;
    println!(
        "rotated: current key {current}; generated {:?}; retired {:?}",
        report.generated, report.retired
    );
    Ok(())
}

/// Connects to Postgres, or names `DATABASE_URL` in the failure.
async fn connect_database(
    db: &gatehouse_app::settings::DbSettings,
) -> Result<sqlx::PgPool, Failure> {
    gatehouse_app::services::connect_database(db)
        .await
        .map_err(|e| Failure::Config(format!("{}: {e}", config::env::DATABASE_URL)))
}

async fn migrate(vars: &[(String, String)]) -> Result<(), Failure> {
    let config = DatabaseConfig::load(vars)?;
    let pool = connect_database(&config.db).await?;
    gatehouse_app::services::migrate(&pool)
        .await
        .map_err(anyhow::Error::from)?;
    eprintln!("gatehouse: migrations applied");
    Ok(())
}

#[allow(
    clippy::print_stdout,
    reason = "bootstrap reports to the operator on stdout"
)]
async fn run_bootstrap(
    vars: &[(String, String)],
    demo: bool,
    upstreams: &[Upstream],
) -> Result<(), Failure> {
    let config = DatabaseConfig::load(vars)?;
    let lookup = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let passwords = Passwords::from_env(
        lookup(config::env::ADMIN_PASSWORD),
        lookup(config::env::DEMO_PASSWORD),
    )
    .map_err(|e| Failure::Config(e.to_string()))?;
    let origins = match &config.issuer {
        Some(issuer) => vec![issuer.origin().ascii_serialization()],
        None => vec![
            "http://127.0.0.1:8080".to_owned(),
            "http://localhost:8080".to_owned(),
        ],
    };
    let seed = bootstrap::seed(demo, upstreams, &passwords, &origins)
        .map_err(|e| Failure::Config(e.to_string()))?;
    let pool = connect_database(&config.db).await?;
    gatehouse_app::services::migrate(&pool)
        .await
        .map_err(anyhow::Error::from)?;
    let hasher = gatehouse_core::PasswordHasher::new(config.argon2)
        .map_err(|e| Failure::Config(format!("GATEHOUSE_ARGON2__*: {e}")))?;
    let report = bootstrap::apply(&pool, &seed, &hasher)
        .await
        .map_err(anyhow::Error::from)?;

    if report.created.is_empty() {
        println!("bootstrap: everything already exists; nothing changed");
        return Ok(());
    }
    println!("bootstrap: created");
    for line in &report.created {
        println!("  {line}");
    }
    for (tenant, username) in &report.created_users {
        let (password, generated) = if tenant.as_str() == "system" {
            (&passwords.admin, passwords.admin_generated)
        } else {
            (&passwords.demo, passwords.demo_generated)
        };
        if generated {
            println!(
                "credentials: tenant={tenant} username={username} password={password}  (shown once)"
            );
        } else {
            let source = if tenant.as_str() == "system" {
                config::env::ADMIN_PASSWORD
            } else {
                config::env::DEMO_PASSWORD
            };
            println!("credentials: tenant={tenant} username={username} password from {source}");
        }
    }
    Ok(())
}

/// Environment variable holding the new password for `user set-password`.
const NEW_PASSWORD: &str = "GATEHOUSE_NEW_PASSWORD";

#[allow(clippy::print_stdout, reason = "operator commands report on stdout")]
async fn run_user(vars: &[(String, String)], action: UserAction) -> Result<(), Failure> {
    let config = DatabaseConfig::load(vars)?;
    let redis = config.redis.clone().ok_or_else(|| {
        Failure::Config(format!(
            "{}: is not set (needed to end the user's sessions)",
            config::env::REDIS_URL
        ))
    })?;
    let pool = connect_database(&config.db).await?;
    let revocations = gatehouse_app::services::user_revocations(
        &redis,
        &config.redis_key_prefix,
        &config.tokens,
        Arc::new(gatehouse_core::SystemClock),
    )
    .map_err(|e| Failure::Config(format!("{}: {e}", config::env::REDIS_URL)))?;
    let operator_error = |e: gatehouse_app::operator::OperatorError| match e {
        gatehouse_app::operator::OperatorError::NotFound(message) => Failure::Config(message),
        other => Failure::Runtime(anyhow::Error::from(other)),
    };
    match action {
        UserAction::Disable { tenant, username } => {
            let ended = gatehouse_app::operator::set_user_enabled(
                &pool,
                &revocations,
                &tenant,
                &username,
                false,
            )
            .await
            .map_err(operator_error)?;
            println!("user {username}@{tenant} disabled; {ended} session(s) ended");
        }
        UserAction::Enable { tenant, username } => {
            gatehouse_app::operator::set_user_enabled(
                &pool,
                &revocations,
                &tenant,
                &username,
                true,
            )
            .await
            .map_err(operator_error)?;
            println!("user {username}@{tenant} enabled");
        }
        UserAction::SetPassword { tenant, username } => {
            let password = if let Some((_, v)) = vars.iter().find(|(k, _)| k == NEW_PASSWORD) {
                v.clone()
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map_err(|e| {
                    Failure::Runtime(anyhow::anyhow!("reading the password from stdin: {e}"))
                })?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            };
            if password.chars().count() < bootstrap::MIN_PASSWORD_CHARS {
                return Err(Failure::Config(format!(
                    "{NEW_PASSWORD}: must be at least {} characters",
                    bootstrap::MIN_PASSWORD_CHARS
                )));
            }
            let hasher = gatehouse_core::PasswordHasher::new(config.argon2)
                .map_err(|e| Failure::Config(format!("GATEHOUSE_ARGON2__*: {e}")))?;
            let hash = hasher.hash(&password).map_err(anyhow::Error::from)?;
            let ended = gatehouse_app::operator::set_user_password(
                &pool,
                &revocations,
                &tenant,
                &username,
                &hash,
            )
            .await
            .map_err(operator_error)?;
            println!("password of {username}@{tenant} set; {ended} session(s) ended");
        }
    }
    publish_outbox_now(&config, pool, &revocations).await?;
    Ok(())
}

/// Publishes the CLI change's outbox event now, so running gateways apply it
/// at once (they would also find the row on their next relay pass).
async fn publish_outbox_now(
    config: &config::DatabaseConfig,
    pool: sqlx::PgPool,
    revocations: &gatehouse_app::revocation::Revocations,
) -> Result<(), Failure> {
    let published = gatehouse_app::services::publish_outbox_now(
        pool,
        revocations,
        config.redis_cache.as_ref(),
        &config.redis_key_prefix,
    )
    .await;
    match published {
        Err(gatehouse_app::services::PublishError::Redis(e)) => Err(Failure::Config(format!(
            "{}: {e}",
            config::env::REDIS_CACHE_URL
        ))),
        Err(e) => {
            eprintln!(
                "note: the change is saved; its event will be published by a running gateway ({e})"
            );
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
