//! The twin migration sets (`migrations/sqlite`, `migrations/postgres`)
//! give the same schema: a fresh database of each kind is migrated as the
//! app does it, both schemas are read back and normalised to (table,
//! column, type class, nullable, primary key) and (table, columns, unique,
//! partial, name) lists, and the lists must be equal.
//!
//! This test needs PostgreSQL even when the suite runs on SQLite: it uses
//! SEALPOST_TEST_DATABASE_URL, or the server `.ci/run` guarantees.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sealpost::store::{Db, PoolSettings};
use secrecy::SecretString;
use sqlx::{Connection, Row};

use crate::support::env::{PG_ENV, PgDatabase};

/// The PostgreSQL server `.ci/run` starts when SEALPOST_TEST_DATABASE_URL is unset.
const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// sqlx's own bookkeeping, not part of the application's schema.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub table: String,
    pub name: String,
    /// `integer`, `text`, `bytes`, `float`, `bool`, or the declared type
    /// (lower case) when it is none of those.
    pub class: String,
    pub nullable: bool,
    pub primary_key: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Index {
    pub table: String,
    pub columns: Vec<String>,
    pub unique: bool,
    /// Has a `WHERE` clause.
    pub partial: bool,
    /// The name of an index made with `CREATE INDEX`; `None` for one behind a
    /// `UNIQUE` constraint, whose name each database makes up itself.
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    pub columns: BTreeSet<Column>,
    /// Primary-key indexes are left out: the key is a column property.
    pub indexes: BTreeSet<Index>,
}

/// The class of a declared column type, so each dialect's spelling of one
/// kind of value compares equal (SQLite's affinity rules, PostgreSQL's
/// `information_schema` names).
pub fn type_class(declared: &str) -> String {
    let t = declared.trim().to_ascii_lowercase();
    let class = match t.as_str() {
        "bytea" | "blob" => "bytes",
        "boolean" | "bool" => "bool",
        "double precision" | "real" | "float" | "double" => "float",
        _ if t.contains("int") => "integer",
        _ if t.contains("char") || t.contains("text") || t.contains("clob") => "text",
        _ => return t,
    };
    class.to_owned()
}

/// Every difference between the two schemas, one line each; empty when they
/// match.
pub fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let by_key = |s: &Schema| -> BTreeMap<(String, String), Column> {
        s.columns
            .iter()
            .map(|c| ((c.table.clone(), c.name.clone()), c.clone()))
            .collect()
    };
    let (lite, pg) = (by_key(sqlite), by_key(postgres));
    let mut out = Vec::new();
    for (key, l) in &lite {
        match pg.get(key) {
            None => out.push(format!("column {}.{} only on SQLite: {l:?}", key.0, key.1)),
            Some(p) if p != l => out.push(format!(
                "column {}.{} differs: SQLite {l:?}, PostgreSQL {p:?}",
                key.0, key.1
            )),
            Some(_) => {}
        }
    }
    for (key, p) in &pg {
        if !lite.contains_key(key) {
            out.push(format!(
                "column {}.{} only on PostgreSQL: {p:?}",
                key.0, key.1
            ));
        }
    }
    for i in sqlite.indexes.difference(&postgres.indexes) {
        out.push(format!("index only on SQLite: {i:?}"));
    }
    for i in postgres.indexes.difference(&sqlite.indexes) {
        out.push(format!("index only on PostgreSQL: {i:?}"));
    }
    out
}

fn pool_settings() -> PoolSettings {
    PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
    }
}

/// Migrates the database at `url` exactly as the app does.
async fn migrate(url: &str) {
    let db = Db::connect(&SecretString::from(url.to_owned()), pool_settings())
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    db.close().await;
}

