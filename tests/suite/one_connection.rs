//! No request waits for a second database connection while it holds one
//! (issue 11 §4, SECURITY.md B4). The proof: every main flow, staff and
//! customer, against an app whose pools have exactly one connection each
//! (the `Any` pool and the driver pool for sessions and the landing page).
//! A nested acquire waits for the connection its own caller holds, times
//! out after the short acquire timeout, and turns into a 500.

use std::sync::Arc;
use std::time::Duration;

use sealpost::app::App;
use sealpost::clock::ManualClock;
use sealpost::pickup::flow::LOCK_AFTER;
use sealpost::staff::Role;
use sealpost::store::NativePool;
use sealpost::vault::MessageId;

use crate::support::START;
use crate::support::compose::Compose;
use crate::support::env::TestEnv;
use crate::support::files::bytes;
use crate::support::http::{Browser, Resp, create_staff, dev_mail, input_value, link_in, serve};
use crate::support::mail::six_digits;

const ADMIN: &str = "admin@example.com";
const CUSTOMER: &str = "customer@example.org";

async fn one_connection_app(env: &TestEnv) -> (App, ManualClock, String) {
    let clock = ManualClock::new(START);
    let mut config = env.config();
    config.db_max_connections = 1;
    config.db_acquire_timeout = Duration::from_secs(2);
    let app = App::open_with_clock(config, Arc::new(clock.clone()))
        .await
        .unwrap();
    // Really one per pool kind.
    assert_eq!(app.db.pool().options().get_max_connections(), 1);
    let native = match app.db.native() {
        NativePool::Sqlite(p) => p.options().get_max_connections(),
        NativePool::Postgres(p) => p.options().get_max_connections(),
    };
    assert_eq!(native, 1);
    let base = serve(app.clone()).await;
    (app, clock, base)
}

/// Every step of a flow must succeed; a nested acquire shows up as a 500.
#[track_caller]
fn ok(step: &str, r: &Resp, expected: u16) {
    assert_eq!(r.status, expected, "{step}: {}", r.body);
}

async fn compose(staff: &mut Browser, methods: &[&str], file: &[u8]) -> MessageId {
    Compose::to(CUSTOMER)
        .title("One connection")
        .methods(methods)
        .access_code("One-Conn-77")
        .retention("shred")
        .attach("statement.pdf", file)
        .send(staff)
        .await
}

/// Posts a staff action form found on the message page.
async fn staff_action(staff: &mut Browser, id: MessageId, action: &str, extra: &[(&str, &str)]) {
    let token = staff.csrf(&format!("/messages/{id}")).await;
    let mut fields = vec![("csrf", token.as_str())];
    fields.extend_from_slice(extra);
    let r = staff
        .post(&format!("/messages/{id}/{action}"), &fields)
        .await;
    ok(action, &r, 303);
}

