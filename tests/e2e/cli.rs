//! The `gatehouse` command line: bad configuration stops start-up with one
//! line naming the setting; `migrate` and `bootstrap` are idempotent.

use gatehouse_testkit::{TestDatabase, TestRedis, free_port, gateway_env, run_gatehouse};

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn replace(
    mut vars: Vec<(String, String)>,
    key: &str,
    value: Option<&str>,
) -> Vec<(String, String)> {
    vars.retain(|(k, _)| k != key);
    if let Some(value) = value {
        vars.push((key.to_owned(), value.to_owned()));
    }
    vars
}

async fn serve_fails_naming(vars: Vec<(String, String)>, setting: &str) {
    let output = run_gatehouse(&["serve"], &vars).await;
    let stderr = stderr_of(&output);
    assert!(
        !output.status.success(),
        "serve must fail; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(
        lines[0].starts_with("gatehouse: configuration error: "),
        "{stderr}"
    );
    assert!(lines[0].contains(setting), "names {setting}: {stderr}");
}

#[tokio::test]
async fn unparseable_database_url_exits_naming_it() {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let vars = gateway_env(&db, &redis.url, &redis.prefix);
    serve_fails_naming(
        replace(vars, "DATABASE_URL", Some("postgres://[broken")),
        "DATABASE_URL",
    )
    .await;
}

#[tokio::test]
async fn unreachable_redis_at_start_exits_naming_redis_url() {
    let db = TestDatabase::new().await;
    let vars = gateway_env(&db, &format!("redis://127.0.0.1:{}", free_port()), "gh:");
    serve_fails_naming(vars, "REDIS_URL").await;
}

#[tokio::test]
async fn unreachable_postgres_at_start_exits_naming_database_url() {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let vars = gateway_env(&db, &redis.url, &redis.prefix);
    let dead = format!("postgres://gatehouse@127.0.0.1:{}/x", free_port());
    let vars = replace(vars, "GATEHOUSE_DB__ACQUIRE_TIMEOUT_MS", Some("500"));
    serve_fails_naming(replace(vars, "DATABASE_URL", Some(&dead)), "DATABASE_URL").await;
}

#[tokio::test]
async fn an_unknown_key_in_the_config_file_exits_2_naming_it() {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let dir = std::env::temp_dir().join(format!("gh-cli-cfg-{}", gatehouse_testkit::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, "trusted_proxy = \"10.0.0.0/8\"\n").unwrap();
    let vars = replace(
        gateway_env(&db, &redis.url, &redis.prefix),
        "GATEHOUSE_CONFIG",
        Some(path.to_str().unwrap()),
    );
    let output = run_gatehouse(&["serve"], &vars).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    serve_fails_naming(vars, "unknown key trusted_proxy").await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_metrics_listen_address_in_use_exits_naming_it() {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    serve_fails_naming(
        replace(
            gateway_env(&db, &redis.url, &redis.prefix),
            "GATEHOUSE_METRICS_LISTEN",
            Some(&address),
        ),
        "GATEHOUSE_METRICS_LISTEN",
    )
    .await;
}

#[tokio::test]
async fn missing_key_encryption_key_exits_naming_it() {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let vars = gateway_env(&db, &redis.url, &redis.prefix);
    serve_fails_naming(
        replace(vars, "GATEHOUSE_KEY_ENCRYPTION_KEY", None),
        "GATEHOUSE_KEY_ENCRYPTION_KEY",
    )
    .await;
}

#[tokio::test]
async fn short_key_encryption_key_exits_naming_it() {
    let db = TestDatabase::new().await;
    let redis = TestRedis::shared();
    let vars = gateway_env(&db, &redis.url, &redis.prefix);
    let vars = replace(vars, "GATEHOUSE_KEY_ENCRYPTION_KEY", Some("dG9vIHNob3J0"));
    serve_fails_naming(vars, "GATEHOUSE_KEY_ENCRYPTION_KEY").await;
}

fn db_only(db: &TestDatabase, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), db.url.clone()),
        // Cheap hashing: these tests check seeding, not argon2 cost.
        ("GATEHOUSE_ARGON2__MEMORY_KIB".to_owned(), "1024".to_owned()),
        ("GATEHOUSE_ARGON2__ITERATIONS".to_owned(), "1".to_owned()),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    vars
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let db = TestDatabase::new().await;
    for _ in 0..2 {
        let output = run_gatehouse(&["migrate"], &db_only(&db, &[])).await;
        assert!(output.status.success(), "{}", stderr_of(&output));
    }
}

