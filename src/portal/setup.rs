//! First-run setup link and staff invitations: one-time links to set a
//! password.
//!
//! A link carries a 256-bit token from the OS CSPRNG; the database keeps
//! only its keyed hash (`staff_links`), so a copy of the database cannot be
//! turned into working links, and lookups compare hashes, never tokens.
//! Tokens are never logged. A link is consumed by an atomic claim
//! (`UPDATE … WHERE used_at IS NULL AND expires_at > now`) in the same
//! transaction as the password it sets, so it works exactly once.

use std::fmt;
use std::net::IpAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::Row;
use tower_sessions::Session;

use super::ClientIp;
use crate::app::App;
use crate::audit::{Action, Actor, AuditError, Event};
use crate::db::Tx;
use crate::staff::password::{self, NewPassword, PasswordRejected};
use crate::staff::{AccountError, Role, StaffEmail, StaffId};
use crate::web::client_ip::Loopback;
use crate::web::csrf::{self, CsrfForm};
use crate::web::{Nav, PageError, PageResult};

/// The first admin must be created soon after start-up: a link printed to
/// a console should not stay useful for long.
pub const SETUP_VALID_SECS: i64 = 3600;
/// Long enough to cover a weekend between the invite and the first sign-in.
pub const INVITE_VALID_SECS: i64 = 72 * 3600;
pub fn routes() -> Router<App> {
    Router::new()
        .route("/setup/{token}", get(setup_page).post(setup))
        .route("/invite/{token}", get(invite_page).post(accept_invite))
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Account(#[from] AccountError),
    #[error("{0}")]
    Hash(#[from] password::HashError),
    #[error("queuing the invitation email: {0}")]
    Mail(String),
}

impl From<LinkError> for PageError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Hash(e) | LinkError::Account(AccountError::Hash(e)) => PageError::from(e),
            other => PageError::Internal(other.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Setup,
    Invite,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Setup => "setup",
            Purpose::Invite => "invite",
        }
    }
}

/// A link's secret: 32 bytes from the OS CSPRNG, base64url in the URL.
pub struct LinkToken([u8; 32]);

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkToken(***)")
    }
}

impl LinkToken {
    pub fn generate() -> Self {
        LinkToken(rand::rng().random::<[u8; 32]>())
    }

    /// The token from a URL path segment; anything else is simply unknown.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()?;
        bytes.try_into().ok().map(LinkToken)
    }

    pub fn encode(&self) -> SecretString {
        SecretString::from(URL_SAFE_NO_PAD.encode(self.0))
    }

    fn hash(&self, app: &App) -> Vec<u8> {
        app.vault
            .keyed_hash(crate::vault::Purpose::StaffLink, &self.0)
    }
}

fn link_url(app: &App, kind: &str, token: &LinkToken) -> SecretString {
    SecretString::from(format!(
        "{}/{kind}/{}",
        app.config.public_url.trim_end_matches('/'),
        token.encode().expose_secret()
    ))
}

async fn insert_link(
    tx: &mut Tx,
    app: &App,
    purpose: Purpose,
    staff: Option<StaffId>,
    token: &LinkToken,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO staff_links (token_hash, purpose, staff_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token.hash(app))
    .bind(purpose.as_str())
    .bind(staff.map(|s| s.to_string()))
    .bind(app.clock.now())
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The link's account (for invitations) if the link is known, unused and
/// unexpired. Changes nothing: opening a link must not consume it.
async fn find_link(
    app: &App,
    purpose: Purpose,
    token: &LinkToken,
) -> Result<Option<Option<String>>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT staff_id FROM staff_links
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(token.hash(app))
    .bind(purpose.as_str())
    .bind(app.clock.now())
    .fetch_optional(app.db.pool())
    .await?;
    row.map(|r| r.try_get::<Option<String>, _>(0)).transpose()
}

