//! First-run setup link and staff invitations: one-time links to set a
//! password.
//!
//! A link carries a 256-bit token from the OS CSPRNG; the database keeps
//! only its keyed hash (`staff_links`), so a copy of the database cannot be
//! turned into working links, and lookups compare hashes, never tokens.
//! Tokens are never logged. A link is consumed by an atomic claim in the
//! same transaction as the password it sets, so it works exactly once.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};

use super::password::{Hasher, NewPassword};
use super::{Accounts, Role, StaffEmail, StaffError, StaffId};
use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::mail::{Mail, Outbox};
use crate::store::Db;
use crate::store::staff_links::{self, LinkPurpose};
use crate::vault::{Purpose, Vault};

/// The first admin must be created soon after start-up: a link printed to
/// a console should not stay useful for long.
pub const SETUP_VALID_SECS: i64 = 3600;
/// Long enough to cover a weekend between the invite and the first sign-in.
pub const INVITE_VALID_SECS: i64 = 72 * 3600;

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
}

/// A new invitation: what the admin needs to pass on.
pub struct Invitation {
    pub staff_id: StaffId,
    pub url: SecretString,
    pub expires_at: i64,
}

/// Issues and redeems setup and invitation links.
#[derive(Clone)]
pub struct StaffLinks {
    db: Db,
    vault: Vault,
    audit: AuditLog,
    accounts: Accounts,
    outbox: Outbox,
    clock: SharedClock,
    hasher: Hasher,
    public_url: Arc<str>,
}

impl fmt::Debug for StaffLinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaffLinks { .. }")
    }
}

/// What [`StaffLinks::new`] needs.
pub struct LinkParts {
    pub db: Db,
    pub vault: Vault,
    pub audit: AuditLog,
    pub accounts: Accounts,
    pub outbox: Outbox,
    pub clock: SharedClock,
    pub hasher: Hasher,
    pub public_url: String,
}

impl StaffLinks {
    pub fn new(p: LinkParts) -> StaffLinks {
        StaffLinks {
            db: p.db,
            vault: p.vault,
            audit: p.audit,
            accounts: p.accounts,
            outbox: p.outbox,
            clock: p.clock,
            hasher: p.hasher,
            public_url: p.public_url.trim_end_matches('/').into(),
        }
    }

    fn hash(&self, token: &LinkToken) -> Vec<u8> {
        self.vault.keyed_hash(Purpose::StaffLink, &token.0)
    }

    /// The live link of this purpose `token` opens: `Some(staff id)`, the
    /// id being `None` for the setup link, which has no account yet.
    async fn find_usable(
        &self,
        token: &LinkToken,
        purpose: LinkPurpose,
    ) -> Result<Option<Option<String>>, StaffError> {
        let now = self.clock.now();
        Ok(staff_links::find_usable(&self.db, &self.hash(token), purpose, now).await?)
    }

    fn url(&self, kind: &str, token: &LinkToken) -> SecretString {
        SecretString::from(format!(
            "{}/{kind}/{}",
            self.public_url,
            token.encode().expose_secret()
        ))
    }

    /// When no staff account exists yet, issues a one-hour link to create
    /// the first admin (ending any earlier unused setup link) and returns
    /// its full URL; `None` once anyone has an account. The caller shows the
    /// URL to the operator; it must never go to the log.
    pub async fn issue_setup_link(&self) -> Result<Option<SecretString>, StaffError> {
        if self.accounts.count().await? > 0 {
            return Ok(None);
        }
        let token = LinkToken::generate();
        let now = self.clock.now();
        let expires_at = now + SETUP_VALID_SECS;
        let mut tx = self.db.begin().await?;
        // Only the newest link works: a restart does not leave several live.
        staff_links::end_setup_links(&mut tx, now).await?;
        staff_links::insert(
            &mut tx,
            &self.hash(&token),
            LinkPurpose::Setup,
            None,
            now,
            expires_at,
        )
        .await?;
        let event = Event::new(Actor::System, Action::SetupLinkIssued)
            .detail(serde_json::json!({ "expires_at": expires_at }));
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(Some(self.url("setup", &token)))
    }

