//! `sealpost serve`: the HTTP listener and background housekeeping.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::config::LogFormat;

/// How often orphaned blobs are swept, and how old an orphan must be: long
/// enough that a slow multi-part upload still in flight is never touched.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
const SWEEP_GRACE: Duration = Duration::from_secs(24 * 3600);

pub fn router(app: App) -> Router {
    let https = app.config.is_https();
    let pages = crate::web::session::layer(
        crate::portal::routes().merge(crate::pickup::routes()),
        &app.db,
        https,
    )
    .layer(axum::middleware::from_fn_with_state(
        app.clone(),
        crate::web::csrf::reject_cross_site,
    ));
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/static/style.css", get(crate::web::stylesheet))
        .merge(pages)
        .merge(crate::pickup::landing_route())
        .merge(crate::mail::routes())
        .fallback(|| async { crate::web::PageError::NotFound })
        // A layer (not a route layer) so unmatched requests are counted too;
        // it runs after routing, so the matched template is known.
        .layer(axum::middleware::from_fn_with_state(
            app.metrics.clone(),
            crate::web::log_request,
        ))
        .with_state(app);
    crate::web::with_security_headers(routes, https)
}

/// Ready when both the database and the blob store answer: without either,
/// no message can be sent or read.
async fn ready(State(app): State<App>) -> (StatusCode, &'static str) {
    if let Err(e) = app.db.ping().await {
        tracing::warn!(error = %e, "readiness check: database unreachable");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable");
    }
    if let Err(e) = app.vault.check_blob_store().await {
        tracing::warn!(error = %e, "readiness check: blob store unreachable");
        return (StatusCode::SERVICE_UNAVAILABLE, "blob store unreachable");
    }
    (StatusCode::OK, "ready")
}

/// After the shutdown timeout, how much longer background tasks get to
/// finish a database write they are in before they are aborted.
const TASK_MARGIN: Duration = Duration::from_secs(10);
/// How long closing the database may take: connections still held by
/// requests cut off at the timeout would otherwise keep it waiting.
const CLOSE_DB_WITHIN: Duration = Duration::from_secs(5);

/// Serves until SIGINT/SIGTERM, then shuts down in order: stop accepting;
/// let requests in flight (uploads, downloads) finish within
/// `shutdown_timeout`; meanwhile stop the background tasks between units of
/// work (the mail worker releases the leases of emails it could not
/// finish); then close the database.
pub async fn serve(app: App) -> std::io::Result<()> {
    let listener = TcpListener::bind(app.config.bind).await?;
    let metrics_listener = match app.config.metrics_bind {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    tracing::info!(
        bind = %listener.local_addr()?,
        public_url = %app.config.public_url,
        "sealpost is listening"
    );
    if let Some(l) = &metrics_listener {
        tracing::info!(metrics_bind = %l.local_addr()?, "metrics are served at /metrics");
    }
    announce_setup_link(&app).await;
    if app.outbox.is_dev_mailbox() {
        tracing::warn!(
            dev_mailbox = %format!("{}/dev/mailbox", app.config.public_url),
            "no smtp_url is set: email is not sent but kept in the dev mailbox, \
             readable from this machine only (set SEALPOST_SMTP_URL to send mail)"
        );
    }
    let timeout = app.config.shutdown_timeout;
    let stop = CancellationToken::new();
    let background = vec![
        tokio::spawn(sweep_forever(app.clone(), stop.clone())),
        crate::mail::spawn(&app, stop.clone(), timeout),
        tokio::spawn(delete_expired_sessions(app.clone(), stop.clone())),
        tokio::spawn(crate::pickup::expiry::run_forever(
            app.clone(),
            stop.clone(),
        )),
    ];
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(
            axum::serve(l, crate::metrics::router(app.clone()))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        )
    });
    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });

    let service = router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(timeout).await;
    };
    let result = tokio::select! {
        result = server => result,
        () = deadline => {
            // Dropping the server stops waiting; the connections left are
            // closed when the runtime shuts down.
            tracing::warn!(
                timeout_secs = timeout.as_secs(),
                "shutdown timeout reached with requests still in flight; cutting them off"
            );
            Ok(())
        }
    };
    // Also when serving failed rather than a signal ending it.
    stop.cancel();
    signal.abort();

    let aborts: Vec<_> = background.iter().map(|t| t.abort_handle()).collect();
    let finished = tokio::time::timeout(
        timeout + TASK_MARGIN,
        futures_util::future::join_all(background),
    )
    .await;
    if finished.is_err() {
        tracing::warn!("background tasks did not stop in time; aborting them");
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if tokio::time::timeout(CLOSE_DB_WITHIN, app.db.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still in use at exit");
    }
    tracing::info!("stopped");
    result
}

/// On a fresh installation, prints a one-time link to create the first
/// admin. It goes to stdout for the operator only, never through tracing:
/// log lines are shipped and kept, and the link is a credential.
async fn announce_setup_link(app: &App) {
    match crate::portal::setup::issue_setup_link(app).await {
        Ok(Some(url)) => {
            let text = "No staff accounts yet. Create the first admin within 1 hour at the \
                        setup_url. (The page only answers on this machine: open it here or \
                        through an SSH tunnel. Restart Sealpost for a new link.)";
            match app.config.log_format {
                // Still not a log event, but in the shape the log collector
                // reading this output expects.
                LogFormat::Json => println!(
                    "{}",
                    serde_json::json!({ "message": text, "setup_url": url.expose_secret() })
                ),
                LogFormat::Text => println!(
                    "No staff accounts yet. Create the first admin within 1 hour at: {}\n\
                     (The page only answers on this machine: open it here or through an SSH tunnel. \
                     Restart Sealpost for a new link.)",
                    url.expose_secret()
                ),
            }
        }
        Ok(None) => {}
        // The CLI (`sealpost admin create-user`) still works, so keep serving.
        Err(e) => tracing::warn!(
            error = %e,
            "could not issue a first-run setup link; create an admin with `sealpost admin create-user`"
        ),
    }
}

/// Background loops stop between units of work, never inside one.
async fn sweep_forever(app: App, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match app.vault.sweep(SWEEP_GRACE).await {
            Ok(r) if r.removed_blobs + r.removed_partials > 0 => {
                let detail = serde_json::json!({
                    "removed_blobs": r.removed_blobs,
                    "removed_partials": r.removed_partials,
                });
                let event = Event::new(Actor::System, Action::OrphansSwept).detail(detail);
                if let Err(e) = app.audit.record_now(&event).await {
                    tracing::warn!(error = %e, "could not audit a blob sweep");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "blob sweep failed; will retry"),
        }
    }
}

async fn delete_expired_sessions(app: App, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = crate::web::session::delete_expired(&app.db).await {
            tracing::warn!(error = %e, "could not delete expired sessions; will retry");
        }
        // Throttle rows whose back-off and memory are over hold nothing back.
        if let Err(e) = app.sign_in.prune().await {
            tracing::warn!(error = %e, "could not prune sign-in throttles; will retry");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
