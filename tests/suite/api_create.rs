//! Sending through the API (issue 14): `POST /api/v1/messages` as JSON and
//! as multipart with attachments streamed into the vault, `POST
//! /api/v1/requests`, the schema's rules refused as 400 problems and the
//! organisation's as 409, and `Idempotency-Key`: a retry, sequential or
//! concurrent, gets the first answer and sends nothing twice.

use sealpost::audit::Actor;
use sealpost::staff::Role;
use sealpost::staff::tokens::{NewApiToken, Scopes};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::support::START;
use crate::support::canaries::assert_no_canaries;
use crate::support::env::TestEnv;
use crate::support::http::{create_staff, portal};

const AGENT: &str = "agent@example.com";
const CUSTOMER: &str = "api-create-canary@example.org";
const BODY: &str = "API create body canary 41c9";
const FILE_NAME: &str = "payslip-canary-77.pdf";
const FACT: &str = "FactCanary4711";
const TICKET: &str = "ticket-canary-9f1";
const RETRY: &str = "retry-canary-5d2";
const PHOTO: &str = "Photo ID canary";

async fn token(app: &sealpost::app::App, owner: sealpost::staff::StaffId, scopes: &str) -> String {
    let (_, value) = app
        .tokens
        .create(
            Actor::Cli,
            NewApiToken {
                owner,
                name: "test".to_owned(),
                scopes: Scopes::parse_list(scopes).unwrap(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    value.expose_secret().to_owned()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    location: Option<String>,
    replayed: bool,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.body
        );
        assert_eq!(
            self.json()["type"],
            format!("/api/v1/docs#problem-{kind}"),
            "{}",
            self.body
        );
    }
}

async fn answer(r: reqwest::Response) -> Answer {
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answer {
        status: r.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        location: header("location"),
        replayed: header("idempotent-replayed").as_deref() == Some("true"),
        body: r.text().await.unwrap(),
    }
}

async fn send_json(base: &str, path: &str, token: &str, key: Option<&str>, body: &Value) -> Answer {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    answer(req.send().await.unwrap()).await
}

async fn send_form(base: &str, token: &str, form: reqwest::multipart::Form) -> Answer {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/messages"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    answer(r).await
}

fn message() -> Value {
    json!({
        "to": CUSTOMER,
        "body": BODY,
        "verify": {"email_code": {}},
    })
}

async fn count(app: &sealpost::app::App, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn messages_and_requests_are_sent_through_the_api() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let send = token(&app, agent, "messages:send,messages:read").await;
    let read_only = token(&app, agent, "messages:read").await;

    // JSON: the message is sent, its email queued, and it reads back.
    let sent = send_json(&base, "/api/v1/messages", &send, None, &message()).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let created = sent.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["kind"], "message");
    assert!(created.get("access_code").is_none(), "{created}");
    assert_eq!(
        sent.location.as_deref(),
        Some(format!("/api/v1/messages/{id}").as_str())
    );
    let got = reqwest::Client::new()
        .get(format!("{base}/api/v1/messages/{id}"))
        .bearer_auth(&send)
        .send()
        .await
        .unwrap();
    let got = answer(got).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(["queued", "emailed"].contains(&got.json()["status"].as_str().unwrap()));
    assert_eq!(got.json()["verification"], json!(["email_code"]));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 1);

    // An access code left out is generated and shown in the answer once.
    let mut m = message();
    m["verify"] = json!({"access_code": {}, "known_fact": {"answer": FACT}});
    m["expires_in_hours"] = json!(48.0);
    m["shred_after_pickup"] = json!(true);
    m["title"] = json!("Internal title");
    let sent = send_json(&base, "/api/v1/messages", &send, None, &m).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let code = sent.json()["access_code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 9, "{code}");
    assert!(code.chars().filter(char::is_ascii_digit).count() == 8);
    assert_eq!(
        sent.json()["expires_at"],
        sealpost::text::format_time_rfc3339(START + 48 * 3600)
    );

    // Multipart: the message part first, then the files, streamed.
    let file = crate::support::files::bytes(700_000, 3);
    let form = reqwest::multipart::Form::new()
        .part(
            "message",
            reqwest::multipart::Part::text(
                json!({"to": CUSTOMER, "verify": {"email_code": {}}}).to_string(),
            )
            .mime_str("application/json")
            .unwrap(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(file.clone())
                .file_name(FILE_NAME)
                .mime_str("application/pdf")
                .unwrap(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"second".to_vec()).file_name("b.txt"),
        );
    let sent = send_form(&base, &send, form).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let with_files: sealpost::ids::MessageId = sent.json()["id"].as_str().unwrap().parse().unwrap();
    let parts = app.vault.parts(with_files).await.unwrap();
    assert_eq!(parts.len(), 2, "two files (no text was sent)");
    let key = app.vault.unlock(with_files).await.unwrap();
    let names: Vec<Option<String>> = parts
        .iter()
        .map(|p| key.part_meta(p).unwrap().file_name)
        .collect();
    assert!(names.contains(&Some(FILE_NAME.to_owned())), "{names:?}");

    // Multipart refusals: files before the message, no files at all, a
    // file part that is no file.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x.txt"),
    );
    send_form(&base, &send, form)
        .await
        .assert_problem(400, "invalid-input");
    let form = reqwest::multipart::Form::new().part(
        "message",
        reqwest::multipart::Part::text(message().to_string())
            .mime_str("application/json")
            .unwrap(),
    );
    send_form(&base, &send, form)
        .await
        .assert_problem(400, "invalid-input");
    // A `file` part without a file name is a form value, not a file.
    let form = reqwest::multipart::Form::new()
        .part(
            "message",
            reqwest::multipart::Part::text(message().to_string())
                .mime_str("application/json")
                .unwrap(),
        )
        .part("file", reqwest::multipart::Part::text("6.99e16"));
    send_form(&base, &send, form)
        .await
        .assert_problem(400, "invalid-input");

    // What breaks the schema is 400; what the organisation does not allow
    // is 409; the wrong format is 415; no scope is 403.
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut m = message();
        f(&mut m);
        m
    };
    for body in [
        bad(&|m| m["to"] = json!("not an address")),
        bad(&|m| m["body"] = Value::Null),
        bad(&|m| m["body"] = json!("")),
        bad(&|m| m["unknown"] = json!(1)),
        bad(&|m| m["verify"] = json!({"email_code": null})),
        bad(&|m| m["verify"] = json!({"known_fact": {"answer": "12 34"}})),
        bad(&|m| m["verify"] = json!({"access_code": {"code": "12345"}})),
        bad(&|m| m["expires_in_hours"] = json!(721)),
        bad(&|m| m["expires_in_hours"] = json!(1.5)),
        bad(&|m| m["phone"] = json!("call me")),
        bad(&|m| m["conversation"] = json!("not-a-uuid")),
        bad(&|m| {
            m.as_object_mut().unwrap().remove("body");
        }),
    ] {
        send_json(&base, "/api/v1/messages", &send, None, &body)
            .await
            .assert_problem(400, "invalid-input");
    }
    let not_json = reqwest::Client::new()
        .post(format!("{base}/api/v1/messages"))
        .bearer_auth(&send)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    answer(not_json)
        .await
        .assert_problem(415, "unsupported-media-type");
    send_json(&base, "/api/v1/messages", &read_only, None, &message())
        .await
        .assert_problem(403, "forbidden");
    let unknown = bad(&|m| m["conversation"] = json!(uuid::Uuid::new_v4().to_string()));
    send_json(&base, "/api/v1/messages", &send, None, &unknown)
        .await
        .assert_problem(404, "not-found");

    let mut settings = app.settings.load().await.unwrap();
    settings.methods = vec![sealpost::settings::Method::EmailCode];
    app.settings.save(Actor::Cli, &settings).await.unwrap();
    // Without `verify`, the organisation's default method.
    let default = bad(&|m| {
        m.as_object_mut().unwrap().remove("verify");
    });
    let sent = send_json(&base, "/api/v1/messages", &send, None, &default).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let known = bad(&|m| m["verify"] = json!({"known_fact": {"answer": FACT}}));
    let refused = send_json(&base, "/api/v1/messages", &send, None, &known).await;
    refused.assert_problem(409, "conflict");
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("known_fact")
    );

    // A document request.
    let request = json!({
        "to": CUSTOMER,
        "instructions": "Please upload these.",
        "verify": {"email_code": {}},
        "items": [PHOTO, "Last payslip"],
        "accept": ["pdf", "jpeg"],
        "max_mib": 5,
    });
    let sent = send_json(&base, "/api/v1/requests", &send, None, &request).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(sent.json()["kind"], "request");
    let rid: sealpost::ids::MessageId = sent.json()["id"].as_str().unwrap().parse().unwrap();
    let stored = app.requests.get(rid).await.unwrap().unwrap();
    assert_eq!(stored.items, 2);
    assert_eq!(stored.max_bytes, 5 * 1024 * 1024);
    let mut too_big = request.clone();
    too_big["max_mib"] = json!(settings.size_limit_mib + 1);
    send_json(&base, "/api/v1/requests", &send, None, &too_big)
        .await
        .assert_problem(409, "conflict");
    for broken in [json!([]), json!(["   "]), json!(["two\nlines"])] {
        let mut r = request.clone();
        r["items"] = broken;
        send_json(&base, "/api/v1/requests", &send, None, &r)
            .await
            .assert_problem(400, "invalid-input");
    }

    // Nothing readable was stored.
    assert_no_canaries(
        "the database",
        &env.database_bytes(&app).await,
        &[CUSTOMER, BODY, FILE_NAME, PHOTO, FACT],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_sends_once_however_often_it_is_retried() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let other = create_staff(&app, "other@example.com", Role::Agent).await;
    let send = token(&app, agent, "messages:send").await;
    let second = token(&app, agent, "messages:send").await;
    let others = token(&app, other, "messages:send").await;

    // A retry returns the first answer, marked as a replay, and sends
    // nothing; another token of the same member shares the key.
    let first = send_json(&base, "/api/v1/messages", &send, Some(TICKET), &message()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(!first.replayed);
    let again = send_json(&base, "/api/v1/messages", &second, Some(TICKET), &message()).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert!(again.replayed);
    assert_eq!(again.json(), first.json());
    assert_eq!(again.location, first.location);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 1);

    // The same key for another request is refused; another member's key
    // of the same name is theirs.
    let mut different = message();
    different["body"] = json!("Something else");
    send_json(&base, "/api/v1/messages", &send, Some(TICKET), &different)
        .await
        .assert_problem(409, "conflict");
    let theirs = send_json(&base, "/api/v1/messages", &others, Some(TICKET), &message()).await;
    assert_eq!(theirs.status, 201, "{}", theirs.body);
    assert!(!theirs.replayed);

    // A generated access code comes back in the replay too.
    let mut coded = message();
    coded["verify"] = json!({"access_code": {}});
    let a = send_json(&base, "/api/v1/messages", &send, Some("coded"), &coded).await;
    let b = send_json(&base, "/api/v1/messages", &send, Some("coded"), &coded).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(b.replayed);
    assert_eq!(a.json()["access_code"], b.json()["access_code"]);

    // A call that failed leaves the key free: the retry runs.
    let mut unknown = message();
    unknown["conversation"] = json!(uuid::Uuid::new_v4().to_string());
    send_json(&base, "/api/v1/messages", &send, Some(RETRY), &unknown)
        .await
        .assert_problem(404, "not-found");
    let mut ok = false;
    for _ in 0..50 {
        let r = send_json(&base, "/api/v1/messages", &send, Some(RETRY), &message()).await;
        if r.status == 201 {
            assert!(!r.replayed);
            ok = true;
            break;
        }
        // The release runs just after the failed answer.
        r.assert_problem(409, "conflict");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "the key was released");

    // Twenty concurrent calls with one key: one message, one email, and
    // every caller gets its id.
    let before = count(&app, "SELECT COUNT(*) FROM outbox").await;
    let calls = (0..20).map(|_| {
        let (base, send) = (base.clone(), send.clone());
        tokio::spawn(async move {
            send_json(&base, "/api/v1/messages", &send, Some("burst"), &message()).await
        })
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut ids = std::collections::BTreeSet::new();
    for a in answers {
        let a = a.unwrap();
        assert_eq!(a.status, 201, "{}", a.body);
        ids.insert(a.json()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, before + 1);

    // Bad keys are 400; keys and requests are stored only hashed.
    // (Spaces around a value are not the key's: HTTP drops them.)
    for bad in ["", &"k".repeat(256), "tab\tkey", "caf\u{e9}"] {
        let r = reqwest::Client::new()
            .post(format!("{base}/api/v1/messages"))
            .bearer_auth(&send)
            .header("idempotency-key", bad)
            .json(&message())
            .send()
            .await;
        // Some of these are not even sendable as a header value.
        if let Ok(r) = r {
            answer(r).await.assert_problem(400, "invalid-input");
        }
    }
    assert_no_canaries(
        "the database",
        &env.database_bytes(&app).await,
        &[TICKET, RETRY, BODY, CUSTOMER],
    );

    // A day later the key is forgotten and runs again.
    sqlx::query("UPDATE idempotency_keys SET started_at = started_at - 90000")
        .execute(app.db.pool())
        .await
        .unwrap();
    assert!(app.idempotency.purge().await.unwrap() >= 1);
    let later = send_json(&base, "/api/v1/messages", &send, Some(TICKET), &message()).await;
    assert_eq!(later.status, 201, "{}", later.body);
    assert!(!later.replayed);
    assert_ne!(later.json()["id"], first.json()["id"]);
}