pub async fn sqlite_schema(url: &str) -> Schema {
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .expect("open SQLite");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master
         WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> $1",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(&mut conn)
    .await
    .expect("list tables");
    let mut schema = Schema::default();
    for table in tables {
        let rows = sqlx::query(r#"SELECT name, type, "notnull", pk FROM pragma_table_info($1)"#)
            .bind(&table)
            .fetch_all(&mut conn)
            .await
            .expect("columns");
        for r in rows {
            let primary_key = r.get::<i64, _>("pk") > 0;
            schema.columns.insert(Column {
                table: table.clone(),
                name: r.get("name"),
                class: type_class(r.get("type")),
                // SQLite lets a non-INTEGER primary key hold NULL unless it
                // says NOT NULL (a historical quirk); PostgreSQL never does.
                // The app never stores one, so both count as NOT NULL.
                nullable: r.get::<i64, _>("notnull") == 0 && !primary_key,
                primary_key,
            });
        }
        let indexes =
            sqlx::query(r#"SELECT name, "unique", origin, partial FROM pragma_index_list($1)"#)
                .bind(&table)
                .fetch_all(&mut conn)
                .await
                .expect("indexes");
        for r in indexes {
            let origin: String = r.get("origin");
            if origin == "pk" {
                continue;
            }
            let name: String = r.get("name");
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&name)
                    .fetch_all(&mut conn)
                    .await
                    .expect("index columns");
            schema.indexes.insert(Index {
                table: table.clone(),
                columns,
                unique: r.get::<i64, _>("unique") != 0,
                partial: r.get::<i64, _>("partial") != 0,
                // origin "c": CREATE INDEX; "u": a UNIQUE constraint.
                name: (origin == "c").then_some(name),
            });
        }
    }
    conn.close().await.ok();
    schema
}

pub async fn postgres_schema(url: &str) -> Schema {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to PostgreSQL");
    let mut schema = Schema::default();
    let columns = sqlx::query(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name,
                c.data_type::text AS data_type, c.is_nullable::text = 'YES' AS nullable,
                EXISTS (
                    SELECT 1 FROM information_schema.table_constraints tc
                    JOIN information_schema.key_column_usage k
                      ON k.constraint_name = tc.constraint_name
                     AND k.table_schema = tc.table_schema
                     AND k.table_name = tc.table_name
                    WHERE tc.constraint_type = 'PRIMARY KEY'
                      AND tc.table_schema = c.table_schema
                      AND tc.table_name = c.table_name
                      AND k.column_name = c.column_name
                ) AS primary_key
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
           AND c.table_name <> $1",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(&mut conn)
    .await
    .expect("columns");
    for r in columns {
        schema.columns.insert(Column {
            table: r.get("table_name"),
            name: r.get("column_name"),
            class: type_class(r.get("data_type")),
            nullable: r.get("nullable"),
            primary_key: r.get("primary_key"),
        });
    }
    let indexes = sqlx::query(
        "SELECT t.relname::text AS table_name, i.relname::text AS index_name,
                ix.indisunique AS is_unique, ix.indpred IS NOT NULL AS partial,
                EXISTS (
                    SELECT 1 FROM pg_constraint c
                    WHERE c.conindid = ix.indexrelid AND c.conrelid = t.oid
                      AND c.contype IN ('p', 'u')
                ) AS from_constraint,
                (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord)
                 FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                ) AS columns
         FROM pg_index ix
         JOIN pg_class i ON i.oid = ix.indexrelid
         JOIN pg_class t ON t.oid = ix.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = 'public' AND NOT ix.indisprimary AND t.relname <> $1",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(&mut conn)
    .await
    .expect("indexes");
    for r in indexes {
        let columns: Option<String> = r.get("columns");
        let from_constraint: bool = r.get("from_constraint");
        schema.indexes.insert(Index {
            table: r.get("table_name"),
            columns: columns
                .unwrap_or_default()
                .split(',')
                .map(str::to_owned)
                .collect(),
            unique: r.get("is_unique"),
            partial: r.get("partial"),
            name: (!from_constraint).then(|| r.get("index_name")),
        });
    }
    conn.close().await.ok();
    schema
}

/// A fresh SQLite database in `dir`, migrated; returns its URL.
async fn migrated_sqlite(dir: &tempfile::TempDir, name: &str) -> String {
    let url = format!("sqlite://{}/{name}.db", dir.path().display());
    migrate(&url).await;
    url
}

fn postgres_admin_url() -> String {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => DEFAULT_PG.to_owned(),
    }
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_give_the_same_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lite = sqlite_schema(&migrated_sqlite(&dir, "parity").await).await;
    let pg_db = PgDatabase::create(&postgres_admin_url()).await;
    migrate(&pg_db.url).await;
    let pg = postgres_schema(&pg_db.url).await;

    // The extraction found the schema at all (an empty pair would match).
    assert!(
        lite.columns
            .iter()
            .any(|c| c.table == "messages" && c.name == "sealed_meta" && c.class == "bytes"),
        "{lite:#?}"
    );
    assert!(
        pg.indexes
            .iter()
            .any(|i| i.name.as_deref() == Some("outbox_due") && i.partial),
        "{pg:#?}"
    );
    let diff = differences(&lite, &pg);
    assert!(
        diff.is_empty(),
        "the SQLite and PostgreSQL migrations differ:\n{}",
        diff.join("\n")
    );

    // And the comparison sees a change made on one side only.
    let mut one_sided = pg.clone();
    let mut extra = one_sided
        .columns
        .iter()
        .find(|c| c.table == "deliveries")
        .expect("a deliveries column")
        .clone();
    extra.name = "only_here".to_owned();
    one_sided.columns.insert(extra);
    assert_eq!(differences(&lite, &one_sided).len(), 1);
}

#[tokio::test]
async fn a_column_or_index_added_on_one_side_only_is_a_difference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = sqlite_schema(&migrated_sqlite(&dir, "plain").await).await;
    let changed_url = migrated_sqlite(&dir, "changed").await;
    assert_eq!(
        differences(&plain, &sqlite_schema(&changed_url).await),
        Vec::<String>::new(),
        "two fresh databases from the same migrations"
    );

    let mut conn = sqlx::SqliteConnection::connect(&changed_url)
        .await
        .expect("open");
    sqlx::query("ALTER TABLE messages ADD COLUMN extra_note TEXT")
        .execute(&mut conn)
        .await
        .expect("add column");
    conn.close().await.ok();
    let diff = differences(&sqlite_schema(&changed_url).await, &plain);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(
        diff[0].starts_with("column messages.extra_note only on SQLite"),
        "{diff:?}"
    );

    let mut conn = sqlx::SqliteConnection::connect(&changed_url)
        .await
        .expect("open");
    sqlx::query("CREATE INDEX messages_extra ON messages(extra_note, created_at)")
        .execute(&mut conn)
        .await
        .expect("add index");
    conn.close().await.ok();
    let diff = differences(&plain, &sqlite_schema(&changed_url).await);
    assert_eq!(diff.len(), 2, "{diff:?}");
    assert!(
        diff.iter()
            .any(|d| d.starts_with("column messages.extra_note only on PostgreSQL")),
        "{diff:?}"
    );
    assert!(
        diff.iter()
            .any(|d| d.starts_with("index only on PostgreSQL")
                && d.contains("messages_extra")
                && d.contains("\"extra_note\", \"created_at\"")),
        "{diff:?}"
    );
}

