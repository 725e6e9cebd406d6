//! The whole loop over HTTP with a real SMTP server: compose → the pickup
//! email → landing → (code email) → verification → message and download,
//! for each verification method; limits on codes; alerts to the sender;
//! and no customer data in any email's raw bytes.

use std::sync::Arc;

use sealpost::app::App;
use sealpost::clock::ManualClock;
use sealpost::deliveries::Status;
use sealpost::staff::Role;
use sealpost::vault::MessageId;

use crate::support::START;
use crate::support::compose::Compose;
use crate::support::env::TestEnv;
use crate::support::files::bytes;
use crate::support::http::{Browser, create_staff, serve};
use crate::support::mail::{link_path, six_digits};
use crate::support::smtp::{SmtpServer, header, parts};

const CUSTOMER: &str = "canary.customer.hydra@example.org";
const BODY: &str = "Canary-Body-Centauri: your new PIN letter";
const TITLE: &str = "Canary-Title-Phoenix";
const PHONE: &str = "+44 20 7946 0123";
const FILE: &str = "Canary-File-Sirius-PIN.pdf";
/// Customer data no email may carry. (The customer's own address is of
/// course in the To header of the emails to them, and nowhere else.)
const CANARIES: [&str; 4] = [BODY, TITLE, PHONE, FILE];

struct Loop {
    app: App,
    clock: ManualClock,
    base: String,
    smtp: SmtpServer,
    staff: Browser,
}

async fn start(env: &TestEnv) -> Loop {
    let smtp = SmtpServer::start();
    let mut vars = env.env_vars();
    vars.push(("SEALPOST_SMTP_URL".to_owned(), smtp.url()));
    let clock = ManualClock::new(START);
    let config = sealpost::config::Config::load(None, vars).unwrap();
    let app = App::open_with_clock(config, Arc::new(clock.clone()))
        .await
        .unwrap();
    let base = serve(app.clone()).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let staff = Browser::signed_in(&base, "agent@example.com").await;
    Loop {
        app,
        clock,
        base,
        smtp,
        staff,
    }
}

impl Loop {
    async fn compose(
        &mut self,
        methods: &[&str],
        access: &str,
        fact: &str,
        file: &[u8],
    ) -> MessageId {
        Compose::to(CUSTOMER)
            .phone(PHONE)
            .title(TITLE)
            .body(BODY)
            .expiry_hours("72")
            .methods(methods)
            .access_code(access)
            .known_fact(fact)
            .attach(FILE, file)
            .send(&mut self.staff)
            .await
    }

    /// Runs the outbox and returns the decoded text of the emails accepted
    /// since `seen` emails, addressed to `to`.
    async fn new_mail(&self, seen: &mut usize, to: &str) -> Vec<String> {
        self.app.outbox.run_once().await.unwrap();
        let all = self.smtp.accepted();
        let fresh = all[*seen..].to_vec();
        *seen = all.len();
        fresh
            .iter()
            .filter(|raw| header(raw, "To").is_some_and(|t| t.contains(to)))
            .map(|raw| parts(raw).0)
            .collect()
    }
}

