//! Admin pages: organisation settings and logo, staff (invite, disable,
//! reset two-step verification), audit export. Every handler takes the
//! [`Admin`] extractor, so anyone else gets a 404; every change is audited.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::auth::{Admin, CurrentStaff};
use super::{Pager, cursor_link};
use crate::app::App;
use crate::audit::{self, Action, Event, ExportFormat};
use crate::filetype::FileKind;
use crate::paging::PageStart;
use crate::settings::{
    MAX_ATTACHMENTS_LIMIT, MAX_EXPIRY_HOURS, MAX_INBOX_DAILY_CAP, MAX_LOGO_BYTES,
    MAX_RETENTION_DAYS, MAX_SIZE_LIMIT_MIB, MIN_EXPIRY_HOURS, MIN_RETENTION_DAYS, Method, Settings,
    SettingsError,
};
use crate::staff::{Role, StaffEmail, StaffError, StaffId};
use crate::text::format_time;
use crate::web::csrf::{self, CsrfForm};
use crate::web::{Nav, PageError, PageResult};

/// Multipart framing and the token on top of the logo itself.
const LOGO_FORM_OVERHEAD: usize = 16 * 1024;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/settings", get(settings_page).post(save_settings))
        .route("/admin/logo", post(upload_logo))
        .route("/logo", get(logo))
        .route("/admin/staff", get(staff_page))
        .route("/admin/staff/invite", post(invite))
        .route("/admin/staff/{id}/disable", post(disable))
        .route("/admin/staff/{id}/reset-totp", post(reset_totp))
        .route("/admin/audit", get(audit_page))
        .route("/admin/audit/export", post(export_audit))
}

/// A status-bearing page.
fn page(status: StatusCode, page: impl IntoResponse) -> Response {
    (status, page).into_response()
}

#[derive(Deserialize)]
pub struct Empty {}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DoneQuery {
    done: String,
}

// --- overview --------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_overview.html")]
struct OverviewPage {
    nav: Option<Nav>,
    organisation: String,
    staff_count: i64,
}

pub async fn overview(State(app): State<App>, Admin(staff): Admin) -> PageResult {
    let settings = app.settings.load().await?;
    let staff_count = app.accounts.count().await?;
    Ok(OverviewPage {
        nav: staff.nav(),
        organisation: settings.organisation,
        staff_count,
    }
    .into_response())
}

// --- settings and logo -----------------------------------------------------

/// The settings form as typed, so a refused edit comes back as entered.
struct SettingsFields {
    organisation: String,
    support_line: String,
    default_expiry_hours: String,
    size_limit_mib: String,
    max_attachments: String,
    methods: Vec<(&'static str, &'static str, bool)>,
    totp_required: bool,
    reply_default: bool,
    incoming_retention_days: String,
    kinds: Vec<(&'static str, &'static str, bool)>,
    secure_inbox: bool,
    inbox_daily_cap: String,
}