#[test]
fn changed_nullability_type_or_uniqueness_is_a_difference() {
    let column = Column {
        table: "t".into(),
        name: "c".into(),
        class: "integer".into(),
        nullable: false,
        primary_key: false,
    };
    let index = Index {
        table: "t".into(),
        columns: vec!["c".into()],
        unique: false,
        partial: false,
        name: Some("t_c".into()),
    };
    let base = Schema {
        columns: BTreeSet::from([column.clone()]),
        indexes: BTreeSet::from([index.clone()]),
    };
    assert!(differences(&base, &base.clone()).is_empty());

    let mut nullable = base.clone();
    nullable.columns = BTreeSet::from([Column {
        nullable: true,
        ..column.clone()
    }]);
    let diff = differences(&base, &nullable);
    assert_eq!(diff.len(), 1);
    assert!(diff[0].starts_with("column t.c differs"), "{diff:?}");

    let mut text = base.clone();
    text.columns = BTreeSet::from([Column {
        class: "text".into(),
        ..column.clone()
    }]);
    assert_eq!(differences(&base, &text).len(), 1);

    let mut unique = base.clone();
    unique.indexes = BTreeSet::from([Index {
        unique: true,
        ..index.clone()
    }]);
    // Seen from both sides: one index each side lacks.
    assert_eq!(differences(&base, &unique).len(), 2);

    let mut no_index = base.clone();
    no_index.indexes.clear();
    assert_eq!(
        differences(&base, &no_index),
        [format!("index only on SQLite: {index:?}")]
    );
}

#[test]
fn each_dialects_spelling_has_one_class() {
    for (declared, class) in [
        ("BIGINT", "integer"),
        ("INTEGER", "integer"),
        ("INT8", "integer"),
        ("bigint", "integer"),
        ("TEXT", "text"),
        ("VARCHAR(20)", "text"),
        ("character varying", "text"),
        ("BLOB", "bytes"),
        ("bytea", "bytes"),
        ("REAL", "float"),
        ("double precision", "float"),
        ("BOOLEAN", "bool"),
        ("boolean", "bool"),
        ("timestamp with time zone", "timestamp with time zone"),
    ] {
        assert_eq!(type_class(declared), class, "{declared}");
    }
}
