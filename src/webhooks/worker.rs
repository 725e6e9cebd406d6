//! The delivery worker. Deliveries are claimed with a lease
//! (compare-and-set on `lease_until`, plus `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; SQLite's `BEGIN IMMEDIATE` makes claims single-writer), so
//! one instance at a time sends a delivery, and a crashed worker's claims
//! come back when their lease runs out (at least once). Of a message's
//! events for one endpoint only the earliest pending one can be claimed,
//! so they arrive in order. A 2xx answer delivers; anything else is
//! retried with exponential back-off and jitter up to a cap, until
//! [`GIVE_UP_AFTER_SECONDS`] after it was queued, then it fails.

use std::collections::HashMap;
use std::time::Duration;

use rand::RngExt;
use secrecy::SecretString;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::signing::{self, SigningKey};
use super::{WebhookError, Webhooks, net};
use crate::store::webhooks::{self as store, DeliveryKey, DeliveryRow, Miss};
use crate::vault::Purpose;

/// Deliveries claimed per round.
const BATCH: usize = 64;
/// How long a claim lasts: well above one attempt (10 s timeout) and a
/// round's bookkeeping, so a live worker never loses a lease mid-send.
pub const LEASE_SECONDS: i64 = 120;
/// Failed attempts are retried for this long after the event was queued.
pub const GIVE_UP_AFTER_SECONDS: i64 = 3 * 24 * 3600;
const FIRST_BACKOFF_SECONDS: i64 = 10;
const MAX_BACKOFF_SECONDS: i64 = 3600;
/// How often an idle worker looks for due deliveries.
const POLL: Duration = Duration::from_secs(1);
/// Finished deliveries stay in the log this long.
const KEEP_SECONDS: i64 = 30 * 24 * 3600;
/// How often old log rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Delay before retry number `attempts` + 1, before jitter: 10 s, 20 s,
/// 40 s, … at most an hour.
pub fn backoff(attempts: i64) -> i64 {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    FIRST_BACKOFF_SECONDS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_BACKOFF_SECONDS)
}

/// [`backoff`] plus up to a fifth more at random, so endpoints that failed
/// together do not all retry in the same second.
fn backoff_with_jitter(attempts: i64) -> i64 {
    let base = backoff(attempts);
    base + rand::rng().random_range(0..=base / 5)
}

/// What happened to one attempt.
enum Outcome {
    Delivered(i64),
    Retry(Option<i64>, &'static str, i64),
    Failed(Option<i64>, &'static str),
}

/// An endpoint as one round needs it.
#[derive(Clone)]
struct Target {
    url: url::Url,
    key: SigningKey,
    allow_private: bool,
}

/// Starts the worker; it runs until `stop` is cancelled, then lets
/// attempts in flight finish for up to `grace` and releases the rest.
pub fn spawn(webhooks: Webhooks, stop: CancellationToken, grace: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_prune: Option<tokio::time::Instant> = None;
        while !stop.is_cancelled() {
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                let before = webhooks.clock.now() - KEEP_SECONDS;
                if let Err(e) = store::prune(webhooks.db(), before).await {
                    tracing::warn!(error = %e, "could not prune the webhook log");
                }
            }
            match webhooks.run_round(&stop, grace).await {
                Ok(n) if n >= BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook round failed; will retry"),
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
        tracing::info!("webhook worker stopped");
    })
}

impl Webhooks {
    /// Claims what is due and tries to deliver it; returns how many
    /// deliveries were attempted.
    pub async fn run_once(&self) -> Result<usize, WebhookError> {
        self.run_round(&CancellationToken::new(), Duration::ZERO)
            .await
    }

    /// Claims up to `limit` due deliveries for `owner` without sending
    /// them (tests play a worker that crashes after claiming).
    pub async fn claim(&self, owner: &str, limit: usize) -> Result<usize, WebhookError> {
        Ok(self.claim_due(owner, limit).await?.len())
    }

