//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step) and
//! recovery codes. Seeds are stored sealed by the vault; a code's time step
//! is remembered so no code (or an older one) is accepted twice; recovery
//! codes are high-entropy and stored as keyed hashes, each usable once.
//!
//! Guesses are limited per account in the database (B3): every code or
//! recovery code checked first takes an attempt by an atomic update, so
//! parallel requests cannot check more than the allowance, and a fresh
//! password sign-in does not reset it. Past the free attempts a back-off
//! starts, doubling like the password one; a right code ends the streak.

use std::fmt;

use base64::Engine;
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

use super::StaffError;
use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::staff::StaffId;
use crate::staff::sign_in::{FAILURE_MEMORY_SECS, backoff_secs};
use crate::store::totp as store;
use crate::store::{Db, Tx};
use crate::vault::{Purpose, Vault};

/// Codes (or recovery codes) checked per account before back-off starts.
pub const FREE_ATTEMPTS: i64 = 5;
const BACKOFF_CAP_SECS: i64 = 15 * 60;

const STEP_SECS: i64 = 30;
const DIGITS: usize = 6;
const SEED_BYTES: usize = 20;
pub const RECOVERY_CODES: usize = 10;

/// The outcome of checking a second-factor code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Passed,
    Failed,
    /// Not checked: too many recent failures on this account.
    Throttled {
        retry_after_secs: i64,
    },
}

/// A confirmed enrolment or a new set of recovery codes: the codes (shown
/// once) and the account's new session epoch (its other sessions ended).
pub struct NewCodes {
    pub codes: Vec<SecretString>,
    pub session_epoch: i64,
}

impl fmt::Debug for NewCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewCodes { .. }")
    }
}

/// A seed being enrolled: shown to the user once as a QR code and text,
/// kept server-side only in sealed form until a code confirms it.
pub struct Enrolment {
    pub sealed_seed: Vec<u8>,
    pub secret_base32: SecretString,
    pub qr_data_uri: String,
}

impl fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Enrolment { .. }")
    }
}

#[derive(Clone)]
pub struct Totp {
    db: Db,
    vault: Vault,
    audit: AuditLog,
    clock: SharedClock,
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Totp { .. }")
    }
}

impl Totp {
    pub fn new(db: Db, vault: Vault, audit: AuditLog, clock: SharedClock) -> Self {
        Totp {
            db,
            vault,
            audit,
            clock,
        }
    }

    /// A fresh seed for `account` (the sign-in address, shown in the app).
    pub fn begin(&self, issuer: &str, account: &str) -> Result<Enrolment, StaffError> {
        let seed = Zeroizing::new(rand::rng().random::<[u8; SEED_BYTES]>());
        let secret_base32 = Zeroizing::new(base32::encode(
            base32::Alphabet::Rfc4648 { padding: false },
            &seed[..],
        ));
        let url = Zeroizing::new(format!(
            "otpauth://totp/{label}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            label = percent_encode(&format!("{issuer}:{account}")),
            secret = secret_base32.as_str(),
            issuer = percent_encode(issuer),
        ));
        let qr = qrcode::QrCode::new(url.as_bytes())
            .map_err(|e| StaffError::TotpSetup(e.to_string()))?;
        let svg = qr
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build();
        let qr_data_uri = format!(
            "data:image/svg+xml;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(svg)
        );
        Ok(Enrolment {
            sealed_seed: self.vault.seal_secret(Purpose::StaffTotpSeed, &seed[..])?,
            secret_base32: SecretString::from(secret_base32.as_str()),
            qr_data_uri,
        })
    }

    /// Confirms an enrolment with a current code; on success stores the seed,
    /// replaces any recovery codes, ends the account's other sessions (a
    /// new session epoch) and returns the new codes (shown once).
    pub async fn confirm(
        &self,
        staff: StaffId,
        sealed_seed: &[u8],
        code: &str,
        ip: Option<std::net::IpAddr>,
    ) -> Result<Option<NewCodes>, StaffError> {
        let seed = self
            .vault
            .open_secret(Purpose::StaffTotpSeed, sealed_seed)?;
        let Some(step) = matching_step(&seed, code, self.clock.now(), None)? else {
            return Ok(None);
        };
        let codes: Vec<SecretString> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        let mut tx = self.db.begin().await?;
        let session_epoch = store::enable(
            &mut tx,
            &staff.to_string(),
            sealed_seed,
            step,
            self.clock.now(),
        )
        .await?;
        self.replace_recovery_codes(&mut tx, staff, &codes).await?;
        let event = Event::new(Actor::Staff(staff.to_string()), Action::TotpEnrolled).ip(ip);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(Some(NewCodes {
            codes,
            session_epoch,
        }))
    }

