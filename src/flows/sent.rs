//! A sender's actions on a message they sent: who may act on it, and
//! "send a new link".

use secrecy::ExposeSecret;

use super::Acting;
use crate::app::App;
use crate::audit::{Action, Event};
use crate::deliveries::{Delivery, DeliveryError};
use crate::ids::MessageId;
use crate::mail::Mail;
use crate::web::PageError;

/// The message `id` if `who` may act on it (its sender, or anyone for an
/// admin). Anything else, malformed ids and unknown messages included, is
/// 404 and audited as a denied access with `what` was attempted.
pub async fn authorised(
    app: &App,
    who: &Acting,
    id: &str,
    what: &str,
) -> Result<Delivery, PageError> {
    let denied = || async {
        let mut event = Event::new(who.actor(), Action::AccessDenied)
            .ip(who.ip)
            .detail(serde_json::json!({ "attempted": what }));
        if let Ok(mid) = id.parse::<MessageId>() {
            event = event.message(mid);
        }
        app.audit.record_now(&event).await?;
        Ok::<_, PageError>(PageError::NotFound)
    };
    let Ok(mid) = id.parse::<MessageId>() else {
        return Err(denied().await?);
    };
    let d = match app.deliveries.get(mid).await {
        Ok(d) => d,
        Err(DeliveryError::NotFound) => return Err(denied().await?),
        Err(e) => return Err(e.into()),
    };
    if d.sender != who.staff && !who.sees_all {
        return Err(denied().await?);
    }
    Ok(d)
}

/// "Send a new link": the old link dies, a new one is issued and its email
/// queued in the same transaction. A document request whose documents
/// arrived takes no more uploads, so it gets no new link (409).
pub async fn resend(app: &App, who: &Acting, d: &Delivery) -> Result<(), PageError> {
    if d.is_request
        && app
            .requests
            .get(d.message_id)
            .await?
            .is_some_and(|r| r.submitted_at.is_some())
    {
        return Err(PageError::Conflict(
            "The customer sent these documents already; the request takes no more uploads. Send a new request if you need more.".to_owned(),
        ));
    }
    let mut tx = app.db.begin().await?;
    let url = app
        .deliveries
        .resend(
            &mut tx,
            who.actor(),
            d.message_id,
            Some(who.ip),
            &app.config.public_url,
        )
        .await?;
    // After the generation moved: a revoked message has no recipient left,
    // and `resend` said so in words.
    let to = app.deliveries.open_recipient(d)?;
    let url = url.expose_secret().to_owned();
    let expires_at = d.expires_at;
    // A request's new link still asks for documents.
    let mail = if d.is_request {
        Mail::RequestLink { url, expires_at }
    } else {
        Mail::PickupLink { url, expires_at }
    };
    app.outbox
        .enqueue(&mut tx, to.expose_secret(), &mail, Some(d.message_id))
        .await?;
    tx.commit().await?;
    Ok(())
}
