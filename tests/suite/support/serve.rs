//! One real `sealpost serve` process with its output collected line by line,
//! for tests of what the binary does (metrics listener, timeouts, graceful
//! shutdown, log lines).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::env::TestEnv;

/// A `sealpost serve` child with its output collected line by line. Killed
/// if a test fails before stopping it.
pub struct Serve {
    child: Child,
    pub base: String,
    pub metrics: Option<String>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    pub fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        cmd.arg("serve");
        for (k, _) in std::env::vars() {
            if k.starts_with("SEALPOST_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.env_vars());
        cmd.envs(extra.iter().map(|(k, v)| (*k, *v)));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start sealpost serve");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let mut serve = Serve {
            child,
            base: String::new(),
            metrics: None,
            stdout,
            stderr,
        };
        let listening = serve.wait_for_line("sealpost is listening");
        serve.base = format!("http://{}", field(&listening, "bind"));
        if extra.iter().any(|(k, _)| *k == "SEALPOST_METRICS_BIND") {
            let line = serve.wait_for_line("metrics are served");
            serve.metrics = Some(format!("http://{}/metrics", field(&line, "metrics_bind")));
        }
        serve
    }

    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("serve exited ({status}): {:?}", self.stderr.lock().unwrap());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no {needle:?} in {:?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "serve did not exit within {within:?}: {:?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `pipe` on a thread of its own into a shared list of lines.
fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let shared = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            shared.lock().unwrap().push(line);
        }
    });
    lines
}

/// A field of a log line, text (`key=value`) or JSON.
fn field(line: &str, key: &str) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(line) {
        return map[key].as_str().expect("string field").to_owned();
    }
    let start = line.find(&format!("{key}=")).expect("field") + key.len() + 1;
    line[start..]
        .split_whitespace()
        .next()
        .expect("value")
        .to_owned()
}
