//! The sending worker. Rows are claimed with a lease (compare-and-set on
//! `lease_until`, plus `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's
//! `BEGIN IMMEDIATE` makes claims single-writer), so two workers or
//! instances never send one row, and a crashed worker's rows come back
//! when its lease runs out. Temporary failures back off exponentially for
//! up to a day; permanent ones fail at once.
//!
//! On shutdown the worker stops claiming, gives sends in flight a grace
//! period, records what finished and hands back the leases of the rest, so
//! another instance sends them at once rather than after the lease runs out.

use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::MailError;
use super::dev_mailbox::{self, DevMail};
use super::outbox::{Outbox, Payload};
use super::render::{self, Context};
use super::transport::SendError;
use crate::audit::{Action, Actor, Event};
use crate::deliveries::Status;
use crate::store::{self, Tx, outbox};
use crate::vault::MessageId;

/// Rows claimed per round.
const BATCH: usize = 64;
/// How long a claim lasts: well above one send (SMTP timeouts are 60 s per
/// command), so a live worker never loses a lease mid-send.
pub const LEASE_SECONDS: i64 = 300;
/// Temporary failures are retried for this long after the row was queued.
pub const GIVE_UP_AFTER_SECONDS: i64 = 24 * 3600;
const FIRST_BACKOFF_SECONDS: i64 = 60;
const MAX_BACKOFF_SECONDS: i64 = 3600;
/// How often an idle worker looks for due mail.
const POLL: Duration = Duration::from_secs(1);
/// How long a round keeps trying to record its outcomes: half the lease.
const RECORD_RETRY_FOR: Duration = Duration::from_secs(LEASE_SECONDS as u64 / 2);

/// Delay before retry number `attempts` + 1: 1, 2, 4, … minutes, at most an hour.
pub fn backoff(attempts: i64) -> i64 {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    FIRST_BACKOFF_SECONDS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_BACKOFF_SECONDS)
}

/// What happened to one send, recorded with the rest of its round.
enum Outcome {
    Sent(Option<DevMail>),
    /// The row was finished meanwhile (its message was shredded, which
    /// cancels its mail): nothing was sent and there is nothing to record.
    Cancelled,
    Failed(String),
    Retry(String, i64),
}

/// A claimed row.
struct Claimed {
    id: i64,
    kind: String,
    message_id: Option<MessageId>,
    mail_message_id: String,
    created_at: i64,
    attempts: i64,
}

/// Starts the worker on the runtime. It runs until `stop` is cancelled,
/// then lets sends in flight finish for up to `grace`, releases the leases
/// of those that did not, and returns (never mid-transaction).
pub fn spawn(outbox: Outbox, stop: CancellationToken, grace: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            match outbox.run_round(&stop, grace).await {
                // A full batch: more may be due right away.
                Ok(n) if n >= BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "mail worker round failed; will retry"),
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
        tracing::info!("mail worker stopped");
    })
}

impl Outbox {
    /// Claims what is due and tries to send it. Returns how many rows were
    /// attempted (sent, rescheduled or failed).
    pub async fn run_once(&self) -> Result<usize, MailError> {
        self.run_round(&CancellationToken::new(), Duration::ZERO)
            .await
    }

