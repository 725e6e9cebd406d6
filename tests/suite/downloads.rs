//! Downloads under hostile load: a verified session that opens many
//! downloads and reads none gets a few and 429 for the rest, holds no
//! blocking thread, and starves nobody; HEAD is not a download; a tampered
//! or truncated blob aborts the body; a new link ends sessions of the old.

use std::time::Duration;

use sealpost::app::App;
use sealpost::deliveries::Status;
use sealpost::staff::Role;
use sealpost::vault::MessageId;

use crate::support::START;
use crate::support::compose::{compose, fresh_link};
use crate::support::env::TestEnv;
use crate::support::files::{blob_path, bytes};
use crate::support::http::{Browser, create_staff, portal};

const AGENT: &str = "agent@example.com";
const CODE: &str = "Download-Code-42";
/// Far more than loopback socket buffers hold, so an unread download stays
/// in flight.
const BIG: usize = 12 * 1024 * 1024;

/// A runtime whose blocking pool is small: a download that pinned a
/// blocking thread while its client does not read would exhaust it, and
/// everything else that needs one (argon2, the message page) would hang.
fn small_blocking_pool() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A customer browser verified for `id` through a fresh link.
async fn verified(app: &App, base: &str, id: MessageId) -> Browser {
    let link = fresh_link(app, id).await;
    let mut c = Browser::new(base);
    assert_eq!(c.get(&link).await.status, 200);
    let r = c
        .post(&format!("{link}/verify"), &[("access_code", CODE)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    c
}

fn cookie_header(b: &Browser) -> String {
    b.cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn count(app: &App, sql: &str, id: MessageId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .unwrap()
}

async fn downloaded_events(app: &App, id: MessageId) -> i64 {
    count(
        app,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'pickup.downloaded' AND message_id = $1",
        id,
    )
    .await
}

/// Bounds a step that would hang if the server were starved: the test
/// fails instead of waiting for ever. Not a performance assertion.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("{what} never finished: the server is starved"))
}

#[test]
fn stalled_downloads_are_capped_and_starve_nobody() {
    small_blocking_pool().block_on(async {
        let env = TestEnv::new().await;
        let (app, _clock, base) = portal(&env, START).await;
        create_staff(&app, AGENT, Role::Agent).await;
        let mut staff = Browser::signed_in(&base, AGENT).await;
        let big = bytes(BIG, 21);
        let hoarded = compose(&mut staff, &["access_code"], CODE, "", "keep", &big).await;
        let small = bytes(300_000, 22);
        let other = compose(&mut staff, &["access_code"], CODE, "", "keep", &small).await;
        let hoarder = verified(&app, &base, hoarded).await;

        // 20 downloads at once from one session, none of them read.
        let http = reqwest::Client::new();
        let url = format!("{base}/pickup/{hoarded}/files/1");
        let cookie = cookie_header(&hoarder);
        let requests = (0..20).map(|_| {
            http.get(&url)
                .header(reqwest::header::COOKIE, &cookie)
                .send()
        });
        let responses: Vec<reqwest::Response> = within(
            "the burst of downloads",
            futures_util::future::join_all(requests),
        )
        .await
        .into_iter()
        .map(|r| r.expect("download request"))
        .collect();
        let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((ok, refused), (4, 16), "{statuses:?}");
        let stalled: Vec<_> = responses
            .into_iter()
            .filter(|r| r.status().as_u16() == 200)
            .collect();
        // Refused downloads are not downloads.
        assert_eq!(downloaded_events(&app, hoarded).await, 4);

        // Meanwhile another customer verifies (argon2), reads the message
        // page and downloads, and staff can sign in.
        let mut customer = within(
            "another customer's verification",
            verified(&app, &base, other),
        )
        .await;
        let page = within(
            "the message page",
            customer.get(&format!("/pickup/{other}")),
        )
        .await;
        assert_eq!(page.status, 200);
        let got = within(
            "another customer's download",
            customer.download(&format!("/pickup/{other}/files/1")),
        )
        .await;
        assert!(got == small, "the other customer got the whole file");
        within("a staff sign-in", Browser::signed_in(&base, AGENT)).await;
        // The hoarding session itself is still capped.
        let again = hoarder_get(&http, &url, &cookie).await;
        assert_eq!(again, 429);

        // Once the stalled downloads are dropped, their slots come back.
        drop(stalled);
        let mut status = 0;
        for _ in 0..200 {
            status = hoarder_get(&http, &url, &cookie).await;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, 200, "a slot came back");
        // And a whole download is exactly the file.
        let whole = within(
            "a full download",
            hoarder.download(&format!("/pickup/{hoarded}/files/1")),
        )
        .await;
        assert!(whole == big, "whole file, same bytes");
        assert_eq!(
            app.deliveries.get(hoarded).await.unwrap().stored_status,
            Status::Downloaded
        );
    });
}

/// One download's status, with the body read to the end (or discarded).
async fn hoarder_get(http: &reqwest::Client, url: &str, cookie: &str) -> u16 {
    let r = http
        .get(url)
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("download request");
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_not_a_download() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut staff = Browser::signed_in(&base, AGENT).await;
    let file = bytes(200_000, 23);
    let id = compose(&mut staff, &["access_code"], CODE, "", "shred", &file).await;
    let customer = verified(&app, &base, id).await;
    let before = app.deliveries.get(id).await.unwrap();
    assert_eq!(before.stored_status, Status::Verified);

    // Damage the blob: a HEAD that decrypted would notice; it must not.
    let part = &app.vault.parts(id).await.unwrap()[1];
    let path = blob_path(&env, part.blob.as_str());
    let intact = std::fs::read(&path).unwrap();
    let mut raw = intact.clone();
    let middle = raw.len() / 2;
    raw[middle] ^= 1;
    std::fs::write(&path, &raw).unwrap();

    let http = reqwest::Client::new();
    for _ in 0..10 {
        let r = http
            .head(format!("{base}/pickup/{id}/files/1"))
            .header(reqwest::header::COOKIE, cookie_header(&customer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let h = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(h("content-length"), Some(file.len().to_string()));
        assert_eq!(h("content-type").as_deref(), Some("application/pdf"));
        assert!(h("content-disposition").unwrap().starts_with("attachment;"));
        assert!(h("content-security-policy").unwrap().contains("sandbox"));
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let after = app.deliveries.get(id).await.unwrap();
    assert_eq!(after.stored_status, Status::Verified, "no status change");
    assert_eq!(
        after.shred_at, before.shred_at,
        "no shred-after-pickup change"
    );
    assert_eq!(after.shredded_at, None);
    assert_eq!(downloaded_events(&app, id).await, 0, "no download recorded");
    // HEAD holds no download slot either: with the blob intact again,
    // four GETs at once still fit and the first one counts.
    std::fs::write(&path, &intact).unwrap();
    let downloads = futures_util::future::join_all((0..4).map(|_| async {
        let r = http
            .get(format!("{base}/pickup/{id}/files/1"))
            .header(reqwest::header::COOKIE, cookie_header(&customer))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    }))
    .await;
    for (status, body) in downloads {
        assert_eq!(status, 200);
        assert!(body == file);
    }
    assert_eq!(downloaded_events(&app, id).await, 4);
    assert_eq!(
        app.deliveries.get(id).await.unwrap().stored_status,
        Status::Downloaded
    );
}

/// Reads a download to its end: `None` if the connection was reset before
/// the response head, else the status, the bytes received and whether the
/// body ended in an error (a reset or an incomplete body) rather than
/// cleanly.
async fn read_download(b: &Browser, path: &str) -> Option<(u16, usize, bool)> {
    let mut r = reqwest::Client::new()
        .get(format!("{}{path}", b.base))
        .header(reqwest::header::COOKIE, cookie_header(b))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let mut got = 0;
    loop {
        match r.chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => return Some((status, got, false)),
            Err(_) => return Some((status, got, true)),
        }
    }
}

/// Where an age file's payload starts (after the header and the nonce).
fn payload_start(raw: &[u8]) -> usize {
    let mac = raw
        .windows(4)
        .position(|w| w == b"\n---")
        .expect("age header");
    let end = mac + 1 + raw[mac + 1..].iter().position(|b| *b == b'\n').unwrap() + 1;
    end + 16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_truncated_blobs_abort_the_download() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut staff = Browser::signed_in(&base, AGENT).await;
    let file = bytes(1024 * 1024 + 5, 24);
    const CHUNK: usize = 64 * 1024 + 16;
    for damage in ["flip", "truncate"] {
        let id = compose(&mut staff, &["access_code"], CODE, "", "keep", &file).await;
        let customer = verified(&app, &base, id).await;
        let part = &app.vault.parts(id).await.unwrap()[1];
        let path = blob_path(&env, part.blob.as_str());
        let intact = std::fs::read(&path).unwrap();
        let mut raw = intact.clone();
        let start = payload_start(&raw);
        match damage {
            "flip" => raw[start + 5 * CHUNK + 100] ^= 0x80,
            // Cut at a chunk boundary: every chunk left authenticates,
            // only the missing final chunk gives it away.
            _ => raw.truncate(start + 8 * CHUNK),
        }
        std::fs::write(&path, &raw).unwrap();
        let dl = format!("/pickup/{id}/files/1");
        // More failed downloads than there are slots: each one must
        // give its slot back.
        for _ in 0..(2 * 4) {
            let mut tries = 0;
            let outcome = loop {
                match read_download(&customer, &dl).await {
                    // The previous failure's slot is not back yet.
                    Some((429, _, _)) if tries < 500 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => break other,
                }
            };
            match outcome {
                // Cut off before even the head was sent.
                None => {}
                Some((200, got, true)) => {
                    assert!(got < file.len(), "{damage}: {got} bytes");
                }
                Some(other) => panic!("{damage}: a damaged download ended as {other:?}"),
            }
        }
        // Intact again: downloads work, so no slot was lost.
        std::fs::write(&path, &intact).unwrap();
        let mut whole = None;
        for _ in 0..200 {
            if let Some((200, got, false)) = read_download(&customer, &dl).await {
                whole = Some(got);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(whole, Some(file.len()), "{damage}: slots came back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_link_ends_sessions_verified_through_the_old_one() {
    let env = TestEnv::new().await;
    let (app, _clock, base) = portal(&env, START).await;
    create_staff(&app, AGENT, Role::Agent).await;
    let mut staff = Browser::signed_in(&base, AGENT).await;
    let file = bytes(10_000, 25);
    let id = compose(&mut staff, &["access_code"], CODE, "", "keep", &file).await;
    let mut old = verified(&app, &base, id).await;
    assert_eq!(old.get(&format!("/pickup/{id}")).await.status, 200);

    // "Send a new link": the old link and what it opened both end.
    let _new_link = fresh_link(&app, id).await;
    let page = old.get(&format!("/pickup/{id}")).await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("session has ended"), "{}", page.body);
    assert!(!page.body.contains("Kontoauszug"), "nothing of the message");
    let dl = old.get(&format!("/pickup/{id}/files/1")).await;
    assert_eq!(dl.status, 401);
    let done = old
        .post(&format!("/pickup/{id}/done"), &[("csrf", "x")])
        .await;
    assert_ne!(done.status, 200);

    // Verifying through the new link works as usual.
    let mut fresh = verified(&app, &base, id).await;
    assert_eq!(fresh.get(&format!("/pickup/{id}")).await.status, 200);
    let got = fresh.download(&format!("/pickup/{id}/files/1")).await;
    assert!(got == file);
    // The old session stays ended.
    assert_eq!(old.get(&format!("/pickup/{id}")).await.status, 401);
}
