//! API tokens: how a helpdesk, a script or `sealpost send` acts for a
//! staff member on `/api/v1`.
//!
//! A token is `sp_live_` and 256 bits from the OS CSPRNG in base64url: the
//! prefix lets secret scanners recognise a leaked one. It is shown once;
//! the database keeps only its keyed hash (a copy of the database gives no
//! working token), and lookups compare hashes. A token acts with its
//! owner's rights narrowed to its scopes, stops working when revoked, when
//! it expires or when its owner is disabled, and is never logged.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{AccountState, Accounts, StaffError, StaffId};
use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::store::Db;
use crate::store::api_tokens::{self, NewToken, TokenRow};
use crate::vault::{Purpose, Vault};

/// What every token starts with (and nothing else Sealpost makes does).
pub const PREFIX: &str = "sp_live_";
/// Base64url characters of the 32 random bytes after the prefix.
const SECRET_CHARS: usize = 43;
/// Longest token name.
pub const MAX_NAME_CHARS: usize = 100;
/// The last use is written at most this often per token (and whenever the
/// client address changes).
const TOUCH_EVERY_SECS: i64 = 60;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Create messages and document requests; revoke, resend, extend, unlock.
    MessagesSend,
    /// Read messages' status and events (never their content).
    MessagesRead,
    /// List, claim and download incoming items.
    InboxRead,
    /// Everything the owner may do, if the owner is an admin.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::MessagesSend,
        Scope::MessagesRead,
        Scope::InboxRead,
        Scope::Admin,
    ];

    /// What the scope allows, in the portal's words.
    pub fn describe(self) -> &'static str {
        match self {
            Scope::MessagesSend => {
                "Send messages and document requests; revoke, resend, extend and unlock them"
            }
            Scope::MessagesRead => "Read the status and events of messages (never their content)",
            Scope::InboxRead => "List, claim and download incoming items",
            Scope::Admin => "Everything an administrator may do",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::MessagesSend => "messages:send",
            Scope::MessagesRead => "messages:read",
            Scope::InboxRead => "inbox:read",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::text::by_name(&Scope::ALL, Scope::as_str, s.trim())
            .ok_or(TokenError::Invalid("unknown scope"))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token's scopes: distinct, in a fixed order, at least one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// `messages:send,messages:read`, as the CLI and the stored column
    /// write them.
    pub fn parse_list(s: &str) -> Result<Scopes, TokenError> {
        Scopes::new(
            s.split(',')
                .filter(|p| !p.trim().is_empty())
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    pub fn new(mut scopes: Vec<Scope>) -> Result<Scopes, TokenError> {
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(TokenError::Invalid("a token needs at least one scope"));
        }
        Ok(Scopes(scopes))
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// A token's id: shown in lists and the audit log, useless as a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenId(Uuid);

impl TokenId {
    pub fn parse(s: &str) -> Option<TokenId> {
        Uuid::parse_str(s).ok().map(TokenId)
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Unknown, malformed, revoked, expired, or its owner is disabled: one
    /// answer for all, so a caller learns nothing about other tokens.
    #[error("the token is not valid")]
    Unauthorized,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("no such token")]
    NotFound,
    #[error(transparent)]
    Staff(#[from] StaffError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// A token as its owner and admins see it (never its value).
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub id: TokenId,
    pub owner: StaffId,
    pub name: String,
    pub scopes: Scopes,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
}

impl TryFrom<TokenRow> for TokenInfo {
    type Error = TokenError;
    fn try_from(row: TokenRow) -> Result<TokenInfo, TokenError> {
        Ok(TokenInfo {
            id: TokenId::parse(&row.id).ok_or(TokenError::NotFound)?,
            owner: StaffId::parse(&row.staff_id).ok_or(TokenError::NotFound)?,
            name: row.name,
            scopes: Scopes::parse_list(&row.scopes)?,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
            last_used_ip: row.last_used_ip,
        })
    }
}

/// A presented token that passed every check, with its owner as of now.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub token: TokenInfo,
    pub owner: AccountState,
}

impl Authenticated {
    /// Whether the token grants `scope`. `admin` grants every scope, but
    /// only while its owner is an admin.
    pub fn allows(&self, scope: Scope) -> bool {
        let admin = self.token.scopes.contains(Scope::Admin) && self.owner.account.role.is_admin();
        match scope {
            Scope::Admin => admin,
            other => admin || self.token.scopes.contains(other),
        }
    }
}

/// A token to create.
pub struct NewApiToken {
    pub owner: StaffId,
    pub name: String,
    pub scopes: Scopes,
    pub expires_at: Option<i64>,
}

#[derive(Clone)]
pub struct ApiTokens {
    db: Db,
    vault: Vault,
    audit: AuditLog,
    accounts: Accounts,
    clock: SharedClock,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiTokens { .. }")
    }
}

impl ApiTokens {
    pub fn new(
        db: Db,
        vault: Vault,
        audit: AuditLog,
        accounts: Accounts,
        clock: SharedClock,
    ) -> Self {
        ApiTokens {
            db,
            vault,
            audit,
            accounts,
            clock,
        }
    }

    fn hash(&self, secret: &[u8]) -> Vec<u8> {
        self.vault.keyed_hash(Purpose::ApiToken, secret)
    }

    /// Creates a token for `new.owner` (who must be an active account; only
    /// an admin's token may hold `admin`) and returns its value, the only
    /// time it exists outside the caller's hands.
    pub async fn create(
        &self,
        actor: Actor,
        new: NewApiToken,
    ) -> Result<(TokenId, SecretString), TokenError> {
        self.create_from(actor, None, new).await
    }

    /// [`ApiTokens::create`] by someone at a client address (the portal),
    /// which the audit event keeps.
    pub async fn create_from(
        &self,
        actor: Actor,
        ip: Option<IpAddr>,
        new: NewApiToken,
    ) -> Result<(TokenId, SecretString), TokenError> {
        let name = new.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(TokenError::Invalid(
                "a token's name must be 1 to 100 characters, on one line",
            ));
        }
        let owner = self
            .accounts
            .state(new.owner)
            .await?
            .filter(|o| !o.account.disabled)
            .ok_or(TokenError::NotFound)?;
        if new.scopes.contains(Scope::Admin) && !owner.account.role.is_admin() {
            return Err(TokenError::Invalid(
                "only an admin's token may have the admin scope",
            ));
        }
        let now = self.clock.now();
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(TokenError::Invalid("the expiry must be in the future"));
        }
        let secret: [u8; 32] = rand::rng().random();
        let value = SecretString::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret)));
        let id = TokenId(Uuid::new_v4());
        let scopes = new.scopes.to_string();
        let mut tx = self.db.begin().await?;
        api_tokens::insert(
            &mut tx,
            &NewToken {
                id: &id.to_string(),
                staff_id: &new.owner.to_string(),
                token_hash: &self.hash(&secret),
                name,
                scopes: &scopes,
                created_by: &actor.to_string(),
                now,
                expires_at: new.expires_at,
            },
        )
        .await?;
        let detail = serde_json::json!({
            "token": id.to_string(),
            "owner": new.owner.to_string(),
            "scopes": scopes,
            "expires_at": new.expires_at,
        });
        self.audit
            .record(
                &mut tx,
                &Event::new(actor, Action::TokenCreated)
                    .ip(ip)
                    .detail(detail),
            )
            .await?;
        tx.commit().await?;
        Ok((id, value))
    }

    /// The token behind an `Authorization: Bearer` value, if it is usable
    /// now; notes its use (time and client address).
    pub async fn authenticate(
        &self,
        presented: &SecretString,
        ip: IpAddr,
    ) -> Result<Authenticated, TokenError> {
        let secret = parse_value(presented.expose_secret()).ok_or(TokenError::Unauthorized)?;
        let row = api_tokens::by_hash(&self.db, &self.hash(&secret))
            .await?
            .ok_or(TokenError::Unauthorized)?;
        let now = self.clock.now();
        if row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at <= now) {
            return Err(TokenError::Unauthorized);
        }
        let ip_text = ip.to_string();
        // Only a due note writes: even an UPDATE that changes no row takes
        // SQLite's write lock, which every call would then queue for.
        let touch_due = row.last_used_ip.as_deref() != Some(ip_text.as_str())
            || row
                .last_used_at
                .is_none_or(|at| at <= now - TOUCH_EVERY_SECS);
        let token = TokenInfo::try_from(row)?;
        let owner = self
            .accounts
            .state(token.owner)
            .await?
            .filter(|o| !o.account.disabled)
            .ok_or(TokenError::Unauthorized)?;
        if touch_due {
            api_tokens::touch(
                &self.db,
                &token.id.to_string(),
                now,
                &ip_text,
                TOUCH_EVERY_SECS,
            )
            .await?;
        }
        Ok(Authenticated { token, owner })
    }

    /// One member's tokens, newest first.
    pub async fn of_owner(&self, owner: StaffId) -> Result<Vec<TokenInfo>, TokenError> {
        api_tokens::of_staff(&self.db, &owner.to_string())
            .await?
            .into_iter()
            .map(TokenInfo::try_from)
            .collect()
    }

    pub async fn get(&self, id: TokenId) -> Result<TokenInfo, TokenError> {
        api_tokens::by_id(&self.db, &id.to_string())
            .await?
            .ok_or(TokenError::NotFound)
            .and_then(TokenInfo::try_from)
    }

    /// Revokes a token; false if it already was. `owner`, when given, must
    /// own it (an agent revokes only their own).
    pub async fn revoke(
        &self,
        actor: Actor,
        id: TokenId,
        owner: Option<StaffId>,
    ) -> Result<bool, TokenError> {
        self.revoke_from(actor, None, id, owner).await
    }

    /// [`ApiTokens::revoke`] by someone at a client address (the portal).
    pub async fn revoke_from(
        &self,
        actor: Actor,
        ip: Option<IpAddr>,
        id: TokenId,
        owner: Option<StaffId>,
    ) -> Result<bool, TokenError> {
        let token = self.get(id).await?;
        if owner.is_some_and(|o| o != token.owner) {
            return Err(TokenError::NotFound);
        }
        let mut tx = self.db.begin().await?;
        let revoked = api_tokens::revoke(&mut tx, &id.to_string(), self.clock.now()).await?;
        if revoked {
            let detail = serde_json::json!({ "token": id.to_string() });
            self.audit
                .record(
                    &mut tx,
                    &Event::new(actor, Action::TokenRevoked)
                        .ip(ip)
                        .detail(detail),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }
}

/// The 32 secret bytes of a well-formed token value.
fn parse_value(value: &str) -> Option<[u8; 32]> {
    let encoded = value.strip_prefix(PREFIX)?;
    if encoded.len() != SECRET_CHARS {
        return None;
    }
    URL_SAFE_NO_PAD.decode(encoded).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_sorted_and_distinct() {
        let s = Scopes::parse_list("messages:read, messages:send,messages:read").expect("parse");
        assert_eq!(s.to_string(), "messages:send,messages:read");
        assert!(Scopes::parse_list("").is_err());
        assert!(Scopes::parse_list("messages:write").is_err());
    }

    #[test]
    fn only_well_formed_values_parse() {
        let value = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(parse_value(&value), Some([7u8; 32]));
        assert_eq!(parse_value(&value[1..]), None);
        assert_eq!(parse_value(&format!("{value}A")), None);
        assert_eq!(parse_value(&value.replace(PREFIX, "sp_test_")), None);
    }
}
