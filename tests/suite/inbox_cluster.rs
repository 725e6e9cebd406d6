//! The secure inbox (issue 13) on two `sealpost serve` processes sharing
//! one database and one blob store (S3 when the suite runs on PostgreSQL):
//! a customer proves an address and uploads through one instance; two
//! agents, one on each instance, claim each item at the same moment and
//! exactly one of them gets it.

use std::collections::BTreeMap;

use reqwest::multipart::{Form, Part};
use sealpost::app::App;
use sealpost::staff::Role;
use sealpost::vault::MessageId;

use crate::replies::pdf;
use crate::support::cluster::{Instance, observer};
use crate::support::env::{TestEnv, runtime};
use crate::support::files::files_below;
use crate::support::http::{Browser, Resp, create_staff, input_value};
use crate::support::mail::{mail_texts, wait_for_mail};
use crate::support::smtp::SmtpServer;

const AGENT_A: &str = "agent.a@example.com";
const AGENT_B: &str = "agent.b@example.com";
const CUSTOMER: &str = "inbox.cluster@example.org";
/// Uploads, each claimed by both agents at once (the address's daily limit).
const ITEMS: usize = 5;

type S3 = crate::support::moto::ClusterBucket;

/// SMTP for the code emails, and the S3 bucket when on PostgreSQL.
fn shared_settings(smtp: &SmtpServer, s3: &Option<S3>) -> Vec<(String, String)> {
    let mut vars = vec![("SEALPOST_SMTP_URL".to_owned(), smtp.url())];
    if let Some((_, _, s3_vars)) = s3 {
        vars.extend(s3_vars.iter().cloned());
    }
    vars
}

/// The same session (cookies) talking to another instance.
fn browser_like(base: &str, other: &Browser) -> Browser {
    let mut b = Browser::new(base);
    b.cookies = other.cookies.clone();
    b
}

/// The code in the newest email to CUSTOMER.
fn latest_code(smtp: &SmtpServer) -> String {
    let mails = mail_texts(smtp, CUSTOMER, "verification code");
    let mail = mails.last().expect("a code email");
    let at = mail.find("code is").expect("the code line");
    mail[at..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("six digits")
        .to_owned()
}

async fn upload(customer: &mut Browser, note: &str, name: &str, data: &[u8]) -> Resp {
    let csrf = customer.csrf("/send").await;
    let form = Form::new()
        .text("csrf", csrf)
        .text("body", note.to_owned())
        .part(
            "files",
            Part::bytes(data.to_vec()).file_name(name.to_owned()),
        );
    customer.post_multipart("/send/upload", form).await
}

async fn inbox_ids(app: &App) -> Vec<String> {
    sqlx::query_scalar("SELECT message_id FROM incoming WHERE kind = 'inbox'")
        .fetch_all(app.db.pool())
        .await
        .expect("inbox items")
}

/// The rows of `/inbox` that link to `id`.
fn rows_for<'a>(list: &'a str, id: &str) -> Vec<&'a str> {
    let href = format!("href=\"/inbox/{id}\"");
    list.split("<tr>").filter(|r| r.contains(&href)).collect()
}

