//! PostgreSQL restarts while two instances serve: both recover on their own
//! and nothing is lost. The test runs its own PostgreSQL cluster (initdb in
//! a temp folder, a free port) so restarting it disturbs no other test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::cluster::{AGENT, Instance, compose, free_port, observer, prepare};
use crate::support::env::TestEnv;
use crate::support::http::Browser;
use crate::support::mail::message_ids;
use crate::support::smtp::SmtpServer;

/// A throw-away PostgreSQL server.
struct PrivatePostgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let pg = PrivatePostgres { dir, bin, port };
        if running_as_root() {
            // PostgreSQL refuses to run as root: the cluster belongs to "postgres".
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown the cluster folder to postgres");
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.pg_ctl(&["start"]);
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        let data = self.data();
        let mut args = vec![
            "-D",
            data.as_str(),
            "-l",
            log.as_str(),
            "-o",
            options.as_str(),
            "-w",
            "-m",
            "fast",
        ];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
                .ok();
        } else {
            Command::new(&exe).args(args).output().ok();
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The newest installed PostgreSQL server's bin folder (Debian layout).
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse().ok()?;
                    let bin = e.path().join("bin");
                    Path::new(&bin.join("initdb")).exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, b)| b).expect(
        "the PostgreSQL server (Debian package postgresql) is needed: apt-get install postgresql",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_loses_no_message_or_notification() {
    let pg = PrivatePostgres::start();
    let mut env = TestEnv::new().await;
    env.database_url = pg.url();
    let smtp = SmtpServer::start();
    prepare(&env, &[]).await;
    let vars = vec![("SEALPOST_SMTP_URL".to_owned(), smtp.url())];
    let one = Instance::start(&env, "one", &vars).await;
    let two = Instance::start(&env, "two", &vars).await;

    // A bounded load: four agents (two per instance) composing in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..4 {
        let base = if i % 2 == 0 { &one.base } else { &two.base };
        let mut staff = Browser::signed_in(base, AGENT).await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0usize);
            while !stop.load(Ordering::SeqCst) {
                match compose(&mut staff, &["email_code"], "", &[7u8; 4096]).await {
                    Ok(id) => ok.push(id),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (ok, failed)
        }));
    }
    let started_at = || async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url())
            .await
            .expect("connect to the private PostgreSQL");
        sqlx::query_scalar::<_, String>("SELECT pg_postmaster_start_time()::text")
            .fetch_one(&mut conn)
            .await
            .expect("start time")
    };
    let before = started_at().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The restart: a clean stop, two seconds down, start again.
    pg.pg_ctl(&["stop"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.pg_ctl(&["start"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    let mut confirmed = Vec::new();
    let mut refused = 0;
    for w in workers {
        let (ok, failed) = w.await.expect("load task");
        confirmed.extend(ok);
        refused += failed;
    }
    eprintln!(
        "during the load: {} messages confirmed, {refused} requests refused",
        confirmed.len()
    );
    assert!(confirmed.len() >= 8, "load ran: {} ok", confirmed.len());
    // Requests during the outage either wait for a connection or fail
    // with an error page; which, depends on timing. That the server
    // really restarted under the load is what must hold.
    assert_ne!(
        started_at().await,
        before,
        "PostgreSQL restarted during the load"
    );

    // Both recovered without a restart: ready, and serving writes.
    let mut one = one;
    let mut two = two;
    one.wait_ready().await;
    two.wait_ready().await;
    for base in [&one.base, &two.base] {
        let mut staff = Browser::signed_in(base, AGENT).await;
        confirmed.push(
            compose(&mut staff, &["email_code"], "", &[7u8; 4096])
                .await
                .expect("compose after restart"),
        );
    }

    // Every confirmed message is stored and its notification delivered
    // exactly once (by Message-ID).
    let app = observer(&env, &vars).await;
    for id in &confirmed {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries d JOIN outbox o ON o.message_id = d.message_id
                 WHERE d.message_id = $1",
        )
        .bind(id.to_string())
        .fetch_one(app.db.pool())
        .await
        .expect("count");
        assert_eq!(n, 1, "message {id} and its notification are stored");
    }
    let expected: Vec<String> = sqlx::query_scalar("SELECT mail_message_id FROM outbox")
        .fetch_all(app.db.pool())
        .await
        .expect("outbox");
    for _ in 0..600 {
        if message_ids(&smtp).len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = message_ids(&smtp);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (ids.len(), unique.len()),
        (expected.len(), expected.len()),
        "every notification exactly once ({} confirmed, {refused} refused during the outage)",
        confirmed.len()
    );
    app.db.close().await;
    drop((one, two));
}
