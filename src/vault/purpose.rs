//! Every label the installation keys are used under, in one place.
//!
//! A label separates one use of a key from every other: a keyed hash of a
//! link token can never equal a keyed hash of a sign-in address, and a
//! secret sealed for one column does not open when moved to another.
//! The bytes of each label are part of what is stored: link hashes, code
//! hashes, rate-limit keys, blind indexes and sealed columns in existing
//! databases were made with them. Renaming a label silently breaks all of
//! those, so the known-answer tests in `vault::secrets` pin each one.

use std::fmt;

/// Declares [`Purpose`] with its labels and [`Purpose::ALL`] from one list,
/// so no variant can be left out of `ALL` (and thus out of the pinned tests).
macro_rules! purposes {
    ($( $(#[$doc:meta])* $variant:ident => $label:literal, )*) => {
        /// What a keyed hash, a sealed secret or the audit chain is for. The
        /// vault's keyed APIs take only this, never free text.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Purpose {
            $( $(#[$doc])* $variant, )*
        }

        impl Purpose {
            /// Every purpose, in declaration order.
            pub const ALL: &'static [Purpose] = &[$( Purpose::$variant, )*];

            /// The bytes bound into the hash or ciphertext. Fixed forever.
            pub const fn label(self) -> &'static str {
                match self {
                    $( Purpose::$variant => $label, )*
                }
            }
        }
    };
}

purposes! {
    // Keyed hashes (`Vault::keyed_hash`, under the blind-index key).

    /// Blind index of a message's recipient address (`Vault::recipient_index`).
    RecipientAddress => "recipient-address",
    /// A customer link token, as stored for lookup.
    PickupLink => "pickup-link",
    /// An emailed verification code, bound to its message.
    PickupCode => "pickup-code",
    /// Rate limit: codes sent for one message.
    CodesPerMessage => "codes-per-message",
    /// Rate limit: codes requested from one client address.
    CodesPerIp => "codes-per-ip",
    /// Rate limit: verification attempts from one client address.
    VerifyPerIp => "verify-per-ip",
    /// Once-per-period note that a used link was visited again.
    LinkReused => "link-reused",
    /// Rate limit: visits to used links from one client address.
    ReusedPerIp => "reused-per-ip",
    /// Sign-in throttle: one account.
    SignInAccount => "sign-in-account",
    /// Sign-in throttle: one client address.
    SignInIp => "sign-in-ip",
    /// Sign-in throttle: one account from one client address.
    SignInAccountIp => "sign-in-account-ip",
    /// Sign-in throttle: one account from a browser that signed in before.
    SignInDevice => "sign-in-device",
    /// A staff invitation or password-reset link token.
    StaffLink => "staff-link",
    /// A staff member's TOTP recovery code.
    StaffRecoveryCode => "staff-recovery-code",
    /// The CSRF token of a visitor without a session.
    CsrfAnonymous => "csrf-anonymous",
    /// A secure-inbox code, bound to the address's blind index.
    InboxCode => "inbox-code",
    /// Rate limit: secure-inbox codes sent to one address.
    InboxCodesPerAddress => "inbox-codes-per-address",
    /// Rate limit: secure-inbox codes requested from one client address.
    InboxCodesPerIp => "inbox-codes-per-ip",
    /// Rate limit: secure-inbox code attempts from one client address.
    InboxVerifyPerIp => "inbox-verify-per-ip",
    /// Rate limit: secure-inbox uploads from one verified address.
    InboxUploadsPerAddress => "inbox-uploads-per-address",
    /// Rate limit: secure-inbox uploads in all, per day.
    InboxDaily => "inbox-daily",
    /// An API token, as stored for lookup.
    ApiToken => "api-token",
    /// An API client's `Idempotency-Key`.
    IdempotencyKey => "idempotency-key",
    /// The request an `Idempotency-Key` was first used for.
    IdempotencyRequest => "idempotency-request",

    // Sealed secrets (`Vault::seal_secret` / `Vault::open_secret`:
    // associated data under the small-secrets key).

    /// A delivery's recipient address.
    DeliveryRecipient => "delivery-recipient",
    /// A queued email's payload in the outbox.
    OutboxPayload => "outbox",
    /// A message kept by the development mailbox.
    DevMailbox => "dev-mailbox",
    /// A generated access code, shown once to the sender.
    GeneratedAccessCode => "generated_access_code",
    /// A staff member's TOTP seed.
    StaffTotpSeed => "staff-totp-seed",
    /// The address a secure-inbox visitor is proving, in their session.
    InboxAddress => "inbox-address",
    /// The first answer to an API call with an `Idempotency-Key`.
    IdempotentResponse => "idempotent-response",
    /// A webhook endpoint's signing secret, shown once to the admin.
    WebhookSecret => "webhook-secret",

    // The audit chain (`Vault::audit_mac`, under the audit key).

    /// Each link of the hash-chained audit log.
    AuditChain => "sealpost-audit-v1",
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The keys derived from the installation's root secret, each under its own
/// HKDF label. Changing a label replaces that key: every hash, sealed value
/// or audit link made with it stops matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Derivation {
    /// HMAC key of [`Vault::keyed_hash`](super::Vault::keyed_hash).
    BlindIndex,
    /// HMAC key of the audit chain.
    AuditChain,
    /// XChaCha20-Poly1305 key of [`Vault::seal_secret`](super::Vault::seal_secret).
    SmallSecrets,
}

impl Derivation {
    pub(super) const fn info(self) -> &'static [u8] {
        match self {
            Derivation::BlindIndex => b"sealpost/v1/blind-index",
            Derivation::AuditChain => b"sealpost/v1/audit-chain",
            Derivation::SmallSecrets => b"sealpost/v1/small-secrets",
        }
    }
}

/// Name of the `vault_secrets` row holding the installation's root secret
/// (wrapped like message keys). A new name would mint a new secret.
pub(super) const ROOT_SECRET: &str = "installation_root";