    /// Replaces the recovery codes of an account that uses TOTP and ends
    /// its other sessions; `None` if it does not use TOTP. The caller has
    /// checked the current password or a current code.
    pub async fn regenerate_recovery_codes(
        &self,
        staff: StaffId,
        ip: Option<std::net::IpAddr>,
    ) -> Result<Option<NewCodes>, StaffError> {
        let codes: Vec<SecretString> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        let mut tx = self.db.begin().await?;
        let session_epoch = store::next_epoch_if_enabled(&mut tx, &staff.to_string()).await?;
        let Some(session_epoch) = session_epoch else {
            tx.rollback().await?;
            return Ok(None);
        };
        self.replace_recovery_codes(&mut tx, staff, &codes).await?;
        let event = Event::new(
            Actor::Staff(staff.to_string()),
            Action::RecoveryCodesRegenerated,
        )
        .ip(ip);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(Some(NewCodes {
            codes,
            session_epoch,
        }))
    }

    async fn replace_recovery_codes(
        &self,
        tx: &mut Tx,
        staff: StaffId,
        codes: &[SecretString],
    ) -> Result<(), StaffError> {
        let id = staff.to_string();
        store::delete_recovery_codes(tx, &id).await?;
        for code in codes {
            let hash = self.recovery_hash(staff, code.expose_secret());
            store::insert_recovery_code(tx, &id, &hash).await?;
        }
        Ok(())
    }

    /// Checks a code from the authenticator app, within the account's
    /// allowance.
    pub async fn check_code(&self, staff: StaffId, code: &str) -> Result<Check, StaffError> {
        if let Some(retry_after_secs) = self.take_attempt(staff).await? {
            return Ok(Check::Throttled { retry_after_secs });
        }
        let ok = self.verify(staff, code).await?;
        self.settle(staff, ok).await
    }

    /// Spends a recovery code, within the same allowance as codes.
    pub async fn check_recovery_code(
        &self,
        staff: StaffId,
        code: &str,
        ip: Option<std::net::IpAddr>,
    ) -> Result<Check, StaffError> {
        if let Some(retry_after_secs) = self.take_attempt(staff).await? {
            return Ok(Check::Throttled { retry_after_secs });
        }
        let ok = self.use_recovery_code(staff, code, ip).await?;
        self.settle(staff, ok).await
    }

