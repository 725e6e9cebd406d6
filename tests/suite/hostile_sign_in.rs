//! Hostile load on the open sign-in pages (issue 11 §2 and §5), through the
//! real router on a loopback port and a real database: a flood from many
//! addresses is shed with 503 + Retry-After before any hashing and never
//! fails with 500; second-factor guesses are limited per account in the
//! database, in parallel and across fresh password sign-ins.

use std::sync::Arc;

use futures_util::future::join_all;
use sealpost::app::App;
use sealpost::clock::{Clock, ManualClock};
use sealpost::config::Config;
use sealpost::staff::{Role, StaffId};
use secrecy::ExposeSecret;

use crate::support::START;
use crate::support::env::TestEnv;
use crate::support::http::{Browser, PASSWORD, Resp, create_staff, serve};

/// An app that believes `X-Forwarded-For` from 127.0.0.1, so each test
/// client can be its own address.
async fn behind_proxy(env: &TestEnv, clock: &ManualClock) -> (App, String) {
    let mut vars = env.env_vars();
    vars.push((
        "SEALPOST_TRUSTED_PROXIES".to_owned(),
        "127.0.0.1".to_owned(),
    ));
    let config = Config::load(None, vars).expect("config");
    let app = App::open_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("app");
    let base = serve(app.clone()).await;
    (app, base)
}

fn at(base: &str, ip: &str) -> Browser {
    let mut b = Browser::new(base);
    b.extra.push(("X-Forwarded-For".to_owned(), ip.to_owned()));
    b
}

