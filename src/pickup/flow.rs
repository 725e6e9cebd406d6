//! The customer's verification rules, apart from HTTP: what a visit to a
//! link, a request for a code and a set of answers lead to. Pages in
//! `verify.rs` parse the request, call one of these and render the outcome.
//!
//! Limits hold per code, per message and per client address (IPv6 by its
//! /64); a lockout only the sender (or an admin) can lift. Every write a
//! stranger can cause is bounded.

use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{Notice, agent_class};
use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::client_net::rate_key;
use crate::deliveries::{Delivery, Status};
use crate::mail::{Alert, Mail};
use crate::settings::Method;
use crate::store::{self, Tx, pickup_codes, rate_limits};
use crate::text::{normalise_access_code, normalise_fact};
use crate::vault::{MessageId, Purpose};
use crate::web::PageError;

/// An email code lives 10 minutes and survives 5 wrong guesses.
pub const CODE_TTL_SECS: i64 = 10 * 60;
pub const CODE_MAX_WRONG: i64 = 5;
/// Codes per message per day, and per client address per hour.
pub const CODES_PER_DAY: i64 = 5;
pub const CODES_PER_IP_HOUR: i64 = 20;
/// Failed verifications in total before the message locks.
pub const LOCK_AFTER: i64 = 10;
/// Verification attempts per client address per hour, across messages.
pub const VERIFY_PER_IP_HOUR: i64 = 100;
/// Visits to used links per client address per hour (each may leave an
/// audit row, so they are bounded like every other write a stranger causes).
pub const REUSED_VISITS_PER_IP_HOUR: i64 = 60;
/// A used link's repeated visits are noted once per link in this window.
pub const REUSE_NOTE_EVERY_SECS: i64 = 3600;
/// "Shred after first pickup": how long the verified session may stay idle.
pub const PICKUP_IDLE_SECS: i64 = 30 * 60;

/// Where a link leads before any answer: a neutral notice, or the
/// verification step for this delivery.
pub enum Step {
    /// Show `Notice`; the time is when the link was used, for "already opened".
    Notice(Notice, Option<i64>),
    Verify(Box<Delivery>),
}

/// What asking for an email code led to.
pub enum CodeRequest {
    Notice(Notice, Option<i64>),
    /// Over the per-message or per-address limit: nothing was sent.
    TooMany(Box<Delivery>),
    Sent,
}

/// What a set of answers led to.
pub enum Verdict {
    Notice(Notice, Option<i64>),
    /// Every answer matched: the link is used up, the caller binds a
    /// fresh session to the message as reached through this generation.
    Verified {
        message_id: MessageId,
        generation: i64,
    },
    /// Something did not match; it counted, and the link is still usable.
    Wrong(Box<Delivery>),
}

/// The customer's answers, as typed.
#[derive(Default)]
pub struct Answers {
    pub code: Option<SecretString>,
    pub access_code: Option<SecretString>,
    pub known_fact: Option<SecretString>,
}

fn typed(s: &Option<SecretString>) -> &str {
    s.as_ref().map_or("", |s| s.expose_secret())
}

/// Why a link cannot be used right now, if it cannot.
fn gate(d: &Delivery, now: i64) -> Option<Notice> {
    // An empty (or unreadable) method list would check nothing: fail closed.
    if !d.is_live(now) || d.methods.is_empty() {
        Some(Notice::Unavailable)
    } else if d.link_consumed_at.is_some() {
        Some(Notice::AlreadyOpened)
    } else if d.locked_at.is_some() {
        Some(Notice::Locked)
    } else {
        None
    }
}

/// The delivery behind a usable link, or the notice to show instead.
async fn usable(
    app: &App,
    token: &str,
) -> Result<Result<Delivery, (Notice, Option<i64>)>, PageError> {
    let Some(d) = app.deliveries.find_by_link(token).await? else {
        return Ok(Err((Notice::Unknown, None)));
    };
    match gate(&d, app.clock.now()) {
        Some(n) => Ok(Err((n, d.link_consumed_at))),
        None => Ok(Ok(d)),
    }
}

