//! A stream client's bounded queue of encoded event chunks.
//!
//! The flusher pushes, the client's writer task pops. The queue holds at
//! most `max_events` events and `max_bytes` bytes; when a push would go
//! over, the oldest chunks go first (drop-oldest), each dropped event is
//! counted, and the client is marked for a resync, after which the flusher
//! sends it every current value again so that its totals become exact.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::stream::stats::Stats;

/// Encoded events, written to a socket as one piece.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) bytes: Bytes,
    pub(crate) events: usize,
}

/// A queue's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) max_events: usize,
    pub(crate) max_bytes: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    chunks: VecDeque<Chunk>,
    events: usize,
    bytes: usize,
    /// Events were dropped since the flusher last looked.
    lost_events: bool,
    /// The writer has stopped: the flusher forgets this client.
    writer_gone: bool,
    /// The server is shutting down: the writer sends what is queued and stops.
    closing: bool,
}

/// One client's queue, shared by the flusher and the client's writer task.
#[derive(Debug)]
pub(crate) struct ClientQueue {
    /// A `std` mutex is enough: each section is a few pointer moves, and
    /// no one awaits while holding it.
    state: Mutex<QueueState>,
    /// Wakes the writer when a chunk arrives or the queue is closing.
    pub(crate) ready: Notify,
    limits: QueueLimits,
}

/// What the writer got from [`ClientQueue::pop`].
#[derive(Debug)]
pub(crate) enum Popped {
    Chunk(Chunk),
    /// Nothing queued: wait for [`ClientQueue::ready`].
    Empty,
    /// Nothing queued and the server is shutting down.
    Closed,
}

impl ClientQueue {
    pub(crate) fn new(limits: QueueLimits) -> ClientQueue {
        ClientQueue {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            limits,
        }
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        // Every section leaves the state consistent, so a panic elsewhere
        // while holding the lock does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `chunk`, dropping the oldest chunks to make room, and wakes
    /// the writer. A chunk larger than the limits by itself is dropped.
    pub(crate) fn push(&self, chunk: Chunk, stats: &Stats) {
        let mut dropped = 0;
        {
            let mut state = self.state();
            if state.writer_gone {
                return;
            }
            if chunk.events > self.limits.max_events || chunk.bytes.len() > self.limits.max_bytes {
                dropped += chunk.events;
            } else {
                while state.events + chunk.events > self.limits.max_events
                    || state.bytes + chunk.bytes.len() > self.limits.max_bytes
                {
                    let Some(oldest) = state.chunks.pop_front() else {
                        break;
                    };
                    state.events -= oldest.events;
                    state.bytes -= oldest.bytes.len();
                    dropped += oldest.events;
                }
                state.events += chunk.events;
                state.bytes += chunk.bytes.len();
                state.chunks.push_back(chunk);
            }
            if dropped > 0 {
                state.lost_events = true;
            }
        }
        if dropped > 0 {
            stats
                .events_dropped_client_queue
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        self.ready.notify_one();
    }

    /// Takes the oldest chunk.
    pub(crate) fn pop(&self) -> Popped {
        let mut state = self.state();
        match state.chunks.pop_front() {
            Some(chunk) => {
                state.events -= chunk.events;
                state.bytes -= chunk.bytes.len();
                Popped::Chunk(chunk)
            }
            None if state.closing => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// Room left below half the limits, in events and bytes: how much of
    /// a snapshot the flusher queues at once, leaving the other half for
    /// updates so that a snapshot does not push out what came before it.
    pub(crate) fn snapshot_room(&self) -> (usize, usize) {
        let state = self.state();
        (
            (self.limits.max_events / 2).saturating_sub(state.events),
            (self.limits.max_bytes / 2).saturating_sub(state.bytes),
        )
    }

    /// Whether events were dropped since the last call.
    pub(crate) fn take_lost_events(&self) -> bool {
        std::mem::take(&mut self.state().lost_events)
    }

    /// Called by the writer as it stops, for whatever reason.
    pub(crate) fn writer_gone(&self) {
        let mut state = self.state();
        state.writer_gone = true;
        state.chunks.clear();
        state.events = 0;
        state.bytes = 0;
    }

    pub(crate) fn is_writer_gone(&self) -> bool {
        self.state().writer_gone
    }

    /// Tells the writer to stop once the queue is empty.
    pub(crate) fn close(&self) {
        self.state().closing = true;
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(events: usize, bytes: usize) -> Chunk {
        Chunk {
            bytes: Bytes::from(vec![u8::try_from(events).unwrap_or(0); bytes]),
            events,
        }
    }

    fn events_of(popped: Popped) -> Option<usize> {
        match popped {
            Popped::Chunk(chunk) => Some(chunk.events),
            Popped::Empty | Popped::Closed => None,
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_every_event() {
        let stats = Stats::default();
        let queue = ClientQueue::new(QueueLimits {
            max_events: 10,
            max_bytes: 1000,
        });
        queue.push(chunk(4, 10), &stats);
        queue.push(chunk(5, 10), &stats);
        assert!(!queue.take_lost_events());
        queue.push(chunk(3, 10), &stats);
        assert_eq!(stats.events_dropped_client_queue.load(Ordering::Relaxed), 4);
        assert!(queue.take_lost_events());
        assert!(!queue.take_lost_events(), "the flag resets once read");
        assert_eq!(events_of(queue.pop()), Some(5));
        assert_eq!(events_of(queue.pop()), Some(3));
        assert_eq!(events_of(queue.pop()), None);
    }

    #[test]
    fn the_byte_limit_counts_too_and_an_oversized_chunk_is_dropped() {
        let stats = Stats::default();
        let queue = ClientQueue::new(QueueLimits {
            max_events: 100,
            max_bytes: 25,
        });
        queue.push(chunk(1, 10), &stats);
        queue.push(chunk(2, 10), &stats);
        queue.push(chunk(3, 10), &stats);
        assert_eq!(stats.events_dropped_client_queue.load(Ordering::Relaxed), 1);
        queue.push(chunk(7, 26), &stats);
        assert_eq!(stats.events_dropped_client_queue.load(Ordering::Relaxed), 8);
        assert_eq!(queue.snapshot_room(), (50 - 5, 0));
    }

    #[test]
    fn a_closing_queue_drains_then_reports_closed_and_a_gone_writer_takes_nothing() {
        let stats = Stats::default();
        let queue = ClientQueue::new(QueueLimits {
            max_events: 10,
            max_bytes: 100,
        });
        queue.push(chunk(1, 1), &stats);
        queue.close();
        assert_eq!(events_of(queue.pop()), Some(1));
        assert!(matches!(queue.pop(), Popped::Closed));
        queue.writer_gone();
        queue.push(chunk(1, 1), &stats);
        assert!(queue.is_writer_gone());
        assert!(matches!(queue.pop(), Popped::Closed));
    }
}
