//! Test helpers shared by integration and end-to-end tests.
//!
//! The test command (`scripts/test`) starts a throw-away Postgres and Redis and
//! exports their URLs; these helpers give every test its own isolated slice:
//! - [`TestDatabase`]: a fresh database cloned from a migrated template (fast:
//!   `CREATE DATABASE ... TEMPLATE`), so tests run in parallel without sharing rows.
//! - [`TestRedis`]: the shared server under a random key prefix.
//! - [`PrivateRedis`]: a `redis-server` of the test's own, for tests that stop it.
//! - [`Gateway`]: the real `gatehouse serve` binary on a free loopback port.
//!
//! Databases are not dropped after each test: the whole server is discarded when
//! the test command ends.
#![allow(
    clippy::missing_panics_doc,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed set-up should stop the test loudly"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, Executor as _, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Env var naming the admin URL of the test Postgres (set by `scripts/test`).
pub const DATABASE_URL_VAR: &str = "GATEHOUSE_TEST_DATABASE_URL";
/// Env var naming the shared test Redis (set by `scripts/test`).
pub const REDIS_URL_VAR: &str = "GATEHOUSE_TEST_REDIS_URL";
/// Env var naming the `redis-server` binary for private servers.
pub const REDIS_SERVER_VAR: &str = "GATEHOUSE_TEST_REDIS_SERVER";

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through ./scripts/test, which starts Postgres and Redis")
    })
}

/// A random lowercase hex id, for names that must not collide across tests.
#[must_use]
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A database of this test's own, with every migration applied.
pub struct TestDatabase {
    /// Connection URL of this database.
    pub url: String,
    /// Its name.
    pub name: String,
    /// A small pool connected to it.
    pub pool: PgPool,
}

impl TestDatabase {
    /// Clones the migrated template into a new database.
    pub async fn new() -> Self {
        let admin_url = required_env(DATABASE_URL_VAR);
        let template = ensure_template(&admin_url).await;
        let name = format!("t_{}", unique_id());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the test Postgres");
        admin
            .execute(format!("CREATE DATABASE {name} TEMPLATE {template}").as_str())
            .await
            .expect("create the test database");
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect to the test database");
        Self { url, name, pool }
    }
}