/// A visit (GET/HEAD): never sends a code or consumes the link; the first
/// visit is noted for the sender's timeline, a used link's visits are
/// counted and noted (bounded).
pub async fn visit(
    app: &App,
    token: &str,
    ip: std::net::IpAddr,
    ua: Option<&str>,
) -> Result<Step, PageError> {
    let Some(d) = app.deliveries.find_by_link(token).await? else {
        return Ok(Step::Notice(Notice::Unknown, None));
    };
    let now = app.clock.now();
    if let Some(n) = gate(&d, now) {
        if n == Notice::AlreadyOpened && !note_reuse(app, &d, ip, ua, now).await? {
            return Ok(Step::Notice(Notice::TooMany, None));
        }
        return Ok(Step::Notice(n, d.link_consumed_at));
    }
    if matches!(
        d.stored_status,
        Status::Queued | Status::Emailed | Status::DeliveryFailed
    ) {
        app.deliveries
            .note_first_visit(d.message_id, agent_class(ua))
            .await?;
    }
    Ok(Step::Verify(Box::new(d)))
}

/// A visit to a used link. It counts against the client address (false:
/// over the limit, answer 429 and record nothing) and is noted for the
/// sender at most once per link per [`REUSE_NOTE_EVERY_SECS`], so a flood
/// of visits cannot grow the audit log. Visits that write nothing (a live
/// link already seen) are not counted: the landing page stays read-only.
async fn note_reuse(
    app: &App,
    d: &Delivery,
    ip: std::net::IpAddr,
    ua: Option<&str>,
    now: i64,
) -> Result<bool, PageError> {
    let link = app.vault.keyed_hash(
        Purpose::LinkReused,
        format!("{}\0{}", d.message_id, d.link_generation).as_bytes(),
    );
    let mut tx = app.db.begin().await?;
    let allowed = rate_limits::hit(
        &mut tx,
        &ip_key(app, Purpose::ReusedPerIp, ip),
        now,
        3600,
        REUSED_VISITS_PER_IP_HOUR,
    )
    .await?;
    if allowed && rate_limits::hit(&mut tx, &link, now, REUSE_NOTE_EVERY_SECS, 1).await? {
        let event = Event::new(Actor::Anonymous, Action::LinkReused)
            .message(d.message_id)
            .ip(ip)
            .detail(serde_json::json!({ "agent": agent_class(ua) }));
        app.audit.record(&mut tx, &event).await?;
    }
    tx.commit().await?;
    Ok(allowed)
}

fn code_hash(app: &App, id: MessageId, code: &str) -> Vec<u8> {
    app.vault.keyed_hash(
        Purpose::PickupCode,
        format!("{id}\0{}", code.trim()).as_bytes(),
    )
}

/// A per-address limit's key: IPv6 clients count by their /64.
fn ip_key(app: &App, what: Purpose, ip: std::net::IpAddr) -> Vec<u8> {
    app.vault.keyed_hash(what, rate_key(ip).as_bytes())
}

/// Mails a fresh 6-digit code to the recipient address, within the limits
/// per message and per client address.
pub async fn request_code(
    app: &App,
    token: &str,
    ip: std::net::IpAddr,
) -> Result<CodeRequest, PageError> {
    let d = match usable(app, token).await? {
        Ok(d) => d,
        Err((n, at)) => return Ok(CodeRequest::Notice(n, at)),
    };
    if !d.methods.contains(&Method::EmailCode) {
        return Ok(CodeRequest::Notice(Notice::Unknown, None));
    }
    let now = app.clock.now();
    let mut tx = app.db.begin().await?;
    let message_key = app.vault.keyed_hash(
        Purpose::CodesPerMessage,
        d.message_id.to_string().as_bytes(),
    );
    let per_message =
        rate_limits::hit(&mut tx, &message_key, now, 24 * 3600, CODES_PER_DAY).await?;
    let per_ip = rate_limits::hit(
        &mut tx,
        &ip_key(app, Purpose::CodesPerIp, ip),
        now,
        3600,
        CODES_PER_IP_HOUR,
    )
    .await?;
    if !(per_message && per_ip) {
        // The refused attempt still counts against the windows.
        tx.commit().await?;
        return Ok(CodeRequest::TooMany(Box::new(d)));
    }
    let code = SecretString::from(format!("{:06}", rand::rng().random_range(0..1_000_000u32)));
    pickup_codes::insert(
        &mut tx,
        &pickup_codes::NewCode {
            id: &uuid::Uuid::new_v4().to_string(),
            message_id: &d.message_id.to_string(),
            code_hash: &code_hash(app, d.message_id, code.expose_secret()),
            created_at: now,
            expires_at: now + CODE_TTL_SECS,
        },
    )
    .await?;
    let to = app.deliveries.open_recipient(&d)?;
    app.outbox
        .enqueue(
            &mut tx,
            to.expose_secret(),
            &Mail::VerificationCode {
                code: code.expose_secret().to_owned(),
                expires_at: now + CODE_TTL_SECS,
            },
            Some(d.message_id),
        )
        .await?;
    let event = Event::new(Actor::Anonymous, Action::CodeSent)
        .message(d.message_id)
        .ip(ip);
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.code_sent();
    Ok(CodeRequest::Sent)
}

