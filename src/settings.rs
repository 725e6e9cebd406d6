//! Organisation settings admins change at run time (in the database, so
//! every instance sees the same): branding shown to customers, defaults
//! for new messages, and security policy.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::audit::{Action, Actor, AuditLog, Event};
use crate::filetype::FileKind;
use crate::store::settings as store;
use crate::store::{Db, Tx};

/// How a customer proves they are the recipient before anything is decrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A one-time code mailed to the recipient address.
    EmailCode,
    /// A code the agent tells the customer by phone.
    AccessCode,
    /// Something only the customer knows (e.g. last digits of an account).
    KnownFact,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::EmailCode, Method::AccessCode, Method::KnownFact];

    /// How a list of methods is stored: names, comma-separated.
    pub fn join(methods: &[Method]) -> String {
        let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
        names.join(",")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::EmailCode => "email_code",
            Method::AccessCode => "access_code",
            Method::KnownFact => "known_fact",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::EmailCode => "Code sent by email",
            Method::AccessCode => "Access code given by phone",
            Method::KnownFact => "A fact only the customer knows",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::text::by_name(&Method::ALL, Method::as_str, s)
            .ok_or_else(|| SettingsError::Invalid(format!("unknown verification method {s:?}")))
    }
}

/// Bounds on message lifetime: long enough for a customer on holiday, short
/// enough that forgotten messages do not linger.
pub const MIN_EXPIRY_HOURS: u32 = 1;
pub const MAX_EXPIRY_HOURS: u32 = 30 * 24;
/// Upper bound an admin may set for the per-message size limit.
pub const MAX_SIZE_LIMIT_MIB: u64 = 10 * 1024;
pub const MAX_LOGO_BYTES: usize = 256 * 1024;
/// Attachments per message unless an admin changes it: each one is a blob,
/// a row and a line on the customer's page, so a flood of empty files must
/// not be free.
pub const DEFAULT_MAX_ATTACHMENTS: u32 = 50;
/// Upper bound an admin may set for attachments per message.
pub const MAX_ATTACHMENTS_LIMIT: u32 = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub organisation: String,
    pub support_line: String,
    pub default_expiry_hours: u32,
    pub size_limit_mib: u64,
    pub max_attachments: u32,
    pub methods: Vec<Method>,
    pub totp_required: bool,
    /// Whether "allow a reply" starts ticked on the compose page.
    pub reply_default: bool,
    /// Days an incoming item is kept after an agent marked it done.
    pub incoming_retention_days: u32,
    /// File kinds customers may upload (judged by content); a request
    /// may narrow them further.
    pub accepted_kinds: Vec<FileKind>,
    /// Whether the standing secure inbox (`/send`) is open.
    pub secure_inbox: bool,
    /// Uploads the secure inbox takes per day, from everyone together.
    pub inbox_daily_cap: u32,
}

/// Bounds on the secure inbox's daily cap.
pub const MAX_INBOX_DAILY_CAP: u32 = 100_000;

/// Bounds on how long a handled incoming item is kept.
pub const MIN_RETENTION_DAYS: u32 = 1;
pub const MAX_RETENTION_DAYS: u32 = 3650;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            organisation: "Sealpost".to_owned(),
            support_line: String::new(),
            default_expiry_hours: 7 * 24,
            size_limit_mib: 100,
            max_attachments: DEFAULT_MAX_ATTACHMENTS,
            methods: Method::ALL.to_vec(),
            totp_required: false,
            reply_default: true,
            incoming_retention_days: 30,
            accepted_kinds: FileKind::ALL.to_vec(),
            secure_inbox: false,
            inbox_daily_cap: 200,
        }
    }
}

impl Settings {
    pub fn size_limit_bytes(&self) -> u64 {
        self.size_limit_mib.saturating_mul(1024 * 1024)
    }

    pub fn allows(&self, method: Method) -> bool {
        self.methods.contains(&method)
    }