async fn count(app: &App, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(app.db.pool())
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_flood_is_shed_before_hashing_and_never_fails() {
    let env = TestEnv::new().await;
    let clock = ManualClock::new(START);
    let (app, base) = behind_proxy(&env, &clock).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;

    // 400 visitors at 400 addresses, each with its own session and form.
    let mut visitors = Vec::new();
    for i in 0..400u32 {
        let mut b = at(&base, &format!("198.18.{}.{}", i / 200, i % 200 + 1));
        let token = b.csrf("/sign-in").await;
        visitors.push((b, token));
    }
    let attempts = visitors.into_iter().enumerate().map(|(i, (mut b, token))| {
        tokio::spawn(async move {
            let email = format!("visitor{i}@example.com");
            b.post(
                "/sign-in",
                &[
                    ("csrf", token.as_str()),
                    ("email", email.as_str()),
                    ("password", "not the password"),
                ],
            )
            .await
        })
    });
    let answers: Vec<Resp> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("request task"))
        .collect();

    let (mut shed, mut refused) = (0, 0);
    for r in &answers {
        match r.status {
            503 => {
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                shed += 1;
            }
            401 => {
                assert!(r.body.contains("id=\"sign-in-error\""), "{}", r.body);
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(shed > 0, "nothing was shed: {refused} checked");
    assert!(refused > 0, "nothing was checked");
    assert_eq!(shed + refused, 400);
    // The pool never held more than its bound, and nothing is left in it.
    assert!(app.sign_in.hasher().peak_admitted() <= app.sign_in.hasher().capacity());
    assert!(app.sign_in.hasher().peak_admitted() > 0);
    assert_eq!(app.sign_in.hasher().admitted(), 0);
    // Only the checked attempts count as failures; shed ones did nothing.
    let failed = count(
        &app,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'staff.sign_in_failed'",
    )
    .await;
    assert_eq!(failed, refused);

    // The flood is over: a normal sign-in works.
    let mut agent = at(&base, "192.0.2.10");
    let r = agent.sign_in("agent@example.com", PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(agent.get("/sent").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_signed_in_before_gets_in_during_a_flood() {
    let env = TestEnv::new().await;
    let clock = ManualClock::new(START);
    let (app, base) = behind_proxy(&env, &clock).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;

    // The agent's browser signed in once: it holds a device cookie.
    let mut agent = at(&base, "192.0.2.10");
    let r = agent.sign_in("agent@example.com", PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let set = r.header("set-cookie").unwrap_or_default().to_owned();
    assert!(agent.cookies.contains_key("sealpost-device"), "{set}");
    let device = agent.cookies["sealpost-device"].clone();
    assert!(app.sign_in.is_trusted_device("agent@example.com", &device));
    assert!(!app.sign_in.is_trusted_device("other@example.com", &device));
    // The same cookie with its last hex digit changed (to another digit).
    let last = if device.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &device[..device.len() - 1]);
    assert!(!app.sign_in.is_trusted_device("agent@example.com", &forged));
    let token = agent.csrf("/sign-in").await;

    // 400 strangers fill the sign-in lane of the argon2 pool…
    let mut visitors = Vec::new();
    for i in 0..400u32 {
        let mut b = at(&base, &format!("198.18.{}.{}", i / 200, i % 200 + 1));
        let token = b.csrf("/sign-in").await;
        visitors.push((b, token));
    }
    // They keep trying until the agent is done, so the lane stays full.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = visitors
        .into_iter()
        .enumerate()
        .map(|(i, (mut b, token))| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let email = format!("visitor{i}@example.com");
                let fields = [
                    ("csrf", token.as_str()),
                    ("email", email.as_str()),
                    ("password", "not the password"),
                ];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(b.post("/sign-in", &fields).await.status);
                }
                statuses
            })
        })
        .collect();
    let lane = app.sign_in.hasher();
    for _ in 0..5000 {
        if lane.admitted() >= lane.capacity() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // …and the known browser still signs in, in its own lane.
    let r = agent
        .post(
            "/sign-in",
            &[
                ("csrf", token.as_str()),
                ("email", "agent@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = join_all(flood)
        .await
        .into_iter()
        .flat_map(|s| s.expect("task"))
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 503 || *s == 401),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "the flood filled the lane");
}

/// Enrols `id` in TOTP directly; returns the base32 seed.
async fn enrol(app: &App, id: StaffId, email: &str) -> String {
    let enrolment = app.totp.begin("Sealpost", email).expect("begin");
    let secret = enrolment.secret_base32.expose_secret().to_owned();
    let code = sealpost::staff::totp::code_at(&secret, app.clock.now()).expect("code");
    app.totp
        .confirm(id, &enrolment.sealed_seed, &code, None)
        .await
        .expect("confirm")
        .expect("enrolled");
    secret
}

/// A six-digit code that is none of the three the window accepts now.
fn wrong_code(secret: &str, now: i64) -> String {
    let window: Vec<String> = [-30, 0, 30]
        .iter()
        .filter_map(|d| sealpost::staff::totp::code_at(secret, now + d))
        .collect();
    (0..1000)
        .map(|n| format!("{:06}", 123_456 + n))
        .find(|c| !window.contains(c))
        .expect("a wrong code")
}

async fn second_factor_failures(app: &App) -> i64 {
    count(
        app,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'staff.sign_in_failed' AND detail LIKE '%totp%'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_codes_on_one_pending_sign_in_are_checked_at_most_the_limit() {
    let env = TestEnv::new().await;
    let clock = ManualClock::new(START);
    let (app, base) = behind_proxy(&env, &clock).await;
    let id = create_staff(&app, "agent@example.com", Role::Agent).await;
    let secret = enrol(&app, id, "agent@example.com").await;
    clock.advance(30);

    let mut b = at(&base, "203.0.113.9");
    let r = b.sign_in("agent@example.com", PASSWORD).await;
    assert_eq!(r.location(), Some("/sign-in/code"));
    let token = b.csrf("/sign-in/code").await;
    let wrong = wrong_code(&secret, clock.now());

    // 40 requests at once with the same pending sign-in (same cookie).
    let guesses = (0..40).map(|_| {
        let mut g = at(&base, "203.0.113.9");
        g.cookies = b.cookies.clone();
        let (token, wrong) = (token.clone(), wrong.clone());
        tokio::spawn(async move {
            g.post(
                "/sign-in/code",
                &[("csrf", token.as_str()), ("code", wrong.as_str())],
            )
            .await
            .status
        })
    });
    let statuses: Vec<u16> = join_all(guesses)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + refused, 40, "{statuses:?}");
    assert_eq!(checked, 5, "{statuses:?}");
    assert_eq!(second_factor_failures(&app).await, 5);

    // Even the right code waits out the back-off, and nothing is checked.
    let right = sealpost::staff::totp::code_at(&secret, clock.now()).expect("code");
    let r = b
        .post(
            "/sign-in/code",
            &[("csrf", token.as_str()), ("code", right.as_str())],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many wrong codes"), "{}", r.body);
    assert_eq!(b.get("/sent").await.status, 303, "not signed in");
    // A fresh password sign-in does not start the count over.
    let mut c = at(&base, "203.0.113.9");
    c.sign_in("agent@example.com", PASSWORD).await;
    let r = c
        .submit("/sign-in/code", "/sign-in/code", &[("code", &right)])
        .await;
    assert_eq!(r.status, 429, "{}", r.body);

    clock.advance(31);
    let right = sealpost::staff::totp::code_at(&secret, clock.now()).expect("code");
    let r = b
        .post(
            "/sign-in/code",
            &[("csrf", token.as_str()), ("code", right.as_str())],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(b.get("/sent").await.status, 200);
    assert_eq!(second_factor_failures(&app).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_across_fresh_password_sign_ins_still_hit_the_limit() {
    let env = TestEnv::new().await;
    let clock = ManualClock::new(START);
    let (app, base) = behind_proxy(&env, &clock).await;
    let id = create_staff(&app, "agent@example.com", Role::Agent).await;
    let secret = enrol(&app, id, "agent@example.com").await;
    clock.advance(30);
    let wrong = wrong_code(&secret, clock.now());

    // One wrong code (or recovery code) per fresh sign-in, five times.
    for i in 0..5 {
        let mut b = at(&base, "203.0.113.9");
        let r = b.sign_in("agent@example.com", PASSWORD).await;
        assert_eq!(r.location(), Some("/sign-in/code"), "{i}");
        let field = if i == 2 { "recovery_code" } else { "code" };
        let guess = if i == 2 {
            "aaaa-bbbb-cccc"
        } else {
            wrong.as_str()
        };
        let r = b
            .submit("/sign-in/code", "/sign-in/code", &[(field, guess)])
            .await;
        assert_eq!(r.status, 401, "{i}: {}", r.body);
    }
    // The sixth sign-in is refused its code, right or wrong.
    let mut b = at(&base, "203.0.113.9");
    b.sign_in("agent@example.com", PASSWORD).await;
    let right = sealpost::staff::totp::code_at(&secret, clock.now()).expect("code");
    for code in [wrong.as_str(), right.as_str()] {
        let r = b
            .submit("/sign-in/code", "/sign-in/code", &[("code", code)])
            .await;
        assert_eq!(r.status, 429, "{}", r.body);
    }
    assert_eq!(second_factor_failures(&app).await, 5);
    // After the back-off the right code signs in, and a later wrong one
    // starts a new streak (a success ended the old one).
    clock.advance(31);
    let right = sealpost::staff::totp::code_at(&secret, clock.now()).expect("code");
    let r = b
        .submit("/sign-in/code", "/sign-in/code", &[("code", &right)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let failures = count(
        &app,
        "SELECT totp_failures FROM staff_users WHERE email = 'agent@example.com'",
    )
    .await;
    assert_eq!(failures, 0);
}
