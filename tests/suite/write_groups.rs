//! Write transactions under concurrency. On SQLite this process's writers
//! share one transaction, committed in groups (`store::db::group`); on
//! PostgreSQL each has its own. Either way each writer's changes must stand
//! or fall on their own, and be visible to everyone once `commit` returns.

use std::collections::BTreeSet;

use sealpost::app::App;

use crate::support::env::{TestEnv, runtime};

#[derive(Debug, PartialEq)]
enum Ending {
    Committed,
    Dropped,
    RolledBack,
}

async fn insert(tx: &mut sealpost::store::Tx, name: &str) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, 'x')")
            .bind(name)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    )
}

async fn exists(app: &App, name: &str) -> bool {
    let found: Option<String> = sqlx::query_scalar("SELECT name FROM settings WHERE name = $1")
        .bind(name)
        .fetch_optional(app.db.pool())
        .await
        .expect("read");
    found.is_some()
}

/// Writer `i`: commits, drops its transaction mid-way, or hits a
/// constraint (a name taken) and rolls back; a committed row must be
/// readable on another connection as soon as `commit` returns.
async fn writer(app: App, i: u32) -> Ending {
    let name = format!("group-test-{i}");
    let mut tx = app.db.begin().await.expect("begin");
    assert_eq!(insert(&mut tx, &name).await.expect("insert"), 1);
    // Give others a chance to queue behind this one.
    tokio::task::yield_now().await;
    match i % 4 {
        0 => {
            drop(tx);
            Ending::Dropped
        }
        1 => {
            // The same name again: the statement fails, the writer gives up.
            assert!(insert(&mut tx, &name).await.is_err());
            tx.rollback().await.expect("rollback");
            Ending::RolledBack
        }
        _ => {
            tx.commit().await.expect("commit");
            assert!(exists(&app, &name).await, "{name} not visible after commit");
            Ending::Committed
        }
    }
}

async fn committed_names(app: &App) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT name FROM settings WHERE name LIKE 'group-test-%'")
        .fetch_all(app.db.pool())
        .await
        .expect("names")
        .into_iter()
        .collect()
}

#[test]
fn concurrent_writers_commit_undo_and_fail_each_on_their_own() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let tasks: Vec<_> = (0..240u32)
        .map(|i| rt.spawn(writer(app.clone(), i)))
        .collect();
    let mut expected = BTreeSet::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let ending = rt.block_on(task).expect("writer");
        if ending == Ending::Committed {
            expected.insert(format!("group-test-{i}"));
        }
    }
    assert_eq!(expected.len(), 120);
    assert_eq!(rt.block_on(committed_names(&app)), expected);
    // The database is free for the next writer.
    let mut tx = rt.block_on(app.db.begin()).expect("begin");
    rt.block_on(insert(&mut tx, "group-test-last"))
        .expect("insert");
    rt.block_on(tx.commit()).expect("commit");
    assert!(rt.block_on(exists(&app, "group-test-last")));
}

#[test]
fn writers_cancelled_at_any_point_leave_the_others_committed() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let app = app.clone();
            rt.spawn(async move {
                let name = format!("group-test-{i}");
                let mut tx = app.db.begin().await.expect("begin");
                insert(&mut tx, &name).await.expect("insert");
                tokio::task::yield_now().await;
                tx.commit().await.expect("commit");
            })
        })
        .collect();
    // Cancel every third writer, wherever it is: waiting for the gate,
    // inside its transaction, or waiting for its group's commit.
    let (cancelled, kept): (Vec<_>, Vec<_>) =
        tasks.into_iter().enumerate().partition(|(i, _)| i % 3 == 0);
    for (_, t) in &cancelled {
        t.abort();
    }
    let mut kept_names = BTreeSet::new();
    for (i, t) in kept {
        rt.block_on(t)
            .unwrap_or_else(|e| panic!("writer {i} failed: {e:?}"));
        kept_names.insert(format!("group-test-{i}"));
    }
    for (_, t) in cancelled {
        let _ = rt.block_on(t);
    }
    let names = rt.block_on(committed_names(&app));
    // Every kept writer's row is there; a cancelled one may or may not be.
    assert!(names.is_superset(&kept_names));
    assert!(names.len() <= 200);
    // Nothing was left open: the next writer gets in and commits.
    let mut tx = rt.block_on(app.db.begin()).expect("begin");
    rt.block_on(insert(&mut tx, "group-test-last"))
        .expect("insert");
    rt.block_on(tx.commit()).expect("commit");
    assert!(rt.block_on(exists(&app, "group-test-last")));
}
