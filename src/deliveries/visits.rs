//! First visits of live links, written together (group commit).
//!
//! A fresh link's first visit writes a status change and an audit event.
//! Write transactions are serial (SQLite's write lock, the audit chain's
//! lock on PostgreSQL) and each ends in a flush to disk, so first visits
//! written one by one queue behind each other: at 8 concurrent clients the
//! landing page's p99 was a second. Here one task per instance takes every
//! visit waiting and writes them in one transaction. Each visitor still
//! waits until its own visit is committed: nothing is acknowledged before
//! it is stored, and the bounded queue holds back visitors when the
//! database falls behind.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{DeliveryError, Status, advance_in};
use crate::audit::{Action, Actor, AuditLog, Event};
use crate::clock::SharedClock;
use crate::store::Db;
use crate::vault::MessageId;

/// Visits waiting for the writer; beyond it, visitors wait to queue.
const QUEUE: usize = 256;
/// Visits per transaction, so one commit stays short.
const BATCH: usize = 64;

type Done = oneshot::Sender<Result<(), Arc<DeliveryError>>>;

struct Visit {
    id: MessageId,
    agent: &'static str,
    done: Done,
}

pub(super) struct VisitWriter {
    queue: mpsc::Sender<Visit>,
    db: Db,
    audit: AuditLog,
    clock: SharedClock,
}

impl VisitWriter {
    /// Spawns the writer on the current runtime. It ends when the last
    /// sender (this writer's owner) is dropped.
    pub(super) fn start(db: Db, audit: AuditLog, clock: SharedClock) -> Self {
        let (queue, mut waiting) = mpsc::channel::<Visit>(QUEUE);
        let (task_db, task_audit, task_clock) = (db.clone(), audit.clone(), clock.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while waiting.recv_many(&mut batch, BATCH).await > 0 {
                let ids: Vec<_> = batch.iter().map(|v: &Visit| (v.id, v.agent)).collect();
                let together = write(&task_db, &task_audit, &task_clock, ids).await;
                let failed = together.is_err() && batch.len() > 1;
                let together = together.map_err(Arc::new);
                for visit in batch.drain(..) {
                    // One failing visit (a deadlock victim, say) must not fail
                    // the others: after a failed batch each is tried alone.
                    let result = if failed {
                        let alone = vec![(visit.id, visit.agent)];
                        write(&task_db, &task_audit, &task_clock, alone)
                            .await
                            .map_err(Arc::new)
                    } else {
                        together.clone()
                    };
                    // A visitor that went away (client gone) needs no answer.
                    let _ = visit.done.send(result);
                }
            }
        });
        VisitWriter {
            queue,
            db,
            audit,
            clock,
        }
    }

    pub(super) async fn note(
        &self,
        id: MessageId,
        agent: &'static str,
    ) -> Result<(), DeliveryError> {
        let (done, answer) = oneshot::channel();
        if self.queue.send(Visit { id, agent, done }).await.is_ok()
            && let Ok(result) = answer.await
        {
            return result.map_err(DeliveryError::Visit);
        }
        // The writer is gone (its runtime ended, as between tests): this
        // visit is written alone. Writing it twice is harmless: a message
        // advances, and gets its event, once.
        write(&self.db, &self.audit, &self.clock, vec![(id, agent)]).await
    }
}

/// One transaction for the batch. Rows are updated in message-id order and
/// the audit events appended after every row: the append lock is taken
/// last, as [`AuditLog::record`] requires, and two instances' batches lock
/// rows in the same order, so they cannot deadlock.
async fn write(
    db: &Db,
    audit: &AuditLog,
    clock: &SharedClock,
    mut visits: Vec<(MessageId, &'static str)>,
) -> Result<(), DeliveryError> {
    visits.sort_by_key(|(id, _)| *id);
    let now = clock.now();
    let mut tx = db.begin().await?;
    let mut advanced = Vec::new();
    for (id, agent) in visits {
        // A message visited twice in one batch advances (and is noted) once.
        if advance_in(&mut tx, id, Status::LinkVisited, now).await? {
            advanced.push((id, agent));
        }
    }
    for (id, agent) in advanced {
        let event = Event::new(Actor::Anonymous, Action::LinkVisited)
            .message(id)
            .detail(serde_json::json!({ "agent": agent }));
        audit.record(&mut tx, &event).await?;
    }
    tx.commit().await?;
    Ok(())
}
