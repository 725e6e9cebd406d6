//! Document requests (issue 13 §2) over HTTP: an agent asks for two
//! documents; the customer's email holds only a link; scanners' GET and
//! HEAD change nothing; the customer verifies and uploads one file per
//! item (after refusals that leave nothing behind); the agent is alerted
//! without customer data and downloads both files byte-identical under
//! their items; the link then takes no more uploads.

use reqwest::multipart::{Form, Part};
use sealpost::app::App;
use sealpost::deliveries::Status;
use sealpost::incoming::Kind;
use sealpost::staff::Role;
use sealpost::vault::MessageId;

use crate::replies::pdf;
use crate::support::START;
use crate::support::compose::fresh_link;
use crate::support::env::TestEnv;
use crate::support::files::{bytes, files_below};
use crate::support::http::{
    Browser, Resp, composed_id, create_staff, dev_mail, element_text, link_in, portal,
};

const AGENT: &str = "agent@example.com";
const CUSTOMER: &str = "customer@example.org";
const CODE: &str = "Sesame-4711";
const INSTRUCTIONS: &str = "For your mortgage application, please send these.";

fn png(seed: u64, len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    v.extend(bytes(len, seed));
    v
}

fn jpeg(seed: u64, len: usize) -> Vec<u8> {
    let mut v = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00".to_vec();
    v.extend(bytes(len, seed));
    v
}

