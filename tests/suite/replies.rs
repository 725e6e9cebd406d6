//! Secure replies (issue 13 §1, §5, §6) over HTTP: the customer answers
//! in a verified session with text and files, sealed on arrival; the agent
//! is alerted without customer data, reads the reply and downloads its
//! files byte-identical, answers in the conversation; refused files leave
//! nothing behind; parallel replies cannot pass the allowance; scanners'
//! GET and HEAD change nothing.

use reqwest::multipart::{Form, Part};
use sealpost::app::App;
use sealpost::audit::Actor;
use sealpost::deliveries::MAX_REPLIES;
use sealpost::settings::Settings;
use sealpost::staff::Role;
use sealpost::vault::{MessageId, VaultError};

use crate::support::START;
use crate::support::clamd::{Clamd, eicar};
use crate::support::compose::{Compose, fresh_link};
use crate::support::env::TestEnv;
use crate::support::files::{bytes, files_below};
use crate::support::http::{Browser, Resp, create_staff, dev_mail, element_text, portal, serve};

const AGENT: &str = "agent@example.com";
const CUSTOMER: &str = "customer@example.org";
const CODE: &str = "Sesame-4711";
const REPLY: &str = "Here are my <b>documents</b> & my payslip.";

pub fn pdf(seed: u64, len: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n".to_vec();
    v.extend(bytes(len, seed));
    v
}

fn png(seed: u64, len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    v.extend(bytes(len, seed));
    v
}

/// A Windows program, whatever it is called.
fn program(len: usize) -> Vec<u8> {
    let mut v = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff".to_vec();
    v.extend(bytes(len, 99));
    v
}

/// What an element holds, markup included, up to its `close` tag.
fn inner(html: &str, id: &str, close: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let end = at + html[at..].find(close)?;
    Some(html[at..end].to_owned())
}

