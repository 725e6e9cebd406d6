//! Staff passwords: the acceptance policy (NIST SP 800-63B: length, not
//! composition rules; refuse the commonest and the obvious) and argon2id
//! hashing in one bounded pool ([`Hasher`]).

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};

/// argon2id with OWASP's minimum: 19 MiB, 2 passes, 1 lane.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 128;

/// Passwords every guessing list starts with. Compared case-insensitively.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "12345678",
    "123456789",
    "1234567890",
    "0123456789",
    "87654321",
    "11111111",
    "00000000",
    "12341234",
    "11223344",
    "qwertyui",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1qaz2wsx",
    "zaq12wsx",
    "asdfghjk",
    "asdfghjkl",
    "zxcvbnm1",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "welcome1",
    "welcome123",
    "letmein1",
    "letmein123",
    "trustno1",
    "whatever",
    "superman",
    "starwars",
    "dragon12",
    "monkey12",
    "master12",
    "michael1",
    "shadow12",
    "changeme",
    "changeme1",
    "default1",
    "administrator",
    "admin123",
    "admin1234",
    "secret12",
    "abcd1234",
    "abc12345",
    "abcdefgh",
    "computer",
    "internet",
    "sealpost",
    "sealpost1",
    "sealpost123",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    #[error("the password must be at least {MIN_CHARS} characters long")]
    TooShort,
    #[error("the password must be at most {MAX_CHARS} characters long")]
    TooLong,
    #[error("that password is too common; choose another (a passphrase of a few words works well)")]
    TooCommon,
    #[error("the password must not contain your email address or its name part")]
    ContainsEmail,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed")]
    Task,
    /// The pool's queue is full: shed the request (503) before hashing.
    #[error("too many password checks are waiting")]
    Busy,
}

/// The one place argon2 runs (passwords, access codes, known facts).
///
/// Each hash costs 19 MiB and tens of milliseconds of CPU, so an open
/// sign-in form must not be able to start hundreds at once: at most
/// `workers` run (each on a blocking thread, so decryption and other
/// blocking work never wait behind them) and at most `queue` wait; beyond
/// that a call fails at once with [`HashError::Busy`].
///
/// Callers come in lanes ([`Hasher::lane`]): each lane has its own queue
/// and all share the workers, so a flood of staff sign-ins fills only the
/// sign-in queue and a customer's verification still gets in, waiting at
/// most behind the other lanes' bounded queues.
#[derive(Clone)]
pub struct Hasher(std::sync::Arc<HasherInner>);

struct HasherInner {
    /// Shared by every lane.
    running: std::sync::Arc<tokio::sync::Semaphore>,
    /// Callers admitted: running plus waiting.
    admitted: std::sync::atomic::AtomicUsize,
    /// The most ever admitted at once (a high-water mark for tests and
    /// operators: it never exceeds `capacity`).
    peak: std::sync::atomic::AtomicUsize,
    capacity: usize,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher { .. }")
    }
}

/// Gives an admission back however the call ends (also when cancelled).
struct Admission<'a>(&'a HasherInner);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0
            .admitted
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Hasher {
    /// `workers` hashes at once, `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Hasher(std::sync::Arc::new(HasherInner {
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(workers)),
            admitted: std::sync::atomic::AtomicUsize::new(0),
            peak: std::sync::atomic::AtomicUsize::new(0),
            capacity: workers + queue,
        }))
    }

    /// About two per core, and a queue a few rounds deep (so a waiting
    /// caller is answered within about a second, not after a minute).
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Hasher::new(2 * cores, 8 * cores)
    }

    /// Another lane on the same workers, with a queue of its own of the
    /// same size.
    pub fn lane(&self) -> Hasher {
        Hasher(std::sync::Arc::new(HasherInner {
            running: std::sync::Arc::clone(&self.0.running),
            admitted: std::sync::atomic::AtomicUsize::new(0),
            peak: std::sync::atomic::AtomicUsize::new(0),
            capacity: self.0.capacity,
        }))
    }

    /// Calls admitted right now (running or waiting); for tests and metrics.
    pub fn admitted(&self) -> usize {
        self.0.admitted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The most calls ever admitted at once.
    pub fn peak_admitted(&self) -> usize {
        self.0.peak.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Running plus waiting calls allowed before shedding.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        use std::sync::atomic::Ordering;
        let inner = &*self.0;
        let before = inner.admitted.fetch_add(1, Ordering::AcqRel);
        if before >= inner.capacity {
            inner.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        inner.peak.fetch_max(before + 1, Ordering::AcqRel);
        let _admission = Admission(inner);
        let _permit = inner.running.acquire().await.map_err(|_| HashError::Task)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| HashError::Task)?
    }

    /// Hashes a password that passed the policy.
    pub async fn hash(&self, password: NewPassword) -> Result<String, HashError> {
        self.run(move || hash_now(password.0.expose_secret().as_bytes()))
            .await
    }

    /// Hashes without the acceptance policy: for re-hashing a password that
    /// was accepted under an older policy, access codes and known facts.
    pub async fn hash_unchecked(&self, secret: SecretString) -> Result<String, HashError> {
        self.run(move || hash_now(secret.expose_secret().as_bytes()))
            .await
    }

    /// The hash of a random secret that is thrown away: an account that
    /// exists but cannot sign in until its invitation sets a password. It
    /// is a real argon2id hash, so checking a guess against it takes as
    /// long as against any other account (no timing hint that it is new).
    pub async fn unusable_hash(&self) -> Result<String, HashError> {
        let secret = hex::encode(rand::rng().random::<[u8; 32]>());
        self.hash_unchecked(SecretString::from(secret)).await
    }

    /// Checks `secret` against a stored PHC string. A malformed stored hash
    /// counts as a mismatch.
    pub async fn verify(&self, secret: SecretString, stored: String) -> Result<bool, HashError> {
        self.run(move || {
            Ok(hasher()?
                .verify_password(secret.expose_secret().as_bytes(), stored.as_str())
                .is_ok())
        })
        .await
    }
}

