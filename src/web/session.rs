//! Server-side sessions (tower-sessions with the sqlx store on whichever
//! database Sealpost runs on, so any instance can serve any session).

use axum::Router;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer, SessionStore};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use crate::store::{Db, NativePool};

/// Idle timeout: the store forgets a session this long after its last save
/// (the portal also checks it against its own clock on every request).
pub const IDLE_SECS: i64 = 30 * 60;
/// Absolute timeout for a staff session, however active.
pub const ABSOLUTE_SECS: i64 = 12 * 3600;

/// Creates the session table if missing.
pub async fn migrate(db: &Db) -> Result<(), sqlx::Error> {
    match db.native() {
        NativePool::Sqlite(pool) => SqliteStore::new(pool.clone()).migrate().await,
        NativePool::Postgres(pool) => PostgresStore::new(pool.clone()).migrate().await,
    }
}

/// The session cookie's name: with https the `__Host-` prefix makes the
/// browser insist on Secure, path `/` and no Domain, so a sibling host
/// cannot plant or read it.
pub fn cookie_name(https: bool) -> &'static str {
    if https { "__Host-sealpost" } else { "sealpost" }
}

/// Wraps `router` with the session layer for this database.
pub fn layer<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    db: &Db,
    https: bool,
) -> Router<S> {
    match db.native() {
        NativePool::Sqlite(pool) => router.layer(configure(SqliteStore::new(pool.clone()), https)),
        NativePool::Postgres(pool) => {
            router.layer(configure(PostgresStore::new(pool.clone()), https))
        }
    }
}

fn configure<T: SessionStore + Clone>(store: T, https: bool) -> SessionManagerLayer<T> {
    SessionManagerLayer::new(store)
        .with_name(cookie_name(https))
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(https)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(time::Duration::seconds(IDLE_SECS)))
}

/// Deletes expired sessions; run periodically.
pub async fn delete_expired(db: &Db) -> Result<(), tower_sessions::session_store::Error> {
    use tower_sessions::ExpiredDeletion;
    match db.native() {
        NativePool::Sqlite(pool) => SqliteStore::new(pool.clone()).delete_expired().await,
        NativePool::Postgres(pool) => PostgresStore::new(pool.clone()).delete_expired().await,
    }
}
