//! Outbox and mail against a real SMTP server (in process, speaking SMTP on
//! a loopback port): every kind of email and its contents, no customer data
//! in any email, stable Message-IDs across retries, back-off on 4xx, failure
//! on 5xx, leases (two workers, crashed worker), and the dev mailbox.

use std::collections::BTreeMap;
use std::sync::Arc;

use sealpost::app::App;
use sealpost::audit::{Action, Actor, Event};
use sealpost::clock::{Clock, ManualClock};
use sealpost::deliveries::{NewDelivery, Status};
use sealpost::mail::worker::{GIVE_UP_AFTER_SECONDS, LEASE_SECONDS};
use sealpost::mail::{Alert, Mail, MailError};
use sealpost::settings::{Method, Settings};
use sealpost::staff::{Role, StaffId};
use sealpost::store::Backend;
use sealpost::vault::{MessageId, MessageMeta, PartKind, PartMeta};
use sqlx::Row;

use crate::support::START;
use crate::support::env::TestEnv;
use crate::support::http::{Browser, create_staff, serve};
use crate::support::smtp::{Reply, SmtpServer, header, parts};

const ORG: &str = "Harbour Savings Bank";
const SUPPORT: &str = "Call 0800 555 0101, weekdays 8 to 18";
const RECIPIENT: &str = "pickup.customer@example.org";
const AGENT: &str = "agent.mail@example.com";

// Customer data that must never appear in any email.
const CANARY_TITLE: &str = "Canary-Title-Orion-Mortgage";
const CANARY_BODY: &str = "Canary-Body-Lyra: account 12-34-56 78901234";
const CANARY_REFERENCE: &str = "Canary-Ref-Cygnus-4711";
const CANARY_PHONE: &str = "+44 20 7946 0999";
const CANARY_FILE: &str = "Canary-File-Draco-statement.pdf";
const CANARIES: [&str; 5] = [
    CANARY_TITLE,
    CANARY_BODY,
    CANARY_REFERENCE,
    CANARY_PHONE,
    CANARY_FILE,
];

fn link(n: u8) -> String {
    format!("http://127.0.0.1:8080/p/PickupSecretToken{n}Abcdefghijklmnopqrstuvwxyz0123")
}

async fn mail_app(env: &TestEnv, clock: &ManualClock, smtp: Option<&SmtpServer>) -> App {
    let mut vars = env.env_vars();
    if let Some(smtp) = smtp {
        vars.push(("SEALPOST_SMTP_URL".to_owned(), smtp.url()));
    }
    let config = sealpost::config::Config::load(None, vars).expect("config");
    App::open_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("open app")
}

async fn brand(app: &App) {
    let settings = Settings {
        organisation: ORG.to_owned(),
        support_line: SUPPORT.to_owned(),
        ..Settings::default()
    };
    app.settings.save(Actor::Cli, &settings).await.unwrap();
}

