//! Crypto-shredding leaves nothing that opens: messages full of canaries are
//! shredded each way (revoke through the portal, expiry, shred after
//! pickup), then an attacker holding the database, the blob store, the
//! master key file AND the installation secret (the vault's keyed-hash and
//! small-secret keys) tries to open every sealed value of every column of
//! every table and to match every keyed or salted hash against the
//! canaries. Nothing of a shredded message may come back, while a live
//! control message proves the attack works. Mail still queued for a
//! shredded message is never sent.

use std::collections::BTreeSet;

use age::x25519;
use sealpost::app::App;
use sealpost::staff::Role;
use sealpost::store::Backend;
use sealpost::text::normalise_access_code;
use sealpost::vault::{Keyring, MessageId, Purpose, VaultError};
use secrecy::SecretString;

use crate::support::START;
use crate::support::canaries::contains;
use crate::support::compose::Compose;
use crate::support::env::TestEnv;
use crate::support::files::files_below;
use crate::support::http::{Browser, create_staff, dev_mail, input_value, link_in, portal};
use crate::support::mail::six_digits;

/// Customer data of one message, each value unique to it.
struct Canaries {
    address: String,
    phone: String,
    title: String,
    body: String,
    file: String,
    access_code: String,
    fact: String,
}

impl Canaries {
    fn new(tag: &str, phone_tail: &str) -> Canaries {
        Canaries {
            address: format!("canary.{tag}.addr@example.org"),
            phone: format!("+44 7700 900{phone_tail}"),
            title: format!("Canary-{tag}-Title mortgage papers"),
            body: format!("Canary-{tag}-Body: the account number is 31415926"),
            file: format!("Canary-{tag}-File tax return.pdf"),
            access_code: format!("Canary-{tag}-Code"),
            fact: format!("Canary-{tag}-Fact"),
        }
    }

    /// What verification compares: the code as typed, the fact normalised.
    fn fact_normalised(&self) -> String {
        sealpost::text::normalise_fact(&self.fact)
    }

    fn plain(&self) -> Vec<&str> {
        vec![
            &self.address,
            &self.phone,
            &self.title,
            &self.body,
            &self.file,
            &self.access_code,
            &self.fact,
        ]
    }
}

/// A composed message and what its emails carried.
struct Sent {
    id: MessageId,
    canaries: Canaries,
    /// The pickup link's path (`/p/<token>`).
    link: String,
    /// An email code the customer was sent.
    code: String,
}

async fn compose(
    staff: &mut Browser,
    c: &Canaries,
    expiry_hours: &str,
    retention: &str,
) -> MessageId {
    Compose::to(&c.address)
        .phone(&c.phone)
        .title(&c.title)
        .body(&c.body)
        .expiry_hours(expiry_hours)
        .methods(&["email_code", "access_code", "known_fact"])
        .access_code(&c.access_code)
        .known_fact(&c.fact)
        .retention(retention)
        .attach_typed(&c.file, b"attachment bytes", "application/pdf")
        .send(staff)
        .await
}

