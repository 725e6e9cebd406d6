//! `/api/v1` and API tokens (issue 14): bearer tokens with scopes on the
//! real router and database; problem+json errors; cookies never work on
//! the API and tokens never on the portal; tokens stored only as keyed
//! hashes; every call audited with the token id; the OpenAPI document and
//! its page served; `sealpost admin create-token` as an operator runs it.

use std::os::unix::fs::PermissionsExt;

use sealpost::audit::Actor;
use sealpost::staff::Role;
use sealpost::staff::tokens::{NewApiToken, Scopes};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::support::START;
use crate::support::canaries::assert_no_canaries;
use crate::support::compose::Compose;
use crate::support::env::{TestEnv, runtime};
use crate::support::http::{Browser, create_staff, portal};

const AGENT: &str = "agent@example.com";
const OTHER: &str = "other@example.com";
const ADMIN: &str = "admin@example.com";
const CUSTOMER: &str = "api-customer-canary@example.org";
const TITLE: &str = "API title canary 7f3e";

async fn token(
    app: &sealpost::app::App,
    owner: sealpost::staff::StaffId,
    scopes: &str,
    expires_at: Option<i64>,
) -> (sealpost::staff::tokens::TokenId, SecretString) {
    app.tokens
        .create(
            Actor::Cli,
            NewApiToken {
                owner,
                name: "test".to_owned(),
                scopes: Scopes::parse_list(scopes).unwrap(),
                expires_at,
            },
        )
        .await
        .unwrap()
}

struct Call {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    body: String,
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// A problem document of this status and type name.
    fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.body
        );
        let p = self.json();
        assert_eq!(p["status"], status, "{p}");
        assert_eq!(p["type"], format!("/api/v1/docs#problem-{kind}"), "{p}");
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["detail"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
    }
}