    /// Takes one attempt before a check, atomically: the count goes up and,
    /// once past the free attempts, the back-off starts in the same
    /// transaction, so of many parallel requests only the allowance gets
    /// through. `Some(seconds)` if the account is waiting out a back-off.
    async fn take_attempt(&self, staff: StaffId) -> Result<Option<i64>, StaffError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let id = staff.to_string();
        let failures = store::count_attempt(&mut tx, &id, now, now - FAILURE_MEMORY_SECS).await?;
        let Some(failures) = failures else {
            let until = store::blocked_until(&mut tx, &id).await?;
            tx.rollback().await?;
            // No such account: refused the same way, nothing to count.
            return Ok(Some(until.map_or(1, |u| (u - now).max(1))));
        };
        if let Some(delay) = backoff_secs(failures, FREE_ATTEMPTS, BACKOFF_CAP_SECS) {
            store::block_until(&mut tx, &id, now + delay).await?;
        }
        tx.commit().await?;
        Ok(None)
    }

    /// After a check: a right code ends the streak (and any back-off its
    /// own attempt started); a wrong one stays counted.
    async fn settle(&self, staff: StaffId, ok: bool) -> Result<Check, StaffError> {
        if !ok {
            return Ok(Check::Failed);
        }
        store::clear_failures(&self.db, &staff.to_string()).await?;
        Ok(Check::Passed)
    }

    /// Checks a code and, if it matches a step not used before, records
    /// that step so the same code cannot be replayed. Unlimited: callers go
    /// through [`Totp::check_code`].
    async fn verify(&self, staff: StaffId, code: &str) -> Result<bool, StaffError> {
        let id = staff.to_string();
        let Some(row) = store::seed(&self.db, &id).await? else {
            return Ok(false);
        };
        let Some(sealed) = row.totp_secret else {
            return Ok(false);
        };
        let seed = self.vault.open_secret(Purpose::StaffTotpSeed, &sealed)?;
        let Some(step) = matching_step(&seed, code, self.clock.now(), row.totp_last_step)? else {
            return Ok(false);
        };
        Ok(store::use_step(&self.db, &id, step).await?)
    }

    /// Spends a recovery code; true if it was valid and unused. Unlimited:
    /// callers go through [`Totp::check_recovery_code`].
    async fn use_recovery_code(
        &self,
        staff: StaffId,
        code: &str,
        ip: Option<std::net::IpAddr>,
    ) -> Result<bool, StaffError> {
        let normalised: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if normalised.len() != RECOVERY_CHARS {
            return Ok(false);
        }
        let mut tx = self.db.begin().await?;
        let id = staff.to_string();
        let hash = self.recovery_hash(staff, &normalised);
        let used = store::use_recovery_code(&mut tx, &id, &hash, self.clock.now()).await?;
        if used {
            let remaining = store::unused_recovery_codes_in(&mut tx, &id).await?;
            let event = Event::new(Actor::Staff(staff.to_string()), Action::RecoveryCodeUsed)
                .detail(serde_json::json!({ "remaining": remaining }))
                .ip(ip);
            self.audit.record(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(used)
    }

    /// Unused recovery codes left.
    pub async fn recovery_codes_left(&self, staff: StaffId) -> Result<i64, StaffError> {
        Ok(store::unused_recovery_codes(&self.db, &staff.to_string()).await?)
    }

    /// Removes the second factor (lost phone): the user enrols again at next
    /// sign-in if TOTP is required; their live sessions end.
    pub async fn reset(&self, actor: Actor, staff: StaffId) -> Result<bool, StaffError> {
        let mut tx = self.db.begin().await?;
        let id = staff.to_string();
        let changed = store::disable(&mut tx, &id).await?;
        store::delete_recovery_codes(&mut tx, &id).await?;
        if changed {
            let detail = serde_json::json!({ "staff_id": staff.to_string() });
            self.audit
                .record(
                    &mut tx,
                    &Event::new(actor, Action::TotpReset).detail(detail),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    fn recovery_hash(&self, staff: StaffId, code: &str) -> Vec<u8> {
        let normalised: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        self.vault.keyed_hash(
            Purpose::StaffRecoveryCode,
            format!("{staff}\0{normalised}").as_bytes(),
        )
    }
}

/// The time step within ±1 of `now` whose code equals `code` and is newer
/// than `after`, if any.
fn matching_step(
    seed: &[u8],
    code: &str,
    now: i64,
    after: Option<i64>,
) -> Result<Option<i64>, StaffError> {
    let code = code.trim().replace(' ', "");
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let totp = TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECS.unsigned_abs(),
        seed.to_vec(),
    )
    .map_err(|e| StaffError::TotpSetup(e.to_string()))?;
    let current = now.div_euclid(STEP_SECS);
    let mut found = None;
    // Check every candidate (no early exit) so timing says nothing.
    for step in [current - 1, current, current + 1] {
        let Ok(at) = u64::try_from(step * STEP_SECS) else {
            continue;
        };
        let expected = Zeroizing::new(totp.generate(at));
        let fresh = after.is_none_or(|last| step > last);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && fresh && found.is_none() {
            found = Some(step);
        }
    }
    Ok(found)
}

/// The code for `now` (tests and the enrolment page's self-check).
pub fn code_at(seed_base32: &str, now: i64) -> Option<String> {
    let seed = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, seed_base32)?;
    let totp = TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP_SECS.unsigned_abs(), seed).ok()?;
    Some(totp.generate(u64::try_from(now).ok()?))
}

const RECOVERY_CHARS: usize = 12;

/// 12 characters of a 32-letter alphabet: 60 bits, shown as `xxxx-xxxx-xxxx`.
fn new_recovery_code() -> SecretString {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz023456789";
    let mut rng = rand::rng();
    let raw: String = (0..RECOVERY_CHARS)
        .map(|_| char::from(ALPHABET[rng.random_range(0..32usize)]))
        .collect();
    SecretString::from(format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12]))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA-1 seed "12345678901234567890", T = 59 s.
        let seed = b"12345678901234567890";
        let b32 = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, seed);
        assert_eq!(code_at(&b32, 59).as_deref(), Some("287082"));
        assert_eq!(code_at(&b32, 1_111_111_109).as_deref(), Some("081804"));
    }

    #[test]
    fn window_is_plus_minus_one_step_and_never_backwards() -> Result<(), StaffError> {
        let seed = b"12345678901234567890";
        let b32 = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, seed);
        let now = 1_000_000_020;
        let step = now / STEP_SECS;
        for (offset, ok) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = code_at(&b32, (step + offset) * STEP_SECS).unwrap_or_default();
            assert_eq!(
                matching_step(seed, &code, now, None)?.is_some(),
                ok,
                "{offset}"
            );
        }
        let code = code_at(&b32, now).unwrap_or_default();
        assert_eq!(matching_step(seed, &code, now, Some(step))?, None);
        assert_eq!(matching_step(seed, "12345", now, None)?, None);
        Ok(())
    }

    #[test]
    fn recovery_codes_are_distinct_and_formatted() {
        let a = new_recovery_code();
        let b = new_recovery_code();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 14);
    }
}