/// Composes, delivers the pickup email (dev mailbox), opens the link and
/// has a code emailed: every table a message touches gets its rows.
async fn send_and_request_code(
    app: &App,
    staff: &mut Browser,
    mailbox: &mut Browser,
    customer: &mut Browser,
    c: Canaries,
    expiry_hours: &str,
    retention: &str,
) -> Sent {
    let id = compose(staff, &c, expiry_hours, retention).await;
    let mails = dev_mail(app, mailbox, &c.address).await;
    assert_eq!(mails.len(), 1, "the pickup email");
    let link = link_in(&mails[0], "/p/").expect("pickup link");
    assert_eq!(customer.get(&link).await.status, 200);
    let r = customer.post(&format!("{link}/code"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let mails = dev_mail(app, mailbox, &c.address).await;
    assert_eq!(mails.len(), 2, "the code email");
    let code = six_digits(&mails[1]);
    Sent {
        id,
        canaries: c,
        link,
        code,
    }
}

/// Every value of every column of every table, as bytes (text as UTF-8),
/// labelled `table.column`.
async fn every_value(app: &App) -> Vec<(String, Vec<u8>)> {
    let pool = app.db.pool();
    let mut out = Vec::new();
    match app.db.backend() {
        Backend::Sqlite => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for t in tables {
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                        .bind(&t)
                        .fetch_all(pool)
                        .await
                        .unwrap();
                assert!(!columns.is_empty(), "columns of {t}");
                for c in columns {
                    let values: Vec<Option<Vec<u8>>> =
                        sqlx::query_scalar(&format!("SELECT CAST(\"{c}\" AS BLOB) FROM \"{t}\""))
                            .fetch_all(pool)
                            .await
                            .unwrap();
                    out.extend(
                        values
                            .into_iter()
                            .flatten()
                            .map(|v| (format!("{t}.{c}"), v)),
                    );
                }
            }
        }
        Backend::Postgres => {
            let columns: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT CAST(table_schema AS TEXT), CAST(table_name AS TEXT),
                        CAST(column_name AS TEXT), CAST(data_type AS TEXT)
                 FROM information_schema.columns
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            assert!(columns.len() > 20, "{columns:?}");
            for (s, t, c, ty) in columns {
                let from = format!("\"{s}\".\"{t}\"");
                if ty == "bytea" {
                    let values: Vec<Option<Vec<u8>>> =
                        sqlx::query_scalar(&format!("SELECT \"{c}\" FROM {from}"))
                            .fetch_all(pool)
                            .await
                            .unwrap();
                    out.extend(
                        values
                            .into_iter()
                            .flatten()
                            .map(|v| (format!("{t}.{c}"), v)),
                    );
                } else {
                    let values: Vec<Option<String>> =
                        sqlx::query_scalar(&format!("SELECT CAST(\"{c}\" AS TEXT) FROM {from}"))
                            .fetch_all(pool)
                            .await
                            .unwrap();
                    out.extend(
                        values
                            .into_iter()
                            .flatten()
                            .map(|v| (format!("{t}.{c}"), v.into_bytes())),
                    );
                }
            }
        }
    }
    let tables: BTreeSet<&str> = out
        .iter()
        .filter_map(|(l, _)| l.split('.').next())
        .collect();
    for t in [
        "messages",
        "deliveries",
        "outbox",
        "dev_mailbox",
        "pickup_codes",
        "audit_log",
    ] {
        assert!(tables.contains(t), "the scan reads {t}: {tables:?}");
    }
    out
}

fn age_open(identity: &x25519::Identity, data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let decryptor = age::Decryptor::new_buffered(data).ok()?;
    let mut r = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .ok()?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).ok()?;
    Some(out)
}

/// Runs of at least 48 hex digits inside `data`, decoded (sealed values
/// kept hex-encoded, e.g. in session data).
fn hex_runs(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|b| !b.is_ascii_hexdigit())
        .filter(|run| run.len() >= 48)
        .filter_map(|run| hex::decode(&run[..run.len() / 2 * 2]).ok())
        .collect()
}

