//! Signed webhooks: admins register endpoints (a URL, the events it wants,
//! a signing secret shown once); the audit log queues each event for its
//! subscribers in the transaction that records it (`audit::webhooks`);
//! the worker ([`worker`]) delivers them at least once, in order per
//! message, signed the Standard Webhooks way ([`signing`]), with retries
//! and back-off, to public addresses only unless an admin allowed private
//! ones for that endpoint ([`net`]). Payloads carry ids and statuses only.

pub mod net;
pub mod signing;
mod worker;

use std::fmt;
use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

pub use self::worker::{LEASE_SECONDS, backoff, spawn};
use crate::audit::webhooks::EVENT_TYPES;
use crate::audit::{Action, Actor, AuditError, AuditLog, Event};
use crate::clock::SharedClock;
use crate::store::webhooks::{self as store, DeliveryKey, DeliveryRow, EndpointRow};
use crate::store::{Db, Tx};
use crate::vault::{Purpose, Vault, VaultError};

/// Deliveries shown in an endpoint's log.
pub const LOG_ROWS: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The audit log could not record the change.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A secret could not be sealed or opened.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The HTTP clients could not be built.
    #[error("cannot set up the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// What the admin entered is refused (the text says why).
    #[error("{0}")]
    Invalid(String),
    /// No such endpoint or delivery.
    #[error("not found")]
    NotFound,
}

/// An endpoint as the admin pages show it (never its secret).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub allow_private: bool,
    pub created_by: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

impl From<EndpointRow> for Endpoint {
    fn from(row: EndpointRow) -> Self {
        Endpoint {
            events: row
                .events
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
            id: row.id,
            url: row.url,
            allow_private: row.allow_private != 0,
            created_by: row.created_by,
            created_at: row.created_at,
            disabled_at: row.disabled_at,
        }
    }
}

/// What an admin asks for.
pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub allow_private: bool,
}

/// A new endpoint and its secret, which is shown this once.
pub struct Created {
    pub endpoint: Endpoint,
    pub secret: SecretString,
}

impl fmt::Debug for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Created")
            .field("endpoint", &self.endpoint)
            .field("secret", &"***")
            .finish()
    }
}

pub use crate::store::webhooks::DeliveryRow as Delivery;

/// The webhook service: endpoints, their delivery logs, and the worker.
#[derive(Clone)]
pub struct Webhooks {
    db: Db,
    vault: Vault,
    audit: AuditLog,
    clock: SharedClock,
    clients: net::Clients,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Webhooks { .. }")
    }
}

impl Webhooks {
    pub fn new(
        db: Db,
        vault: Vault,
        audit: AuditLog,
        clock: SharedClock,
    ) -> Result<Self, WebhookError> {
        Ok(Webhooks {
            db,
            vault,
            audit,
            clock,
            clients: net::Clients::new()?,
        })
    }

