//! Several real `sealpost serve` processes on one database and one blob
//! store, as behind a load balancer: start, freeze, kill, read their logs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sealpost::app::App;
use sealpost::staff::Role;

use crate::browser::create_staff;
use crate::common::TestEnv;
use crate::smtp::{SmtpServer, header, parts};

pub const AGENT: &str = "agent@example.com";
pub const CUSTOMER: &str = "multi.customer@example.org";

/// One `sealpost serve` child process.
pub struct Instance {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl Instance {
    /// Starts `sealpost serve` with `env`'s settings plus `extra`, on a free
    /// loopback port, and waits until it answers /readyz.
    pub async fn start(env: &TestEnv, name: &str, extra: &[(String, String)]) -> Instance {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = env.dir.path().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        for (k, _) in std::env::vars() {
            if k.starts_with("SEALPOST_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg("serve")
            .envs(env.env_vars())
            .envs(extra.iter().cloned())
            .env("SEALPOST_BIND", format!("127.0.0.1:{port}"))
            .env("SEALPOST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start sealpost serve");
        let mut instance = Instance { child, base, log };
        instance.wait_ready().await;
        instance
    }

    pub async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("instance exited with {status}: {}", self.log());
            }
            let ready = http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("instance never became ready: {}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGSTOP: the process holds its connections and leases but does nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// SIGKILL: a crash, no clean-up of any kind.
    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// SIGTERM and wait: a clean stop.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.child.wait().expect("wait for sealpost")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A frozen process ignores SIGKILL until continued on some kernels.
        Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .ok();
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Creates the installation (key file, schema, one agent) from this process,
/// then lets go of the database so only the instances use it.
pub async fn prepare(env: &TestEnv, extra: &[(String, String)]) {
    let app = observer(env, extra).await;
    create_staff(&app, AGENT, Role::Agent).await;
    app.db.close().await;
}

/// A read-only observer of the shared database, for assertions.
pub async fn observer(env: &TestEnv, extra: &[(String, String)]) -> App {
    let mut vars = env.env_vars();
    vars.extend(extra.iter().cloned());
    let config = sealpost::config::Config::load(None, vars).expect("config");
    App::open(config).await.expect("open app")
}

/// Waits until `pred` holds for the emails the SMTP server accepted.
pub async fn wait_for_mail(smtp: &SmtpServer, what: &str, pred: impl Fn(&[Vec<u8>]) -> bool) {
    for _ in 0..600 {
        if pred(&smtp.accepted()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Decoded text of accepted emails to `to` whose text contains `needle`.
pub fn mail_texts(smtp: &SmtpServer, to: &str, needle: &str) -> Vec<String> {
    smtp.accepted()
        .iter()
        .filter(|raw| header(raw, "To").is_some_and(|t| t.contains(to)))
        .map(|raw| parts(raw).0)
        .filter(|t| t.contains(needle))
        .collect()
}

/// The pickup link path in an email's text.
pub fn link_path(text: &str) -> String {
    let i = text.find("/p/").expect("a pickup link");
    text[i..]
        .split(|c: char| c.is_whitespace())
        .next()
        .expect("link")
        .to_owned()
}

pub fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a 6-digit code")
        .to_owned()
}

/// Message-IDs of every accepted email, in arrival order.
pub fn message_ids(smtp: &SmtpServer) -> Vec<String> {
    smtp.accepted()
        .iter()
        .map(|raw| header(raw, "Message-ID").expect("Message-ID"))
        .collect()
}