#[test]
fn two_agents_on_two_instances_claim_each_inbox_upload_and_exactly_one_wins() {
    let s3 = crate::support::moto::bucket_when_on_postgres();
    // A runtime of its own, not #[tokio::test]: the moto bucket is made before, outside any runtime (it drives its own).
    runtime().block_on(async {
        let env = TestEnv::new().await;
        let smtp = SmtpServer::start();
        let vars = shared_settings(&smtp, &s3);
        let app = observer(&env, &vars).await;
        let agent_a = create_staff(&app, AGENT_A, Role::Agent).await;
        let agent_b = create_staff(&app, AGENT_B, Role::Agent).await;
        let mut settings = app.settings.load().await.expect("settings");
        settings.secure_inbox = true;
        settings.inbox_daily_cap = 200;
        app.settings
            .save(sealpost::audit::Actor::Cli, &settings)
            .await
            .expect("open the inbox");
        let one = Instance::start(&env, "one", &vars).await;
        let two = Instance::start(&env, "two", &vars).await;

        // The customer proves the address and uploads, all on one.
        let mut customer = Browser::new(&one.base);
        let r = customer
            .submit("/send", "/send/code", &[("email", CUSTOMER)])
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        wait_for_mail(&smtp, "the code email", |_| {
            !mail_texts(&smtp, CUSTOMER, "verification code").is_empty()
        })
        .await;
        let code = latest_code(&smtp);
        let r = customer
            .submit("/send", "/send/verify", &[("code", &code)])
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let mut uploads: Vec<(MessageId, Vec<u8>)> = Vec::new();
        for i in 0..ITEMS {
            let before = inbox_ids(&app).await;
            let file = pdf(40 + i as u64, 150_000 + i * 1_000);
            let r = upload(
                &mut customer,
                &format!("Statement {i}"),
                &format!("statement-{i}.pdf"),
                &file,
            )
            .await;
            assert_eq!(r.status, 303, "upload {i}: {}", r.body);
            assert_eq!(r.location(), Some("/send?sent=1"));
            let new: Vec<String> = inbox_ids(&app)
                .await
                .into_iter()
                .filter(|id| !before.contains(id))
                .collect();
            assert_eq!(new.len(), 1, "upload {i} made one item: {new:?}");
            uploads.push((new[0].parse().expect("message id"), file));
        }
        for (id, _) in &uploads {
            let item = app.incoming.get(*id).await.expect("item");
            assert!(item.owner.is_none(), "{id} unclaimed after upload");
        }
        // The blobs are in the shared store, not on one instance's disk.
        if let Some((moto, bucket, _)) = &s3 {
            let blobs = tokio::task::block_in_place(|| moto.keys(bucket))
                .into_iter()
                .filter(|k| k.ends_with(".age"))
                .count();
            // A note and a file per upload.
            assert!(blobs >= ITEMS, "{blobs} blobs in the bucket");
            assert!(
                files_below(&env.blob_dir()).is_empty(),
                "no blob on the local disk with S3"
            );
        }

        // One agent on each instance; both see every item unclaimed.
        let mut on_one = Browser::signed_in(&one.base, AGENT_A).await;
        let mut on_two = Browser::signed_in(&two.base, AGENT_B).await;
        for agent in [&mut on_one, &mut on_two] {
            let list = agent.get("/inbox").await;
            assert_eq!(list.status, 200, "{}", list.body);
            for (id, _) in &uploads {
                let rows = rows_for(&list.body, &id.to_string());
                assert!(!rows.is_empty(), "{id} listed: {}", list.body);
                for row in rows {
                    assert!(row.contains(CUSTOMER), "{row}");
                    assert!(row.contains("Unclaimed"), "{row}");
                }
            }
        }

        // Each item: both claim at the same moment; one 303, one 409.
        let mut wins = BTreeMap::new();
        for (n, (id, file)) in uploads.iter().enumerate() {
            let page = format!("/inbox/{id}");
            let mut tokens = Vec::new();
            for agent in [&mut on_one, &mut on_two] {
                let p = agent.get(&page).await;
                assert_eq!(p.status, 200, "{}", p.body);
                assert!(p.body.contains("id=\"claim\""), "{}", p.body);
                tokens.push(input_value(&p.body, "csrf").expect("csrf"));
            }
            let (t1, t2) = (&tokens[0], &tokens[1]);
            let path = format!("{page}/claim");
            let f1 = [("csrf", t1.as_str())];
            let f2 = [("csrf", t2.as_str())];
            // Alternate which request is polled (and so sent) first.
            let (r1, r2) = if n % 2 == 0 {
                tokio::join!(on_one.post(&path, &f1), on_two.post(&path, &f2))
            } else {
                let (r2, r1) = tokio::join!(on_two.post(&path, &f2), on_one.post(&path, &f1));
                (r1, r2)
            };
            let mut statuses = [r1.status, r2.status];
            statuses.sort_unstable();
            assert_eq!(
                statuses,
                [303, 409],
                "item {n}: one: {} {} / two: {} {}",
                r1.status,
                r1.body,
                r2.status,
                r2.body
            );
            let won = if r1.status == 303 { &r1 } else { &r2 };
            assert_eq!(won.location(), Some(page.as_str()));
            let (winner_id, winner, loser) = if r1.status == 303 {
                (agent_a, &on_one, &mut on_two)
            } else {
                (agent_b, &on_two, &mut on_one)
            };
            *wins.entry(winner_id.to_string()).or_insert(0) += 1;
            let owner: Option<String> =
                sqlx::query_scalar("SELECT owner_id FROM incoming WHERE message_id = $1")
                    .bind(id.to_string())
                    .fetch_one(app.db.pool())
                    .await
                    .expect("owner");
            assert_eq!(owner, Some(winner_id.to_string()), "item {n}'s owner");
            let claimed: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM audit_log
                 WHERE action = 'incoming.claimed' AND message_id = $1",
            )
            .bind(id.to_string())
            .fetch_one(app.db.pool())
            .await
            .expect("audit");
            assert_eq!(claimed, 1, "item {n} claimed once in the audit log");
            // The loser no longer sees it; the winner downloads it from
            // two, which the upload did not go through.
            assert_eq!(loser.get(&page).await.status, 404);
            let from_two = browser_like(&two.base, winner);
            assert!(
                from_two.download(&format!("{page}/files/1")).await == *file,
                "item {n}'s file differs when downloaded from two"
            );
        }
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'incoming.claimed'")
                .fetch_one(app.db.pool())
                .await
                .expect("audit");
        assert_eq!(total, ITEMS as i64);
        let unclaimed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM incoming WHERE kind = 'inbox' AND owner_id IS NULL",
        )
        .fetch_one(app.db.pool())
        .await
        .expect("unclaimed");
        assert_eq!(unclaimed, 0);
        eprintln!("claims won per agent: {wins:?}");
        for (name, inst) in [("one", &one), ("two", &two)] {
            let log = inst.log();
            assert!(!log.contains("ERROR"), "{name} logged an error: {log}");
        }
        drop((one, two));
    });
}