/// A password that passed the policy for `email`.
pub struct NewPassword(SecretString);

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

impl NewPassword {
    pub fn parse(candidate: SecretString, email: &str) -> Result<Self, PasswordRejected> {
        let pw = candidate.expose_secret();
        let chars = pw.chars().count();
        if chars < MIN_CHARS {
            return Err(PasswordRejected::TooShort);
        }
        if chars > MAX_CHARS {
            return Err(PasswordRejected::TooLong);
        }
        let lower = pw.to_lowercase();
        let first = lower.chars().next();
        if COMMON.contains(&lower.as_str()) || lower.chars().all(|c| Some(c) == first) {
            return Err(PasswordRejected::TooCommon);
        }
        let email = email.to_lowercase();
        let name = email.split('@').next().unwrap_or_default();
        if lower.contains(&email) || (name.chars().count() >= 4 && lower.contains(name)) {
            return Err(PasswordRejected::ContainsEmail);
        }
        Ok(NewPassword(candidate))
    }
}

fn hasher() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| HashError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(password: &[u8]) -> Result<String, HashError> {
    let salt: [u8; 16] = rand::rng().random();
    let hash = hasher()?
        .hash_password_with_salt(password, &salt)
        .map_err(|e| HashError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// True if `stored` was made with weaker parameters than today's, so the
/// next successful sign-in should re-hash it.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(hash) = argon2::password_hash::phc::PasswordHash::new(stored) else {
        return true;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return true;
    };
    hash.algorithm.as_str() != "argon2id"
        || params.m_cost() < M_COST_KIB
        || params.t_cost() < T_COST
        || params.p_cost() < P_COST
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pw: &str) -> Result<NewPassword, PasswordRejected> {
        NewPassword::parse(SecretString::from(pw.to_owned()), "jane.doe@example.com")
    }

    #[test]
    fn policy() {
        assert_eq!(parse("short").err(), Some(PasswordRejected::TooShort));
        assert_eq!(
            parse(&"x".repeat(129)).err(),
            Some(PasswordRejected::TooLong)
        );
        assert_eq!(
            parse("Password123").err(),
            Some(PasswordRejected::TooCommon)
        );
        assert_eq!(
            parse("aaaaaaaaaaaa").err(),
            Some(PasswordRejected::TooCommon)
        );
        assert_eq!(
            parse("my jane.doe secret").err(),
            Some(PasswordRejected::ContainsEmail)
        );
        assert!(parse("correct horse battery staple").is_ok());
        // Length counts characters, not bytes.
        assert!(parse("ünïcödé✓").is_ok());
        assert!(parse(&"éa".repeat(64)).is_ok());
    }

    #[tokio::test]
    async fn hash_verifies_and_uses_current_parameters() -> Result<(), HashError> {
        let pool = Hasher::new(2, 2);
        let hash = pool
            .hash(
                parse("correct horse battery staple")
                    .map_err(|e| HashError::Hash(e.to_string()))?,
            )
            .await?;
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!needs_rehash(&hash));
        let ok = pool
            .verify(
                SecretString::from("correct horse battery staple"),
                hash.clone(),
            )
            .await?;
        let bad = pool
            .verify(SecretString::from("correct horse battery stapler"), hash)
            .await?;
        assert!(ok && !bad);
        let weak = "$argon2id$v=19$m=4096,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(needs_rehash(weak));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_pool_sheds_at_once_and_recovers() -> Result<(), HashError> {
        let pool = Hasher::new(1, 2);
        let stored = pool.unusable_hash().await?;
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (pool, stored) = (pool.clone(), stored.clone());
                tokio::spawn(async move { pool.verify(SecretString::from("guess"), stored).await })
            })
            .collect();
        let mut busy = 0;
        let mut checked = 0;
        for call in calls {
            match call.await.map_err(|_| HashError::Task)? {
                Err(HashError::Busy) => busy += 1,
                Ok(false) => checked += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        // One running and two waiting at a time: most were refused at once.
        assert!((1..=6).contains(&checked), "checked {checked}");
        assert_eq!(busy + checked, 20);
        assert_eq!(pool.admitted(), 0);
        assert!((1..=pool.capacity()).contains(&pool.peak_admitted()));
        assert!(!pool.verify(SecretString::from("guess"), stored).await?);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_lane_does_not_shut_out_another() -> Result<(), HashError> {
        let flooded = Hasher::new(1, 2);
        let other = flooded.lane();
        let stored = flooded.unusable_hash().await?;
        let flood: Vec<_> = (0..20)
            .map(|_| {
                let (pool, stored) = (flooded.clone(), stored.clone());
                tokio::spawn(async move { pool.verify(SecretString::from("guess"), stored).await })
            })
            .collect();
        // The flooded lane is full, the other one still admits.
        assert!(!other.verify(SecretString::from("guess"), stored).await?);
        let mut busy = 0;
        for call in flood {
            if let Err(HashError::Busy) = call.await.map_err(|_| HashError::Task)? {
                busy += 1;
            }
        }
        assert!(busy > 0);
        assert_eq!(flooded.admitted() + other.admitted(), 0);
        Ok(())
    }
}
