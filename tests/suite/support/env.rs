//! A fresh data folder, blob folder and database per test. The database is
//! a SQLite file by default, or a new PostgreSQL database when
//! SEALPOST_TEST_DATABASE_URL names a server to create it on.

use std::path::PathBuf;
use std::process::{Command, Output};

use rand::RngExt;
use sealpost::app::App;
use sealpost::config::Config;
use sqlx::Connection;
use tempfile::TempDir;

pub const PG_ENV: &str = "SEALPOST_TEST_DATABASE_URL";

pub struct TestEnv {
    pub dir: TempDir,
    pub database_url: String,
    pub escrow: Option<String>,
    postgres: Option<PgDatabase>,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        Self::build(None).await
    }

    /// A test environment whose messages are also sealed to `escrow` (an `age1…` key).
    pub async fn with_escrow(escrow: &str) -> TestEnv {
        Self::build(Some(escrow.to_owned())).await
    }

    async fn build(escrow: Option<String>) -> TestEnv {
        // Before any reqwest client: the crate is built without a provider.
        sealpost::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let (database_url, postgres) = match std::env::var(PG_ENV) {
            Ok(admin_url) if !admin_url.is_empty() => {
                let db = PgDatabase::create(&admin_url).await;
                (db.url.clone(), Some(db))
            }
            _ => (
                format!("sqlite://{}/data/sealpost.db", dir.path().display()),
                None,
            ),
        };
        TestEnv {
            dir,
            database_url,
            escrow,
            postgres,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir().join("blobs")
    }

    pub fn key_file(&self) -> PathBuf {
        self.data_dir().join("master.key")
    }

    /// The SEALPOST_* variables that describe this environment.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            (
                "SEALPOST_DATA_DIR".to_owned(),
                self.data_dir().display().to_string(),
            ),
            (
                "SEALPOST_DATABASE_URL".to_owned(),
                self.database_url.clone(),
            ),
            ("SEALPOST_BIND".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        if let Some(e) = &self.escrow {
            vars.push(("SEALPOST_ESCROW_RECIPIENTS".to_owned(), e.clone()));
        }
        vars
    }

    pub fn config(&self) -> Config {
        Config::load(None, self.env_vars()).expect("test config")
    }

    pub async fn app(&self) -> App {
        App::open(self.config()).await.expect("open app")
    }

    /// Runs the real `sealpost` binary with this environment.
    pub fn sealpost(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("SEALPOST_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env_vars());
        cmd.output().expect("run sealpost")
    }

    /// Every byte the database holds: the SQLite files as they are on disk
    /// (main file, WAL and shared memory), or every row of every table on
    /// PostgreSQL rendered as text (bytea as hex).
    pub async fn database_bytes(&self, app: &App) -> Vec<u8> {
        if self.postgres.is_none() {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(self.data_dir()).expect("data dir") {
                let path = entry.expect("entry").path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.is_some_and(|n| n.starts_with("sealpost.db")) {
                    // Read by another process: closing a descriptor of our own
                    // on these files would drop every POSIX lock this process's
                    // SQLite connections hold on them (fcntl locks are per
                    // process), after which another process may checkpoint and
                    // reset the WAL under them and they read stale data.
                    let copy = Command::new("cat")
                        .arg(&path)
                        .output()
                        .expect("cat db file");
                    assert!(copy.status.success());
                    out.extend(copy.stdout);
                }
            }
            assert!(!out.is_empty(), "found no SQLite files to scan");
            return out;
        }
        // Every schema the application writes to (sessions live in their own).
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
        )
        .fetch_all(app.db.pool())
        .await
        .expect("list tables");
        let mut out = Vec::new();
        for t in tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT CAST(row_to_json(x) AS TEXT) FROM {t} x"))
                    .fetch_all(app.db.pool())
                    .await
                    .expect("dump table");
            for r in rows {
                out.extend(r.into_bytes());
            }
        }
        out
    }
}

/// A new, empty PostgreSQL database on the server at an admin URL, dropped
/// (with any connections still open to it) when this value is.
pub struct PgDatabase {
    /// The URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> PgDatabase {
        let name = format!(
            "sealpost_t_{}",
            hex::encode(rand::rng().random::<[u8; 6]>())
        );
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("connect to the PostgreSQL test server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        PgDatabase {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside or outside a runtime; a thread of its own works in both.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A runtime like `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`,
/// for tests that must also do blocking work outside it (see their comments).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The wall clock's current time, as the app reads it.
pub fn now() -> i64 {
    use sealpost::clock::Clock;
    sealpost::clock::SystemClock.now()
}
