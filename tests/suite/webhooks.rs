//! Signed webhooks (issue 14 scope 5) against a real HTTP receiver on a
//! loopback port that checks every request the Standard Webhooks way with
//! its own implementation (HMAC-SHA256 over `id.timestamp.body`, a
//! five-minute window, de-duplication by `webhook-id`): events queue while
//! it is down and arrive once per id, in order per message, from two
//! instances at once; tampered and replayed requests fail its check; no
//! customer data is in any body or header; private addresses need the
//! admin's opt-in; and every event type arrives end to end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::multipart::{Form, Part};
use sealpost::app::App;
use sealpost::clock::{Clock, ManualClock};
use sealpost::staff::Role;
use sealpost::vault::MessageId;
use sha2::Sha256;

use crate::replies::pdf;
use crate::support::START;
use crate::support::canaries::assert_no_canaries;
use crate::support::compose::{Compose, fresh_link};
use crate::support::env::TestEnv;
use crate::support::http::{Browser, composed_id, create_staff, input_value, serve};
use crate::support::smtp::{Reply, SmtpServer};

const ADMIN: &str = "admin@example.com";
const AGENT: &str = "agent@example.com";
const CODE: &str = "Sesame-4711";

const CANARY_ADDRESS: &str = "canary.webhook.customer@example.org";
const CANARY_TITLE: &str = "Canary-Title-Webhook-Andromeda";
const CANARY_BODY: &str = "Canary-Body-Webhook-Perseus: account 99-88-77";
const CANARY_FILE: &str = "Canary-File-Webhook-Cassiopeia.pdf";
const CANARIES: [&str; 4] = [CANARY_ADDRESS, CANARY_TITLE, CANARY_BODY, CANARY_FILE];

/// The receiver's replay window, as the specification suggests.
const TOLERANCE: i64 = 5 * 60;

// --- the receiver ----------------------------------------------------------

/// One request as it reached the receiver.
#[derive(Clone, Debug)]
struct Request {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// The receiver's own check, written from the specification (not with
/// Sealpost's code): the timestamp must be within [`TOLERANCE`] of its
/// clock, and one of the `v1,` signatures must be the HMAC-SHA256, keyed
/// with the secret's base64-decoded bytes, of `id.timestamp.body`.
fn verify(secret: &str, r: &Request, now: i64) -> Result<(), &'static str> {
    let (id, timestamp) = (r.header("webhook-id"), r.header("webhook-timestamp"));
    if id.is_empty() {
        return Err("no webhook-id");
    }
    let at: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
    if (now - at).abs() > TOLERANCE {
        return Err("timestamp outside the window");
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("not a whsec_ secret")?)
        .map_err(|_| "secret is not base64")?;
    for candidate in r.header("webhook-signature").split(' ') {
        let Some(sig) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&r.body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("bad signature")
}

#[derive(Default)]
struct Log {
    secret: Option<String>,
    /// Every request, checked or not.
    all: Vec<Request>,
    /// The first verified arrival of each id, in arrival order.
    accepted: Vec<Request>,
    /// Verified arrivals per id (a redelivery or a replay adds one).
    seen: HashMap<String, usize>,
    rejected: Vec<&'static str>,
}

/// A webhook receiver on 127.0.0.1 that can go down and come back on the
/// same port.
#[derive(Clone)]
struct Receiver {
    log: Arc<Mutex<Log>>,
    clock: ManualClock,
    port: u16,
    running: Arc<Mutex<Option<Serving>>>,
}

/// How to stop a running receiver, and its task.
type Serving = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let request = Request {
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.to_vec(),
    };
    let mut log = r.log.lock().unwrap();
    log.all.push(request.clone());
    let secret = log.secret.clone().unwrap_or_default();
    match verify(&secret, &request, r.clock.now()) {
        Ok(()) => {
            let id = request.header("webhook-id").to_owned();
            let n = log.seen.entry(id).or_insert(0);
            *n += 1;
            if *n == 1 {
                log.accepted.push(request);
            }
            StatusCode::NO_CONTENT
        }
        Err(reason) => {
            log.rejected.push(reason);
            if reason.starts_with("timestamp") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNAUTHORIZED
            }
        }
    }
}

