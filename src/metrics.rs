//! Prometheus metrics, served at `/metrics` on a listener of their own
//! (`metrics_bind`) so the public listener never exposes them.
//!
//! Recording has to be cheap (the landing page serves tens of thousands of
//! requests a second): counters and the latency histogram are atomics, and
//! the per-route families are found under a read lock by a label that
//! borrows axum's `MatchedPath` (an `Arc` clone, no allocation). Routes are
//! labelled by their template (`/p/{token}`), never the concrete path,
//! which carries link secrets.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::clock::SharedClock;
use crate::store::Db;

/// The route label of a request no route matched (its path is not logged
/// or counted: it may be a mistyped link).
pub const UNMATCHED: &str = "unmatched";

/// Every metric Sealpost keeps. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Latency>,
    outbox_pending: Gauge,
    outbox_oldest_age: Gauge,
    messages_sent: Counter,
    emails_sent: Counter,
    emails_failed: Counter,
    emails_deferred: Counter,
    codes_sent: Counter,
    verifications_ok: Counter,
    verifications_failed: Counter,
    lockouts: Counter,
    replies: Counter,
    submissions: Counter,
    inbox_uploads: Counter,
    uploads_refused: Outcomes,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

/// A one-label family whose members are created up front, so recording is
/// a plain atomic increment on a kept handle.
type Outcomes = Family<[(&'static str, &'static str); 1], Counter>;

fn outcome(family: &Outcomes, key: &'static str, value: &'static str) -> Counter {
    family.get_or_create(&[(key, value)]).clone()
}

