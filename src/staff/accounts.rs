//! Staff accounts: admins manage staff and see everything, agents send and
//! see their own messages. Every change is audited in its own transaction.
//!
//! Most accounts are people. A service account ([`AccountKind::Service`])
//! is an integration that only holds API tokens: it has an unusable
//! password hash, is refused by every password, reset, invitation and
//! setup path, and is never emailed. Its address is
//! `<name>@service.invalid`: `.invalid` is reserved (RFC 2606, RFC 6761)
//! and never resolves, so no mail could reach it even by mistake, and the
//! address stays unique under the same constraint as everyone else's. No
//! person may have an address at that domain.

use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;

use super::StaffError;
use super::password::{Hasher, NewPassword};
use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::paging::{Page, PageStart, rows_to_fetch};
use crate::store::staff::{self, StaffRow};
use crate::store::{Db, Tx};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Agent,
}

impl Role {
    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
}

impl FromStr for Role {
    type Err = StaffError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "agent" => Ok(Role::Agent),
            _ => Err(StaffError::InvalidRole),
        }
    }
}

/// A person, or an integration that only holds API tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    Person,
    Service,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Person => "person",
            AccountKind::Service => "service",
        }
    }

    pub fn is_service(self) -> bool {
        self == AccountKind::Service
    }
}

impl FromStr for AccountKind {
    type Err = StaffError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "person" => Ok(AccountKind::Person),
            "service" => Ok(AccountKind::Service),
            _ => Err(StaffError::NotFound),
        }
    }
}

/// The domain of every service account's address (and of nobody else's).
pub const SERVICE_DOMAIN: &str = "service.invalid";
/// Longest service account name.
pub const MAX_SERVICE_NAME_CHARS: usize = 40;

