//! Staff sign-in, sessions, TOTP and CSRF over HTTP: the real router on a
//! loopback port, a real database (SQLite, or PostgreSQL in CI's second run).

use sealpost::audit::Actor;
use sealpost::staff::{Role, StaffEmail};

use crate::support::START;
use crate::support::env::TestEnv;
use crate::support::http::{Browser, PASSWORD, create_staff, input_value, portal};

const COOKIE: &str = "sealpost";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_right_wrong_and_unknown_and_sessions() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;

    // Wrong password and unknown account: the same status and page text.
    let mut b = Browser::new(&base);
    let wrong = b.sign_in("agent@example.com", "not the password").await;
    let unknown = b.sign_in("nobody@example.com", "not the password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    let msg = |r: &crate::support::http::Resp| {
        crate::support::http::element_text(&r.body, "sign-in-error")
    };
    assert!(msg(&wrong).is_some());
    assert_eq!(msg(&wrong), msg(&unknown));

    // Protected pages send visitors to sign in.
    let r = b.get("/sent").await;
    assert_eq!(r.status, 303);
    assert!(r.location().unwrap().starts_with("/sign-in"));

    // Anonymous pages store no session; one planted before sign-in
    // (fixation) is not kept: the id changes at sign-in.
    assert!(!b.cookies.contains_key(COOKIE), "no pre-sign-in session");
    let before = "AAAAAAAAAAAAAAAAAAAAAA".to_owned();
    b.cookies.insert(COOKIE.into(), before.clone());
    let ok = b.sign_in("Agent@Example.com", PASSWORD).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.location(), Some("/sent"));
    let after = b.cookies.get(COOKIE).cloned().expect("session cookie");
    assert_ne!(before, after, "session id must be cycled at sign-in");
    assert_eq!(b.get("/sent").await.status, 200);

    // The cookie's attributes.
    let set = ok.header("set-cookie").unwrap().to_ascii_lowercase();
    assert!(
        set.contains("httponly") && set.contains("samesite=strict") && set.contains("path=/"),
        "{set}"
    );

    // The pre-sign-in id does not grant access.
    let mut old = Browser::new(&base);
    old.cookies.insert(COOKIE.into(), before);
    assert_eq!(old.get("/sent").await.status, 303);

    // Idle timeout: 29 minutes are fine, then 31 minutes of silence end it.
    clock.advance(29 * 60);
    assert_eq!(b.get("/sent").await.status, 200);
    clock.advance(31 * 60);
    let r = b.get("/sent").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), Some("/sign-in?reason=expired"));

    // Absolute timeout: active every 20 minutes, still ends after 12 hours.
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    for _ in 0..35 {
        clock.advance(20 * 60);
        assert_eq!(b.get("/sent").await.status, 200);
    }
    clock.advance(21 * 60);
    assert_eq!(
        b.get("/sent").await.location(),
        Some("/sign-in?reason=expired")
    );

    // Sign-out deletes the session server-side: replaying the cookie fails.
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    let cookie = b.cookies.get(COOKIE).cloned().unwrap();
    let token = b.csrf("/sent").await;
    let r = b.post("/sign-out", &[("csrf", &token)]).await;
    assert_eq!(r.status, 303);
    let mut replay = Browser::new(&base);
    replay.cookies.insert(COOKIE.into(), cookie);
    assert_eq!(replay.get("/sent").await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_ends_their_live_session() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    assert_eq!(b.get("/sent").await.status, 200);

    // Disabled by the CLI (another process, as an operator would).
    let out = env.sealpost(&["admin", "disable-user", "--email", "agent@example.com"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = b.get("/sent").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), Some("/sign-in?reason=ended"));
    // And cannot sign in again.
    assert_eq!(b.sign_in("agent@example.com", PASSWORD).await.status, 401);

    // A password reset also ends sessions.
    create_staff(&app, "other@example.com", Role::Agent).await;
    let mut o = Browser::signed_in(&base, "other@example.com").await;
    app.accounts
        .reset_password(
            Actor::Cli,
            &StaffEmail::parse("other@example.com").unwrap(),
            secrecy::SecretString::from("a different long passphrase 42"),
        )
        .await
        .unwrap();
    assert_eq!(o.get("/sent").await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_throttled() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut b = Browser::new(&base);
    for _ in 0..5 {
        assert_eq!(
            b.sign_in("agent@example.com", "wrong password!")
                .await
                .status,
            401
        );
    }
    // Now even the right password is refused until the back-off passes.
    let r = b.sign_in("agent@example.com", PASSWORD).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed attempts"));
    clock.advance(31);
    assert_eq!(b.sign_in("agent@example.com", PASSWORD).await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_token_and_origin_are_enforced() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    let token = b.csrf("/sent").await;

    // No token, a wrong token: refused, still signed in.
    assert_eq!(b.post("/sign-out", &[]).await.status, 403);
    assert_eq!(b.post("/sign-out", &[("csrf", "0000")]).await.status, 403);
    // A cross-site browser request with the right token: refused.
    b.extra = vec![("Sec-Fetch-Site".into(), "cross-site".into())];
    assert_eq!(b.post("/sign-out", &[("csrf", &token)]).await.status, 403);
    b.extra = vec![("Origin".into(), "https://evil.example".into())];
    assert_eq!(b.post("/sign-out", &[("csrf", &token)]).await.status, 403);
    b.extra.clear();
    assert_eq!(b.get("/sent").await.status, 200);
    // Multipart compose without the token first: refused, nothing stored.
    let form = reqwest::multipart::Form::new()
        .text("recipient", "c@example.com")
        .text("body", "hello");
    assert_eq!(b.post_multipart("/compose", form).await.status, 403);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    // Same-origin with the token: accepted.
    b.extra = vec![
        ("Sec-Fetch-Site".into(), "same-origin".into()),
        ("Origin".into(), base.clone()),
    ];
    assert_eq!(b.post("/sign-out", &[("csrf", &token)]).await.status, 303);
}

fn totp_now(secret: &str, clock: &sealpost::clock::ManualClock) -> String {
    use sealpost::clock::Clock;
    sealpost::staff::totp::code_at(secret, clock.now()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_enrolment_sign_in_replay_and_recovery_codes() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut b = Browser::signed_in(&base, "agent@example.com").await;

    // Enrol: the page shows a server-rendered QR code and the key.
    let page = b.get("/account/totp").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("src=\"data:image/svg+xml;base64,"));
    let secret = crate::support::http::element_text(&page.body, "totp-secret").unwrap();
    let token = input_value(&page.body, "csrf").unwrap();
    let r = b
        .post("/account/totp", &[("csrf", &token), ("code", "000000")])
        .await;
    assert_eq!(r.status, 422, "a wrong code does not enrol");
    let secret = crate::support::http::element_text(&r.body, "totp-secret").unwrap_or(secret);
    let token = input_value(&r.body, "csrf").unwrap();
    let code = totp_now(&secret, &clock);
    let r = b
        .post("/account/totp", &[("csrf", &token), ("code", &code)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let codes: Vec<String> = r
        .body
        .split("<li><code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);

    // Sign in again: the password alone is not enough.
    let mut c = Browser::new(&base);
    let r = c.sign_in("agent@example.com", PASSWORD).await;
    assert_eq!(r.location(), Some("/sign-in/code"));
    assert_eq!(c.get("/sent").await.status, 303, "not signed in yet");
    // The code used at enrolment is spent; the next step's code works once.
    let r = c
        .submit("/sign-in/code", "/sign-in/code", &[("code", &code)])
        .await;
    assert_eq!(r.status, 401, "replayed enrolment code");
    clock.advance(30);
    let code = totp_now(&secret, &clock);
    let r = c
        .submit("/sign-in/code", "/sign-in/code", &[("code", &code)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(c.get("/sent").await.status, 200);

    // Replaying that code in another sign-in fails.
    let mut d = Browser::new(&base);
    d.sign_in("agent@example.com", PASSWORD).await;
    let r = d
        .submit("/sign-in/code", "/sign-in/code", &[("code", &code)])
        .await;
    assert_eq!(r.status, 401);
    // A recovery code works, once.
    let r = d
        .submit(
            "/sign-in/code",
            "/sign-in/code",
            &[("recovery_code", &codes[3])],
        )
        .await;
    assert_eq!(r.status, 303);
    let mut e = Browser::new(&base);
    e.sign_in("agent@example.com", PASSWORD).await;
    let r = e
        .submit(
            "/sign-in/code",
            "/sign-in/code",
            &[("recovery_code", &codes[3])],
        )
        .await;
    assert_eq!(r.status, 401, "recovery code reused");
    // Wrong codes count per account, across sign-ins: the reused
    // recovery code was the first; four more start the back-off.
    let mut f = Browser::new(&base);
    f.sign_in("agent@example.com", PASSWORD).await;
    for _ in 0..4 {
        let r = f
            .submit("/sign-in/code", "/sign-in/code", &[("code", "123456")])
            .await;
        assert_eq!(r.status, 401);
    }
    let r = f
        .submit("/sign-in/code", "/sign-in/code", &[("code", "123456")])
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Please wait 30 seconds"), "{}", r.body);
    assert_eq!(f.get("/sent").await.status, 303);

    let used: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'staff.recovery_code_used'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(used, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_totp_forces_enrolment() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut settings = app.settings.load().await.unwrap();
    settings.totp_required = true;
    app.settings.save(Actor::Cli, &settings).await.unwrap();

    let mut b = Browser::new(&base);
    b.sign_in("agent@example.com", PASSWORD).await;
    for page in ["/sent", "/compose", "/account"] {
        let r = b.get(page).await;
        assert_eq!(r.status, 303, "{page}");
        assert_eq!(r.location(), Some("/account/totp"), "{page}");
    }
    let page = b.get("/account/totp").await;
    assert!(page.body.contains("requires two-step verification"));
    let secret = crate::support::http::element_text(&page.body, "totp-secret").unwrap();
    let token = input_value(&page.body, "csrf").unwrap();
    let code = totp_now(&secret, &clock);
    let r = b
        .post("/account/totp", &[("csrf", &token), ("code", &code)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(b.get("/sent").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_every_page() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut anon = Browser::new(&base);
    let mut b = Browser::signed_in(&base, "admin@example.com").await;
    let mut pages = vec![];
    for p in [
        "/sign-in",
        "/nope",
        "/messages/not-an-id",
        "/static/style.css",
    ] {
        pages.push((p, anon.get(p).await));
    }
    for p in [
        "/sent",
        "/compose",
        "/account",
        "/account/totp",
        "/sent?status=bogus",
    ] {
        pages.push((p, b.get(p).await));
    }
    pages.push(("POST /sign-out (no token)", b.post("/sign-out", &[]).await));
    for (p, r) in pages {
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{p}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{p}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{p}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{p}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{p}");
    }
}

/// Signs in with password and TOTP code; the clock moves a step first so
/// the code is fresh.
async fn sign_in_with_code(
    base: &str,
    secret: &str,
    clock: &sealpost::clock::ManualClock,
) -> Browser {
    clock.advance(30);
    let mut b = Browser::new(base);
    let r = b.sign_in("agent@example.com", PASSWORD).await;
    assert_eq!(r.location(), Some("/sign-in/code"));
    let code = totp_now(secret, clock);
    let r = b
        .submit("/sign-in/code", "/sign-in/code", &[("code", &code)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    b
}

/// Enrols the signed-in browser's account through the page; returns the seed.
async fn enrol_via_page(b: &mut Browser, clock: &sealpost::clock::ManualClock) -> String {
    let page = b.get("/account/totp").await;
    let secret = crate::support::http::element_text(&page.body, "totp-secret").unwrap();
    let token = input_value(&page.body, "csrf").unwrap();
    let code = totp_now(&secret, clock);
    let r = b
        .post("/account/totp", &[("csrf", &token), ("code", &code)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    secret
}

fn codes_on(page: &str) -> Vec<String> {
    page.split("<li><code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_authenticator_needs_proof_and_ends_other_sessions() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut a = Browser::signed_in(&base, "agent@example.com").await;
    let old_secret = enrol_via_page(&mut a, &clock).await;
    let mut other = sign_in_with_code(&base, &old_secret, &clock).await;
    assert_eq!(a.get("/sent").await.status, 200);

    // A new seed with a right code but no proof, or a wrong password:
    // refused, and the old seed stays.
    for proof in [vec![], vec![("current_password", "not my password")]] {
        let page = a.get("/account/totp").await;
        assert!(page.body.contains("name=\"current_password\""));
        let secret = crate::support::http::element_text(&page.body, "totp-secret").unwrap();
        let token = input_value(&page.body, "csrf").unwrap();
        let code = totp_now(&secret, &clock);
        let mut fields = vec![("csrf", token.as_str()), ("code", code.as_str())];
        fields.extend(proof);
        let r = a.post("/account/totp", &fields).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(other.get("/sent").await.status, 200, "other session kept");
    }
    let enrolled: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'staff.totp_enrolled'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(enrolled, 1);

    // With the current password: replaced; this session stays, the
    // other one ends.
    let page = a.get("/account/totp").await;
    let new_secret = crate::support::http::element_text(&page.body, "totp-secret").unwrap();
    let token = input_value(&page.body, "csrf").unwrap();
    let code = totp_now(&new_secret, &clock);
    let r = a
        .post(
            "/account/totp",
            &[
                ("csrf", &token),
                ("code", &code),
                ("current_password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(codes_on(&r.body).len(), 10);
    assert_eq!(a.get("/sent").await.status, 200);
    let r = other.get("/sent").await;
    assert_eq!(r.location(), Some("/sign-in?reason=ended"));

    // With a current code from the (now) current app instead of the
    // password: replaced again.
    clock.advance(30);
    let page = a.get("/account/totp").await;
    let third = crate::support::http::element_text(&page.body, "totp-secret").unwrap();
    let token = input_value(&page.body, "csrf").unwrap();
    let code = totp_now(&third, &clock);
    let current = totp_now(&new_secret, &clock);
    let r = a
        .post(
            "/account/totp",
            &[
                ("csrf", &token),
                ("code", &code),
                ("current_code", &current),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Only the latest seed signs in now.
    let mut c = Browser::new(&base);
    clock.advance(30);
    c.sign_in("agent@example.com", PASSWORD).await;
    let r = c
        .submit(
            "/sign-in/code",
            "/sign-in/code",
            &[("code", &totp_now(&new_secret, &clock))],
        )
        .await;
    assert_eq!(r.status, 401);
    drop(c);
    sign_in_with_code(&base, &third, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_recovery_codes_need_proof_and_end_other_sessions() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut a = Browser::signed_in(&base, "agent@example.com").await;
    let page = a.get("/account/totp").await;
    let secret = crate::support::http::element_text(&page.body, "totp-secret").unwrap();
    let token = input_value(&page.body, "csrf").unwrap();
    let r = a
        .post(
            "/account/totp",
            &[("csrf", &token), ("code", &totp_now(&secret, &clock))],
        )
        .await;
    let old_codes = codes_on(&r.body);
    assert_eq!(old_codes.len(), 10);
    let mut other = sign_in_with_code(&base, &secret, &clock).await;

    // No proof, a wrong password: refused, nothing changes.
    for proof in [vec![], vec![("current_password", "not my password")]] {
        let r = a
            .submit("/account", "/account/recovery-codes", &proof)
            .await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains("id=\"account-error\""), "{}", r.body);
    }
    assert_eq!(other.get("/sent").await.status, 200);

    // A current code proves it: ten new codes, the old ones are void.
    clock.advance(30);
    let r = a
        .submit(
            "/account",
            "/account/recovery-codes",
            &[("current_code", &totp_now(&secret, &clock))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_codes = codes_on(&r.body);
    assert_eq!(new_codes.len(), 10);
    assert!(new_codes.iter().all(|c| !old_codes.contains(c)));
    assert_eq!(a.get("/account").await.status, 200, "this session stays");
    let r = other.get("/sent").await;
    assert_eq!(r.location(), Some("/sign-in?reason=ended"));

    let mut c = Browser::new(&base);
    c.sign_in("agent@example.com", PASSWORD).await;
    let r = c
        .submit(
            "/sign-in/code",
            "/sign-in/code",
            &[("recovery_code", &old_codes[0])],
        )
        .await;
    assert_eq!(r.status, 401, "old code void");
    let r = c
        .submit(
            "/sign-in/code",
            "/sign-in/code",
            &[("recovery_code", &new_codes[0])],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    // The password works as proof too, and it is audited each time.
    let r = a
        .submit(
            "/account",
            "/account/recovery-codes",
            &[("current_password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'staff.recovery_codes_regenerated'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(n, 2);
}
