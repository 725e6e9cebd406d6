//! Two `sealpost serve` processes on one database and one blob store (S3
//! when the suite runs on PostgreSQL), as behind a load balancer with no
//! sticky sessions: staff sessions, customer verification, outbox delivery,
//! expiry, key rotation and attempt counters all hold across instances.

use std::collections::BTreeMap;

use crate::support::cluster::{AGENT, BODY, CUSTOMER, Instance, compose, observer, prepare};
use crate::support::compose::fresh_link;
use crate::support::env::{TestEnv, runtime};
use crate::support::http::Browser;
use crate::support::mail::{link_path, mail_texts, message_ids, six_digits, wait_for_mail};
use crate::support::smtp::{Reply, SmtpServer};

/// The settings every instance of a test shares: SMTP, and the S3 bucket
/// when the suite runs on PostgreSQL (the scale-out pairing).
fn shared_settings(smtp: &SmtpServer, s3: &Option<S3>) -> Vec<(String, String)> {
    let mut vars = vec![("SEALPOST_SMTP_URL".to_owned(), smtp.url())];
    if let Some((_, _, s3_vars)) = s3 {
        vars.extend(s3_vars.iter().cloned());
    }
    vars
}

type S3 = crate::support::moto::ClusterBucket;

fn browser_like(base: &str, other: &Browser) -> Browser {
    let mut b = Browser::new(base);
    b.cookies = other.cookies.clone();
    b
}

#[test]
fn sessions_pickup_and_attempt_counters_hold_across_instances() {
    let s3 = crate::support::moto::bucket_when_on_postgres();
    // A runtime of its own, not #[tokio::test]: the moto bucket is made before, outside any runtime (it drives its own).
    runtime().block_on(async {
        let env = TestEnv::new().await;
        let smtp = SmtpServer::start();
        let vars = shared_settings(&smtp, &s3);
        prepare(&env, &vars).await;
        let one = Instance::start(&env, "one", &vars).await;
        let two = Instance::start(&env, "two", &vars).await;

        // Staff: signed in on one, the same cookie works on two.
        let mut staff_one = Browser::signed_in(&one.base, AGENT).await;
        let mut staff_two = browser_like(&two.base, &staff_one);
        let sent = staff_two.get("/sent").await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        let file = crate::support::files::bytes(300_000, 7);
        let id = compose(&mut staff_two, &["email_code"], "", &file)
            .await
            .expect("compose on two");

        // Customer: opens the link and asks for a code on one, verifies on
        // two, reads and downloads on one.
        wait_for_mail(&smtp, "the pickup email", |_| {
            !mail_texts(&smtp, CUSTOMER, "/p/").is_empty()
        })
        .await;
        let link = link_path(&mail_texts(&smtp, CUSTOMER, "/p/")[0]);
        let mut cust_one = Browser::new(&one.base);
        assert_eq!(cust_one.get(&link).await.status, 200);
        let asked = cust_one.post(&format!("{link}/code"), &[]).await;
        assert_eq!(asked.status, 303, "{}", asked.body);
        wait_for_mail(&smtp, "the code email", |_| count_to(&smtp) >= 2).await;
        let code_mail = code_mail(&smtp);
        let code = six_digits(&code_mail);
        let mut cust_two = browser_like(&two.base, &cust_one);
        let verified = cust_two
            .post(&format!("{link}/verify"), &[("code", code.as_str())])
            .await;
        assert_eq!(verified.status, 303, "{}", verified.body);
        assert_eq!(verified.location(), Some(format!("/pickup/{id}").as_str()));
        let mut cust_one = browser_like(&one.base, &cust_two);
        let page = cust_one.get(&format!("/pickup/{id}")).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains(BODY));
        let download = reqwest::Client::new()
            .get(format!("{}/pickup/{id}/files/1", one.base))
            .header(
                "cookie",
                cust_one
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
            .send()
            .await
            .expect("download");
        assert_eq!(download.status(), 200);
        assert_eq!(download.bytes().await.expect("bytes").as_ref(), &file[..]);

        // Attempt counters live in the database: ten wrong access codes
        // spread over both instances lock the message.
        let id2 = compose(&mut staff_one, &["access_code"], "Right-Code-4242", b"x")
            .await
            .expect("compose on one");
        wait_for_mail(&smtp, "the second pickup email", |_| {
            mail_texts(&smtp, CUSTOMER, "/p/").len() >= 2
        })
        .await;
        let link2 = link_path(mail_texts(&smtp, CUSTOMER, "/p/").last().expect("mail"));
        for i in 0..10 {
            let base = if i % 2 == 0 { &one.base } else { &two.base };
            let mut guesser = Browser::new(base);
            let r = guesser
                .post(
                    &format!("{link2}/verify"),
                    &[("access_code", format!("Wrong-{i}").as_str())],
                )
                .await;
            assert_ne!(r.status, 303, "a wrong code must not verify");
        }
        let mut last = Browser::new(&two.base);
        let r = last
            .post(
                &format!("{link2}/verify"),
                &[("access_code", "Right-Code-4242")],
            )
            .await;
        assert_ne!(r.status, 303, "locked after 10 failures on two instances");
        let app = observer(&env, &vars).await;
        let locked: Option<i64> =
            sqlx::query_scalar("SELECT locked_at FROM deliveries WHERE message_id = $1")
                .bind(id2.to_string())
                .fetch_one(app.db.pool())
                .await
                .expect("delivery");
        assert!(locked.is_some(), "message locked");
        drop((one, two));
    });
}