impl SettingsFields {
    fn from_settings(s: &Settings) -> Self {
        SettingsFields {
            organisation: s.organisation.clone(),
            support_line: s.support_line.clone(),
            default_expiry_hours: s.default_expiry_hours.to_string(),
            size_limit_mib: s.size_limit_mib.to_string(),
            max_attachments: s.max_attachments.to_string(),
            methods: Method::ALL
                .iter()
                .map(|m| (m.as_str(), m.label(), s.allows(*m)))
                .collect(),
            totp_required: s.totp_required,
            reply_default: s.reply_default,
            incoming_retention_days: s.incoming_retention_days.to_string(),
            kinds: FileKind::ALL
                .iter()
                .map(|k| (k.as_str(), k.label(), s.accepted_kinds.contains(k)))
                .collect(),
            secure_inbox: s.secure_inbox,
            inbox_daily_cap: s.inbox_daily_cap.to_string(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_settings.html")]
struct SettingsPage {
    nav: Option<Nav>,
    csrf: String,
    f: SettingsFields,
    errors: Vec<String>,
    notice: Option<&'static str>,
    has_logo: bool,
    logo_error: Option<String>,
    min_hours: u32,
    max_hours: u32,
    max_mib: u64,
    max_attachments: u32,
    max_logo_kib: usize,
    min_retention: u32,
    max_retention: u32,
    max_inbox_cap: u32,
    /// Where customers send documents, for the suggested auto-reply.
    send_url: String,
}

async fn render_settings(
    app: &App,
    staff: &CurrentStaff,
    f: SettingsFields,
    errors: Vec<String>,
    logo_error: Option<String>,
    notice: Option<&'static str>,
) -> Result<SettingsPage, PageError> {
    Ok(SettingsPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        f,
        errors,
        notice,
        has_logo: app.settings.logo().await?.is_some(),
        logo_error,
        min_hours: MIN_EXPIRY_HOURS,
        max_hours: MAX_EXPIRY_HOURS,
        max_mib: MAX_SIZE_LIMIT_MIB,
        max_attachments: MAX_ATTACHMENTS_LIMIT,
        max_logo_kib: MAX_LOGO_BYTES / 1024,
        min_retention: MIN_RETENTION_DAYS,
        max_retention: MAX_RETENTION_DAYS,
        max_inbox_cap: MAX_INBOX_DAILY_CAP,
        send_url: format!("{}/send", app.config.public_url.trim_end_matches('/')),
    })
}

pub async fn settings_page(
    State(app): State<App>,
    Admin(staff): Admin,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let settings = app.settings.load().await?;
    let notice = match q.done.as_str() {
        "saved" => Some("Settings saved."),
        "logo" => Some("Logo saved."),
        _ => None,
    };
    let f = SettingsFields::from_settings(&settings);
    Ok(render_settings(&app, &staff, f, Vec::new(), None, notice)
        .await?
        .into_response())
}

/// Reads the submitted form into settings, or says everything that is wrong.
/// A setting the form does not carry at all (a page from before it existed)
/// keeps its `current` value.
fn parse_settings(
    pairs: &[(String, String)],
    current: &Settings,
) -> (SettingsFields, Result<Settings, Vec<String>>) {
    let sent = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    let field = |name: &str| sent(name).unwrap_or_default();
    let chosen: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "method")
        .map(|(_, v)| v.as_str())
        .collect();
    // A form from before the file kinds were on it keeps the current ones.
    let kinds_shown = sent("kinds_shown").is_some();
    let chosen_kinds: Vec<&str> = if kinds_shown {
        pairs
            .iter()
            .filter(|(k, _)| k == "kind")
            .map(|(_, v)| v.as_str())
            .collect()
    } else {
        current.accepted_kinds.iter().map(|k| k.as_str()).collect()
    };
    let f = SettingsFields {
        organisation: field("organisation"),
        support_line: field("support_line"),
        default_expiry_hours: field("default_expiry_hours"),
        size_limit_mib: field("size_limit_mib"),
        max_attachments: sent("max_attachments")
            .unwrap_or_else(|| current.max_attachments.to_string()),
        methods: Method::ALL
            .iter()
            .map(|m| (m.as_str(), m.label(), chosen.contains(&m.as_str())))
            .collect(),
        totp_required: pairs.iter().any(|(k, _)| k == "totp_required"),
        reply_default: pairs.iter().any(|(k, _)| k == "reply_default"),
        incoming_retention_days: sent("incoming_retention_days")
            .unwrap_or_else(|| current.incoming_retention_days.to_string()),
        kinds: FileKind::ALL
            .iter()
            .map(|k| (k.as_str(), k.label(), chosen_kinds.contains(&k.as_str())))
            .collect(),
        // Like the kinds: a form without the inbox section keeps it as is.
        secure_inbox: if sent("inbox_shown").is_some() {
            pairs.iter().any(|(k, _)| k == "secure_inbox")
        } else {
            current.secure_inbox
        },
        inbox_daily_cap: sent("inbox_daily_cap")
            .unwrap_or_else(|| current.inbox_daily_cap.to_string()),
    };
    let mut errors = Vec::new();
    let hours = f.default_expiry_hours.parse::<u32>().unwrap_or_else(|_| {
        errors.push(format!(
            "Enter the default expiry as a whole number of hours ({MIN_EXPIRY_HOURS} to {MAX_EXPIRY_HOURS})."
        ));
        0
    });
    let mib = f.size_limit_mib.parse::<u64>().unwrap_or_else(|_| {
        errors.push(format!(
            "Enter the size limit as a whole number of MiB (1 to {MAX_SIZE_LIMIT_MIB})."
        ));
        0
    });
    let max_attachments = f.max_attachments.parse::<u32>().unwrap_or_else(|_| {
        errors.push(format!(
            "Enter the number of attachments per message as a whole number (1 to {MAX_ATTACHMENTS_LIMIT})."
        ));
        0
    });
    let retention = f
        .incoming_retention_days
        .parse::<u32>()
        .unwrap_or_else(|_| {
            errors.push(format!(
                "Enter how long to keep handled replies and uploads as a whole number of days ({MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS})."
            ));
            0
        });
    let mut methods = Vec::new();
    for c in &chosen {
        match c.parse::<Method>() {
            Ok(m) if !methods.contains(&m) => methods.push(m),
            Ok(_) => {}
            Err(_) => errors.push("Choose verification methods from the list.".to_owned()),
        }
    }
    let inbox_daily_cap = f.inbox_daily_cap.parse::<u32>().unwrap_or_else(|_| {
        errors.push(format!(
            "Enter the secure inbox's daily limit as a whole number of uploads (1 to {MAX_INBOX_DAILY_CAP})."
        ));
        0
    });
    let mut accepted_kinds = Vec::new();
    for c in &chosen_kinds {
        match FileKind::parse(c) {
            Some(k) if !accepted_kinds.contains(&k) => accepted_kinds.push(k),
            Some(_) => {}
            None => errors.push("Choose file kinds from the list.".to_owned()),
        }
    }
    let settings = Settings {
        organisation: f.organisation.clone(),
        support_line: f.support_line.clone(),
        default_expiry_hours: hours,
        size_limit_mib: mib,
        max_attachments,
        methods,
        totp_required: f.totp_required,
        reply_default: f.reply_default,
        incoming_retention_days: retention,
        accepted_kinds,
        secure_inbox: f.secure_inbox,
        inbox_daily_cap,
    };
    if errors.is_empty()
        && let Err(SettingsError::Invalid(m)) = settings.validate()
    {
        errors.push(m);
    }
    let result = if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    };
    (f, result)
}

pub async fn save_settings(
    State(app): State<App>,
    Admin(staff): Admin,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> PageResult {
    let current = app.settings.load().await?;
    let (f, parsed) = parse_settings(&pairs, &current);
    let errors = match parsed {
        Ok(settings) => match app.settings.save(staff.actor(), &settings).await {
            Ok(()) => return Ok(Redirect::to("/admin/settings?done=saved").into_response()),
            Err(SettingsError::Invalid(m)) => vec![m],
            Err(e) => return Err(e.into()),
        },
        Err(errors) => errors,
    };
    let view = render_settings(&app, &staff, f, errors, None, None).await?;
    Ok(page(StatusCode::UNPROCESSABLE_ENTITY, view))
}

/// The logo upload: the CSRF token must be the first field (nothing else
/// is read before it), the file is read up to the limit and no further,
/// and `save_logo` accepts only PNG and JPEG (never SVG, which can carry
/// script).
pub async fn upload_logo(
    State(app): State<App>,
    Admin(staff): Admin,
    headers: HeaderMap,
    multipart: Multipart,
) -> PageResult {
    let too_large = format!("The logo must be at most {} KiB.", MAX_LOGO_BYTES / 1024);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_LOGO_BYTES + LOGO_FORM_OVERHEAD) {
        crate::web::linger(multipart);
        return Err(PageError::TooLarge(too_large));
    }
    let error = match read_logo(&staff, multipart).await? {
        LogoUpload::Oversized => too_large,
        LogoUpload::Missing => "Choose a PNG or JPEG file to upload.".to_owned(),
        LogoUpload::File(d) => match app.settings.save_logo(staff.actor(), &d).await {
            Ok(()) => return Ok(Redirect::to("/admin/settings?done=logo").into_response()),
            Err(SettingsError::Invalid(m)) => m,
            Err(e) => return Err(e.into()),
        },
    };
    let settings = app.settings.load().await?;
    let f = SettingsFields::from_settings(&settings);
    let view = render_settings(&app, &staff, f, Vec::new(), Some(error), None).await?;
    Ok(page(StatusCode::UNPROCESSABLE_ENTITY, view))
}

/// What the logo form carried.
enum LogoUpload {
    Missing,
    Oversized,
    File(Vec<u8>),
}

/// Reads the logo form: the CSRF token first, then the `logo` file, held
/// only up to the size limit (the rest of an oversized upload is drained
/// in the background so the browser sees the answer).
async fn read_logo(
    staff: &CurrentStaff,
    mut multipart: Multipart,
) -> Result<LogoUpload, PageError> {
    let bad = || PageError::BadRequest("The upload was interrupted. Please try again.".into());
    let mut csrf_ok = false;
    let mut data: Option<Vec<u8>> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(|_| bad())? {
        let name = field.name().unwrap_or_default().to_owned();
        if !csrf_ok {
            if name != "csrf" {
                return Err(PageError::Csrf);
            }
            let token = field.text().await.map_err(|_| bad())?;
            csrf::check(&staff.session, &token).await?;
            csrf_ok = true;
            continue;
        }
        if name != "logo" || data.is_some() {
            continue;
        }
        let mut buf = Vec::new();
        let mut oversized = false;
        while let Some(chunk) = field.chunk().await.map_err(|_| bad())? {
            if buf.len() + chunk.len() > MAX_LOGO_BYTES {
                oversized = true;
                break;
            }
            buf.extend_from_slice(&chunk);
        }
        if oversized {
            drop(field);
            crate::web::linger(multipart);
            return Ok(LogoUpload::Oversized);
        }
        data = Some(buf);
    }
    if !csrf_ok {
        return Err(PageError::Csrf);
    }
    Ok(match data {
        Some(d) if !d.is_empty() => LogoUpload::File(d),
        _ => LogoUpload::Missing,
    })
}

/// The organisation's logo, for customer and staff pages alike.
pub async fn logo(State(app): State<App>) -> PageResult {
    let Some((content_type, data)) = app.settings.logo().await? else {
        return Err(PageError::NotFound);
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300".to_owned()),
        ],
        data,
    )
        .into_response())
}

