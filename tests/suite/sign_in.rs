//! Staff sign-in: one answer for wrong, unknown and disabled; back-off per
//! (account, address) and per address, held in the database; a high
//! account-wide limit that emails the owner; rehash on sign-in; pruning.

use std::net::IpAddr;
use std::sync::Arc;

use argon2::password_hash::PasswordHasher;
use sealpost::app::App;
use sealpost::audit::{Actor, Verification};
use sealpost::clock::ManualClock;
use sealpost::staff::{Role, StaffEmail, StaffError};
use secrecy::SecretString;

use crate::support::START;
use crate::support::env::{TestEnv, runtime};

const PW: &str = "a long enough passphrase";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

async fn app_with_clock(env: &TestEnv, clock: &ManualClock) -> App {
    App::open_with_clock(env.config(), Arc::new(clock.clone()))
        .await
        .expect("app")
}

async fn staff(app: &App, email: &str) {
    let email = StaffEmail::parse(email).expect("email");
    app.accounts
        .create(Actor::Cli, &email, Role::Agent, pw(PW))
        .await
        .expect("create");
}

#[test]
fn wrong_unknown_and_disabled_get_the_same_answer() {
    // A runtime of its own, not #[tokio::test]: argon2 hashing for the weaker-hash test and each step run from this thread.
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let clock = ManualClock::new(START);
    let app = rt.block_on(app_with_clock(&env, &clock));
    rt.block_on(staff(&app, "ann@example.com"));
    rt.block_on(staff(&app, "off@example.com"));
    let off = StaffEmail::parse("off@example.com").expect("email");
    rt.block_on(app.accounts.disable(Actor::Cli, &off))
        .expect("disable");
    let me = ip("198.51.100.4");

    let ok = rt
        .block_on(app.sign_in.authenticate(" Ann@Example.com ", pw(PW), me))
        .expect("right password");
    assert_eq!(ok.email.as_str(), "ann@example.com");

    let mut answers = Vec::new();
    for (email, password) in [
        ("ann@example.com", "not the passphrase"),
        ("nobody@example.com", PW),
        ("off@example.com", PW),
        ("not an address", PW),
    ] {
        let err = rt
            .block_on(app.sign_in.authenticate(email, pw(password), me))
            .expect_err(email);
        assert!(
            matches!(err, StaffError::InvalidCredentials),
            "{email}: {err:?}"
        );
        answers.push(err.to_string());
    }
    answers.dedup();
    assert_eq!(
        answers.len(),
        1,
        "one message for every failure: {answers:?}"
    );

    let events = rt
        .block_on(app.audit.events_between(0, START + 60))
        .expect("events");
    let sign_ins: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.action.starts_with("staff.sign"))
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.split(':').next().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        sign_ins,
        [
            ("staff.signed_in", "staff"),
            ("staff.sign_in_failed", "staff"),
            ("staff.sign_in_failed", "anonymous"),
            ("staff.sign_in_failed", "staff"),
            ("staff.sign_in_failed", "anonymous"),
        ]
    );
    assert!(
        events
            .iter()
            .filter(|e| e.action.starts_with("staff.sign"))
            .all(|e| e.ip.as_deref() == Some("198.51.100.4"))
    );
    assert!(matches!(
        rt.block_on(app.audit.verify()).expect("verify"),
        Verification::Intact { .. }
    ));
}

#[test]
fn repeated_failures_back_off_per_account_and_success_resets() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let clock = ManualClock::new(START);
    let app = rt.block_on(app_with_clock(&env, &clock));
    rt.block_on(staff(&app, "ann@example.com"));
    let me = ip("198.51.100.4");
    let attempt = |password: &str| {
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(password), me),
        )
    };

    for _ in 0..4 {
        assert!(matches!(
            attempt("wrong guess"),
            Err(StaffError::InvalidCredentials)
        ));
    }
    // The fifth failure starts a 30 s back-off; even the right password waits.
    assert!(matches!(
        attempt("wrong guess"),
        Err(StaffError::InvalidCredentials)
    ));
    match attempt(PW) {
        Err(StaffError::Throttled { retry_after_secs }) => assert_eq!(retry_after_secs, 30),
        other => panic!("expected throttling, got {other:?}"),
    }
    // Another instance on the same database enforces the same limit.
    let other_instance = rt.block_on(app_with_clock(&env, &clock));
    assert!(matches!(
        rt.block_on(
            other_instance
                .sign_in
                .authenticate("ann@example.com", pw(PW), me)
        ),
        Err(StaffError::Throttled { .. })
    ));
    clock.advance(31);
    // Each further failure doubles the wait.
    assert!(matches!(
        attempt("wrong again"),
        Err(StaffError::InvalidCredentials)
    ));
    match attempt(PW) {
        Err(StaffError::Throttled { retry_after_secs }) => assert_eq!(retry_after_secs, 60),
        other => panic!("expected throttling, got {other:?}"),
    }
    clock.advance(61);
    assert!(attempt(PW).is_ok(), "the wait is over");
    // Success cleared the streak: four more failures are allowed again.
    for _ in 0..4 {
        assert!(matches!(
            attempt("wrong guess"),
            Err(StaffError::InvalidCredentials)
        ));
    }
    assert!(attempt(PW).is_ok());
}

