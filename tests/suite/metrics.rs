//! Operations, against the real `sealpost serve` process: Prometheus
//! metrics on their own listener after a whole pickup over SMTP, graceful
//! shutdown (a download in flight finishes, mail leases are handed back,
//! exit 0) and JSON log lines.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use sealpost::staff::Role;
use sealpost::vault::MessageId;
use sqlx::Row;

use crate::support::compose::Compose;
use crate::support::env::TestEnv;
use crate::support::files::bytes;
use crate::support::http::{Browser, create_staff};
use crate::support::mail::{link_path, six_digits};
use crate::support::serve::Serve;
use crate::support::smtp::{SmtpServer, header, parts};

const AGENT: &str = "agent@example.com";
const CUSTOMER: &str = "metrics.customer@example.org";

/// Polls `f` until it returns something (30 s at most).
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Composes a message to CUSTOMER over HTTP; returns its id.
async fn compose(staff: &mut Browser, methods: &[&str], access: &str, file: &[u8]) -> MessageId {
    Compose::to(CUSTOMER)
        .title("Metrics test")
        .body("A body")
        .expiry_hours("72")
        .methods(methods)
        .access_code(access)
        .attach("statement.pdf", file)
        .send(staff)
        .await
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn series(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

async fn scrape(url: &str) -> String {
    let resp = reqwest::get(url).await.expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    resp.text().await.expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_whole_pickup_and_never_show_a_link() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    create_staff(&app, AGENT, Role::Agent).await;
    let smtp = SmtpServer::start();
    let smtp_url = smtp.url();
    let mut serve = Serve::start(
        &env,
        &[
            ("SEALPOST_SMTP_URL", &smtp_url),
            ("SEALPOST_METRICS_BIND", "127.0.0.1:0"),
        ],
    );
    let metrics = serve.metrics.clone().unwrap();
    let mut staff = Browser::signed_in(&serve.base, AGENT).await;
    let file = bytes(300_000, 7);
    let id = compose(&mut staff, &["email_code"], "", &file).await;

    // The worker in `serve` mails the link over SMTP.
    let to_customer = async |n: usize| -> Vec<String> {
        eventually("customer mail", async || {
            let mails: Vec<String> = smtp
                .accepted()
                .iter()
                .filter(|raw| header(raw, "To").is_some_and(|t| t.contains(CUSTOMER)))
                .map(|raw| parts(raw).0)
                .collect();
            (mails.len() >= n).then_some(mails)
        })
        .await
    };
    let link = link_path(&to_customer(1).await[0]);
    let token = link.trim_start_matches("/p/").to_owned();
    assert!(token.len() >= 40, "{link}");

    let mut customer = Browser::new(&serve.base);
    assert_eq!(customer.get(&link).await.status, 200);
    assert_eq!(
        customer.post(&format!("{link}/code"), &[]).await.status,
        303
    );
    let code = six_digits(&to_customer(2).await[1]);
    let r = customer
        .post(&format!("{link}/verify"), &[("code", &code)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let download = customer.download(&format!("/pickup/{id}/files/1")).await;
    assert_eq!(download, file);
    // A path no route knows, carrying something secret-looking.
    let stray = reqwest::get(format!("{}/nowhere/Stray-Secret-Path-4711", serve.base))
        .await
        .unwrap();
    assert_eq!(stray.status().as_u16(), 404);

    // Counts land after the worker records its round: poll for them.
    let text = eventually("email counters", async || {
        let text = scrape(&metrics).await;
        (series(&text, r#"sealpost_emails_total{outcome="sent"}"#)? >= 2.0).then_some(text)
    })
    .await;
    for (name, at_least) in [
        ("sealpost_messages_sent_total", 1.0),
        ("sealpost_codes_sent_total", 1.0),
        (r#"sealpost_verifications_total{result="ok"}"#, 1.0),
        (
            r#"sealpost_http_requests_total{route="/p/{token}",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"sealpost_http_requests_total{route="/p/{token}/verify",method="POST",status="303"}"#,
            1.0,
        ),
        (
            r#"sealpost_http_requests_total{route="/pickup/{id}/files/{position}",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"sealpost_http_requests_total{route="unmatched",method="GET",status="404"}"#,
            1.0,
        ),
        (
            r#"sealpost_http_request_duration_seconds_count{route="/p/{token}"}"#,
            1.0,
        ),
    ] {
        let value = series(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
        assert!(value >= at_least, "{name} = {value}");
    }
    assert_eq!(
        series(&text, r#"sealpost_emails_total{outcome="failed"}"#),
        Some(0.0)
    );
    assert_eq!(series(&text, "sealpost_outbox_pending"), Some(0.0));
    assert!(text.contains("sealpost_shreds_total"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Templates only: no link secret, message id, code or stray path.
    for secret in [
        token.as_str(),
        &id.to_string(),
        &code,
        "Stray-Secret-Path",
        CUSTOMER,
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
    }

    // The public listener does not serve them.
    let public = reqwest::get(format!("{}/metrics", serve.base))
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404);

    serve.sigterm();
    assert!(serve.wait_exit(Duration::from_secs(30)).success());
    // With staff accounts there is no setup link: nothing on stdout.
    assert!(serve.stdout.lock().unwrap().is_empty());
}

/// An SMTP server that accepts connections and never says a word, so a
/// send hangs (until lettre's 60 s timeout, longer than these tests).
fn silent_smtp() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("smtp://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

/// Splits a raw HTTP/1.1 response at the end of its headers.
fn split_head(raw: &[u8]) -> Option<(String, usize)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((String::from_utf8_lossy(&raw[..end]).to_lowercase(), end))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_a_download_releases_mail_leases_and_exits_0() {
    let env = TestEnv::new().await;
    let app = env.app().await;
    create_staff(&app, AGENT, Role::Agent).await;
    let smtp_url = silent_smtp();
    let mut serve = Serve::start(
        &env,
        &[
            ("SEALPOST_SMTP_URL", &smtp_url),
            ("SEALPOST_SHUTDOWN_TIMEOUT_SECS", "5"),
        ],
    );
    let mut staff = Browser::signed_in(&serve.base, AGENT).await;
    // Large enough that the download cannot sit whole in socket buffers.
    let file = bytes(24 * 1024 * 1024, 11);
    let id = compose(&mut staff, &["access_code"], "Phone-Code-8642", &file).await;

    // The worker claims the pickup email and hangs on the silent server.
    let row: i64 = eventually("a leased outbox row", async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT id FROM outbox WHERE message_id = $1 AND lease_owner IS NOT NULL",
        )
        .bind(id.to_string())
        .fetch_optional(app.db.pool())
        .await
        .unwrap()
    })
    .await;

    // The emailed link never arrives; a fresh one is issued here.
    let mut tx = app.db.begin().await.unwrap();
    let url = app
        .deliveries
        .issue_link(&mut tx, id, &app.config.public_url)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let link = link_path(secrecy::ExposeSecret::expose_secret(&url));
    let mut customer = Browser::new(&serve.base);
    assert_eq!(customer.get(&link).await.status, 200);
    let r = customer
        .post(
            &format!("{link}/verify"),
            &[("access_code", "Phone-Code-8642")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = customer.cookies["sealpost"].clone();

    // Start the download and read only its first bytes.
    let mut socket = TcpStream::connect(serve.addr()).unwrap();
    write!(
        socket,
        "GET /pickup/{id}/files/1 HTTP/1.1\r\nHost: x\r\nCookie: sealpost={cookie}\r\n\
             Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while split_head(&raw).is_none() {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the headers");
        raw.extend_from_slice(&buf[..n]);
    }
    let (head, body_start) = split_head(&raw).unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", file.len())),
        "{head}"
    );

    serve.sigterm();
    // New connections are refused once the listener has closed.
    let started = Instant::now();
    while TcpStream::connect(serve.addr()).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Read slowly for a moment: the download is still in flight.
    std::thread::sleep(Duration::from_millis(500));
    socket.read_to_end(&mut raw).unwrap();
    assert_eq!(raw.len() - body_start, file.len(), "whole body");
    assert!(raw[body_start..] == file[..], "same bytes");

    let status = serve.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
    let log = serve.stderr.lock().unwrap().join("\n");
    assert!(log.contains("released the leases"), "{log}");

    // The lease is handed back: any instance may send the email now,
    // not after the 5-minute lease. The attempt was not a failure.
    let state = sqlx::query(
        "SELECT lease_owner, lease_until, sent_at, failed_at, last_error, next_attempt_at
             FROM outbox WHERE id = $1",
    )
    .bind(row)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let owner: Option<String> = state.get(0);
    let until: Option<i64> = state.get(1);
    let sent: Option<i64> = state.get(2);
    let failed: Option<i64> = state.get(3);
    let error: Option<String> = state.get(4);
    let next: i64 = state.get(5);
    assert_eq!(
        (owner, until, sent, failed, error),
        (None, None, None, None, None)
    );
    assert!(next <= crate::support::env::now(), "due at once");
    let claimed = app.outbox.claim("next-instance", 10).await.unwrap();
    assert!(claimed.contains(&row), "{claimed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let env = TestEnv::new().await;
    let mut serve = Serve::start(
        &env,
        &[
            ("SEALPOST_LOG_FORMAT", "json"),
            ("SEALPOST_LOG", "info,sealpost=debug"),
        ],
    );
    let token = "JsonLogCanaryToken0123456789abcdefghijklmnopq";
    for path in ["/healthz".to_owned(), format!("/p/{token}")] {
        reqwest::get(format!("{}{path}", serve.base)).await.unwrap();
    }
    serve.sigterm();
    assert!(serve.wait_exit(Duration::from_secs(30)).success());
    // The reader threads see EOF once the process is gone.
    std::thread::sleep(Duration::from_millis(200));

    let stderr = serve.stderr.lock().unwrap().clone();
    let stdout = serve.stdout.lock().unwrap().clone();
    let mut events = Vec::new();
    for line in stderr.iter().chain(&stdout) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        assert!(!line.contains(token), "link secret logged: {line}");
        events.push(value);
    }
    let has = |message: &str| events.iter().any(|e| e["message"] == message);
    assert!(has("sealpost is listening"), "{stderr:?}");
    assert!(has("stopped"), "{stderr:?}");
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "request" && e["route"] == "/p/{token}"),
        "{stderr:?}"
    );
    // A fresh installation's setup link goes to stdout, as JSON too.
    assert!(
        stdout
            .iter()
            .any(|l| l.contains("setup_url") && l.contains("/setup/")),
        "{stdout:?}"
    );
}