/// Everything the attacker gets out: raw values, plus whatever the master
/// keys, the message identities they unwrap and the installation secret
/// open, from the database and the blob store.
async fn attack(env: &TestEnv, app: &App) -> Vec<(String, Vec<u8>)> {
    let values = every_value(app).await;
    let blobs: Vec<(String, Vec<u8>)> = files_below(&env.blob_dir())
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    let ring = Keyring::load(&env.key_file()).unwrap();
    let mut identities: Vec<x25519::Identity> =
        ring.keys().iter().map(|k| k.identity().clone()).collect();
    let mut opened: Vec<(String, Vec<u8>)> = Vec::new();
    // Until no new identity turns up: master keys unwrap message keys,
    // message keys open sealed metadata and blobs.
    let mut tried = 0;
    while tried < identities.len() {
        let new: Vec<x25519::Identity> = identities[tried..].to_vec();
        tried = identities.len();
        for identity in &new {
            for (label, v) in values.iter().chain(&blobs) {
                if !v.starts_with(b"age-encryption.org/v1") {
                    continue;
                }
                if let Some(plain) = age_open(identity, v) {
                    if let Ok(text) = std::str::from_utf8(&plain)
                        && let Ok(found) = text.trim().parse::<x25519::Identity>()
                    {
                        identities.push(found);
                    }
                    opened.push((format!("{label} (age)"), plain));
                }
            }
        }
    }
    for (label, v) in &values {
        let mut candidates = vec![v.clone()];
        candidates.extend(hex_runs(v));
        for candidate in &candidates {
            // Every purpose, not only the sealing ones: a label added later
            // is tried without this list having to know of it.
            for purpose in Purpose::ALL.iter().copied() {
                if let Ok(plain) = app.vault.open_secret(purpose, candidate) {
                    opened.push((format!("{label} ({purpose})"), plain.to_vec()));
                }
            }
        }
    }
    let mut all = values;
    all.extend(opened);
    all
}

/// Where `needle` (raw, or hex of it) occurs.
fn found_in<'a>(all: &'a [(String, Vec<u8>)], needle: &[u8]) -> Option<&'a str> {
    let hexed = hex::encode(needle).into_bytes();
    all.iter()
        .find(|(_, v)| contains(v, needle) || contains(v, &hexed))
        .map(|(l, _)| l.as_str())
}

/// The keyed hashes the installation secret computes from a message's
/// canaries, with a name for each.
fn keyed_hashes(app: &App, s: &Sent) -> Vec<(String, Vec<u8>)> {
    let c = &s.canaries;
    let mut values: Vec<String> = c.plain().iter().map(|v| (*v).to_owned()).collect();
    values.push(c.address.to_lowercase());
    values.push(c.fact_normalised());
    values.push(s.link.trim_start_matches("/p/").to_owned());
    values.push(format!("{}\0{}", s.id, s.code));
    let mut out = vec![(
        "blind index".to_owned(),
        app.vault.recipient_index(&c.address),
    )];
    for purpose in Purpose::ALL.iter().copied() {
        for v in &values {
            out.push((
                format!("{purpose}({v:?})"),
                app.vault.keyed_hash(purpose, v.as_bytes()),
            ));
        }
    }
    out
}

