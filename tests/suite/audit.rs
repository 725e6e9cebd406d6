//! The audit log: append-only, hash-chained, verified end to end; tampering
//! is reported at the right row; concurrent appends never fork the chain.

use sealpost::audit::{Action, Actor, Event, Verification};
use sealpost::vault::MessageId;

use crate::support::db::disable_guards;
use crate::support::env::{TestEnv, runtime};

fn event(i: u32) -> Event {
    let e = Event::new(
        if i.is_multiple_of(3) {
            Actor::Cli
        } else {
            Actor::Staff(format!("user-{i}"))
        },
        if i.is_multiple_of(2) {
            Action::MessageExported
        } else {
            Action::KeysRotated
        },
    );
    let e = if i.is_multiple_of(2) {
        e.message(MessageId::new())
    } else {
        e
    };
    let e = if i.is_multiple_of(5) {
        e.ip("192.0.2.7".parse::<std::net::IpAddr>().expect("ip"))
    } else {
        e
    };
    e.detail(serde_json::json!({ "n": i }))
}

#[test]
fn chain_verifies_and_tampering_is_found_at_the_right_row() {
    // A runtime of its own, not #[tokio::test]: steps run one at a time from this thread (some spawn onto the runtime and join).
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    for i in 1..=40 {
        let id = rt
            .block_on(app.audit.record_now(&event(i)))
            .expect("record");
        assert_eq!(id, i64::from(i));
    }
    assert_eq!(
        rt.block_on(app.audit.verify()).expect("verify"),
        Verification::Intact { events: 40 }
    );
    let out = env.sealpost(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("40 event(s)"));

    // The database refuses edits and deletions outright.
    let update = rt.block_on(
        sqlx::query("UPDATE audit_log SET actor = 'cli' WHERE id = 7").execute(app.db.pool()),
    );
    assert!(update.is_err(), "append-only trigger must refuse UPDATE");
    let delete =
        rt.block_on(sqlx::query("DELETE FROM audit_log WHERE id = 7").execute(app.db.pool()));
    assert!(delete.is_err(), "append-only trigger must refuse DELETE");

    // Someone with raw access rewrites event 23: verification names it.
    rt.block_on(disable_guards(&app));
    rt.block_on(
        sqlx::query("UPDATE audit_log SET actor = 'staff:someone-else' WHERE id = 23")
            .execute(app.db.pool()),
    )
    .expect("tamper");
    assert_eq!(
        rt.block_on(app.audit.verify()).expect("verify"),
        Verification::Broken {
            id: 23,
            reason: "its contents were changed"
        }
    );
    let out = env.sealpost(&["audit", "verify"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("event #23"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn removed_or_recomputed_rows_break_the_chain() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    for i in 1..=12 {
        rt.block_on(app.audit.record_now(&event(i)))
            .expect("record");
    }
    rt.block_on(disable_guards(&app));
    // Deleting an event shows up at the next one.
    rt.block_on(sqlx::query("DELETE FROM audit_log WHERE id = 5").execute(app.db.pool()))
        .expect("delete");
    assert_eq!(
        rt.block_on(app.audit.verify()).expect("verify"),
        Verification::Broken {
            id: 6,
            reason: "events before this one are missing"
        }
    );
    // Renumbering to hide the gap does not help: the chain no longer links.
    for id in 6..=12 {
        rt.block_on(
            sqlx::query("UPDATE audit_log SET id = $1 WHERE id = $2")
                .bind(id - 1)
                .bind(id)
                .execute(app.db.pool()),
        )
        .expect("renumber");
    }
    let broken = rt.block_on(app.audit.verify()).expect("verify");
    assert!(
        matches!(broken, Verification::Broken { id: 5, .. }),
        "{broken:?}"
    );
}

#[test]
fn concurrent_appends_from_two_instances_keep_one_chain() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let one = rt.block_on(env.app());
    let two = rt.block_on(env.app());
    let tasks: Vec<_> = [one.clone(), two.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, app)| {
            rt.spawn(async move {
                for i in 0..30u32 {
                    app.audit
                        .record_now(&event(i + 100 * n as u32))
                        .await
                        .expect("record");
                }
            })
        })
        .collect();
    for t in tasks {
        rt.block_on(t).expect("task");
    }
    assert_eq!(
        rt.block_on(one.audit.verify()).expect("verify"),
        Verification::Intact { events: 60 }
    );
    let now = crate::support::env::now();
    let events = rt
        .block_on(two.audit.events_between(now - 60, now + 60))
        .expect("range");
    assert_eq!(events.len(), 60);
    assert!(events.windows(2).all(|w| w[0].id + 1 == w[1].id));
}

/// Events recorded at the same moment share commits (group commit): each
/// caller still gets its own event's id, every event lands once, and the
/// chain stays one, with two instances appending in bursts at once.
#[test]
fn a_burst_of_concurrent_appends_shares_commits_and_keeps_one_chain() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let one = rt.block_on(env.app());
    let two = rt.block_on(env.app());
    let tasks: Vec<_> = (0..300u32)
        .map(|i| {
            let app = if i % 2 == 0 { one.clone() } else { two.clone() };
            rt.spawn(async move { (i, app.audit.record_now(&event(i)).await.expect("record")) })
        })
        .collect();
    let mut ids = std::collections::BTreeMap::new();
    for t in tasks {
        let (i, id) = rt.block_on(t).expect("task");
        assert!(ids.insert(id, i).is_none(), "id {id} given twice");
    }
    assert_eq!(
        rt.block_on(one.audit.verify()).expect("verify"),
        Verification::Intact { events: 300 }
    );
    let now = crate::support::env::now();
    let events = rt
        .block_on(two.audit.events_between(now - 60, now + 60))
        .expect("range");
    assert_eq!(events.len(), 300);
    for e in &events {
        let n = ids.get(&e.id).expect("an id nobody was given");
        assert_eq!(
            e.detail.as_deref(),
            Some(serde_json::json!({ "n": n }).to_string().as_str()),
            "event {} is not the one its caller recorded",
            e.id
        );
    }
}

