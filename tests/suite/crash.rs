//! Crash safety: a child process is killed (SIGKILL) at several points of a
//! seal. Afterwards the store holds either no visible message or a complete
//! one, and the sweeper leaves exactly the referenced blobs behind.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use sealpost::vault::{MessageMeta, PartKind, PartMeta};

use crate::support::env::{TestEnv, runtime};
use crate::support::files::{bytes, files_below};
use crate::support::vault::read_all;

const CHILD_ENV: &str = "SEALPOST_TEST_CRASH_AT";
const DATA_ENV: &str = "SEALPOST_TEST_CRASH_ENV";
const TEST_NAME: &str = "crash::killed_mid_seal_leaves_nothing_or_a_whole_message";
const BODY_LEN: usize = 300_000;
const FILE_LEN: usize = 900_000;

/// Where the child stops and waits to be killed.
const STAGES: [&str; 5] = [
    "mid-body",       // plaintext half streamed into a temp file
    "after-body",     // body blob durable, attachment not started
    "mid-attachment", // body durable, attachment half streamed
    "before-commit",  // every blob durable, no database row
    "after-commit",   // the transaction has committed
];

/// Announces the stage on stdout and blocks until killed.
fn pause(stage: &str) -> ! {
    // Straight to the file descriptor: the test harness captures `println!`.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "PAUSED {stage}");
    let _ = out.flush();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// A reader that pauses the child after `at` bytes.
struct PausingReader<'a> {
    data: &'a [u8],
    pos: usize,
    pause_at: Option<(usize, &'static str)>,
}

impl Read for PausingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some((at, stage)) = self.pause_at
            && self.pos >= at
        {
            pause(stage);
        }
        let limit = self
            .pause_at
            .map_or(self.data.len(), |(at, _)| at.max(self.pos + 1));
        let n = buf
            .len()
            .min(self.data.len() - self.pos)
            .min(limit - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn child(stage: &str) {
    let stage: &'static str = STAGES
        .into_iter()
        .find(|s| *s == stage)
        .expect("known stage");
    let vars: Vec<(String, String)> =
        serde_json::from_str(&std::env::var(DATA_ENV).expect("env")).expect("env json");
    // A runtime of its own, not #[tokio::test]: the test re-runs itself as a child process that is killed mid-write.
    let rt = runtime();
    let app = rt
        .block_on(sealpost::app::App::open(
            sealpost::config::Config::load(None, vars).expect("config"),
        ))
        .expect("open");
    let body = bytes(BODY_LEN, 1);
    let file = bytes(FILE_LEN, 2);
    let mut draft = app.vault.begin_message();
    let pause_body = (stage == "mid-body").then_some((BODY_LEN / 2, stage));
    draft
        .seal_part(
            PartKind::Body,
            &PartMeta::default(),
            PausingReader {
                data: &body,
                pos: 0,
                pause_at: pause_body,
            },
        )
        .expect("body");
    if stage == "after-body" {
        pause(stage);
    }
    let pause_file = (stage == "mid-attachment").then_some((FILE_LEN / 2, stage));
    let meta = PartMeta {
        item: None,
        file_name: Some("f.bin".into()),
        content_type: None,
    };
    draft
        .seal_part(
            PartKind::Attachment,
            &meta,
            PausingReader {
                data: &file,
                pos: 0,
                pause_at: pause_file,
            },
        )
        .expect("attachment");
    if stage == "before-commit" {
        pause(stage);
    }
    rt.block_on(async {
        let sealed = app
            .vault
            .seal(draft, &MessageMeta::default())
            .expect("seal");
        let mut tx = app.db.begin().await.expect("begin");
        app.vault.commit(&mut tx, sealed).await.expect("commit");
        tx.commit().await.expect("commit tx");
    });
    pause("after-commit");
}

#[test]
fn killed_mid_seal_leaves_nothing_or_a_whole_message() {
    if let Ok(stage) = std::env::var(CHILD_ENV) {
        child(&stage);
        return;
    }
    let rt = runtime();
    for stage in STAGES {
        let env = rt.block_on(TestEnv::new());
        drop(rt.block_on(env.app())); // migrations and the key file exist before the child runs
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, stage)
            .env(
                DATA_ENV,
                serde_json::to_string(&env.env_vars()).expect("json"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut reached = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            // The harness may print its own text on the same line first.
            if line.ends_with(&format!("PAUSED {stage}")) {
                reached = true;
                break;
            }
        }
        assert!(reached, "child never reached {stage}");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");

        let app = rt.block_on(env.app());
        let ids: Vec<String> = rt
            .block_on(sqlx::query_scalar("SELECT id FROM messages").fetch_all(app.db.pool()))
            .expect("messages");
        if stage == "after-commit" {
            assert_eq!(ids.len(), 1, "{stage}: committed message must survive");
        } else {
            assert!(
                ids.is_empty(),
                "{stage}: nothing may be visible before commit"
            );
        }
        for id in &ids {
            let parts = rt
                .block_on(read_all(&app, id.parse().expect("id")))
                .expect("complete");
            assert_eq!(
                parts,
                vec![bytes(BODY_LEN, 1), bytes(FILE_LEN, 2)],
                "{stage}"
            );
        }
        let before = files_below(&env.blob_dir()).len();
        if stage != "after-commit" {
            assert!(
                before > 0,
                "{stage}: the crash should have left something to sweep"
            );
        }
        let report = rt.block_on(app.vault.sweep(Duration::ZERO)).expect("sweep");
        let referenced: BTreeSet<String> = rt
            .block_on(
                sqlx::query_scalar("SELECT blob_key FROM message_parts").fetch_all(app.db.pool()),
            )
            .expect("parts")
            .into_iter()
            .collect();
        let on_disk: BTreeSet<String> = files_below(&env.blob_dir())
            .iter()
            .map(|p| p.file_stem().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            on_disk, referenced,
            "{stage}: sweeper leaves exactly the referenced blobs"
        );
        assert_eq!(report.kept_blobs, referenced.len());
        assert_eq!(
            report.removed_blobs + report.removed_partials + referenced.len(),
            before
        );
    }
}
