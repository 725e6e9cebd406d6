//! Wiring: from a [`Config`] to an open database and vault.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::audit::AuditLog;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::deliveries::Deliveries;
use crate::idempotency::Idempotency;
use crate::incoming::Incoming;
use crate::mail::{MailError, Outbox};
use crate::metrics::Metrics;
use crate::requests::Requests;
use crate::settings::SettingsStore;
use crate::staff::links::LinkParts;
use crate::staff::password::Hasher;
use crate::staff::{Accounts, ApiTokens, SignIn, StaffLinks, Totp};
use crate::store::{Db, DbError, PoolSettings};
use crate::vault::{
    BlobStore, LocalBlobStore, S3BlobStore, S3Settings, Vault, VaultError, VaultSettings,
};
use crate::web::dev_mailbox::DevMailboxPages;
use crate::webhooks::{WebhookError, Webhooks};

/// Everything a running Sealpost needs, cheap to clone: one reference
/// count, because axum clones the state for every request and middleware
/// layer (one count per part showed up as ~10% of a landing-page request).
#[derive(Clone)]
pub struct App(Arc<AppParts>);

impl std::ops::Deref for App {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub config: Arc<Config>,
    pub db: Db,
    pub vault: Vault,
    pub audit: AuditLog,
    pub accounts: Accounts,
    pub sign_in: SignIn,
    pub totp: Totp,
    pub links: StaffLinks,
    pub tokens: ApiTokens,
    pub settings: SettingsStore,
    pub deliveries: Deliveries,
    pub incoming: Incoming,
    pub requests: Requests,
    pub idempotency: Idempotency,
    pub outbox: Outbox,
    pub webhooks: Webhooks,
    pub clock: SharedClock,
    pub metrics: Metrics,
    /// The one bounded argon2 pool, in lanes: signed-in staff work
    /// (compose, passwords, invitations) here; the sign-in form in
    /// `sign_in`'s own lane; customers' verification in `pickup_hasher`.
    pub hasher: Hasher,
    pub pickup_hasher: Hasher,
    /// The malware scanner customer uploads pass through, if configured.
    pub scanner: Option<crate::scan::Scanner>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("App { .. }")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("cannot prepare the session store: {0}")]
    Sessions(sqlx::Error),
    #[error("{0}")]
    Mail(#[from] MailError),
    #[error("{0}")]
    Webhooks(#[from] WebhookError),
    #[error("cannot open the blob folder {path}: {source}")]
    Blobs {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("clamd_url: {0}")]
    Scanner(#[from] crate::scan::ScanError),
    #[error("cannot set up the S3 blob store {location}: {source}")]
    S3 {
        location: String,
        source: std::io::Error,
    },
}

/// Connects to the database and applies migrations.
pub async fn open_db(config: &Config) -> Result<Db, DbError> {
    let pool = PoolSettings {
        max_connections: config.db_max_connections,
        acquire_timeout: config.db_acquire_timeout,
    };
    let db = Db::connect(&config.database_url, pool).await?;
    db.migrate().await?;
    db.optimize().await?;
    Ok(db)
}

/// The local blob folder, or the S3 bucket when `blob_url` is set.
fn open_blob_store(config: &Config) -> Result<Arc<dyn BlobStore>, StartError> {
    let Some(location) = &config.blob_url else {
        let local = LocalBlobStore::open(&config.blob_dir).map_err(|source| StartError::Blobs {
            path: config.blob_dir.clone(),
            source,
        })?;
        return Ok(Arc::new(local));
    };
    if let Some(endpoint) = &config.s3_endpoint
        && endpoint.starts_with("http://")
        && !is_loopback_url(endpoint)
    {
        tracing::warn!(
            "s3_endpoint is plain http:// on another machine: blobs are ciphertext, \
             but requests and bucket contents are visible on the network; use https://"
        );
    }
    let settings = S3Settings {
        bucket: location.bucket.clone(),
        prefix: location.prefix.clone(),
        endpoint: config.s3_endpoint.clone(),
        region: config.s3_region.clone(),
        credentials: config
            .s3_access_key_id
            .clone()
            .zip(config.s3_secret_access_key.clone()),
    };
    let store = S3BlobStore::open(settings).map_err(|source| StartError::S3 {
        location: location.to_string(),
        source,
    })?;
    Ok(Arc::new(store))
}

/// Whether an http(s) URL's host is a loopback name or address.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl App {
    pub async fn open(config: Config) -> Result<App, StartError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(config: Config, clock: SharedClock) -> Result<App, StartError> {
        crate::tls::install_crypto_provider();
        let db = open_db(&config).await?;
        let blobs = open_blob_store(&config)?;
        let vault = Vault::open(
            db.clone(),
            blobs,
            VaultSettings {
                master_key_file: config.master_key_file.clone(),
                escrow_recipients: config.escrow_recipients.clone(),
            },
            clock.clone(),
        )
        .await?;
        let metrics = Metrics::new(vault.shred_counter());
        let audit = AuditLog::new(vault.clone(), clock.clone());
        let hasher = Hasher::for_this_machine();
        let accounts = Accounts::new(db.clone(), audit.clone(), clock.clone(), hasher.clone());
        let totp = Totp::new(db.clone(), vault.clone(), audit.clone(), clock.clone());
        let tokens = ApiTokens::new(
            db.clone(),
            vault.clone(),
            audit.clone(),
            accounts.clone(),
            clock.clone(),
        );
        let settings = SettingsStore::new(db.clone(), audit.clone());
        let deliveries = Deliveries::new(db.clone(), vault.clone(), audit.clone(), clock.clone());
        let incoming = Incoming::new(db.clone(), vault.clone(), audit.clone(), clock.clone());
        let requests = Requests::new(db.clone(), clock.clone());
        let idempotency = Idempotency::new(db.clone(), vault.clone(), clock.clone());
        let outbox = Outbox::new(
            &config,
            db.clone(),
            vault.clone(),
            settings.clone(),
            deliveries.clone(),
            audit.clone(),
            clock.clone(),
            metrics.clone(),
        )?;
        let webhooks = Webhooks::new(db.clone(), vault.clone(), audit.clone(), clock.clone())?;
        let sign_in = SignIn::new(
            vault.clone(),
            audit.clone(),
            outbox.clone(),
            clock.clone(),
            hasher.lane(),
        );
        let pickup_hasher = hasher.lane();
        let links = StaffLinks::new(LinkParts {
            db: db.clone(),
            vault: vault.clone(),
            audit: audit.clone(),
            accounts: accounts.clone(),
            outbox: outbox.clone(),
            clock: clock.clone(),
            hasher: hasher.clone(),
            public_url: config.public_url.clone(),
        });
        let scanner = config
            .clamd_url
            .as_deref()
            .map(crate::scan::Scanner::parse)
            .transpose()?;
        crate::web::session::migrate(&db)
            .await
            .map_err(StartError::Sessions)?;
        if config.blob_url.is_some()
            && let Err(e) = vault.check_blob_store().await
        {
            // Not fatal: the store may come up after us; /readyz says 503 until then.
            tracing::warn!(error = %e, "the S3 blob store is not reachable yet");
        }
        Ok(App(Arc::new(AppParts {
            config: Arc::new(config),
            db,
            vault,
            audit,
            accounts,
            sign_in,
            totp,
            links,
            tokens,
            settings,
            deliveries,
            incoming,
            requests,
            idempotency,
            outbox,
            webhooks,
            clock,
            metrics,
            hasher,
            pickup_hasher,
            scanner,
        })))
    }
}

// The sub-states handlers, extractors and middleware take instead of the
// whole `App` (each is a cheap clone).

impl FromRef<App> for Arc<Config> {
    fn from_ref(app: &App) -> Self {
        app.config.clone()
    }
}

impl FromRef<App> for Vault {
    fn from_ref(app: &App) -> Self {
        app.vault.clone()
    }
}

impl FromRef<App> for Metrics {
    fn from_ref(app: &App) -> Self {
        app.metrics.clone()
    }
}

impl FromRef<App> for DevMailboxPages {
    fn from_ref(app: &App) -> Self {
        DevMailboxPages {
            enabled: app.outbox.is_dev_mailbox(),
            public_url: app.config.public_url.as_str().into(),
            db: app.db.clone(),
            vault: app.vault.clone(),
        }
    }
}
