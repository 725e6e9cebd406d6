//! Shreds messages whose time is up: expired ones, and "shred after first
//! pickup" ones once their grace after verification has passed. Safe to run
//! on every instance at once: each message is claimed by compare-and-set.

use std::time::Duration;

use crate::app::App;
use crate::audit::{Action, Actor, Event};
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
        let mut tx = app.db.begin().await?;
        let won = sqlx::query(
            "UPDATE deliveries SET shredded_at = $1 WHERE message_id = $2 AND shredded_at IS NULL",
        )
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            continue;
        }
        let shredded = app.vault.shred_in(&mut tx, id).await?;
        let reason = if expires_at <= now {
            "expired"
        } else {
            "picked_up"
        };
        let event = Event::new(Actor::System, Action::MessageShredded)
            .message(id)
            .detail(serde_json::json!({ "reason": reason }));
        app.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        if let Some(s) = shredded {
            app.vault.delete_shredded_blobs(s).await;
        }
        done += 1;
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