    async fn run_round(
        &self,
        stop: &CancellationToken,
        grace: Duration,
    ) -> Result<usize, WebhookError> {
        if stop.is_cancelled() {
            return Ok(0);
        }
        let owner = Uuid::new_v4().to_string();
        let claimed = self.claim_due(&owner, BATCH).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let count = claimed.len();
        let targets = self.targets(&claimed).await?;
        let mut unfinished: Vec<DeliveryKey> = claimed.iter().map(key_of).collect();
        let mut tasks = JoinSet::new();
        for row in claimed {
            let this = self.clone();
            let target = targets.get(&row.endpoint_id).cloned();
            tasks.spawn(async move {
                let outcome = match target {
                    Some(t) => this.attempt(&row, &t).await,
                    None => Outcome::Failed(None, "endpoint disabled"),
                };
                (row, outcome)
            });
        }
        let mut outcomes = Vec::with_capacity(count);
        let give_up = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(give_up);
        let mut abandoned = false;
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    None => break,
                    Some(Ok(pair)) => {
                        let key = key_of(&pair.0);
                        unfinished.retain(|k| *k != key);
                        outcomes.push(pair);
                    }
                    Some(Err(e)) => tracing::error!(error = %e, "webhook task failed"),
                },
                () = &mut give_up => {
                    tasks.abort_all();
                    abandoned = true;
                    break;
                }
            }
        }
        let released: &[DeliveryKey] = if abandoned { &unfinished } else { &[] };
        self.record_round(&owner, &outcomes, released).await?;
        for (row, outcome) in &outcomes {
            let _span = tracing::info_span!(
                "webhook",
                endpoint_id = %row.endpoint_id,
                webhook_id = %row.id,
                event = %row.event_type,
                attempt = row.attempts,
            )
            .entered();
            match outcome {
                Outcome::Delivered(code) => tracing::info!(status = code, "webhook delivered"),
                Outcome::Retry(code, class, next) => {
                    tracing::warn!(status = ?code, error = class, retry_at = next, "webhook not delivered; will retry")
                }
                Outcome::Failed(code, class) => {
                    tracing::warn!(status = ?code, error = class, "webhook failed for good")
                }
            }
        }
        Ok(count)
    }

    async fn claim_due(&self, owner: &str, limit: usize) -> Result<Vec<DeliveryRow>, WebhookError> {
        let now = self.clock.now();
        let mut tx = self.begin().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let candidates = store::due_candidates(&mut tx, self.db().backend(), now, limit).await?;
        let mut claimed = Vec::with_capacity(candidates.len());
        for key in candidates {
            if store::lease(&mut tx, &key, owner, now + LEASE_SECONDS, now).await? {
                claimed.push(store::delivery(&mut tx, &key).await?);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// The live endpoints of a round's deliveries, secrets opened.
    async fn targets(&self, rows: &[DeliveryRow]) -> Result<HashMap<String, Target>, WebhookError> {
        let mut out = HashMap::new();
        for row in rows {
            if out.contains_key(&row.endpoint_id) {
                continue;
            }
            let Some(e) = store::endpoint(self.db(), &row.endpoint_id).await? else {
                continue;
            };
            if e.disabled_at.is_some() {
                continue;
            }
            let opened = self.vault.open_secret(Purpose::WebhookSecret, &e.secret)?;
            let secret = SecretString::from(String::from_utf8_lossy(&opened).into_owned());
            let (Some(key), Ok(url)) = (signing::key(&secret), url::Url::parse(&e.url)) else {
                continue;
            };
            out.insert(
                e.id,
                Target {
                    url,
                    key,
                    allow_private: e.allow_private != 0,
                },
            );
        }
        Ok(out)
    }

    /// One signed POST; its outcome.
    async fn attempt(&self, row: &DeliveryRow, target: &Target) -> Outcome {
        let (code, class) = match self.post(row, target).await {
            Ok(code) if (200..300).contains(&code) => return Outcome::Delivered(code),
            Ok(code) => (Some(code), status_class(code)),
            Err(class) => (None, class),
        };
        let now = self.clock.now();
        let deadline = row.queued_at + GIVE_UP_AFTER_SECONDS;
        if now >= deadline {
            Outcome::Failed(code, class)
        } else {
            let next = (now + backoff_with_jitter(row.attempts)).min(deadline);
            Outcome::Retry(code, class, next)
        }
    }

    /// Sends one attempt; the answer's status, or the error class. The
    /// answer's body is never read.
    async fn post(&self, row: &DeliveryRow, target: &Target) -> Result<i64, &'static str> {
        let client = if target.allow_private {
            &self.clients.open
        } else {
            if net::literal_ip(&target.url).is_some_and(|ip| !crate::client_net::is_public(ip)) {
                return Err(net::BLOCKED);
            }
            &self.clients.guarded
        };
        let timestamp = self.clock.now();
        let signature = signing::sign(&target.key, &row.id, timestamp, row.payload.as_bytes());
        let response = client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &row.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(row.payload.clone())
            .send()
            .await
            .map_err(|e| net::error_class(&e))?;
        Ok(i64::from(response.status().as_u16()))
    }

    /// Records a round's outcomes, and releases the leases of attempts cut
    /// short by shutdown, in one transaction.
    async fn record_round(
        &self,
        owner: &str,
        outcomes: &[(DeliveryRow, Outcome)],
        released: &[DeliveryKey],
    ) -> Result<(), WebhookError> {
        let now = self.clock.now();
        let mut tx = self.begin().await?;
        for (row, outcome) in outcomes {
            let key = key_of(row);
            match outcome {
                Outcome::Delivered(code) => {
                    store::mark_delivered(&mut tx, &key, *code, now).await?;
                }
                Outcome::Retry(code, class, next) => {
                    let miss = Miss {
                        status_code: *code,
                        error_class: class,
                    };
                    store::mark_retry(&mut tx, &key, owner, &miss, *next).await?;
                }
                Outcome::Failed(code, class) => {
                    let miss = Miss {
                        status_code: *code,
                        error_class: class,
                    };
                    store::mark_failed(&mut tx, &key, owner, &miss).await?;
                }
            }
        }
        for key in released {
            store::release(&mut tx, key, owner).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn key_of(row: &DeliveryRow) -> DeliveryKey {
    DeliveryKey {
        endpoint_id: row.endpoint_id.clone(),
        id: row.id.clone(),
    }
}

/// The error class of a non-2xx answer.
fn status_class(code: i64) -> &'static str {
    match code {
        300..=399 => "redirect (not followed)",
        400..=499 => "client error",
        500..=599 => "server error",
        _ => "unexpected status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour_with_bounded_jitter() {
        assert_eq!(backoff(0), 10);
        assert_eq!(backoff(1), 10);
        assert_eq!(backoff(2), 20);
        assert_eq!(backoff(3), 40);
        assert_eq!(backoff(12), 3600);
        assert_eq!(backoff(1000), 3600);
        for attempts in [1, 5, 50] {
            let j = backoff_with_jitter(attempts);
            assert!(j >= backoff(attempts) && j <= backoff(attempts) * 6 / 5);
        }
    }
}