async fn post(base: &str, path: &str, token: &str, json: Option<&str>) -> Call {
    let client = reqwest::Client::new();
    let mut req = client.post(format!("{base}{path}")).bearer_auth(token);
    if let Some(body) = json {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let r = req.send().await.unwrap();
    Call {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        www_authenticate: None,
        body: r.text().await.unwrap(),
    }
}

async fn call(base: &str, path: &str, token: Option<&str>) -> Call {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client.get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Call {
        status: r.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        www_authenticate: header("www-authenticate"),
        body: r.text().await.unwrap(),
    }
}

#[tokio::test]
async fn tokens_authenticate_by_scope_and_owner_and_errors_are_problems() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let other = create_staff(&app, OTHER, Role::Agent).await;
    let admin = create_staff(&app, ADMIN, Role::Admin).await;
    let mut browser = Browser::signed_in(&base, AGENT).await;
    let id = Compose::to(CUSTOMER)
        .methods(&["email_code"])
        .title(TITLE)
        .body("API body canary")
        .send(&mut browser)
        .await;

    let (read_id, read) = token(&app, agent, "messages:read", None).await;
    let (_, send_only) = token(&app, agent, "messages:send", None).await;
    let (_, others) = token(&app, other, "messages:read", None).await;
    let (_, admin_all) = token(&app, admin, "admin", None).await;
    let (_, short) = token(&app, agent, "messages:read", Some(START + 3600)).await;
    let read = read.expose_secret();

    // No token, a malformed one, a well-formed unknown one: 401 problems.
    let unknown = format!("sp_live_{}", "A".repeat(43));
    for t in [None, Some("nonsense"), Some(unknown.as_str())] {
        let c = call(&base, "/api/v1/me", t).await;
        c.assert_problem(401, "unauthorized");
        assert!(c.www_authenticate.is_some_and(|h| h.starts_with("Bearer")));
    }

    // Who am I.
    let me = call(&base, "/api/v1/me", Some(read)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me = me.json();
    assert_eq!(me["email"], AGENT);
    assert_eq!(me["role"], "agent");
    assert_eq!(me["token"]["id"], read_id.to_string());
    assert_eq!(me["token"]["scopes"], serde_json::json!(["messages:read"]));

    // One message: status and events, never the recipient or content.
    let path = format!("/api/v1/messages/{id}");
    let got = call(&base, &path, Some(read)).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let m = got.json();
    assert_eq!(m["id"], id.to_string());
    assert_eq!(m["kind"], "message");
    assert_eq!(m["sender"], agent.to_string());
    assert!(
        m["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "message.sent"),
        "{m}"
    );
    for canary in [CUSTOMER, TITLE, "API body canary"] {
        assert!(!got.body.contains(canary), "{canary} in {}", got.body);
    }

    // Scope, ownership, admin.
    call(&base, &path, Some(send_only.expose_secret()))
        .await
        .assert_problem(403, "forbidden");
    call(&base, &path, Some(others.expose_secret()))
        .await
        .assert_problem(404, "not-found");
    assert_eq!(
        call(&base, &path, Some(admin_all.expose_secret()))
            .await
            .status,
        200
    );
    call(&base, "/api/v1/messages/not-an-id", Some(read))
        .await
        .assert_problem(404, "not-found");

    // The list: own messages only, bad parameters are 400 problems.
    let list = call(&base, "/api/v1/messages?limit=10", Some(read)).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let items = list.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.to_string());
    let theirs = call(&base, "/api/v1/messages", Some(others.expose_secret())).await;
    assert_eq!(theirs.json()["items"], serde_json::json!([]));
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "status=bogus",
        "cursor=nope",
    ] {
        call(&base, &format!("/api/v1/messages?{bad}"), Some(read))
            .await
            .assert_problem(400, "invalid-input");
    }
    call(&base, "/api/v1/no-such-thing", Some(read))
        .await
        .assert_problem(404, "not-found");

    // A portal session opens nothing on the API; a token opens no page.
    let cookie_call = browser.get("/api/v1/me").await;
    assert_eq!(cookie_call.status, 401, "{}", cookie_call.body);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(format!("{base}/sent"))
        .bearer_auth(read)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert!(
        page.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/sign-in"),
    );

    // Every authenticated call is audited with the token id (never its value).
    let calls: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT detail, message_id FROM audit_log WHERE action = 'api.call' ORDER BY id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    assert!(calls.len() >= 10, "{calls:?}");
    assert!(calls.iter().all(|(d, _)| !d.contains(read)));
    assert!(
        calls.iter().any(|(d, m)| d.contains(&read_id.to_string())
            && d.contains("/api/v1/messages/{id}")
            && m.as_deref() == Some(id.to_string().as_str())),
        "{calls:?}"
    );

    // Expired, revoked, disabled owner: 401.
    assert_eq!(
        call(&base, "/api/v1/me", Some(short.expose_secret()))
            .await
            .status,
        200
    );
    clock.advance(3600);
    call(&base, "/api/v1/me", Some(short.expose_secret()))
        .await
        .assert_problem(401, "unauthorized");
    assert!(app.tokens.revoke(Actor::Cli, read_id, None).await.unwrap());
    call(&base, "/api/v1/me", Some(read))
        .await
        .assert_problem(401, "unauthorized");
    app.accounts.disable_id(Actor::Cli, other).await.unwrap();
    call(&base, "/api/v1/me", Some(others.expose_secret()))
        .await
        .assert_problem(401, "unauthorized");

    // Token values are nowhere in the database, in any encoding.
    let values = [
        read.to_owned(),
        send_only.expose_secret().to_owned(),
        others.expose_secret().to_owned(),
        admin_all.expose_secret().to_owned(),
    ];
    let secrets: Vec<&str> = values
        .iter()
        .map(|v| v.strip_prefix("sp_live_").unwrap())
        .collect();
    assert_no_canaries("database", &env.database_bytes(&app).await, &secrets);
}

