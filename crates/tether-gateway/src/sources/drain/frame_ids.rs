//! The `Logplex-Frame-Id`s of batches already applied, so that a batch
//! logplex sends again (it retries with the same id) is answered 2xx and
//! not counted twice. Bounded: ids expire after [`FRAME_ID_TTL_MS`], and
//! past [`MAX_FRAME_IDS`] the oldest is forgotten first.

use std::collections::{HashSet, VecDeque};

/// How long a batch's id is remembered: logplex retries within seconds.
pub(crate) const FRAME_ID_TTL_MS: u64 = 10 * 60 * 1000;
/// Most ids remembered per drain.
pub(crate) const MAX_FRAME_IDS: usize = 100_000;
/// Longest id remembered; a longer one is not an id logplex sends, and its
/// batch is applied without deduplication.
pub(crate) const MAX_FRAME_ID_BYTES: usize = 128;

/// The ids seen, in order of arrival.
#[derive(Debug, Default)]
pub(crate) struct FrameIds {
    seen: HashSet<Box<str>>,
    order: VecDeque<(u64, Box<str>)>,
}

impl FrameIds {
    /// Whether `id` was seen in the last [`FRAME_ID_TTL_MS`].
    pub(crate) fn contains(&mut self, id: &str, now_ms: u64) -> bool {
        self.forget_expired(now_ms);
        self.seen.contains(id)
    }

    /// Remembers `id`; false if it was already remembered.
    pub(crate) fn insert(&mut self, id: &str, now_ms: u64) -> bool {
        self.forget_expired(now_ms);
        if id.len() > MAX_FRAME_ID_BYTES || self.seen.contains(id) {
            return id.len() > MAX_FRAME_ID_BYTES;
        }
        if self.order.len() >= MAX_FRAME_IDS
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        let id: Box<str> = id.into();
        self.seen.insert(id.clone());
        self.order.push_back((now_ms, id));
        true
    }

    /// How many ids are remembered.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) < FRAME_ID_TTL_MS {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_remembered_until_it_expires() {
        let mut ids = FrameIds::default();
        assert!(!ids.contains("a", 0));
        assert!(ids.insert("a", 0));
        assert!(ids.contains("a", FRAME_ID_TTL_MS - 1));
        assert!(!ids.insert("a", 1), "a second time is a duplicate");
        assert!(!ids.contains("a", FRAME_ID_TTL_MS));
        assert_eq!(ids.len(), 0);
        assert!(ids.insert("a", FRAME_ID_TTL_MS));
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut ids = FrameIds::default();
        for i in 0..=MAX_FRAME_IDS {
            ids.insert(&i.to_string(), 0);
        }
        assert_eq!(ids.len(), MAX_FRAME_IDS);
        assert!(!ids.contains("0", 0), "the oldest was forgotten");
        assert!(ids.contains("1", 0));
        let long = "x".repeat(MAX_FRAME_ID_BYTES + 1);
        assert!(ids.insert(&long, 0), "applied, never remembered");
        assert!(ids.insert(&long, 0));
        assert_eq!(ids.len(), MAX_FRAME_IDS);
    }
}
