//! Staff lists and maintenance queries stay index-backed: each one's plan
//! (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN` with sequential
//! scans ruled out) must not walk the whole `deliveries` or `messages`
//! table, whatever the data grows to. Runs on the backend the suite runs on.

use sealpost::store::deliveries::{self as rows, ListFilter, StatusFilter};

use crate::support::env::{TestEnv, now};

/// A plan step that reads every row of a big table.
fn full_scan(line: &str) -> bool {
    let sqlite = [
        "SCAN d",
        "SCAN m",
        "SCAN deliveries",
        "SCAN messages",
        "SCAN incoming",
    ]
    .iter()
    .any(|s| line.trim_start().starts_with(s) && !line.contains("USING"));
    let postgres = ["deliveries", "messages", "incoming"]
        .iter()
        .any(|t| line.contains(&format!("Seq Scan on {t}")));
    sqlite || postgres
}

fn assert_no_full_scan(name: &str, plan: &[String]) {
    assert!(!plan.is_empty(), "{name}: no plan");
    assert!(
        !plan.iter().any(|l| full_scan(l)),
        "{name} scans a whole table:\n{}",
        plan.join("\n")
    );
}

#[test]
fn the_checker_sees_a_full_scan() {
    assert!(full_scan("SCAN d"));
    assert!(full_scan(
        "  ->  Seq Scan on deliveries d  (cost=0.00..1.00 rows=1 width=8)"
    ));
    assert!(!full_scan("SCAN d USING INDEX deliveries_created"));
    assert!(!full_scan(
        "SEARCH d USING INDEX deliveries_sender (sender_id=?)"
    ));
    assert!(!full_scan(
        "Index Scan using deliveries_sender on deliveries d"
    ));
}

#[tokio::test]
async fn staff_lists_and_maintenance_use_indexes() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    app.db.optimize().await.expect("optimize");
    let now = now();
    let index = [7u8; 32];
    let sender = "00000000-0000-4000-8000-000000000001";
    // Older than a key, newer than it, and the oldest page (no key).
    let key = Some((now, "00000000-0000-4000-8000-000000000002"));
    let starts = [
        None,
        Some((key, false)),
        Some((key, true)),
        Some((None, true)),
    ];
    let statuses = [
        None,
        Some(StatusFilter::Locked),
        Some(StatusFilter::Revoked),
        Some(StatusFilter::Expired),
        Some(StatusFilter::Progress("emailed")),
    ];
    for who in [Some(sender), None] {
        for status in statuses {
            for from in starts {
                for search in [None, Some(&index[..])] {
                    let f = ListFilter {
                        sender_id: who,
                        recipient_index: search,
                        status,
                        from,
                        limit: 26,
                    };
                    let plan = rows::list_plan(&app.db, &f, now).await.expect("plan");
                    assert_no_full_scan(&format!("{f:?}"), &plan);
                }
            }
        }
    }
    for (name, plan) in rows::maintenance_plans(&app.db, sender, now)
        .await
        .expect("plans")
    {
        assert_no_full_scan(name, &plan);
    }
}

#[tokio::test]
async fn an_address_search_starts_from_the_blind_index() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let f = ListFilter {
        sender_id: Some("00000000-0000-4000-8000-000000000001"),
        recipient_index: Some(&[7u8; 32]),
        limit: 26,
        ..ListFilter::default()
    };
    let plan = rows::list_plan(&app.db, &f, now()).await.expect("plan");
    assert!(
        plan.iter().any(|l| l.contains("messages_recipient_index")),
        "the search does not use the blind index:\n{}",
        plan.join("\n")
    );
}

#[tokio::test]
async fn the_locked_banner_counts_from_its_own_index() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    app.db.optimize().await.expect("optimize");
    let sender = "00000000-0000-4000-8000-000000000001";
    for (name, plan) in rows::maintenance_plans(&app.db, sender, now())
        .await
        .expect("plans")
        .into_iter()
        .filter(|(name, _)| name.starts_with("count_locked"))
    {
        assert!(
            plan.iter().any(|l| l.contains("deliveries_locked_live")),
            "{name} does not count from deliveries_locked_live:\n{}",
            plan.join("\n")
        );
        // SQLite says whether the index alone answers (no table rows read).
        if app.db.backend() == sealpost::store::Backend::Sqlite {
            assert!(
                plan.iter().any(|l| l.contains("COVERING INDEX")),
                "{name} reads table rows:\n{}",
                plan.join("\n")
            );
        }
    }
}

/// The staff inbox (an agent's and an admin's view, unread or all, every
/// page start) and the retention job read indexes, never the whole table.
#[tokio::test]
async fn the_inbox_and_its_retention_use_indexes() {
    use sealpost::store::incoming::{self as incoming, ListFilter};
    let env = TestEnv::new().await;
    let app = env.app().await;
    app.db.optimize().await.expect("optimize");
    let now = now();
    let key = Some((now, "00000000-0000-4000-8000-000000000002"));
    for visible_to in [Some("00000000-0000-4000-8000-000000000001"), None] {
        for unread in [false, true] {
            for from in [
                None,
                Some((key, false)),
                Some((key, true)),
                Some((None, true)),
            ] {
                let f = ListFilter {
                    visible_to,
                    unread,
                    from,
                    limit: 26,
                };
                let plan = incoming::list_plan(&app.db, &f).await.expect("plan");
                assert_no_full_scan(&format!("{f:?}"), &plan);
            }
        }
    }
    let plan = incoming::due_plan(&app.db, now).await.expect("plan");
    assert_no_full_scan("incoming due", &plan);
}