/// Emails to CUSTOMER so far.
fn count_to(smtp: &SmtpServer) -> usize {
    smtp.accepted()
        .iter()
        .filter(|raw| crate::support::smtp::header(raw, "To").is_some_and(|t| t.contains(CUSTOMER)))
        .count()
}

/// The newest email to CUSTOMER that is not a pickup-link email.
fn code_mail(smtp: &SmtpServer) -> String {
    mail_texts(smtp, CUSTOMER, "")
        .into_iter()
        .rev()
        .find(|t| !t.contains("/p/"))
        .expect("a code email")
}

#[test]
fn each_notification_is_sent_once_and_a_killed_instance_loses_nothing() {
    let s3 = crate::support::moto::bucket_when_on_postgres();
    runtime().block_on(async {
        let env = TestEnv::new().await;
        let smtp = SmtpServer::start();
        let vars = shared_settings(&smtp, &s3);
        prepare(&env, &vars).await;
        let mut one = Instance::start(&env, "one", &vars).await;
        let two = Instance::start(&env, "two", &vars).await;
        let mut staff_one = Browser::signed_in(&one.base, AGENT).await;
        let mut staff_two = browser_like(&two.base, &staff_one);

        // Both workers run while messages arrive through both instances.
        const FIRST: usize = 24;
        for i in 0..FIRST {
            let staff = if i % 2 == 0 {
                &mut staff_one
            } else {
                &mut staff_two
            };
            compose(staff, &["email_code"], "", b"a")
                .await
                .expect("compose");
        }
        wait_for_mail(&smtp, "the first batch", |all| all.len() >= FIRST).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let ids = message_ids(&smtp);
        assert_eq!(ids.len(), FIRST, "each notification sent once: {ids:?}");
        assert_eq!(distinct(&ids).len(), FIRST);

        // One instance claims a batch, gets stuck mid-send and dies. Two is
        // frozen meanwhile so that every new row is one's.
        smtp.set_reply(Reply::Hold);
        two.freeze();
        const SECOND: usize = 12;
        for _ in 0..SECOND {
            compose(&mut staff_one, &["email_code"], "", b"b")
                .await
                .expect("compose");
        }
        let app = observer(&env, &vars).await;
        // One's worker is stuck in a round on the rows it claimed.
        let leased = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT lease_owner FROM outbox WHERE sent_at IS NULL AND lease_until IS NOT NULL",
            )
            .fetch_all(app.db.pool())
            .await
            .expect("leases")
        };
        for _ in 0..200 {
            if !leased().await.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let owners = leased().await;
        assert!(!owners.is_empty(), "one claimed rows");
        one.kill();
        smtp.set_reply(Reply::Accept);
        two.thaw();
        // The dead instance's leases run out (5 minutes, stood in for by
        // moving them into the past); two takes those rows over.
        for owner in &owners {
            sqlx::query(
                "UPDATE outbox SET lease_until = 1 WHERE lease_owner = $1 AND sent_at IS NULL",
            )
            .bind(owner)
            .execute(app.db.pool())
            .await
            .expect("expire leases");
        }
        wait_for_mail(&smtp, "the second batch", |all| all.len() >= FIRST + SECOND).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;

        let expected: Vec<String> = sqlx::query_scalar("SELECT mail_message_id FROM outbox")
            .fetch_all(app.db.pool())
            .await
            .expect("outbox");
        assert_eq!(expected.len(), FIRST + SECOND);
        let ids = message_ids(&smtp);
        let counts = distinct(&ids);
        for m in &expected {
            let n = counts
                .get(&format!("<{m}>"))
                .or_else(|| counts.get(m))
                .copied();
            assert_eq!(n, Some(1), "{m} delivered exactly once: {counts:?}");
        }
        assert_eq!(ids.len(), FIRST + SECOND, "no duplicates, nothing lost");
        drop(two);
    });
}