// --- staff -----------------------------------------------------------------

struct StaffRow {
    id: String,
    email: String,
    role: &'static str,
    status: &'static str,
    status_class: &'static str,
    totp: bool,
    me: bool,
    disabled: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_staff.html")]
struct StaffPage {
    nav: Option<Nav>,
    csrf: String,
    rows: Vec<StaffRow>,
    pager: Pager,
    notice: Option<&'static str>,
    error: Option<String>,
    invite_email: String,
    invite_role: String,
}

async fn render_staff(
    app: &App,
    staff: &CurrentStaff,
    start: Option<PageStart<StaffId>>,
    notice: Option<&'static str>,
    error: Option<String>,
    invite_email: String,
    invite_role: String,
) -> Result<StaffPage, PageError> {
    // Invited accounts whose owner has not set a password yet.
    let pending = app.links.pending_invites().await?;
    let now = app.clock.now();
    let page = app.accounts.page(start.as_ref(), STAFF_PAGE_SIZE).await?;
    let link = cursor_link("/admin/staff");
    let pager = Pager::new(&page, ("after", "before"), StaffId::to_string, link, false);
    let rows = page
        .items
        .into_iter()
        .map(|s| {
            let id = s.account.id.to_string();
            let (status, status_class) = match pending.get(&id) {
                _ if s.account.disabled => ("disabled", "disabled"),
                _ if s.account.is_service() => ("service account", "service"),
                Some(expires) if *expires > now => ("invited", "invited"),
                Some(_) => ("invitation expired", "invitation_expired"),
                None => ("active", "active"),
            };
            StaffRow {
                me: s.account.id == staff.id(),
                email: s.account.email.as_str().to_owned(),
                role: s.account.role.as_str(),
                status,
                status_class,
                totp: s.totp_enabled,
                disabled: s.account.disabled,
                id,
            }
        })
        .collect();
    Ok(StaffPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        rows,
        pager,
        notice,
        error,
        invite_email,
        invite_role,
    })
}