#[tokio::test]
async fn a_sender_extends_resends_unlocks_and_revokes_through_the_api() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let other = create_staff(&app, OTHER, Role::Agent).await;
    let mut browser = Browser::signed_in(&base, AGENT).await;
    let id = Compose::to(CUSTOMER)
        .methods(&["email_code"])
        .send(&mut browser)
        .await;
    let (_, send) = token(&app, agent, "messages:send,messages:read", None).await;
    let (_, read_only) = token(&app, agent, "messages:read", None).await;
    let (_, others) = token(&app, other, "messages:send", None).await;
    let send = send.expose_secret();
    let at = |what: &str| format!("/api/v1/messages/{id}/{what}");

    // Scope and ownership come first, for every action.
    for what in ["revoke", "extend", "resend", "unlock"] {
        post(
            &base,
            &at(what),
            read_only.expose_secret(),
            Some(r#"{"hours":1}"#),
        )
        .await
        .assert_problem(403, "forbidden");
        post(
            &base,
            &at(what),
            others.expose_secret(),
            Some(r#"{"hours":1}"#),
        )
        .await
        .assert_problem(404, "not-found");
    }
    let denied: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'message.access_denied' AND message_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(denied, 4);

    // Extend: from now, within 30 days; a bad body is a 400 problem.
    clock.advance(600);
    let r = post(&base, &at("extend"), send, Some(r#"{"hours":100}"#)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["expires_at"],
        sealpost::text::format_time_rfc3339(START + 600 + 100 * 3600)
    );
    for body in [
        r#"{"hours":0}"#,
        r#"{"hours":721}"#,
        r#"{"hours":-1}"#,
        "{",
        r#"{"days":1}"#,
    ] {
        post(&base, &at("extend"), send, Some(body))
            .await
            .assert_problem(400, "invalid-input");
    }
    post(&base, &at("extend"), send, None)
        .await
        .assert_problem(400, "invalid-input");

    // Resend: a new link is queued; unlock changes nothing on an unlocked one.
    let queued = |app: sealpost::app::App| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE message_id = $1")
            .bind(id.to_string())
            .fetch_one(app.db.pool())
            .await
            .unwrap()
    };
    let before = queued(app.clone()).await;
    let r = post(&base, &at("resend"), send, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(queued(app.clone()).await, before + 1);
    let r = post(&base, &at("unlock"), send, None).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Revoke: shredded at once; twice is the same answer; no new link after.
    for _ in 0..2 {
        let r = post(&base, &at("revoke"), send, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["status"], "revoked");
    }
    for what in ["resend", "extend"] {
        post(&base, &at(what), send, Some(r#"{"hours":1}"#))
            .await
            .assert_problem(409, "conflict");
    }
    let got = call(&base, &format!("/api/v1/messages/{id}"), Some(send)).await;
    assert_eq!(got.json()["shredded"], true);
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE message_id = $1 ORDER BY id")
            .bind(id.to_string())
            .fetch_all(app.db.pool())
            .await
            .unwrap();
    for action in [
        "message.expiry_extended",
        "message.link_resent",
        "message.revoked",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

#[tokio::test]
async fn a_flood_of_bad_tokens_is_answered_401_in_parallel() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let (_, good) = token(&app, agent, "messages:read", None).await;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let base = base.clone();
        let bad = format!("sp_live_{:0>43}", i);
        tasks.push(tokio::spawn(async move {
            call(&base, "/api/v1/messages", Some(&bad)).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    // The real caller still gets in, and the flood left no audit trail to
    // grow (only authenticated calls are recorded).
    assert_eq!(
        call(&base, "/api/v1/me", Some(good.expose_secret()))
            .await
            .status,
        200
    );
    let recorded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'api.call'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(recorded, 1);
}

#[tokio::test]
async fn the_openapi_document_and_its_page_are_served() {
    let env = TestEnv::new().await;
    let (_app, _clock, base) = portal(&env, START).await;
    let doc = call(&base, "/api/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.content_type.starts_with("application/json"));
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for path in ["/api/v1/me", "/api/v1/messages", "/api/v1/messages/{id}"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}: {doc}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    // Status names come from the stored ones, every one listed.
    let statuses = doc["components"]["schemas"]["StatusName"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"))
        .clone();
    assert_eq!(statuses.len(), sealpost::deliveries::Status::ALL.len());
    assert!(statuses.contains(&serde_json::json!("downloaded")));
    let page = call(&base, "/api/v1/docs", None).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    for text in [
        "GET /api/v1/messages/{id}",
        "messages:read",
        "id=\"problem-forbidden\"",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
}

#[test]
fn create_token_writes_a_private_file_and_prints_only_its_id() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let password = env.dir.path().join("password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();
    let out = env.sealpost(&[
        "admin",
        "create-user",
        "--email",
        AGENT,
        "--role",
        "agent",
        "--password-file",
        password.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let file = env.dir.path().join("token.txt");
    let args = [
        "admin",
        "create-token",
        "--email",
        AGENT,
        "--scope",
        "messages:send,messages:read",
        "--expires",
        "30d",
        "--out",
        file.to_str().unwrap(),
    ];
    let out = env.sealpost(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let id = sealpost::staff::tokens::TokenId::parse(printed.trim()).expect("an id");
    let value = std::fs::read_to_string(&file).unwrap();
    assert!(value.starts_with("sp_live_"), "{value}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&value));

    // It never overwrites a file; a bad scope or span is explained.
    let again = env.sealpost(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), value);
    let other = env.dir.path().join("other.txt");
    for (flag, bad, says) in [
        ("--scope", "messages:write", "unknown scope"),
        ("--expires", "1w", "--expires"),
    ] {
        let mut a: Vec<&str> = args.to_vec();
        let at = a.iter().position(|x| *x == flag).unwrap();
        a[at + 1] = bad;
        let out_at = a.iter().position(|x| *x == "--out").unwrap();
        a[out_at + 1] = other.to_str().unwrap();
        let out = env.sealpost(&a);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(!other.exists());
    }

    // The token works until revoked on the command line.
    let app = rt.block_on(env.app());
    let secret = SecretString::from(value);
    let ip = "127.0.0.1".parse().unwrap();
    let auth = rt.block_on(app.tokens.authenticate(&secret, ip)).unwrap();
    assert_eq!(auth.token.id, id);
    assert!(auth.token.expires_at.is_some());
    let out = env.sealpost(&["admin", "revoke-token", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rt.block_on(app.tokens.authenticate(&secret, ip)).is_err());
}

/// `schemathesis` (pip; `.ci/run` installs it) against the served OpenAPI
/// document with an admin token, default checks: no 5xx, responses match
/// the schema, no undocumented status, auth not ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_the_served_api() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let admin = create_staff(&app, ADMIN, Role::Admin).await;
    let mut browser = Browser::signed_in(&base, ADMIN).await;
    Compose::to(CUSTOMER)
        .methods(&["email_code"])
        .send(&mut browser)
        .await;
    let (_, admin_token) = token(&app, admin, "admin", None).await;
    let header = format!("Authorization: Bearer {}", admin_token.expose_secret());
    let url = format!("{base}/api/v1/openapi.json");
    // Its cache folder goes to the test's temporary folder, not the tree.
    let cwd = env.dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            // One worker: with two threads, CPython 3.11's parser (used by
            // hypothesis to describe filters) can fail inside the tool with
            // "AST constructor recursion depth mismatch" (seen in CI).
            .args(["run", &url, "--header", &header, "--workers", "1"])
            .current_dir(cwd)
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .unwrap()
    .expect("schemathesis runs (pip install schemathesis; .ci/run does)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation the document lists was exercised.
    let doc = call(&base, "/api/v1/openapi.json", None).await.json();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            let methods = ["get", "post", "put", "patch", "delete"];
            methods.iter().filter(|m| item.get(**m).is_some()).count()
        })
        .sum();
    assert!(operations >= 3);
    assert!(
        report.contains(&format!("Tested: {operations}\n")),
        "{report}"
    );
    // The closing line counts failures and errors (warnings, such as ids
    // it could not guess, are neither).
    let last = report
        .lines()
        .rev()
        .find(|l| l.starts_with("====="))
        .unwrap_or_default();
    assert!(
        !last.contains("failure") && !last.contains("error"),
        "{report}"
    );
}