    /// One round of [`Outbox::run_once`] that gives up waiting for sends
    /// `grace` after `stop` is cancelled: what finished is recorded, and
    /// rows still sending are released (their sends abandoned) for another
    /// worker to take at once.
    pub async fn run_round(
        &self,
        stop: &CancellationToken,
        grace: Duration,
    ) -> Result<usize, MailError> {
        if stop.is_cancelled() {
            return Ok(0);
        }
        let owner = Uuid::new_v4().to_string();
        let claimed = self.claim_due(&owner, BATCH).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let settings = self.inner.settings.load().await?;
        let ctx = std::sync::Arc::new(Context::new(
            &settings.organisation,
            &settings.support_line,
            &self.inner.public_url,
            self.inner.clock.now(),
        ));
        let count = claimed.len();
        let mut unfinished: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        // Sends overlap (lettre pools the connections); the outcomes of the
        // whole round are then recorded in one transaction, so a round costs
        // one commit rather than one per email. If recording still fails
        // after the retries below, the leases run out and the rows are sent
        // again with the same Message-ID (at least once, never lost).
        let mut tasks = JoinSet::new();
        for row in claimed {
            let this = self.clone();
            let ctx = ctx.clone();
            tasks.spawn(async move {
                let outcome = this.process(&row, &ctx).await;
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
                        unfinished.retain(|id| *id != pair.0.id);
                        outcomes.push(pair);
                    }
                    Some(Err(e)) => tracing::error!(error = %e, "mail send task failed"),
                },
                () = &mut give_up => {
                    // Dropping a send mid-conversation means the server
                    // never got the final "." or we never saw its reply:
                    // at worst the email goes twice, with one Message-ID.
                    tasks.abort_all();
                    abandoned = true;
                    break;
                }
            }
        }
        // The emails are out: keep trying to record that through a database
        // outage (a failover, a restart) for well within the lease, so the
        // rows are not sent a second time when it runs out.
        // A task that panicked keeps its lease until it runs out, as after a
        // crash; only sends cut short by shutdown are released.
        let released: &[i64] = if abandoned { &unfinished } else { &[] };
        let started = std::time::Instant::now();
        while let Err(e) = self.record_round(&owner, &outcomes, released).await {
            if started.elapsed() >= RECORD_RETRY_FOR || stop.is_cancelled() {
                return Err(e);
            }
            tracing::warn!(error = %e, "could not record sent mail; retrying");
            tokio::time::sleep(POLL).await;
        }
        if abandoned && !unfinished.is_empty() {
            tracing::info!(
                released = unfinished.len(),
                "shutting down: released the leases of emails still sending"
            );
        }
        let metrics = &self.inner.metrics;
        for (_, outcome) in &outcomes {
            match outcome {
                Outcome::Sent(_) => {
                    metrics.email_sent();
                    tracing::info!("mail sent")
                }
                Outcome::Failed(class) => {
                    metrics.email_failed();
                    tracing::warn!(error = %class, "mail failed for good")
                }
                Outcome::Retry(class, next) => {
                    metrics.email_deferred();
                    tracing::warn!(error = %class, retry_at = next, "mail not sent; will retry")
                }
                Outcome::Cancelled => {
                    tracing::info!("mail not sent: its message was shredded meanwhile")
                }
            }
        }
        Ok(count)
    }

    /// Records a round's outcomes, and releases the leases of sends cut
    /// short by shutdown, in one transaction.
    async fn record_round(
        &self,
        owner: &str,
        outcomes: &[(Claimed, Outcome)],
        released: &[i64],
    ) -> Result<(), MailError> {
        let mut tx = self.inner.db.begin().await?;
        let mut events = Vec::new();
        for (row, outcome) in outcomes {
            let event = match outcome {
                Outcome::Sent(dev_copy) => self.mark_sent(&mut tx, row, dev_copy.as_ref()).await?,
                Outcome::Failed(class) => self.mark_failed(&mut tx, row, owner, class).await?,
                Outcome::Retry(class, next) => {
                    self.mark_retry(&mut tx, row, owner, class, *next).await?;
                    None
                }
                Outcome::Cancelled => None,
            };
            events.extend(event);
        }
        for id in released {
            outbox::release(&mut tx, *id, owner).await?;
        }
        // Audit last: see `AuditLog::record`.
        for event in &events {
            self.inner.audit.record(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` due rows for `owner` (one claim round of
    /// [`Outbox::run_once`]; public so tests can play a worker that crashes
    /// after claiming). Returns the ids claimed.
    pub async fn claim(&self, owner: &str, limit: usize) -> Result<Vec<i64>, MailError> {
        Ok(self
            .claim_due(owner, limit)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    async fn claim_due(&self, owner: &str, limit: usize) -> Result<Vec<Claimed>, MailError> {
        let now = self.inner.clock.now();
        let db = &self.inner.db;
        let mut tx = db.begin().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let candidates = outbox::due_candidates(&mut tx, db.backend(), now, limit).await?;
        let mut claimed = Vec::with_capacity(candidates.len());
        for id in candidates {
            if !outbox::lease(&mut tx, id, owner, now + LEASE_SECONDS, now).await? {
                continue;
            }
            let row = outbox::leased_row(&mut tx, id).await?;
            claimed.push(Claimed {
                id: row.id,
                kind: row.kind,
                message_id: row.message_id.and_then(|m| m.parse().ok()),
                mail_message_id: row.mail_message_id,
                created_at: row.created_at,
                attempts: row.attempts,
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    #[tracing::instrument(skip_all, fields(outbox_id = row.id, kind = %row.kind, attempt = row.attempts))]
    async fn process(&self, row: &Claimed, ctx: &Context) -> Outcome {
        match self.attempt(row, ctx).await {
            Ok(Some(dev_copy)) => Outcome::Sent(dev_copy),
            Ok(None) => Outcome::Cancelled,
            Err(SendError::Permanent(class)) => Outcome::Failed(class),
            Err(SendError::Temporary(class)) => {
                let now = self.inner.clock.now();
                let deadline = row.created_at + GIVE_UP_AFTER_SECONDS;
                if now >= deadline {
                    Outcome::Failed(class)
                } else {
                    Outcome::Retry(class, (now + backoff(row.attempts)).min(deadline))
                }
            }
        }
    }

    /// Renders and sends one row; `None` if it was cancelled since the
    /// claim. For the dev mailbox nothing leaves the process; the copy to
    /// keep is returned and stored with the outcome.
    async fn attempt(
        &self,
        row: &Claimed,
        ctx: &Context,
    ) -> Result<Option<Option<DevMail>>, SendError> {
        let permanent = |class: &str| SendError::Permanent(class.to_owned());
        // Read at the last moment rather than at the claim: a shred that
        // cancelled the row since then has erased the payload and finished
        // the row, and the email must not go out.
        let payload = outbox::unfinished_payload(&self.inner.db, row.id)
            .await
            .map_err(|_| SendError::Temporary("database".to_owned()))?;
        let Some(payload) = payload else {
            return Ok(None);
        };
        let sealed = payload.as_deref().ok_or_else(|| permanent("payload"))?;
        let plain = self
            .inner
            .vault
            .open_secret(crate::vault::Purpose::OutboxPayload, sealed)
            .map_err(|_| permanent("payload"))?;
        let payload: Payload = serde_json::from_slice(&plain).map_err(|_| permanent("payload"))?;
        let rendered = render::render(ctx, &payload.mail).map_err(|_| permanent("render"))?;
        let email = render::build(
            &self.inner.from,
            &payload.to,
            &row.mail_message_id,
            ctx.now,
            &rendered,
        )
        .map_err(|e| match e {
            MailError::InvalidAddress => permanent("invalid address"),
            _ => permanent("build"),
        })?;
        if self.inner.transport.is_dev_mailbox() {
            return Ok(Some(Some(DevMail {
                to: payload.to,
                subject: rendered.subject,
                text: rendered.text,
                mail_message_id: row.mail_message_id.clone(),
            })));
        }
        let raw = zeroize::Zeroizing::new(email.formatted());
        self.inner
            .transport
            .send_smtp(email.envelope(), &raw)
            .await?;
        Ok(Some(None))
    }

    async fn mark_sent(
        &self,
        tx: &mut Tx,
        row: &Claimed,
        dev_copy: Option<&DevMail>,
    ) -> Result<Option<Event>, MailError> {
        let now = self.inner.clock.now();
        // Not conditional on still holding the lease: once the server has
        // the email, recording that is always right.
        let marked = outbox::mark_sent(tx, row.id, now).await?;
        if !marked {
            tracing::warn!("mail sent, but another worker had already finished the row");
            return Ok(None);
        }
        if let Some(copy) = dev_copy {
            dev_mailbox::store(tx, &self.inner.vault, row.id, now, copy).await?;
        }
        if row.kind == "pickup_link" {
            self.progress(tx, row, Status::Emailed).await?;
        }
        Ok(Some(audit_event(row, Action::MailSent, None)))
    }

    async fn mark_retry(
        &self,
        tx: &mut Tx,
        row: &Claimed,
        owner: &str,
        class: &str,
        next: i64,
    ) -> Result<(), MailError> {
        outbox::mark_retry(tx, row.id, owner, class, next).await?;
        Ok(())
    }

    async fn mark_failed(
        &self,
        tx: &mut Tx,
        row: &Claimed,
        owner: &str,
        class: &str,
    ) -> Result<Option<Event>, MailError> {
        let now = self.inner.clock.now();
        let marked = outbox::mark_failed(tx, row.id, owner, class, now).await?;
        if !marked {
            return Ok(None);
        }
        if row.kind == "pickup_link" {
            self.progress(tx, row, Status::DeliveryFailed).await?;
        }
        Ok(Some(audit_event(row, Action::MailFailed, Some(class))))
    }

    /// Moves the message's delivery status, unless the customer has already
    /// got further (a late outcome must not turn "verified" back into "emailed").
    async fn progress(&self, tx: &mut Tx, row: &Claimed, status: Status) -> Result<(), MailError> {
        let Some(id) = row.message_id else {
            return Ok(());
        };
        let current = store::deliveries::status_in(tx, &id.to_string()).await?;
        let replaceable = [Status::Queued, Status::Emailed, Status::DeliveryFailed];
        if current.is_some_and(|s| replaceable.iter().any(|r| r.as_str() == s)) {
            self.inner.deliveries.set_status(tx, id, status).await?;
        }
        Ok(())
    }
}

/// What the audit log records about an outbox row's outcome (ids only).
fn audit_event(row: &Claimed, action: Action, error: Option<&str>) -> Event {
    let mut detail = serde_json::json!({
        "outbox_id": row.id,
        "kind": row.kind,
        "attempts": row.attempts,
    });
    if let Some(error) = error {
        detail["error"] = serde_json::Value::from(error);
    }
    let mut event = Event::new(Actor::System, action).detail(detail);
    if let Some(id) = row.message_id {
        event = event.message(id);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), 60);
        assert_eq!(backoff(2), 120);
        assert_eq!(backoff(3), 240);
        assert_eq!(backoff(7), 3600);
        assert_eq!(backoff(100), 3600);
        assert_eq!(backoff(0), 60);
    }
}
