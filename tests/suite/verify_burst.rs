//! Verification under hostile load (issue 11 §4, §7): parallel wrong
//! answers count up to the limit exactly once and lock once; answers that
//! arrive after a successful verification count for nothing; visits to a
//! used link are noted once an hour and limited per address (IPv6 by /64);
//! access codes ignore spaces and dashes; a delivery whose method list
//! cannot be read refuses verification.

use std::sync::Arc;

use sealpost::app::App;
use sealpost::clock::ManualClock;
use sealpost::config::TrustedProxies;
use sealpost::pickup::flow::{LOCK_AFTER, REUSED_VISITS_PER_IP_HOUR};
use sealpost::staff::Role;
use sealpost::vault::MessageId;
use secrecy::SecretString;

use crate::support::START;
use crate::support::compose::{Compose, fresh_link};
use crate::support::env::TestEnv;
use crate::support::http::{Browser, Resp, create_staff, dev_mail, serve};
use crate::support::mail::six_digits;

const AGENT: &str = "agent@example.com";

struct Setup {
    app: App,
    clock: ManualClock,
    base: String,
    staff: Browser,
}

/// The loopback address playing a trusted reverse proxy: requests sent
/// from it may say which client they carry (`X-Forwarded-For`). Browsers
/// connect from 127.0.0.1 as usual (and may read the dev mailbox).
const PROXY: &str = "127.0.0.2";

/// A served app on a manual clock that trusts [`PROXY`].
async fn setup(env: &TestEnv) -> Setup {
    let clock = ManualClock::new(START);
    let mut config = env.config();
    config.trusted_proxies = TrustedProxies::new(vec![format!("{PROXY}/32").parse().unwrap()]);
    let app = App::open_with_clock(config, Arc::new(clock.clone()))
        .await
        .unwrap();
    let base = serve(app.clone()).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let staff = Browser::signed_in(&base, AGENT).await;
    Setup {
        app,
        clock,
        base,
        staff,
    }
}

/// Composes a message to `to` through the portal; returns its id and the
/// access code the portal generated, if it did.
async fn compose(
    staff: &mut Browser,
    to: &str,
    methods: &[&str],
    access_code: &str,
) -> (MessageId, Option<String>) {
    let id = Compose::to(to)
        .methods(methods)
        .access_code(access_code)
        .attach("statement.pdf", b"statement")
        .send(staff)
        .await;
    let page = staff.get(&format!("/messages/{id}")).await;
    let generated = crate::support::http::element_text(&page.body, "generated-access-code");
    (id, generated)
}

