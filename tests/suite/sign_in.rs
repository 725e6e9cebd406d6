//! Staff sign-in: one answer for wrong, unknown and disabled; back-off per
//! account and per address, held in the database; rehash on sign-in.

use std::net::IpAddr;
use std::sync::Arc;

use argon2::password_hash::PasswordHasher;
use sealpost::app::App;
use sealpost::audit::{Actor, Verification};
use sealpost::clock::ManualClock;
use sealpost::staff::{Role, SignInError, StaffEmail};
use secrecy::SecretString;

use crate::common::{TestEnv, runtime};

const PW: &str = "a long enough passphrase";
const START: i64 = 1_900_000_000;

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
            matches!(err, SignInError::InvalidCredentials),
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
            Err(SignInError::InvalidCredentials)
        ));
    }
    // The fifth failure starts a 30 s back-off; even the right password waits.
    assert!(matches!(
        attempt("wrong guess"),
        Err(SignInError::InvalidCredentials)
    ));
    match attempt(PW) {
        Err(SignInError::Throttled { retry_after_secs }) => assert_eq!(retry_after_secs, 30),
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
        Err(SignInError::Throttled { .. })
    ));
    clock.advance(31);
    // Each further failure doubles the wait.
    assert!(matches!(
        attempt("wrong again"),
        Err(SignInError::InvalidCredentials)
    ));
    match attempt(PW) {
        Err(SignInError::Throttled { retry_after_secs }) => assert_eq!(retry_after_secs, 60),
        other => panic!("expected throttling, got {other:?}"),
    }
    clock.advance(61);
    assert!(attempt(PW).is_ok(), "the wait is over");
    // Success cleared the streak: four more failures are allowed again.
    for _ in 0..4 {
        assert!(matches!(
            attempt("wrong guess"),
            Err(SignInError::InvalidCredentials)
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
            matches!(err, SignInError::InvalidCredentials),
            "{i}: {err:?}"
        );
    }
    assert!(matches!(
        rt.block_on(
            app.sign_in
                .authenticate("ann@example.com", pw(PW), attacker)
        ),
        Err(SignInError::Throttled { .. })
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