async fn count(app: &App, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// An agent, signed in, and a message to the customer allowing a reply,
/// verified by the customer: (app, clock, agent, customer, message id).
async fn verified(
    env: &TestEnv,
) -> (
    App,
    sealpost::clock::ManualClock,
    Browser,
    Browser,
    MessageId,
) {
    let (app, clock, base) = portal(env, START).await;
    let (agent, customer, id) = verified_on(&app, &base).await;
    (app, clock, agent, customer, id)
}

/// [`verified`] on a running app: (agent, customer, message id).
pub async fn verified_on(app: &App, base: &str) -> (Browser, Browser, MessageId) {
    create_staff(app, AGENT, Role::Agent).await;
    let mut agent = Browser::signed_in(base, AGENT).await;
    let id = Compose::to(CUSTOMER)
        .body("Please send us your payslip.")
        .methods(&["access_code"])
        .access_code(CODE)
        .allow_reply()
        .send(&mut agent)
        .await;
    let customer = customer_verifies(app, base, id).await;
    (agent, customer, id)
}

async fn customer_verifies(app: &App, base: &str, id: MessageId) -> Browser {
    let link = fresh_link(app, id).await;
    let mut customer = Browser::new(base);
    assert_eq!(customer.get(&link).await.status, 200);
    let r = customer
        .post(&format!("{link}/verify"), &[("access_code", CODE)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    customer
}

fn reply_form(csrf: &str, text: &str, files: &[(&str, &[u8])]) -> Form {
    let mut form = Form::new()
        .text("csrf", csrf.to_owned())
        .text("body", text.to_owned());
    for (name, data) in files {
        // The declared type is a lie for the program: only content counts.
        let part = Part::bytes(data.to_vec())
            .file_name((*name).to_owned())
            .mime_str("application/pdf")
            .unwrap();
        form = form.part("files", part);
    }
    form
}

pub async fn reply(
    customer: &mut Browser,
    id: MessageId,
    text: &str,
    files: &[(&str, &[u8])],
) -> Resp {
    let csrf = customer.csrf(&format!("/pickup/{id}")).await;
    customer
        .post_multipart(
            &format!("/pickup/{id}/reply"),
            reply_form(&csrf, text, files),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_replies_and_the_agent_reads_downloads_and_answers() {
    let env = TestEnv::new().await;
    let (app, clock, mut agent, mut customer, id) = verified(&env).await;
    let page = customer.get(&format!("/pickup/{id}")).await;
    assert!(page.body.contains("id=\"reply-form\""), "{}", page.body);

    let statement = pdf(1, 300_000);
    let photo = png(2, 120_000);
    let r = reply(
        &mut customer,
        id,
        REPLY,
        &[
            ("Gehaltsabrechnung März.pdf", &statement),
            ("id-card.png", &photo),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.location(),
        Some(format!("/pickup/{id}?replied=1").as_str())
    );
    let page = customer.get(&format!("/pickup/{id}?replied=1")).await;
    assert!(page.body.contains("id=\"reply-sent\""));
    let conversation = inner(&page.body, "conversation", "</ol>").expect("conversation");
    assert!(conversation.contains("You wrote"), "{conversation}");
    assert!(
        page.body
            .contains("Here are my &#60;b&#62;documents&#60;/b&#62; &#38; my payslip."),
        "the reply is shown escaped: {}",
        page.body
    );

    // One incoming item, owned by the sender, in the message's conversation.
    let items = app.incoming.conversation(id).await.unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item.in_reply_to, Some(id));
    assert!(item.read_at.is_none());
    assert_eq!(app.deliveries.get(id).await.unwrap().replies, 1);

    // The alert: a portal link and the item's id, no customer data.
    let mails = dev_mail(&app, &mut agent, AGENT).await;
    let alert = mails
        .iter()
        .find(|m| m.contains("secure reply"))
        .expect("an alert to the agent");
    assert!(alert.contains(&format!("/inbox/{}", item.id)), "{alert}");
    for secret in [
        CUSTOMER,
        "payslip",
        "documents",
        "Gehaltsabrechnung",
        "id-card",
    ] {
        assert!(!alert.contains(secret), "{secret} in the alert: {alert}");
    }

    // The agent reads it and downloads both files byte-identical.
    let page = agent.get(&format!("/inbox/{}", item.id)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(element_text(&page.body, "from").as_deref(), Some(CUSTOMER));
    assert!(page.body.contains("Gehaltsabrechnung März.pdf"));
    assert!(page.body.contains("Here are my &#60;b&#62;documents"));
    assert_eq!(
        agent.download(&format!("/inbox/{}/files/1", item.id)).await,
        statement
    );
    assert_eq!(
        agent.download(&format!("/inbox/{}/files/2", item.id)).await,
        photo
    );
    assert!(app.incoming.get(item.id).await.unwrap().read_at.is_some());
    let downloads = count(
        &app,
        &format!(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'incoming.downloaded' AND message_id = '{}'",
            item.id
        ),
    )
    .await;
    assert_eq!(downloads, 2);

    // The message page lists the reply in its conversation.
    let page = agent.get(&format!("/messages/{id}")).await;
    assert!(
        page.body.contains(&format!("/inbox/{}", item.id)),
        "{}",
        page.body
    );
    assert!(page.body.contains("Reply received (read)"));

    // An answer goes to the conversation's customer, and only to them.
    let page = agent.get(&format!("/compose?conversation={id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!("value=\"{CUSTOMER}\"")));
    let token = agent.csrf("/compose").await;
    let elsewhere = Compose::to("someone.else@example.net")
        .methods(&["access_code"])
        .access_code(CODE)
        .in_conversation(id)
        .form(&token);
    let r = agent.post_multipart("/compose", elsewhere).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body
            .contains("An answer goes to the customer of the conversation")
    );
    let answer = Compose::to(CUSTOMER)
        .body("Thank you, all received.")
        .methods(&["access_code"])
        .access_code(CODE)
        .allow_reply()
        .in_conversation(id)
        .send(&mut agent)
        .await;
    assert_eq!(
        app.deliveries.get(answer).await.unwrap().conversation_id,
        id
    );

    // The customer's new link shows the whole conversation.
    let base = customer.base.clone();
    let mut customer = customer_verifies(&app, &base, answer).await;
    let page = customer.get(&format!("/pickup/{answer}")).await;
    assert!(page.body.contains("Thank you, all received."));
    let conversation = inner(&page.body, "conversation", "</ol>").expect("conversation");
    assert!(
        conversation.contains("Please send us your payslip."),
        "{conversation}"
    );
    assert!(
        conversation.contains("Gehaltsabrechnung März.pdf"),
        "{conversation}"
    );

    // Another agent sees nothing of it.
    create_staff(&app, "other@example.com", Role::Agent).await;
    let mut other = Browser::signed_in(&agent.base, "other@example.com").await;
    assert_eq!(other.get(&format!("/inbox/{}", item.id)).await.status, 404);
    assert_eq!(
        other
            .get(&format!("/compose?conversation={id}"))
            .await
            .status,
        404
    );

    // Done: shredded after the retention, and the page says so.
    let r = agent
        .submit(
            &format!("/inbox/{}", item.id),
            &format!("/inbox/{}/done", item.id),
            &[],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let done = app.incoming.get(item.id).await.unwrap();
    assert_eq!(done.shred_at, Some(done.done_at.unwrap() + 30 * 86_400));
    assert_eq!(app.incoming.shred_due().await.unwrap(), 0);
    clock.advance(30 * 86_400 + 1);
    assert_eq!(app.incoming.shred_due().await.unwrap(), 1);
    assert!(matches!(
        app.vault.unlock(item.id).await,
        Err(VaultError::Shredded)
    ));
    // (The agent's session has long timed out.)
    let mut agent = Browser::signed_in(&agent.base, AGENT).await;
    let page = agent.get(&format!("/inbox/{}", item.id)).await;
    assert_eq!(
        element_text(&page.body, "from").as_deref(),
        Some("(shredded)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_files_leave_nothing_behind_and_are_audited() {
    let env = TestEnv::new().await;
    let (app, _clock, _agent, mut customer, id) = verified(&env).await;
    let blobs = files_below(&env.blob_dir()).len();
    let messages = count(&app, "SELECT COUNT(*) FROM messages").await;

    // A program renamed .pdf, after a good file: the whole reply is refused.
    let good = pdf(3, 50_000);
    let exe = program(40_000);
    let r = reply(
        &mut customer,
        id,
        "see attached",
        &[("statement.pdf", &good), ("invoice.pdf", &exe)],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let errors = inner(&r.body, "reply-errors", "</div>").expect("errors");
    assert!(errors.contains("invoice.pdf"), "{errors}");
    assert!(
        errors.contains("is not a kind of file we can accept"),
        "{errors}"
    );

    // Larger than the organisation's limit.
    let settings = Settings {
        size_limit_mib: 1,
        ..app.settings.load().await.unwrap()
    };
    app.settings.save(Actor::Cli, &settings).await.unwrap();
    let big = pdf(4, 1024 * 1024 + 1);
    let r = reply(&mut customer, id, "", &[("big.pdf", &big)]).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(
        r.body.contains("larger than the limit of 1 MiB"),
        "{}",
        r.body
    );

    // Empty: nothing to send.
    let r = reply(&mut customer, id, "  ", &[]).await;
    assert_eq!(r.status, 422);

    assert_eq!(files_below(&env.blob_dir()).len(), blobs, "no blob left");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM messages").await, messages);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM incoming").await, 0);
    assert_eq!(app.deliveries.get(id).await.unwrap().replies, 0);
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'incoming.upload_refused' ORDER BY id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("file_type"), "{reasons:?}");
    assert!(reasons[1].contains("too_large"), "{reasons:?}");
    for r in &reasons {
        assert!(!r.contains("invoice") && !r.contains("big.pdf"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_need_a_verified_session_an_allowing_sender_and_a_post() {
    let env = TestEnv::new().await;
    let (app, _clock, mut agent, customer, id) = verified(&env).await;

    // A stranger (no verified session) posting a reply gets the neutral
    // page; so does a scanner's GET or HEAD, which changes nothing.
    let mut stranger = Browser::new(&customer.base);
    let form = reply_form("x", REPLY, &[("a.pdf", &pdf(5, 1000))]);
    let r = stranger
        .post_multipart(&format!("/pickup/{id}/reply"), form)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = stranger.get(&format!("/pickup/{id}/reply")).await;
    assert_eq!(r.status, 405);
    let head = reqwest::Client::new()
        .head(format!("{}/pickup/{id}/reply", customer.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 405);

    // A token from another session is refused before anything is read.
    let mut customer = customer;
    let _ = customer.csrf(&format!("/pickup/{id}")).await;
    let r = customer
        .post_multipart(
            &format!("/pickup/{id}/reply"),
            reply_form("forged", REPLY, &[]),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // A message that does not allow replies shows no form and refuses one.
    let closed = Compose::to(CUSTOMER)
        .methods(&["access_code"])
        .access_code(CODE)
        .send(&mut agent)
        .await;
    let mut customer2 = customer_verifies(&app, &customer.base, closed).await;
    let page = customer2.get(&format!("/pickup/{closed}")).await;
    assert!(!page.body.contains("reply-form"));
    let r = reply(&mut customer2, closed, REPLY, &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);

    assert_eq!(count(&app, "SELECT COUNT(*) FROM incoming").await, 0);
    assert_eq!(app.deliveries.get(id).await.unwrap().replies, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_replies_never_pass_the_allowance() {
    let env = TestEnv::new().await;
    let (app, _clock, _agent, mut customer, id) = verified(&env).await;
    let csrf = customer.csrf(&format!("/pickup/{id}")).await;
    let mut accepted = 0;
    let mut rounds = 0;
    while accepted < MAX_REPLIES && rounds < 20 {
        rounds += 1;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let mut b = Browser::new(&customer.base);
            b.cookies = customer.cookies.clone();
            let form = reply_form(&csrf, &format!("reply {rounds}.{i}"), &[]);
            tasks.push(tokio::spawn(async move {
                b.post_multipart(&format!("/pickup/{id}/reply"), form)
                    .await
                    .status
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                303 => accepted += 1,
                // Another reply of this message was being received, or
                // the allowance was used up meanwhile.
                429 | 400 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        assert!(accepted <= MAX_REPLIES, "{accepted} replies accepted");
    }
    assert_eq!(accepted, MAX_REPLIES);
    assert_eq!(app.deliveries.get(id).await.unwrap().replies, MAX_REPLIES);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM incoming").await,
        MAX_REPLIES
    );
    let r = reply(&mut customer, id, "one more", &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_clamd_scans_every_file_and_an_unreachable_one_refuses_all() {
    let env = TestEnv::new().await;
    let mut clamd = Clamd::start();
    let mut config = env.config();
    config.clamd_url = Some(clamd.tcp_url());
    let clock = sealpost::clock::ManualClock::new(START);
    let app = App::open_with_clock(config, std::sync::Arc::new(clock))
        .await
        .expect("open app");
    let base = serve(app.clone()).await;
    let (_agent, mut customer, id) = verified_on(&app, &base).await;

    // A clean file passes the scan and is kept.
    let clean = pdf(6, 200_000);
    let r = reply(&mut customer, id, "scanned", &[("clean.pdf", &clean)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM incoming").await, 1);
    let blobs = files_below(&env.blob_dir()).len();

    // The EICAR test file (plain text, so an accepted kind) is found by
    // clamd's own signature, and nothing of the reply is kept.
    let r = reply(&mut customer, id, "infected", &[("notes.txt", &eicar())]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let errors = inner(&r.body, "reply-errors", "</div>").expect("errors");
    assert!(
        errors.contains("notes.txt") && errors.contains("malware check found"),
        "{errors}"
    );
    for _ in 0..50 {
        if clamd.log_shows("FOUND") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(clamd.log_shows("FOUND"), "clamd saw it: {}", clamd.log());

    // Configured but stopped: every file is refused (fail closed).
    clamd.stop();
    let r = reply(&mut customer, id, "later", &[("clean.pdf", &clean)]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("malware check is unavailable"),
        "{}",
        r.body
    );

    assert_eq!(files_below(&env.blob_dir()).len(), blobs, "no blob left");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM incoming").await, 1);
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'incoming.upload_refused' ORDER BY id",
    )
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("malware"), "{reasons:?}");
    assert!(reasons[1].contains("scanner_unavailable"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_lists_unread_first_pages_and_shows_each_agent_their_own() {
    let env = TestEnv::new().await;
    let (app, _clock, mut agent, mut customer, first) = verified(&env).await;
    let empty = agent.get("/inbox").await;
    assert_eq!(empty.status, 200);
    assert!(empty.body.contains("id=\"inbox-empty\""));

    // 10 replies to each of three messages: 30 items, more than a page.
    let mut messages = vec![first];
    for _ in 0..2 {
        let id = Compose::to(CUSTOMER)
            .methods(&["access_code"])
            .access_code(CODE)
            .allow_reply()
            .send(&mut agent)
            .await;
        messages.push(id);
    }
    for (n, id) in messages.iter().enumerate() {
        if n > 0 {
            customer = customer_verifies(&app, &customer.base, *id).await;
        }
        for i in 0..MAX_REPLIES {
            let r = reply(&mut customer, *id, &format!("reply {n}.{i}"), &[]).await;
            assert_eq!(r.status, 303, "{}", r.body);
        }
    }
    let page = agent.get("/inbox").await;
    let unread = inner(&page.body, "unread", "</table>").expect("unread items");
    assert_eq!(unread.matches("/inbox/").count(), 30);
    assert!(unread.contains(CUSTOMER), "the sender address, decrypted");
    let listed = inner(&page.body, "inbox", "</table>").expect("items");
    assert_eq!(listed.matches("/inbox/").count(), 25);
    let next = crate::support::http::page_link(&page.body, "next").expect("a next page");
    let rest = agent.get(&next).await;
    assert_eq!(rest.status, 200);
    assert!(
        rest.body.find("id=\"unread\"").is_none(),
        "unread only on the first page"
    );
    let listed = inner(&rest.body, "inbox", "</table>").expect("items");
    assert_eq!(listed.matches("/inbox/").count(), 5);

    // Opening one takes it off the unread list.
    let items = app.incoming.conversation(first).await.unwrap();
    assert_eq!(
        agent.get(&format!("/inbox/{}", items[0].id)).await.status,
        200
    );
    let page = agent.get("/inbox").await;
    let unread = inner(&page.body, "unread", "</table>").expect("unread items");
    assert_eq!(unread.matches("/inbox/").count(), 29);
    assert!(!unread.contains(&format!("/inbox/{}", items[0].id)));
    let unread = app
        .incoming
        .list(&sealpost::incoming::ListQuery {
            unread: true,
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(unread.items.len(), 29);

    // Another agent sees none of them.
    create_staff(&app, "other@example.com", Role::Agent).await;
    let mut other = Browser::signed_in(&agent.base, "other@example.com").await;
    let page = other.get("/inbox").await;
    assert!(page.body.contains("id=\"inbox-empty\""), "{}", page.body);
    assert!(!page.body.contains(CUSTOMER));
    // A forged cursor is a bad link, not an empty page.
    assert_eq!(other.get("/inbox?older=nonsense").await.status, 400);
}

/// Canaries in a reply (its text, a file's name and content, the
/// customer's address, a refused file's name) appear nowhere: not in the
/// database, the blobs, the real binary's debug log or any email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_text_file_name_or_address_at_rest_in_logs_or_mail() {
    use crate::support::canaries::assert_nothing_leaked;
    const ADDRESS: &str = "canary-cust-3e9c@example.com";
    const TEXT: &str = "CANARY-REPLY-6d1f my IBAN is DE00";
    const FILE: &str = "CANARY-REPLYFILE-88ab.pdf";
    const CONTENT: &str = "CANARY-REPLY-CONTENT-41c7";
    const REFUSED: &str = "CANARY-REFUSED-1a2b.pdf";
    let env = TestEnv::new().await;
    let app = env.app().await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut serve = crate::support::serve::Serve::start(&env, &[("SEALPOST_LOG", "debug")]);
    let base = serve.base.clone();
    let mut agent = Browser::signed_in(&base, AGENT).await;
    let id = Compose::to(ADDRESS)
        .methods(&["access_code"])
        .access_code(CODE)
        .allow_reply()
        .send(&mut agent)
        .await;
    let mut customer = customer_verifies(&app, &base, id).await;
    let mut content = b"%PDF-1.7\n".to_vec();
    content.extend_from_slice(CONTENT.as_bytes());
    let r = reply(&mut customer, id, TEXT, &[(REFUSED, &program(1000))]).await;
    assert_eq!(r.status, 422);
    let r = reply(&mut customer, id, TEXT, &[(FILE, &content)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let item = app.incoming.conversation(id).await.unwrap()[0].id;
    let page = agent.get(&format!("/inbox/{item}")).await;
    assert!(
        page.body.contains(TEXT) && page.body.contains(FILE),
        "the reply is there"
    );
    assert_eq!(
        agent.download(&format!("/inbox/{item}/files/1")).await,
        content
    );
    agent.get("/inbox").await;
    let mails = dev_mail(&app, &mut agent, AGENT).await;
    assert!(!mails.is_empty(), "the alert was sent");
    serve.sigterm();
    serve.wait_exit(std::time::Duration::from_secs(30));

    let canaries = [ADDRESS, TEXT, FILE, CONTENT, REFUSED];
    assert_nothing_leaked(&env, &app, &serve, &mails, &canaries, "/pickup/{id}/reply").await;
}

/// The one inline script is allowed by its hash, and only it: the CSP of
/// the pages that carry it names the SHA-256 of exactly what they embed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_script_is_allowed_by_its_hash_and_nothing_else_is() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let env = TestEnv::new().await;
    let (_app, _clock, mut agent, mut customer, id) = verified(&env).await;
    for (b, path) in [
        (&mut agent, "/compose".to_owned()),
        (&mut customer, format!("/pickup/{id}")),
    ] {
        let page = b.get(&path).await;
        let csp = page
            .header("content-security-policy")
            .expect("csp")
            .to_owned();
        let start = page.body.find("<script>").expect("the script") + 8;
        let end = start + page.body[start..].find("</script>").expect("its end");
        let script = &page.body[start..end];
        assert_eq!(script, sealpost::web::PROGRESS_SCRIPT, "embedded verbatim");
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        assert!(
            csp.contains(&format!("script-src 'sha256-{hash}';")),
            "{csp}"
        );
        assert_eq!(
            page.body.matches("<script").count(),
            1,
            "{path}: one script"
        );
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert!(page.body.contains("data-progress="), "{path}");
    }
}