/// Marks the link used if it still is usable; false if another request
/// got there first, or it expired or never existed.
async fn claim(
    tx: &mut Tx,
    app: &App,
    purpose: Purpose,
    token: &LinkToken,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(
        "UPDATE staff_links SET used_at = $1
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(app.clock.now())
    .bind(token.hash(app))
    .bind(purpose.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// When no staff account exists yet, issues a one-hour link to create the
/// first admin (ending any earlier unused setup link) and returns its full
/// URL; `None` once anyone has an account. The caller shows the URL to the
/// operator; it must never go to the log.
pub async fn issue_setup_link(app: &App) -> Result<Option<SecretString>, LinkError> {
    if app.accounts.count().await? > 0 {
        return Ok(None);
    }
    let token = LinkToken::generate();
    let now = app.clock.now();
    let expires_at = now + SETUP_VALID_SECS;
    let mut tx = app.db.begin().await?;
    // Only the newest link works: a restart does not leave several live.
    sqlx::query(
        "UPDATE staff_links SET expires_at = $1
         WHERE purpose = 'setup' AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?;
    insert_link(&mut tx, app, Purpose::Setup, None, &token, expires_at).await?;
    let event = Event::new(Actor::System, Action::SetupLinkIssued)
        .detail(serde_json::json!({ "expires_at": expires_at }));
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(Some(link_url(app, "setup", &token)))
}

/// A new invitation: what the admin needs to pass on.
pub struct Invitation {
    pub staff_id: StaffId,
    pub url: SecretString,
    pub expires_at: i64,
}

/// Creates an account that cannot sign in yet and a 72-hour link with
/// which its owner sets a password, in one transaction with its audit
/// event.
pub async fn invite(
    app: &App,
    actor: Actor,
    ip: IpAddr,
    email: &StaffEmail,
    role: Role,
) -> Result<Invitation, LinkError> {
    let hash = app.hasher.unusable_hash().await?;
    let token = LinkToken::generate();
    let expires_at = app.clock.now() + INVITE_VALID_SECS;
    let mut tx = app.db.begin().await?;
    let staff_id = app.accounts.insert(&mut tx, email, role, &hash).await?;
    insert_link(
        &mut tx,
        app,
        Purpose::Invite,
        Some(staff_id),
        &token,
        expires_at,
    )
    .await?;
    let url = link_url(app, "invite", &token);
    // The invitation email commits with the account: one never exists
    // without the other.
    app.outbox
        .enqueue(
            &mut tx,
            email.as_str(),
            &crate::mail::Mail::StaffInvite {
                url: url.expose_secret().to_owned(),
            },
            None,
        )
        .await
        .map_err(|e| LinkError::Mail(e.to_string()))?;
    let detail = serde_json::json!({ "staff_id": staff_id.to_string(), "role": role.as_str() });
    let event = Event::new(actor, Action::StaffInvited)
        .ip(ip)
        .detail(detail);
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(Invitation {
        staff_id,
        url,
        expires_at,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/setup_invalid.html")]
struct InvalidLinkPage {
    nav: Option<Nav>,
}

/// The same page for unknown, used, expired and refused links, so a
/// visitor learns nothing about which it was.
fn invalid_link() -> Response {
    (StatusCode::NOT_FOUND, InvalidLinkPage { nav: None }).into_response()
}

fn password_error(e: PasswordRejected) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => text,
    }
}

/// Checks the two password fields; the message says what to fix.
fn check_password(
    password: &SecretString,
    repeat: &SecretString,
    email: &str,
) -> Result<NewPassword, String> {
    if password.expose_secret() != repeat.expose_secret() {
        return Err("The two passwords do not match. Type the same password twice.".to_owned());
    }
    NewPassword::parse(password.clone(), email).map_err(password_error)
}

// --- first-run setup -----------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "portal/setup.html")]
struct SetupPage {
    nav: Option<Nav>,
    csrf: String,
    token: String,
    email: String,
    errors: Vec<String>,
}

/// Whether the setup link may be used by this client right now. The setup
/// page answers only on the machine Sealpost runs on (or through an SSH
/// tunnel to it), never through a proxy, so a leaked console line is not
/// enough on its own (see [`Loopback`]).
async fn setup_allowed(
    app: &App,
    Loopback(local): Loopback,
    token: &LinkToken,
) -> Result<bool, PageError> {
    if !local {
        return Ok(false);
    }
    if app.accounts.count().await.map_err(LinkError::from)? > 0 {
        return Ok(false);
    }
    Ok(find_link(app, Purpose::Setup, token).await?.is_some())
}

pub async fn setup_page(
    State(app): State<App>,
    session: Session,
    local: Loopback,
    Path(token): Path<String>,
) -> PageResult {
    let Some(token) = LinkToken::parse(&token) else {
        return Ok(invalid_link());
    };
    if !setup_allowed(&app, local, &token).await? {
        return Ok(invalid_link());
    }
    Ok(SetupPage {
        nav: None,
        csrf: csrf::token(&session).await?,
        token: token.encode().expose_secret().to_owned(),
        email: String::new(),
        errors: Vec::new(),
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    email: String,
    password: SecretString,
    password_repeat: SecretString,
}

pub async fn setup(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    local: Loopback,
    Path(token): Path<String>,
    CsrfForm(form): CsrfForm<SetupForm>,
) -> PageResult {
    let Some(token) = LinkToken::parse(&token) else {
        return Ok(invalid_link());
    };
    if !setup_allowed(&app, local, &token).await? {
        return Ok(invalid_link());
    }
    // Mistakes in the form do not use up the link.
    let checked = match StaffEmail::parse(&form.email) {
        Err(_) => Err("Enter your email address, like name@example.com.".to_owned()),
        Ok(email) => check_password(&form.password, &form.password_repeat, email.as_str())
            .map(|p| (email, p)),
    };
    let (email, new_password) = match checked {
        Ok(ok) => ok,
        Err(error) => {
            let page = SetupPage {
                nav: None,
                csrf: csrf::token(&session).await?,
                token: token.encode().expose_secret().to_owned(),
                email: form.email.trim().to_owned(),
                errors: vec![error],
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let hash = app
        .hasher
        .hash(new_password)
        .await
        .map_err(LinkError::from)?;
    let mut tx = app.db.begin().await?;
    if !claim(&mut tx, &app, Purpose::Setup, &token).await? {
        return Ok(invalid_link());
    }
    // Checked again under the transaction: the link is for the very first
    // account only.
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM staff_users")
        .fetch_one(&mut *tx)
        .await?;
    if existing > 0 {
        return Ok(invalid_link());
    }
    let id = app
        .accounts
        .insert(&mut tx, &email, Role::Admin, &hash)
        .await
        .map_err(LinkError::from)?;
    let detail = serde_json::json!({
        "staff_id": id.to_string(),
        "role": Role::Admin.as_str(),
        "via": "setup_link",
    });
    let event = Event::new(Actor::Staff(id.to_string()), Action::StaffCreated)
        .ip(ip)
        .detail(detail);
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(Redirect::to("/sign-in?reason=password-set").into_response())
}

// --- invitations -----------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "portal/setup_invite.html")]
struct InvitePage {
    nav: Option<Nav>,
    csrf: String,
    token: String,
    email: String,
    errors: Vec<String>,
}

/// The invited account, if the link is usable and the account still
/// exists and is not disabled.
async fn invited_account(
    app: &App,
    token: &LinkToken,
) -> Result<Option<(StaffId, StaffEmail)>, PageError> {
    let Some(Some(id)) = find_link(app, Purpose::Invite, token).await? else {
        return Ok(None);
    };
    let Some(id) = StaffId::parse(&id) else {
        return Ok(None);
    };
    let state = app.accounts.state(id).await.map_err(LinkError::from)?;
    Ok(state
        .filter(|s| !s.account.disabled)
        .map(|s| (id, s.account.email)))
}

pub async fn invite_page(
    State(app): State<App>,
    session: Session,
    Path(token): Path<String>,
) -> PageResult {
    let Some(token) = LinkToken::parse(&token) else {
        return Ok(invalid_link());
    };
    let Some((_, email)) = invited_account(&app, &token).await? else {
        return Ok(invalid_link());
    };
    Ok(InvitePage {
        nav: None,
        csrf: csrf::token(&session).await?,
        token: token.encode().expose_secret().to_owned(),
        email: email.as_str().to_owned(),
        errors: Vec::new(),
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct InviteForm {
    password: SecretString,
    password_repeat: SecretString,
}

pub async fn accept_invite(
    State(app): State<App>,
    session: Session,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    CsrfForm(form): CsrfForm<InviteForm>,
) -> PageResult {
    let Some(token) = LinkToken::parse(&token) else {
        return Ok(invalid_link());
    };
    let Some((id, email)) = invited_account(&app, &token).await? else {
        return Ok(invalid_link());
    };
    // Checked before the claim so a rejected password does not use up the link.
    if let Err(error) = check_password(&form.password, &form.password_repeat, email.as_str()) {
        let page = InvitePage {
            nav: None,
            csrf: csrf::token(&session).await?,
            token: token.encode().expose_secret().to_owned(),
            email: email.as_str().to_owned(),
            errors: vec![error],
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    // Hashed before the transaction: argon2 takes tens of milliseconds
    // (more when its pool is busy) and must not hold SQLite's write lock.
    // The claim and the new password still commit together.
    let hash = app
        .accounts
        .hash_new_password(&email, form.password)
        .await
        .map_err(LinkError::from)?;
    let mut tx = app.db.begin().await?;
    if !claim(&mut tx, &app, Purpose::Invite, &token).await? {
        return Ok(invalid_link());
    }
    app.accounts
        .set_password(&mut tx, id, &hash)
        .await
        .map_err(LinkError::from)?;
    let event = Event::new(Actor::Staff(id.to_string()), Action::InviteAccepted)
        .ip(ip)
        .detail(serde_json::json!({ "staff_id": id.to_string() }));
    app.audit.record(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(Redirect::to("/sign-in?reason=password-set").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_anything_else() {
        let t = LinkToken::generate();
        let text = t.encode();
        assert_eq!(text.expose_secret().len(), 43);
        let back = LinkToken::parse(text.expose_secret()).map(|b| b.0);
        assert_eq!(back, Some(t.0));
        assert_ne!(LinkToken::generate().0, t.0);
        for bad in ["", "abc", "not a token", &"A".repeat(44), &"A".repeat(42)] {
            assert!(LinkToken::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(format!("{t:?}"), "LinkToken(***)");
    }
}