/// An HTTP client that connects from [`PROXY`]: each request names the
/// client it stands for.
fn via_proxy() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(PROXY.parse().unwrap()))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A request for the client at `ip` through the proxy: status and body.
async fn send_as(req: reqwest::RequestBuilder, ip: &str) -> (u16, String) {
    let r = req.header("X-Forwarded-For", ip).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn count(app: &App, sql: &str, id: MessageId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn audit_count(app: &App, action: &str, id: MessageId) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = $1 AND message_id = $2")
        .bind(action)
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

/// The lockout counter as /metrics shows it.
async fn lockouts(app: &App) -> u64 {
    let text = app.metrics.render(&app.db, app.clock.now()).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("sealpost_pickup_lockouts_total "))
        .expect("lockout metric")
        .trim()
        .parse()
        .unwrap()
}

/// Posts `fields` to `path` from `n` fresh browsers at once; the statuses.
async fn burst(base: &str, path: &str, fields: Vec<(&'static str, String)>, n: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (base, path, fields) = (base.to_owned(), path.to_owned(), fields.clone());
            tokio::spawn(async move {
                let req = via_proxy().post(format!("{base}{path}")).form(&fields);
                send_as(req, &format!("198.51.100.{}", i % 200 + 1)).await.0
            })
        })
        .collect();
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

fn tally(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_wrong_answers_lock_once_and_nobody_else_waits() {
    let env = TestEnv::new().await;
    let mut s = setup(&env).await;
    // Email codes: checking one costs no argon2, so nothing is shed
    // with 503 and every answer reaches the failure path.
    let (target, _) = compose(&mut s.staff, "target@example.org", &["email_code"], "").await;
    let (other, _) = compose(
        &mut s.staff,
        "other@example.org",
        &["access_code"],
        "Other-Code-55",
    )
    .await;
    let link = fresh_link(&s.app, target).await;
    let other_link = fresh_link(&s.app, other).await;
    // A live code, so the wrong answers also count against it.
    let mut customer = Browser::new(&s.base);
    assert_eq!(
        customer.post(&format!("{link}/code"), &[]).await.status,
        303
    );
    let lockouts_before = lockouts(&s.app).await;

    let wrong = (0..50).map(|i| format!("wrong-{i}")).collect::<Vec<_>>();
    let tasks: Vec<_> = wrong
        .into_iter()
        .map(|code| {
            let (base, path) = (s.base.clone(), format!("{link}/verify"));
            tokio::spawn(async move {
                let mut b = Browser::new(&base);
                b.post(&path, &[("code", &code)]).await.status
            })
        })
        .collect();
    // An unrelated customer verifies while the burst runs.
    let unrelated = {
        let (base, path) = (s.base.clone(), format!("{other_link}/verify"));
        tokio::spawn(async move {
            let mut b = Browser::new(&base);
            let r = b.post(&path, &[("access_code", "Other-Code-55")]).await;
            let page = b.get(&format!("/pickup/{other}")).await;
            (r.status, page.status)
        })
    };
    let statuses: Vec<u16> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let (verified, page) = unrelated.await.unwrap();

    assert_eq!(
        statuses.iter().filter(|s| **s >= 500).count(),
        0,
        "{statuses:?}"
    );
    // Nine "did not match" pages, then the lock for everyone else.
    assert_eq!(tally(&statuses, 401), 9, "{statuses:?}");
    assert_eq!(tally(&statuses, 403), 41, "{statuses:?}");
    let d = s.app.deliveries.get(target).await.unwrap();
    assert_eq!(d.failures, LOCK_AFTER, "the count stops at the limit");
    assert!(d.locked_at.is_some());
    assert!(d.link_consumed_at.is_none());
    assert_eq!(
        count(
            &s.app,
            "SELECT COUNT(*) FROM outbox WHERE kind = 'sender_alert' AND message_id = $1",
            target
        )
        .await,
        1,
        "one lock email"
    );
    assert_eq!(audit_count(&s.app, "pickup.locked", target).await, 1);
    assert_eq!(
        audit_count(&s.app, "pickup.verification_failed", target).await,
        LOCK_AFTER
    );
    assert_eq!(lockouts(&s.app).await, lockouts_before + 1);
    // The live code took every counted guess.
    assert_eq!(
        count(
            &s.app,
            "SELECT MAX(wrong_guesses) FROM pickup_codes WHERE message_id = $1",
            target
        )
        .await,
        LOCK_AFTER
    );
    assert_eq!(
        (verified, page),
        (303, 200),
        "the unrelated customer got in"
    );

    // The one lock email reaches the sender.
    let mut local = Browser::new(&s.base);
    let mails = dev_mail(&s.app, &mut local, AGENT).await;
    assert_eq!(
        mails.iter().filter(|m| m.contains("locked")).count(),
        1,
        "{mails:?}"
    );

    // The same burst against an argon2 method: load beyond the hashing
    // pool is shed with 503, never a 500, and the limit still holds.
    let (fact, _) = compose(
        &mut s.staff,
        "fact@example.org",
        &["access_code"],
        "Fact-Code-99",
    )
    .await;
    let fact_link = fresh_link(&s.app, fact).await;
    let statuses = burst(
        &s.base,
        &format!("{fact_link}/verify"),
        vec![("access_code", "Not-The-Code".to_owned())],
        50,
    )
    .await;
    assert!(
        statuses.iter().all(|s| [401, 403, 503].contains(s)),
        "{statuses:?}"
    );
    let d = s.app.deliveries.get(fact).await.unwrap();
    assert_eq!(d.failures, LOCK_AFTER);
    assert!(d.locked_at.is_some());
    assert_eq!(audit_count(&s.app, "pickup.locked", fact).await, 1);
    assert_eq!(
        count(
            &s.app,
            "SELECT COUNT(*) FROM outbox WHERE kind = 'sender_alert' AND message_id = $1",
            fact
        )
        .await,
        1
    );
    assert_eq!(lockouts(&s.app).await, lockouts_before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_after_a_successful_verification_do_not_count() {
    let env = TestEnv::new().await;
    let mut s = setup(&env).await;
    let (id, _) = compose(
        &mut s.staff,
        "c@example.org",
        &["access_code"],
        "Right-Code-1",
    )
    .await;
    let link = fresh_link(&s.app, id).await;
    let path = format!("{link}/verify");

    // The right answer first, then (while it is still being checked)
    // nine wrong ones: fewer than the limit, so it cannot lock first.
    let mut customer = Browser::new(&s.base);
    let right = {
        let path = path.clone();
        tokio::spawn(async move {
            let r = customer
                .post(&path, &[("access_code", "Right-Code-1")])
                .await;
            (r.status, customer)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let wrong = burst(
        &s.base,
        &path,
        vec![("access_code", "Wrong-Code-1".to_owned())],
        (LOCK_AFTER - 1) as usize,
    )
    .await;
    let (status, mut customer) = right.await.unwrap();
    assert_eq!(status, 303);
    assert!(wrong.iter().all(|s| [401, 410].contains(s)), "{wrong:?}");
    // No failure was recorded after the verification committed.
    let verified: i64 = sqlx::query_scalar(
        "SELECT id FROM audit_log WHERE action = 'pickup.verified' AND message_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(s.app.db.pool())
    .await
    .unwrap();
    let late: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log
             WHERE action = 'pickup.verification_failed' AND message_id = $1 AND id > $2",
    )
    .bind(id.to_string())
    .bind(verified)
    .fetch_one(s.app.db.pool())
    .await
    .unwrap();
    assert_eq!(late, 0, "failures counted after the link was used");
    let d = s.app.deliveries.get(id).await.unwrap();
    let failures = d.failures;
    assert_eq!(
        failures,
        audit_count(&s.app, "pickup.verification_failed", id).await
    );
    assert_eq!(tally(&wrong, 401) as i64, failures);

    // Sequentially, more than the limit: each is told the link was
    // used; nothing counts, nothing locks.
    for i in 0..(LOCK_AFTER + 2) {
        let mut b = Browser::new(&s.base);
        let r = b
            .post(&path, &[("access_code", &format!("Guess-{i}"))])
            .await;
        assert_eq!(r.status, 410, "{}", r.body);
        assert!(r.body.contains("already been used"));
    }
    let d = s.app.deliveries.get(id).await.unwrap();
    assert_eq!(d.failures, failures);
    assert!(d.locked_at.is_none(), "a picked-up message never locks");
    assert_eq!(audit_count(&s.app, "pickup.locked", id).await, 0);
    assert_eq!(customer.get(&format!("/pickup/{id}")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_submitted_correct_answer_is_not_a_failure() {
    let env = TestEnv::new().await;
    let mut s = setup(&env).await;

    // Access code: two submits of the right answer at once.
    let (id, _) = compose(
        &mut s.staff,
        "a@example.org",
        &["access_code"],
        "Twice-Code-2",
    )
    .await;
    let link = fresh_link(&s.app, id).await;
    let statuses = burst(
        &s.base,
        &format!("{link}/verify"),
        vec![("access_code", "Twice-Code-2".to_owned())],
        2,
    )
    .await;
    assert_eq!(tally(&statuses, 303), 1, "{statuses:?}");
    assert_eq!(tally(&statuses, 410), 1, "{statuses:?}");
    let d = s.app.deliveries.get(id).await.unwrap();
    assert_eq!(d.failures, 0);
    assert_eq!(
        audit_count(&s.app, "pickup.verification_failed", id).await,
        0
    );

    // Email code: the losers find the code already used; that is not a
    // wrong answer either.
    let (id, _) = compose(&mut s.staff, "e@example.org", &["email_code"], "").await;
    let link = fresh_link(&s.app, id).await;
    let mut customer = Browser::new(&s.base);
    assert_eq!(
        customer.post(&format!("{link}/code"), &[]).await.status,
        303
    );
    let mails = dev_mail(&s.app, &mut customer, "e@example.org").await;
    let code = six_digits(
        mails
            .iter()
            .find(|m| m.contains("verification code"))
            .expect("the code email"),
    );
    let statuses = burst(&s.base, &format!("{link}/verify"), vec![("code", code)], 8).await;
    assert_eq!(tally(&statuses, 303), 1, "{statuses:?}");
    assert_eq!(tally(&statuses, 410), 7, "{statuses:?}");
    let d = s.app.deliveries.get(id).await.unwrap();
    assert_eq!(d.failures, 0);
    assert!(d.locked_at.is_none());
    assert_eq!(
        audit_count(&s.app, "pickup.verification_failed", id).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_link_visits_are_noted_once_an_hour_and_limited_per_address() {
    let env = TestEnv::new().await;
    let mut s = setup(&env).await;
    let (id, _) = compose(
        &mut s.staff,
        "u@example.org",
        &["access_code"],
        "Used-Code-3",
    )
    .await;
    let link = fresh_link(&s.app, id).await;
    let mut customer = Browser::new(&s.base);
    let r = customer
        .post(&format!("{link}/verify"), &[("access_code", "Used-Code-3")])
        .await;
    assert_eq!(r.status, 303);

    // 500 HEADs from one IPv6 /64, a different address each, 10 at a time.
    let http = via_proxy();
    let tasks: Vec<_> = (0..10)
        .map(|t| {
            let (http, url) = (http.clone(), format!("{}{link}", s.base));
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..50 {
                    let ip = format!("2001:db8:1:2::{t:x}:{i:x}");
                    out.push(send_as(http.head(&url), &ip).await.0);
                }
                out
            })
        })
        .collect();
    let statuses: Vec<u16> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let limit = REUSED_VISITS_PER_IP_HOUR as usize;
    assert_eq!(tally(&statuses, 410), limit, "{statuses:?}");
    assert_eq!(tally(&statuses, 429), 500 - limit, "{statuses:?}");
    assert_eq!(
        audit_count(&s.app, "pickup.link_reused", id).await,
        1,
        "one note per link per hour"
    );

    // Other addresses are not limited by that /64; the note is not repeated.
    let url = format!("{}{link}", s.base);
    for ip in ["2001:db8:1:3::1", "203.0.113.7"] {
        let (status, body) = send_as(http.get(&url), ip).await;
        assert_eq!(status, 410, "{ip}");
        assert!(body.contains("already been used"));
    }
    let limited = "2001:db8:1:2::abcd";
    let (status, body) = send_as(http.get(&url), limited).await;
    assert_eq!(status, 429);
    assert!(body.contains("too many requests"), "{body}");
    assert_eq!(audit_count(&s.app, "pickup.link_reused", id).await, 1);

    // An hour on: the address may visit again, and the visit is noted.
    s.clock.advance(3601);
    assert_eq!(send_as(http.get(&url), limited).await.0, 410);
    assert_eq!(audit_count(&s.app, "pickup.link_reused", id).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_codes_ignore_spaces_and_dashes() {
    let env = TestEnv::new().await;
    let mut s = setup(&env).await;
    // A generated code ("2145-9905"), typed without the dash or with a space.
    let forms: [fn(&str) -> String; 3] = [
        |c| c.replace('-', ""),
        |c| c.replace('-', " "),
        |c| format!(" {} ", c.replace('-', " - ")),
    ];
    for (i, typed) in forms.iter().enumerate() {
        let (id, generated) = compose(
            &mut s.staff,
            &format!("g{i}@example.org"),
            &["access_code"],
            "",
        )
        .await;
        let generated = generated.expect("a generated code is shown once");
        assert_eq!(generated.len(), 9, "{generated}");
        let link = fresh_link(&s.app, id).await;
        let mut c = Browser::new(&s.base);
        let r = c
            .post(
                &format!("{link}/verify"),
                &[("access_code", &typed(&generated))],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(s.app.deliveries.get(id).await.unwrap().failures, 0);
    }

    // A code the sender typed: its spaces and dashes do not matter either.
    let (id, _) = compose(
        &mut s.staff,
        "t@example.org",
        &["access_code"],
        "Blue-Horse 7",
    )
    .await;
    let link = fresh_link(&s.app, id).await;
    let mut c = Browser::new(&s.base);
    let r = c
        .post(&format!("{link}/verify"), &[("access_code", "bluehorse7")])
        .await;
    assert_eq!(r.status, 401, "case still matters");
    let r = c
        .post(&format!("{link}/verify"), &[("access_code", "BlueHorse-7")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    // Codes hashed as typed before normalisation (what earlier versions
    // stored) still verify, generated and typed ones alike.
    for (stored, typed) in [
        ("4811-2290", "48112290"),
        ("Old-Style 12", "Old-Style 12"),
        ("Old-Style 12", "OldStyle12"),
    ] {
        let (id, _) = compose(
            &mut s.staff,
            "legacy@example.org",
            &["access_code"],
            "Placeholder-1",
        )
        .await;
        let hash = s
            .app
            .hasher
            .hash_unchecked(SecretString::from(stored))
            .await
            .unwrap();
        sqlx::query("UPDATE deliveries SET access_code_hash = $1 WHERE message_id = $2")
            .bind(hash)
            .bind(id.to_string())
            .execute(s.app.db.pool())
            .await
            .unwrap();
        let link = fresh_link(&s.app, id).await;
        let mut c = Browser::new(&s.base);
        let r = c
            .post(&format!("{link}/verify"), &[("access_code", typed)])
            .await;
        if typed == "OldStyle12" {
            // Only the form it was hashed in, or the generated grouping.
            assert_eq!(r.status, 401, "{stored:?} as {typed:?}");
        } else {
            assert_eq!(r.status, 303, "{stored:?} as {typed:?}: {}", r.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_unreadable_method_list_fails_closed() {
    let env = TestEnv::new().await;
    let mut s = setup(&env).await;
    for stored in ["", "access_code,sms_code", "nonsense"] {
        let (id, _) = compose(
            &mut s.staff,
            "f@example.org",
            &["access_code"],
            "Closed-Code-4",
        )
        .await;
        sqlx::query("UPDATE deliveries SET verification = $1 WHERE message_id = $2")
            .bind(stored)
            .bind(id.to_string())
            .execute(s.app.db.pool())
            .await
            .unwrap();
        let link = fresh_link(&s.app, id).await;
        let mut c = Browser::new(&s.base);
        let expect_unavailable = |r: &Resp| {
            assert_eq!(r.status, 410, "{stored:?}: {}", r.body);
            assert!(r.body.contains("no longer available"), "{}", r.body);
        };
        expect_unavailable(&c.get(&link).await);
        expect_unavailable(&c.post(&format!("{link}/code"), &[]).await);
        for fields in [vec![], vec![("access_code", "Closed-Code-4")]] {
            expect_unavailable(&c.post(&format!("{link}/verify"), &fields).await);
        }
        let d = s.app.deliveries.get(id).await.unwrap();
        assert!(d.link_consumed_at.is_none(), "never consumed");
        assert_eq!(d.failures, 0);
        assert_eq!(audit_count(&s.app, "pickup.verified", id).await, 0);
        assert_eq!(c.get(&format!("/pickup/{id}")).await.status, 401);
    }
}
