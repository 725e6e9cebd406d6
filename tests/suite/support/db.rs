//! The database as someone with raw access sees it, for tests of what the
//! application's own guards catch.

/// Drops the append-only triggers, as someone with raw database access could.
pub async fn disable_guards(app: &sealpost::app::App) {
    let statements: &[&str] = match app.db.backend() {
        sealpost::store::Backend::Sqlite => &[
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
        sealpost::store::Backend::Postgres => &[
            "DROP TRIGGER audit_log_no_update ON audit_log",
            "DROP TRIGGER audit_log_no_delete ON audit_log",
        ],
    };
    for s in statements {
        sqlx::query(s)
            .execute(app.db.pool())
            .await
            .expect("drop trigger");
    }
}
