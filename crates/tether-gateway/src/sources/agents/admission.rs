//! Who gets in: connections still in their handshake, held apart from the
//! agents and evicted oldest first, and the log of identity collisions.
//!
//! A connection joins [`Handshakes`] as soon as it is accepted and leaves
//! it once its agent is registered or turned away. The pool has its own
//! small cap: when it is full, the connection that has waited longest is
//! closed to make room, so a flood of sockets that never say Hello keeps
//! at most the cap open and never stands between a real agent and its
//! handshake (a real agent sends its Hello within a round trip; a silent
//! socket waits to be evicted or for the handshake deadline).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::registry::Identity;

/// Connections in their handshake, oldest first.
#[derive(Debug)]
pub(crate) struct Handshakes {
    cap: usize,
    /// Short sections (an insert, a removal), never across an await.
    state: Mutex<HandshakeState>,
}

#[derive(Debug, Default)]
struct HandshakeState {
    /// By admission order: the first is the one waiting longest.
    waiting: BTreeMap<u64, CancellationToken>,
    next_id: u64,
    evicted: u64,
}

impl Handshakes {
    /// A pool of at most `cap` connections.
    pub(crate) fn new(cap: usize) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            cap: cap.max(1),
            state: Mutex::new(HandshakeState::default()),
        })
    }

    /// Admits a connection that has just been accepted, evicting the one
    /// that has waited longest when the pool is full. The guard's token is
    /// cancelled if this connection is evicted in turn.
    pub(crate) fn admit(self: &Arc<Self>) -> HandshakeGuard {
        let evicted = CancellationToken::new();
        let mut state = self.state.lock();
        while state.waiting.len() >= self.cap {
            let Some((_, oldest)) = state.waiting.pop_first() else {
                break;
            };
            oldest.cancel();
            state.evicted += 1;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.waiting.insert(id, evicted.clone());
        drop(state);
        HandshakeGuard {
            pool: Arc::clone(self),
            id,
            evicted,
        }
    }

    /// Connections in their handshake now.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().waiting.len()
    }

    /// Connections evicted so far.
    #[cfg(test)]
    pub(crate) fn evicted(&self) -> u64 {
        self.state.lock().evicted
    }
}

/// A connection's place in [`Handshakes`], given up when dropped.
#[derive(Debug)]
pub(crate) struct HandshakeGuard {
    pool: Arc<Handshakes>,
    id: u64,
    evicted: CancellationToken,
}

impl HandshakeGuard {
    /// Cancelled when the connection is evicted to make room.
    pub(crate) fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.pool.state.lock().waiting.remove(&self.id);
    }
}

/// An identity collision is logged at most once per this interval, per
/// identity.
pub(crate) const COLLISION_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Identities whose last log time is remembered; past it, those logged
/// longer ago than the interval are forgotten, and until then further
/// identities are counted but not logged.
const MAX_LOGGED_IDENTITIES: usize = 4096;

/// When each identity's collision was last logged.
#[derive(Debug, Default)]
pub(crate) struct CollisionLog {
    hasher: RandomState,
    /// By a hash of the identity: a rare false match costs one log line.
    last: Mutex<HashMap<u64, Instant>>,
}

impl CollisionLog {
    /// Whether a collision on `identity` should be logged now.
    pub(crate) fn should_log(&self, identity: &Identity, now: Instant) -> bool {
        let key = self.hasher.hash_one(identity);
        let mut last = self.last.lock();
        if let Some(at) = last.get_mut(&key) {
            if now.duration_since(*at) < COLLISION_LOG_INTERVAL {
                return false;
            }
            *at = now;
            return true;
        }
        if last.len() >= MAX_LOGGED_IDENTITIES {
            last.retain(|_, at| now.duration_since(*at) < COLLISION_LOG_INTERVAL);
            if last.len() >= MAX_LOGGED_IDENTITIES {
                return false;
            }
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use tether_model::Label;

    use super::*;

    #[test]
    fn a_full_pool_evicts_the_connection_waiting_longest() {
        let pool = Handshakes::new(2);
        let first = pool.admit();
        let second = pool.admit();
        assert_eq!(pool.len(), 2);
        let third = pool.admit();
        assert!(first.evicted().is_cancelled());
        assert!(!second.evicted().is_cancelled());
        assert!(!third.evicted().is_cancelled());
        assert_eq!((pool.len(), pool.evicted()), (2, 1));
        // The evicted connection's guard leaving takes nobody else's place.
        drop(first);
        assert_eq!(pool.len(), 2);
        drop(second);
        let fourth = pool.admit();
        assert!(!third.evicted().is_cancelled());
        assert!(!fourth.evicted().is_cancelled());
        assert_eq!(pool.evicted(), 1);
    }

    #[test]
    fn a_collision_is_logged_once_per_identity_per_interval() {
        let log = CollisionLog::default();
        let identity = |instance: &str| {
            Identity::new(vec![
                Label::new("job", "j"),
                Label::new("instance", instance),
            ])
        };
        let start = Instant::now();
        assert!(log.should_log(&identity("a"), start));
        assert!(!log.should_log(&identity("a"), start + Duration::from_secs(1)));
        assert!(log.should_log(&identity("b"), start + Duration::from_secs(1)));
        assert!(log.should_log(&identity("a"), start + COLLISION_LOG_INTERVAL));
    }
}