    /// Creates an account that cannot sign in yet and a 72-hour link with
    /// which its owner sets a password, in one transaction with its email
    /// and audit event.
    pub async fn invite(
        &self,
        actor: Actor,
        ip: IpAddr,
        email: &StaffEmail,
        role: Role,
    ) -> Result<Invitation, StaffError> {
        if email.is_service_address() {
            // Service accounts are created as such, never invited.
            return Err(StaffError::InvalidEmail);
        }
        let hash = self.hasher.unusable_hash().await?;
        let token = LinkToken::generate();
        let now = self.clock.now();
        let expires_at = now + INVITE_VALID_SECS;
        let mut tx = self.db.begin().await?;
        let staff_id = self.accounts.insert(&mut tx, email, role, &hash).await?;
        staff_links::insert(
            &mut tx,
            &self.hash(&token),
            LinkPurpose::Invite,
            Some(&staff_id.to_string()),
            now,
            expires_at,
        )
        .await?;
        let url = self.url("invite", &token);
        // The invitation email commits with the account: one never exists
        // without the other.
        self.outbox
            .enqueue(
                &mut tx,
                email.as_str(),
                &Mail::StaffInvite {
                    url: url.expose_secret().to_owned(),
                },
                None,
            )
            .await
            .map_err(StaffError::Mail)?;
        let detail = serde_json::json!({ "staff_id": staff_id.to_string(), "role": role.as_str() });
        let event = Event::new(actor, Action::StaffInvited)
            .ip(ip)
            .detail(detail);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(Invitation {
            staff_id,
            url,
            expires_at,
        })
    }

    /// Whether `token` is a live setup link while no account exists yet.
    /// Changes nothing: opening a link must not consume it.
    pub async fn setup_usable(&self, token: &LinkToken) -> Result<bool, StaffError> {
        if self.accounts.count().await? > 0 {
            return Ok(false);
        }
        let found = self.find_usable(token, LinkPurpose::Setup).await?;
        Ok(found.is_some())
    }

    /// Creates the first admin with the setup link: false if the link was
    /// used meanwhile or an account exists by now (checked again under the
    /// transaction: the link is for the very first account only).
    pub async fn complete_setup(
        &self,
        token: &LinkToken,
        email: &StaffEmail,
        password: NewPassword,
        ip: IpAddr,
    ) -> Result<bool, StaffError> {
        // Hashed before the transaction: argon2 must not hold the write lock.
        let hash = self.hasher.hash(password).await?;
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if !staff_links::claim(&mut tx, &self.hash(token), LinkPurpose::Setup, now).await? {
            return Ok(false);
        }
        if self.accounts.count_in(&mut tx).await? > 0 {
            return Ok(false);
        }
        let id = self
            .accounts
            .insert(&mut tx, email, Role::Admin, &hash)
            .await?;
        let detail = serde_json::json!({
            "staff_id": id.to_string(),
            "role": Role::Admin.as_str(),
            "via": "setup_link",
        });
        let event = Event::new(Actor::Staff(id.to_string()), Action::StaffCreated)
            .ip(ip)
            .detail(detail);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Invited accounts whose owner has not set a password yet, with when
    /// their link expires, by staff id.
    pub async fn pending_invites(&self) -> Result<HashMap<String, i64>, StaffError> {
        Ok(staff_links::pending_invites(&self.db)
            .await?
            .into_iter()
            .map(|p| (p.staff_id, p.expires_at))
            .collect())
    }

    /// The invited account, if the link is usable and the account still
    /// exists, is not disabled and is a person (a service account never
    /// takes a password, whatever link points at it).
    pub async fn invited_account(
        &self,
        token: &LinkToken,
    ) -> Result<Option<(StaffId, StaffEmail)>, StaffError> {
        let found = self.find_usable(token, LinkPurpose::Invite).await?;
        let Some(Some(id)) = found else {
            return Ok(None);
        };
        let Some(id) = StaffId::parse(&id) else {
            return Ok(None);
        };
        let state = self.accounts.state(id).await?;
        Ok(state
            .filter(|s| !s.account.disabled && !s.account.is_service())
            .map(|s| (id, s.account.email)))
    }

    /// Sets the invited account's password with the link: false if the
    /// link was used meanwhile.
    pub async fn accept_invite(
        &self,
        token: &LinkToken,
        id: StaffId,
        email: &StaffEmail,
        password: SecretString,
        ip: IpAddr,
    ) -> Result<bool, StaffError> {
        // Hashed before the transaction: argon2 takes tens of milliseconds
        // (more when its pool is busy) and must not hold SQLite's write
        // lock. The claim and the new password still commit together.
        let hash = self.accounts.hash_new_password(email, password).await?;
        let mut tx = self.db.begin().await?;
        let now = self.clock.now();
        if !staff_links::claim(&mut tx, &self.hash(token), LinkPurpose::Invite, now).await? {
            return Ok(false);
        }
        self.accounts.set_password(&mut tx, id, &hash).await?;
        let event = Event::new(Actor::Staff(id.to_string()), Action::InviteAccepted)
            .ip(ip)
            .detail(serde_json::json!({ "staff_id": id.to_string() }));
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(true)
    }
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