/// Replaces the database name in a postgres URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// Creates (once per server and migration set) a migrated template database.
/// Concurrent test processes serialise on an advisory lock.
async fn ensure_template(admin_url: &str) -> String {
    let fingerprint: u64 = gatehouse_store::MIGRATOR
        .iter()
        .flat_map(|m| m.checksum.iter().copied())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let template = format!("gh_template_{fingerprint:016x}");
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect to the test Postgres");
    admin
        .execute("SELECT pg_advisory_lock(7303)")
        .await
        .expect("take the template lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .expect("look up the template");
    if !exists {
        let building = format!("{template}_building");
        admin
            .execute(format!("DROP DATABASE IF EXISTS {building}").as_str())
            .await
            .expect("drop a half-built template");
        admin
            .execute(format!("CREATE DATABASE {building}").as_str())
            .await
            .expect("create the template");
        {
            let mut conn = PgConnection::connect(&with_database(admin_url, &building))
                .await
                .expect("connect to the template");
            gatehouse_store::MIGRATOR
                .run(&mut conn)
                .await
                .expect("migrations apply to an empty database");
            conn.close().await.expect("close the template connection");
        }
        admin
            .execute(format!("ALTER DATABASE {building} RENAME TO {template}").as_str())
            .await
            .expect("publish the template");
    }
    admin
        .execute("SELECT pg_advisory_unlock(7303)")
        .await
        .expect("release the template lock");
    template
}

/// The shared test Redis under a key prefix no other test uses.
#[derive(Debug, Clone)]
pub struct TestRedis {
    /// Server URL.
    pub url: String,
    /// Key prefix for this test (`t<16 hex>:`).
    pub prefix: String,
}

impl TestRedis {
    /// The shared server with a fresh prefix.
    #[must_use]
    pub fn shared() -> Self {
        Self {
            url: required_env(REDIS_URL_VAR),
            prefix: format!("t{}:", &unique_id()[..16]),
        }
    }
}

/// Returns a loopback port that was free a moment ago.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// A `redis-server` owned by one test, which it may stop and start again on
/// the same port (to test outages and recovery).
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free loopback port and waits until it answers.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("gh-redis-{}", unique_id()));
        std::fs::create_dir_all(&dir).expect("create the redis dir");
        let mut redis = Self {
            port: free_port(),
            dir,
            child: None,
        };
        redis.resume().await;
        redis
    }

    /// Its URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (connections drop at once, like a crash).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn resume(&mut self) {
        let binary = std::env::var(REDIS_SERVER_VAR).unwrap_or_else(|_| "redis-server".to_owned());
        let child = Command::new(binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("private redis-server did not start on port {}", self.port);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Path of a binary of this workspace (built by `cargo build --bins`, which
/// `scripts/test` runs before the tests).
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A fresh base64 key-encryption key.
#[must_use]
pub fn random_kek() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Builds a `gatehouse` command with an environment containing nothing
/// Gatehouse-related from the parent, plus `vars`.
#[must_use]
pub fn gatehouse_command(args: &[&str], vars: &[(String, String)]) -> Command {
    let mut command = Command::new(binary("gatehouse"));
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("GATEHOUSE_")
            || ["DATABASE_URL", "REDIS_URL", "REDIS_CACHE_URL"].contains(&key.as_str())
        {
            command.env_remove(key);
        }
    }
    command.envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.kill_on_drop(true);
    command
}

/// Runs a `gatehouse` command to completion (at most 60 s).
pub async fn run_gatehouse(args: &[&str], vars: &[(String, String)]) -> std::process::Output {
    let child = gatehouse_command(args, vars)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse");
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("gatehouse finished within 60 s")
        .expect("collect gatehouse output")
}

/// Environment for a gateway on `db` and `redis`, listening on a free port.
#[must_use]
pub fn gateway_env(db: &TestDatabase, redis_url: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("GATEHOUSE_LISTEN", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", redis_url.to_owned()),
        ("GATEHOUSE_REDIS_KEY_PREFIX", prefix.to_owned()),
        ("GATEHOUSE_KEY_ENCRYPTION_KEY", random_kek()),
        ("GATEHOUSE_COOKIE_SECURE", "false".to_owned()),
        ("GATEHOUSE_LOG_FORMAT", "json".to_owned()),
        ("GATEHOUSE_LOG", "info".to_owned()),
        // Tests run many gateways at once on a small machine; the throttle's
        // production deadline (50 ms) would flip them to the fallback limiter
        // under that load. Fallback behaviour has its own tests.
        ("GATEHOUSE_THROTTLE__REDIS_TIMEOUT_MS", "1000".to_owned()),
        // Test upstreams listen on loopback, which instances may not use by
        // default (tests of that rule set their own networks).
        (
            "GATEHOUSE_ROUTING__INSTANCE_NETWORKS",
            "127.0.0.0/8".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Redis settings for library tests: the production deadlines (250 ms per
/// call) are for a gateway next to its Redis, not for a 2-core machine running
/// the whole suite at once, where one slow call failed a selection test. Tests
/// of outages stop the server (calls fail at once), never rely on a deadline.
#[must_use]
pub fn redis_settings(url: impl Into<String>) -> gatehouse_redis::RedisSettings {
    let mut settings = gatehouse_redis::RedisSettings::new(url);
    settings.command_timeout = std::time::Duration::from_secs(5);
    settings.connect_timeout = std::time::Duration::from_secs(2);
    settings
}

/// A running `gatehouse serve`, killed when dropped.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `http://127.0.0.1:PORT` of the metrics listener.
    pub metrics_url: String,
    /// Every stdout line (JSON log lines) so far.
    pub log_lines: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Spawns the binary and waits for its `listening` log line.
    pub async fn spawn(vars: &[(String, String)]) -> Self {
        let mut vars = vars.to_vec();
        if !vars.iter().any(|(k, _)| k == "GATEHOUSE_METRICS_LISTEN") {
            vars.push((
                "GATEHOUSE_METRICS_LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ));
        }
        let mut child = gatehouse_command(&["serve"], &vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log_lines = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<(String, String)>();
        let lines = log_lines.clone();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut metrics_addr = String::new();
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[gatehouse] {line}");
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                    if value["message"] == "metrics listening"
                        && let Some(addr) = value["addr"].as_str()
                    {
                        addr.clone_into(&mut metrics_addr);
                    }
                    if value["message"] == "listening"
                        && let (Some(tx), Some(addr)) = (addr_tx.take(), value["addr"].as_str())
                    {
                        let _ = tx.send((addr.to_owned(), metrics_addr.clone()));
                    }
                }
                lines.lock().expect("log lock").push(line);
            }
        });
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[gatehouse stderr] {line}");
            }
        });
        let Ok(Ok((addr, metrics_addr))) =
            tokio::time::timeout(Duration::from_secs(30), addr_rx).await
        else {
            let status = child.try_wait().ok().flatten();
            panic!(
                "gatehouse serve did not report listening within 30 s (exit: {status:?}); see its output above"
            );
        };
        Self {
            child,
            base_url: format!("http://{addr}"),
            metrics_url: format!("http://{metrics_addr}"),
            log_lines,
        }
    }

    /// Absolute URL of `path` on this gateway.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Absolute URL of `path` on this gateway's metrics listener.
    #[must_use]
    pub fn metrics(&self, path: &str) -> String {
        format!("{}{path}", self.metrics_url)
    }

    /// The process id (to send signals).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id().expect("gateway is running")
    }

    /// Sends SIGTERM and waits (at most 20 s) for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("gateway exited within 20 s of SIGTERM")
            .expect("wait for the gateway")
    }

    /// Log lines so far, parsed as JSON (non-JSON lines are skipped).
    #[must_use]
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.log_lines
            .lock()
            .expect("log lock")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_keeping_the_query() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            with_database("postgres://u@h:1/postgres?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
    }
}
