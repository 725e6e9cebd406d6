//! Which audit events become webhook events, and queueing them: an event
//! is queued for each subscribed endpoint in the transaction that records
//! it (an outbox), so a webhook goes out exactly when its change commits.
//!
//! A payload carries ids and statuses only, never customer data:
//! `{"type": "message.verified", "timestamp": "2026-…Z",
//!   "data": {"message_id": "…", "status": "verified"}}`.

use crate::store::Tx;
use crate::store::webhooks::{self as store, NewEvent};

use super::{Action, Event};

/// Every webhook event type, in the order the admin page lists them.
pub const EVENT_TYPES: [&str; 10] = [
    "message.emailed",
    "message.delivery_failed",
    "message.visited",
    "message.verified",
    "message.downloaded",
    "message.replied",
    "request.submitted",
    "message.locked",
    "message.expired",
    "message.revoked",
];

/// The webhook event an audit event is, if any, and the status it reports.
pub fn event_type(event: &Event) -> Option<(&'static str, &'static str)> {
    let detail = |key: &str| {
        event
            .detail
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| v.as_str())
    };
    event.message_id?;
    Some(match event.action {
        // Only the link email reports on the message; codes and alerts do not.
        Action::MailSent if detail("kind") == Some("pickup_link") => ("message.emailed", "emailed"),
        Action::MailFailed if detail("kind") == Some("pickup_link") => {
            ("message.delivery_failed", "delivery_failed")
        }
        Action::LinkVisited => ("message.visited", "link_visited"),
        Action::Verified => ("message.verified", "verified"),
        Action::Downloaded => ("message.downloaded", "downloaded"),
        Action::ReplyReceived => ("message.replied", "replied"),
        Action::RequestSubmitted => ("request.submitted", "submitted"),
        Action::MessageLocked => ("message.locked", "locked"),
        Action::MessageShredded if detail("reason") == Some("expired") => {
            ("message.expired", "expired")
        }
        Action::MessageRevoked => ("message.revoked", "revoked"),
        _ => return None,
    })
}

/// The JSON body of a webhook event: ids and statuses only.
pub fn payload(event: &Event, event_type: &str, status: &str, at: i64) -> serde_json::Value {
    let timestamp = time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let mut data = serde_json::json!({
        "message_id": event.message_id.map(|m| m.to_string()),
        "status": status,
    });
    // The ids of what the customer sent (never its content).
    let detail = event.detail.as_ref();
    for (from, to) in [("reply", "reply_id"), ("submission", "submission_id")] {
        if let Some(id) = detail.and_then(|d| d.get(from)).and_then(|v| v.as_str()) {
            data[to] = serde_json::Value::from(id);
        }
    }
    serde_json::json!({ "type": event_type, "timestamp": timestamp, "data": data })
}

/// Queues `event` (audit id `seq`, recorded at `at`) for the endpoints
/// subscribed to it; nothing for an audit event that is no webhook event.
pub async fn queue(tx: &mut Tx, event: &Event, seq: i64, at: i64) -> Result<u64, sqlx::Error> {
    let Some((event_type, status)) = event_type(event) else {
        return Ok(0);
    };
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let body = payload(event, event_type, status, at).to_string();
    let message_id = event.message_id.map(|m| m.to_string());
    store::queue_event(
        tx,
        &NewEvent {
            id: &id,
            seq,
            message_id: message_id.as_deref(),
            event_type,
            payload: &body,
            now: at,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Actor;
    use crate::vault::MessageId;

    fn message() -> MessageId {
        MessageId::new()
    }

    #[test]
    fn only_the_link_email_and_expiry_make_events() {
        let id = message();
        let mail = |kind: &str| {
            Event::new(Actor::System, Action::MailSent)
                .message(id)
                .detail(serde_json::json!({ "kind": kind, "outbox_id": 1 }))
        };
        assert_eq!(
            event_type(&mail("pickup_link")),
            Some(("message.emailed", "emailed"))
        );
        assert_eq!(event_type(&mail("pickup_code")), None);
        let shred = |reason: &str| {
            Event::new(Actor::System, Action::MessageShredded)
                .message(id)
                .detail(serde_json::json!({ "reason": reason }))
        };
        assert_eq!(
            event_type(&shred("expired")),
            Some(("message.expired", "expired"))
        );
        assert_eq!(event_type(&shred("picked_up")), None);
        // No message, no event.
        assert_eq!(
            event_type(&Event::new(Actor::Customer, Action::Verified)),
            None
        );
        assert_eq!(
            event_type(&Event::new(Actor::Cli, Action::KeysRotated).message(id)),
            None
        );
    }

    #[test]
    fn every_event_type_is_listed() {
        let id = message();
        for action in [
            Action::LinkVisited,
            Action::Verified,
            Action::Downloaded,
            Action::ReplyReceived,
            Action::RequestSubmitted,
            Action::MessageLocked,
            Action::MessageRevoked,
        ] {
            let (t, _) = event_type(&Event::new(Actor::Customer, action).message(id))
                .unwrap_or(("none", ""));
            assert!(EVENT_TYPES.contains(&t), "{action:?}");
        }
    }

    #[test]
    fn payloads_carry_ids_and_statuses_only() {
        let id = message();
        let event = Event::new(Actor::Customer, Action::ReplyReceived)
            .message(id)
            .detail(serde_json::json!({ "reply": "r-1", "files": 2 }));
        let body = payload(&event, "message.replied", "replied", 1_700_000_000);
        assert_eq!(
            body,
            serde_json::json!({
                "type": "message.replied",
                "timestamp": "2023-11-14T22:13:20Z",
                "data": { "message_id": id.to_string(), "status": "replied", "reply_id": "r-1" },
            })
        );
    }
}
