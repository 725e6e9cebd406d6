//! Shreds messages whose time is up: expired ones, and "shred after first
//! pickup" ones once their grace after verification has passed. Safe to run
//! on every instance at once: each message is claimed by compare-and-set.

use std::time::Duration;

use crate::app::App;
use crate::deliveries::ShredCause;
use crate::vault::MessageId;

const BATCH: i64 = 100;
pub const EVERY: Duration = Duration::from_secs(60);

/// One pass; returns how many messages it shredded.
pub async fn run_once(app: &App) -> Result<usize, crate::deliveries::DeliveryError> {
    let now = app.clock.now();
    let due: Vec<(String, i64)> = sqlx::query_as(
        "SELECT message_id, expires_at FROM deliveries
         WHERE shredded_at IS NULL AND revoked_at IS NULL
           AND (expires_at <= $1 OR (shred_at IS NOT NULL AND shred_at <= $1))
         ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(app.db.pool())
    .await?;
    let mut done = 0;
    for (id, expires_at) in due {
        let Ok(id) = id.parse::<MessageId>() else {
            continue;
        };
        let cause = if expires_at <= now {
            ShredCause::Expired
        } else {
            ShredCause::PickedUp
        };
        // The same transaction as a revoke: claim, erase, audit, commit.
        if app.deliveries.shred(id, cause).await? {
            done += 1;
        }
    }
    Ok(done)
}

/// Runs [`run_once`] every minute until `stop` is cancelled (between
/// passes, never inside one).
pub async fn run_forever(app: App, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = run_once(&app).await {
            tracing::warn!(error = %e, "expiry pass failed; will retry");
        }
    }
}
