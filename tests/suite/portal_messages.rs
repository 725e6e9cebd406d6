//! Compose, sent items and message actions over HTTP: uploads land in the
//! vault as age blobs, nothing readable reaches the database, a message is
//! visible only once complete, agents are isolated from each other, and
//! revocation shreds.

use sealpost::audit::Verification;
use sealpost::staff::Role;
use sealpost::vault::{MessageId, VaultError};

use crate::support::START;
use crate::support::canaries::assert_no_canaries;
use crate::support::compose::Compose;
use crate::support::env::TestEnv;
use crate::support::files::{bytes, files_below};
use crate::support::http::{
    Browser, Resp, create_staff, element_text, input_value, message_links, page_link, portal,
};

const BODY: &str = "Canary-Body-Quasar: your IBAN is DE89 3704 0044 0532 0130 00";
const TITLE: &str = "Canary-Title-Nebula";
const RECIPIENT: &str = "canary.recipient.pulsar@example.org";
const PHONE: &str = "+44 20 7946 0958";
const FILE_A: &str = "Canary-File-Andromeda.pdf";
const FILE_B: &str = "Canary-File-Betelgeuse.txt";
const FILE_B_TEXT: &str = "Canary-Attachment-Content-Vega";

/// The portal tests' message to `recipient`, before its attachments.
fn message(recipient: &str) -> Compose {
    Compose::to(recipient)
        .phone(PHONE)
        .title(TITLE)
        .body(BODY)
        .methods(&["email_code", "access_code"])
}

/// Composes a message with two attachments; returns its id and the response.
async fn compose(b: &mut Browser, recipient: &str, a: &[u8]) -> (MessageId, Resp) {
    message(recipient)
        .attach_typed(FILE_A, a, "application/pdf")
        .attach_typed(FILE_B, FILE_B_TEXT.as_bytes(), "text/plain")
        .send_with_response(b)
        .await
}

