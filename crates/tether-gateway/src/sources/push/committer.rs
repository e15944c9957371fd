//! The committer: one thread that owns the [`Store`] and the [`Disk`],
//! applies requests in the order they were received, and commits them in
//! batches: every request waiting when a commit starts shares its one
//! fsync (group commit), so many pushers cost few fsyncs. A request is
//! answered only after its batch is on disk; readers see a batch only then.
//!
//! The queue holds [`QUEUE_REQUESTS`] at most; past it a request waits to
//! be queued (the pushers are slowed, nothing is dropped).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::disk::Disk;
use super::key::GroupingKey;
use super::refusal::{Reason, Refusal};
use super::store::{Change, Group, Pending, Store};
use super::telemetry::PushTelemetry;

/// Requests waiting for the committer at most.
pub(crate) const QUEUE_REQUESTS: usize = 4096;
/// Requests in one transaction at most.
const MAX_BATCH: usize = 1024;

/// Where a request's outcome goes.
type Reply = oneshot::Sender<Result<(), Refusal>>;

enum Message {
    Change {
        change: Change,
        now_ms: u64,
        reply: Reply,
    },
    /// Finish what is queued before it, close the store, then answer.
    Close(oneshot::Sender<()>),
}

/// The handle the push routes submit requests through.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    sender: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Change { change, .. } => write!(f, "Change({change:?})"),
            Message::Close(_) => write!(f, "Close"),
        }
    }
}

impl Committer {
    /// Starts the committer's thread over `store`, writing to `disk`
    /// (`None`: memory only).
    pub(crate) fn start(
        store: Store,
        disk: Option<Disk>,
        telemetry: Arc<PushTelemetry>,
    ) -> std::io::Result<Committer> {
        let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS);
        std::thread::Builder::new()
            .name("tether-push-store".to_owned())
            .spawn(move || run(store, disk, receiver, &telemetry))?;
        Ok(Committer { sender })
    }

    /// Applies `change` as of `now_ms`; `Ok` once it is on disk.
    pub(crate) async fn submit(&self, change: Change, now_ms: u64) -> Result<(), Refusal> {
        let (reply, answer) = oneshot::channel();
        let closed = || {
            Refusal::new(
                Reason::ShuttingDown,
                "the gateway is shutting down: retry against it once it is back".to_owned(),
            )
        };
        self.sender
            .send(Message::Change {
                change,
                now_ms,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Commits what is queued, closes the store and stops the thread.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.sender.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

fn run(
    mut store: Store,
    mut disk: Option<Disk>,
    mut receiver: mpsc::Receiver<Message>,
    telemetry: &PushTelemetry,
) {
    let (n_groups, n_series) = store.totals();
    telemetry.set_held(n_groups, n_series);
    let mut batch: Vec<Message> = Vec::with_capacity(MAX_BATCH);
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut doubtful = Doubtful::default();
    while closing.is_none() {
        let Some(first) = receiver.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let mut replies: Vec<(Reply, Result<(), Refusal>)> = Vec::with_capacity(batch.len());
        for message in batch.drain(..) {
            match message {
                Message::Change {
                    change,
                    now_ms,
                    reply,
                } => {
                    let result = store.apply(change, now_ms);
                    replies.push((reply, result));
                }
                // Later messages wait for the next gateway: their senders
                // get "shutting down" when the thread ends.
                Message::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
        }
        if store.has_pending() || !doubtful.is_empty() {
            let started = Instant::now();
            let written = match disk.as_mut() {
                Some(disk) => write(disk, &store, &doubtful),
                None => Ok(()),
            };
            match &written {
                Ok(()) => doubtful = Doubtful::default(),
                Err(_) => doubtful.add(&store.pending()),
            }
            telemetry.commit(started.elapsed(), replies.len(), written.is_ok());
            match written {
                Ok(()) => store.publish(),
                Err(error) => {
                    tracing::error!(%error, requests = replies.len(), "push store write failed; the batch was refused and nothing acknowledged was lost");
                    store.abort();
                    let refusal = Refusal::new(
                        Reason::StoreFailed,
                        format!(
                            "the push could not be written to disk ({error}): nothing was changed; free disk space or check the data directory, then retry"
                        ),
                    );
                    for (_, result) in &mut replies {
                        if result.is_ok() {
                            *result = Err(refusal.clone());
                        }
                    }
                }
            }
            let (n_groups, n_series) = store.totals();
            telemetry.set_held(n_groups, n_series);
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }
    drop(disk);
    drop(receiver);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Rows a failed write may or may not have changed on disk: a commit can
/// fail after it reached the disk, so the file may hold a batch the groups
/// in memory do not. The next write writes those rows again as memory has
/// them (every row, if the batch wiped the store).
#[derive(Debug, Default)]
struct Doubtful {
    keys: BTreeSet<GroupingKey>,
    wiped: bool,
}

impl Doubtful {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.wiped
    }

    fn add(&mut self, failed: &Pending<'_>) {
        self.wiped |= failed.wiped;
        self.keys
            .extend(failed.changes.iter().map(|(key, _)| (*key).clone()));
    }
}

/// Writes the batch of `store`, with the rows in doubt after a failure.
fn write(disk: &mut Disk, store: &Store, doubtful: &Doubtful) -> Result<(), String> {
    let pending = store.pending();
    if doubtful.is_empty() {
        return disk.write(&pending);
    }
    if doubtful.wiped {
        let groups = store.current_groups();
        return disk.write(&Pending {
            wiped: true,
            changes: groups
                .iter()
                .map(|(key, group)| (key, Some(&**group)))
                .collect(),
            finals: pending.finals,
        });
    }
    let again: Vec<(GroupingKey, Option<Arc<Group>>)> = doubtful
        .keys
        .iter()
        .filter(|key| !pending.changes.iter().any(|(changed, _)| changed == key))
        .map(|key| (key.clone(), store.group(key)))
        .collect();
    let mut changes = pending.changes.clone();
    changes.extend(again.iter().map(|(key, group)| (key, group.as_deref())));
    disk.write(&Pending {
        wiped: false,
        changes,
        finals: pending.finals,
    })
}