fn assert_no_canaries_in_mail(smtp: &SmtpServer) {
    let all = smtp.attempts();
    assert!(!all.is_empty());
    for (raw, _) in &all {
        crate::support::canaries::assert_no_canaries("an email", raw, &CANARIES);
        let (text, html) = parts(raw);
        assert!(
            !text.contains(CUSTOMER) && !html.contains(CUSTOMER),
            "address in a body"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_verification_method_end_to_end_over_smtp() {
    let env = TestEnv::new().await;
    let mut l = start(&env).await;
    let mut seen = 0;
    // The agent wants to hear about first pickups.
    let page = l.staff.get("/account").await;
    let token = crate::support::http::input_value(&page.body, "csrf").unwrap();
    l.staff
        .post(
            "/account/alerts",
            &[("csrf", &token), ("pickup_alerts", "on")],
        )
        .await;

    let cases: [(&[&str], &str, &str); 4] = [
        (&["email_code"], "", ""),
        (&["access_code"], "Phone-Code-1357", ""),
        (&["known_fact"], "", "5566"),
        (&["email_code", "access_code"], "Phone-Code-2468", ""),
    ];
    for (n, (methods, access, fact)) in cases.into_iter().enumerate() {
        let file = bytes(200_000 + n, n as u64);
        let id = l.compose(methods, access, fact, &file).await;
        assert_eq!(
            l.app.deliveries.get(id).await.unwrap().stored_status,
            Status::Queued
        );
        let mails = l.new_mail(&mut seen, CUSTOMER).await;
        assert_eq!(mails.len(), 1, "one pickup email");
        assert_eq!(
            l.app.deliveries.get(id).await.unwrap().stored_status,
            Status::Emailed
        );
        let link = link_path(&mails[0]);

        let mut c = Browser::new(&l.base);
        assert_eq!(c.get(&link).await.status, 200);
        let mut fields: Vec<(&str, String)> = Vec::new();
        if methods.contains(&"email_code") {
            let r = c.post(&format!("{link}/code"), &[]).await;
            assert_eq!(r.status, 303);
            let page = c.get(r.location().unwrap()).await;
            assert!(
                page.body.contains("c•••@example.org"),
                "masked address shown"
            );
            let mails = l.new_mail(&mut seen, CUSTOMER).await;
            assert_eq!(mails.len(), 1, "one code email");
            fields.push(("code", six_digits(&mails[0])));
        }
        if !access.is_empty() {
            fields.push(("access_code", access.to_owned()));
        }
        if !fact.is_empty() {
            fields.push(("known_fact", fact.to_owned()));
        }
        let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = c.post(&format!("{link}/verify"), &form).await;
        assert_eq!(r.status, 303, "{methods:?}: {}", r.body);
        let page = c.get(&format!("/pickup/{id}")).await;
        assert!(page.body.contains(BODY), "{methods:?}");
        let dl = c.download(&format!("/pickup/{id}/files/1")).await;
        assert_eq!(dl, file, "{methods:?}");

        // The opted-in sender hears about it, without customer data.
        let alerts = l.new_mail(&mut seen, "agent@example.com").await;
        assert_eq!(alerts.len(), 1, "{methods:?}: first-pickup alert");
    }
    assert_no_canaries_in_mail(&l.smtp);
    for raw in l.smtp.accepted() {
        assert_eq!(
            header(&raw, "Auto-Submitted").as_deref(),
            Some("auto-generated")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_limits_lockout_and_unlock() {
    let env = TestEnv::new().await;
    let mut l = start(&env).await;
    let mut seen = 0;
    let id = l.compose(&["email_code"], "", "", b"limits").await;
    let link = link_path(&l.new_mail(&mut seen, CUSTOMER).await[0]);
    let mut c = Browser::new(&l.base);

    // Code 1: five wrong guesses void it, even for the right code.
    c.post(&format!("{link}/code"), &[]).await;
    let code1 = six_digits(&l.new_mail(&mut seen, CUSTOMER).await[0]);
    let wrong = if code1 == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        assert_eq!(
            c.post(&format!("{link}/verify"), &[("code", wrong)])
                .await
                .status,
            401
        );
    }
    assert_eq!(
        c.post(&format!("{link}/verify"), &[("code", &code1)])
            .await
            .status,
        401,
        "voided code"
    );
    // Code 2: a new code does not reset the failures (6 so far).
    c.post(&format!("{link}/code"), &[]).await;
    let code2 = six_digits(&l.new_mail(&mut seen, CUSTOMER).await[0]);
    let wrong = if code2 == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_eq!(l.app.deliveries.get(id).await.unwrap().failures, 6);
    for _ in 0..3 {
        assert_eq!(
            c.post(&format!("{link}/verify"), &[("code", wrong)])
                .await
                .status,
            401
        );
    }
    // The tenth failure locks the message; the right code is refused now.
    let r = c.post(&format!("{link}/verify"), &[("code", wrong)]).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        c.post(&format!("{link}/verify"), &[("code", &code2)])
            .await
            .status,
        403
    );
    assert_eq!(
        c.post(&format!("{link}/code"), &[]).await.status,
        403,
        "no codes while locked"
    );
    // The sender is told by a PII-free email.
    let alerts = l.new_mail(&mut seen, "agent@example.com").await;
    assert_eq!(alerts.len(), 1, "lockout alert");
    assert!(alerts[0].contains(&id.to_string()) || alerts[0].to_lowercase().contains("lock"));

    // Unlock: a fresh code works.
    let page = l.staff.get(&format!("/messages/{id}")).await;
    let token = crate::support::http::input_value(&page.body, "csrf").unwrap();
    assert_eq!(
        l.staff
            .post(&format!("/messages/{id}/unlock"), &[("csrf", &token)])
            .await
            .status,
        303
    );
    c.post(&format!("{link}/code"), &[]).await;
    let code3 = six_digits(&l.new_mail(&mut seen, CUSTOMER).await[0]);
    let r = c.post(&format!("{link}/verify"), &[("code", &code3)]).await;
    assert_eq!(r.status, 303, "{}", r.body);

    // At most 5 codes per message a day (3 used above).
    let id = l.compose(&["email_code"], "", "", b"daily").await;
    let _ = id;
    let link = link_path(&l.new_mail(&mut seen, CUSTOMER).await[0]);
    for _ in 0..5 {
        assert_eq!(c.post(&format!("{link}/code"), &[]).await.status, 303);
    }
    let r = c.post(&format!("{link}/code"), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(l.new_mail(&mut seen, CUSTOMER).await.len(), 5);
    // A day later codes flow again; an expired code (10 min) is refused.
    l.clock.advance(24 * 3600 + 1);
    assert_eq!(c.post(&format!("{link}/code"), &[]).await.status, 303);
    let code = six_digits(&l.new_mail(&mut seen, CUSTOMER).await[0]);
    l.clock.advance(11 * 60);
    assert_eq!(
        c.post(&format!("{link}/verify"), &[("code", &code)])
            .await
            .status,
        401
    );
    assert_no_canaries_in_mail(&l.smtp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_emails_a_new_link_and_the_old_one_dies() {
    let env = TestEnv::new().await;
    let mut l = start(&env).await;
    let mut seen = 0;
    let id = l
        .compose(&["access_code"], "Resend-Code-99", "", b"resend")
        .await;
    let old = link_path(&l.new_mail(&mut seen, CUSTOMER).await[0]);
    let page = l.staff.get(&format!("/messages/{id}")).await;
    let token = crate::support::http::input_value(&page.body, "csrf").unwrap();
    assert_eq!(
        l.staff
            .post(&format!("/messages/{id}/resend"), &[("csrf", &token)])
            .await
            .status,
        303
    );
    let new = link_path(&l.new_mail(&mut seen, CUSTOMER).await[0]);
    assert_ne!(old, new);
    let mut c = Browser::new(&l.base);
    assert_eq!(c.get(&old).await.status, 404);
    assert_eq!(c.get(&new).await.status, 200);
    assert_no_canaries_in_mail(&l.smtp);
}
