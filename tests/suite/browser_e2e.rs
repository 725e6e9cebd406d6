//! The whole loop in a real headless Chromium: an agent signs in and sends
//! a message with an attachment; the customer opens the link, verifies,
//! reads the body and downloads the file, byte for byte.

use std::sync::Arc;

use sealpost::app::App;
use sealpost::staff::Role;

use crate::support::env::TestEnv;
use crate::support::files::bytes;
use crate::support::http::{PASSWORD, create_staff, serve};
use crate::support::smtp::{SmtpServer, header, parts};
use crate::support::webdriver::Chrome;

/// An app sending through a real SMTP server, served, with the agent.
async fn with_smtp(env: &TestEnv) -> (SmtpServer, App, String) {
    let smtp = SmtpServer::start();
    let mut vars = env.env_vars();
    vars.push(("SEALPOST_SMTP_URL".to_owned(), smtp.url()));
    let config = sealpost::config::Config::load(None, vars).unwrap();
    let clock = sealpost::clock::ManualClock::new(crate::support::env::now());
    let app = App::open_with_clock(config, Arc::new(clock)).await.unwrap();
    let base = serve(app.clone()).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    (smtp, app, base)
}

/// The agent signs in through the form and lands on the sent list.
async fn agent_signs_in(chrome: &mut Chrome, base: &str) {
    chrome.goto(&format!("{base}/sign-in")).await;
    chrome.type_into("#email", "agent@example.com").await;
    chrome.type_into("#password", PASSWORD).await;
    chrome.click("button[type=submit]").await;
    chrome.wait_for("sent messages").await;
}

