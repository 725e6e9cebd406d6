//! API tokens in the portal (issue 14): `/account/tokens`, where staff make
//! and revoke their own tokens, and `/admin/service-accounts`, where admins
//! make integrations that only hold tokens. Driven through the real router
//! and database: a new token works on the API, is shown once (`no-store`),
//! is stored only hashed and stops at revocation; scopes follow the role;
//! another member's token is not found; forms need their CSRF token; a
//! service account can never sign in, take a password or be invited.

use sealpost::app::App;
use sealpost::audit::Actor;
use sealpost::staff::{Role, StaffEmail, StaffError, StaffId};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::support::START;
use crate::support::canaries::assert_no_canaries;
use crate::support::env::TestEnv;
use crate::support::http::{Browser, Resp, create_staff, element_text, input_value, portal};

const AGENT: &str = "agent@example.com";
const OTHER: &str = "other@example.com";
const ADMIN: &str = "admin@example.com";
const SERVICE: &str = "helpdesk-sync";
const SERVICE_EMAIL: &str = "helpdesk-sync@service.invalid";

/// A GET on the API with a bearer token: (status, JSON body or null).
async fn api(base: &str, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Submits the create form of the tokens page at `page` (posting to
/// `action`) and returns the answer.
async fn create_on(b: &mut Browser, page: &str, action: &str, fields: &[(&str, &str)]) -> Resp {
    b.submit(page, action, fields).await
}

/// The new token's value and id on a created page, after checking that the
/// page is one nobody may store.
fn shown_once(r: &Resp) -> (String, String) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let value = element_text(&r.body, "new-token").expect("the value is shown");
    assert!(value.starts_with("sp_live_"), "{value}");
    let id = element_text(&r.body, "new-token-id").expect("the id is shown");
    (value, id)
}

/// Each audit event of `action`: (actor, ip, detail).
async fn events(app: &App, action: &str) -> Vec<(String, Option<String>, Value)> {
    app.audit
        .events_between(0, i64::MAX / 2)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .map(|e| {
            let detail = e
                .detail
                .as_deref()
                .map_or(Value::Null, |d| serde_json::from_str(d).unwrap());
            (e.actor, e.ip, detail)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_creates_uses_and_revokes_a_token_that_is_shown_once() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let mut b = Browser::signed_in(&base, AGENT).await;

    let account = b.get("/account").await;
    assert!(account.body.contains("href=\"/account/tokens\""));
    let page = b.get("/account/tokens").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"no-tokens\""));
    assert!(page.body.contains("value=\"messages:read\""));
    assert!(
        !page.body.contains("value=\"admin\""),
        "an agent is not offered the admin scope"
    );

    let r = create_on(
        &mut b,
        "/account/tokens",
        "/account/tokens",
        &[
            ("name", "Helpdesk"),
            ("scope", "messages:read"),
            ("scope", "messages:send"),
            ("expiry", "30"),
        ],
    )
    .await;
    let (value, id) = shown_once(&r);

    // It works on the API as the agent, with those scopes and expiry.
    let (status, me) = api(&base, "/api/v1/me", &value).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email"], AGENT);
    assert_eq!(me["token"]["id"], id);
    assert_eq!(me["token"]["name"], "Helpdesk");
    assert_eq!(
        me["token"]["scopes"],
        serde_json::json!(["messages:send", "messages:read"])
    );
    assert!(me["token"]["expires_at"].as_str().is_some(), "{me}");
    assert_eq!(api(&base, "/api/v1/messages", &value).await.0, 200);
    assert_eq!(
        api(&base, "/api/v1/incoming", &value).await.0,
        403,
        "no inbox:read"
    );

    // The list shows it (with its last use) but never its value again.
    let list = b.get("/account/tokens").await;
    assert_eq!(list.status, 200);
    assert!(!list.body.contains(&value), "the value is shown only once");
    let row = &list.body[list
        .body
        .find(&format!("id=\"token-{id}\""))
        .expect("listed")..];
    let row = &row[..row.find("</tr>").unwrap()];
    for text in [
        "Helpdesk",
        "messages:send, messages:read",
        "active",
        "from 127.0.0.1",
    ] {
        assert!(row.contains(text), "{text}: {row}");
    }
    for path in ["/account", "/sent", "/account/tokens?done=revoked"] {
        assert!(!b.get(path).await.body.contains(&value), "{path}");
    }

    // Only its keyed hash is stored; nothing holds the value.
    assert_no_canaries("database", &env.database_bytes(&app).await, &[&value]);
    let created = events(&app, "token.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].0, format!("staff:{agent}"));
    assert_eq!(created[0].1.as_deref(), Some("127.0.0.1"));
    assert_eq!(created[0].2["token"], id);
    assert!(!created[0].2.to_string().contains(&value));

    // Revoked: the API refuses it at once, the list says so.
    let token = b.csrf("/account/tokens").await;
    let r = b
        .post(&format!("/account/tokens/{id}/revoke"), &[("csrf", &token)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/account/tokens?done=revoked"));
    assert_eq!(api(&base, "/api/v1/me", &value).await.0, 401);
    let list = b.get("/account/tokens").await;
    assert!(list.body.contains("status-revoked"), "{}", list.body);
    assert!(!list.body.contains(&format!("/account/tokens/{id}/revoke")));
    let again = b
        .post(&format!("/account/tokens/{id}/revoke"), &[("csrf", &token)])
        .await;
    assert_eq!(again.location(), Some("/account/tokens?done=already"));
    let revoked = events(&app, "token.revoked").await;
    assert_eq!(revoked.len(), 1, "revoked once");
    assert_eq!(revoked[0].0, format!("staff:{agent}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_follow_the_role_and_bad_input_is_explained() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    create_staff(&app, ADMIN, Role::Admin).await;
    let mut b = Browser::signed_in(&base, AGENT).await;
    let page = "/account/tokens";

    let refused: [(&[(&str, &str)], &str); 5] = [
        (
            &[("name", "x"), ("scope", "admin"), ("expiry", "30")],
            "admin scope",
        ),
        (&[("name", "x"), ("expiry", "30")], "at least one scope"),
        (
            &[
                ("name", "typed name"),
                ("scope", "messages:read"),
                ("expiry", "days"),
                ("expiry_days", "ninety"),
            ],
            "number of days",
        ),
        (
            &[
                ("name", "x"),
                ("scope", "messages:read"),
                ("expiry", "days"),
                ("expiry_days", "0"),
            ],
            "number of days",
        ),
        (
            &[
                ("name", ""),
                ("scope", "messages:read"),
                ("expiry", "never"),
            ],
            "name",
        ),
    ];
    for (fields, says) in refused {
        let r = create_on(&mut b, page, page, fields).await;
        assert_eq!(r.status, 422, "{fields:?}: {}", r.body);
        assert!(
            r.body.contains("class=\"error\"") && r.body.contains(says),
            "{fields:?}: {}",
            r.body
        );
        assert!(!r.body.contains("sp_live_"));
    }
    // The form comes back as typed.
    let r = create_on(
        &mut b,
        page,
        page,
        &[
            ("name", "typed name"),
            ("scope", "inbox:read"),
            ("expiry", "days"),
            ("expiry_days", "x"),
        ],
    )
    .await;
    assert_eq!(input_value(&r.body, "name").as_deref(), Some("typed name"));
    assert!(r.body.contains("value=\"inbox:read\" checked"));
    assert!(app.tokens.of_owner(agent).await.unwrap().is_empty());

    // A number of days: it works until then, and is listed as expired after.
    let r = create_on(
        &mut b,
        page,
        page,
        &[
            ("name", "short"),
            ("scope", "messages:read"),
            ("expiry", "days"),
            ("expiry_days", "2"),
        ],
    )
    .await;
    let (value, id) = shown_once(&r);
    assert_eq!(api(&base, "/api/v1/me", &value).await.0, 200);
    clock.advance(2 * 24 * 3600 + 1);
    assert_eq!(api(&base, "/api/v1/me", &value).await.0, 401);
    let mut b = Browser::signed_in(&base, AGENT).await;
    let list = b.get(page).await;
    let row = &list.body[list.body.find(&format!("id=\"token-{id}\"")).unwrap()..];
    assert!(row[..row.find("</tr>").unwrap()].contains("status-expired"));

    // An admin is offered the admin scope, and it works.
    let mut a = Browser::signed_in(&base, ADMIN).await;
    assert!(a.get(page).await.body.contains("value=\"admin\""));
    let r = create_on(
        &mut a,
        page,
        page,
        &[("name", "all"), ("scope", "admin"), ("expiry", "never")],
    )
    .await;
    let (value, _) = shown_once(&r);
    let (status, me) = api(&base, "/api/v1/me", &value).await;
    assert_eq!(status, 200);
    assert_eq!(me["token"]["scopes"], serde_json::json!(["admin"]));
    assert!(me["token"]["expires_at"].is_null(), "{me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_members_token_is_not_found_and_forms_need_their_csrf_token() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    create_staff(&app, OTHER, Role::Agent).await;
    create_staff(&app, ADMIN, Role::Admin).await;
    let mut other = Browser::signed_in(&base, OTHER).await;
    let r = create_on(
        &mut other,
        "/account/tokens",
        "/account/tokens",
        &[
            ("name", "mine"),
            ("scope", "messages:read"),
            ("expiry", "90"),
        ],
    )
    .await;
    let (value, id) = shown_once(&r);

    // Neither another agent nor an admin revokes it from their own page.
    for who in [AGENT, ADMIN] {
        let mut b = Browser::signed_in(&base, who).await;
        assert!(!b.get("/account/tokens").await.body.contains(&id));
        let token = b.csrf("/account/tokens").await;
        for path in [
            format!("/account/tokens/{id}/revoke"),
            format!("/account/tokens/{}/revoke", uuid::Uuid::new_v4()),
            "/account/tokens/not-an-id/revoke".to_owned(),
        ] {
            let r = b.post(&path, &[("csrf", &token)]).await;
            assert_eq!(r.status, 404, "{who}: {path}");
        }
    }
    assert_eq!(api(&base, "/api/v1/me", &value).await.0, 200);
    assert!(events(&app, "token.revoked").await.is_empty());

    // No token, a wrong one, or a cross-site request: refused, nothing done.
    let fields = [
        ("name", "csrf"),
        ("scope", "messages:read"),
        ("expiry", "30"),
    ];
    let revoke = format!("/account/tokens/{id}/revoke");
    let right = other.csrf("/account/tokens").await;
    for token in [None, Some("0000")] {
        let mut all: Vec<(&str, &str)> = token.map(|t| ("csrf", t)).into_iter().collect();
        all.extend(fields);
        assert_eq!(other.post("/account/tokens", &all).await.status, 403);
        let all: Vec<(&str, &str)> = token.map(|t| ("csrf", t)).into_iter().collect();
        assert_eq!(other.post(&revoke, &all).await.status, 403);
    }
    other
        .extra
        .push(("Sec-Fetch-Site".to_owned(), "cross-site".to_owned()));
    assert_eq!(
        other
            .post(&revoke, &[("csrf", right.as_str())])
            .await
            .status,
        403
    );
    other.extra.clear();
    assert_eq!(events(&app, "token.created").await.len(), 1);
    assert_eq!(api(&base, "/api/v1/me", &value).await.0, 200);

    // Signed out, the pages send the browser to sign in.
    let mut anon = Browser::new(&base);
    let r = anon.get("/account/tokens").await;
    assert_eq!(r.status, 303);
    assert!(r.location().unwrap().starts_with("/sign-in"));
}

/// The sign-in answer for `email` and `password`: status and error text.
async fn sign_in_answer(base: &str, email: &str, password: &str) -> (u16, Option<String>) {
    let mut b = Browser::new(base);
    let r = b.sign_in(email, password).await;
    (r.status, element_text(&r.body, "sign-in-error"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_holds_tokens_and_never_signs_in() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let admin = create_staff(&app, ADMIN, Role::Admin).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut a = Browser::signed_in(&base, ADMIN).await;

    assert!(
        a.get("/admin")
            .await
            .body
            .contains("/admin/service-accounts")
    );
    let list = "/admin/service-accounts";
    for (name, says) in [
        ("Helpdesk Sync", "lower-case letters"),
        ("-x", "lower-case letters"),
        ("", "lower-case letters"),
    ] {
        let r = a
            .submit(list, list, &[("name", name), ("role", "agent")])
            .await;
        assert_eq!(r.status, 422, "{name:?}");
        assert!(r.body.contains(says), "{name:?}: {}", r.body);
    }
    let r = a
        .submit(list, list, &[("name", SERVICE), ("role", "agent")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let path = r
        .location()
        .unwrap()
        .trim_end_matches("?done=created")
        .to_owned();
    let id = StaffId::parse(path.rsplit('/').next().unwrap()).expect("an id");
    let r = a
        .submit(list, list, &[("name", SERVICE), ("role", "admin")])
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("already exists"));
    let listed = a.get(list).await;
    assert!(listed.body.contains(&format!("href=\"{path}\"")));
    assert!(listed.body.contains(SERVICE));
    // It is not a person: setup still counts people only.
    assert_eq!(app.accounts.count().await.unwrap(), 2);

    // A token for it, shown once; an agent service is not offered admin.
    let page = a.get(&path).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("value=\"admin\""));
    let tokens = format!("{path}/tokens");
    let r = create_on(
        &mut a,
        &path,
        &tokens,
        &[
            ("name", "sync"),
            ("scope", "messages:read"),
            ("expiry", "never"),
        ],
    )
    .await;
    let (value, token_id) = shown_once(&r);
    assert!(!a.get(&path).await.body.contains(&value));
    let (status, me) = api(&base, "/api/v1/me", &value).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], id.to_string());
    assert_eq!(me["email"], SERVICE_EMAIL);
    assert_eq!(me["role"], "agent");
    assert_eq!(api(&base, "/api/v1/messages", &value).await.0, 200);
    assert_eq!(api(&base, "/api/v1/incoming", &value).await.0, 403);
    let r = create_on(
        &mut a,
        &path,
        &tokens,
        &[("name", "x"), ("scope", "admin"), ("expiry", "never")],
    )
    .await;
    assert_eq!(r.status, 422, "no admin scope for an agent service");
    assert_no_canaries("database", &env.database_bytes(&app).await, &[&value]);

    // Password sign-in: refused exactly like a wrong password.
    let wrong = sign_in_answer(&base, AGENT, "not the password at all").await;
    assert_eq!(wrong.0, 401);
    for password in ["correct horse battery staple", "anything at all"] {
        let answer = sign_in_answer(&base, SERVICE_EMAIL, password).await;
        assert_eq!(answer, wrong, "{password:?}");
    }
    assert_eq!(
        sign_in_answer(&base, "nobody@example.com", "whatever it is").await,
        wrong
    );

    // No password reset, no invitation, no password through a link.
    let email = StaffEmail::parse(SERVICE_EMAIL).unwrap();
    let reset = app
        .accounts
        .reset_password(
            Actor::Cli,
            &email,
            SecretString::from("a brand new passphrase"),
        )
        .await;
    assert!(
        matches!(reset, Err(StaffError::ServiceAccount)),
        "{reset:?}"
    );
    let password_file = env.dir.path().join("password");
    std::fs::write(&password_file, "a brand new passphrase\n").unwrap();
    let out = env.sealpost(&[
        "admin",
        "reset-password",
        "--email",
        SERVICE_EMAIL,
        "--password-file",
        password_file.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "the CLI refuses to reset it");
    assert!(String::from_utf8_lossy(&out.stderr).contains("service account"));
    for address in [SERVICE_EMAIL, "someone-new@service.invalid"] {
        let r = a
            .submit(
                "/admin/staff",
                "/admin/staff/invite",
                &[("email", address), ("role", "agent")],
            )
            .await;
        assert_eq!(r.status, 422, "{address}");
        assert!(r.body.contains("service accounts"), "{}", r.body);
        let invited = app
            .links
            .invite(
                Actor::Cli,
                "127.0.0.1".parse().unwrap(),
                &StaffEmail::parse(address).unwrap(),
                Role::Agent,
            )
            .await;
        assert!(
            matches!(invited, Err(StaffError::InvalidEmail)),
            "{address}: {:?}",
            invited.err()
        );
    }
    let mut tx = app.db.begin().await.unwrap();
    let set = app
        .accounts
        .set_password(&mut tx, id, "$argon2id$not-used")
        .await;
    assert!(matches!(set, Err(StaffError::ServiceAccount)), "{set:?}");
    drop(tx);
    assert!(events(&app, "staff.invited").await.is_empty());
    assert!(events(&app, "staff.password_reset").await.is_empty());
    assert!(
        events(&app, "staff.signed_in")
            .await
            .iter()
            .all(|e| e.0 != format!("staff:{id}"))
    );

    // Its tokens are revoked here; a person's token is not reachable here.
    let r = a
        .submit(&path, &format!("{tokens}/{token_id}/revoke"), &[])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(api(&base, "/api/v1/me", &value).await.0, 401);
    let (admin_token, admin_value) = app
        .tokens
        .create(
            Actor::Cli,
            sealpost::staff::tokens::NewApiToken {
                owner: admin,
                name: "mine".into(),
                scopes: sealpost::staff::tokens::Scopes::parse_list("messages:read").unwrap(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let csrf = a.csrf(&path).await;
    let r = a
        .post(
            &format!("{tokens}/{admin_token}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 404);
    let person = format!("{list}/{admin}");
    assert_eq!(a.get(&person).await.status, 404);
    let r = a
        .post(
            &format!("{person}/tokens"),
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("scope", "messages:read"),
                ("expiry", "30"),
            ],
        )
        .await;
    assert_eq!(r.status, 404, "no tokens for people through this page");
    assert_eq!(
        a.post(&format!("{person}/disable"), &[("csrf", &csrf)])
            .await
            .status,
        404
    );
    assert_eq!(
        api(&base, "/api/v1/me", admin_value.expose_secret())
            .await
            .0,
        200
    );

    // Disabled: its other token stops, and it gets no new one.
    let r = create_on(
        &mut a,
        &path,
        &tokens,
        &[
            ("name", "second"),
            ("scope", "messages:read"),
            ("expiry", "90"),
        ],
    )
    .await;
    let (second, _) = shown_once(&r);
    assert_eq!(api(&base, "/api/v1/me", &second).await.0, 200);
    let r = a.submit(&path, &format!("{path}/disable"), &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(api(&base, "/api/v1/me", &second).await.0, 401);
    let page = a.get(&path).await;
    assert!(page.body.contains("status-disabled"));
    assert!(!page.body.contains("id=\"create-token\""));
    let r = a
        .post(
            &tokens,
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("scope", "messages:read"),
                ("expiry", "30"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);

    // Every step is in the audit log, by the admin, from their address.
    let me = format!("staff:{admin}");
    for (action, count) in [
        ("service_account.created", 1),
        ("service_account.disabled", 1),
        ("token.created", 2),
        ("token.revoked", 1),
    ] {
        let found = events(&app, action).await;
        let by_admin: Vec<_> = found
            .iter()
            .filter(|e| e.0 == me && e.1.as_deref() == Some("127.0.0.1"))
            .collect();
        assert_eq!(by_admin.len(), count, "{action}: {found:?}");
    }
    let created = events(&app, "service_account.created").await;
    assert_eq!(created[0].2["staff_id"], id.to_string());
    assert!(
        !created[0].2.to_string().contains(SERVICE),
        "ids, not names"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_kept_out_of_the_service_accounts_pages() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let admin = create_staff(&app, ADMIN, Role::Admin).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let name = sealpost::staff::ServiceName::parse(SERVICE).unwrap();
    let id = app
        .accounts
        .create_service(Actor::Staff(admin.to_string()), None, &name, Role::Admin)
        .await
        .unwrap();
    let mut b = Browser::signed_in(&base, AGENT).await;
    let csrf = b.csrf("/account/tokens").await;
    let account = format!("/admin/service-accounts/{id}");
    // Admin pages do not announce themselves: 404, as for every admin page.
    for page in ["/admin/service-accounts", account.as_str()] {
        assert_eq!(b.get(page).await.status, 404, "GET {page}");
    }
    for (path, fields) in [
        (
            "/admin/service-accounts".to_owned(),
            vec![("name", "evil"), ("role", "admin")],
        ),
        (
            format!("{account}/tokens"),
            vec![("name", "x"), ("scope", "admin"), ("expiry", "never")],
        ),
        (format!("{account}/disable"), vec![]),
    ] {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields);
        assert_eq!(b.post(&path, &all).await.status, 404, "POST {path}");
    }
    assert!(app.tokens.of_owner(id).await.unwrap().is_empty());
    assert_eq!(app.accounts.services().await.unwrap().len(), 1);
    assert!(
        !app.accounts
            .state(id)
            .await
            .unwrap()
            .unwrap()
            .account
            .disabled
    );
    assert!(events(&app, "token.created").await.is_empty());
}

#[test]
fn the_command_line_makes_a_service_account_and_its_token() {
    let rt = crate::support::env::runtime();
    let env = rt.block_on(TestEnv::new());
    let out = env.sealpost(&["admin", "create-service-account", "--name", "ci-bot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = StaffId::parse(String::from_utf8(out.stdout).unwrap().trim()).expect("an id");
    let again = env.sealpost(&["admin", "create-service-account", "--name", "ci-bot"]);
    assert!(!again.status.success());

    let file = env.dir.path().join("token.txt");
    let out = env.sealpost(&[
        "admin",
        "create-token",
        "--service",
        "ci-bot",
        "--scope",
        "messages:send",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = std::fs::read_to_string(&file).unwrap();
    let both = env.sealpost(&[
        "admin",
        "create-token",
        "--service",
        "ci-bot",
        "--email",
        AGENT,
        "--scope",
        "messages:send",
        "--out",
        env.dir.path().join("other.txt").to_str().unwrap(),
    ]);
    assert!(!both.status.success(), "one account, named one way");

    let app = rt.block_on(env.app());
    let auth = rt
        .block_on(
            app.tokens
                .authenticate(&SecretString::from(value), "127.0.0.1".parse().unwrap()),
        )
        .expect("the token works");
    assert_eq!(auth.owner.account.id, id);
    assert!(auth.owner.account.is_service());
    assert_eq!(auth.owner.account.email.as_str(), "ci-bot@service.invalid");
    let created = rt.block_on(events(&app, "service_account.created"));
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].0, "cli");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_in_chromium_is_shown_once() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let downloads = tempfile::tempdir().unwrap();
    let mut chrome = crate::support::webdriver::Chrome::start(downloads.path()).await;
    chrome.goto(&format!("{base}/sign-in")).await;
    chrome.type_into("#email", AGENT).await;
    chrome
        .type_into("#password", crate::support::http::PASSWORD)
        .await;
    chrome.click("button[type=submit]").await;
    chrome.wait_for("sent messages").await;

    chrome.goto(&format!("{base}/account")).await;
    chrome.click("#tokens-link").await;
    chrome.wait_for("Create a token").await;
    chrome.type_into("#token-name", "From Chromium").await;
    chrome
        .click("input[name=scope][value='messages:read']")
        .await;
    chrome.click("input[name=expiry][value='30']").await;
    chrome.click("#create-token button[type=submit]").await;
    let page = chrome.wait_for("id=\"new-token\"").await;
    let value = element_text(&page, "new-token").expect("the value");
    assert!(value.starts_with("sp_live_"), "{value}");
    let (status, me) = api(&base, "/api/v1/me", &value).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["token"]["name"], "From Chromium");

    chrome.click("main a[href='/account/tokens']").await;
    let list = chrome.wait_for("id=\"token-list\"").await;
    assert!(list.contains("From Chromium"));
    assert!(!list.contains(&value), "shown only once");
    chrome.quit().await;
}
