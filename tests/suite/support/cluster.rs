//! Several real `sealpost serve` processes on one database and one blob
//! store, as behind a load balancer: start, freeze, kill, read their logs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sealpost::app::App;
use sealpost::staff::Role;
use sealpost::vault::MessageId;

use crate::support::compose::Compose;
use crate::support::env::TestEnv;
use crate::support::http::{Browser, create_staff};

pub const AGENT: &str = "agent@example.com";
pub const CUSTOMER: &str = "multi.customer@example.org";
pub const BODY: &str = "Two-instance canary body";

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

/// Composes a message for CUSTOMER; returns its id. Failures are returned,
/// not panicked on: during an outage a request may fail, and the client is
/// then told so (fault.rs counts those).
pub async fn compose(
    staff: &mut Browser,
    methods: &[&str],
    access_code: &str,
    file: &[u8],
) -> Result<MessageId, String> {
    Compose::to(CUSTOMER)
        .body(BODY)
        .methods(methods)
        .access_code(access_code)
        .attach("statement.pdf", file)
        .try_send(staff)
        .await
}