/// Sends what the outbox holds and returns the text of the newest email to `to`.
async fn next_mail(app: &App, smtp: &SmtpServer, to: &str) -> String {
    app.outbox.run_once().await.unwrap();
    let raw = smtp
        .accepted()
        .into_iter()
        .rev()
        .find(|m| header(m, "To").is_some_and(|t| t.contains(to)))
        .expect("an email");
    parts(&raw).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sends_and_customer_picks_up_in_chromium() {
    let env = TestEnv::new().await;
    let (smtp, app, base) = with_smtp(&env).await;
    let downloads = tempfile::tempdir().unwrap();
    let upload = env.dir.path().join("Steuerbescheid 2025.pdf");
    let data = bytes(1_500_000, 42);
    std::fs::write(&upload, &data).unwrap();

    let mut chrome = Chrome::start(downloads.path()).await;
    // The agent signs in and composes.
    agent_signs_in(&mut chrome, &base).await;
    chrome.goto(&format!("{base}/compose")).await;
    chrome.type_into("#recipient", "customer@example.org").await;
    chrome
        .type_into("#body", "Hello,\nyour tax assessment is attached.")
        .await;
    // The default verification: a code by email.
    chrome
        .type_into("#attachments", &upload.display().to_string())
        .await;
    chrome
        .click("form[action='/compose'] button[type=submit]")
        .await;
    chrome.wait_for("Encrypted and queued").await;
    // The customer's email, read from the SMTP server.
    let link = pickup_link(&app, &smtp, &base).await;

    // The customer, in a fresh browser.
    chrome.quit().await;
    let mut chrome = Chrome::start(downloads.path()).await;
    chrome.goto(&link).await;
    chrome.wait_for("You have a secure message").await;
    chrome.click("#send-code").await;
    chrome.wait_for("We sent a 6-digit code").await;
    let mail = next_mail(&app, &smtp, "customer@example.org").await;
    let code: String = mail
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("code in the email")
        .to_owned();
    chrome.type_into("#code", &code).await;
    chrome.click("#open").await;
    let page = chrome.wait_for("Your message").await;
    assert!(page.contains("your tax assessment is attached."));
    assert!(
        chrome.url().await.contains("/pickup/"),
        "the link is not in the address bar any more"
    );
    chrome.click("#attachments a").await;
    let target = downloads.path().join("Steuerbescheid 2025.pdf");
    for _ in 0..100 {
        if target.exists() && std::fs::metadata(&target).unwrap().len() == data.len() as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read(&target).unwrap(),
        data,
        "downloaded bytes match"
    );
    chrome.quit().await;
}

/// The newest pickup link in the customer's mail, made absolute.
async fn pickup_link(app: &App, smtp: &SmtpServer, base: &str) -> String {
    let mail = next_mail(app, smtp, "customer@example.org").await;
    let at = mail.find("/p/").expect("link in the email");
    let token: String = mail[at + 3..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!("{base}/p/{token}")
}

/// The customer opens `link` in a fresh browser and verifies with the
/// emailed code.
async fn customer_opens(
    app: &App,
    smtp: &SmtpServer,
    link: &str,
    downloads: &std::path::Path,
) -> Chrome {
    let mut chrome = Chrome::start(downloads).await;
    chrome.goto(link).await;
    chrome.wait_for("You have a secure message").await;
    chrome.click("#send-code").await;
    chrome.wait_for("We sent a 6-digit code").await;
    let mail = next_mail(app, smtp, "customer@example.org").await;
    let code: String = mail
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("code in the email")
        .to_owned();
    chrome.type_into("#code", &code).await;
    chrome.click("#open").await;
    chrome.wait_for("Your message").await;
    chrome
}

async fn downloaded(path: &std::path::Path, len: usize) -> Vec<u8> {
    for _ in 0..100 {
        if path.exists() && std::fs::metadata(path).unwrap().len() == len as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_replies_securely_and_the_agent_answers_in_chromium() {
    let env = TestEnv::new().await;
    let (smtp, app, base) = with_smtp(&env).await;
    let downloads = tempfile::tempdir().unwrap();
    let payslip = env.dir.path().join("Lohnabrechnung Mai.pdf");
    let mut payslip_data = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    payslip_data.extend(bytes(700_000, 7));
    std::fs::write(&payslip, &payslip_data).unwrap();
    let photo = env.dir.path().join("passport-photo.png");
    let mut photo_data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    photo_data.extend(bytes(300_000, 8));
    std::fs::write(&photo, &photo_data).unwrap();

    // The agent sends a message; "allow a reply" is ticked by default.
    let mut chrome = Chrome::start(downloads.path()).await;
    agent_signs_in(&mut chrome, &base).await;
    chrome.goto(&format!("{base}/compose")).await;
    // The progress script ran (its hash is in the CSP): the form goes
    // through it from here on.
    chrome.wait_for("data-enhanced=\"1\"").await;
    chrome.type_into("#recipient", "customer@example.org").await;
    chrome
        .type_into("#body", "Please send your payslip and a photo.")
        .await;
    chrome
        .click("form[action='/compose'] button[type=submit]")
        .await;
    chrome.wait_for("Encrypted and queued").await;
    chrome.quit().await;

    // The customer verifies and replies with text and two files.
    let link = pickup_link(&app, &smtp, &base).await;
    let mut customer = customer_opens(&app, &smtp, &link, downloads.path()).await;
    customer.wait_for("data-enhanced=\"1\"").await;
    customer
        .type_into("#reply-body", "Here they are. Account 4711-0815.")
        .await;
    customer
        .type_into(
            "#reply-files",
            &format!("{}\n{}", payslip.display(), photo.display()),
        )
        .await;
    customer.click("#send-reply").await;
    let page = customer
        .wait_for("Your reply was encrypted and sent securely")
        .await;
    assert!(
        page.contains("Account 4711-0815."),
        "the reply in the conversation"
    );
    customer.quit().await;

    // The agent's alert, as the SMTP server got it: a link, no customer data.
    app.outbox.run_once().await.unwrap();
    let raw = smtp
        .accepted()
        .into_iter()
        .rev()
        .find(|m| header(m, "To").is_some_and(|t| t.contains("agent@example.com")))
        .expect("an alert to the agent");
    let (text, html) = parts(&raw);
    let head = String::from_utf8_lossy(&raw);
    let head = head.split("\r\n\r\n").next().unwrap_or_default();
    for secret in [
        "customer@example.org",
        "4711-0815",
        "Lohnabrechnung",
        "passport-photo",
        "payslip",
    ] {
        for part in [&text, &html, head] {
            assert!(!part.contains(secret), "{secret} in the alert: {part}");
        }
    }
    let at = text.find("/inbox/").expect("a link to the reply");
    let inbox_path: String = text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    // The agent reads it, downloads both files byte-identical, answers.
    let mut chrome = Chrome::start(downloads.path()).await;
    agent_signs_in(&mut chrome, &base).await;
    chrome.goto(&format!("{base}{inbox_path}")).await;
    let page = chrome.wait_for("Reply received").await;
    assert!(page.contains("customer@example.org"));
    assert!(page.contains("Here they are. Account 4711-0815."));
    chrome.click("#incoming-files li:nth-child(1) a").await;
    assert_eq!(
        downloaded(
            &downloads.path().join("Lohnabrechnung Mai.pdf"),
            payslip_data.len()
        )
        .await,
        payslip_data
    );
    chrome.click("#incoming-files li:nth-child(2) a").await;
    assert_eq!(
        downloaded(
            &downloads.path().join("passport-photo.png"),
            photo_data.len()
        )
        .await,
        photo_data
    );
    chrome.click("#answer").await;
    chrome.wait_for("Answer in the conversation").await;
    chrome
        .type_into("#body", "Thank you, both files arrived.")
        .await;
    chrome
        .click("form[action='/compose'] button[type=submit]")
        .await;
    let page = chrome.wait_for("Encrypted and queued").await;
    assert!(
        page.contains("id=\"conversation\""),
        "the conversation is listed"
    );
    chrome.quit().await;

    // The customer's new link shows the whole conversation.
    let link = pickup_link(&app, &smtp, &base).await;
    let customer = customer_opens(&app, &smtp, &link, downloads.path()).await;
    let page = customer.source().await;
    assert!(page.contains("Thank you, both files arrived."));
    assert!(page.contains("Please send your payslip and a photo."));
    assert!(page.contains("Here they are. Account 4711-0815."));
    assert!(page.contains("Lohnabrechnung Mai.pdf"));
    customer.quit().await;
}

/// Compose through the progress script shows the answer page itself, so an
/// access code generated for the message (shown once) is still shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_through_the_progress_script_still_shows_a_generated_code() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    let base = serve(app.clone()).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let downloads = tempfile::tempdir().unwrap();
    let upload = env.dir.path().join("contract.pdf");
    std::fs::write(&upload, bytes(2_000_000, 3)).unwrap();
    let mut chrome = Chrome::start(downloads.path()).await;
    agent_signs_in(&mut chrome, &base).await;
    chrome.goto(&format!("{base}/compose")).await;
    chrome.wait_for("data-enhanced=\"1\"").await;
    chrome.type_into("#recipient", "customer@example.org").await;
    chrome.type_into("#body", "Your contract.").await;
    chrome.click("input[name=method][value=access_code]").await;
    chrome
        .type_into("#attachments", &upload.display().to_string())
        .await;
    chrome
        .click("form[action='/compose'] button[type=submit]")
        .await;
    let page = chrome.wait_for("generated-access-code").await;
    assert!(page.contains("Encrypted and queued"));
    assert!(
        chrome.url().await.contains("/messages/"),
        "the address bar shows the message"
    );
    chrome.quit().await;
}

/// Every accepted email to `to` so far, after sending what the outbox holds.
async fn received(app: &App, smtp: &SmtpServer, to: &str) -> Vec<Vec<u8>> {
    app.outbox.run_once().await.unwrap();
    smtp.accepted()
        .into_iter()
        .filter(|m| header(m, "To").is_some_and(|t| t.contains(to)))
        .collect()
}

/// The header lines of a raw email, unfolded, and its text and HTML parts.
fn email_parts(raw: &[u8]) -> (Vec<String>, String, String) {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let lines = head
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .lines()
        .map(str::to_owned)
        .collect();
    let (plain, html) = parts(raw);
    (lines, plain, html)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_requests_two_documents_and_the_customer_uploads_them_in_chromium() {
    const CUSTOMER: &str = "customer@example.org";
    const CODE: &str = "Sesame-4711";
    const INSTRUCTIONS: &str = "For your mortgage application, please send these.";
    const NOTE: &str = "The payslip is for October.";
    let env = TestEnv::new().await;
    let (smtp, app, base) = with_smtp(&env).await;
    let agent_downloads = tempfile::tempdir().unwrap();
    let customer_downloads = tempfile::tempdir().unwrap();
    let photo = env.dir.path().join("passport scan.png");
    let mut photo_data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    photo_data.extend(bytes(250_000, 21));
    std::fs::write(&photo, &photo_data).unwrap();
    let payslip = env.dir.path().join("Gehalt Oktober.pdf");
    let payslip_data = crate::replies::pdf(22, 600_000);
    std::fs::write(&payslip, &payslip_data).unwrap();

    // The agent asks for two documents, verification by an access code
    // they type, every file kind (the default).
    let mut agent = Chrome::start(agent_downloads.path()).await;
    agent_signs_in(&mut agent, &base).await;
    agent.goto(&format!("{base}/requests/new")).await;
    let form = agent.wait_for("Send the request").await;
    let kinds: Vec<&str> = form.split("name=\"kind\"").skip(1).collect();
    assert!(kinds.len() >= 2, "file kinds to choose from");
    for kind in kinds {
        let input = &kind[..kind.find('>').expect("the input's end")];
        assert!(input.contains("checked"), "every kind ticked: {input}");
    }
    agent.type_into("#recipient", CUSTOMER).await;
    agent.type_into("#title", "Mortgage 4711").await;
    agent.type_into("#body", INSTRUCTIONS).await;
    agent.type_into("#items", "Photo ID\nLast payslip").await;
    // The first method (email code) is ticked by default: swap it for
    // the access code.
    agent.click("input[name=method][value=email_code]").await;
    agent.click("input[name=method][value=access_code]").await;
    agent.type_into("#access_code", CODE).await;
    agent
        .click("form[action='/requests/new'] button[type=submit]")
        .await;
    let page = agent.wait_for("Encrypted and queued").await;
    assert!(
        !page.contains("generated-access-code"),
        "the typed code is used"
    );
    assert!(page.contains("id=\"request-items\""), "the request's page");
    let url = agent.url().await;
    let id: String = url[url.find("/messages/").expect("the request's page") + 10..]
        .chars()
        .take_while(|c| *c != '?' && *c != '#')
        .collect();

    // The customer's email, as the SMTP server got it: a link, nothing of
    // the request, the address only in To.
    let mails = received(&app, &smtp, CUSTOMER).await;
    assert_eq!(mails.len(), 1, "one email to the customer");
    let (head, text, html) = email_parts(&mails[0]);
    let subject = header(&mails[0], "Subject").expect("a subject");
    assert!(
        subject.starts_with("Secure document request from"),
        "{subject}"
    );
    assert!(
        text.contains("You are asked to send documents securely"),
        "{text}"
    );
    let headers = head
        .iter()
        .filter(|l| !l.to_ascii_lowercase().starts_with("to:"))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [
        CUSTOMER,
        INSTRUCTIONS,
        "mortgage",
        "Mortgage",
        "Photo ID",
        "payslip",
    ] {
        for part in [&headers, &text, &html] {
            assert!(!part.contains(secret), "{secret} in the email: {part}");
        }
    }
    let at = text.find("/p/").expect("link in the email");
    let token: String = text[at + 3..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(
        html.contains(&format!("/p/{token}")),
        "the same link in HTML"
    );
    let link = format!("{base}/p/{token}");

    // The customer opens it, gives the access code, sees both items.
    let mut customer = Chrome::start(customer_downloads.path()).await;
    customer.goto(&link).await;
    // (The landing's wording may differ for a request: wait for its form.)
    let landing = customer.wait_for("id=\"verify-form\"").await;
    assert!(!landing.contains("id=\"send-code\""), "no email code asked");
    for secret in [INSTRUCTIONS, "Photo ID", "Last payslip"] {
        assert!(!landing.contains(secret), "{secret} before verifying");
    }
    customer.type_into("#access_code", CODE).await;
    customer.click("#open").await;
    let page = customer.wait_for("id=\"request-form\"").await;
    assert!(
        customer.url().await.ends_with(&format!("/pickup/{id}")),
        "the link is not in the address bar any more"
    );
    assert!(page.contains(INSTRUCTIONS));
    assert!(page.contains("<label for=\"item-0\">Photo ID</label>"));
    assert!(page.contains("<label for=\"item-1\">Last payslip</label>"));
    // The progress script sends the form from here on.
    assert!(!page.contains("id=\"reply-form\""));
    customer.wait_for("data-enhanced=\"1\"").await;
    customer.type_into("#request-note", NOTE).await;
    customer
        .type_into("#item-0", &photo.display().to_string())
        .await;
    customer
        .type_into("#item-1", &payslip.display().to_string())
        .await;
    customer.click("#submit-documents").await;
    customer.wait_for("Your documents were sent securely").await;
    assert!(
        customer.url().await.ends_with("/pickup/sent"),
        "the address bar shows the answer"
    );

    // The agent's alert, as the SMTP server got it: a link, no customer data.
    let mails = received(&app, &smtp, "agent@example.com").await;
    assert_eq!(mails.len(), 1, "one alert to the agent");
    let (head, text, html) = email_parts(&mails[0]);
    assert_eq!(
        header(&mails[0], "Subject").as_deref(),
        Some("Sealpost: requested documents arrived")
    );
    let headers = head.join("\n");
    for secret in [
        CUSTOMER,
        "Photo ID",
        "Last payslip",
        "payslip",
        "passport scan",
        "Gehalt Oktober",
        NOTE,
        "October",
        "Mortgage",
    ] {
        for part in [&headers, &text, &html] {
            assert!(!part.contains(secret), "{secret} in the alert: {part}");
        }
    }
    let at = text.find("/inbox/").expect("a link to the submission");
    let submission: String = text[at + 7..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    // The request's page: received, each file under its item, both
    // downloading byte-identical.
    agent.goto(&format!("{base}/messages/{id}")).await;
    let page = agent
        .wait_for("id=\"status\">Documents received</span>")
        .await;
    let items = &page[page.find("id=\"request-items\"").expect("the checklist")..];
    let items = &items[..items.find("</ol>").expect("the checklist's end")];
    let photo_at = items.find("Photo ID").expect("first item");
    let scan_at = items.find("passport scan.png").expect("the photo");
    let payslip_at = items.find("Last payslip").expect("second item");
    let gehalt_at = items.find("Gehalt Oktober.pdf").expect("the payslip");
    assert!(
        photo_at < scan_at && scan_at < payslip_at && payslip_at < gehalt_at,
        "each file under its item: {items}"
    );
    assert!(items.contains(&format!("href=\"/inbox/{submission}/files/")));
    agent.click("#request-items > li:nth-child(1) a").await;
    assert_eq!(
        downloaded(
            &agent_downloads.path().join("passport scan.png"),
            photo_data.len()
        )
        .await,
        photo_data
    );
    agent.click("#request-items > li:nth-child(2) a").await;
    assert_eq!(
        downloaded(
            &agent_downloads.path().join("Gehalt Oktober.pdf"),
            payslip_data.len()
        )
        .await,
        payslip_data
    );
    agent.quit().await;

    // The link takes no more uploads: the customer's session ended, and
    // the emailed link was used.
    customer.goto(&format!("{base}/pickup/{id}")).await;
    let page = customer.wait_for("Your secure session has ended").await;
    assert!(!page.contains("id=\"request-form\""));
    assert!(!page.contains("id=\"item-0\""));
    customer.goto(&link).await;
    let page = customer.wait_for("This link has already been used").await;
    assert!(!page.contains("id=\"verify-form\""));
    assert!(!page.contains("id=\"request-form\""));
    customer.quit().await;
}

/// Runs the `sealpost` binary (an API command) with `args`, the token in
/// SEALPOST_TOKEN when given; (exit code, stdout, stderr).
async fn sealpost_cli(args: Vec<String>, token: Option<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"));
        cmd.args(&args)
            .env_remove("SEALPOST_TOKEN")
            .env_remove("SEALPOST_SERVER");
        if let Some(t) = token {
            cmd.env("SEALPOST_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Issue 14: `sealpost send` against a running server and a real SMTP
/// server, the customer's pickup in Chromium, then `sealpost status`
/// says "downloaded". Exit codes tell scripts what went wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealpost_send_then_pickup_in_chromium_then_status_says_downloaded() {
    let env = TestEnv::new().await;
    let (smtp, app, base) = with_smtp(&env).await;
    let agent = app
        .accounts
        .find(&sealpost::staff::StaffEmail::parse("agent@example.com").unwrap())
        .await
        .unwrap();
    let (_, token) = app
        .tokens
        .create(
            sealpost::audit::Actor::Cli,
            sealpost::staff::tokens::NewApiToken {
                owner: agent.id,
                name: "helpdesk".to_owned(),
                scopes: sealpost::staff::tokens::Scopes::parse_list("messages:send,messages:read")
                    .unwrap(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&token).to_owned();
    let token_file = env.dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let body_file = env.dir.path().join("body.txt");
    std::fs::write(&body_file, "Your contract is attached.\n").unwrap();
    let attachment = env.dir.path().join("Vertrag 2026.pdf");
    let data = bytes(900_000, 11);
    std::fs::write(&attachment, &data).unwrap();
    let path = |p: &std::path::Path| p.display().to_string();

    let (code, out, err) = sealpost_cli(
        vec![
            "send".into(),
            "--server".into(),
            base.clone(),
            "--token-file".into(),
            path(&token_file),
            "--to".into(),
            "customer@example.org".into(),
            "--body-file".into(),
            path(&body_file),
            "--file".into(),
            path(&attachment),
            "--expires".into(),
            "7d".into(),
            "--json".into(),
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(!out.contains(&token) && !err.contains(&token));

    // The customer picks it up in the browser and downloads the file.
    let downloads = tempfile::tempdir().unwrap();
    let link = pickup_link(&app, &smtp, &base).await;
    let mut customer = customer_opens(&app, &smtp, &link, downloads.path()).await;
    let page = customer.source().await;
    assert!(page.contains("Your contract is attached."));
    customer.click("#attachments a").await;
    let got = downloaded(&downloads.path().join("Vertrag 2026.pdf"), data.len()).await;
    assert_eq!(got, data, "downloaded bytes match");
    customer.quit().await;

    // `status`, with the token from the environment this time.
    let (code, out, err) = sealpost_cli(
        vec!["status".into(), id.clone(), "--server".into(), base.clone()],
        Some(token.clone()),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "downloaded", "{err}");
    assert!(err.contains("download"), "{err}");

    // Exit codes: no such message 4, no token 3, a bad token 3, a known
    // fact without its file 1, a refused request 5.
    let status_of = |id: String| vec!["status".into(), id, "--server".into(), base.clone()];
    let (code, _, err) = sealpost_cli(
        status_of(uuid::Uuid::new_v4().to_string()),
        Some(token.clone()),
    )
    .await;
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = sealpost_cli(status_of(id.clone()), None).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("SEALPOST_TOKEN"), "{err}");
    let (code, _, err) = sealpost_cli(status_of(id.clone()), Some("sp_live_nope".into())).await;
    assert_eq!(code, 3, "{err}");
    let send_to = |to: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "send".into(),
            "--server".into(),
            base.clone(),
            "--to".into(),
            to.into(),
            "--body-file".into(),
            path(&body_file),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let (code, _, err) = sealpost_cli(
        send_to("customer@example.org", &["--verify", "known-fact"]),
        Some(token.clone()),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = sealpost_cli(send_to("not an address", &[]), Some(token.clone())).await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("`to`"), "{err}");
}