    /// Registers an endpoint and returns its secret (to show once).
    pub async fn create(
        &self,
        actor: Actor,
        ip: Option<IpAddr>,
        new: &NewEndpoint<'_>,
    ) -> Result<Created, WebhookError> {
        let url = net::parse_url(new.url, new.allow_private)
            .map_err(|e| WebhookError::Invalid(e.to_string()))?;
        let mut events: Vec<&str> = EVENT_TYPES
            .iter()
            .copied()
            .filter(|t| new.events.iter().any(|e| e == t))
            .collect();
        if events.len() != new.events.len() || events.is_empty() {
            return Err(WebhookError::Invalid(
                "Choose at least one event from the list.".to_owned(),
            ));
        }
        events.dedup();
        let secret = signing::new_secret();
        let sealed = self
            .vault
            .seal_secret(Purpose::WebhookSecret, secret.expose_secret().as_bytes())?;
        let id = Uuid::new_v4().to_string();
        let now = self.clock.now();
        let list = format!(",{},", events.join(","));
        let mut tx = self.db.begin().await?;
        store::insert_endpoint(
            &mut tx,
            &store::NewEndpoint {
                id: &id,
                url: url.as_str(),
                events: &list,
                sealed_secret: &sealed,
                allow_private: new.allow_private,
                created_by: &actor.to_string(),
                now,
            },
        )
        .await?;
        // The URL is the admin's, not a customer's; it still stays out of
        // the log (it may carry a token of the receiver's).
        let detail = serde_json::json!({
            "endpoint": id,
            "events": events,
            "allow_private": new.allow_private,
        });
        let event = Event::new(actor.clone(), Action::WebhookCreated)
            .ip(ip)
            .detail(detail);
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        let endpoint = Endpoint {
            id,
            url: url.to_string(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            allow_private: new.allow_private,
            created_by: actor.to_string(),
            created_at: now,
            disabled_at: None,
        };
        Ok(Created { endpoint, secret })
    }

    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, WebhookError> {
        Ok(store::endpoints(&self.db)
            .await?
            .into_iter()
            .map(Endpoint::from)
            .collect())
    }

    pub async fn endpoint(&self, id: &str) -> Result<Endpoint, WebhookError> {
        store::endpoint(&self.db, id)
            .await?
            .map(Endpoint::from)
            .ok_or(WebhookError::NotFound)
    }

    /// Stops sending to an endpoint; what was still pending for it fails
    /// (it stays in the log, and can be redelivered once it is enabled
    /// again — there is no enabling: make a new endpoint).
    pub async fn disable(
        &self,
        actor: Actor,
        ip: Option<IpAddr>,
        id: &str,
    ) -> Result<(), WebhookError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if !store::disable(&mut tx, id, now).await? {
            return Err(WebhookError::NotFound);
        }
        store::fail_pending(&mut tx, id, "endpoint disabled").await?;
        let event = Event::new(actor, Action::WebhookDisabled)
            .ip(ip)
            .detail(serde_json::json!({ "endpoint": id }));
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an endpoint and its delivery log.
    pub async fn delete(
        &self,
        actor: Actor,
        ip: Option<IpAddr>,
        id: &str,
    ) -> Result<(), WebhookError> {
        let mut tx = self.db.begin().await?;
        if !store::delete(&mut tx, id).await? {
            return Err(WebhookError::NotFound);
        }
        let event = Event::new(actor, Action::WebhookDeleted)
            .ip(ip)
            .detail(serde_json::json!({ "endpoint": id }));
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An endpoint's latest deliveries, newest first.
    pub async fn log(&self, endpoint_id: &str) -> Result<Vec<DeliveryRow>, WebhookError> {
        Ok(store::log(&self.db, endpoint_id, LOG_ROWS).await?)
    }

    /// Every delivery about a message, oldest first.
    pub async fn deliveries_for_message(
        &self,
        message_id: &str,
    ) -> Result<Vec<DeliveryRow>, WebhookError> {
        Ok(store::for_message(&self.db, message_id).await?)
    }

    /// Queues a finished delivery again, with the same `webhook-id` and
    /// payload (a receiver that saw it already drops it by its id).
    pub async fn redeliver(
        &self,
        actor: Actor,
        ip: Option<IpAddr>,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<(), WebhookError> {
        let live = store::endpoint(&self.db, endpoint_id)
            .await?
            .is_some_and(|e| e.disabled_at.is_none());
        if !live {
            return Err(WebhookError::NotFound);
        }
        let key = DeliveryKey {
            endpoint_id: endpoint_id.to_owned(),
            id: delivery_id.to_owned(),
        };
        let mut tx = self.db.begin().await?;
        if !store::redeliver(&mut tx, &key, self.clock.now()).await? {
            return Err(WebhookError::Invalid(
                "That delivery is still queued, or no longer exists.".to_owned(),
            ));
        }
        let event = Event::new(actor, Action::WebhookRedelivered)
            .ip(ip)
            .detail(serde_json::json!({ "endpoint": endpoint_id, "delivery": delivery_id }));
        self.audit.record(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    fn db(&self) -> &Db {
        &self.db
    }

    async fn begin(&self) -> Result<Tx, WebhookError> {
        Ok(self.db.begin().await?)
    }
}