    /// Checks an admin's edit; the message says what to fix.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |m: &str| Err(SettingsError::Invalid(m.to_owned()));
        if self.organisation.trim().is_empty() || self.organisation.chars().count() > 100 {
            return bad("The organisation name must be 1 to 100 characters.");
        }
        if self.support_line.chars().count() > 200 {
            return bad("The support contact line must be at most 200 characters.");
        }
        if !(MIN_EXPIRY_HOURS..=MAX_EXPIRY_HOURS).contains(&self.default_expiry_hours) {
            return bad("The default expiry must be between 1 hour and 30 days.");
        }
        if !(1..=MAX_SIZE_LIMIT_MIB).contains(&self.size_limit_mib) {
            return bad("The size limit must be between 1 MiB and 10240 MiB.");
        }
        if !(1..=MAX_ATTACHMENTS_LIMIT).contains(&self.max_attachments) {
            return bad(&format!(
                "The number of attachments per message must be between 1 and {MAX_ATTACHMENTS_LIMIT}."
            ));
        }
        if self.methods.is_empty() {
            return bad("Allow at least one verification method.");
        }
        if !(1..=MAX_INBOX_DAILY_CAP).contains(&self.inbox_daily_cap) {
            return bad(&format!(
                "The secure inbox's daily limit must be between 1 and {MAX_INBOX_DAILY_CAP} uploads."
            ));
        }
        if self.accepted_kinds.is_empty() {
            return bad("Accept at least one kind of file from customers.");
        }
        if !(MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&self.incoming_retention_days) {
            return bad(&format!(
                "Keep handled replies and uploads between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS} days."
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
}

#[derive(Clone)]
pub struct SettingsStore {
    db: Db,
    audit: AuditLog,
    /// Customer pages read settings on every request; a few seconds of
    /// staleness on other instances is fine, this instance sees its own
    /// saves at once.
    cache: std::sync::Arc<std::sync::RwLock<Option<(std::time::Instant, Settings, bool)>>>,
    /// Held by the one request that refreshes an expired cache; the others
    /// keep using the stale copy meanwhile instead of all querying at once
    /// (which showed as a latency spike every CACHE_TTL under load).
    refreshing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// How long another instance's settings change may take to show.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl fmt::Debug for SettingsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SettingsStore { .. }")
    }
}

impl SettingsStore {
    pub fn new(db: Db, audit: AuditLog) -> Self {
        SettingsStore {
            db,
            audit,
            cache: Default::default(),
            refreshing: Default::default(),
        }
    }

    /// Settings and whether a logo exists, from a short-lived cache.
    pub async fn cached(&self) -> Result<(Settings, bool), SettingsError> {
        let stale = match self.cache.read() {
            Ok(guard) => match guard.as_ref() {
                Some((at, s, logo)) if at.elapsed() < CACHE_TTL => return Ok((s.clone(), *logo)),
                Some((_, s, logo)) => Some((s.clone(), *logo)),
                None => None,
            },
            Err(_) => None,
        };
        let _refreshing = match (stale, self.refreshing.try_lock()) {
            (_, Ok(guard)) => guard,
            (Some(stale), Err(_)) => return Ok(stale),
            (None, Err(_)) => {
                let guard = self.refreshing.lock().await;
                // Whoever held the lock has just filled the cache.
                if let Ok(cache) = self.cache.read()
                    && let Some((at, s, logo)) = cache.as_ref()
                    && at.elapsed() < CACHE_TTL
                {
                    return Ok((s.clone(), *logo));
                }
                guard
            }
        };
        let settings = self.load().await?;
        let logo = self.has_logo().await?;
        if let Ok(mut guard) = self.cache.write() {
            *guard = Some((std::time::Instant::now(), settings.clone(), logo));
        }
        Ok((settings, logo))
    }

    fn invalidate(&self) {
        if let Ok(mut guard) = self.cache.write() {
            *guard = None;
        }
    }

    /// Current settings; missing or unreadable values fall back to defaults.
    pub async fn load(&self) -> Result<Settings, SettingsError> {
        let rows = store::all(&self.db).await?;
        let mut s = Settings::default();
        for store::SettingRow { name, value } in rows {
            match name.as_str() {
                "organisation" => s.organisation = value,
                "support_line" => s.support_line = value,
                "default_expiry_hours" => {
                    s.default_expiry_hours = value.parse().unwrap_or(s.default_expiry_hours)
                }
                "size_limit_mib" => s.size_limit_mib = value.parse().unwrap_or(s.size_limit_mib),
                "max_attachments" => {
                    s.max_attachments = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_ATTACHMENTS_LIMIT).contains(n))
                        .unwrap_or(s.max_attachments)
                }
                "methods" => {
                    let methods: Vec<Method> =
                        value.split(',').filter_map(|m| m.parse().ok()).collect();
                    if !methods.is_empty() {
                        s.methods = methods;
                    }
                }
                "accepted_kinds" => {
                    let kinds: Vec<FileKind> =
                        value.split(',').filter_map(FileKind::parse).collect();
                    if !kinds.is_empty() {
                        s.accepted_kinds = kinds;
                    }
                }
                "secure_inbox" => s.secure_inbox = value == "true",
                "inbox_daily_cap" => {
                    s.inbox_daily_cap = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_INBOX_DAILY_CAP).contains(n))
                        .unwrap_or(s.inbox_daily_cap)
                }
                "totp_required" => s.totp_required = value == "true",
                "reply_default" => s.reply_default = value == "true",
                "incoming_retention_days" => {
                    s.incoming_retention_days = value
                        .parse()
                        .ok()
                        .filter(|n| (MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(n))
                        .unwrap_or(s.incoming_retention_days)
                }
                _ => {}
            }
        }
        Ok(s)
    }

    pub async fn save(&self, actor: Actor, new: &Settings) -> Result<(), SettingsError> {
        new.validate()?;
        let methods = Method::join(&new.methods);
        let kinds: Vec<&str> = new.accepted_kinds.iter().map(|k| k.as_str()).collect();
        let kinds = kinds.join(",");
        let values = [
            ("organisation", new.organisation.trim().to_owned()),
            ("support_line", new.support_line.trim().to_owned()),
            ("default_expiry_hours", new.default_expiry_hours.to_string()),
            ("size_limit_mib", new.size_limit_mib.to_string()),
            ("methods", methods),
            ("totp_required", new.totp_required.to_string()),
            ("max_attachments", new.max_attachments.to_string()),
            ("reply_default", new.reply_default.to_string()),
            (
                "incoming_retention_days",
                new.incoming_retention_days.to_string(),
            ),
            ("accepted_kinds", kinds.clone()),
            ("secure_inbox", new.secure_inbox.to_string()),
            ("inbox_daily_cap", new.inbox_daily_cap.to_string()),
        ];
        let mut tx = self.db.begin().await?;
        for (name, value) in &values {
            store::put(&mut tx, name, value).await?;
        }
        let detail = serde_json::json!({
            "default_expiry_hours": new.default_expiry_hours,
            "size_limit_mib": new.size_limit_mib,
            "max_attachments": new.max_attachments,
            "methods": values[4].1,
            "totp_required": new.totp_required,
            "reply_default": new.reply_default,
            "incoming_retention_days": new.incoming_retention_days,
            "accepted_kinds": kinds,
            "secure_inbox": new.secure_inbox,
            "inbox_daily_cap": new.inbox_daily_cap,
        });
        self.commit_change(tx, actor, detail).await
    }

    /// Stores the logo after checking it is a PNG or JPEG (never SVG: it
    /// can carry script) of reasonable size.
    pub async fn save_logo(&self, actor: Actor, data: &[u8]) -> Result<(), SettingsError> {
        let content_type = logo_type(data).ok_or_else(|| {
            SettingsError::Invalid("The logo must be a PNG or JPEG image.".to_owned())
        })?;
        if data.len() > MAX_LOGO_BYTES {
            return Err(SettingsError::Invalid(
                "The logo must be at most 256 KiB.".to_owned(),
            ));
        }
        let mut tx = self.db.begin().await?;
        store::put_logo(&mut tx, content_type, data).await?;
        let detail = serde_json::json!({ "logo_bytes": data.len() });
        self.commit_change(tx, actor, detail).await
    }

    /// Audits a settings change, commits it, and drops this instance's
    /// cached copy so its next read sees the change.
    async fn commit_change(
        &self,
        mut tx: Tx,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Result<(), SettingsError> {
        let event = Event::new(actor, Action::SettingsChanged).detail(detail);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }

    pub async fn has_logo(&self) -> Result<bool, SettingsError> {
        Ok(store::has_logo(&self.db).await?)
    }

    pub async fn logo(&self) -> Result<Option<(String, Vec<u8>)>, SettingsError> {
        let row = store::logo(&self.db).await?;
        Ok(row.map(|r| (r.content_type, r.data)))
    }
}

fn logo_type(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_hold() {
        assert!(Settings::default().validate().is_ok());
        let mut s = Settings {
            default_expiry_hours: 0,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        s.default_expiry_hours = MAX_EXPIRY_HOURS + 1;
        assert!(s.validate().is_err());
        s.default_expiry_hours = 24;
        s.max_attachments = 0;
        assert!(s.validate().is_err());
        s.max_attachments = MAX_ATTACHMENTS_LIMIT + 1;
        assert!(s.validate().is_err());
        s.max_attachments = MAX_ATTACHMENTS_LIMIT;
        assert!(s.validate().is_ok());
        s.methods.clear();
        assert!(s.validate().is_err());
    }

    #[test]
    fn only_png_and_jpeg_logos() {
        assert_eq!(logo_type(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(logo_type(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(logo_type(b"<svg onload=alert(1)>"), None);
    }
}
