//! The `gatehouse` command line: the binary's edge, where errors become one
//! line on stderr and an exit code.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are clap's --help text, shown verbatim without markdown"
)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse_gateway::bootstrap::{self, Passwords, Upstream};
use gatehouse_gateway::config::{self, Config, DatabaseConfig};
use gatehouse_gateway::{Application, ConfigError};

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
    gatehouse_telemetry::init_logging(config.log_format, &config.log_filter)
        .map_err(|e| Failure::Config(format!("{}: {e}", config::env::LOG)))?;
    let metrics = gatehouse_telemetry::init_metrics().map_err(anyhow::Error::from)?;
    let app = Application::build(&config, metrics)
        .await
        .map_err(|e| Failure::Config(format!("{}: {e}", e.setting())))?;
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(vars: &[(String, String)]) -> Result<(), Failure> {
    let config = DatabaseConfig::load(vars)?;
    let pool = gatehouse_store::connect(&config.db)
        .await
        .map_err(|e| Failure::Config(format!("{}: {e}", config::env::DATABASE_URL)))?;
    gatehouse_store::migrate(&pool)
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
    let pool = gatehouse_store::connect(&config.db)
        .await
        .map_err(|e| Failure::Config(format!("{}: {e}", config::env::DATABASE_URL)))?;
    gatehouse_store::migrate(&pool)
        .await
        .map_err(anyhow::Error::from)?;
    let hasher = gatehouse_core::PasswordHasher::new(config.argon2)
        .map_err(|e| Failure::Config(format!("GATEHOUSE_ARGON2__*: {e}")))?;
    let report = gatehouse_store::bootstrap::apply(&pool, &seed, &hasher)
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