/// Checks every answer the message requires. Success consumes the link.
pub async fn verify(
    app: &App,
    token: &str,
    ip: std::net::IpAddr,
    answers: &Answers,
) -> Result<Verdict, PageError> {
    let d = match usable(app, token).await? {
        Ok(d) => d,
        Err((n, at)) => return Ok(Verdict::Notice(n, at)),
    };
    let now = app.clock.now();
    {
        let mut tx = app.db.begin().await?;
        let allowed = rate_limits::hit(
            &mut tx,
            &ip_key(app, Purpose::VerifyPerIp, ip),
            now,
            3600,
            VERIFY_PER_IP_HOUR,
        )
        .await?;
        tx.commit().await?;
        if !allowed {
            return Ok(Verdict::Notice(Notice::TooMany, None));
        }
    }

    // Everything the transactions below need is loaded first: a
    // transaction never waits for a second pool connection (with SQLite's
    // one writer that stalls every writer behind it).
    let key = d.message_id.to_string();
    let hashes = store::deliveries::answer_hashes(&app.db, &key).await?;
    let sender = sender_address(app, &d).await?;

    // Every required answer is checked (no short cut), outside any
    // transaction: argon2 takes tens of milliseconds.
    let mut ok = true;
    let mut matched_code: Option<String> = None;
    if d.methods.contains(&Method::EmailCode) {
        let hash = code_hash(app, d.message_id, typed(&answers.code));
        for live in pickup_codes::live(&app.db, &key, now, CODE_MAX_WRONG).await? {
            if bool::from(live.code_hash.ct_eq(&hash)) {
                matched_code = Some(live.id);
            }
        }
        ok &= matched_code.is_some();
    }
    if d.methods.contains(&Method::AccessCode) {
        ok &= check_access_code(app, hashes.access_code_hash, typed(&answers.access_code)).await?;
    }
    if d.methods.contains(&Method::KnownFact) {
        let fact = normalise_fact(typed(&answers.known_fact));
        ok &= check_hash(app, hashes.known_fact_hash, &fact).await?;
    }
    if ok {
        succeed(app, d, matched_code, sender, ip).await
    } else {
        fail(app, d, sender, ip).await
    }
}

/// All answers were right: claim the link (and the code).
async fn succeed(
    app: &App,
    d: Delivery,
    matched_code: Option<String>,
    sender: Option<String>,
    ip: std::net::IpAddr,
) -> Result<Verdict, PageError> {
    let now = app.clock.now();
    let key = d.message_id.to_string();
    // Loaded before the transaction, like the sender's address.
    let alerts = app.accounts.pickup_alerts(d.sender).await?;
    let mut tx = app.db.begin().await?;
    // Of two concurrent correct answers one wins, and a lock or revocation
    // that landed meanwhile still holds.
    let claimed = store::deliveries::consume_link(&mut tx, &key, now).await?;
    let code_ok = match &matched_code {
        Some(id) => pickup_codes::mark_used(&mut tx, id, now).await?,
        None => true,
    };
    if !(claimed && code_ok) {
        tx.rollback().await?;
        return neutral(app, d.message_id, Notice::Unavailable).await;
    }
    let first = app
        .deliveries
        .advance(&mut tx, d.message_id, Status::Verified)
        .await?;
    if first && alerts {
        alert_sender(app, &mut tx, &d, sender.as_deref(), Alert::FirstPickup).await?;
    }
    if d.shred_after_pickup {
        store::deliveries::set_shred_at(&mut tx, &key, now + PICKUP_IDLE_SECS).await?;
    }
    let event = Event::new(Actor::Customer, Action::Verified)
        .message(d.message_id)
        .ip(ip);
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.verification(true);
    Ok(Verdict::Verified {
        message_id: d.message_id,
        generation: d.link_generation,
    })
}

