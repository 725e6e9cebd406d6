//! The store layer: every SQL statement Sealpost runs lives below this
//! module, grouped by table (or aggregate). Stores speak in rows and plain
//! values; the rules (who may do what, when) live in the services and
//! flows above. Rows are read by column name (`sqlx::FromRow`), never by
//! position.

pub mod api_tokens;
pub mod audit;
mod db;
pub mod deliveries;
pub mod dev_mailbox;
pub mod idempotency;
pub mod inbox_codes;
pub mod incoming;
pub mod job_leases;
pub mod keys;
pub mod messages;
pub mod outbox;
pub mod pickup_codes;
pub mod rate_limits;
pub mod requests;
pub mod settings;
pub mod sign_in_throttle;
pub mod staff;
pub mod staff_links;
pub mod totp;
pub mod webhooks;

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

/// A value a statement binds as its one key.
trait Key<'q>: 'q + Send + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> {}
impl<'q, K: 'q + Send + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>> Key<'q> for K {}

/// A row type read by column name.
trait Row: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin {}
impl<T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin> Row for T {}

/// The store's most common reads: what one key finds, as rows or as the
/// one column selected (`value_by`, `values_by`).
macro_rules! keyed_reads {
    ($($name:ident($query:ident, $fetch:ident) -> $out:ident where $row:ty;)+) => {$(
        async fn $name<'q, 'c, T>(
            ex: impl sqlx::Executor<'c, Database = sqlx::Any>,
            sql: &'q str,
            key: impl Key<'q>,
        ) -> Result<$out<T>, sqlx::Error>
        where
            T: Send + Unpin,
            $row: Row,
        {
            sqlx::$query(sql).bind(key).$fetch(ex).await
        }
    )+};
}

keyed_reads! {
    row_by(query_as, fetch_optional) -> Option where T;
    rows_by(query_as, fetch_all) -> Vec where T;
    value_by(query_scalar, fetch_optional) -> Option where (T,);
    values_by(query_scalar, fetch_all) -> Vec where (T,);
}

/// Where a keyset page starts, as the store sees it: the key (none: from
/// the far end) and whether the page is read backwards; none: the first
/// page.
pub type PageFrom<K> = Option<(Option<K>, bool)>;

/// The condition and direction of a keyset page over a unique key:
/// `after` and `before` select the rows after and before the key (`$2`) in
/// the list's own `order` (`"ASC"` or `"DESC"`); a backwards page is read
/// in the opposite direction (the caller puts it back).
fn page_clause<K>(
    from: &PageFrom<K>,
    after: &'static str,
    before: &'static str,
    order: &'static str,
) -> (&'static str, &'static str) {
    let backwards = if order == "ASC" { "DESC" } else { "ASC" };
    match from {
        None | Some((None, false)) => ("", order),
        Some((None, true)) => ("", backwards),
        Some((Some(_), false)) => (after, order),
        Some((Some(_), true)) => (before, backwards),
    }
}

/// The rows of a keyset page statement: `$1` is the row limit, `$2` the
/// key when the page starts from one.
async fn page_rows<'q, T: Row>(
    db: &Db,
    sql: &'q str,
    limit: i64,
    key: Option<impl Key<'q>>,
) -> Result<Vec<T>, sqlx::Error> {
    let query = sqlx::query_as(sql).bind(limit);
    match key {
        Some(key) => query.bind(key),
        None => query,
    }
    .fetch_all(db.pool())
    .await
}

/// A value a built statement binds.
enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// Binds a built statement's arguments in order.
fn bind_all<'q, O>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    args: Vec<Arg<'q>>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    for a in args {
        query = match a {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
            Arg::Bytes(v) => query.bind(v),
        };
    }
    query
}

/// The plan of a built statement (SQLite's `EXPLAIN QUERY PLAN`,
/// PostgreSQL's `EXPLAIN`), one line per step: the plan tests check that
/// no staff list or job scans a whole table.
async fn explain(db: &Db, sql: &str, args: Vec<Arg<'_>>) -> Result<Vec<String>, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    let statement = match db.backend() {
        Backend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
        Backend::Postgres => {
            // With a handful of test rows a sequential scan is cheapest
            // anyway; ruling it out shows whether an index could serve.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await?;
            format!("EXPLAIN {sql}")
        }
    };
    let rows = bind_all(sqlx::query_as::<_, PlanLine>(&statement), args)
        .fetch_all(&mut *conn)
        .await;
    if db.backend() == Backend::Postgres {
        sqlx::query("RESET enable_seqscan")
            .execute(&mut *conn)
            .await?;
    }
    Ok(rows?.into_iter().map(|r| r.0).collect())
}

/// One line of a query plan: SQLite's `detail` column, PostgreSQL's only one.
struct PlanLine(String);

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for PlanLine {
    fn from_row(row: &'r sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row as _;
        row.try_get("detail")
            .or_else(|_| row.try_get("QUERY PLAN"))
            .map(PlanLine)
    }
}
