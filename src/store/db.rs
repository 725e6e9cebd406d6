//! The database: one sqlx `Any` pool over SQLite (the embedded default) or
//! PostgreSQL (scale-out). Queries are written once in the common SQL subset
//! with `$N` placeholders, which both drivers accept; where the dialects
//! differ, code branches on [`Backend`] and keeps both twins side by side.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::private_fs;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Connection, Executor};

pub type Pool = sqlx::AnyPool;

mod group;

/// A write transaction. On SQLite it is a savepoint in this process's
/// shared write transaction, holding the write gate until it commits,
/// rolls back or is dropped (see [`group`]).
pub struct Tx {
    inner: TxInner,
}

enum TxInner {
    /// PostgreSQL: a transaction of its own.
    Own(sqlx::Transaction<'static, sqlx::Any>),
    /// SQLite: committed with the others of its group.
    Member(group::Member),
}

impl Tx {
    /// Returns once the changes are committed (durably).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.inner {
            TxInner::Own(tx) => tx.commit().await,
            TxInner::Member(member) => member.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.inner {
            TxInner::Own(tx) => tx.rollback().await,
            TxInner::Member(member) => member.rollback().await,
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &sqlx::AnyConnection {
        match &self.inner {
            TxInner::Own(tx) => tx,
            TxInner::Member(member) => member.conn(),
        }
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        match &mut self.inner {
            TxInner::Own(tx) => tx,
            TxInner::Member(member) => member.conn_mut(),
        }
    }
}

/// How long a SQLite writer waits for the write lock before it gives up:
/// the gate below, and SQLite's own busy timeout behind it.
const SQLITE_BUSY: Duration = Duration::from_secs(5);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// SQLite settings are set explicitly on every connection rather than
/// trusting driver defaults: WAL for concurrent readers, FULL so a committed
/// transaction survives power loss, foreign keys (off by default in SQLite),
/// a busy timeout so writers queue instead of failing, and secure_delete so
/// a shred's erased cells are zeroed in the file, not left in free space
/// (old page images in the WAL go as it is checkpointed and reused).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; \
     PRAGMA busy_timeout = 5000; \
     PRAGMA secure_delete = ON;";

/// Connections in the driver-specific pool (sessions and the landing-page
/// lookup). 4 measured best on 2 cores with the landing bench (8 and 16
/// threads spent more time switching; 2 queued requests).
/// A smaller `db_max_connections` lowers it too.
const NATIVE_CONNECTIONS: u32 = 4;

/// Pool sizing (settings `db_max_connections`, `db_acquire_timeout_secs`).
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// Largest size of each pool.
    pub max_connections: u32,
    /// How long a caller waits for a free connection before an error.
    pub acquire_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL: expected sqlite:… or postgres://…")]
    UnsupportedUrl,
    /// The SQLite file or its folder could not be created.
    #[error("cannot create the database file {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Connecting or running a statement failed.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed or the database has migrations this build does not know.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    backend: Backend,
    native: NativePool,
    /// SQLite only: this process's writer connection and the gate its
    /// write transactions queue at (see [`group`]).
    write_gate: Option<std::sync::Arc<group::Gate>>,
}

/// A small driver-specific pool next to the `Any` one, for libraries that
/// need a concrete pool type (the session store).
#[derive(Clone, Debug)]
pub enum NativePool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    /// Connects to `url`. For SQLite the file (and its folder) is created if
    /// missing. The URL is a secret (it may hold a password) and never logged.
    pub async fn connect(url: &SecretString, sizing: PoolSettings) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let url = url.expose_secret();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url_creating_dir(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        // A SQLite connection is a file handle in this process: it cannot go
        // stale like a network connection, so the ping sqlx sends before
        // handing one out is only an extra round trip to its worker thread
        // (measured: a sizeable share of a landing-page request).
        let ping_before_use = backend == Backend::Postgres;
        let pool = AnyPoolOptions::new()
            .max_connections(sizing.max_connections)
            .test_before_acquire(ping_before_use)
            .acquire_timeout(sizing.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let native_connections = NATIVE_CONNECTIONS.min(sizing.max_connections);
        let native = match backend {
            Backend::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(SQLITE_BUSY)
                    .pragma("secure_delete", "ON");
                NativePool::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(native_connections)
                        .test_before_acquire(false)
                        .acquire_timeout(sizing.acquire_timeout)
                        .connect_lazy_with(options),
                )
            }
            Backend::Postgres => NativePool::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(native_connections)
                    .acquire_timeout(sizing.acquire_timeout)
                    .connect_lazy_with(sqlx::postgres::PgConnectOptions::from_str(&url)?),
            ),
        };
        // A connection of its own, outside the pool: the shared write
        // transaction stays open on it between writers.
        let write_gate = match backend {
            Backend::Sqlite => Some(group::Gate::new(pool.acquire().await?.detach())),
            Backend::Postgres => None,
        };
        Ok(Db {
            pool,
            backend,
            native,
            write_gate,
        })
    }

    /// Applies pending migrations for this backend. Safe to run from several
    /// processes at once (sqlx takes a lock).
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Keeps the query planner's statistics current: SQLite's `PRAGMA
    /// optimize` (analyses only what changed enough to matter). PostgreSQL's
    /// autovacuum daemon analyses by itself.
    pub async fn optimize(&self) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA optimize").execute(&self.pool).await?;
        }
        Ok(())
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn native(&self) -> &NativePool {
        &self.native
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it waits for this process's
    /// write gate (at most SQLite's busy timeout, then the same error as a
    /// pool with no connection to give) and opens a savepoint in the shared
    /// write transaction, which holds the write lock (`BEGIN IMMEDIATE`: a
    /// deferred transaction that reads first and writes later fails with
    /// SQLITE_BUSY, not waiting, when another process commits in between).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let inner = match &self.write_gate {
            Some(gate) => TxInner::Member(gate.begin(SQLITE_BUSY).await?),
            None => TxInner::Own(self.pool.begin().await?),
        };
        Ok(Tx { inner })
    }

    /// Cheap liveness check for readiness probes.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await
    }

    pub async fn close(&self) {
        if let Some(gate) = &self.write_gate {
            gate.flush().await;
        }
        self.pool.close().await;
        match &self.native {
            NativePool::Sqlite(p) => p.close().await,
            NativePool::Postgres(p) => p.close().await,
        }
    }
}

