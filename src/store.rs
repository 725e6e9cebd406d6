//! The store layer: every SQL statement Sealpost runs lives below this
//! module, grouped by table (or aggregate). Stores speak in rows and plain
//! values; the rules (who may do what, when) live in the services and
//! flows above. Rows are read by column name (`sqlx::FromRow`), never by
//! position.

pub mod audit;
mod db;
pub mod deliveries;
pub mod dev_mailbox;
pub mod job_leases;
pub mod keys;
pub mod messages;
pub mod outbox;
pub mod pickup_codes;
pub mod rate_limits;
pub mod settings;
pub mod sign_in_throttle;
pub mod staff;
pub mod staff_links;
pub mod totp;

pub use db::{Backend, Db, DbError, NativePool, Pool, PoolSettings, Tx, placeholders};

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Runs one statement; returns how many rows it changed (a compare-and-set
/// claims when that is 1).
async fn exec<'q, 'c, E>(executor: E, query: Query<'q>) -> Result<u64, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    Ok(query.execute(executor).await?.rows_affected())
}
