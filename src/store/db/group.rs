//! SQLite's write transactions, committed in groups.
//!
//! SQLite has one writer at a time, so this process's writers queue at a
//! gate (in order, instead of in SQLite's busy handler, which sleeps up to
//! 100 ms between tries). Behind the gate a writer does not get a
//! transaction of its own: it gets a savepoint in the one transaction this
//! process keeps open on its writer connection. When it commits while
//! others are queued, it leaves that transaction open for them and waits;
//! a flush queued behind them commits for all at once. A group costs one
//! commit: one WAL write, in which the pages several writers touched (the
//! tail of every table and index) appear once, and one fsync. Measured on
//! API sends: the commit was the longest step of each, and each wrote some
//! 20 pages to the WAL.
//!
//! Each writer still returns from `commit` only once its changes are
//! durable. A writer that fails or is dropped rolls back to its savepoint,
//! undoing its own changes and no one else's. If the shared commit fails,
//! every writer in the group gets the error: none of their changes stay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Executor;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

/// Writers committed together at most: bounds how long the first waits.
const GROUP_MAX: usize = 64;

type Outcome = Result<(), Arc<sqlx::Error>>;

/// The gate and the writer connection behind it.
#[derive(Debug)]
pub struct Gate {
    writer: Arc<Mutex<Writer>>,
    /// Writers waiting at the gate (flushes not counted): while there are
    /// any, a committing writer leaves the transaction open for them.
    queued: AtomicUsize,
}

#[derive(Debug)]
struct Writer {
    conn: sqlx::AnyConnection,
    /// `BEGIN IMMEDIATE` ran and the group has not ended yet.
    open: bool,
    /// The next savepoint's number (they nest; the commit releases them all).
    next: u64,
    /// The savepoint of a writer dropped without committing: whoever holds
    /// the gate next rolls back to it before anything else.
    undo: Option<u64>,
    /// Writers that committed into the open transaction, waiting for it.
    waiting: Vec<oneshot::Sender<Outcome>>,
    /// A flush is queued at the gate: the open transaction will end.
    flush_queued: bool,
}

/// One writer's savepoint in the shared transaction; it holds the gate.
#[derive(Debug)]
pub struct Member {
    gate: Arc<Gate>,
    writer: OwnedMutexGuard<Writer>,
    savepoint: u64,
    /// Committed or rolled back: nothing for `Drop` to undo.
    done: bool,
}

impl Gate {
    pub fn new(conn: sqlx::AnyConnection) -> Arc<Gate> {
        Arc::new(Gate {
            writer: Arc::new(Mutex::new(Writer {
                conn,
                open: false,
                next: 0,
                undo: None,
                waiting: Vec::new(),
                flush_queued: false,
            })),
            queued: AtomicUsize::new(0),
        })
    }

    /// Waits (at most `patience`) for the gate, then opens a savepoint.
    pub async fn begin(
        self: &Arc<Gate>,
        patience: std::time::Duration,
    ) -> Result<Member, sqlx::Error> {
        let writer = {
            let _queued = Queued::new(&self.queued);
            tokio::time::timeout(patience, self.writer.clone().lock_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
        };
        // The statements on the shared connection run as a task of their
        // own, here and wherever the transaction's state changes: a caller
        // cancelled mid-statement (a client hanging up) must not leave the
        // connection in a state the bookkeeping here does not know. If the
        // caller is gone, the finished member is dropped, which undoes it.
        tokio::spawn(Member::open(self.clone(), writer))
            .await
            .map_err(interrupted)?
    }

    /// Ends the open transaction, if any: the queued flush, and shutdown.
    pub async fn flush(&self) {
        let mut writer = self.writer.clone().lock_owned().await;
        writer.flush_queued = false;
        // The writers waiting on it get the outcome.
        let _ = writer.finish().await;
    }
}

impl Member {
    pub fn conn(&self) -> &sqlx::AnyConnection {
        &self.writer.conn
    }

    pub fn conn_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.writer.conn
    }

    async fn open(
        gate: Arc<Gate>,
        mut writer: OwnedMutexGuard<Writer>,
    ) -> Result<Member, sqlx::Error> {
        writer.settle().await.map_err(shared)?;
        let savepoint = writer.next;
        let sql = if writer.open {
            format!("SAVEPOINT w{savepoint}")
        } else {
            format!("BEGIN IMMEDIATE; SAVEPOINT w{savepoint}")
        };
        if let Err(e) = writer.conn.execute(sql.as_str()).await {
            if !writer.open {
                // BEGIN may have run without the savepoint: end it.
                let _ = writer.conn.execute("ROLLBACK").await;
            }
            return Err(e);
        }
        writer.open = true;
        writer.next += 1;
        Ok(Member {
            gate,
            writer,
            savepoint,
            done: false,
        })
    }

