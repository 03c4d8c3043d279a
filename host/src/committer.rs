//! Group commit: the single writer task.
//!
//! Every finished unit of work is sent here. The writer takes all that are waiting (up to
//! [`MAX_BATCH`]), applies them in one transaction with one fsync, and only then answers each
//! sender — so a caller is never told "done" before its data is durable, and the disk's
//! commit rate is shared by many units of work instead of capping them one by one.

use crate::error::HostError;
use crate::store::{Applied, Store, Write};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc, oneshot};

/// Most units of work applied in one transaction: large enough to amortise the fsync, small
/// enough that one transaction never holds the write lock for long.
pub const MAX_BATCH: usize = 512;
/// Units of work that may wait for the writer before senders are slowed down.
const QUEUE_DEPTH: usize = 4096;

/// Units of work sent together, applied one after another in one transaction.
struct Pending {
    writes: Vec<Write>,
    reply: oneshot::Sender<Result<Vec<Applied>, HostError>>,
}

/// A handle for submitting units of work to the writer; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Pending>,
    committed: Arc<Notify>,
}

impl Committer {
    /// Starts the writer on a thread of its own. `committed` is notified after every
    /// transaction that committed something, which is how the dispatcher learns of new
    /// deliveries without polling.
    ///
    /// The writer awaits the database once per statement. On the shared runtime each of those
    /// wake-ups queued behind every handler call being run, so a batch of 30 units took 20-30 ms;
    /// on its own single-threaded runtime the writer is woken at once.
    ///
    /// # Panics
    /// When the operating system refuses a thread or a runtime (start-up only).
    pub fn spawn(store: Store, committed: Arc<Notify>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let woken = committed.clone();
        std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the committer's runtime")
                    .block_on(run_writer(store, receiver, committed.clone()));
            })
            .expect("starting the committer thread");
        Self {
            queue,
            committed: woken,
        }
    }

    /// Tells whoever waits for commits (the dispatcher) that deliveries changed beside the
    /// committer, as an operator's replay through the admin API does.
    pub fn notify_committed(&self) {
        self.committed.notify_one();
    }

    /// Commits `write` (with whatever else is waiting) and returns once it is durable.
    ///
    /// # Errors
    /// [`HostError::Database`] when the transaction failed (the whole batch: nothing of it
    /// was committed), [`HostError::WriterStopped`] when the writer has stopped.
    pub async fn submit(&self, write: Write) -> Result<Applied, HostError> {
        let mut applied = self.submit_run(vec![write]).await?;
        Ok(applied.pop().expect("one result per write"))
    }

    /// Commits `writes` one after another in the same transaction, nothing between them (a
    /// run of deliveries, whose [`Write::Chained`] items rely on that), and returns once they
    /// are durable: one result per write, in order.
    ///
    /// # Errors
    /// As [`Committer::submit`].
    pub async fn submit_run(&self, writes: Vec<Write>) -> Result<Vec<Applied>, HostError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { writes, reply })
            .await
            .map_err(|_| HostError::WriterStopped)?;
        answer.await.map_err(|_| HostError::WriterStopped)?
    }
}

async fn run_writer(store: Store, mut receiver: mpsc::Receiver<Pending>, committed: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut writes = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for pending in batch.drain(..) {
            replies.push((pending.reply, pending.writes.len()));
            writes.extend(pending.writes);
        }
        let started = std::time::Instant::now();
        match store.apply_batch(&writes).await {
            Ok(results) => {
                crate::telemetry::batch_committed(writes.len(), started.elapsed());
                tracing::debug!(
                    units = writes.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                if results.contains(&Applied::Committed) {
                    committed.notify_one();
                }
                let mut results = results.into_iter();
                for (reply, count) in replies.drain(..) {
                    let _ = reply.send(Ok(results.by_ref().take(count).collect()));
                }
            }
            Err(error) => {
                // The store's health logs the failure (once, then periodically).
                tracing::debug!(
                    error = format!("{error:#}"),
                    units = writes.len(),
                    "batch commit failed"
                );
                let error = HostError::database(error);
                for (reply, _) in replies.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        writes.clear();
    }
}
