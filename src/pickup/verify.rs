//! The landing page and verification: email codes, access codes and known
//! facts, with limits per code, per message and per client address, and a
//! lockout only the sender (or an admin) can lift.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::{Brand, Notice, agent_class, limits, mask_address, notice};
use crate::app::App;
use crate::audit::{Action, Actor, Event};
use crate::client_net::rate_key;
use crate::deliveries::{Delivery, Status};
use crate::mail::{Alert, Mail};
use crate::portal::ClientIp;
use crate::portal::compose::{normalise_access_code, normalise_fact};
use crate::settings::Method;
use crate::vault::MessageId;
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

/// The User-Agent header alone (not a copy of every header).
pub struct UserAgent(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for UserAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(UserAgent(
            parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pickup/landing.html")]
struct LandingPage {
    brand: Brand,
    token: String,
    email_code: bool,
    access_code: bool,
    known_fact: bool,
    masked: String,
    code_sent: bool,
    error: Option<&'static str>,
}

#[derive(Deserialize, Default)]
pub struct LandingQuery {
    #[serde(default)]
    sent: Option<u8>,
}

async fn find(app: &App, token: &str) -> Result<Option<Delivery>, PageError> {
    Ok(app.deliveries.find_by_link(token).await?)
}

/// GET/HEAD: shows the verification step. Never sends a code or consumes
/// the link; the first visit is noted for the sender's timeline.
pub async fn landing(
    State(app): State<App>,
    Path(token): Path<String>,
    ClientIp(ip): ClientIp,
    UserAgent(ua): UserAgent,
    Query(q): Query<LandingQuery>,
) -> Result<Response, PageError> {
    let Some(d) = find(&app, &token).await? else {
        return Ok(notice(&app, Notice::Unknown, None).await);
    };
    let now = app.clock.now();
    if let Some(n) = gate(&d, now) {
        if n == Notice::AlreadyOpened && !note_reuse(&app, &d, ip, ua.as_deref(), now).await? {
            return Ok(notice(&app, Notice::TooMany, None).await);
        }
        return Ok(notice(&app, n, d.link_consumed_at).await);
    }
    if matches!(
        d.stored_status,
        Status::Queued | Status::Emailed | Status::DeliveryFailed
    ) {
        let mut tx = app.db.begin().await?;
        if app
            .deliveries
            .advance(&mut tx, d.message_id, Status::LinkVisited)
            .await?
        {
            let event = Event::new(Actor::Anonymous, Action::LinkVisited)
                .message(d.message_id)
                .detail(serde_json::json!({ "agent": agent_class(ua.as_deref()) }));
            app.audit.record(&mut tx, &event).await?;
        }
        tx.commit().await?;
    }
    render(&app, &d, token, q.sent == Some(1), None, StatusCode::OK).await
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
        crate::vault::Purpose::LinkReused,
        format!("{}\0{}", d.message_id, d.link_generation).as_bytes(),
    );
    let mut tx = app.db.begin().await?;
    let allowed = limits::hit(
        &mut tx,
        &ip_key(app, crate::vault::Purpose::ReusedPerIp, ip),
        now,
        3600,
        REUSED_VISITS_PER_IP_HOUR,
    )
    .await?;
    if allowed && limits::hit(&mut tx, &link, now, REUSE_NOTE_EVERY_SECS, 1).await? {
        let event = Event::new(Actor::Anonymous, Action::LinkReused)
            .message(d.message_id)
            .ip(ip)
            .detail(serde_json::json!({ "agent": agent_class(ua) }));
        app.audit.record(&mut tx, &event).await?;
    }
    tx.commit().await?;
    Ok(allowed)
}

async fn render(
    app: &App,
    d: &Delivery,
    token: String,
    code_sent: bool,
    error: Option<&'static str>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let email_code = d.methods.contains(&Method::EmailCode);
    let masked = if email_code {
        // The sealed address comes with the delivery row: no extra query.
        mask_address(app.deliveries.open_recipient(d)?.expose_secret())
    } else {
        String::new()
    };
    let page = LandingPage {
        brand: Brand::load(app).await,
        token,
        email_code,
        access_code: d.methods.contains(&Method::AccessCode),
        known_fact: d.methods.contains(&Method::KnownFact),
        masked,
        code_sent,
        error,
    };
    Ok((status, page).into_response())
}

fn code_hash(app: &App, id: MessageId, code: &str) -> Vec<u8> {
    app.vault.keyed_hash(
        crate::vault::Purpose::PickupCode,
        format!("{id}\0{}", code.trim()).as_bytes(),
    )
}

/// A per-address limit's key: IPv6 clients count by their /64.
fn ip_key(app: &App, what: crate::vault::Purpose, ip: std::net::IpAddr) -> Vec<u8> {
    app.vault.keyed_hash(what, rate_key(ip).as_bytes())
}

/// POST: mails a fresh 6-digit code to the recipient address.
pub async fn send_code(
    State(app): State<App>,
    Path(token): Path<String>,
    ClientIp(ip): ClientIp,
) -> Result<Response, PageError> {
    let Some(d) = find(&app, &token).await? else {
        return Ok(notice(&app, Notice::Unknown, None).await);
    };
    let now = app.clock.now();
    if let Some(n) = gate(&d, now) {
        return Ok(notice(&app, n, d.link_consumed_at).await);
    }
    if !d.methods.contains(&Method::EmailCode) {
        return Ok(notice(&app, Notice::Unknown, None).await);
    }
    let mut tx = app.db.begin().await?;
    let message_key = app.vault.keyed_hash(
        crate::vault::Purpose::CodesPerMessage,
        d.message_id.to_string().as_bytes(),
    );
    let per_message = limits::hit(&mut tx, &message_key, now, 24 * 3600, CODES_PER_DAY).await?;
    let per_ip = limits::hit(
        &mut tx,
        &ip_key(&app, crate::vault::Purpose::CodesPerIp, ip),
        now,
        3600,
        CODES_PER_IP_HOUR,
    )
    .await?;
    if !(per_message && per_ip) {
        // The refused attempt still counts against the windows.
        tx.commit().await?;
        return render(
            &app,
            &d,
            token,
            false,
            Some("Too many codes were requested. Use the last code you received, or try again later."),
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
    }
    let code = SecretString::from(format!("{:06}", rand::rng().random_range(0..1_000_000u32)));
    sqlx::query(
        "INSERT INTO pickup_codes (id, message_id, code_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(d.message_id.to_string())
    .bind(code_hash(&app, d.message_id, code.expose_secret()))
    .bind(now)
    .bind(now + CODE_TTL_SECS)
    .execute(&mut *tx)
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
    Ok(Redirect::to(&format!("/p/{token}?sent=1")).into_response())
}

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    code: Option<SecretString>,
    #[serde(default)]
    access_code: Option<SecretString>,
    #[serde(default)]
    known_fact: Option<SecretString>,
}

fn answer(s: &Option<SecretString>) -> &str {
    s.as_ref().map_or("", |s| s.expose_secret())
}

/// POST: checks every answer the message requires. Success consumes the
/// link and binds this browser's (new) session to the message.
pub async fn verify(
    State(app): State<App>,
    Path(token): Path<String>,
    ClientIp(ip): ClientIp,
    session: Session,
    Form(form): Form<VerifyForm>,
) -> Result<Response, PageError> {
    let Some(d) = find(&app, &token).await? else {
        return Ok(notice(&app, Notice::Unknown, None).await);
    };
    let now = app.clock.now();
    if let Some(n) = gate(&d, now) {
        return Ok(notice(&app, n, d.link_consumed_at).await);
    }
    {
        let mut tx = app.db.begin().await?;
        let allowed = limits::hit(
            &mut tx,
            &ip_key(&app, crate::vault::Purpose::VerifyPerIp, ip),
            now,
            3600,
            VERIFY_PER_IP_HOUR,
        )
        .await?;
        tx.commit().await?;
        if !allowed {
            return Ok(notice(&app, Notice::TooMany, None).await);
        }
    }

    // Everything the transactions below need is loaded first: a
    // transaction never waits for a second pool connection (with SQLite's
    // one writer that stalls every writer behind it).
    let hashes = stored_hashes(&app, d.message_id).await?;
    let sender = sender_address(&app, &d).await?;

    // Every required answer is checked (no short cut), outside any
    // transaction: argon2 takes tens of milliseconds.
    let mut ok = true;
    let mut matched_code: Option<String> = None;
    if d.methods.contains(&Method::EmailCode) {
        let hash = code_hash(&app, d.message_id, answer(&form.code));
        let live: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, code_hash FROM pickup_codes
             WHERE message_id = $1 AND used_at IS NULL AND expires_at > $2 AND wrong_guesses < $3",
        )
        .bind(d.message_id.to_string())
        .bind(now)
        .bind(CODE_MAX_WRONG)
        .fetch_all(app.db.pool())
        .await?;
        for (id, stored) in live {
            if bool::from(stored.ct_eq(&hash)) {
                matched_code = Some(id);
            }
        }
        ok &= matched_code.is_some();
    }
    if d.methods.contains(&Method::AccessCode) {
        ok &= check_access_code(&app, hashes.access_code, answer(&form.access_code)).await?;
    }
    if d.methods.contains(&Method::KnownFact) {
        let fact = normalise_fact(answer(&form.known_fact));
        ok &= check_hash(&app, hashes.known_fact, &fact).await?;
    }
    if ok {
        succeed(&app, &d, matched_code, sender, ip, &session).await
    } else {
        fail(&app, &d, token, sender, ip).await
    }
}

/// All answers were right: claim the link and bind this browser's session.
async fn succeed(
    app: &App,
    d: &Delivery,
    matched_code: Option<String>,
    sender: Option<String>,
    ip: std::net::IpAddr,
    session: &Session,
) -> Result<Response, PageError> {
    let now = app.clock.now();
    // Loaded before the transaction, like the sender's address.
    let alerts = app
        .accounts
        .pickup_alerts(d.sender)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let mut tx = app.db.begin().await?;
    // Claim the link: of two concurrent correct answers one wins, and a
    // lock or revocation that landed meanwhile still holds.
    let claimed = sqlx::query(
        "UPDATE deliveries SET link_consumed_at = $1
         WHERE message_id = $2 AND link_consumed_at IS NULL AND locked_at IS NULL
           AND revoked_at IS NULL AND shredded_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(d.message_id.to_string())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let code_ok = match &matched_code {
        Some(id) => {
            sqlx::query("UPDATE pickup_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1
        }
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
        alert_sender(app, &mut tx, d, sender.as_deref(), Alert::FirstPickup).await?;
    }
    if d.shred_after_pickup {
        sqlx::query("UPDATE deliveries SET shred_at = $1 WHERE message_id = $2")
            .bind(now + PICKUP_IDLE_SECS)
            .bind(d.message_id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    let event = Event::new(Actor::Customer, Action::Verified)
        .message(d.message_id)
        .ip(ip);
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.verification(true);
    super::view::bind_session(app, session, d.message_id, d.link_generation).await?;
    Ok(Redirect::to(&format!("/pickup/{}", d.message_id)).into_response())
}

/// A wrong answer. It counts for the message and against every live code
/// only while the link is live, unused and unlocked (one conditional
/// update); the lock, the sender's alert, the audit event and the metric
/// follow only from the failure that actually locked the message.
async fn fail(
    app: &App,
    d: &Delivery,
    token: String,
    sender: Option<String>,
    ip: std::net::IpAddr,
) -> Result<Response, PageError> {
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
    sqlx::query(
        "UPDATE pickup_codes SET wrong_guesses = wrong_guesses + 1
         WHERE message_id = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(d.message_id.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if failure.locked {
        // The sender is always told of a lockout (PII-free: ids only).
        alert_sender(app, &mut tx, d, sender.as_deref(), Alert::Locked).await?;
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
        return Ok(notice(app, Notice::Locked, None).await);
    }
    render(
        app,
        d,
        token,
        false,
        Some("That did not match. Check what you entered and try again. After too many attempts the message locks."),
        StatusCode::UNAUTHORIZED,
    )
    .await
}

/// The neutral page for where the link stands now, after a transaction
/// found it no longer usable (`fallback` if it looks usable after all).
async fn neutral(app: &App, id: MessageId, fallback: Notice) -> Result<Response, PageError> {
    let fresh = app.deliveries.get(id).await?;
    let now = app.clock.now();
    Ok(notice(
        app,
        gate(&fresh, now).unwrap_or(fallback),
        fresh.link_consumed_at,
    )
    .await)
}

/// The argon2id hashes a delivery's answers are checked against.
struct StoredHashes {
    access_code: Option<String>,
    known_fact: Option<String>,
}

async fn stored_hashes(app: &App, id: MessageId) -> Result<StoredHashes, PageError> {
    let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT access_code_hash, known_fact_hash FROM deliveries WHERE message_id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(app.db.pool())
    .await?;
    let (access_code, known_fact) = row.unwrap_or_default();
    Ok(StoredHashes {
        access_code,
        known_fact,
    })
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
/// exists and is not disabled.
async fn sender_address(app: &App, d: &Delivery) -> Result<Option<String>, PageError> {
    let sender = app
        .accounts
        .state(d.sender)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    Ok(sender
        .filter(|s| !s.account.disabled)
        .map(|s| s.account.email.as_str().to_owned()))
}

/// Queues a PII-free alert to the message's sender (loaded beforehand by
/// [`sender_address`]; `None`: nobody to tell).
async fn alert_sender(
    app: &App,
    tx: &mut crate::db::Tx,
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
