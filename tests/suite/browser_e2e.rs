//! The whole loop in a real headless Chromium: an agent signs in and sends
//! a message with an attachment; the customer opens the link, verifies,
//! reads the body and downloads the file, byte for byte.

use sealpost::staff::Role;
use secrecy::ExposeSecret;

use crate::browser::{PASSWORD, create_staff, portal};
use crate::common::{TestEnv, bytes, runtime};
use crate::webdriver::Chrome;

#[test]
fn agent_sends_and_customer_picks_up_in_chromium() {
    let rt = runtime();
    rt.block_on(async {
        let env = TestEnv::new().await;
        let (app, _clock, base) = portal(&env, crate::common::now()).await;
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
        // Switch from the email code (default) to an access code.
        chrome.click("input[value=email_code]").await;
        chrome.click("input[value=access_code]").await;
        chrome.type_into("#access_code", "Phone-Code-2468").await;
        chrome
            .type_into("#attachments", &upload.display().to_string())
            .await;
        chrome
            .click("form[action='/compose'] button[type=submit]")
            .await;
        chrome.wait_for("Encrypted and queued").await;
        let page_url = chrome.url().await;
        let id: sealpost::vault::MessageId = page_url
            .split("/messages/")
            .nth(1)
            .unwrap()
            .trim_end_matches("?sent=1")
            .parse()
            .unwrap();

        // The link (what the email carries).
        let mut tx = app.db.begin().await.unwrap();
        let link = app
            .deliveries
            .resend(&mut tx, sealpost::audit::Actor::Cli, id, None, &base)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        // The customer, in a fresh browser.
        chrome.quit().await;
        let mut chrome = Chrome::start(downloads.path()).await;
        chrome.goto(link.expose_secret()).await;
        chrome.wait_for("You have a secure message").await;
        chrome.type_into("#access_code", "Phone-Code-2468").await;
        chrome.click("#open").await;
        let page = chrome.wait_for("Your message").await;
        assert!(page.contains("your tax assessment is attached."));
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
    });
}