/// Makes sure the SQLite file's folder exists and asks the driver to create
/// the file (`mode=rwc`) unless the URL already says how to open it.
fn sqlite_url_creating_dir(url: &str) -> Result<String, DbError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // A read-only or shared-cache URL is the operator's business.
    let creating = !query.split('&').any(|kv| kv.starts_with("mode="));
    if creating && !path.is_empty() && path != ":memory:" {
        let file = Path::new(path);
        let io_err = |source| DbError::CreateDir {
            path: file.to_owned(),
            source,
        };
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_fs::create_dir(dir).map_err(io_err)?;
        }
        // SQLite gives its -wal and -shm files the main file's mode.
        private_fs::touch_file(file).map_err(io_err)?;
    }
    if !creating {
        Ok(url.to_owned())
    } else if query.is_empty() {
        Ok(format!("{url}?mode=rwc"))
    } else {
        Ok(format!("{url}&mode=rwc"))
    }
}

/// Placeholders `$first, $first+1, …` for an `IN (…)` list of `count` values.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_gets_create_mode() {
        let dir = std::env::temp_dir();
        let url = format!("sqlite://{}/x.db", dir.display());
        assert_eq!(
            sqlite_url_creating_dir(&url).ok(),
            Some(format!("{url}?mode=rwc"))
        );
        let ro = format!("sqlite://{}/x.db?mode=ro", dir.display());
        assert_eq!(sqlite_url_creating_dir(&ro).ok(), Some(ro.clone()));
    }

    #[test]
    fn placeholder_list() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