/// A service account's name: 1 to 40 of `a-z`, `0-9` and `-`, starting
/// with a letter or digit (`helpdesk-sync`). It is the local part of the
/// account's address, so it is unique and safe in a URL or a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(s: &str) -> Result<ServiceName, StaffError> {
        let s = s.trim().to_lowercase();
        let valid = !s.is_empty()
            && s.len() <= MAX_SERVICE_NAME_CHARS
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(ServiceName(s))
        } else {
            Err(StaffError::InvalidServiceName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The account's (undeliverable) address.
    pub fn email(&self) -> StaffEmail {
        StaffEmail(format!("{}@{SERVICE_DOMAIN}", self.0))
    }

    /// The name of a service account's address.
    pub fn of(email: &StaffEmail) -> Option<ServiceName> {
        let local = email
            .as_str()
            .strip_suffix(SERVICE_DOMAIN)?
            .strip_suffix('@')?;
        ServiceName::parse(local).ok()
    }
}

pub use crate::ids::StaffId;

/// Service accounts listed at most (the admin page shows them all at once).
const MAX_LISTED_SERVICES: i64 = 500;

/// A staff member's sign-in address, normalised to lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffEmail(String);

impl StaffEmail {
    /// Accepts `local@domain.tld` shapes a mail server would deliver to; the
    /// real proof is the invite email arriving.
    pub fn parse(s: &str) -> Result<Self, StaffError> {
        let s = s.trim().to_lowercase();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains("..")
                }
                None => false,
            };
        if valid {
            Ok(StaffEmail(s))
        } else {
            Err(StaffError::InvalidEmail)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a service account's address (which no person may have).
    pub fn is_service_address(&self) -> bool {
        self.0
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain == SERVICE_DOMAIN)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffAccount {
    pub id: StaffId,
    pub email: StaffEmail,
    pub role: Role,
    pub disabled: bool,
    pub kind: AccountKind,
}

impl StaffAccount {
    pub fn is_service(&self) -> bool {
        self.kind.is_service()
    }
}

/// An account plus its session epoch and second-factor state.
#[derive(Clone, Debug)]
pub struct AccountState {
    pub account: StaffAccount,
    pub session_epoch: i64,
    pub totp_enabled: bool,
}

impl AccountState {
    /// Where an email to this account goes: nowhere when it is disabled or
    /// a service account (whose address is undeliverable).
    pub fn mail_to(&self) -> Option<&str> {
        (!self.account.disabled && !self.account.is_service()).then(|| self.account.email.as_str())
    }
}

impl TryFrom<StaffRow> for AccountState {
    type Error = StaffError;

    fn try_from(row: StaffRow) -> Result<AccountState, StaffError> {
        Ok(AccountState {
            account: StaffAccount {
                id: StaffId::parse(&row.id).ok_or(StaffError::NotFound)?,
                email: StaffEmail(row.email),
                role: row.role.parse()?,
                disabled: row.disabled_at.is_some(),
                kind: row.kind.parse()?,
            },
            session_epoch: row.session_epoch,
            totp_enabled: row.totp_enabled_at.is_some(),
        })
    }
}

#[derive(Clone)]
pub struct Accounts {
    db: Db,
    audit: AuditLog,
    clock: SharedClock,
    hasher: Hasher,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Accounts { .. }")
    }
}

impl Accounts {
    pub fn new(db: Db, audit: AuditLog, clock: SharedClock, hasher: Hasher) -> Self {
        Accounts {
            db,
            audit,
            clock,
            hasher,
        }
    }

    pub async fn create(
        &self,
        actor: Actor,
        email: &StaffEmail,
        role: Role,
        password: SecretString,
    ) -> Result<StaffId, StaffError> {
        let hash = self
            .hasher
            .hash(NewPassword::parse(password, email.as_str())?)
            .await?;
        let mut tx = self.db.begin().await?;
        let id = self.insert(&mut tx, email, role, &hash).await?;
        let detail = serde_json::json!({ "staff_id": id.to_string(), "role": role.as_str() });
        self.audit
            .record(
                &mut tx,
                &Event::new(actor, Action::StaffCreated).detail(detail),
            )
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Creates a service account: no usable password (a hash of 256 random
    /// bits nobody keeps), no email, no link; it acts only through the API
    /// tokens an admin gives it.
    pub async fn create_service(
        &self,
        actor: Actor,
        ip: Option<std::net::IpAddr>,
        name: &ServiceName,
        role: Role,
    ) -> Result<StaffId, StaffError> {
        let hash = self.hasher.unusable_hash().await?;
        let id = StaffId::generate();
        let mut tx = self.db.begin().await?;
        let inserted = staff::insert(
            &mut tx,
            &staff::NewStaff {
                id: &id.to_string(),
                email: name.email().as_str(),
                role: role.as_str(),
                password_hash: &hash,
                now: self.clock.now(),
                kind: AccountKind::Service.as_str(),
            },
        )
        .await?;
        if !inserted {
            return Err(StaffError::EmailTaken);
        }
        let detail = serde_json::json!({ "staff_id": id.to_string(), "role": role.as_str() });
        let event = Event::new(actor, Action::ServiceAccountCreated)
            .ip(ip)
            .detail(detail);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Disables a service account (its tokens stop working at once);
    /// false if it already was. Not found unless `id` is a service account.
    pub async fn disable_service(
        &self,
        actor: Actor,
        ip: Option<std::net::IpAddr>,
        id: StaffId,
    ) -> Result<bool, StaffError> {
        self.state(id)
            .await?
            .filter(|s| s.account.is_service())
            .ok_or(StaffError::NotFound)?;
        let mut tx = self.db.begin().await?;
        let changed = staff::disable(&mut tx, &id.to_string(), self.clock.now()).await?;
        if changed {
            let detail = serde_json::json!({ "staff_id": id.to_string() });
            let event = Event::new(actor, Action::ServiceAccountDisabled)
                .ip(ip)
                .detail(detail);
            self.audit.record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// The service accounts (at most a few hundred), by name.
    pub async fn services(&self) -> Result<Vec<AccountState>, StaffError> {
        staff::services(&self.db, MAX_LISTED_SERVICES)
            .await?
            .into_iter()
            .map(AccountState::try_from)
            .collect()
    }

    /// Inserts an account inside the caller's transaction; the caller
    /// audits. First-run setup and invitations use it so the account and
    /// its one-time link commit together. `password_hash` is hashed
    /// beforehand so the write lock is not held during argon2.
    pub async fn insert(
        &self,
        tx: &mut Tx,
        email: &StaffEmail,
        role: Role,
        password_hash: &str,
    ) -> Result<StaffId, StaffError> {
        // That domain is the service accounts' own.
        if email.is_service_address() {
            return Err(StaffError::InvalidEmail);
        }
        let id = StaffId::generate();
        let now = self.clock.now();
        let inserted = staff::insert(
            tx,
            &staff::NewStaff {
                id: &id.to_string(),
                email: email.as_str(),
                role: role.as_str(),
                password_hash,
                now,
                kind: AccountKind::Person.as_str(),
            },
        )
        .await?;
        if !inserted {
            return Err(StaffError::EmailTaken);
        }
        Ok(id)
    }

    pub async fn find(&self, email: &StaffEmail) -> Result<StaffAccount, StaffError> {
        let row = staff::by_email(&self.db, email.as_str())
            .await?
            .ok_or(StaffError::NotFound)?;
        Ok(AccountState::try_from(row)?.account)
    }

    pub async fn count(&self) -> Result<i64, StaffError> {
        Ok(staff::count(&self.db).await?)
    }

    /// [`Accounts::count`] inside a transaction (a check that must hold at commit).
    pub async fn count_in(&self, tx: &mut Tx) -> Result<i64, StaffError> {
        Ok(staff::count_in(tx).await?)
    }

    pub async fn reset_password(
        &self,
        actor: Actor,
        email: &StaffEmail,
        password: SecretString,
    ) -> Result<(), StaffError> {
        let account = self.find(email).await?;
        if account.is_service() {
            return Err(StaffError::ServiceAccount);
        }
        let hash = self
            .hasher
            .hash(NewPassword::parse(password, email.as_str())?)
            .await?;
        let mut tx = self.db.begin().await?;
        let now = self.clock.now();
        if !staff::set_person_password(&mut tx, &account.id.to_string(), &hash, now).await? {
            return Err(StaffError::ServiceAccount);
        }
        let detail = serde_json::json!({ "staff_id": account.id.to_string() });
        self.audit
            .record(
                &mut tx,
                &Event::new(actor, Action::StaffPasswordReset).detail(detail),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables an account; returns false if it already was. (Live sessions
    /// are ended by the session layer, which checks this flag.)
    pub async fn disable(&self, actor: Actor, email: &StaffEmail) -> Result<bool, StaffError> {
        let account = self.find(email).await?;
        let mut tx = self.db.begin().await?;
        let changed = staff::disable(&mut tx, &account.id.to_string(), self.clock.now()).await?;
        if changed {
            let detail = serde_json::json!({ "staff_id": account.id.to_string() });
            self.audit
                .record(
                    &mut tx,
                    &Event::new(actor, Action::StaffDisabled).detail(detail),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// An account by id with what the session layer checks on every request.
    pub async fn state(&self, id: StaffId) -> Result<Option<AccountState>, StaffError> {
        staff::by_id(&self.db, &id.to_string())
            .await?
            .map(AccountState::try_from)
            .transpose()
    }

    /// A page of the admin's staff list (by address).
    pub async fn page(
        &self,
        start: Option<&PageStart<StaffId>>,
        limit: usize,
    ) -> Result<Page<AccountState, StaffId>, StaffError> {
        let from = start.map(|s| s.keyed(StaffId::to_string));
        let from = from.as_ref().map(|(id, b)| (id.as_deref(), *b));
        let rows = staff::page(&self.db, from, rows_to_fetch(limit))
            .await?
            .into_iter()
            .map(AccountState::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(rows, limit, start, |s| s.account.id))
    }

    /// Disables by id (the admin page), ending the account's sessions.
    pub async fn disable_id(&self, actor: Actor, id: StaffId) -> Result<bool, StaffError> {
        let state = self.state(id).await?.ok_or(StaffError::NotFound)?;
        self.disable(actor, &state.account.email).await
    }

    /// Checks a new password against the policy for `email` and hashes it,
    /// before any transaction: argon2 must not hold SQLite's write lock.
    pub async fn hash_new_password(
        &self,
        email: &StaffEmail,
        password: SecretString,
    ) -> Result<String, StaffError> {
        Ok(self
            .hasher
            .hash(NewPassword::parse(password, email.as_str())?)
            .await?)
    }

    /// Sets a new password by id (invitation or first-run setup), ending
    /// any sessions. `hash` comes from [`Accounts::hash_new_password`].
    /// A service account never gets one.
    pub async fn set_password(
        &self,
        tx: &mut Tx,
        id: StaffId,
        hash: &str,
    ) -> Result<(), StaffError> {
        if staff::set_person_password(tx, &id.to_string(), hash, self.clock.now()).await? {
            Ok(())
        } else {
            Err(StaffError::ServiceAccount)
        }
    }

    /// Whether `id` wants an email when a customer first opens a message.
    pub async fn pickup_alerts(&self, id: StaffId) -> Result<bool, StaffError> {
        let on = staff::pickup_alerts(&self.db, &id.to_string()).await?;
        Ok(on.unwrap_or(0) != 0)
    }

    pub async fn set_pickup_alerts(&self, id: StaffId, on: bool) -> Result<(), StaffError> {
        Ok(staff::set_pickup_alerts(&self.db, &id.to_string(), on).await?)
    }

    /// The stored password hash, for sign-in.
    pub async fn password_hash(&self, email: &StaffEmail) -> Result<Option<String>, StaffError> {
        Ok(staff::password_hash(&self.db, email.as_str()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_their_undeliverable_address() {
        let name = ServiceName::parse(" Helpdesk-Sync2 ").expect("a name");
        assert_eq!(name.as_str(), "helpdesk-sync2");
        let email = name.email();
        assert_eq!(email.as_str(), "helpdesk-sync2@service.invalid");
        assert!(email.is_service_address());
        assert_eq!(ServiceName::of(&email), Some(name));
        let person = StaffEmail::parse("jane@example.com").expect("email");
        assert!(!person.is_service_address());
        assert_eq!(ServiceName::of(&person), None);
        assert!(
            !StaffEmail::parse("jane@sub.service.invalid")
                .expect("email")
                .is_service_address()
        );
        for bad in ["", "-x", "a b", "a_b", "a.b", "ä", &"a".repeat(41)] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ServiceName::parse(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            StaffEmail::parse("  Jane.Doe@Example.COM ")
                .ok()
                .map(|e| e.0),
            Some("jane.doe@example.com".to_owned())
        );
        for bad in [
            "",
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "ja ne@example.com",
            "a@b@c.com",
            "jane@.example.com",
            "jane@example..com",
        ] {
            assert!(StaffEmail::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
