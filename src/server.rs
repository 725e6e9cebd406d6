//! `sealpost serve`: the HTTP listener and background housekeeping.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::config::{Config, LogFormat};

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
        crate::web::csrf::anonymous_tokens,
    ))
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
        .merge(crate::web::dev_mailbox::routes())
        // Outside the session and CSRF layers: the API takes bearer tokens
        // only, and no cookie is read or set there.
        .merge(crate::api::routes(&app))
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
        crate::mail::spawn(app.outbox.clone(), stop.clone(), timeout),
        crate::webhooks::spawn(app.webhooks.clone(), stop.clone(), timeout),
        tokio::spawn(delete_expired_sessions(app.clone(), stop.clone())),
        tokio::spawn(crate::deliveries::run_expiry(
            app.deliveries.clone(),
            stop.clone(),
        )),
        tokio::spawn(crate::incoming::run_retention(
            app.incoming.clone(),
            stop.clone(),
        )),
    ];
    let timeouts = HttpTimeouts::from_config(&app.config);
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(serve_http(
            l,
            crate::metrics::router(crate::metrics::Scrape {
                metrics: app.metrics.clone(),
                db: app.db.clone(),
                clock: app.clock.clone(),
            }),
            timeouts,
            stop.clone(),
        ))
    });
    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });

    let server = serve_http(listener, router(app.clone()), timeouts, stop.clone());
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

/// What a connection may take before it is closed.
#[derive(Clone, Copy, Debug)]
pub struct HttpTimeouts {
    /// To send a request's headers; also how long a kept-alive connection
    /// may sit idle (hyper starts this timer as soon as it is idle).
    pub header_read: Duration,
    /// With no byte moving either way: a client that stopped reading a
    /// download or stopped sending a body.
    pub idle: Duration,
}

impl HttpTimeouts {
    pub fn from_config(config: &Config) -> Self {
        HttpTimeouts {
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
        }
    }
}

/// Serves `router` on `listener` (HTTP/1.1, with the client address as
/// `ConnectInfo<SocketAddr>`) until `stop` is cancelled, then stops
/// accepting and waits for the requests in flight. Our own accept loop
/// rather than `axum::serve`, which has neither a header-read timeout
/// (a slowloris client could hold a connection for ever) nor a way to drop
/// a connection whose client stopped reading.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    timeouts: HttpTimeouts,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            // The peer gave up before we got to it: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: spinning would not
                // help, waiting a little might.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let io = TokioIo::new(Watchdog::new(stream, timeouts.idle));
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: HyperRequest| {
            req.extensions_mut().insert(ConnectInfo(remote));
            let mut router = router.clone();
            async move {
                std::future::poll_fn(|cx| Service::<HyperRequest>::poll_ready(&mut router, cx))
                    .await?;
                router.call(req).await
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            // Timeouts and clients that hang up end up here; nothing to act on.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

type HyperRequest = axum::http::Request<hyper::body::Incoming>;

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection that fails once no byte has moved either way for `limit`
/// while it waits on the socket. A download whose client stopped reading
/// then ends (and its body, with its download slot, is dropped) instead of
/// waiting for ever; so does a request body that stopped arriving.
struct Watchdog<T> {
    io: T,
    limit: Duration,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> Watchdog<T> {
    fn new(io: T, limit: Duration) -> Self {
        let now = Instant::now();
        Watchdog {
            io,
            limit,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Called when the socket is not ready: arms the timer for the current
    /// deadline and says whether it has passed.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.last_progress + self.limit;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    /// A write's outcome: bytes written count as progress; a write that
    /// cannot proceed is subject to the stall timer.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.progress();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.pending_or_timeout(cx),
        }
    }

    fn pending_or_timeout<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.stalled(cx) {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no progress on the connection",
            )))
        } else {
            Poll::Pending
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watchdog<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progress();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending_or_timeout(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watchdog<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.written(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.pending_or_timeout(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// On a fresh installation, prints a one-time link to create the first
/// admin. It goes to stdout for the operator only, never through tracing:
/// log lines are shipped and kept, and the link is a credential.
async fn announce_setup_link(app: &App) {
    match app.links.issue_setup_link().await {
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
        if let Err(e) = app.idempotency.purge().await {
            tracing::warn!(error = %e, "could not forget old idempotency keys; will retry");
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
