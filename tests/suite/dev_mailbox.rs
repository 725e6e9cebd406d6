//! The dev mailbox answers only requests that name this machine in `Host`
//! (a loopback name or address, or the configured public host), so a page
//! that rebinds its own domain to 127.0.0.1 cannot read links and codes
//! from a browser on the host (issue 11 §7).

use sealpost::app::App;
use sealpost::config::Config;
use sealpost::staff::Role;

use crate::support::env::TestEnv;
use crate::support::http::{Browser, create_staff, serve};

const AGENT: &str = "agent@example.com";

async fn app_with_public_url(env: &TestEnv, public_url: &str) -> App {
    let mut vars = env.env_vars();
    vars.push(("SEALPOST_PUBLIC_URL".to_owned(), public_url.to_owned()));
    App::open(Config::load(None, vars).unwrap()).await.unwrap()
}

/// A GET from a loopback client with the given `Host` header.
async fn get_with_host(base: &str, path: &str, host: &str) -> u16 {
    let mut b = Browser::new(base);
    b.extra.push(("Host".to_owned(), host.to_owned()));
    b.get(path).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_host_cannot_read_the_dev_mailbox() {
    let env = TestEnv::new().await;
    let app = app_with_public_url(&env, "http://portal.example.test:8080").await;
    assert!(app.outbox.is_dev_mailbox());
    create_staff(&app, AGENT, Role::Agent).await;
    let base = serve(app.clone()).await;

    // One mail in the box: the pickup link of a composed message.
    let mut staff = Browser::signed_in(&base, AGENT).await;
    let token = staff.csrf("/compose").await;
    let form = reqwest::multipart::Form::new()
        .text("csrf", token)
        .text("recipient", "customer@example.org")
        .text("body", "Hello")
        .text("expiry_hours", "48")
        .text("method", "email_code")
        .text("retention", "keep");
    let r = staff.post_multipart("/compose", form).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(app.outbox.run_once().await.unwrap(), 1);
    let list = Browser::new(&base).get("/dev/mailbox").await;
    assert_eq!(list.status, 200);
    let start = list.body.find("/dev/mailbox/").expect("a mail is listed");
    let one: String = list.body[start..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();

    let port = base.rsplit(':').next().unwrap();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        "127.0.0.2:9".to_owned(),
        "[::1]:8080".to_owned(),
        "portal.example.test".to_owned(),
        "PORTAL.example.test:80".to_owned(),
    ] {
        assert_eq!(
            get_with_host(&base, "/dev/mailbox", &host).await,
            200,
            "{host}"
        );
        assert_eq!(get_with_host(&base, &one, &host).await, 200, "{host}");
    }
    for host in [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
        "localhost.attacker.example".to_owned(),
        "127.0.0.1.nip.io".to_owned(),
        "portal.example.test.attacker.example".to_owned(),
        "192.168.1.10".to_owned(),
    ] {
        assert_eq!(
            get_with_host(&base, "/dev/mailbox", &host).await,
            404,
            "{host}"
        );
        assert_eq!(get_with_host(&base, &one, &host).await, 404, "{host}");
    }

    // A burst of rebinding requests in parallel: every one is a 404,
    // while the local user keeps reading.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let base = base.clone();
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            if i % 5 == 0 {
                (true, get_with_host(&base, &one, "localhost").await)
            } else {
                (
                    false,
                    get_with_host(&base, &one, "rebind.attacker.example").await,
                )
            }
        }));
    }
    for t in tasks {
        let (local, status) = t.await.unwrap();
        assert_eq!(status, if local { 200 } else { 404 });
    }
}