/// A caller that goes away while its group commits (a client hanging up
/// cancels its request) fails no one else's append and forks nothing.
#[test]
fn callers_cancelled_mid_burst_fail_no_other_append() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let app = app.clone();
            rt.spawn(async move { app.audit.record_now(&event(i)).await })
        })
        .collect();
    // Cancel every third caller at once, whichever of them is writing.
    let (cancelled, kept): (Vec<_>, Vec<_>) =
        tasks.into_iter().enumerate().partition(|(i, _)| i % 3 == 0);
    for (_, t) in &cancelled {
        t.abort();
    }
    let mut kept_ids = std::collections::BTreeSet::new();
    for (i, t) in kept {
        let id = rt
            .block_on(t)
            .expect("task")
            .unwrap_or_else(|e| panic!("append {i} failed: {e:?}"));
        assert!(kept_ids.insert(id), "id {id} given twice");
    }
    for (_, t) in cancelled {
        let _ = rt.block_on(t);
    }
    let Verification::Intact { events } = rt.block_on(app.audit.verify()).expect("verify") else {
        panic!("the chain broke");
    };
    // Every kept append landed; a cancelled one may or may not have.
    assert_eq!(kept_ids.len(), 133);
    assert!(
        (133..=200).contains(&events) && kept_ids.iter().all(|&id| id <= events as i64),
        "{events} events"
    );
}

#[test]
fn command_line_key_operations_are_audited() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    drop(rt.block_on(env.app()));
    assert!(env.sealpost(&["keys", "rotate"]).status.success());
    assert!(env.sealpost(&["sweep"]).status.success());
    let app = rt.block_on(env.app());
    let now = crate::support::env::now();
    let events = rt
        .block_on(app.audit.events_between(0, now + 60))
        .expect("events");
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["keys.rotated", "blobs.swept"]);
    assert!(events.iter().all(|e| e.actor == "cli"));
    assert_eq!(
        rt.block_on(app.audit.verify()).expect("verify"),
        Verification::Intact { events: 2 }
    );
}

#[test]
fn export_a_date_range_as_csv_or_json() {
    // 2030-03-15 12:00:00 UTC, then two days later.
    const DAY1_NOON: i64 = 1_899_806_400;
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let clock = sealpost::clock::ManualClock::new(DAY1_NOON);
    let app = rt
        .block_on(sealpost::app::App::open_with_clock(
            env.config(),
            std::sync::Arc::new(clock.clone()),
        ))
        .expect("app");
    rt.block_on(app.audit.record_now(&event(2)))
        .expect("record");
    clock.advance(2 * 24 * 3600);
    rt.block_on(app.audit.record_now(&event(3)))
        .expect("record");

    let out = env.sealpost(&[
        "audit",
        "export",
        "--from",
        "2030-03-15",
        "--to",
        "2030-03-16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,at,actor,action,message_id,ip,detail");
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].starts_with(&format!("1,{DAY1_NOON},staff:user-2,message.exported,")),
        "{csv}"
    );
    assert!(
        lines[1].ends_with(r#","{""n"":2}""#),
        "JSON detail is quoted: {csv}"
    );

    let out = env.sealpost(&[
        "audit",
        "export",
        "--from",
        "2030-03-15",
        "--to",
        "2030-03-17",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<i64> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [1, 2]);

    let bad = env.sealpost(&[
        "audit",
        "export",
        "--from",
        "15/03/2030",
        "--to",
        "2030-03-16",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a date"));
    // Exporting is itself an audited event, and the chain still holds.
    let events = rt
        .block_on(app.audit.events_between(0, i64::MAX))
        .expect("events");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.action == "audit.exported")
            .count(),
        2
    );
    assert!(matches!(
        rt.block_on(app.audit.verify()).expect("verify"),
        Verification::Intact { events: 4 }
    ));
}