    /// Returns once the changes of this writer (and of its group) are
    /// committed, or with the error that undid them.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.done = true;
        let (answer, outcome) = oneshot::channel();
        self.writer.waiting.push(answer);
        if self.hand_on() {
            // Lets the queued writers in.
            drop(self);
        } else {
            tokio::spawn(async move {
                let mut member = self;
                // The writers waiting on it, this one too, get the outcome.
                let _ = member.writer.finish().await;
            });
        }
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(shared(e)),
            Err(_) => Err(interrupted("the group commit stopped")),
        }
    }

    /// Undoes this writer's changes.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.done = true;
        self.writer.undo = Some(self.savepoint);
        tokio::spawn(async move {
            let mut member = self;
            let settled = member.writer.settle().await.map_err(shared);
            if !member.hand_on() {
                let _ = member.writer.finish().await;
            }
            settled
        })
        .await
        .map_err(interrupted)?
    }

    /// Hands the open transaction on to the writers queued at the gate,
    /// with a flush queued behind them so that it ends even if they give
    /// up. False if it is for the caller to end now: no one is queued, or
    /// the group is full.
    fn hand_on(&mut self) -> bool {
        if !self.writer.open {
            return true;
        }
        let queued = self.gate.queued.load(Ordering::Acquire);
        if queued > 0 && self.writer.waiting.len() < GROUP_MAX {
            self.queue_flush();
            true
        } else {
            false
        }
    }

    fn queue_flush(&mut self) {
        if self.writer.flush_queued {
            return;
        }
        // Without a runtime (a drop at exit) the next writer settles it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.writer.flush_queued = true;
            let gate = self.gate.clone();
            runtime.spawn(async move { gate.flush().await });
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped mid-transaction (an error, a cancelled request): undone
        // by whoever holds the gate next, and a flush makes sure someone does.
        self.writer.undo = Some(self.savepoint);
        self.queue_flush();
    }
}

impl Writer {
    /// Rolls back what a dropped writer left. If that fails, the state of
    /// the transaction is unknown: it is rolled back whole, and the writers
    /// waiting on it get the error.
    async fn settle(&mut self) -> Result<(), Arc<sqlx::Error>> {
        let Some(savepoint) = self.undo.take() else {
            return Ok(());
        };
        let sql = format!("ROLLBACK TO w{savepoint}");
        if let Err(e) = self.conn.execute(sql.as_str()).await {
            let e = Arc::new(e);
            self.end(Some("ROLLBACK"), Err(e.clone())).await;
            return Err(e);
        }
        Ok(())
    }

    /// Commits the open transaction and tells every writer waiting on it.
    async fn finish(&mut self) -> Result<(), Arc<sqlx::Error>> {
        self.settle().await?;
        if !self.open {
            return Ok(());
        }
        match self.conn.execute("COMMIT").await {
            Ok(_) => {
                self.end(None, Ok(())).await;
                Ok(())
            }
            Err(e) => {
                let e = Arc::new(e);
                self.end(Some("ROLLBACK"), Err(e.clone())).await;
                Err(e)
            }
        }
    }

    async fn end(&mut self, then: Option<&str>, outcome: Outcome) {
        if let Some(sql) = then {
            // What is left of a failed transaction (an error if SQLite
            // already rolled it back, which is the state wanted).
            let _ = self.conn.execute(sql).await;
        }
        self.open = false;
        self.next = 0;
        self.undo = None;
        for answer in self.waiting.drain(..) {
            // A writer that stopped waiting had its outcome all the same.
            let _ = answer.send(outcome.clone());
        }
    }
}

fn interrupted(e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!(
        "a write transaction's task stopped: {e}"
    )))
}

/// The group's error, for each writer in it (its source chain kept).
fn shared(e: Arc<sqlx::Error>) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(SharedError(e)))
}

#[derive(Debug)]
struct SharedError(Arc<sqlx::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the group commit failed: {}", self.0)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Counts a writer as queued while it waits for the gate.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Queued(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
