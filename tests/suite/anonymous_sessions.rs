//! Anonymous visitors (customers, scanners, floods) store no session: the
//! public pages' forms carry a session-less CSRF token bound to a cookie of
//! its own, and the real sign-in flow still works with it.

use sealpost::app::App;
use sealpost::staff::Role;
use sealpost::store::NativePool;

use crate::support::START;
use crate::support::compose::{compose, fresh_link};
use crate::support::env::TestEnv;
use crate::support::http::{Browser, PASSWORD, create_staff, input_value, portal};

const AGENT: &str = "agent@example.com";

pub async fn session_rows(app: &App) -> i64 {
    match app.db.native() {
        NativePool::Sqlite(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM tower_sessions")
            .fetch_one(pool)
            .await
            .unwrap(),
        NativePool::Postgres(pool) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM tower_sessions.session")
                .fetch_one(pool)
                .await
                .unwrap()
        }
    }
}

/// `n` parallel GETs of `path`, each from a fresh client with no cookies.
async fn anonymous_gets(base: &str, path: &str, n: usize) -> Vec<u16> {
    let gets = (0..n).map(|_| async {
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("anonymous GET");
        r.status().as_u16()
    });
    futures_util::future::join_all(gets).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_gets_store_no_session() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut staff = Browser::signed_in(&base, AGENT).await;
    let id = compose(
        &mut staff,
        &["access_code"],
        "Anon-Code-1",
        "",
        "keep",
        b"a",
    )
    .await;
    let link = fresh_link(&app, id).await;
    let before = session_rows(&app).await;
    assert_eq!(before, 1, "the signed-in agent's session");

    let pages = [
        ("/sign-in", 200),
        ("/sign-in?reason=expired", 200),
        (link.as_str(), 200),
        ("/p/not-a-real-link", 404),
        ("/sign-in/code", 303),
        ("/sent", 303),
        (&*format!("/pickup/{id}"), 401),
        (&*format!("/pickup/{id}/files/1"), 401),
        ("/setup/not-a-real-token", 404),
        ("/invite/not-a-real-token", 404),
    ];
    for (path, expected) in pages {
        let statuses = anonymous_gets(&base, path, 100).await;
        assert!(
            statuses.iter().all(|s| *s == expected),
            "{path}: {statuses:?}"
        );
        assert_eq!(session_rows(&app).await, before, "{path} stored a session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_works_with_the_session_less_token_and_only_with_its_cookie() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;

    // The form's token is bound to this browser's nonce cookie.
    let mut a = Browser::new(&base);
    let page = a.get("/sign-in").await;
    assert_eq!(page.status, 200);
    let token = input_value(&page.body, "csrf").expect("csrf token");
    let cookie = page
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("sealpost-csrf="))
        .expect("nonce cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!a.cookies.contains_key("sealpost"), "no session cookie");
    // The same browser gets the same token again, still with no session.
    let again = a.get("/sign-in").await;
    assert_eq!(input_value(&again.body, "csrf"), Some(token.clone()));
    assert_eq!(session_rows(&app).await, 0);

    // Another browser (its own nonce, or none) cannot use that token.
    let mut b = Browser::new(&base);
    b.get("/sign-in").await;
    let r = b
        .post(
            "/sign-in",
            &[("csrf", &token), ("email", AGENT), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let mut bare = Browser::new(&base);
    let r = bare
        .post(
            "/sign-in",
            &[("csrf", &token), ("email", AGENT), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = a
        .post(
            "/sign-in",
            &[
                ("csrf", "0".repeat(64).as_str()),
                ("email", AGENT),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(session_rows(&app).await, 0);

    // A wrong password re-renders the form, still without a session.
    let r = a
        .post(
            "/sign-in",
            &[
                ("csrf", &token),
                ("email", AGENT),
                ("password", "wrong password!"),
            ],
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(session_rows(&app).await, 0);

    // The real flow: the browser's own token signs in, and from then on
    // the session has its own token.
    let r = a
        .post(
            "/sign-in",
            &[("csrf", &token), ("email", AGENT), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/sent"));
    assert_eq!(session_rows(&app).await, 1);
    let compose_token = a.csrf("/compose").await;
    assert_ne!(
        compose_token, token,
        "a signed-in session has its own token"
    );
    let out = a.post("/sign-out", &[("csrf", &compose_token)]).await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert_eq!(session_rows(&app).await, 0);
}