async fn count(app: &sealpost::app::App, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_with_two_attachments_seals_everything() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    let big = bytes(3 * 1024 * 1024 + 17, 7);
    let (id, r) = compose(&mut b, RECIPIENT, &big).await;

    // The message page shows the generated access code once.
    let page = b.get(r.location().unwrap()).await;
    assert_eq!(page.status, 200);
    let code = element_text(&page.body, "generated-access-code").expect("access code shown");
    assert_eq!(code.len(), 9);
    assert!(page.body.contains(FILE_A) && page.body.contains(TITLE));
    let again = b.get(&format!("/messages/{id}")).await;
    assert!(element_text(&again.body, "generated-access-code").is_none());
    assert_eq!(
        element_text(&again.body, "status").as_deref(),
        Some("Queued")
    );

    // Three parts, each an age file that opens to exactly what was sent.
    let key = app.vault.unlock(id).await.unwrap();
    let parts = app.vault.parts(id).await.unwrap();
    assert_eq!(parts.len(), 3);
    let mut plain = Vec::new();
    for part in &parts {
        let path = crate::support::files::blob_path(&env, part.blob.as_str());
        let raw = std::fs::read(&path).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1\n"), "{path:?}");
        let mut out = Vec::new();
        key.open(raw.as_slice()).unwrap().copy_to(&mut out).unwrap();
        plain.push(out);
    }
    assert_eq!(plain[0], BODY.as_bytes());
    assert_eq!(plain[1], big);
    assert_eq!(plain[2], FILE_B_TEXT.as_bytes());
    let meta = key.meta().unwrap();
    assert_eq!(meta.recipient_address.as_deref(), Some(RECIPIENT));
    assert_eq!(meta.title.as_deref(), Some(TITLE));
    assert_eq!(
        key.part_meta(&parts[1]).unwrap().file_name.as_deref(),
        Some(FILE_A)
    );

    // No canary anywhere in the database or the blob folder.
    let canaries = [
        BODY,
        TITLE,
        RECIPIENT,
        PHONE,
        FILE_A,
        FILE_B,
        FILE_B_TEXT,
        &code,
    ];
    assert_no_canaries("database", &env.database_bytes(&app).await, &canaries);
    for f in files_below(&env.blob_dir()) {
        assert_no_canaries(
            &f.display().to_string(),
            &std::fs::read(&f).unwrap(),
            &canaries,
        );
    }
    // The access code is stored as an argon2id hash only.
    let hash: String = sqlx::query_scalar("SELECT access_code_hash FROM deliveries")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'message.sent'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_is_invisible_until_every_part_is_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    let token = b.csrf("/compose").await;

    // Hand-written multipart over a raw socket, so the test can pause
    // halfway through the second attachment.
    let boundary = "----sealpost-test-boundary";
    let mut head = String::new();
    for (name, value) in [
        ("csrf", token.as_str()),
        ("recipient", RECIPIENT),
        ("body", BODY),
        ("expiry_hours", "24"),
        ("method", "email_code"),
        ("retention", "shred"),
    ] {
        head += &format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        );
    }
    let a = bytes(512 * 1024, 1);
    let second = bytes(2 * 1024 * 1024, 2);
    let mut body = head.into_bytes();
    for (name, data) in [(FILE_A, &a), (FILE_B, &second)] {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"attachments\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    let cookie = b
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let addr = base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request_head = format!(
        "POST /compose HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(request_head.as_bytes()).await.unwrap();
    let cut = body.len() - second.len() / 2;
    sock.write_all(&body[..cut]).await.unwrap();
    // Give the server time to seal what it has.
    let mut blobs = 0;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        blobs = files_below(&env.blob_dir()).len();
        if blobs >= 2 {
            break;
        }
    }
    assert!(blobs >= 2, "body and first attachment are sealed by now");
    for table in ["messages", "deliveries", "message_parts"] {
        assert_eq!(
            count(&app, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert!(!b.get("/sent").await.body.contains("/messages/"));

    sock.write_all(&body[cut..]).await.unwrap();
    let mut response = Vec::new();
    sock.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 303"), "{response}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM message_parts").await, 3);
    assert_eq!(message_links(&b.get("/sent").await.body).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_upload_is_refused_and_leaves_nothing() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut settings = app.settings.load().await.unwrap();
    settings.size_limit_mib = 1;
    app.settings
        .save(sealpost::audit::Actor::Cli, &settings)
        .await
        .unwrap();
    let mut b = Browser::signed_in(&base, "agent@example.com").await;

    // Over the limit, but within the framing allowance: refused while
    // streaming, after the first attachment was already sealed.
    let token = b.csrf("/compose").await;
    let f = message(RECIPIENT)
        .attach_typed(FILE_A, &bytes(700 * 1024, 3), "application/pdf")
        .attach_typed(FILE_B, &bytes(700 * 1024, 4), "text/plain")
        .form(&token);
    let r = b.post_multipart("/compose", f).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(
        r.body.contains("larger than the limit of 1 MiB"),
        "{}",
        r.body
    );
    // Far over: refused up front from Content-Length, while the client
    // is still sending. The rest is read and dropped after the answer,
    // so the client gets the page, not a reset connection.
    let token = b.csrf("/compose").await;
    let f = message(RECIPIENT)
        .attach_typed(FILE_A, &bytes(32 * 1024 * 1024, 5), "application/pdf")
        .form(&token);
    let r = b.post_multipart("/compose", f).await;
    assert_eq!(r.status, 413);
    assert!(
        r.body.contains("larger than the limit of 1 MiB"),
        "{}",
        r.body
    );

    assert!(
        files_below(&env.blob_dir()).is_empty(),
        "no blob or partial left"
    );
    for table in ["messages", "deliveries", "message_parts", "message_keys"] {
        assert_eq!(
            count(&app, &format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'message.compose_failed'"
        )
        .await,
        2
    );
    // Invalid input re-renders the form with the reasons, nothing stored.
    let token = b.csrf("/compose").await;
    let bad = reqwest::multipart::Form::new()
        .text("csrf", token)
        .text("recipient", "not-an-address")
        .text("body", BODY)
        .text("expiry_hours", "9999")
        .text("retention", "keep");
    let r = b.post_multipart("/compose", bad).await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("Enter the customer&#39;s email address")
            || r.body.contains("Enter the customer's email address"),
        "{}",
        r.body
    );
    assert!(r.body.contains("between 1 hour and 30 days"));
    assert!(r.body.contains("Choose how the customer verifies"));
    assert!(files_below(&env.blob_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_see_only_their_own_messages_and_admins_see_all() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "a@example.com", Role::Agent).await;
    create_staff(&app, "b@example.com", Role::Agent).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut a = Browser::signed_in(&base, "a@example.com").await;
    let mut b = Browser::signed_in(&base, "b@example.com").await;
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;
    let (mine, _) = compose(&mut b, RECIPIENT, b"x").await;

    // Agent A: not in the list, 404 on the page and on every action.
    assert!(message_links(&a.get("/sent").await.body).is_empty());
    assert_eq!(a.get(&format!("/messages/{mine}")).await.status, 404);
    let token = a.csrf("/sent").await;
    for action in ["revoke", "resend", "unlock"] {
        let r = a
            .post(&format!("/messages/{mine}/{action}"), &[("csrf", &token)])
            .await;
        assert_eq!(r.status, 404, "{action}");
    }
    let r = a
        .post(
            &format!("/messages/{mine}/extend"),
            &[("csrf", &token), ("hours", "5")],
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(
        app.vault.unlock(mine).await.is_ok(),
        "A's revoke attempt did nothing"
    );
    // Unknown ids look exactly the same.
    let unknown = MessageId::new();
    assert_eq!(a.get(&format!("/messages/{unknown}")).await.status, 404);
    let denied = count(
        &app,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'message.access_denied'",
    )
    .await;
    assert_eq!(denied, 6);

    // The admin sees B's message and can act on it.
    assert_eq!(
        message_links(&admin.get("/sent").await.body),
        vec![mine.to_string()]
    );
    let page = admin.get(&format!("/messages/{mine}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(RECIPIENT));
    let token = input_value(&page.body, "csrf").unwrap();
    let r = admin
        .post(
            &format!("/messages/{mine}/extend"),
            &[("csrf", &token), ("hours", "100")],
        )
        .await;
    assert_eq!(r.status, 303);
    let r = admin
        .post(&format!("/messages/{mine}/resend"), &[("csrf", &token)])
        .await;
    assert_eq!(r.status, 303);
    let d = app.deliveries.get(mine).await.unwrap();
    assert_eq!(d.expires_at, START + 100 * 3600);
    assert_eq!(d.link_generation, 2, "the old link is dead");
    // Unlock after a lockout (the customer side sets it).
    let mut tx = app.db.begin().await.unwrap();
    app.deliveries.lock(&mut tx, mine).await.unwrap();
    tx.commit().await.unwrap();
    let page = b.get(&format!("/messages/{mine}")).await;
    assert_eq!(
        element_text(&page.body, "status").as_deref(),
        Some("Locked")
    );
    let r = b
        .post(
            &format!("/messages/{mine}/unlock"),
            &[("csrf", &input_value(&page.body, "csrf").unwrap())],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(app.deliveries.get(mine).await.unwrap().locked_at.is_none());

    // Each of those actions is in the audit log, by whom and for which message.
    let admin_actor: String = sqlx::query_scalar(
        "SELECT 'staff:' || id FROM staff_users WHERE email = 'admin@example.com'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    for action in [
        "message.viewed",
        "message.expiry_extended",
        "message.link_resent",
    ] {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = $1 AND actor = $2 AND message_id = $3",
        )
        .bind(action)
        .bind(&admin_actor)
        .bind(mine.to_string())
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert_eq!(n, 1, "{action}");
    }
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'message.unlocked'"
        )
        .await,
        1
    );
    // The timeline on the page shows them.
    let page = b.get(&format!("/messages/{mine}")).await;
    assert!(page.body.contains("New link issued") && page.body.contains("Expiry changed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_shreds_and_the_audit_chain_holds() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    let (id, _) = compose(&mut b, RECIPIENT, &bytes(100_000, 9)).await;
    let blobs: Vec<_> = app
        .vault
        .parts(id)
        .await
        .unwrap()
        .iter()
        .map(|p| crate::support::files::blob_path(&env, p.blob.as_str()))
        .collect();
    let copies: Vec<Vec<u8>> = blobs.iter().map(|p| std::fs::read(p).unwrap()).collect();

    let page = b.get(&format!("/messages/{id}")).await;
    let token = input_value(&page.body, "csrf").unwrap();
    let r = b
        .post(&format!("/messages/{id}/revoke"), &[("csrf", &token)])
        .await;
    assert_eq!(r.status, 303);
    assert!(matches!(
        app.vault.unlock(id).await,
        Err(VaultError::Shredded)
    ));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM message_keys").await, 0);
    for p in &blobs {
        assert!(!p.exists(), "{p:?} deleted");
    }
    // Copies taken before are useless: no master key opens them.
    let master = std::fs::read_to_string(env.key_file()).unwrap();
    let keys: Vec<age::x25519::Identity> = master
        .lines()
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(!keys.is_empty());
    for c in &copies {
        for k in &keys {
            assert!(!crate::support::vault::opens_with(k, c));
        }
    }
    let page = b.get(&format!("/messages/{id}")).await;
    assert_eq!(
        element_text(&page.body, "status").as_deref(),
        Some("Revoked")
    );
    assert!(
        !page.body.contains("/revoke\""),
        "no actions on a revoked message"
    );

    // Filters: revoked shows it, queued does not; search by exact address.
    let ids = |r: Resp| message_links(&r.body);
    assert_eq!(
        ids(b.get("/sent?status=revoked").await),
        vec![id.to_string()]
    );
    assert!(ids(b.get("/sent?status=queued").await).is_empty());

    // The chain verifies, then a tampered row is named.
    assert!(matches!(
        app.audit.verify().await.unwrap(),
        Verification::Intact { .. }
    ));
    let out = env.sealpost(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_row: i64 =
        sqlx::query_scalar("SELECT id FROM audit_log WHERE action = 'message.revoked'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    crate::support::db::disable_guards(&app).await;
    sqlx::query("UPDATE audit_log SET message_id = NULL WHERE id = $1")
        .bind(revoked_row)
        .execute(app.db.pool())
        .await
        .unwrap();
    let out = env.sealpost(&["audit", "verify"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("event #{revoked_row}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_list_filters_searches_and_pages() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    let mut sent = Vec::new();
    for i in 0..27 {
        let to = if i % 9 == 0 {
            "Special@Example.org".to_owned()
        } else {
            format!("c{i}@example.org")
        };
        let token = b.csrf("/compose").await;
        let f = reqwest::multipart::Form::new()
            .text("csrf", token)
            .text("recipient", to)
            .text("body", format!("message {i}"))
            .text("expiry_hours", if i == 0 { "1" } else { "48" })
            .text("method", "email_code")
            .text("retention", "keep");
        let r = b.post_multipart("/compose", f).await;
        assert_eq!(r.status, 303, "{}", r.body);
        sent.push(
            crate::support::http::composed_id(&r)
                .expect("message id")
                .to_string(),
        );
        clock.advance(60);
    }
    // Newest first, 25 per page.
    let first = b.get("/sent").await;
    let page1 = message_links(&first.body);
    assert_eq!(page1.len(), 25);
    assert_eq!(page1[0], sent[26]);
    assert!(
        !first.body.contains("rel=\"prev\""),
        "the newest page has no newer one"
    );
    // Page links carry a cursor (the last row's key), not a page number.
    let older = page_link(&first.body, "next").expect("an older page");
    assert!(
        older.contains("older=") && !older.contains("page="),
        "{older}"
    );
    // A message sent meanwhile does not shift the next page.
    crate::support::compose::Compose::to("late@example.org")
        .body("sent while paging")
        .methods(&["email_code"])
        .send(&mut b)
        .await;
    let second = b.get(&older).await;
    let page2 = message_links(&second.body);
    assert_eq!(page2, vec![sent[1].clone(), sent[0].clone()]);
    assert!(
        page_link(&second.body, "next").is_none(),
        "the oldest page has no older one"
    );
    // Back from page 2: the 25 rows newer than its first row.
    let newer = page_link(&second.body, "prev").expect("a newer page");
    assert_eq!(message_links(&b.get(&newer).await.body), page1);
    // The oldest page, straight from the first: the 25 oldest rows, with
    // links back only.
    let oldest = page_link(&first.body, "last").expect("a link to the oldest page");
    let last = b.get(&oldest).await;
    let expected: Vec<String> = sent[..25].iter().rev().cloned().collect();
    assert_eq!(message_links(&last.body), expected);
    assert!(page_link(&last.body, "next").is_none() && page_link(&last.body, "last").is_none());
    assert_eq!(
        page_link(&last.body, "first").as_deref(),
        Some("/sent?status=&q=")
    );
    let newer_than_oldest = page_link(&last.body, "prev").expect("a newer page");
    let between = message_links(&b.get(&newer_than_oldest).await.body);
    assert_eq!(between.len(), 3, "sent[26], sent[25] and the late one");
    // A forged or damaged cursor is refused, not guessed at.
    assert_eq!(b.get("/sent?older=yesterday").await.status, 400);
    assert_eq!(b.get("/sent?older=1_x&newer=2_y").await.status, 400);
    // Exact-address search through the blind index, any case.
    let found = message_links(&b.get("/sent?q=special%40example.org").await.body);
    assert_eq!(
        found,
        vec![sent[18].clone(), sent[9].clone(), sent[0].clone()]
    );
    assert!(message_links(&b.get("/sent?q=special%40example.com").await.body).is_empty());
    // An hour on, the first message (1 hour expiry) has expired.
    clock.advance(3600);
    let mut b = Browser::signed_in(&base, "agent@example.com").await;
    assert_eq!(
        message_links(&b.get("/sent?status=expired").await.body),
        vec![sent[0].clone()]
    );
    assert_eq!(
        message_links(&b.get("/sent?status=queued").await.body).len(),
        25
    );
    assert_eq!(b.get("/sent?status=nonsense").await.status, 400);
}
