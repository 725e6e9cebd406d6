//! The secure inbox (issue 13 §3) over HTTP: closed by default; open, a
//! customer proves an address with an emailed code and uploads (GET and
//! HEAD store nothing and send nothing); the item lands unclaimed in every
//! agent's inbox and exactly one of two agents claiming at once gets it;
//! the limits per address and the daily cap hold under parallel requests.

use reqwest::multipart::{Form, Part};
use sealpost::app::App;
use sealpost::incoming::Kind;
use sealpost::staff::Role;

use crate::anonymous_sessions::session_rows;
use crate::replies::pdf;
use crate::support::START;
use crate::support::env::TestEnv;
use crate::support::files::files_below;
use crate::support::http::{Browser, Resp, create_staff, dev_mail, portal};

const CUSTOMER: &str = "jane.customer@example.org";

async fn count(app: &App, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn open_inbox(app: &App, cap: u32) {
    let mut s = app.settings.load().await.unwrap();
    s.secure_inbox = true;
    s.inbox_daily_cap = cap;
    app.settings
        .save(sealpost::audit::Actor::Cli, &s)
        .await
        .unwrap();
}

/// The 6-digit code in the newest email to `to`.
async fn latest_code(app: &App, reader: &mut Browser, to: &str) -> String {
    let mails = dev_mail(app, reader, to).await;
    let mail = mails.last().expect("a code email");
    let at = mail.find("code").expect("a code");
    mail[at..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("six digits")
        .to_owned()
}

/// A customer who proved `address`.
async fn verified(app: &App, base: &str, address: &str) -> Browser {
    let mut customer = Browser::new(base);
    let r = customer
        .submit("/send", "/send/code", &[("email", address)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let mut reader = Browser::new(base);
    let code = latest_code(app, &mut reader, address).await;
    let r = customer
        .submit("/send", "/send/verify", &[("code", &code)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    customer
}

async fn upload(customer: &mut Browser, note: &str, files: &[(&str, &[u8])]) -> Resp {
    let csrf = customer.csrf("/send").await;
    let mut form = Form::new().text("csrf", csrf).text("body", note.to_owned());
    for (name, data) in files {
        form = form.part(
            "files",
            Part::bytes(data.to_vec()).file_name((*name).to_owned()),
        );
    }
    customer.post_multipart("/send/upload", form).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_inbox_is_closed_by_default() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    let mut visitor = Browser::new(&base);
    assert_eq!(visitor.get("/send").await.status, 404);
    let r = visitor
        .submit("/sign-in", "/send/code", &[("email", CUSTOMER)])
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM inbox_codes").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_proves_an_address_uploads_and_one_agent_claims() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    open_inbox(&app, 200).await;

    // Scanners: GET and HEAD store nothing and send nothing.
    let sessions = session_rows(&app).await;
    for _ in 0..3 {
        let page = Browser::new(&base).get("/send").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("id=\"address-form\""));
        let head = reqwest::Client::new()
            .head(format!("{base}/send"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status().as_u16(), 200);
    }
    for path in ["/send/code", "/send/verify", "/send/upload"] {
        let r = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{path}");
    }
    assert_eq!(session_rows(&app).await, sessions);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 0);

    // Proving the address: a wrong code is refused and counted.
    let mut customer = Browser::new(&base);
    let r = customer
        .submit("/send", "/send/code", &[("email", CUSTOMER)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = customer.get("/send").await;
    assert!(page.body.contains("j•••@example.org"), "{}", page.body);
    assert!(!page.body.contains(CUSTOMER));
    let mut reader = Browser::new(&base);
    let code = latest_code(&app, &mut reader, CUSTOMER).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = customer
        .submit("/send", "/send/verify", &[("code", wrong)])
        .await;
    assert_eq!(r.status, 422);
    // Before verification, no upload is accepted.
    let before = count(&app, "SELECT COUNT(*) FROM messages").await;
    let r = upload(&mut customer, "", &[("a.pdf", &pdf(1, 1000))]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM messages").await, before);
    let r = customer
        .submit("/send", "/send/verify", &[("code", &code)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // A used code does not prove the address twice.
    let mut other = Browser::new(&base);
    other
        .submit("/send", "/send/code", &[("email", "someone@example.net")])
        .await;
    let r = other
        .submit("/send", "/send/verify", &[("code", &code)])
        .await;
    assert_eq!(r.status, 422);

    // The upload, sealed into the shared inbox, unclaimed.
    let statement = pdf(7, 200_000);
    let r = upload(
        &mut customer,
        "My bank statement",
        &[("statement.pdf", &statement)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/send?sent=1"));
    let page = customer.get("/send?sent=1").await;
    assert!(page.body.contains("id=\"inbox-sent\""));
    let id: sealpost::vault::MessageId =
        sqlx::query_scalar::<_, String>("SELECT message_id FROM incoming WHERE kind = 'inbox'")
            .fetch_one(app.db.pool())
            .await
            .unwrap()
            .parse()
            .unwrap();
    let item = app.incoming.get(id).await.unwrap();
    assert_eq!(item.kind, Kind::Inbox);
    assert!(item.owner.is_none());

    // Every agent sees it; two claim at the same moment and one wins.
    create_staff(&app, "a1@example.com", Role::Agent).await;
    create_staff(&app, "a2@example.com", Role::Agent).await;
    let mut a1 = Browser::signed_in(&base, "a1@example.com").await;
    let mut a2 = Browser::signed_in(&base, "a2@example.com").await;
    for agent in [&mut a1, &mut a2] {
        let list = agent.get("/inbox").await;
        assert!(list.body.contains(CUSTOMER), "{}", list.body);
        assert!(list.body.contains("Unclaimed"));
        let page = agent.get(&format!("/inbox/{id}")).await;
        assert!(page.body.contains("id=\"claim\""), "{}", page.body);
        assert!(page.body.contains("My bank statement"));
    }
    let t1 = a1.csrf(&format!("/inbox/{id}")).await;
    let t2 = a2.csrf(&format!("/inbox/{id}")).await;
    let path = format!("/inbox/{id}/claim");
    let f1 = [("csrf", t1.as_str())];
    let f2 = [("csrf", t2.as_str())];
    let (r1, r2) = tokio::join!(a1.post(&path, &f1), a2.post(&path, &f2));
    let mut statuses = [r1.status, r2.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [303, 409], "{} / {}", r1.body, r2.body);
    assert!(app.incoming.get(id).await.unwrap().owner.is_some());
    let (winner, loser) = if r1.status == 303 {
        (&mut a1, &mut a2)
    } else {
        (&mut a2, &mut a1)
    };
    assert_eq!(loser.get(&format!("/inbox/{id}")).await.status, 404);
    let page = winner.get(&format!("/inbox/{id}")).await;
    assert!(page.body.contains("id=\"mark-done\""));
    assert_eq!(
        winner.download(&format!("/inbox/{id}/files/1")).await,
        statement
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'incoming.claimed'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_code_requests_stay_within_the_address_limit() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    open_inbox(&app, 200).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = Browser::new(&base);
            // Distinct client addresses are not needed: the address limit
            // (3 an hour) is the tighter one.
            let _ = i;
            b.submit("/send", "/send/code", &[("email", CUSTOMER)])
                .await
                .status
        }));
    }
    let mut sent = 0;
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 303 || status == 429, "{status}");
        sent += usize::from(status == 303);
    }
    assert_eq!(sent, 3);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM inbox_codes").await, 3);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stay_within_the_address_limit_and_the_daily_cap() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    open_inbox(&app, 7).await;
    let mut first = verified(&app, &base, CUSTOMER).await;
    for i in 0..5 {
        let r = upload(&mut first, "", &[("s.pdf", &pdf(i, 1000))]).await;
        assert_eq!(r.status, 303, "upload {i}: {}", r.body);
    }
    let r = upload(&mut first, "", &[("s.pdf", &pdf(9, 1000))]).await;
    assert_eq!(r.status, 429, "the address's sixth upload today");

    // Two other addresses, uploading in parallel: the day's cap (7) holds.
    let mut second = verified(&app, &base, "second@example.org").await;
    let mut third = verified(&app, &base, "third@example.org").await;
    let data = pdf(3, 1000);
    let (r2, r3) = tokio::join!(
        async {
            let mut out = Vec::new();
            for _ in 0..2 {
                out.push(upload(&mut second, "", &[("a.pdf", &data)]).await.status);
            }
            out
        },
        async {
            let mut out = Vec::new();
            for _ in 0..2 {
                out.push(upload(&mut third, "", &[("b.pdf", &data)]).await.status);
            }
            out
        }
    );
    let ok = r2.iter().chain(&r3).filter(|s| **s == 303).count();
    assert_eq!(ok, 2, "{r2:?} {r3:?}");
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM incoming WHERE kind = 'inbox'").await,
        7
    );
    let blobs = files_below(&env.blob_dir()).len();
    // A new day opens the inbox again.
    clock.advance(24 * 3600 + 1);
    let mut fourth = verified(&app, &base, "fourth@example.org").await;
    let r = upload(&mut fourth, "", &[("c.pdf", &data)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(files_below(&env.blob_dir()).len() > blobs);
}

/// Canaries in a secure-inbox upload (the customer's address, the note, a
/// file's name and content, a refused file's name) appear nowhere: not in
/// the database, the blobs, the real binary's debug log or any email
/// (the code's email is addressed to the customer, and says nothing else
/// of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_inbox_upload_data_at_rest_in_logs_or_mail() {
    use crate::support::canaries::assert_nothing_leaked;
    const ADDRESS: &str = "canary-inbox-5e1a@example.com";
    const NOTE: &str = "CANARY-INBOXNOTE-3c77 my passport number";
    const FILE: &str = "CANARY-INBOXFILE-b902.pdf";
    const CONTENT: &str = "CANARY-INBOX-CONTENT-61f4";
    const REFUSED: &str = "CANARY-INBOXREFUSED-0a9d.pdf";
    let env = TestEnv::new().await;
    let app = env.app().await;
    open_inbox(&app, 200).await;
    create_staff(&app, "a1@example.com", Role::Agent).await;
    let mut serve = crate::support::serve::Serve::start(&env, &[("SEALPOST_LOG", "debug")]);
    let base = serve.base.clone();
    let mut customer = verified(&app, &base, ADDRESS).await;
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00".to_vec();
    exe.extend(crate::support::files::bytes(1000, 5));
    let r = upload(&mut customer, NOTE, &[(REFUSED, &exe)]).await;
    assert_eq!(r.status, 422);
    let mut content = b"%PDF-1.7\n".to_vec();
    content.extend_from_slice(CONTENT.as_bytes());
    let r = upload(&mut customer, NOTE, &[(FILE, &content)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let mut agent = Browser::signed_in(&base, "a1@example.com").await;
    let list = agent.get("/inbox").await;
    assert!(list.body.contains(ADDRESS), "the agent sees who sent it");
    let mut reader = Browser::new(&base);
    let mails = dev_mail(&app, &mut reader, ADDRESS).await;
    assert_eq!(mails.len(), 1, "the code's email");
    serve.sigterm();
    serve.wait_exit(std::time::Duration::from_secs(30));

    let canaries = [ADDRESS, NOTE, FILE, CONTENT, REFUSED];
    assert_nothing_leaked(&env, &app, &serve, &mails, &canaries, "/send/upload").await;
}

/// An administrator opens the inbox and sets its cap on the settings page,
/// which then suggests an auto-reply pointing customers to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_opens_the_inbox_and_gets_an_auto_reply_text() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, "admin@example.com", Role::Admin).await;
    let mut admin = Browser::signed_in(&base, "admin@example.com").await;
    let page = admin.get("/admin/settings").await;
    assert!(page.body.contains("name=\"secure_inbox\""));
    assert!(
        !page.body.contains("id=\"auto-reply\""),
        "closed: no suggestion"
    );
    let fields = [
        ("organisation", "Acme"),
        ("support_line", ""),
        ("default_expiry_hours", "24"),
        ("size_limit_mib", "10"),
        ("method", "email_code"),
        ("inbox_shown", "1"),
        ("secure_inbox", "on"),
        ("inbox_daily_cap", "50"),
    ];
    let r = admin
        .submit("/admin/settings", "/admin/settings", &fields)
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let s = app.settings.load().await.unwrap();
    assert!(s.secure_inbox);
    assert_eq!(s.inbox_daily_cap, 50);
    let page = admin.get("/admin/settings").await;
    let at = page.body.find("id=\"auto-reply\"").expect("the suggestion");
    let send_url = format!("{}/send", app.config.public_url.trim_end_matches('/'));
    assert!(page.body[at..].contains(&send_url), "{}", &page.body[at..]);
    assert_eq!(Browser::new(&base).get("/send").await.status, 200);

    // A cap of 0 is refused; the inbox stays as it was.
    let mut bad = fields.to_vec();
    bad.retain(|(k, _)| *k != "inbox_daily_cap");
    bad.push(("inbox_daily_cap", "0"));
    let r = admin
        .submit("/admin/settings", "/admin/settings", &bad)
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("daily limit"), "{}", r.body);
    assert_eq!(app.settings.load().await.unwrap().inbox_daily_cap, 50);
}

/// Issue 14: the secure inbox through the API: list, claim (one of two
/// agents wins), open (decrypted, audited) and download (audited), with
/// `inbox:read`; other scopes get 403, others' items 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_claims_opens_and_downloads_incoming_items() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    open_inbox(&app, 200).await;
    let agent = create_staff(&app, "agent@example.com", sealpost::staff::Role::Agent).await;
    let other = create_staff(&app, "other@example.com", sealpost::staff::Role::Agent).await;
    let token = |owner, scopes: &'static str| {
        let app = app.clone();
        async move {
            let (_, t) = app
                .tokens
                .create(
                    sealpost::audit::Actor::Cli,
                    sealpost::staff::tokens::NewApiToken {
                        owner,
                        name: "t".to_owned(),
                        scopes: sealpost::staff::tokens::Scopes::parse_list(scopes).unwrap(),
                        expires_at: None,
                    },
                )
                .await
                .unwrap();
            secrecy::ExposeSecret::expose_secret(&t).to_owned()
        }
    };
    let mine = token(agent, "inbox:read").await;
    let theirs = token(other, "inbox:read").await;
    let wrong = token(agent, "messages:read").await;
    let mut customer = verified(&app, &base, CUSTOMER).await;
    let data = pdf(5, 200_000);
    let r = upload(
        &mut customer,
        "Here is my form.",
        &[("form-canary.pdf", &data)],
    )
    .await;
    assert!(r.status < 400, "{}", r.body);

    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, t: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(t)
    };
    let list = call(reqwest::Method::GET, "/api/v1/incoming", &mine)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status().as_u16(), 200);
    let list: serde_json::Value = list.json().await.unwrap();
    let item = &list["items"][0];
    assert_eq!(item["kind"], "inbox");
    assert_eq!(item["owner"], "unclaimed");
    let id = item["id"].as_str().unwrap().to_owned();
    assert!(
        !list.to_string().contains(CUSTOMER),
        "lists carry no address"
    );
    let r = call(reqwest::Method::GET, "/api/v1/incoming", &wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Two agents claim at once: one wins, the other gets 409.
    let claim = format!("/api/v1/incoming/{id}/claim");
    let (a, b) = tokio::join!(
        call(reqwest::Method::POST, &claim, &mine).send(),
        call(reqwest::Method::POST, &claim, &theirs).send()
    );
    let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let (winner, loser) = if call(
        reqwest::Method::GET,
        &format!("/api/v1/incoming/{id}"),
        &mine,
    )
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
        == 200
    {
        (mine.clone(), theirs.clone())
    } else {
        (theirs.clone(), mine.clone())
    };
    let r = call(
        reqwest::Method::GET,
        &format!("/api/v1/incoming/{id}"),
        &loser,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // The winner opens it and downloads the file, byte for byte.
    let detail: serde_json::Value = call(
        reqwest::Method::GET,
        &format!("/api/v1/incoming/{id}"),
        &winner,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(detail["owner"], "you");
    assert_eq!(detail["from"], CUSTOMER);
    assert_eq!(detail["text"], "Here is my form.");
    let file = &detail["files"][0];
    assert_eq!(file["name"], "form-canary.pdf");
    assert_eq!(file["size"], data.len());
    let position = file["position"].as_u64().unwrap();
    let got = call(
        reqwest::Method::GET,
        &format!("/api/v1/incoming/{id}/files/{position}"),
        &winner,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), data);
    let r = call(
        reqwest::Method::GET,
        &format!("/api/v1/incoming/{id}/files/x"),
        &winner,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let audited = count(
        &app,
        "SELECT COUNT(*) FROM audit_log WHERE action IN ('incoming.opened', 'incoming.downloaded', 'incoming.claimed')",
    )
    .await;
    assert!(audited >= 3, "{audited}");
}