/// Salted hashes (argon2id) in the database that `answer` verifies against.
async fn argon2_matches(app: &App, all: &[(String, Vec<u8>)], answer: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (label, v) in all {
        if v.starts_with(b"$argon2") {
            let stored = String::from_utf8(v.clone()).unwrap();
            if app
                .hasher
                .verify(SecretString::from(answer.to_owned()), stored)
                .await
                .unwrap()
            {
                out.push(label.clone());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shredded_message_leaves_nothing_that_opens() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut staff = Browser::signed_in(&base, "agent@example.com").await;
    let mut mailbox = Browser::new(&base);
    let mut customer = Browser::new(&base);

    let revoked = send_and_request_code(
        &app,
        &mut staff,
        &mut mailbox,
        &mut customer,
        Canaries::new("revoked", "111"),
        "48",
        "keep",
    )
    .await;
    let expired = send_and_request_code(
        &app,
        &mut staff,
        &mut mailbox,
        &mut customer,
        Canaries::new("expired", "222"),
        "1",
        "keep",
    )
    .await;
    let picked_up = send_and_request_code(
        &app,
        &mut staff,
        &mut mailbox,
        &mut customer,
        Canaries::new("pickedup", "333"),
        "48",
        "shred",
    )
    .await;
    let control = send_and_request_code(
        &app,
        &mut staff,
        &mut mailbox,
        &mut customer,
        Canaries::new("control", "444"),
        "48",
        "keep",
    )
    .await;

    // Shred after pickup: verify, then the grace runs out.
    let c = &picked_up.canaries;
    let mut reader = Browser::new(&base);
    let r = reader
        .post(
            &format!("{}/verify", picked_up.link),
            &[
                ("code", picked_up.code.as_str()),
                ("access_code", c.access_code.as_str()),
                ("known_fact", c.fact.as_str()),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        reader
            .get(&format!("/pickup/{}", picked_up.id))
            .await
            .status,
        200
    );

    // Mail still queued when the message goes: a second code each.
    for s in [&revoked, &expired] {
        let r = customer.post(&format!("{}/code", s.link), &[]).await;
        assert_eq!(r.status, 303, "{}", r.body);
    }

    // Revoke through the portal.
    let page = staff.get(&format!("/messages/{}", revoked.id)).await;
    let token = input_value(&page.body, "csrf").unwrap();
    let r = staff
        .post(
            &format!("/messages/{}/revoke", revoked.id),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // Past the pickup grace (30 minutes idle): shred after pickup.
    clock.advance(31 * 60);
    assert_eq!(app.deliveries.shred_due().await.unwrap(), 1);
    // Past the one-hour expiry.
    clock.advance(30 * 60);
    assert_eq!(app.deliveries.shred_due().await.unwrap(), 1);
    for s in [&revoked, &expired, &picked_up] {
        assert!(matches!(
            app.vault.unlock(s.id).await,
            Err(VaultError::Shredded)
        ));
    }
    assert!(app.vault.unlock(control.id).await.is_ok());

    // Ids, times and states stay for the sender and the audit log.
    let reasons: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT message_id, detail FROM audit_log
             WHERE action IN ('message.revoked', 'message.shredded') ORDER BY id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let ids: Vec<&str> = reasons.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            revoked.id.to_string(),
            picked_up.id.to_string(),
            expired.id.to_string()
        ]
    );
    assert!(reasons[1].1.as_deref().unwrap().contains("picked_up"));
    assert!(reasons[2].1.as_deref().unwrap().contains("expired"));
    let d = app.deliveries.get(revoked.id).await.unwrap();
    assert!(d.revoked_at.is_some() && d.shredded_at.is_some());
    assert!(d.sealed_recipient.is_none());

    // Every reader copes with what is gone (a fresh staff sign-in: the
    // clock moved past the idle timeout).
    let mut staff = Browser::signed_in(&base, "agent@example.com").await;
    let list = staff.get("/sent").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body.matches("(shredded)").count(), 3, "{}", list.body);
    for s in [&revoked, &expired, &picked_up] {
        let page = staff.get(&format!("/messages/{}", s.id)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let landing = Browser::new(&base).get(&s.link).await;
        assert_eq!(landing.status, 404, "a neutral page: {}", landing.body);
        let r = Browser::new(&base)
            .post(&format!("{}/code", s.link), &[])
            .await;
        assert_eq!(r.status, 404);
    }
    assert_eq!(mailbox.get("/dev/mailbox").await.status, 200);
    // Key rotation walks past shredded messages.
    app.vault.rotate().await.unwrap();

    // The blind index and the sent list's search no longer find them.
    for s in [&revoked, &expired, &picked_up] {
        let a = &s.canaries.address;
        assert!(
            app.vault.find_by_recipient(a).await.unwrap().is_empty(),
            "{a}"
        );
        let q = serde_urlencoded::to_string([("q", a.as_str())]).unwrap();
        let page = staff.get(&format!("/sent?{q}")).await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains(&s.id.to_string()), "{a} still found");
    }
    assert_eq!(
        app.vault
            .find_by_recipient(&control.canaries.address)
            .await
            .unwrap(),
        [control.id]
    );
    let q = serde_urlencoded::to_string([("q", control.canaries.address.as_str())]).unwrap();
    assert!(
        staff
            .get(&format!("/sent?{q}"))
            .await
            .body
            .contains(&control.id.to_string())
    );

    // The attack: the mail still queued goes nowhere, then everything
    // the keys open or match.
    app.outbox.run_once().await.unwrap();
    let all = attack(&env, &app).await;

    // It works: the live control message opens and matches entirely.
    let c = &control.canaries;
    for canary in [&c.address, &c.phone, &c.title, &c.body, &c.file] {
        assert!(
            found_in(&all, canary.as_bytes()).is_some(),
            "the attack recovers the control's {canary:?}"
        );
    }
    let token = control.link.trim_start_matches("/p/");
    for (name, hash) in [
        ("blind index", app.vault.recipient_index(&c.address)),
        (
            "link hash",
            app.vault.keyed_hash(Purpose::PickupLink, token.as_bytes()),
        ),
        (
            "code hash",
            app.vault.keyed_hash(
                Purpose::PickupCode,
                format!("{}\0{}", control.id, control.code).as_bytes(),
            ),
        ),
    ] {
        assert!(
            found_in(&all, &hash).is_some(),
            "the control's {name} is matched"
        );
    }
    assert_eq!(
        argon2_matches(&app, &all, &normalise_access_code(&c.access_code))
            .await
            .len(),
        1
    );
    assert_eq!(
        argon2_matches(&app, &all, &c.fact_normalised()).await.len(),
        1
    );

    // Nothing of the shredded messages comes back.
    for s in [&revoked, &expired, &picked_up] {
        let c = &s.canaries;
        for canary in c.plain() {
            for form in [canary.to_owned(), canary.to_lowercase()] {
                assert_eq!(
                    found_in(&all, form.as_bytes()),
                    None,
                    "{form:?} of a shredded message recovered"
                );
            }
        }
        for (label, v) in &all {
            crate::support::canaries::assert_no_canaries(label, v, &c.plain());
        }
        for (name, hash) in keyed_hashes(&app, s) {
            assert_eq!(found_in(&all, &hash), None, "{name} still matches");
        }
        for answer in [
            c.access_code.clone(),
            normalise_access_code(&c.access_code),
            c.fact_normalised(),
            c.fact.clone(),
        ] {
            assert_eq!(
                argon2_matches(&app, &all, &answer).await,
                Vec::<String>::new(),
                "a stored hash still confirms {answer:?}"
            );
        }
    }
}

/// An outbox row's sent_at, failed_at, payload and last_error.
type OutboxState = (Option<i64>, Option<i64>, Option<Vec<u8>>, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_for_a_shredded_message_is_never_sent() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut staff = Browser::signed_in(&base, "agent@example.com").await;
    let mut mailbox = Browser::new(&base);

    // A pickup email claimed by a worker that then crashed: once its
    // lease runs out any worker would send it again.
    let revoked_c = Canaries::new("queued-revoked", "555");
    let revoked = compose(&mut staff, &revoked_c, "48", "keep").await;
    let claimed = app.outbox.claim("crashed-worker", 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // Pickup emails still waiting for their first attempt.
    let expired_c = Canaries::new("queued-expired", "666");
    let expired = compose(&mut staff, &expired_c, "1", "keep").await;
    let live_c = Canaries::new("queued-live", "777");
    compose(&mut staff, &live_c, "48", "keep").await;

    let page = staff.get(&format!("/messages/{revoked}")).await;
    let token = input_value(&page.body, "csrf").unwrap();
    let r = staff
        .post(&format!("/messages/{revoked}/revoke"), &[("csrf", &token)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    clock.advance(3600 + 60);
    assert_eq!(app.deliveries.shred_due().await.unwrap(), 1);

    // Only the live message's email goes out.
    assert_eq!(app.outbox.run_once().await.unwrap(), 1);
    assert_eq!(app.outbox.run_once().await.unwrap(), 0);
    assert_eq!(dev_mail(&app, &mut mailbox, &live_c.address).await.len(), 1);
    for c in [&revoked_c, &expired_c] {
        assert!(
            dev_mail(&app, &mut mailbox, &c.address).await.is_empty(),
            "{}",
            c.address
        );
    }

    // The cancelled rows say so, hold nothing, and no longer count as pending.
    for id in [revoked, expired] {
        let rows: Vec<OutboxState> = sqlx::query_as(
            "SELECT sent_at, failed_at, payload, last_error FROM outbox WHERE message_id = $1",
        )
        .bind(id.to_string())
        .fetch_all(app.db.pool())
        .await
        .unwrap();
        assert_eq!(rows.len(), 1);
        let (sent, failed, payload, error) = &rows[0];
        assert!(sent.is_none() && failed.is_some() && payload.is_none());
        assert_eq!(error.as_deref(), Some(sealpost::store::outbox::CANCELLED));
    }
    assert_eq!(
        sealpost::store::outbox::pending(&app.db).await.unwrap().0,
        0
    );

    // A request that saw the message live just before the shred cannot
    // queue mail for it after: its transaction fails and rolls back.
    let mut tx = app.db.begin().await.unwrap();
    let queued = app
        .outbox
        .enqueue(
            &mut tx,
            &revoked_c.address,
            &sealpost::mail::Mail::VerificationCode {
                code: "123456".to_owned(),
                expires_at: START + 7200,
            },
            Some(revoked),
        )
        .await;
    assert!(queued.is_err(), "mail queued for a shredded message");
    drop(tx);
    let details: Vec<String> = sqlx::query_scalar(
            "SELECT detail FROM audit_log WHERE action IN ('message.revoked', 'message.shredded') ORDER BY id",
        )
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert_eq!(details.len(), 2);
    for d in details {
        assert!(d.contains("\"cancelled_mail\":1"), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_revokes_racing_the_mail_worker_shred_once_and_leave_nothing() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut staff = Browser::signed_in(&base, "agent@example.com").await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let c = Canaries::new(&format!("race{n}"), &format!("80{n}"));
        ids.push(compose(&mut staff, &c, "48", "keep").await);
    }
    // Ten revokes of each message at once, while workers send (and
    // record) the very emails the shreds cancel.
    let mut tasks = Vec::new();
    for id in &ids {
        for _ in 0..10 {
            let app = app.clone();
            let id = *id;
            tasks.push(tokio::spawn(async move {
                app.deliveries
                    .revoke(sealpost::audit::Actor::Cli, id, None)
                    .await
                    .map_err(|e| e.to_string())
            }));
        }
    }
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.outbox.run_once().await.map_err(|e| e.to_string()) })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap().expect("revoke") {
            won += 1;
        }
    }
    for w in workers {
        w.await.unwrap().expect("worker round");
    }
    assert_eq!(won, ids.len(), "each message revoked exactly once");
    app.outbox.run_once().await.unwrap();
    for (n, id) in ids.iter().enumerate() {
        let events: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'message.revoked' AND message_id = $1",
        )
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert_eq!(events, 1);
        // Sent before the shred or cancelled by it: nothing left either way.
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE message_id = $1
                 AND (payload IS NOT NULL OR (sent_at IS NULL AND failed_at IS NULL))",
        )
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert_eq!(left, 0);
        let copies: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM dev_mailbox WHERE outbox_id IN
                 (SELECT id FROM outbox WHERE message_id = $1)",
        )
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert_eq!(
            copies, 0,
            "no dev-mailbox copy of a shredded message's email"
        );
        let address = format!("canary.race{n}.addr@example.org");
        let found = app.vault.find_by_recipient(&address).await.unwrap();
        assert!(found.is_empty(), "{address}");
    }
}
