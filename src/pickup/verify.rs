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
use crate::deliveries::{Delivery, Status};
use crate::mail::{Alert, Mail};
use crate::portal::ClientIp;
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
/// "Shred after first pickup": how long the verified session may stay idle.
pub const PICKUP_IDLE_SECS: i64 = 30 * 60;

/// Why a link cannot be used right now, if it cannot.
fn gate(d: &Delivery, now: i64) -> Option<Notice> {
    if !d.is_live(now) {
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
    UserAgent(ua): UserAgent,
    Query(q): Query<LandingQuery>,
) -> Result<Response, PageError> {
    let Some(d) = find(&app, &token).await? else {
        return Ok(notice(&app, Notice::Unknown, None).await);
    };
    let now = app.clock.now();
    if let Some(n) = gate(&d, now) {
        if n == Notice::AlreadyOpened {
            let event = Event::new(Actor::Anonymous, Action::LinkReused)
                .message(d.message_id)
                .detail(serde_json::json!({ "agent": agent_class(ua.as_deref()) }));
            app.audit.record_now(&event).await?;
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
    app.vault
        .keyed_hash("pickup-code", format!("{id}\0{}", code.trim()).as_bytes())
}

fn ip_key(app: &App, what: &str, ip: std::net::IpAddr) -> Vec<u8> {
    app.vault.keyed_hash(what, ip.to_string().as_bytes())
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
    let message_key = app
        .vault
        .keyed_hash("codes-per-message", d.message_id.to_string().as_bytes());
    let per_message = limits::hit(&mut tx, &message_key, now, 24 * 3600, CODES_PER_DAY).await?;
    let per_ip = limits::hit(
        &mut tx,
        &ip_key(&app, "codes-per-ip", ip),
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
            &ip_key(&app, "verify-per-ip", ip),
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
        ok &= check_hash(
            &app,
            d.message_id,
            "access_code_hash",
            answer(&form.access_code).trim(),
        )
        .await?;
    }
    if d.methods.contains(&Method::KnownFact) {
        let fact = crate::portal::compose::normalise_fact(answer(&form.known_fact));
        ok &= check_hash(&app, d.message_id, "known_fact_hash", &fact).await?;
    }

    let mut tx = app.db.begin().await?;
    if ok {
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
                sqlx::query(
                    "UPDATE pickup_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1
            }
            None => true,
        };
        if claimed && code_ok {
            let first = app
                .deliveries
                .advance(&mut tx, d.message_id, Status::Verified)
                .await?;
            if first
                && app
                    .accounts
                    .pickup_alerts(d.sender)
                    .await
                    .map_err(|e| PageError::Internal(e.to_string()))?
            {
                alert_sender(&app, &mut tx, &d, Alert::FirstPickup).await?;
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
            super::view::bind_session(&app, &session, d.message_id, d.link_generation).await?;
            return Ok(Redirect::to(&format!("/pickup/{}", d.message_id)).into_response());
        }
        tx.rollback().await?;
        let fresh = app.deliveries.get(d.message_id).await?;
        return Ok(notice(
            &app,
            gate(&fresh, now).unwrap_or(Notice::Unavailable),
            fresh.link_consumed_at,
        )
        .await);
    }

    // A failure: it counts for the message and against every live code.
    let failures: i64 = sqlx::query_scalar(
        "UPDATE deliveries SET failures = failures + 1 WHERE message_id = $1 RETURNING failures",
    )
    .bind(d.message_id.to_string())
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE pickup_codes SET wrong_guesses = wrong_guesses + 1
         WHERE message_id = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(d.message_id.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let event = Event::new(Actor::Anonymous, Action::VerificationFailed)
        .message(d.message_id)
        .ip(ip)
        .detail(serde_json::json!({ "failures": failures }));
    if failures >= LOCK_AFTER {
        app.deliveries.lock(&mut tx, d.message_id).await?;
        // The sender is always told of a lockout (PII-free: ids only).
        alert_sender(&app, &mut tx, &d, Alert::Locked).await?;
        app.audit.record(&mut tx, &event).await?;
        let locked = Event::new(Actor::System, Action::MessageLocked).message(d.message_id);
        app.audit.record(&mut tx, &locked).await?;
        tx.commit().await?;
        app.metrics.verification(false);
        app.metrics.lockout();
        return Ok(notice(&app, Notice::Locked, None).await);
    }
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    app.metrics.verification(false);
    render(
        &app,
        &d,
        token,
        false,
        Some("That did not match. Check what you entered and try again. After too many attempts the message locks."),
        StatusCode::UNAUTHORIZED,
    )
    .await
}

/// Verifies `answer` against an argon2id hash column of the delivery.
async fn check_hash(
    app: &App,
    id: MessageId,
    column: &str,
    answer: &str,
) -> Result<bool, PageError> {
    let sql = match column {
        "access_code_hash" => "SELECT access_code_hash FROM deliveries WHERE message_id = $1",
        _ => "SELECT known_fact_hash FROM deliveries WHERE message_id = $1",
    };
    let stored: Option<Option<String>> = sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_optional(app.db.pool())
        .await?;
    let Some(Some(stored)) = stored else {
        return Ok(false);
    };
    Ok(app
        .hasher
        .verify(SecretString::from(answer.to_owned()), stored)
        .await?)
}

/// Queues a PII-free alert to the message's sender (if their account exists).
async fn alert_sender(
    app: &App,
    tx: &mut crate::db::Tx,
    d: &Delivery,
    alert: Alert,
) -> Result<(), PageError> {
    let sender = app
        .accounts
        .state(d.sender)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    if let Some(s) = sender.filter(|s| !s.account.disabled) {
        app.outbox
            .enqueue(
                tx,
                s.account.email.as_str(),
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
