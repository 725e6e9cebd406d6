//! Wiring: from a [`Config`] to an open database and vault.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::db::{Db, DbError, PoolSettings};
use crate::deliveries::Deliveries;
use crate::mail::{MailError, Outbox};
use crate::metrics::Metrics;
use crate::settings::SettingsStore;
use crate::staff::{Accounts, SignIn, Totp};
use crate::vault::{LocalBlobStore, Vault, VaultError, VaultSettings};

/// Everything a running Sealpost needs, cheap to clone.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub db: Db,
    pub vault: Vault,
    pub audit: AuditLog,
    pub accounts: Accounts,
    pub sign_in: SignIn,
    pub totp: Totp,
    pub settings: SettingsStore,
    pub deliveries: Deliveries,
    pub outbox: Outbox,
    pub clock: SharedClock,
    pub metrics: Metrics,
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
    #[error("cannot open the blob folder {path}: {source}")]
    Blobs {
        path: std::path::PathBuf,
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
    Ok(db)
}

impl App {
    pub async fn open(config: Config) -> Result<App, StartError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(config: Config, clock: SharedClock) -> Result<App, StartError> {
        let db = open_db(&config).await?;
        let blobs = LocalBlobStore::open(&config.blob_dir).map_err(|source| StartError::Blobs {
            path: config.blob_dir.clone(),
            source,
        })?;
        let vault = Vault::open(
            db.clone(),
            Arc::new(blobs),
            VaultSettings {
                master_key_file: config.master_key_file.clone(),
                escrow_recipients: config.escrow_recipients.clone(),
            },
            clock.clone(),
        )
        .await?;
        let metrics = Metrics::new(vault.shred_counter());
        let audit = AuditLog::new(vault.clone(), clock.clone());
        let accounts = Accounts::new(db.clone(), audit.clone(), clock.clone());
        let sign_in = SignIn::new(vault.clone(), audit.clone(), clock.clone());
        let totp = Totp::new(db.clone(), vault.clone(), audit.clone(), clock.clone());
        let settings = SettingsStore::new(db.clone(), audit.clone());
        let deliveries = Deliveries::new(db.clone(), vault.clone(), audit.clone(), clock.clone());
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
        crate::web::session::migrate(&db)
            .await
            .map_err(StartError::Sessions)?;
        Ok(App {
            config: Arc::new(config),
            db,
            vault,
            audit,
            accounts,
            sign_in,
            totp,
            settings,
            deliveries,
            outbox,
            clock,
            metrics,
        })
    }
}
