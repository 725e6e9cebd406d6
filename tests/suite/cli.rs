//! The command line as an operator uses it.

use crate::support::env::{TestEnv, runtime};

#[test]
fn migrate_is_idempotent_and_config_redacts_secrets() {
    // A runtime of its own, not #[tokio::test]: the `sealpost` binary runs and is waited for from this thread, between async steps.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    for _ in 0..2 {
        let out = env.sealpost(&["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = env.sealpost(&["config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("data_dir"), "{text}");
    assert!(text.contains("master_key_file"), "{text}");

    // A database password never shows, whether given directly or from a file.
    let secret_file = env.dir.path().join("db-url");
    std::fs::write(
        &secret_file,
        "postgres://app:CANARY-PASS-51d2@db.internal/sealpost\n",
    )
    .expect("write");
    for (var, value) in [
        (
            "SEALPOST_DATABASE_URL",
            "postgres://app:CANARY-PASS-51d2@db.internal/sealpost",
        ),
        (
            "SEALPOST_DATABASE_URL_FILE",
            secret_file.to_str().expect("utf8"),
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .arg("config")
            .env("SEALPOST_DATA_DIR", env.data_dir())
            .env(var, value)
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{var}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("app:***@db.internal"), "{var}: {text}");
        assert!(!text.contains("CANARY-PASS"), "{var}: {text}");
    }
}

#[test]
fn unknown_settings_are_refused() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("config")
        .envs(env.env_vars())
        .env("SEALPOST_DATA_DIRR", "/tmp/x")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SEALPOST_DATA_DIRR"));
}

#[test]
fn serve_answers_health_checks() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let resp = rt.block_on(get_raw(app.clone(), path));
        assert!(resp.starts_with("http/1.1 200"), "{path}: {resp}");
        assert!(resp.ends_with(want), "{path}: {resp}");
    }
}

#[test]
fn readyz_fails_when_the_blob_folder_is_gone() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    std::fs::remove_dir_all(env.blob_dir()).expect("remove blob folder");
    let resp = rt.block_on(get_raw(app.clone(), "/readyz"));
    assert!(resp.starts_with("http/1.1 503"), "{resp}");
    assert!(resp.ends_with("blob store unreachable"), "{resp}");
    // Liveness is a different question: the process is fine.
    let resp = rt.block_on(get_raw(app, "/healthz"));
    assert!(resp.starts_with("http/1.1 200"), "{resp}");
}

#[test]
fn sqlite_durability_settings_are_in_force() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    if app.db.backend() != sealpost::store::Backend::Sqlite {
        // PostgreSQL's durability is the server's configuration, not ours.
        assert_eq!(app.db.backend(), sealpost::store::Backend::Postgres);
        return;
    }
    rt.block_on(async {
        // Every pooled connection, not just the first, carries the settings.
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(app.db.pool().acquire().await.expect("connection"));
        }
        for conn in &mut conns {
            let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .expect("journal_mode");
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await
                .expect("synchronous");
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut **conn)
                .await
                .expect("foreign_keys");
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut **conn)
                .await
                .expect("busy_timeout");
            assert_eq!((journal.as_str(), sync, fk, busy), ("wal", 2, 1, 5000));
        }
    });
}

#[test]
fn commits_through_one_pool_are_seen_at_once_through_another() {
    // Two instances (or serve and a CLI command) share one database: a read
    // right after another's commit must not see an older snapshot.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let reader = rt.block_on(env.app());
    let writer = rt.block_on(env.app());
    rt.block_on(async {
        sqlx::query("CREATE TABLE visibility_probe (k BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
            .execute(reader.db.pool())
            .await
            .expect("create");
        sqlx::query("INSERT INTO visibility_probe (k, v) VALUES (1, 0)")
            .execute(reader.db.pool())
            .await
            .expect("insert");
        for i in 1..200i64 {
            // Leave the reader's pooled connections in every state a query can.
            let _: Option<i64> = sqlx::query_scalar("SELECT v FROM visibility_probe WHERE k = 1")
                .fetch_optional(reader.db.pool())
                .await
                .expect("optional");
            let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM visibility_probe")
                .fetch_one(reader.db.pool())
                .await
                .expect("one");
            let mut tx = writer.db.begin().await.expect("begin");
            sqlx::query("UPDATE visibility_probe SET v = $1 WHERE k = 1")
                .bind(i)
                .execute(&mut *tx)
                .await
                .expect("update");
            tx.commit().await.expect("commit");
            let seen: i64 = sqlx::query_scalar("SELECT v FROM visibility_probe WHERE k = $1")
                .bind(1i64)
                .fetch_one(reader.db.pool())
                .await
                .expect("read");
            assert_eq!(seen, i, "stale read after commit {i}");
        }
    });
}

/// Serves `app` on a loopback port and returns the raw response to `GET path`.
async fn get_raw(app: sealpost::app::App, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, sealpost::server::router(app))
            .await
            .ok();
    });
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.expect("read");
    resp.to_lowercase()
}

#[test]
fn every_response_carries_the_security_headers() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    for path in ["/healthz", "/readyz", "/no-such-page"] {
        let resp = rt.block_on(get_raw(app.clone(), path));
        for header in [
            "content-security-policy: default-src 'none';",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
            "cache-control: no-store",
            "x-robots-tag: noindex",
        ] {
            assert!(
                resp.contains(header),
                "{path}: missing {header:?} in\n{resp}"
            );
        }
        assert!(
            !resp.contains("strict-transport-security"),
            "no HSTS on plain http"
        );
    }
    // Behind https, HSTS is added too.
    let mut vars = env.env_vars();
    vars.push((
        "SEALPOST_PUBLIC_URL".into(),
        "https://secure.example.com".into(),
    ));
    let config = sealpost::config::Config::load(None, vars).expect("config");
    let https_app = rt.block_on(sealpost::app::App::open(config)).expect("app");
    let resp = rt.block_on(get_raw(https_app, "/healthz"));
    assert!(
        resp.contains("strict-transport-security: max-age=63072000; includesubdomains"),
        "{resp}"
    );
}
