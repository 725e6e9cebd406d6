//! Staff sign-in, sessions, TOTP and CSRF over HTTP: the real router on a
//! loopback port, a real database (SQLite, or PostgreSQL in CI's second run).

use sealpost::audit::Actor;
use sealpost::staff::{Role, StaffEmail};

use crate::browser::{Browser, PASSWORD, create_staff, input_value, portal};
use crate::common::{TestEnv, runtime};

const START: i64 = 1_800_000_000;
const COOKIE: &str = "sealpost";

#[test]
fn sign_in_right_wrong_and_unknown_and_sessions() {
    let rt = runtime();
    rt.block_on(async {
        let env = TestEnv::new().await;
        let (app, clock, base) = portal(&env, START).await;
        create_staff(&app, "agent@example.com", Role::Agent).await;

        // Wrong password and unknown account: the same status and page text.
        let mut b = Browser::new(&base);
        let wrong = b.sign_in("agent@example.com", "not the password").await;
        let unknown = b.sign_in("nobody@example.com", "not the password").await;
        assert_eq!(wrong.status, 401);
        assert_eq!(unknown.status, 401);
        let msg = |r: &crate::browser::Resp| crate::browser::element_text(&r.body, "sign-in-error");
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
    });
}

#[test]
fn disabling_a_user_ends_their_live_session() {
    let rt = runtime();
    rt.block_on(async {
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
    });
}

#[test]
fn sign_in_is_throttled() {
    let rt = runtime();
    rt.block_on(async {
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
    });
}

#[test]
fn csrf_token_and_origin_are_enforced() {
    let rt = runtime();
    rt.block_on(async {
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
    });
}

fn totp_now(secret: &str, clock: &sealpost::clock::ManualClock) -> String {
    use sealpost::clock::Clock;
    sealpost::staff::totp::code_at(secret, clock.now()).unwrap()
}

#[test]
fn totp_enrolment_sign_in_replay_and_recovery_codes() {
    let rt = runtime();
    rt.block_on(async {
        let env = TestEnv::new().await;
        let (app, clock, base) = portal(&env, START).await;
        create_staff(&app, "agent@example.com", Role::Agent).await;
        let mut b = Browser::signed_in(&base, "agent@example.com").await;

        // Enrol: the page shows a server-rendered QR code and the key.
        let page = b.get("/account/totp").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("src=\"data:image/svg+xml;base64,"));
        let secret = crate::browser::element_text(&page.body, "totp-secret").unwrap();
        let token = input_value(&page.body, "csrf").unwrap();
        let r = b
            .post("/account/totp", &[("csrf", &token), ("code", "000000")])
            .await;
        assert_eq!(r.status, 422, "a wrong code does not enrol");
        let secret = crate::browser::element_text(&r.body, "totp-secret").unwrap_or(secret);
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
        // Five wrong codes end the attempt: back to the password.
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
        assert_eq!(r.location(), Some("/sign-in?reason=expired"));
        assert_eq!(f.get("/sign-in/code").await.status, 303);

        let used: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'staff.recovery_code_used'",
        )
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert_eq!(used, 1);
    });
}

#[test]
fn mandatory_totp_forces_enrolment() {
    let rt = runtime();
    rt.block_on(async {
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
        let secret = crate::browser::element_text(&page.body, "totp-secret").unwrap();
        let token = input_value(&page.body, "csrf").unwrap();
        let code = totp_now(&secret, &clock);
        let r = b
            .post("/account/totp", &[("csrf", &token), ("code", &code)])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(b.get("/sent").await.status, 200);
    });
}

#[test]
fn security_headers_on_every_page() {
    let rt = runtime();
    rt.block_on(async {
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
    });
}