#[test]
fn many_failures_from_one_address_block_that_address_only() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let clock = ManualClock::new(START);
    let app = rt.block_on(app_with_clock(&env, &clock));
    rt.block_on(staff(&app, "ann@example.com"));
    let attacker = ip("203.0.113.9");
    for i in 0..20 {
        let err = rt
            .block_on(app.sign_in.authenticate(
                &format!("guess{i}@example.com"),
                pw("password guess"),
                attacker,
            ))
            .expect_err("unknown account");
        assert!(
            matches!(err, StaffError::InvalidCredentials),
            "{i}: {err:?}"
        );
    }
    assert!(matches!(
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(PW), attacker)
        ),
        Err(StaffError::Throttled { .. })
    ));
    assert!(
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(PW), ip("198.51.100.4"))
        )
        .is_ok()
    );
}

#[test]
fn weaker_stored_hashes_are_upgraded_at_sign_in() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let clock = ManualClock::new(START);
    let app = rt.block_on(app_with_clock(&env, &clock));
    rt.block_on(staff(&app, "ann@example.com"));
    let params = argon2::Params::new(4096, 1, 1, None).expect("params");
    let weak = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(PW.as_bytes(), b"0123456789abcdef")
        .expect("hash")
        .to_string();
    rt.block_on(
        sqlx::query("UPDATE staff_users SET password_hash = $1")
            .bind(&weak)
            .execute(app.db.pool()),
    )
    .expect("store weak hash");
    assert!(
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(PW), ip("198.51.100.4"))
        )
        .is_ok()
    );
    let email = StaffEmail::parse("ann@example.com").expect("email");
    let stored = rt
        .block_on(app.accounts.password_hash(&email))
        .expect("hash")
        .expect("some");
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(PW), ip("198.51.100.4"))
        )
        .is_ok()
    );
}

#[test]
fn strangers_cannot_lock_a_known_account_out() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let clock = ManualClock::new(START);
    let app = rt.block_on(app_with_clock(&env, &clock));
    rt.block_on(staff(&app, "ann@example.com"));
    let attempt = |password: &str, from: &str| {
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(password), ip(from)),
        )
    };

    // Six wrong passwords from X: X waits, even with the right password.
    for _ in 0..5 {
        assert!(matches!(
            attempt("wrong guess", "203.0.113.9"),
            Err(StaffError::InvalidCredentials)
        ));
    }
    assert!(matches!(
        attempt("wrong guess", "203.0.113.9"),
        Err(StaffError::Throttled { .. })
    ));
    // The owner at Y is not held back, and Y's success does not free X.
    assert!(attempt(PW, "198.51.100.4").is_ok());
    assert!(matches!(
        attempt(PW, "203.0.113.9"),
        Err(StaffError::Throttled { .. })
    ));

    // IPv6: one /64 is one client, whichever address in it is used.
    for i in 1..=5 {
        let from = format!("2001:db8:1:2::{i}");
        assert!(matches!(
            attempt("wrong guess", &from),
            Err(StaffError::InvalidCredentials)
        ));
    }
    assert!(matches!(
        attempt(PW, "2001:db8:1:2:ffff::99"),
        Err(StaffError::Throttled { .. })
    ));
    assert!(attempt(PW, "2001:db8:1:3::1").is_ok());
}

