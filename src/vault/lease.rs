//! A cluster-wide lease for a job only one process may run at a time. It
//! lives in the database, so it holds across instances and hosts; it expires
//! unless renewed, so a crashed holder blocks the next run only briefly.

use std::time::Duration;

use rand::RngExt;

use crate::clock::SharedClock;
use crate::store::{Db, job_leases};

/// How long a lease lasts without renewal.
const TTL_SECONDS: i64 = 60;
const POLL: Duration = Duration::from_millis(250);

pub(crate) struct JobLease {
    db: Db,
    clock: SharedClock,
    name: &'static str,
    holder: String,
}

impl JobLease {
    /// Waits until no other process holds `name`, then takes it.
    pub(crate) async fn acquire(
        db: &Db,
        clock: &SharedClock,
        name: &'static str,
    ) -> Result<JobLease, sqlx::Error> {
        let holder = hex::encode(rand::rng().random::<[u8; 16]>());
        let lease = JobLease {
            db: db.clone(),
            clock: clock.clone(),
            name,
            holder,
        };
        let mut announced = false;
        while !lease.try_take().await? {
            if !announced {
                tracing::info!(job = name, "another process runs this job; waiting for it");
                announced = true;
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(lease)
    }

    /// Takes the lease if it is free, expired or already ours.
    async fn try_take(&self) -> Result<bool, sqlx::Error> {
        let now = self.clock.now();
        job_leases::take(&self.db, self.name, &self.holder, now + TTL_SECONDS, now).await
    }

    /// Extends the lease; false if it was lost (expired and taken over), in
    /// which case the caller must stop.
    pub(crate) async fn renew(&self) -> Result<bool, sqlx::Error> {
        let until = self.clock.now() + TTL_SECONDS;
        job_leases::renew(&self.db, self.name, &self.holder, until).await
    }

    pub(crate) async fn release(self) -> Result<(), sqlx::Error> {
        job_leases::release(&self.db, self.name, &self.holder).await
    }
}
