//! The customer's side over HTTP: landing, verification by access code and
//! known fact, scanners, limits and lockout, downloads, one-time links,
//! shred after pickup and expiry.

use sealpost::app::App;
use sealpost::staff::Role;
use sealpost::vault::VaultError;

use crate::support::START;
use crate::support::compose::{BODY, compose, fresh_link};
use crate::support::env::TestEnv;
use crate::support::files::bytes;
use crate::support::http::{Browser, create_staff, element_text, portal};

async fn setup(env: &TestEnv) -> (App, sealpost::clock::ManualClock, String, Browser) {
    let (app, clock, base) = portal(env, START).await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    let staff = Browser::signed_in(&base, "agent@example.com").await;
    (app, clock, base, staff)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_code_pickup_end_to_end() {
    let env = TestEnv::new().await;
    let (app, _clock, base, mut staff) = setup(&env).await;
    let file = bytes(300_000, 11);
    let id = compose(
        &mut staff,
        &["access_code"],
        "Sesame-4711",
        "",
        "keep",
        &file,
    )
    .await;
    let link = fresh_link(&app, id).await;

    let mut customer = Browser::new(&base);
    let landing = customer.get(&link).await;
    assert_eq!(landing.status, 200);
    assert!(landing.body.contains("name=\"access_code\""));
    assert!(
        !landing.body.contains("statement"),
        "nothing of the message before verification"
    );
    for h in ["referrer-policy", "cache-control", "x-robots-tag"] {
        assert!(landing.header(h).is_some(), "{h}");
    }
    assert_eq!(
        app.deliveries.get(id).await.unwrap().stored_status,
        sealpost::deliveries::Status::LinkVisited
    );

    let before = customer.cookies.get("sealpost").cloned();
    let r = customer
        .post(&format!("{link}/verify"), &[("access_code", "Sesame-4711")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), Some(format!("/pickup/{id}").as_str()));
    assert_ne!(
        customer.cookies.get("sealpost").cloned(),
        before,
        "session id cycled"
    );

    let page = customer.get(&format!("/pickup/{id}")).await;
    assert_eq!(page.status, 200);
    // The body is escaped, line breaks kept by the stylesheet.
    assert!(
        page.body
            .contains("your &#60;b&#62;statement&#60;/b&#62; is attached.")
            || page
                .body
                .contains("your &lt;b&gt;statement&lt;/b&gt; is attached."),
        "{}",
        page.body
    );
    assert!(page.body.contains("Kontoauszug"));

    let dl = customer.get(&format!("/pickup/{id}/files/1")).await;
    assert_eq!(dl.status, 200);
    assert_eq!(dl.header("content-type"), Some("application/pdf"));
    assert_eq!(dl.header("x-content-type-options"), Some("nosniff"));
    assert!(
        dl.header("content-security-policy")
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(
        dl.header("content-disposition"),
        Some(
            "attachment; filename=\"Kontoauszug M_rz _2026_.pdf\"; filename*=UTF-8''Kontoauszug%20M%C3%A4rz%20%222026%22.pdf"
        )
    );
    // Body text came back as a string; compare the raw bytes instead.
    let raw = customer.download(&format!("/pickup/{id}/files/1")).await;
    assert_eq!(raw, file);
    assert_eq!(
        app.deliveries.get(id).await.unwrap().stored_status,
        sealpost::deliveries::Status::Downloaded
    );

    // The link is spent: another visit is told when it was opened.
    let mut other = Browser::new(&base);
    let again = other.get(&link).await;
    assert_eq!(again.status, 410);
    assert!(again.body.contains("already been used"), "{}", again.body);
    let r = other
        .post(&format!("{link}/verify"), &[("access_code", "Sesame-4711")])
        .await;
    assert_eq!(r.status, 410);
    // The verified session keeps working; another browser has nothing.
    assert_eq!(customer.get(&format!("/pickup/{id}")).await.status, 200);
    assert_eq!(other.get(&format!("/pickup/{id}")).await.status, 401);
    assert_eq!(
        other.get(&format!("/pickup/{id}/files/1")).await.status,
        401
    );

    // The sender's timeline shows the customer's progress.
    let timeline = staff.get(&format!("/messages/{id}")).await.body;
    for what in [
        "pickup.link_visited",
        "pickup.verified",
        "pickup.downloaded",
        "pickup.link_reused",
    ] {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE action = $1 AND message_id = $2",
        )
        .bind(what)
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert!(n >= 1, "{what}");
    }
    assert!(timeline.contains("Downloaded"), "{timeline}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_fact_and_two_factor_combinations() {
    let env = TestEnv::new().await;
    let (app, _clock, base, mut staff) = setup(&env).await;
    let id = compose(&mut staff, &["known_fact"], "", "12-34", "keep", b"x").await;
    let link = fresh_link(&app, id).await;
    let mut c = Browser::new(&base);
    // Case, spaces and dashes do not matter.
    let r = c
        .post(&format!("{link}/verify"), &[("known_fact", " 1234 ")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    // Access code AND known fact: one right answer is not enough.
    let id = compose(
        &mut staff,
        &["access_code", "known_fact"],
        "Open-Sesame-1",
        "9876",
        "keep",
        b"y",
    )
    .await;
    let link = fresh_link(&app, id).await;
    let mut c = Browser::new(&base);
    let r = c
        .post(
            &format!("{link}/verify"),
            &[("access_code", "Open-Sesame-1"), ("known_fact", "0000")],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = c
        .post(
            &format!("{link}/verify"),
            &[("access_code", "wrong-code-1"), ("known_fact", "9876")],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = c
        .post(
            &format!("{link}/verify"),
            &[("access_code", "Open-Sesame-1"), ("known_fact", "9876")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(app.deliveries.get(id).await.unwrap().failures, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanners_cannot_consume_links_or_see_content() {
    let env = TestEnv::new().await;
    let (app, _clock, base, mut staff) = setup(&env).await;
    let id = compose(
        &mut staff,
        &["access_code"],
        "Right-Code-77",
        "",
        "shred",
        b"z",
    )
    .await;
    let link = fresh_link(&app, id).await;
    let mut scanner = Browser::new(&base);
    scanner.extra = vec![(
        "User-Agent".into(),
        "Mozilla/5.0 (compatible; SafeLinks scanner bot)".into(),
    )];
    for _ in 0..3 {
        assert_eq!(scanner.get(&link).await.status, 200);
        let head = reqwest::Client::new()
            .head(format!("{base}{link}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        // Submitting the landing form as found (empty, or with junk).
        let r = scanner.post(&format!("{link}/verify"), &[]).await;
        assert_eq!(r.status, 401);
        let r = scanner
            .post(&format!("{link}/verify"), &[("access_code", "")])
            .await;
        assert_eq!(r.status, 401);
    }
    assert!(!scanner.get(&link).await.body.contains(BODY));
    assert_eq!(scanner.get(&format!("/pickup/{id}")).await.status, 401);
    let d = app.deliveries.get(id).await.unwrap();
    assert!(d.link_consumed_at.is_none(), "link unconsumed");
    assert!(d.shred_at.is_none() && d.shredded_at.is_none());
    assert!(app.vault.unlock(id).await.is_ok());
    // The customer still gets in.
    let mut c = Browser::new(&base);
    let r = c
        .post(
            &format!("{link}/verify"),
            &[("access_code", "Right-Code-77")],
        )
        .await;
    assert_eq!(r.status, 303);
    let agent: String =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE action = 'pickup.link_visited'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert!(agent.contains("automated"), "{agent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_after_ten_failures_brute_force_fails_and_unlock_works() {
    let env = TestEnv::new().await;
    let (app, _clock, base, mut staff) = setup(&env).await;
    // A weak 4-digit known fact: exactly what brute force would target.
    let id = compose(&mut staff, &["known_fact"], "", "4321", "keep", b"w").await;
    let link = fresh_link(&app, id).await;
    let mut attacker = Browser::new(&base);
    let mut succeeded = 0;
    for guess in 0..10_000u32 {
        let g = format!("{guess:04}");
        let r = attacker
            .post(&format!("{link}/verify"), &[("known_fact", &g)])
            .await;
        if r.status == 303 {
            succeeded += 1;
        }
        if guess == 9 {
            assert_eq!(r.status, 403, "locked at the tenth failure");
            assert!(r.body.contains("locked"));
        }
    }
    assert_eq!(
        succeeded, 0,
        "10,000 guesses never get in (the right one came after the lock)"
    );
    let d = app.deliveries.get(id).await.unwrap();
    assert!(d.locked_at.is_some());
    assert_eq!(
        d.failures, 10,
        "guesses after the lock are refused without counting"
    );
    let page = staff.get(&format!("/messages/{id}")).await;
    assert_eq!(
        element_text(&page.body, "status").as_deref(),
        Some("Locked")
    );

    // Only the sender (or an admin) can unlock; then the customer gets in.
    let token = crate::support::http::input_value(&page.body, "csrf").unwrap();
    assert_eq!(
        staff
            .post(&format!("/messages/{id}/unlock"), &[("csrf", &token)])
            .await
            .status,
        303
    );
    let mut c = Browser::new(&base);
    let r = c
        .post(&format!("{link}/verify"), &[("known_fact", "4321")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shred_after_pickup_and_expiry() {
    let env = TestEnv::new().await;
    let (app, clock, base, mut staff) = setup(&env).await;
    let once = compose(
        &mut staff,
        &["access_code"],
        "Once-Only-42",
        "",
        "shred",
        &bytes(5000, 1),
    )
    .await;
    let kept = compose(
        &mut staff,
        &["access_code"],
        "Kept-Code-42",
        "",
        "keep",
        &bytes(5000, 2),
    )
    .await;
    let link = fresh_link(&app, once).await;
    let mut c = Browser::new(&base);
    assert_eq!(
        c.post(
            &format!("{link}/verify"),
            &[("access_code", "Once-Only-42")]
        )
        .await
        .status,
        303
    );
    // Active use keeps it open; the expiry job leaves it alone.
    clock.advance(20 * 60);
    assert_eq!(c.get(&format!("/pickup/{once}")).await.status, 200);
    clock.advance(20 * 60);
    assert_eq!(app.deliveries.shred_due().await.unwrap(), 0);
    assert_eq!(c.get(&format!("/pickup/{once}")).await.status, 200);
    // "I'm done" shreds at once.
    let page = c.get(&format!("/pickup/{once}")).await;
    let token = crate::support::http::input_value(&page.body, "csrf").unwrap();
    let r = c
        .post(&format!("/pickup/{once}/done"), &[("csrf", &token)])
        .await;
    assert_eq!(r.status, 200);
    assert!(matches!(
        app.vault.unlock(once).await,
        Err(VaultError::Shredded)
    ));
    assert_eq!(c.get(&format!("/pickup/{once}")).await.status, 401);

    // A kept message lives until it expires, then the job shreds it and
    // its link says so.
    let link = fresh_link(&app, kept).await;
    clock.advance(49 * 3600);
    assert_eq!(app.deliveries.shred_due().await.unwrap(), 1);
    assert_eq!(
        app.deliveries.shred_due().await.unwrap(),
        0,
        "no double work"
    );
    assert!(matches!(
        app.vault.unlock(kept).await,
        Err(VaultError::Shredded)
    ));
    // The shred erased the link's hash with the rest: the link is now
    // simply unknown, and the neutral page says it may have expired.
    let mut c = Browser::new(&base);
    let r = c.get(&link).await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("may have expired"), "{}", r.body);
    // Unknown links get a neutral page.
    let r = c
        .get("/p/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("not valid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_kills_the_old_link() {
    let env = TestEnv::new().await;
    let (app, _clock, base, mut staff) = setup(&env).await;
    let id = compose(
        &mut staff,
        &["access_code"],
        "Resend-Code-1",
        "",
        "keep",
        b"r",
    )
    .await;
    let old = fresh_link(&app, id).await;
    let new = fresh_link(&app, id).await;
    let mut c = Browser::new(&base);
    assert_eq!(c.get(&old).await.status, 404);
    assert_eq!(
        c.post(
            &format!("{old}/verify"),
            &[("access_code", "Resend-Code-1")]
        )
        .await
        .status,
        404
    );
    assert_eq!(c.get(&new).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_request_logs_hold_no_link_secret_code_or_content() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    create_staff(&app, "agent@example.com", Role::Agent).await;
    // The real binary at debug level, its output captured to a file.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let log_path = env.dir.path().join("serve.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("serve")
        .envs(env.env_vars())
        .env("SEALPOST_BIND", format!("127.0.0.1:{port}"))
        .env("SEALPOST_LOG", "debug")
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut staff = Browser::signed_in(&base, "agent@example.com").await;
    let code = "Log-Canary-Code-5150";
    let id = compose(
        &mut staff,
        &["access_code"],
        code,
        "",
        "keep",
        b"log canary file",
    )
    .await;
    let link = fresh_link(&app, id).await;
    let mut c = Browser::new(&base);
    c.get(&link).await;
    // A refused cross-site post is logged too, by route only.
    let mut foreign = Browser::new(&base);
    foreign
        .extra
        .push(("sec-fetch-site".to_owned(), "cross-site".to_owned()));
    let refused = foreign
        .post(&format!("{link}/verify"), &[("access_code", code)])
        .await;
    assert_eq!(refused.status, 403);
    c.post(
        &format!("{link}/verify"),
        &[("access_code", "Wrong-Canary-Guess-7")],
    )
    .await;
    let r = c
        .post(&format!("{link}/verify"), &[("access_code", code)])
        .await;
    assert_eq!(r.status, 303);
    c.get(&format!("/pickup/{id}")).await;
    c.get(&format!("/pickup/{id}/files/1")).await;
    staff.get("/sent?q=customer%40example.org").await;
    child.kill().unwrap();
    child.wait().unwrap();

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("route=\"/p/{token}/verify\""),
        "request lines are logged: {log}"
    );
    assert!(
        log.contains("refused a cross-site request"),
        "the refusal is logged: {log}"
    );
    let token = link.trim_start_matches("/p/");
    for secret in [
        token,
        code,
        "Wrong-Canary-Guess-7",
        "Dear customer",
        "Kontoauszug",
        "customer@example.org",
        "customer%40example.org",
        "log canary file",
    ] {
        assert!(!log.contains(secret), "log contains {secret:?}");
    }
}

/// First visits arriving together are written together: every one is
/// answered, every message moves to "link visited", and each gets exactly
/// one audit event however many visits of its link came at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_visits_are_each_recorded_once() {
    let env = TestEnv::new().await;
    let (app, _clock, base, mut staff) = setup(&env).await;
    let mut links = Vec::new();
    for _ in 0..8 {
        let id = compose(
            &mut staff,
            &["access_code"],
            "Sesame-4711",
            "",
            "keep",
            b"x",
        )
        .await;
        links.push((id, fresh_link(&app, id).await));
    }
    let client = reqwest::Client::new();
    // Three visits of each link, all in flight at once.
    let visits = links.iter().cycle().take(links.len() * 3).map(|(_, link)| {
        let request = client.get(format!("{base}{link}"));
        async move { request.send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures_util::future::join_all(visits).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );
    for (id, _) in &links {
        let d = app.deliveries.get(*id).await.unwrap();
        assert_eq!(d.stored_status, sealpost::deliveries::Status::LinkVisited);
        let events = app.audit.events_for_message(*id).await.unwrap();
        let visited = events
            .iter()
            .filter(|e| e.action == "pickup.link_visited")
            .count();
        assert_eq!(visited, 1, "{events:?}");
    }
    assert!(matches!(
        app.audit.verify().await.unwrap(),
        sealpost::audit::Verification::Intact { .. }
    ));
}