impl Metrics {
    /// `shreds` is the vault's own counter: every shred path ends in the
    /// vault, so it counts them there.
    pub fn new(shreds: Counter) -> Metrics {
        let mut registry = Registry::with_prefix("sealpost");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Latency>::default();
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to response headers, by route template",
            Unit::Seconds,
            http_duration.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Emails queued and not yet sent or failed for good (read at scrape time)",
            outbox_pending.clone(),
        );
        let outbox_oldest_age = Gauge::default();
        registry.register_with_unit(
            "outbox_oldest_pending_age",
            "Age of the oldest email still to send; 0 when none (read at scrape time)",
            Unit::Seconds,
            outbox_oldest_age.clone(),
        );
        let messages_sent = Counter::default();
        registry.register(
            "messages_sent",
            "Messages staff sent (committed with their pickup email)",
            messages_sent.clone(),
        );
        let emails = Outcomes::default();
        registry.register(
            "emails",
            "Email send attempts by outcome: sent, failed (for good) or deferred (will retry)",
            emails.clone(),
        );
        let codes_sent = Counter::default();
        registry.register(
            "codes_sent",
            "Verification codes issued to customers",
            codes_sent.clone(),
        );
        let verifications = Outcomes::default();
        registry.register(
            "verifications",
            "Customer verification attempts by result: ok or failed",
            verifications.clone(),
        );
        let lockouts = Counter::default();
        registry.register(
            "pickup_lockouts",
            "Messages locked after too many failed verifications",
            lockouts.clone(),
        );
        let incoming = Outcomes::default();
        registry.register(
            "incoming",
            "Items customers sent in, by kind: reply, request (submission) or inbox",
            incoming.clone(),
        );
        let uploads_refused = Outcomes::default();
        registry.register(
            "uploads_refused",
            "Customer uploads refused, by reason (file_type, too_large, malware, \
             scanner_unavailable, …); nothing of them is kept",
            uploads_refused.clone(),
        );
        registry.register(
            "shreds",
            "Messages crypto-shredded (revoked, expired or picked up)",
            shreds.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                http_requests,
                http_duration,
                outbox_pending,
                outbox_oldest_age,
                messages_sent,
                emails_sent: outcome(&emails, "outcome", "sent"),
                emails_failed: outcome(&emails, "outcome", "failed"),
                emails_deferred: outcome(&emails, "outcome", "deferred"),
                codes_sent,
                verifications_ok: outcome(&verifications, "result", "ok"),
                verifications_failed: outcome(&verifications, "result", "failed"),
                lockouts,
                replies: outcome(&incoming, "kind", "reply"),
                submissions: outcome(&incoming, "kind", "request"),
                inbox_uploads: outcome(&incoming, "kind", "inbox"),
                uploads_refused,
                registry,
            }),
        }
    }

    /// Counts one HTTP request. `route` is the matched template, if any.
    pub fn record_request(
        &self,
        route: Option<MatchedPath>,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let route = Route(route);
        self.inner
            .http_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(elapsed);
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    pub fn reply_received(&self) {
        self.inner.replies.inc();
    }

    /// A secure-inbox upload arrived.
    pub fn inbox_received(&self) {
        self.inner.inbox_uploads.inc();
    }

    /// A document request's files arrived.
    pub fn request_submitted(&self) {
        self.inner.submissions.inc();
    }

    /// `reason` is one of a fixed set of classes (never a file name).
    pub fn upload_refused(&self, reason: &'static str) {
        self.inner
            .uploads_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn message_sent(&self) {
        self.inner.messages_sent.inc();
    }

    pub fn email_sent(&self) {
        self.inner.emails_sent.inc();
    }

    pub fn email_failed(&self) {
        self.inner.emails_failed.inc();
    }

    pub fn email_deferred(&self) {
        self.inner.emails_deferred.inc();
    }

    pub fn code_sent(&self) {
        self.inner.codes_sent.inc();
    }

    pub fn verification(&self, ok: bool) {
        if ok {
            self.inner.verifications_ok.inc();
        } else {
            self.inner.verifications_failed.inc();
        }
    }

    pub fn lockout(&self) {
        self.inner.lockouts.inc();
    }

    /// The exposition: the outbox gauges are read from the database first
    /// (one indexed query over pending rows only). If that fails the rest
    /// is still served and the gauges keep their last values.
    pub async fn render(&self, db: &Db, now: i64) -> Result<String, std::fmt::Error> {
        match crate::store::outbox::pending(db).await {
            Ok((count, oldest)) => {
                self.inner.outbox_pending.set(count);
                let age = oldest.map_or(0, |t| now.saturating_sub(t).max(0));
                self.inner.outbox_oldest_age.set(age);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the outbox depth"),
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }
}

/// What a scrape reads: the metrics, and the database and clock for the
/// outbox gauges.
#[derive(Clone)]
pub struct Scrape {
    pub metrics: Metrics,
    pub db: Db,
    pub clock: SharedClock,
}

/// The metrics listener's routes: `/metrics` and nothing else.
pub fn router(scrape_from: Scrape) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(scrape_from)
}

async fn scrape(State(s): State<Scrape>) -> Response {
    match s.metrics.render(&s.db, s.clock.now()).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A bounded method label: anything unusual is `OTHER`, so a client cannot
/// grow the label set with made-up methods.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// A route template label, sharing the router's own string.
#[derive(Clone, Debug)]
struct Route(Option<MatchedPath>);

impl Route {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or(UNMATCHED, MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: Route,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

/// Upper bounds of the latency buckets, in microseconds (1 ms to 5 min;
/// downloads are timed to their headers, so long tails are rare).
const BUCKETS_MICROS: [u64; 16] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// A latency histogram made of atomics only. The crate's own `Histogram`
/// takes a mutex on every observation, which the hottest route would
/// contend on.
#[derive(Debug, Default)]
struct Latency {
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    counts: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl Latency {
    fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_MICROS
            .iter()
            .position(|&upper| micros <= upper)
            .unwrap_or(BUCKETS_MICROS.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Relaxed reads of separate atomics: a scrape racing a request may
        // see it in a bucket but not yet in the sum, which is harmless. The
        // count is the buckets' total, so those two always agree.
        let uppers = BUCKETS_MICROS
            .iter()
            .map(|&u| u as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = uppers
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative_in_the_exposition() -> Result<(), std::fmt::Error> {
        let mut registry = Registry::default();
        let latency = Family::<RouteLabels, Latency>::default();
        registry.register_with_unit("t", "t", Unit::Seconds, latency.clone());
        let labels = RouteLabels { route: Route(None) };
        for ms in [0, 3, 3, 700, 400_000] {
            latency
                .get_or_create(&labels)
                .observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        for line in [
            r#"t_seconds_count{route="unmatched"} 5"#,
            r#"t_seconds_bucket{le="0.001",route="unmatched"} 1"#,
            r#"t_seconds_bucket{le="0.005",route="unmatched"} 3"#,
            r#"t_seconds_bucket{le="1.0",route="unmatched"} 4"#,
            r#"t_seconds_bucket{le="300.0",route="unmatched"} 4"#,
            r#"t_seconds_bucket{le="+Inf",route="unmatched"} 5"#,
            r#"t_seconds_sum{route="unmatched"} 400.706"#,
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
        Ok(())
    }

    #[test]
    fn unusual_methods_share_one_label() {
        let odd = axum::http::Method::from_bytes(b"BREW").ok();
        assert_eq!(odd.as_ref().map(method_label), Some("OTHER"));
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
    }
}
