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
    let smtp = SmtpServer::start();
    let mut vars = env.env_vars();
    vars.push(("SEALPOST_SMTP_URL".to_owned(), smtp.url()));
    let config = sealpost::config::Config::load(None, vars).unwrap();
    let clock = sealpost::clock::ManualClock::new(crate::support::env::now());
    let app = App::open_with_clock(config, Arc::new(clock)).await.unwrap();
    let base = serve(app.clone()).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let downloads = tempfile::tempdir().unwrap();
    let upload = env.dir.path().join("Steuerbescheid 2025.pdf");
    let data = bytes(1_500_000, 42);
    std::fs::write(&upload, &data).unwrap();

    let mut chrome = Chrome::start(downloads.path()).await;
    // The agent signs in and composes.
    chrome.goto(&format!("{base}/sign-in")).await;
    chrome.type_into("#email", "agent@example.com").await;
    chrome.type_into("#password", PASSWORD).await;
    chrome.click("button[type=submit]").await;
    chrome.wait_for("sent messages").await;
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
    let mail = next_mail(&app, &smtp, "customer@example.org").await;
    let at = mail.find("/p/").expect("link in the email");
    let token: String = mail[at + 3..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let link = format!("{base}/p/{token}");

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