/// Accounts per page of the staff list.
const STAFF_PAGE_SIZE: usize = 50;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StaffListParams {
    done: String,
    /// A staff id: the page of accounts after, or before, its address.
    after: String,
    before: String,
}

pub async fn staff_page(
    State(app): State<App>,
    Admin(staff): Admin,
    Query(q): Query<StaffListParams>,
) -> PageResult {
    let start = super::page_start(&q.after, &q.before, StaffId::parse)?;
    let notice = match q.done.as_str() {
        "disabled" => Some("The account is disabled and its sessions have ended."),
        "totp-reset" => Some(
            "Two-step verification was removed. The person sets it up again at their next sign-in if it is required.",
        ),
        _ => None,
    };
    let view = render_staff(
        &app,
        &staff,
        start,
        notice,
        None,
        String::new(),
        "agent".into(),
    )
    .await?;
    Ok(view.into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InviteForm {
    email: String,
    role: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_invited.html")]
struct InvitedPage {
    nav: Option<Nav>,
    email: String,
    role: &'static str,
    expires: String,
}

pub async fn invite(
    State(app): State<App>,
    Admin(staff): Admin,
    CsrfForm(form): CsrfForm<InviteForm>,
) -> PageResult {
    let refuse = |error: &str| refuse_invite(&app, &staff, &form, error.to_owned());
    let Ok(email) = StaffEmail::parse(&form.email) else {
        return refuse("Enter your colleague's email address, like name@example.com.").await;
    };
    if email.is_service_address() {
        return refuse(
            "Addresses at service.invalid belong to service accounts, which are never invited. Create one on the Service accounts page.",
        )
        .await;
    }
    let Ok(role) = form.role.parse::<Role>() else {
        return refuse("Choose a role: agent or administrator.").await;
    };
    let invitation = match app
        .links
        .invite(staff.actor(), staff.ip, &email, role)
        .await
    {
        Ok(i) => i,
        Err(StaffError::EmailTaken) => {
            return refuse("A staff account with that address already exists.").await;
        }
        Err(e) => return Err(e.into()),
    };
    // The link went out by email (queued with the account); the admin never
    // sees it, and only its keyed hash is stored.
    Ok(InvitedPage {
        nav: staff.nav(),
        email: email.as_str().to_owned(),
        role: role.as_str(),
        expires: format_time(invitation.expires_at),
    }
    .into_response())
}

/// The staff page again with the invitation form as typed and what is wrong.
async fn refuse_invite(
    app: &App,
    staff: &CurrentStaff,
    form: &InviteForm,
    error: String,
) -> PageResult {
    let view = render_staff(
        app,
        staff,
        None,
        None,
        Some(error),
        form.email.trim().to_owned(),
        form.role.clone(),
    )
    .await?;
    Ok(page(StatusCode::UNPROCESSABLE_ENTITY, view))
}

fn parse_staff_id(id: &str) -> Result<StaffId, PageError> {
    StaffId::parse(id).ok_or(PageError::NotFound)
}

pub async fn disable(
    State(app): State<App>,
    Admin(staff): Admin,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    let id = parse_staff_id(&id)?;
    if id == staff.id() {
        // Also guarantees at least one admin always remains.
        let error = "You cannot disable your own account. Ask another administrator.";
        let view = render_staff(
            &app,
            &staff,
            None,
            None,
            Some(error.to_owned()),
            String::new(),
            "agent".into(),
        )
        .await?;
        return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, view));
    }
    app.accounts.disable_id(staff.actor(), id).await?;
    Ok(Redirect::to("/admin/staff?done=disabled").into_response())
}

pub async fn reset_totp(
    State(app): State<App>,
    Admin(staff): Admin,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> PageResult {
    let id = parse_staff_id(&id)?;
    if app.accounts.state(id).await?.is_none() {
        return Err(PageError::NotFound);
    }
    app.totp
        .reset(staff.actor(), id)
        .await
        .map_err(PageError::internal)?;
    Ok(Redirect::to("/admin/staff?done=totp-reset").into_response())
}

// --- audit export ----------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "portal/admin_audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    csrf: String,
    from: String,
    to: String,
    format: String,
    error: Option<String>,
    events: Vec<EventRow>,
    pager: Pager,
}

/// An audit event as the admin's list shows it. Events hold ids, never
/// customer data.
struct EventRow {
    id: i64,
    at: String,
    actor: String,
    action: String,
    message_id: Option<String>,
    ip: String,
    detail: String,
}

/// Events per page of the audit list.
const AUDIT_PAGE_SIZE: usize = 50;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AuditListParams {
    /// An event id: the page of events older, or newer, than it.
    older: String,
    newer: String,
}

/// The audit page: the export form (as typed, with what is wrong) over a
/// page of the log, newest first.
async fn audit_view(
    app: &App,
    staff: &CurrentStaff,
    start: Option<PageStart<i64>>,
    form: ExportForm,
    error: Option<String>,
) -> Result<AuditPage, PageError> {
    let page = app.audit.page(start.as_ref(), AUDIT_PAGE_SIZE).await?;
    let link = cursor_link("/admin/audit");
    let pager = Pager::new(&page, ("older", "newer"), i64::to_string, link, true);
    Ok(AuditPage {
        nav: staff.nav(),
        csrf: staff.csrf.clone(),
        from: form.from,
        to: form.to,
        format: form.format,
        error,
        events: page
            .items
            .into_iter()
            .map(|e| EventRow {
                id: e.id,
                at: format_time(e.at),
                actor: e.actor,
                action: e.action,
                message_id: e.message_id,
                ip: e.ip.unwrap_or_default(),
                detail: e.detail.unwrap_or_default(),
            })
            .collect(),
        pager,
    })
}

/// `YYYY-MM-DD` of a unix time (UTC).
fn day_text(unix: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

pub async fn audit_page(
    State(app): State<App>,
    Admin(staff): Admin,
    Query(p): Query<AuditListParams>,
) -> PageResult {
    let start = super::page_start(&p.older, &p.newer, |s| s.parse::<i64>().ok())?;
    let now = app.clock.now();
    let form = ExportForm {
        from: day_text(now - 30 * 24 * 3600),
        to: day_text(now),
        format: "csv".to_owned(),
    };
    Ok(audit_view(&app, &staff, start, form, None)
        .await?
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ExportForm {
    from: String,
    to: String,
    format: String,
}

pub async fn export_audit(
    State(app): State<App>,
    Admin(staff): Admin,
    CsrfForm(form): CsrfForm<ExportForm>,
) -> PageResult {
    let checked = check_export(&form);
    let ((from, to), format) = match checked {
        Ok(ok) => ok,
        Err(error) => {
            let typed = ExportForm {
                from: form.from.trim().to_owned(),
                to: form.to.trim().to_owned(),
                format: form.format.clone(),
            };
            let view = audit_view(&app, &staff, None, typed, Some(error)).await?;
            return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, view));
        }
    };
    let events = app.audit.events_between(from, to).await?;
    // Recorded before the file leaves, as the CLI does: an export that is
    // not in the log never happened.
    let detail = serde_json::json!({ "from": from, "to": to, "events": events.len() });
    let event = Event::new(staff.actor(), Action::AuditExported)
        .ip(staff.ip)
        .detail(detail);
    app.audit.record_now(&event).await?;
    let mut body = Vec::new();
    audit::write_export(&mut body, format, &events).map_err(PageError::internal)?;
    Ok(export_response(from, to, format, body))
}

/// The export form's days and format, or what to fix.
fn check_export(form: &ExportForm) -> Result<((i64, i64), ExportFormat), String> {
    match (
        audit::day_range(&form.from, &form.to),
        ExportFormat::parse(&form.format),
    ) {
        (Ok(range), Some(format)) => Ok((range, format)),
        (Err(audit::DayRangeError::Backwards), _) => {
            Err("The last day must not be before the first day.".to_owned())
        }
        (Err(audit::DayRangeError::NotADay(_)), _) => {
            Err("Enter both days as dates, like 2026-11-29.".to_owned())
        }
        (Ok(_), None) => Err("Choose CSV or JSON.".to_owned()),
    }
}

/// The export as a download, sandboxed.
fn export_response(from: i64, to: i64, format: ExportFormat, body: Vec<u8>) -> Response {
    // The day names come from parsed dates, so they are safe in a header.
    let file_name = format!(
        "sealpost-audit-{}-{}.{}",
        day_text(from),
        day_text(to - 24 * 3600),
        format.extension()
    );
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_owned(),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn settings_form_parses_and_refuses() {
        let current = Settings {
            max_attachments: 7,
            ..Settings::default()
        };
        let (_, ok) = parse_settings(
            &pairs(&[
                ("organisation", " Acme "),
                ("support_line", "Call 0800"),
                ("default_expiry_hours", "48"),
                ("size_limit_mib", "20"),
                ("method", "access_code"),
                ("method", "email_code"),
                ("totp_required", "on"),
            ]),
            &current,
        );
        let s = ok.unwrap();
        assert_eq!(s.organisation, "Acme");
        assert_eq!(s.methods, vec![Method::AccessCode, Method::EmailCode]);
        assert!(s.totp_required);
        assert_eq!(s.default_expiry_hours, 48);
        assert_eq!(s.max_attachments, 7, "a form without the field keeps it");

        let (f, bad) = parse_settings(
            &pairs(&[
                ("organisation", "Acme"),
                ("default_expiry_hours", "721"),
                ("size_limit_mib", "x"),
            ]),
            &current,
        );
        assert_eq!(bad.unwrap_err().len(), 1, "the number error comes first");
        assert_eq!(f.default_expiry_hours, "721");
        let (_, bad) = parse_settings(
            &pairs(&[
                ("organisation", "Acme"),
                ("default_expiry_hours", "721"),
                ("size_limit_mib", "5"),
                ("method", "email_code"),
            ]),
            &current,
        );
        assert!(bad.unwrap_err()[0].contains("between 1 hour and 30 days"));
        let (_, bad) = parse_settings(
            &pairs(&[
                ("organisation", "Acme"),
                ("default_expiry_hours", "1"),
                ("size_limit_mib", "5"),
                ("method", "carrier_pigeon"),
            ]),
            &current,
        );
        assert!(bad.is_err());
        let base = [
            ("organisation", "Acme"),
            ("default_expiry_hours", "1"),
            ("size_limit_mib", "5"),
            ("method", "email_code"),
        ];
        let with = |n: &'static str| {
            let mut p = base.to_vec();
            p.push(("max_attachments", n));
            parse_settings(&pairs(&p), &current).1
        };
        assert_eq!(with("200").unwrap().max_attachments, 200);
        for bad in ["0", "1001", "", "ten", "-1"] {
            let errors = with(bad).unwrap_err();
            assert!(errors[0].contains("attachments"), "{bad:?}: {errors:?}");
        }
    }

    #[test]
    fn day_names() {
        assert_eq!(day_text(1_800_000_000), "2027-01-15");
    }
}