/// The codes in the verification-code emails among `mails`.
fn codes(mails: &[String]) -> Vec<String> {
    mails
        .iter()
        .filter(|m| m.contains("verification code"))
        .map(|m| six_digits(m))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_main_flow_works_with_one_connection_per_pool() {
    let env = TestEnv::new().await;
    let (app, clock, base) = one_connection_app(&env).await;
    create_staff(&app, ADMIN, Role::Admin).await;

    // Staff: sign-in, alerts on, settings saved.
    let mut staff = Browser::signed_in(&base, ADMIN).await;
    let token = staff.csrf("/account").await;
    let r = staff
        .post(
            "/account/alerts",
            &[("csrf", &token), ("pickup_alerts", "on")],
        )
        .await;
    ok("alerts", &r, 303);
    let token = staff.csrf("/admin/settings").await;
    let r = staff
        .post(
            "/admin/settings",
            &[
                ("csrf", &token),
                ("organisation", "One Connection Ltd"),
                ("support_line", "+44 20 7946 0000"),
                ("default_expiry_hours", "48"),
                ("size_limit_mib", "10"),
                ("method", "email_code"),
                ("method", "access_code"),
                ("method", "known_fact"),
            ],
        )
        .await;
    ok("settings save", &r, 303);
    ok("sent list", &staff.get("/sent").await, 200);

    // Compose with an attachment; the pickup email goes out.
    let file = bytes(200_000, 7);
    let id = compose(&mut staff, &["email_code", "access_code"], &file).await;
    ok(
        "message page",
        &staff.get(&format!("/messages/{id}")).await,
        200,
    );
    let mut customer = Browser::new(&base);
    let mails = dev_mail(&app, &mut customer, CUSTOMER).await;
    let link = mails
        .iter()
        .find_map(|m| link_in(m, "/p/"))
        .expect("the pickup email");

    // Customer: landing, a code, wrong answers up to the lock.
    ok("landing", &customer.get(&link).await, 200);
    ok("landing again", &customer.get(&link).await, 200);
    ok(
        "send code",
        &customer.post(&format!("{link}/code"), &[]).await,
        303,
    );
    for i in 1..=LOCK_AFTER {
        let r = customer
            .post(
                &format!("{link}/verify"),
                &[("code", "not-a-code"), ("access_code", "Wrong-Code")],
            )
            .await;
        ok(
            &format!("wrong answer {i}"),
            &r,
            if i < LOCK_AFTER { 401 } else { 403 },
        );
    }
    ok("locked landing", &customer.get(&link).await, 403);
    let alerts = dev_mail(&app, &mut customer, ADMIN).await;
    assert!(alerts.iter().any(|m| m.contains("locked")), "{alerts:?}");

    // The sender unlocks; a new code, the right answers.
    staff_action(&mut staff, id, "unlock", &[]).await;
    let spent = codes(&dev_mail(&app, &mut customer, CUSTOMER).await);
    ok(
        "send code",
        &customer.post(&format!("{link}/code"), &[]).await,
        303,
    );
    let code = codes(&dev_mail(&app, &mut customer, CUSTOMER).await)
        .into_iter()
        .find(|c| !spent.contains(c))
        .expect("a new code email");
    let r = customer
        .post(
            &format!("{link}/verify"),
            &[("code", &code), ("access_code", "One-Conn-77")],
        )
        .await;
    ok("verify", &r, 303);
    ok(
        "message",
        &customer.get(&format!("/pickup/{id}")).await,
        200,
    );
    assert_eq!(
        customer.download(&format!("/pickup/{id}/files/1")).await,
        file
    );
    let mut other = Browser::new(&base);
    ok("used link", &other.get(&link).await, 410);
    ok(
        "used link verify",
        &other
            .post(&format!("{link}/verify"), &[("code", &code)])
            .await,
        410,
    );
    let alerts = dev_mail(&app, &mut customer, ADMIN).await;
    assert!(alerts.len() >= 2, "first-pickup alert: {alerts:?}");
    clock.advance(120);
    ok(
        "message later",
        &customer.get(&format!("/pickup/{id}")).await,
        200,
    );
    let token = input_value(&customer.get(&format!("/pickup/{id}")).await.body, "csrf").unwrap();
    ok(
        "done",
        &customer
            .post(&format!("/pickup/{id}/done"), &[("csrf", &token)])
            .await,
        200,
    );

    // Staff: resend, extend, revoke a second message; expiry runs.
    let second = compose(&mut staff, &["access_code"], b"second").await;
    staff_action(&mut staff, second, "resend", &[]).await;
    staff_action(&mut staff, second, "extend", &[("hours", "72")]).await;
    staff_action(&mut staff, second, "revoke", &[]).await;
    ok(
        "revoked page",
        &staff.get(&format!("/messages/{second}")).await,
        200,
    );
    let third = compose(&mut staff, &["access_code"], b"third").await;
    clock.advance(49 * 3600);
    assert_eq!(app.deliveries.shred_due().await.unwrap(), 1);
    // Two days idle ended the staff session: sign in again.
    let mut staff = Browser::signed_in(&base, ADMIN).await;
    ok(
        "expired page",
        &staff.get(&format!("/messages/{third}")).await,
        200,
    );
    dev_mail(&app, &mut customer, CUSTOMER).await;
    ok("audit", &staff.get("/admin/audit").await, 200);
    let token = staff.csrf("/sent").await;
    ok(
        "sign out",
        &staff.post("/sign-out", &[("csrf", &token)]).await,
        303,
    );
}