impl Receiver {
    async fn start(clock: &ManualClock) -> Receiver {
        let mut r = Receiver {
            log: Arc::default(),
            clock: clock.clone(),
            port: 0,
            running: Arc::default(),
        };
        r.up().await;
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn set_secret(&self, secret: &str) {
        self.log.lock().unwrap().secret = Some(secret.to_owned());
    }

    /// Starts serving (on the same port as before, if it ran before).
    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the receiver");
        self.port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    rx.await.ok();
                })
                .await
                .ok();
        });
        *self.running.lock().unwrap() = Some((tx, task));
    }

    /// Stops serving: the port refuses connections until [`Receiver::up`].
    async fn down(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some((tx, task)) = running {
            tx.send(()).ok();
            tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("the receiver stops")
                .ok();
        }
    }

    fn accepted(&self) -> Vec<Request> {
        self.log.lock().unwrap().accepted.clone()
    }

    fn all(&self) -> Vec<Request> {
        self.log.lock().unwrap().all.clone()
    }

    fn rejected(&self) -> Vec<&'static str> {
        self.log.lock().unwrap().rejected.clone()
    }

    fn seen(&self, id: &str) -> usize {
        self.log.lock().unwrap().seen.get(id).copied().unwrap_or(0)
    }

    /// The event types that arrived about `message`, in arrival order.
    fn types_for(&self, message: MessageId) -> Vec<String> {
        self.accepted()
            .iter()
            .map(Request::json)
            .filter(|j| j["data"]["message_id"] == message.to_string())
            .map(|j| j["type"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Re-sends a request to the receiver as it is, with `change` applied.
    async fn replay(&self, r: &Request, change: impl FnOnce(&mut Request)) -> u16 {
        let mut r = r.clone();
        change(&mut r);
        let mut req = reqwest::Client::new().post(self.url()).body(r.body.clone());
        for (k, v) in &r.headers {
            if k.starts_with("webhook-") || k == "content-type" {
                req = req.header(k, v);
            }
        }
        req.send().await.unwrap().status().as_u16()
    }
}

// --- set-up ----------------------------------------------------------------

struct Setup {
    app: App,
    clock: ManualClock,
    base: String,
    admin: Browser,
    agent: Browser,
    receiver: Receiver,
}

async fn setup(env: &TestEnv, extra: &[(String, String)]) -> Setup {
    let clock = ManualClock::new(START);
    let mut vars = env.env_vars();
    vars.extend_from_slice(extra);
    let config = sealpost::config::Config::load(None, vars).expect("config");
    let app = App::open_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("open app");
    let base = serve(app.clone()).await;
    create_staff(&app, ADMIN, Role::Admin).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let admin = Browser::signed_in(&base, ADMIN).await;
    let agent = Browser::signed_in(&base, AGENT).await;
    let receiver = Receiver::start(&clock).await;
    Setup {
        app,
        clock,
        base,
        admin,
        agent,
        receiver,
    }
}

/// Registers an endpoint through the admin page; returns (id, secret).
async fn add_endpoint(
    admin: &mut Browser,
    url: &str,
    events: &[&str],
    allow_private: bool,
) -> (String, String) {
    let mut fields = vec![("url", url)];
    fields.extend(events.iter().map(|e| ("event", *e)));
    if allow_private {
        fields.push(("allow_private", "on"));
    }
    let r = admin
        .submit("/admin/webhooks", "/admin/webhooks", &fields)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let secret = input_value(&r.body, "secret").expect("the secret, shown once");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let at = r.body.find("/admin/webhooks/").expect("a link to the log") + 16;
    let id: String = r.body[at..].chars().take_while(|c| *c != '"').collect();
    (id, secret)
}

/// Every event type.
const ALL: [&str; 10] = sealpost::audit::webhooks::EVENT_TYPES;

/// Runs the worker until nothing is due; returns how many attempts it made.
async fn deliver(app: &App) -> usize {
    let mut total = 0;
    for _ in 0..100 {
        let n = app.webhooks.run_once().await.unwrap();
        if n == 0 {
            return total;
        }
        total += n;
    }
    panic!("the webhook worker never ran dry");
}

async fn count(app: &App, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn customer_verifies(s: &Setup, id: MessageId) -> Browser {
    let link = fresh_link(&s.app, id).await;
    let mut customer = Browser::new(&s.base);
    assert_eq!(customer.get(&link).await.status, 200);
    let r = customer
        .post(&format!("{link}/verify"), &[("access_code", CODE)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    customer
}

async fn revoke(staff: &mut Browser, id: MessageId) {
    let page = staff.get(&format!("/messages/{id}")).await;
    let token = input_value(&page.body, "csrf").unwrap();
    let r = staff
        .post(&format!("/messages/{id}/revoke"), &[("csrf", &token)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
}

// --- tests -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queue_while_the_receiver_is_down_and_arrive_once_in_order() {
    let env = TestEnv::new().await;
    let mut s = setup(&env, &[]).await;
    let (endpoint, secret) = add_endpoint(&mut s.admin, &s.receiver.url(), &ALL, true).await;
    s.receiver.set_secret(&secret);
    // The secret is never shown again, nor kept readable.
    let list = s.admin.get("/admin/webhooks").await;
    assert!(list.body.contains(&endpoint) && !list.body.contains(&secret));
    let log = s.admin.get(&format!("/admin/webhooks/{endpoint}")).await;
    assert_eq!(log.status, 200);
    assert!(!log.body.contains(&secret));
    let key = secret.trim_start_matches("whsec_");
    let at_rest = env.database_bytes(&s.app).await;
    assert_no_canaries("the database", &at_rest, &[key]);

    s.receiver.down().await;

    // Two messages full of canaries; one is picked up, the other revoked.
    let file = pdf(5, 20_000);
    let send = || {
        Compose::to(CANARY_ADDRESS)
            .title(CANARY_TITLE)
            .body(CANARY_BODY)
            .methods(&["access_code"])
            .access_code(CODE)
            .attach_typed(CANARY_FILE, &file, "application/pdf")
    };
    let one = send().send(&mut s.agent).await;
    let two = send().send(&mut s.agent).await;
    assert_eq!(s.app.outbox.run_once().await.unwrap(), 2);
    let mut customer = customer_verifies(&s, one).await;
    let dl = customer.get(&format!("/pickup/{one}/files/1")).await;
    assert_eq!(dl.status, 200);
    revoke(&mut s.agent, two).await;

    // Down: the first event of each message is tried and kept; the later
    // ones wait behind it.
    assert_eq!(s.app.webhooks.run_once().await.unwrap(), 2);
    assert_eq!(s.app.webhooks.run_once().await.unwrap(), 0);
    let one_rows = s
        .app
        .webhooks
        .deliveries_for_message(&one.to_string())
        .await
        .unwrap();
    let two_rows = s
        .app
        .webhooks
        .deliveries_for_message(&two.to_string())
        .await
        .unwrap();
    let types = |rows: &[sealpost::webhooks::Delivery]| -> Vec<String> {
        rows.iter().map(|d| d.event_type.clone()).collect()
    };
    assert_eq!(
        types(&one_rows),
        [
            "message.emailed",
            "message.visited",
            "message.verified",
            "message.downloaded"
        ]
    );
    assert_eq!(types(&two_rows), ["message.emailed", "message.revoked"]);
    for rows in [&one_rows, &two_rows] {
        assert!(rows.iter().all(|d| d.status == "pending"));
        assert_eq!(rows[0].attempts, 1);
        assert_eq!(rows[0].last_error.as_deref(), Some("connect"));
        assert!(rows[1..].iter().all(|d| d.attempts == 0));
        assert!(rows[0].next_attempt_at > START, "backs off");
    }
    assert!(s.receiver.all().is_empty());

    // Back up, and a second instance on the same database: both workers
    // run at once until nothing is left.
    s.receiver.up().await;
    s.clock.advance(3600);
    let other = App::open_with_clock(env.config(), Arc::new(s.clock.clone()))
        .await
        .expect("a second instance");
    for _ in 0..50 {
        let (a, b) = tokio::join!(s.app.webhooks.run_once(), other.webhooks.run_once());
        if a.unwrap() + b.unwrap() == 0 {
            break;
        }
    }
    assert_eq!(
        count(
            &s.app,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status <> 'delivered'"
        )
        .await,
        0
    );

    // Every event once, verified, in the order of the log per message.
    assert!(
        s.receiver.rejected().is_empty(),
        "{:?}",
        s.receiver.rejected()
    );
    let accepted = s.receiver.accepted();
    assert_eq!(accepted.len(), one_rows.len() + two_rows.len());
    assert_eq!(s.receiver.all().len(), accepted.len(), "no duplicates");
    for rows in [&one_rows, &two_rows] {
        let order: Vec<&str> = accepted
            .iter()
            .map(|r| r.header("webhook-id"))
            .filter(|id| rows.iter().any(|d| d.id == *id))
            .collect();
        let expected: Vec<&str> = rows.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(order, expected, "in order per message");
        assert!(expected.iter().all(|id| s.receiver.seen(id) == 1));
    }
    assert_eq!(
        s.receiver.types_for(two),
        ["message.emailed", "message.revoked"]
    );
    let first = accepted[0].json();
    assert_eq!(first["type"], "message.emailed");
    assert_eq!(first["timestamp"], "2027-01-15T08:00:00Z");
    assert!(first["data"]["message_id"].is_string());
    assert_eq!(first["data"]["status"], "emailed");
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["data", "timestamp", "type"]);

    // No customer data in any body or header.
    for r in s.receiver.all() {
        assert_no_canaries("a webhook body", &r.body, &CANARIES);
        let headers = format!("{:?}", r.headers);
        assert_no_canaries("webhook headers", headers.as_bytes(), &CANARIES);
    }

    // The receiver's check covers the body, the id and the time.
    let genuine = accepted
        .iter()
        .find(|r| r.json()["type"] == "message.downloaded")
        .unwrap()
        .clone();
    let id = genuine.header("webhook-id").to_owned();
    assert_eq!(
        s.receiver
            .replay(&genuine, |r| {
                let text = String::from_utf8(r.body.clone()).unwrap();
                r.body = text.replace("\"downloaded\"", "\"revoked\"").into_bytes();
                assert_ne!(r.body, genuine.body, "the body was changed");
            })
            .await,
        401,
        "a tampered body"
    );
    // Another time inside the window, under the old signature.
    let moved = (s.clock.now() - 60).to_string();
    assert_ne!(moved, genuine.header("webhook-timestamp"));
    assert_eq!(
        s.receiver
            .replay(&genuine, |r| {
                for (k, v) in &mut r.headers {
                    if k == "webhook-timestamp" {
                        *v = moved.clone();
                    }
                }
            })
            .await,
        401,
        "a timestamp moved without a new signature"
    );
    // Within the window a replay verifies but is a duplicate by its id.
    assert_eq!(s.receiver.replay(&genuine, |_| {}).await, 204);
    assert_eq!(s.receiver.seen(&id), 2);
    s.clock.advance(TOLERANCE + 60);
    assert_eq!(
        s.receiver.replay(&genuine, |_| {}).await,
        400,
        "a replay outside the window"
    );
    assert_eq!(
        s.receiver.rejected(),
        [
            "bad signature",
            "bad signature",
            "timestamp outside the window"
        ]
    );
    assert_eq!(s.receiver.seen(&id), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_need_the_admins_opt_in() {
    let env = TestEnv::new().await;
    let mut s = setup(&env, &[]).await;

    // A literal loopback address is refused at once …
    let url = s.receiver.url();
    let r = s
        .admin
        .submit(
            "/admin/webhooks",
            "/admin/webhooks",
            &[("url", url.as_str()), ("event", "message.emailed")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("private or local network"), "{}", r.body);
    for bad in ["ftp://example.com/x", "not a url"] {
        let r = s
            .admin
            .submit(
                "/admin/webhooks",
                "/admin/webhooks",
                &[("url", bad), ("event", "message.emailed")],
            )
            .await;
        assert_eq!(r.status, 422, "{bad}");
    }
    // … a name that resolves to one is refused when it is sent to.
    let by_name = url.replace("127.0.0.1", "localhost");
    let (blocked, _) = add_endpoint(&mut s.admin, &by_name, &["message.emailed"], false).await;
    let open = Receiver::start(&s.clock).await;
    let (allowed, secret) =
        add_endpoint(&mut s.admin, &open.url(), &["message.emailed"], true).await;
    open.set_secret(&secret);

    let id = Compose::to("customer@example.org")
        .methods(&["access_code"])
        .access_code(CODE)
        .send(&mut s.agent)
        .await;
    assert_eq!(s.app.outbox.run_once().await.unwrap(), 1);
    assert_eq!(s.app.webhooks.run_once().await.unwrap(), 2);
    let rows = s
        .app
        .webhooks
        .deliveries_for_message(&id.to_string())
        .await
        .unwrap();
    let of = |endpoint: &str| rows.iter().find(|d| d.endpoint_id == endpoint).unwrap();
    assert_eq!(of(&blocked).status, "pending");
    assert_eq!(
        of(&blocked).last_error.as_deref(),
        Some("blocked: private address")
    );
    assert_eq!(of(&blocked).last_status_code, None);
    assert!(
        s.receiver.all().is_empty(),
        "nothing reached the blocked endpoint"
    );
    assert_eq!(of(&allowed).status, "delivered");
    assert_eq!(of(&allowed).last_status_code, Some(204));
    assert_eq!(open.types_for(id), ["message.emailed"]);

    // The log shows it; admins redeliver with the same id; others cannot.
    let delivered = of(&allowed).id.clone();
    let page = format!("/admin/webhooks/{allowed}");
    let log = s.admin.get(&page).await;
    assert!(log.body.contains(&delivered) && log.body.contains("delivered"));
    let action = format!("{page}/deliveries/{delivered}/redeliver");
    let r = s.admin.post(&action, &[("csrf", "forged")]).await;
    assert_eq!(r.status, 403, "CSRF");
    let r = s.admin.submit(&page, &action, &[]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(s.app.webhooks.run_once().await.unwrap(), 1);
    assert_eq!(open.seen(&delivered), 2, "the same id again");
    let blocked_log = s.admin.get(&format!("/admin/webhooks/{blocked}")).await;
    assert!(blocked_log.body.contains("blocked: private address"));

    for path in ["/admin/webhooks".to_owned(), page.clone()] {
        assert_eq!(s.agent.get(&path).await.status, 404, "{path}");
    }
    let token = s.agent.csrf("/sent").await;
    let r = s.agent.post(&action, &[("csrf", &token)]).await;
    assert_eq!(r.status, 404);
    let r = s
        .agent
        .post(
            "/admin/webhooks",
            &[
                ("csrf", &token),
                ("url", "https://example.com/"),
                ("event", "message.emailed"),
            ],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .admin
        .post(
            "/admin/webhooks",
            &[
                ("url", "https://example.com/"),
                ("event", "message.emailed"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "no CSRF token");

    // Disabling stops sending; its pending delivery fails.
    let r = s
        .admin
        .submit(
            "/admin/webhooks",
            &format!("/admin/webhooks/{blocked}/disable"),
            &[],
        )
        .await;
    assert_eq!(r.status, 303);
    let rows = s
        .app
        .webhooks
        .deliveries_for_message(&id.to_string())
        .await
        .unwrap();
    let row = rows.iter().find(|d| d.endpoint_id == blocked).unwrap();
    assert_eq!(row.status, "failed");
    // Every change is audited, without the secret.
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'webhook.%' ORDER BY id",
    )
    .fetch_all(s.app.db.pool())
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "webhook.created",
            "webhook.created",
            "webhook.redelivered",
            "webhook.disabled"
        ]
    );
    assert_eq!(
        s.app.audit.verify().await.unwrap(),
        sealpost::audit::Verification::Intact {
            events: u64::try_from(count(&s.app, "SELECT COUNT(*) FROM audit_log").await).unwrap()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_failed_and_emailed_over_real_smtp() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    smtp.set_reply(Reply::Permanent);
    let mut s = setup(&env, &[("SEALPOST_SMTP_URL".to_owned(), smtp.url())]).await;
    let (_, secret) = add_endpoint(&mut s.admin, &s.receiver.url(), &ALL, true).await;
    s.receiver.set_secret(&secret);
    let send = || {
        Compose::to("customer@example.org")
            .methods(&["access_code"])
            .access_code(CODE)
    };
    let failed = send().send(&mut s.agent).await;
    assert_eq!(s.app.outbox.run_once().await.unwrap(), 1);
    smtp.set_reply(Reply::Accept);
    let emailed = send().send(&mut s.agent).await;
    assert_eq!(s.app.outbox.run_once().await.unwrap(), 1);
    deliver(&s.app).await;
    assert_eq!(s.receiver.types_for(failed), ["message.delivery_failed"]);
    assert_eq!(s.receiver.types_for(emailed), ["message.emailed"]);
    let mut statuses: Vec<String> = s
        .receiver
        .accepted()
        .iter()
        .map(|r| r.json()["data"]["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["delivery_failed", "emailed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_expired_and_subscriptions() {
    let env = TestEnv::new().await;
    let mut s = setup(&env, &[]).await;
    // This endpoint wants two kinds of event only.
    let (_, secret) = add_endpoint(
        &mut s.admin,
        &s.receiver.url(),
        &["message.locked", "message.expired"],
        true,
    )
    .await;
    s.receiver.set_secret(&secret);

    let locked = Compose::to("customer@example.org")
        .methods(&["known_fact"])
        .known_fact("4321")
        .send(&mut s.agent)
        .await;
    let link = fresh_link(&s.app, locked).await;
    let mut guesser = Browser::new(&s.base);
    assert_eq!(guesser.get(&link).await.status, 200);
    for guess in 0..10 {
        guesser
            .post(
                &format!("{link}/verify"),
                &[("known_fact", &format!("{guess:04}"))],
            )
            .await;
    }
    assert!(
        s.app
            .deliveries
            .get(locked)
            .await
            .unwrap()
            .locked_at
            .is_some()
    );

    let expiring = Compose::to("customer@example.org")
        .methods(&["access_code"])
        .access_code(CODE)
        .expiry_hours("1")
        .send(&mut s.agent)
        .await;
    s.clock.advance(2 * 3600);
    assert!(s.app.deliveries.shred_due().await.unwrap() >= 1);
    deliver(&s.app).await;
    assert_eq!(s.receiver.types_for(locked), ["message.locked"]);
    assert_eq!(s.receiver.types_for(expiring), ["message.expired"]);
    assert_eq!(s.receiver.accepted().len(), 2, "nothing it did not ask for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replied_and_request_submitted() {
    let env = TestEnv::new().await;
    let mut s = setup(&env, &[]).await;
    let (_, secret) = add_endpoint(
        &mut s.admin,
        &s.receiver.url(),
        &["message.replied", "request.submitted"],
        true,
    )
    .await;
    s.receiver.set_secret(&secret);

    // A reply to a message that allows one.
    let message = Compose::to(CANARY_ADDRESS)
        .body(CANARY_BODY)
        .methods(&["access_code"])
        .access_code(CODE)
        .allow_reply()
        .send(&mut s.agent)
        .await;
    let mut customer = customer_verifies(&s, message).await;
    let r = crate::replies::reply(
        &mut customer,
        message,
        CANARY_BODY,
        &[(CANARY_FILE, &pdf(7, 2_000))],
    )
    .await;
    assert!(
        r.status == 303 || r.status == 200,
        "{} {}",
        r.status,
        r.body
    );

    // A document request, submitted.
    let r = s
        .agent
        .submit(
            "/requests/new",
            "/requests/new",
            &[
                ("recipient", CANARY_ADDRESS),
                ("title", CANARY_TITLE),
                ("body", "Please send these."),
                ("items", "Photo ID\r\n"),
                ("kind", "pdf"),
                ("max_mib", "20"),
                ("expiry_hours", "72"),
                ("method", "access_code"),
                ("access_code", CODE),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let request = composed_id(&r).expect("the request's page");
    let mut customer = customer_verifies(&s, request).await;
    let csrf = customer.csrf(&format!("/pickup/{request}")).await;
    let part = Part::bytes(pdf(8, 2_000))
        .file_name(CANARY_FILE.to_owned())
        .mime_str("application/pdf")
        .unwrap();
    let form = Form::new()
        .text("csrf", csrf)
        .text("body", CANARY_BODY.to_owned())
        .part("item-0", part);
    let r = customer
        .post_multipart(&format!("/pickup/{request}/submit"), form)
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    deliver(&s.app).await;
    assert_eq!(s.receiver.types_for(message), ["message.replied"]);
    assert_eq!(s.receiver.types_for(request), ["request.submitted"]);
    let of_type = |t: &str| {
        s.receiver
            .accepted()
            .iter()
            .map(Request::json)
            .find(|j| j["type"] == t)
            .unwrap()
    };
    let replied = of_type("message.replied");
    assert!(replied["data"]["reply_id"].is_string(), "{replied}");
    let submitted = of_type("request.submitted");
    assert!(
        submitted["data"]["submission_id"].is_string(),
        "{submitted}"
    );
    assert_eq!(submitted["data"]["status"], "submitted");
    for r in s.receiver.all() {
        assert_no_canaries("a webhook body", &r.body, &CANARIES);
        let headers = format!("{:?}", r.headers);
        assert_no_canaries("webhook headers", headers.as_bytes(), &CANARIES);
    }
}

#[tokio::test]
async fn the_worker_and_the_log_use_indexes() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    app.db.optimize().await.unwrap();
    for (name, plan) in sealpost::store::webhooks::plans(&app.db, START)
        .await
        .unwrap()
    {
        let whole = plan.iter().any(|l| {
            let l = l.trim_start();
            (l.starts_with("SCAN") && !l.contains("USING"))
                || l.contains("Seq Scan on webhook_deliveries")
        });
        assert!(!whole, "{name} scans the whole table:\n{}", plan.join("\n"));
    }
}
