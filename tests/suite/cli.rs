//! The command line as an operator uses it.

use crate::common::{TestEnv, runtime};

#[test]
fn migrate_is_idempotent_and_config_redacts_secrets() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    for _ in 0..2 {
        let out = env.sealpost(&["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = env.sealpost(&["config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("data_dir"), "{text}");
    assert!(text.contains("master_key_file"), "{text}");
}

#[test]
fn unknown_settings_are_refused() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("config")
        .envs(env.env_vars())
        .env("SEALPOST_DATA_DIRR", "/tmp/x")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SEALPOST_DATA_DIRR"));
}

#[test]
fn serve_answers_health_checks() {
    let rt = runtime();
    let env = rt.block_on(TestEnv::new());
    let app = rt.block_on(env.app());
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, sealpost::server::router(app))
                .await
                .ok();
        });
        for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("write");
            let mut resp = String::new();
            stream.read_to_string(&mut resp).await.expect("read");
            assert!(resp.starts_with("HTTP/1.1 200"), "{path}: {resp}");
            assert!(resp.ends_with(want), "{path}: {resp}");
        }
    });
}