async fn count(app: &App, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// What the agent fills in, before any changes a test makes.
fn request_fields() -> Vec<(&'static str, &'static str)> {
    vec![
        ("recipient", CUSTOMER),
        ("title", "Mortgage 4711"),
        ("body", INSTRUCTIONS),
        ("items", "Photo ID\r\nLast payslip\r\n"),
        ("kind", "pdf"),
        ("kind", "png"),
        ("max_mib", "20"),
        ("expiry_hours", "72"),
        ("method", "access_code"),
        ("access_code", CODE),
    ]
}

async fn send_request(agent: &mut Browser, fields: &[(&str, &str)]) -> Resp {
    agent.submit("/requests/new", "/requests/new", fields).await
}

/// The customer's upload: the token, a note, then each item's files.
fn upload_form(csrf: &str, note: &str, items: &[(u32, &str, &[u8])]) -> Form {
    let mut form = Form::new()
        .text("csrf", csrf.to_owned())
        .text("body", note.to_owned());
    for (item, name, data) in items {
        let part = Part::bytes(data.to_vec())
            .file_name((*name).to_owned())
            .mime_str("application/pdf")
            .unwrap();
        form = form.part(format!("item-{item}"), part);
    }
    form
}

async fn upload(
    customer: &mut Browser,
    id: MessageId,
    note: &str,
    items: &[(u32, &str, &[u8])],
) -> Resp {
    let csrf = customer.csrf(&format!("/pickup/{id}")).await;
    customer
        .post_multipart(
            &format!("/pickup/{id}/submit"),
            upload_form(&csrf, note, items),
        )
        .await
}

async fn verify(base: &str, link: &str) -> Browser {
    let mut customer = Browser::new(base);
    assert_eq!(customer.get(link).await.status, 200);
    let r = customer
        .post(&format!("{link}/verify"), &[("access_code", CODE)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    customer
}

/// Rows and blobs that a refused upload must not add to.
async fn stored(app: &App, env: &TestEnv) -> (i64, i64, usize) {
    (
        count(app, "SELECT COUNT(*) FROM messages").await,
        count(app, "SELECT COUNT(*) FROM incoming").await,
        files_below(&env.blob_dir()).len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_requests_two_documents_and_downloads_what_arrived() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut agent = Browser::signed_in(&base, AGENT).await;
    let page = agent.get("/requests/new").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"items\""));

    let r = send_request(&mut agent, &request_fields()).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id = composed_id(&r).expect("the request's page");
    let request = app.requests.get(id).await.unwrap().expect("a request row");
    assert_eq!(request.items, 2);
    assert_eq!(request.max_bytes, 20 * 1024 * 1024);
    assert!(request.submitted_at.is_none());

    // The customer's email: a link, nothing of the request.
    let mails = dev_mail(&app, &mut agent, CUSTOMER).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains("asked to send documents securely"), "{mail}");
    for secret in ["Photo ID", "payslip", "mortgage", "Mortgage", "4711"] {
        assert!(!mail.contains(secret), "{secret} in the email: {mail}");
    }
    let link = link_in(mail, "/p/").expect("a pickup link");

    // Scanners: GET and HEAD on the link and the upload address change
    // nothing, and a POST without a verified session stores nothing.
    let before = stored(&app, &env).await;
    let mut scanner = Browser::new(&base);
    let landing = scanner.get(&link).await;
    assert_eq!(landing.status, 200);
    assert!(landing.body.contains("You are asked to send documents"));
    let head = reqwest::Client::new()
        .head(format!("{base}{link}"))
        .send()
        .await
        .unwrap();
    assert!(head.status().is_success(), "{}", head.status());
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = reqwest::Client::new()
            .request(method.clone(), format!("{base}/pickup/{id}/submit"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method}");
    }
    let r = scanner
        .post_multipart(
            &format!("/pickup/{id}/submit"),
            upload_form("x", "", &[(0, "a.pdf", &pdf(1, 100))]),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let d = app.deliveries.get(id).await.unwrap();
    assert!(d.link_consumed_at.is_none());
    assert_eq!(stored(&app, &env).await, before);

    // The customer verifies and sees the instructions and the checklist.
    let mut customer = verify(&base, &link).await;
    let page = customer.get(&format!("/pickup/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(INSTRUCTIONS));
    assert!(page.body.contains("id=\"request-form\""));
    assert!(page.body.contains("<label for=\"item-0\">Photo ID</label>"));
    assert!(
        page.body
            .contains("<label for=\"item-1\">Last payslip</label>")
    );
    assert!(!page.body.contains("id=\"reply-form\""));

    // Refusals, each leaving nothing behind: an item without a file, a
    // program renamed .pdf, a kind this request does not accept.
    let photo = png(2, 150_000);
    let payslip = pdf(3, 400_000);
    let before = stored(&app, &env).await;
    let r = upload(&mut customer, id, "", &[(0, "passport.png", &photo)]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("Add at least one file for: Last payslip"),
        "{}",
        r.body
    );
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00".to_vec();
    exe.extend(bytes(30_000, 5));
    let r = upload(
        &mut customer,
        id,
        "",
        &[(0, "passport.png", &photo), (1, "payslip.pdf", &exe)],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("is not a kind of file we can accept"),
        "{}",
        r.body
    );
    let r = upload(
        &mut customer,
        id,
        "",
        &[
            (0, "passport.jpg", &jpeg(4, 10_000)),
            (1, "payslip.pdf", &payslip),
        ],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("Accepted: PDF, PNG image."), "{}", r.body);
    assert_eq!(stored(&app, &env).await, before);
    let refusals = count(
        &app,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'incoming.upload_refused'",
    )
    .await;
    assert_eq!(refusals, 3);

    // One file per item, and a note.
    let r = upload(
        &mut customer,
        id,
        "The payslip is for October.",
        &[
            (0, "passport.png", &photo),
            (1, "Gehalt Oktober.pdf", &payslip),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some("/pickup/sent"));
    let done = customer.get("/pickup/sent").await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("Your documents were sent securely"));

    let request = app.requests.get(id).await.unwrap().unwrap();
    let submission = request.submission.expect("submitted");
    let item = app.incoming.get(submission).await.unwrap();
    assert_eq!(item.kind, Kind::Request);
    assert_eq!(item.in_reply_to, Some(id));
    assert_eq!(
        app.deliveries.get(id).await.unwrap().status(START + 60),
        Status::Submitted
    );

    let page = agent.get(&format!("/messages/{id}")).await;
    assert_eq!(
        element_text(&page.body, "status").as_deref(),
        Some("Documents received")
    );
    assert!(
        !page.body.contains("/resend"),
        "no new link for a submitted request"
    );

    // The link takes no more uploads: the session ended, and a link sent
    // before the submission finds the request submitted.
    let before = stored(&app, &env).await;
    let r = customer
        .post_multipart(
            &format!("/pickup/{id}/submit"),
            upload_form("x", "", &[(0, "again.pdf", &payslip)]),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let again = fresh_link(&app, id).await;
    let mut customer = verify(&base, &again).await;
    let page = customer.get(&format!("/pickup/{id}")).await;
    assert!(
        page.body.contains("id=\"request-submitted\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("id=\"request-form\""));
    let r = upload(
        &mut customer,
        id,
        "",
        &[(0, "again.png", &photo), (1, "again.pdf", &payslip)],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(stored(&app, &env).await, before);

    // The agent's alert: a portal link, no customer data.
    let mails = dev_mail(&app, &mut agent, AGENT).await;
    let alert = mails
        .iter()
        .find(|m| m.contains("documents you requested"))
        .expect("an alert to the agent");
    assert!(alert.contains(&format!("/inbox/{submission}")), "{alert}");
    for secret in [
        CUSTOMER, "Photo ID", "payslip", "passport", "Gehalt", "October",
    ] {
        assert!(!alert.contains(secret), "{secret} in the alert: {alert}");
    }

    // The request's page shows, item by item, what arrived; both files
    // download byte-identical.
    let page = agent.get(&format!("/messages/{id}")).await;
    assert_eq!(page.status, 200);
    let items = &page.body[page.body.find("id=\"request-items\"").expect("items")..];
    let photo_at = items.find("Photo ID").unwrap();
    let payslip_at = items.find("Last payslip").unwrap();
    let passport_at = items.find("passport.png").unwrap();
    let gehalt_at = items.find("Gehalt Oktober.pdf").unwrap();
    assert!(photo_at < passport_at && passport_at < payslip_at && payslip_at < gehalt_at);
    assert_eq!(
        agent
            .download(&format!("/inbox/{submission}/files/1"))
            .await,
        photo
    );
    assert_eq!(
        agent
            .download(&format!("/inbox/{submission}/files/2"))
            .await,
        payslip
    );
    let inbox = agent.get(&format!("/inbox/{submission}")).await;
    assert!(
        inbox.body.contains("<strong>Photo ID</strong>: "),
        "{}",
        inbox.body
    );
    assert!(inbox.body.contains("The payslip is for October."));
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'incoming.request_submitted'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_submissions_store_one() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut agent = Browser::signed_in(&base, AGENT).await;
    let mut fields = request_fields();
    fields.retain(|(k, _)| *k != "items");
    fields.push(("items", "Photo ID"));
    let id = composed_id(&send_request(&mut agent, &fields).await).unwrap();
    let link = fresh_link(&app, id).await;
    let mut customer = verify(&base, &link).await;
    let csrf = customer.csrf(&format!("/pickup/{id}")).await;
    let photo = png(7, 200_000);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = Browser::new(&base);
        c.cookies = customer.cookies.clone();
        let form = upload_form(&csrf, "", &[(0, "id.png", &photo)]);
        tasks.push(tokio::spawn(async move {
            c.post_multipart(&format!("/pickup/{id}/submit"), form)
                .await
                .status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let status = t.await.unwrap();
        assert!([303, 401, 409, 429].contains(&status), "{status}");
        ok += usize::from(status == 303);
    }
    assert_eq!(ok, 1);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM incoming WHERE kind = 'request'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_form_is_refused_with_reasons_and_sends_nothing() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut agent = Browser::signed_in(&base, AGENT).await;
    let eleven = (1..=11)
        .map(|i| format!("Item {i}"))
        .collect::<Vec<_>>()
        .join("\n");
    let cases: Vec<(&str, String, &str)> = vec![
        ("items", String::new(), "List at least one document"),
        ("items", eleven, "at most 10 documents"),
        ("kind", "exe".to_owned(), "Choose accepted file types"),
        ("max_mib", "0".to_owned(), "Enter the largest upload in MiB"),
        (
            "max_mib",
            "999999".to_owned(),
            "Enter the largest upload in MiB",
        ),
        (
            "recipient",
            "not an address".to_owned(),
            "Enter the customer",
        ),
    ];
    for (field, value, expected) in cases {
        let mut fields = request_fields();
        fields.retain(|(k, _)| *k != field);
        fields.push((field, value.as_str()));
        let r = send_request(&mut agent, &fields).await;
        assert_eq!(r.status, 422, "{field}={value}: {}", r.body);
        assert!(r.body.contains(expected), "{field}={value}: {}", r.body);
    }
    let mut fields = request_fields();
    fields.retain(|(k, _)| *k != "kind");
    let r = send_request(&mut agent, &fields).await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Choose at least one accepted file type"));
    assert_eq!(count(&app, "SELECT COUNT(*) FROM requests").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM messages").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_takes_no_upload() {
    let env = TestEnv::new().await;
    let (app, clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut agent = Browser::signed_in(&base, AGENT).await;
    let id = composed_id(&send_request(&mut agent, &request_fields()).await).unwrap();
    let link = fresh_link(&app, id).await;
    let mut customer = verify(&base, &link).await;
    let csrf = customer.csrf(&format!("/pickup/{id}")).await;
    // Within the session's idle time: the expiry is what ends it.
    let now = app.clock.now();
    app.deliveries
        .extend(sealpost::audit::Actor::Cli, id, now + 60, None)
        .await
        .unwrap();
    clock.advance(61);
    let before = stored(&app, &env).await;
    let r = customer
        .post_multipart(
            &format!("/pickup/{id}/submit"),
            upload_form(
                &csrf,
                "",
                &[(0, "id.png", &png(1, 1000)), (1, "p.pdf", &pdf(1, 1000))],
            ),
        )
        .await;
    assert_eq!(r.status, 410, "{}", r.body);
    assert_eq!(stored(&app, &env).await, before);
}

/// Canaries in a request and its submission (the customer's address, the
/// instructions, an item's name, the note, a file's name and content, a
/// refused file's name) appear nowhere: not in the database, the blobs,
/// the real binary's debug log or any email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_or_submission_data_at_rest_in_logs_or_mail() {
    use crate::support::canaries::assert_nothing_leaked;
    const ADDRESS: &str = "canary-req-77d2@example.com";
    const INSTRUCTIONS: &str = "CANARY-INSTRUCTIONS-5b0e send your papers";
    const ITEM: &str = "CANARY-ITEM-c4a9 passport";
    const NOTE: &str = "CANARY-NOTE-92fe my tax id";
    const FILE: &str = "CANARY-SUBFILE-0d3c.pdf";
    const CONTENT: &str = "CANARY-SUB-CONTENT-e81a";
    const REFUSED: &str = "CANARY-SUBREFUSED-7f60.pdf";
    let env = TestEnv::new().await;
    let app = env.app().await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut serve = crate::support::serve::Serve::start(&env, &[("SEALPOST_LOG", "debug")]);
    let base = serve.base.clone();
    let mut agent = Browser::signed_in(&base, AGENT).await;
    let mut fields = request_fields();
    fields.retain(|(k, _)| !["recipient", "body", "items"].contains(k));
    fields.extend([
        ("recipient", ADDRESS),
        ("body", INSTRUCTIONS),
        ("items", ITEM),
    ]);
    let r = send_request(&mut agent, &fields).await;
    let id = composed_id(&r).unwrap_or_else(|| panic!("{}", r.body));
    let link = fresh_link(&app, id).await;
    let mut customer = verify(&base, &link).await;
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00".to_vec();
    exe.extend(bytes(1000, 5));
    let r = upload(&mut customer, id, NOTE, &[(0, REFUSED, &exe)]).await;
    assert_eq!(r.status, 422);
    let mut content = b"%PDF-1.7\n".to_vec();
    content.extend_from_slice(CONTENT.as_bytes());
    let r = upload(&mut customer, id, NOTE, &[(0, FILE, &content)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let submission = app
        .requests
        .get(id)
        .await
        .unwrap()
        .unwrap()
        .submission
        .unwrap();
    let page = agent.get(&format!("/messages/{id}")).await;
    assert!(
        page.body.contains(ITEM) && page.body.contains(FILE),
        "{}",
        page.body
    );
    let page = agent.get(&format!("/inbox/{submission}")).await;
    assert!(page.body.contains(NOTE), "the note is there");
    assert_eq!(
        agent
            .download(&format!("/inbox/{submission}/files/1"))
            .await,
        content
    );
    let mut mails = dev_mail(&app, &mut agent, AGENT).await;
    mails.extend(dev_mail(&app, &mut agent, ADDRESS).await);
    assert_eq!(mails.len(), 2, "the link and the alert were sent");
    serve.sigterm();
    serve.wait_exit(std::time::Duration::from_secs(30));

    let canaries = [ADDRESS, INSTRUCTIONS, ITEM, NOTE, FILE, CONTENT, REFUSED];
    assert_nothing_leaked(&env, &app, &serve, &mails, &canaries, "/pickup/{id}/submit").await;
}

/// An administrator's list of accepted kinds bounds requests: the form
/// refuses a kind the organisation does not accept, and a request sent
/// before the list was narrowed accepts only what is still allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organisation_list_of_file_kinds_bounds_requests() {
    use sealpost::filetype::FileKind;
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut agent = Browser::signed_in(&base, AGENT).await;
    // Sent while PNG is accepted.
    let id = composed_id(&send_request(&mut agent, &request_fields()).await).unwrap();
    let mut settings = app.settings.load().await.unwrap();
    settings.accepted_kinds = vec![FileKind::Pdf];
    app.settings
        .save(sealpost::audit::Actor::Cli, &settings)
        .await
        .unwrap();

    let page = agent.get("/requests/new").await;
    assert!(page.body.contains("value=\"pdf\""));
    assert!(
        !page.body.contains("value=\"png\""),
        "only what is accepted is offered"
    );
    let r = send_request(&mut agent, &request_fields()).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("PNG image files are not accepted"),
        "{}",
        r.body
    );

    let link = fresh_link(&app, id).await;
    let mut customer = verify(&base, &link).await;
    let page = customer.get(&format!("/pickup/{id}")).await;
    assert!(page.body.contains("Accepted: PDF."), "{}", page.body);
    let before = stored(&app, &env).await;
    let r = upload(
        &mut customer,
        id,
        "",
        &[(0, "id.png", &png(1, 5000)), (1, "p.pdf", &pdf(2, 5000))],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("Accepted: PDF. Nothing was sent."),
        "{}",
        r.body
    );
    assert_eq!(stored(&app, &env).await, before);
}