/// A message full of canaries, its delivery row and its pickup email,
/// committed in one transaction (as compose does).
async fn send_message(app: &App, sender: StaffId, url: &str) -> MessageId {
    let mut draft = app.vault.begin_message();
    draft
        .seal_part(PartKind::Body, &PartMeta::default(), CANARY_BODY.as_bytes())
        .unwrap();
    let file = PartMeta {
        item: None,
        file_name: Some(CANARY_FILE.to_owned()),
        content_type: Some("application/pdf".to_owned()),
    };
    draft
        .seal_part(PartKind::Attachment, &file, &b"%PDF-1.4 canary"[..])
        .unwrap();
    let meta = MessageMeta {
        items: Vec::new(),
        recipient_address: Some(RECIPIENT.to_owned()),
        recipient_phone: Some(CANARY_PHONE.to_owned()),
        title: Some(CANARY_TITLE.to_owned()),
        reference: Some(CANARY_REFERENCE.to_owned()),
    };
    let expires_at = app.clock.now() + 48 * 3600;
    let sealed = app.vault.seal(draft, &meta).unwrap();
    let mut tx = app.db.begin().await.unwrap();
    let id = app.vault.commit(&mut tx, sealed).await.unwrap();
    app.deliveries
        .insert(
            &mut tx,
            &NewDelivery {
                message_id: id,
                sender,
                expires_at,
                methods: vec![Method::EmailCode],
                access_code_hash: None,
                known_fact_hash: None,
                shred_after_pickup: false,
                allow_reply: false,
                conversation_id: None,
                is_request: false,
            },
            RECIPIENT,
            &app.config.public_url,
        )
        .await
        .unwrap();
    let mail = Mail::PickupLink {
        url: url.to_owned(),
        expires_at,
    };
    app.outbox
        .enqueue(&mut tx, RECIPIENT, &mail, Some(id))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn enqueue(app: &App, to: &str, mail: &Mail, message: Option<MessageId>) -> i64 {
    let mut tx = app.db.begin().await.unwrap();
    let id = app
        .outbox
        .enqueue(&mut tx, to, mail, message)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

struct OutboxRow {
    attempts: i64,
    next_attempt_at: i64,
    sent_at: Option<i64>,
    failed_at: Option<i64>,
    last_error: Option<String>,
    has_payload: bool,
    mail_message_id: String,
}

async fn outbox_row(app: &App, id: i64) -> OutboxRow {
    let r = sqlx::query(
        "SELECT attempts, next_attempt_at, sent_at, failed_at, last_error,
                CASE WHEN payload IS NULL THEN 0 ELSE 1 END, mail_message_id FROM outbox WHERE id = $1",
    )
    .bind(id)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    OutboxRow {
        attempts: r.get(0),
        next_attempt_at: r.get(1),
        sent_at: r.get(2),
        failed_at: r.get(3),
        last_error: r.get(4),
        has_payload: r.get::<i64, _>(5) == 1,
        mail_message_id: r.get(6),
    }
}

async fn status(app: &App, id: MessageId) -> Status {
    app.deliveries
        .get(id)
        .await
        .unwrap()
        .status(app.clock.now())
}

fn assert_no_canaries(raw: &[u8]) {
    let text = String::from_utf8_lossy(raw);
    let (plain, html) = parts(raw);
    for canary in CANARIES {
        for haystack in [&*text, &plain, &html] {
            assert!(!haystack.contains(canary), "email contains {canary:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_sent_with_its_contents_and_no_customer_data() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, Some(&smtp)).await;
    brand(&app).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let url = link(1);
    let message = send_message(&app, agent, &url).await;
    assert_eq!(status(&app, message).await, Status::Queued);

    let code = Mail::VerificationCode {
        code: "914273".to_owned(),
        expires_at: START + 600,
    };
    let alert = Mail::SenderAlert {
        alert: Alert::FirstPickup,
        message_id: message,
    };
    let invite_url = "http://127.0.0.1:8080/invite/InviteSecretToken0123456789abcdef";
    let invite = Mail::StaffInvite {
        url: invite_url.to_owned(),
    };
    let ids = [
        enqueue(&app, RECIPIENT, &code, Some(message)).await,
        enqueue(&app, AGENT, &alert, Some(message)).await,
        enqueue(&app, "new.staff@example.com", &invite, None).await,
    ];

    assert_eq!(app.outbox.run_once().await.unwrap(), 4);
    assert_eq!(app.outbox.run_once().await.unwrap(), 0);
    let mails = smtp.accepted();
    assert_eq!(mails.len(), 4);
    let by_subject: BTreeMap<String, Vec<u8>> = mails
        .iter()
        .map(|m| (header(m, "Subject").unwrap(), m.clone()))
        .collect();

    for raw in &mails {
        assert_no_canaries(raw);
        assert_eq!(
            header(raw, "Auto-Submitted").as_deref(),
            Some("auto-generated")
        );
        let from = header(raw, "From").unwrap();
        assert!(from.contains("sealpost@localhost"), "{from}");
        let mid = header(raw, "Message-ID").unwrap();
        assert!(
            mid.starts_with('<') && mid.ends_with("@127.0.0.1>"),
            "{mid}"
        );
    }

    // The pickup email: organisation, link, expiry, support, advice.
    let pickup = &by_subject[&format!("Secure message from {ORG}")];
    assert_eq!(header(pickup, "To").as_deref(), Some(RECIPIENT));
    let (text, html) = parts(pickup);
    for part in [&text, &html] {
        assert!(part.contains(ORG), "{part}");
        assert!(part.contains("secure message is waiting"), "{part}");
        assert!(part.contains(&url), "{part}");
        assert!(part.contains("2027-01-17 08:00 UTC"), "{part}");
        assert!(part.contains(SUPPORT), "{part}");
        assert!(part.contains("never ask you for your password"), "{part}");
    }
    assert!(html.contains(&format!("href=\"{url}\"")), "{html}");
    assert!(!text.contains('<'), "{text}");

    // The code email: the code and its validity, no message content.
    let code_mail = &by_subject[&format!("Your verification code from {ORG}")];
    let (text, html) = parts(code_mail);
    for part in [&text, &html] {
        assert!(part.contains("914273"), "{part}");
        assert!(part.contains("10 minutes"), "{part}");
        assert!(part.contains("never ask you for your password"), "{part}");
        assert!(!part.contains(&url), "{part}");
    }

    // The sender alert: ids, never the customer's address.
    let alert_mail = &by_subject["Sealpost: your message was picked up"];
    assert_eq!(header(alert_mail, "To").as_deref(), Some(AGENT));
    assert!(!String::from_utf8_lossy(alert_mail).contains(RECIPIENT));
    let (text, html) = parts(alert_mail);
    for part in [&text, &html] {
        assert!(part.contains(&message.to_string()), "{part}");
        assert!(part.contains(&format!("/messages/{message}")), "{part}");
    }

    let invite_mail = &by_subject[&format!("Your {ORG} Sealpost account")];
    let (text, html) = parts(invite_mail);
    assert!(text.contains(invite_url) && html.contains(invite_url));

    // Sent rows keep no payload; the pickup moved the delivery status.
    for id in ids {
        let row = outbox_row(&app, id).await;
        assert!(row.sent_at.is_some() && !row.has_payload);
        assert_eq!(row.attempts, 1);
    }
    assert_eq!(status(&app, message).await, Status::Emailed);
    let sent_events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'mail.sent'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(sent_events, 4);

    // Nothing readable was ever stored: not the address, link or code.
    let stored = env.database_bytes(&app).await;
    let stored = String::from_utf8_lossy(&stored);
    for secret in [
        "PickupSecretToken1",
        "914273",
        "InviteSecretToken",
        RECIPIENT,
    ] {
        assert!(!stored.contains(secret), "database holds {secret:?}");
    }
}

/// A worker round about several messages must not hold the audit append
/// lock while it waits for a message a customer's transaction has locked:
/// that transaction appends its own audit event next, and PostgreSQL would
/// fail one of the two as a deadlock (seen under load in bench/scale.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_round_waits_for_a_busy_message_without_holding_the_audit_lock() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, Some(&smtp)).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let first = send_message(&app, agent, &link(1)).await;
    let busy = send_message(&app, agent, &link(2)).await;

    // A customer's verification holds the second message's row ...
    let mut customer = app.db.begin().await.unwrap();
    sqlx::query("UPDATE deliveries SET failures = failures + 1 WHERE message_id = $1")
        .bind(busy.to_string())
        .execute(&mut *customer)
        .await
        .unwrap();
    // ... while a worker sends both emails and records the round.
    let worker = tokio::spawn({
        let app = app.clone();
        async move { app.outbox.run_once().await }
    });
    if app.db.backend() == Backend::Postgres {
        let watcher = app.db.pool();
        let mut blocked = false;
        for _ in 0..200 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'
                       AND query LIKE '%UPDATE deliveries SET status%'",
            )
            .fetch_one(watcher)
            .await
            .unwrap();
            if waiting > 0 {
                blocked = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(blocked, "the worker never reached the busy message");
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                 WHERE c.relname = 'audit_log' AND l.granted
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.mode = 'ShareRowExclusiveLock'",
        )
        .fetch_one(watcher)
        .await
        .unwrap();
        assert_eq!(held, 0, "the waiting worker holds the audit append lock");
    } else {
        // SQLite: the worker queues on the one write lock instead.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let event = Event::new(Actor::Anonymous, Action::VerificationFailed).message(busy);
    app.audit
        .record(&mut customer, &event)
        .await
        .expect("the customer's audit append");
    customer.commit().await.expect("the customer's commit");

    assert_eq!(worker.await.unwrap().unwrap(), 2);
    assert_eq!(status(&app, first).await, Status::Emailed);
    assert_eq!(status(&app, busy).await, Status::Emailed);
    assert_eq!(smtp.attempts().len(), 2);
    let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'mail.sent'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(sent, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failure_backs_off_and_retries_with_the_same_message_id() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, Some(&smtp)).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let message = send_message(&app, agent, &link(2)).await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM outbox")
        .fetch_one(app.db.pool())
        .await
        .unwrap();

    smtp.set_reply(Reply::Temporary);
    assert_eq!(app.outbox.run_once().await.unwrap(), 1);
    let row = outbox_row(&app, id).await;
    assert_eq!(row.attempts, 1);
    assert_eq!(row.next_attempt_at, START + 60);
    assert_eq!(row.last_error.as_deref(), Some("smtp 451"));
    assert!(row.has_payload && row.sent_at.is_none() && row.failed_at.is_none());
    assert_eq!(status(&app, message).await, Status::Queued);

    // Not due before the back-off ends.
    clock.advance(59);
    assert_eq!(app.outbox.run_once().await.unwrap(), 0);
    clock.advance(1);
    assert_eq!(app.outbox.run_once().await.unwrap(), 1);
    assert_eq!(outbox_row(&app, id).await.next_attempt_at, START + 60 + 120);

    // The server recovers: delivered on the next due attempt.
    smtp.set_reply(Reply::Accept);
    clock.advance(119);
    assert_eq!(app.outbox.run_once().await.unwrap(), 0);
    clock.advance(1);
    assert_eq!(app.outbox.run_once().await.unwrap(), 1);
    let row = outbox_row(&app, id).await;
    assert_eq!(row.attempts, 3);
    assert!(row.sent_at.is_some() && !row.has_payload);
    assert_eq!(status(&app, message).await, Status::Emailed);

    let attempts = smtp.attempts();
    assert_eq!(attempts.len(), 3);
    let replies: Vec<Reply> = attempts.iter().map(|(_, r)| *r).collect();
    assert_eq!(replies, [Reply::Temporary, Reply::Temporary, Reply::Accept]);
    for (raw, _) in &attempts {
        assert_eq!(
            header(raw, "Message-ID").as_deref(),
            Some(row.mail_message_id.as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_recovery_delivers_every_email_exactly_once() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    smtp.set_reply(Reply::Down);
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, Some(&smtp)).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let mut messages = Vec::new();
    for n in 0..5 {
        messages.push(send_message(&app, agent, &link(n)).await);
    }
    // Messages exist while the server is down; the failures are temporary.
    assert_eq!(app.outbox.run_once().await.unwrap(), 5);
    let errors: Vec<Option<String>> = sqlx::query_scalar("SELECT last_error FROM outbox")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert!(
        errors.iter().all(|e| e.as_deref() == Some("connection")),
        "{errors:?}"
    );
    for m in &messages {
        assert_eq!(status(&app, *m).await, Status::Queued);
    }

    smtp.set_reply(Reply::Accept);
    clock.advance(60);
    assert_eq!(app.outbox.run_once().await.unwrap(), 5);
    clock.advance(3600);
    assert_eq!(app.outbox.run_once().await.unwrap(), 0);
    let mut ids: Vec<String> = smtp
        .accepted()
        .iter()
        .map(|m| header(m, "Message-ID").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert_eq!(smtp.accepted().len(), 5);
    for m in &messages {
        assert_eq!(status(&app, *m).await, Status::Emailed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_give_up_after_a_day() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    smtp.set_reply(Reply::Temporary);
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, Some(&smtp)).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let message = send_message(&app, agent, &link(3)).await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM outbox")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    let mut rounds = 0;
    while outbox_row(&app, id).await.failed_at.is_none() {
        let row = outbox_row(&app, id).await;
        let now = clock.now();
        if row.next_attempt_at > now {
            clock.advance(row.next_attempt_at - now);
        }
        app.outbox.run_once().await.unwrap();
        rounds += 1;
        assert!(rounds < 100, "never gave up");
    }
    let row = outbox_row(&app, id).await;
    assert_eq!(row.failed_at, Some(START + GIVE_UP_AFTER_SECONDS));
    assert_eq!(row.last_error.as_deref(), Some("smtp 451"));
    assert!(!row.has_payload);
    // 1, 2, 4 … 32 minutes, then hourly, then the final try at 24 h.
    assert!((25..=35).contains(&row.attempts), "{}", row.attempts);
    assert_eq!(status(&app, message).await, Status::DeliveryFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_fails_at_once() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    smtp.set_reply(Reply::Permanent);
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, Some(&smtp)).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let message = send_message(&app, agent, &link(4)).await;
    assert_eq!(app.outbox.run_once().await.unwrap(), 1);
    let id: i64 = sqlx::query_scalar("SELECT id FROM outbox")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    let row = outbox_row(&app, id).await;
    assert_eq!(row.failed_at, Some(START));
    assert_eq!(row.last_error.as_deref(), Some("smtp 550"));
    assert!(!row.has_payload && row.sent_at.is_none());
    assert_eq!(status(&app, message).await, Status::DeliveryFailed);
    let failed: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'mail.failed' AND message_id = $1",
    )
    .bind(message.to_string())
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].contains("smtp 550") && !failed[0].contains(RECIPIENT));

    clock.advance(7 * 24 * 3600);
    assert_eq!(app.outbox.run_once().await.unwrap(), 0);
    assert_eq!(smtp.attempts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_send_each_row_exactly_once() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    let clock = ManualClock::new(START);
    // Two instances on one database, as two servers behind a balancer.
    let a = mail_app(&env, &clock, Some(&smtp)).await;
    let b = mail_app(&env, &clock, Some(&smtp)).await;
    const ROWS: usize = 60;
    let mut expected = Vec::new();
    for n in 0..ROWS {
        let code = Mail::VerificationCode {
            code: format!("{:06}", 100_000 + n),
            expires_at: START + 600,
        };
        let id = enqueue(&a, &format!("race{n}@example.org"), &code, None).await;
        expected.push(outbox_row(&a, id).await.mail_message_id);
    }
    let worker = |app: App| async move {
        let mut total = 0;
        for _ in 0..20 {
            total += app.outbox.run_once().await.unwrap();
            tokio::task::yield_now().await;
        }
        total
    };
    let (ta, tb, tc, td) = tokio::join!(
        tokio::spawn(worker(a.clone())),
        tokio::spawn(worker(b.clone())),
        tokio::spawn(worker(a.clone())),
        tokio::spawn(worker(b.clone())),
    );
    let claimed = ta.unwrap() + tb.unwrap() + tc.unwrap() + td.unwrap();
    assert_eq!(claimed, ROWS, "every row is claimed exactly once");

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for raw in smtp.accepted() {
        *seen.entry(header(&raw, "Message-ID").unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), ROWS);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    expected.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected);
    let unsent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(a.db.pool())
        .await
        .unwrap();
    assert_eq!(unsent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_claimed_again() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, Some(&smtp)).await;
    let mail = Mail::StaffInvite {
        url: "http://127.0.0.1:8080/invite/x".to_owned(),
    };
    let id = enqueue(&app, "lease@example.org", &mail, None).await;

    // A worker claims the row and dies before sending.
    assert_eq!(app.outbox.claim("crashed-worker", 10).await.unwrap(), [id]);
    assert_eq!(app.outbox.run_once().await.unwrap(), 0);
    clock.advance(LEASE_SECONDS);
    assert_eq!(app.outbox.run_once().await.unwrap(), 0, "lease still held");
    clock.advance(1);
    assert_eq!(app.outbox.run_once().await.unwrap(), 1);
    let row = outbox_row(&app, id).await;
    assert!(row.sent_at.is_some());
    assert_eq!(row.attempts, 2);
    assert_eq!(smtp.accepted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_recipient_is_refused_when_queued() {
    let env = TestEnv::new().await;
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, None).await;
    let mail = Mail::StaffInvite {
        url: "http://x/invite/y".to_owned(),
    };
    for bad in [
        "",
        "no-at-sign",
        "a@b@c",
        "x@example.org\r\nBcc: y@example.org",
    ] {
        let mut tx = app.db.begin().await.unwrap();
        let err = app.outbox.enqueue(&mut tx, bad, &mail, None).await;
        assert!(matches!(err, Err(MailError::InvalidAddress)), "{bad:?}");
    }
    // Debug never shows links or codes.
    let shown = format!(
        "{mail:?} {:?}",
        Mail::VerificationCode {
            code: "123456".to_owned(),
            expires_at: 1
        }
    );
    assert!(
        !shown.contains("invite/y") && !shown.contains("123456"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mailbox_keeps_mail_for_loopback_clients_only() {
    let env = TestEnv::new().await;
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, None).await;
    assert!(app.outbox.is_dev_mailbox());
    brand(&app).await;
    let agent = create_staff(&app, AGENT, Role::Agent).await;
    let url = link(5);
    let message = send_message(&app, agent, &url).await;
    assert_eq!(app.outbox.run_once().await.unwrap(), 1);
    assert_eq!(status(&app, message).await, Status::Emailed);

    let base = serve(app.clone()).await;
    let mut b = Browser::new(&base);
    let list = b.get("/dev/mailbox").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains(RECIPIENT), "{}", list.body);
    assert!(list.body.contains(&format!("Secure message from {ORG}")));
    let start = list.body.find("/dev/mailbox/").unwrap();
    let path: String = list.body[start..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();
    let one = b.get(&path).await;
    assert_eq!(one.status, 200);
    assert!(
        one.body.contains(&format!("<a href=\"{url}\">")),
        "{}",
        one.body
    );
    assert!(one.body.contains(SUPPORT));

    // Through a proxy (even one on this machine) it does not exist.
    b.extra
        .push(("X-Forwarded-For".to_owned(), "203.0.113.9".to_owned()));
    assert_eq!(b.get("/dev/mailbox").await.status, 404);
    assert_eq!(b.get(&path).await.status, 404);

    // The mail is kept sealed: nothing readable in the database.
    let stored = env.database_bytes(&app).await;
    assert!(!String::from_utf8_lossy(&stored).contains("PickupSecretToken5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mailbox_is_off_when_smtp_is_configured() {
    let env = TestEnv::new().await;
    let smtp = SmtpServer::start();
    let clock = ManualClock::new(START);
    let app = mail_app(&env, &clock, Some(&smtp)).await;
    assert!(!app.outbox.is_dev_mailbox());
    let base = serve(app.clone()).await;
    let mut b = Browser::new(&base);
    assert_eq!(b.get("/dev/mailbox").await.status, 404);
    assert_eq!(b.get("/dev/mailbox/1").await.status, 404);
}