#[tokio::test]
async fn bootstrap_demo_creates_the_contract_data_once_and_prints_generated_passwords_once() {
    let db = TestDatabase::new().await;
    let args = [
        "bootstrap",
        "--demo",
        "--upstream",
        "v1=127.0.0.1:9101",
        "--upstream",
        "v2=127.0.0.1:9102",
    ];
    let first = run_gatehouse(&args, &db_only(&db, &[])).await;
    assert!(first.status.success(), "{}", stderr_of(&first));
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    for who in [
        "tenant=system username=admin",
        "tenant=acme username=alice",
        "tenant=acme username=bob",
    ] {
        assert!(stdout.contains(who), "missing {who}: {stdout}");
    }
    assert_eq!(stdout.matches("(shown once)").count(), 3, "{stdout}");

    let counts: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM users),
                (SELECT count(*) FROM service_versions), (SELECT count(*) FROM service_instances),
                (SELECT count(*) FROM audit_events)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((counts.0, counts.1, counts.2, counts.3), (2, 3, 2, 2));
    assert!(counts.4 > 0, "bootstrap is audited");
    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(hashes.iter().all(|h| h.starts_with("$argon2id$")));

    let snapshot = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT string_agg(t, '|' ORDER BY t) FROM (
                SELECT id::text || password_hash AS t FROM users
                UNION ALL SELECT tenant_id::text || version FROM tenant_data_versions
                UNION ALL SELECT count(*)::text FROM audit_events
                UNION ALL SELECT count(*)::text FROM outbox_events) s",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = snapshot(db.pool.clone()).await;
    let second = run_gatehouse(&args, &db_only(&db, &[])).await;
    assert!(second.status.success(), "{}", stderr_of(&second));
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains("nothing changed"), "{stdout}");
    assert!(
        !stdout.contains("password="),
        "no password is printed twice: {stdout}"
    );
    assert_eq!(
        snapshot(db.pool.clone()).await,
        before,
        "the second run changed data"
    );
}

#[tokio::test]
async fn bootstrap_uses_passwords_from_the_environment_without_printing_them() {
    let db = TestDatabase::new().await;
    let vars = db_only(
        &db,
        &[
            ("GATEHOUSE_ADMIN_PASSWORD", "admin-secret-123"),
            ("GATEHOUSE_DEMO_PASSWORD", "demo-secret-456"),
        ],
    );
    let output = run_gatehouse(&["bootstrap", "--demo"], &vars).await;
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("admin-secret-123") && !stdout.contains("demo-secret-456"));
    assert!(
        stdout.contains("password from GATEHOUSE_ADMIN_PASSWORD"),
        "{stdout}"
    );
}

#[tokio::test]
async fn bootstrap_refuses_bad_arguments_without_writing() {
    let db = TestDatabase::new().await;
    for (args, setting) in [
        (
            vec!["bootstrap", "--upstream", "v1=127.0.0.1:1"],
            "--upstream",
        ),
        (
            vec!["bootstrap", "--demo", "--upstream", "v9=127.0.0.1:1"],
            "--upstream",
        ),
    ] {
        let output = run_gatehouse(&args, &db_only(&db, &[])).await;
        assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
        assert!(stderr_of(&output).contains(setting));
    }
    let short = db_only(&db, &[("GATEHOUSE_ADMIN_PASSWORD", "short")]);
    let output = run_gatehouse(&["bootstrap"], &short).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("GATEHOUSE_ADMIN_PASSWORD"));
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 0, "a refused bootstrap writes nothing");
}

#[tokio::test]
async fn malformed_upstream_argument_is_a_usage_error() {
    let db = TestDatabase::new().await;
    let output = run_gatehouse(
        &["bootstrap", "--demo", "--upstream", "v1"],
        &db_only(&db, &[]),
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("VERSION=HOST:PORT"),
        "{}",
        stderr_of(&output)
    );
}
