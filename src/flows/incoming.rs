//! A staff member's actions on what customers sent in (replies, request
//! submissions, secure-inbox uploads): who may see an item, and claiming
//! an unclaimed one.

use super::Acting;
use crate::app::App;
use crate::audit::{Action, Event};
use crate::incoming::{IncomingError, Item};
use crate::vault::MessageId;
use crate::web::PageError;

/// The item `id` if `who` may see it (its owner, anyone while it is
/// unclaimed, an admin). Anything else is 404, audited as a denied
/// access with what was `attempted`.
pub async fn authorised(
    app: &App,
    who: &Acting,
    id: &str,
    attempted: &str,
) -> Result<Item, PageError> {
    let item = match id.parse::<MessageId>() {
        Ok(mid) => match app.incoming.get(mid).await {
            Ok(item) if item.visible_to(who.staff, who.sees_all) => return Ok(item),
            Ok(_) | Err(IncomingError::NotFound) => Some(mid),
            Err(e) => return Err(e.into()),
        },
        Err(_) => None,
    };
    let mut event = Event::new(who.actor(), Action::AccessDenied)
        .ip(who.ip)
        .detail(serde_json::json!({ "attempted": attempted }));
    if let Some(mid) = item {
        event = event.message(mid);
    }
    app.audit.record_now(&event).await?;
    Err(PageError::NotFound)
}

/// Takes an unclaimed item: of staff claiming at the same moment (on any
/// instance), exactly one gets it; the others get 409. Claiming one's own
/// item again changes nothing.
pub async fn claim(app: &App, who: &Acting, id: &str) -> Result<Item, PageError> {
    let taken =
        || PageError::Conflict("A colleague claimed this item first; it is theirs now.".to_owned());
    // Not `authorised`: a claim that lost the race finds the item already
    // someone else's, and is told so rather than "not found".
    let item = match id.parse::<MessageId>() {
        Ok(mid) => match app.incoming.get(mid).await {
            Ok(item) => item,
            Err(IncomingError::NotFound) => return Err(PageError::NotFound),
            Err(e) => return Err(e.into()),
        },
        Err(_) => return Err(PageError::NotFound),
    };
    if item.owner.is_some_and(|o| o != who.staff) {
        return Err(taken());
    }
    let won = app
        .incoming
        .claim(who.actor(), item.id, who.staff, Some(who.ip))
        .await?;
    if !won && item.owner != Some(who.staff) {
        return Err(taken());
    }
    Ok(app.incoming.get(item.id).await?)
}