#[test]
fn the_account_wide_limit_trips_once_and_emails_the_owner() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let clock = ManualClock::new(START);
    let app = rt.block_on(app_with_clock(&env, &clock));
    rt.block_on(staff(&app, "ann@example.com"));
    let limit = sealpost::staff::sign_in::ACCOUNT_FREE_FAILURES;
    assert_eq!(limit, 100);

    // 100 wrong passwords from 25 addresses (4 each: no address is held
    // back), ten at a time so the trip races with other failures.
    let addresses: Vec<String> = (0..25).map(|i| format!("192.0.2.{}", i + 1)).collect();
    for batch in 0..10 {
        let answers = rt.block_on(async {
            let tries = (0..10).map(|n| {
                let app = app.clone();
                let from = ip(&addresses[(batch * 10 + n) % 25]);
                tokio::spawn(async move {
                    app.sign_in
                        .authenticate("ann@example.com", pw("wrong guess"), from)
                        .await
                })
            });
            futures_util::future::join_all(tries).await
        });
        for r in answers {
            let r = r.expect("task");
            assert!(
                matches!(r, Err(StaffError::InvalidCredentials)),
                "{batch}: {r:?}"
            );
        }
    }
    let count = |sql: &str| -> i64 {
        rt.block_on(sqlx::query_scalar(sql).fetch_one(app.db.pool()))
            .expect("count")
    };
    let alerts = "SELECT COUNT(*) FROM outbox WHERE kind = 'sign_in_alert'";
    let tripped = "SELECT COUNT(*) FROM audit_log WHERE action = 'staff.sign_in_limit_reached'";
    assert_eq!(count(alerts), 1);
    assert_eq!(count(tripped), 1);

    // Now the account backs off for everyone, a fresh address too.
    assert!(matches!(
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(PW), ip("198.51.100.77"))
        ),
        Err(StaffError::Throttled {
            retry_after_secs: 30
        })
    ));
    // Further failures after their waits: still one email.
    for (i, wait) in [31, 61].into_iter().enumerate() {
        clock.advance(wait);
        let from = ip(&format!("198.51.100.{}", i + 20));
        assert!(matches!(
            rt.block_on(
                app.sign_in
                    .authenticate("ann@example.com", pw("wrong"), from)
            ),
            Err(StaffError::InvalidCredentials)
        ));
    }
    assert_eq!(count(alerts), 1);
    assert_eq!(count(tripped), 1);
    clock.advance(121);
    assert!(
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(PW), ip("198.51.100.77"))
        )
        .is_ok()
    );

    // The email: what happened and where to act; no address, IP or count.
    rt.block_on(async {
        let base = crate::support::http::serve(app.clone()).await;
        let mut local = crate::support::http::Browser::new(&base);
        let mails = crate::support::http::dev_mail(&app, &mut local, "ann@example.com").await;
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert!(mail.contains("many failed sign-ins"), "{mail}");
        assert!(mail.contains("/account"), "{mail}");
        for leak in ["192.0.2.", "198.51.100."] {
            assert!(!mail.contains(leak), "{leak} in {mail}");
        }
    });
    let detail: String = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT detail FROM audit_log WHERE action = 'staff.sign_in_limit_reached'",
            )
            .fetch_one(app.db.pool()),
        )
        .expect("detail");
    assert!(detail.contains("\"owner_emailed\":true"), "{detail}");
    assert!(matches!(
        rt.block_on(app.audit.verify()).expect("verify"),
        Verification::Intact { .. }
    ));
}

#[test]
fn expired_throttle_rows_are_pruned() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let clock = ManualClock::new(START);
    let app = rt.block_on(app_with_clock(&env, &clock));
    let rows = || -> i64 {
        rt.block_on(
            sqlx::query_scalar("SELECT COUNT(*) FROM sign_in_throttle").fetch_one(app.db.pool()),
        )
        .expect("count")
    };
    // An old streak: one failure (pair, address and account rows).
    let _ = rt.block_on(app.sign_in.authenticate(
        "old@example.com",
        pw("guess"),
        ip("203.0.113.1"),
    ));
    assert_eq!(rows(), 3);
    // A recent one, twelve hours later, still backing off.
    clock.advance(12 * 3600);
    for _ in 0..5 {
        let _ = rt.block_on(app.sign_in.authenticate(
            "new@example.com",
            pw("guess"),
            ip("203.0.113.2"),
        ));
    }
    assert_eq!(rows(), 6);
    assert_eq!(rt.block_on(app.sign_in.prune()).expect("prune"), 0);
    // A day after the old streak: its rows go, the recent ones stay.
    clock.advance(12 * 3600 + 1);
    assert_eq!(rt.block_on(app.sign_in.prune()).expect("prune"), 3);
    assert_eq!(rows(), 3);
    // The recent streak goes a day after it ended.
    clock.advance(12 * 3600);
    assert_eq!(rt.block_on(app.sign_in.prune()).expect("prune"), 3);
    assert_eq!(rows(), 0);
}
