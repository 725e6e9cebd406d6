//! The client address behind reverse proxies, through the real router:
//! `X-Forwarded-For` counts only from a configured proxy, and a proxied
//! request is never the local user of the loopback-only pages.

use sealpost::app::App;
use sealpost::config::Config;
use sealpost::staff::Role;

use crate::support::env::TestEnv;
use crate::support::http::{Browser, create_staff, serve};

async fn app_with(env: &TestEnv, trusted: Option<&str>) -> App {
    let mut vars = env.env_vars();
    if let Some(t) = trusted {
        vars.push(("SEALPOST_TRUSTED_PROXIES".to_owned(), t.to_owned()));
    }
    App::open(Config::load(None, vars).unwrap()).await.unwrap()
}

/// The address the audit log recorded for the latest failed sign-in.
async fn last_failed_sign_in_ip(app: &App) -> Option<String> {
    let events = app.audit.events_between(0, i64::MAX).await.unwrap();
    events
        .into_iter()
        .rev()
        .find(|e| e.action == "staff.sign_in_failed")
        .and_then(|e| e.ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let env = TestEnv::new().await;
    let direct = app_with(&env, None).await;
    create_staff(&direct, "agent@example.com", Role::Agent).await;
    let spoof = "198.51.100.1, 203.0.113.9";

    // No proxies configured: a client's own header is ignored.
    let mut b = Browser::new(&serve(direct.clone()).await);
    b.extra
        .push(("X-Forwarded-For".to_owned(), spoof.to_owned()));
    b.sign_in("agent@example.com", "wrong password").await;
    assert_eq!(
        last_failed_sign_in_ip(&direct).await.as_deref(),
        Some("127.0.0.1")
    );
    // Without the header the loopback client may read the dev mailbox.
    let mut local = Browser::new(&b.base);
    assert_eq!(local.get("/dev/mailbox").await.status, 200);

    // Behind a proxy on this machine: the right-most address it did
    // not add itself is the client, not what the client claimed.
    let proxied = app_with(&env, Some("127.0.0.1, 10.0.0.0/8")).await;
    let base = serve(proxied.clone()).await;
    let mut b = Browser::new(&base);
    b.extra
        .push(("X-Forwarded-For".to_owned(), format!("{spoof}, 10.1.2.3")));
    b.sign_in("agent@example.com", "wrong password").await;
    assert_eq!(
        last_failed_sign_in_ip(&proxied).await.as_deref(),
        Some("203.0.113.9")
    );
    // Whatever the header says, a proxied request is not local, and
    // neither is the proxy itself.
    let mut via_proxy = Browser::new(&base);
    via_proxy
        .extra
        .push(("X-Forwarded-For".to_owned(), "127.0.0.1".to_owned()));
    assert_eq!(via_proxy.get("/dev/mailbox").await.status, 404);
    assert_eq!(Browser::new(&base).get("/dev/mailbox").await.status, 404);
}