/// A wrong answer. It counts for the message and against every live code
/// only while the link is live, unused and unlocked (one conditional
/// update); the lock, the sender's alert, the audit event and the metric
/// follow only from the failure that actually locked the message.
async fn fail(
    app: &App,
    d: Delivery,
    sender: Option<String>,
    ip: std::net::IpAddr,
) -> Result<Verdict, PageError> {
    let now = app.clock.now();
    let mut tx = app.db.begin().await?;
    let Some(failure) = app
        .deliveries
        .record_failure(&mut tx, d.message_id, LOCK_AFTER)
        .await?
    else {
        // Used, locked or withdrawn meanwhile (e.g. a second submit after a
        // successful one): nothing to count, say where the link stands.
        tx.rollback().await?;
        return neutral(app, d.message_id, Notice::Locked).await;
    };
    pickup_codes::count_wrong(&mut tx, &d.message_id.to_string(), now).await?;
    if failure.locked {
        // The sender is always told of a lockout (PII-free: ids only).
        alert_sender(app, &mut tx, &d, sender.as_deref(), Alert::Locked).await?;
    }
    // Audit last (see `AuditLog::record`).
    let event = Event::new(Actor::Anonymous, Action::VerificationFailed)
        .message(d.message_id)
        .ip(ip)
        .detail(serde_json::json!({ "failures": failure.failures }));
    app.audit.record(&mut tx, &event).await?;
    if failure.locked {
        let locked = Event::new(Actor::System, Action::MessageLocked).message(d.message_id);
        app.audit.record(&mut tx, &locked).await?;
    }
    tx.commit().await?;
    app.metrics.verification(false);
    if failure.locked {
        app.metrics.lockout();
        return Ok(Verdict::Notice(Notice::Locked, None));
    }
    Ok(Verdict::Wrong(Box::new(d)))
}

/// The neutral notice for where the link stands now, after a transaction
/// found it no longer usable (`fallback` if it looks usable after all).
async fn neutral(app: &App, id: MessageId, fallback: Notice) -> Result<Verdict, PageError> {
    let fresh = app.deliveries.get(id).await?;
    let notice = gate(&fresh, app.clock.now()).unwrap_or(fallback);
    Ok(Verdict::Notice(notice, fresh.link_consumed_at))
}

/// Spaces and dashes in a typed access code do not matter. Codes hashed
/// before normalisation were hashed as the sender typed them, so when the
/// answer as typed differs from its normal form it is tried as typed too.
async fn check_access_code(
    app: &App,
    stored: Option<String>,
    typed: &str,
) -> Result<bool, PageError> {
    let typed = typed.trim();
    let normal = normalise_access_code(typed);
    if normal.is_empty() {
        // No code is empty: nothing to hash.
        return Ok(false);
    }
    if check_hash(app, stored.clone(), &normal).await? {
        return Ok(true);
    }
    if typed != normal {
        return check_hash(app, stored, typed).await;
    }
    Ok(false)
}

/// Verifies `answer` against a stored argon2id hash (none: no match).
async fn check_hash(app: &App, stored: Option<String>, answer: &str) -> Result<bool, PageError> {
    let Some(stored) = stored else {
        return Ok(false);
    };
    Ok(app
        .pickup_hasher
        .verify(SecretString::from(answer.to_owned()), stored)
        .await?)
}

/// Where alerts to the message's sender go: their address, if the account
/// exists, is not disabled and is not a service account.
async fn sender_address(app: &App, d: &Delivery) -> Result<Option<String>, PageError> {
    let sender = app.accounts.state(d.sender).await?;
    Ok(sender.as_ref().and_then(|s| s.mail_to()).map(str::to_owned))
}

/// Queues a PII-free alert to the message's sender (loaded beforehand by
/// [`sender_address`]; `None`: nobody to tell).
async fn alert_sender(
    app: &App,
    tx: &mut Tx,
    d: &Delivery,
    to: Option<&str>,
    alert: Alert,
) -> Result<(), PageError> {
    if let Some(to) = to {
        app.outbox
            .enqueue(
                tx,
                to,
                &Mail::SenderAlert {
                    alert,
                    message_id: d.message_id,
                },
                Some(d.message_id),
            )
            .await?;
    }
    Ok(())
}