fn distinct(ids: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id.clone()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn expiry_and_key_rotation_are_safe_on_both_instances() {
    let s3 = crate::support::moto::bucket_when_on_postgres();
    runtime().block_on(async {
        let env = TestEnv::new().await;
        let smtp = SmtpServer::start();
        let vars = shared_settings(&smtp, &s3);
        prepare(&env, &vars).await;
        let mut one = Instance::start(&env, "one", &vars).await;
        let mut two = Instance::start(&env, "two", &vars).await;
        let mut staff = Browser::signed_in(&one.base, AGENT).await;
        const N: usize = 8;
        let mut ids = Vec::new();
        for _ in 0..N {
            ids.push(
                compose(&mut staff, &["access_code"], "Rotate-Code-77", b"c")
                    .await
                    .expect("compose"),
            );
        }

        // Two rotations started together (say, by two operators on two
        // instances): one adds a key, the other only finishes the re-wrap.
        let rotate = || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"));
            for (k, _) in std::env::vars() {
                if k.starts_with("SEALPOST_") {
                    cmd.env_remove(k);
                }
            }
            cmd.args(["keys", "rotate"])
                .envs(env.env_vars())
                .envs(vars.iter().cloned())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("rotate")
        };
        // Both are made to start while a rotation is under way (a lease
        // held from here), so they really overlap.
        let app = observer(&env, &vars).await;
        sqlx::query(
            "INSERT INTO job_leases (name, holder, expires_at) VALUES ('master-key-rotation', 'test', $1)",
        )
        .bind(i64::MAX / 2)
        .execute(app.db.pool())
        .await
        .expect("hold the lease");
        let (a, b) = (rotate(), rotate());
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        sqlx::query("DELETE FROM job_leases")
            .execute(app.db.pool())
            .await
            .expect("release the lease");
        let (a, b) = (
            a.wait_with_output().expect("rotate a"),
            b.wait_with_output().expect("rotate b"),
        );
        for out in [&a, &b] {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let added = [&a, &b]
            .iter()
            .filter(|o| String::from_utf8_lossy(&o.stdout).contains("added master key"))
            .count();
        assert_eq!(added, 1, "exactly one rotation adds a key");
        let ring = sealpost::vault::keyring::Keyring::load(&env.key_file()).expect("ring");
        assert_eq!(ring.keys().len(), 2);
        let status = app.vault.key_status().await.expect("status");
        let old = status.iter().find(|k| !k.newest).expect("old key");
        assert_eq!((old.messages, old.secrets), (0, 0), "{status:?}");

        // Both serving instances open messages now wrapped to the new key.
        for base in [&one.base, &two.base] {
            let link = fresh_link(&app, ids[0]).await;
            let mut customer = Browser::new(base);
            let r = customer
                .post(&format!("{link}/verify"), &[("access_code", "Rotate-Code-77")])
                .await;
            assert_eq!(r.status, 303, "{}", r.body);
            let page = customer.get(&format!("/pickup/{}", ids[0])).await;
            assert!(page.body.contains(BODY), "opens on {base}");
        }

        // Expiry: both instances start their expiry pass at the same moment
        // over the same expired messages.
        assert!(one.terminate().success());
        assert!(two.terminate().success());
        sqlx::query("UPDATE deliveries SET expires_at = 1")
            .execute(app.db.pool())
            .await
            .expect("expire");
        let (one, two) = tokio::join!(
            Instance::start(&env, "one", &vars),
            Instance::start(&env, "two", &vars)
        );
        let shredded = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM deliveries WHERE shredded_at IS NOT NULL",
            )
            .fetch_one(app.db.pool())
            .await
            .expect("count")
        };
        for _ in 0..300 {
            if shredded().await == N as i64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(shredded().await, N as i64);
        let per_message: Vec<(String, i64)> = sqlx::query_as(
            "SELECT message_id, COUNT(*) FROM audit_log WHERE action = 'message.shredded'
             GROUP BY message_id",
        )
        .fetch_all(app.db.pool())
        .await
        .expect("audit");
        assert_eq!(per_message.len(), N);
        assert!(
            per_message.iter().all(|(_, n)| *n == 1),
            "each message shredded once: {per_message:?}"
        );
        let keys_left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_keys")
            .fetch_one(app.db.pool())
            .await
            .expect("keys");
        assert_eq!(keys_left, 0);
        // The blobs are gone from the shared store too. They are deleted
        // just after the shred commits, so the last may still be on its way.
        let blobs_left = || match &s3 {
            Some((moto, bucket, _)) => tokio::task::block_in_place(|| moto.keys(bucket))
                .into_iter()
                .filter(|k| k.ends_with(".age"))
                .count(),
            None => walk_files(&env.blob_dir()),
        };
        for _ in 0..100 {
            if blobs_left() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(blobs_left(), 0, "no blob left after shredding");
        for (name, inst) in [("one", &one), ("two", &two)] {
            let log = inst.log();
            assert!(
                !log.contains("ERROR") && !log.contains("failed"),
                "{name} logged an error: {log}"
            );
        }
    });
}

/// Files below `dir` (the local blob folder), recursively.
fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { walk_files(&p) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Issue 14: the same `Idempotency-Key` sent to both instances at once
/// (a client retrying through the load balancer) makes one message and
/// one email, and every call answers with its id.
#[test]
fn an_idempotency_key_sends_once_across_instances() {
    let s3 = crate::support::moto::bucket_when_on_postgres();
    runtime().block_on(async {
        let env = TestEnv::new().await;
        let smtp = SmtpServer::start();
        let vars = shared_settings(&smtp, &s3);
        prepare(&env, &vars).await;
        let one = Instance::start(&env, "one", &vars).await;
        let two = Instance::start(&env, "two", &vars).await;
        let app = observer(&env, &vars).await;
        let agent = app
            .accounts
            .find(&sealpost::staff::StaffEmail::parse(AGENT).unwrap())
            .await
            .unwrap();
        let (_, token) = app
            .tokens
            .create(
                sealpost::audit::Actor::Cli,
                sealpost::staff::tokens::NewApiToken {
                    owner: agent.id,
                    name: "helpdesk".to_owned(),
                    scopes: sealpost::staff::tokens::Scopes::parse_list("messages:send").unwrap(),
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        let token = secrecy::ExposeSecret::expose_secret(&token).to_owned();
        let body = serde_json::json!({
            "to": CUSTOMER,
            "body": BODY,
            "verify": {"email_code": {}},
        });
        let calls = (0..16).map(|i| {
            let base = if i % 2 == 0 { &one.base } else { &two.base };
            let request = reqwest::Client::new()
                .post(format!("{base}/api/v1/messages"))
                .bearer_auth(&token)
                .header("idempotency-key", "ticket 4711 attempt")
                .json(&body);
            async move {
                let r = request.send().await.expect("send");
                let status = r.status().as_u16();
                let text = r.text().await.expect("body");
                (status, text)
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut ids = std::collections::BTreeSet::new();
        for (status, text) in &answers {
            assert_eq!(*status, 201, "{text}");
            let v: serde_json::Value = serde_json::from_str(text).expect("json");
            ids.insert(v["id"].as_str().expect("id").to_owned());
        }
        assert_eq!(ids.len(), 1, "one message for every call: {ids:?}");
        let messages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
            .fetch_one(app.db.pool())
            .await
            .expect("count");
        assert_eq!(messages, 1);
        wait_for_mail(&smtp, "the pickup email", |_| count_to(&smtp) >= 1).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        assert_eq!(count_to(&smtp), 1, "one email");
        drop((one, two));
    });
}
