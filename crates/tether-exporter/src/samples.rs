//! A histogram's bounded buffer of samples for the stream, lock-free and
//! exact in what it drops.
//!
//! The buffer has two halves, used in turn: recorders fill one while the
//! flusher drains the other, so a drain never races with the samples of
//! the interval after it. The claim word holds a generation (which half,
//! by its parity) and a count of claims. Recording claims a slot with one
//! `fetch_add` and, when the slot is within capacity, moves the sample in
//! with one compare-and-swap from the slot's free marker. A claim past
//! capacity is the drop: nothing else happens on that path, and the
//! flusher counts those claims when it drains (drop-newest: a half keeps
//! the oldest samples of its interval).
//!
//! A free marker is a NaN whose payload carries the generation that freed
//! the slot; recording stores every NaN sample as the canonical NaN, which
//! is no marker. The flusher drains a half by starting the next generation
//! and swapping each claimed slot to a marker of that newer generation. A
//! recorder preempted between its claim and its write then finds a marker
//! newer than its own generation, or a newer sample, and drops its sample
//! and counts it. Every sample is thus either streamed or counted as
//! dropped, however long a recorder is held up.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the claim word that count claims; the bits above hold the generation.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Generations wrap at 2^24 and compare as serial numbers: one is newer
/// than another when it is less than 2^23 ahead. A recorder would have to
/// be held up for 2^23 flushes (two days at 20 ms) to be misjudged.
const GENERATION_MASK: u64 = (1 << 24) - 1;

/// A quiet NaN with a flag bit in its payload (so never the canonical NaN),
/// the generation in the payload's low bits.
const MARKER_BASE: u64 = 0x7ff8_0000_0000_0000 | 1 << 50;
const MARKER_MASK: u64 = !GENERATION_MASK;

fn marker(generation: u64) -> u64 {
    MARKER_BASE | (generation & GENERATION_MASK)
}

/// The generation of the marker `bits`, or `None` when `bits` is a sample.
fn marker_generation(bits: u64) -> Option<u64> {
    (bits & MARKER_MASK == MARKER_BASE).then_some(bits & GENERATION_MASK)
}

/// Whether generation `a` is after `b`.
fn is_newer(a: u64, b: u64) -> bool {
    let ahead = a.wrapping_sub(b) & GENERATION_MASK;
    ahead != 0 && ahead < 1 << 23
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct SampleBuffer {
    /// The generation being filled (high bits) and the claims made in it.
    claimed: AtomicU64,
    /// Both halves, one after the other; generation `g` fills half `g % 2`.
    slots: Box<[AtomicU64]>,
    capacity: usize,
}

impl SampleBuffer {
    pub(crate) fn new(capacity: usize) -> SampleBuffer {
        let capacity = capacity.max(1);
        SampleBuffer {
            claimed: AtomicU64::new(0),
            slots: (0..2 * capacity)
                .map(|_| AtomicU64::new(marker(0)))
                .collect(),
            capacity,
        }
    }

    /// Buffers `count` copies of `value`; returns how many were dropped at
    /// once because a drain had passed their slot (drops past capacity are
    /// counted by [`drain`](Self::drain)).
    #[inline]
    pub(crate) fn push(&self, value: f64, count: usize) -> u64 {
        let claim = self.claimed.fetch_add(count as u64, Ordering::Relaxed);
        let first = usize::try_from(claim & COUNT_MASK).unwrap_or(usize::MAX);
        if first >= self.capacity {
            return 0;
        }
        let generation = (claim >> COUNT_BITS) & GENERATION_MASK;
        let half_start = if generation.is_multiple_of(2) {
            0
        } else {
            self.capacity
        };
        let bits = if value.is_nan() {
            f64::NAN.to_bits()
        } else {
            value.to_bits()
        };
        let n_slots = count.min(self.capacity - first);
        let mut dropped = 0;
        for slot in self.slots.iter().skip(half_start + first).take(n_slots) {
            let current = slot.load(Ordering::Relaxed);
            let free = marker_generation(current).is_some_and(|freed| !is_newer(freed, generation));
            if !free
                || slot
                    .compare_exchange(current, bits, Ordering::Release, Ordering::Relaxed)
                    .is_err()
            {
                dropped += 1;
            }
        }
        dropped
    }

    /// Starts the next generation, hands every sample of the previous one
    /// to `sink` in the order claimed, and returns the number of samples
    /// dropped because that half was full. Called by one task only (the
    /// flusher): nothing else changes the generation.
    pub(crate) fn drain(&self, mut sink: impl FnMut(f64)) -> u64 {
        let generation = (self.claimed.load(Ordering::Relaxed) >> COUNT_BITS) & GENERATION_MASK;
        let next = (generation + 1) & GENERATION_MASK;
        let claim = self.claimed.swap(next << COUNT_BITS, Ordering::Acquire);
        let n_claimed = usize::try_from(claim & COUNT_MASK).unwrap_or(usize::MAX);
        let in_capacity = n_claimed.min(self.capacity);
        let half_start = if generation.is_multiple_of(2) {
            0
        } else {
            self.capacity
        };
        let freed = marker(next);
        for slot in self.slots.iter().skip(half_start).take(in_capacity) {
            let bits = slot.swap(freed, Ordering::Acquire);
            // A marker means the recorder has not written yet; it will find
            // the newer marker, drop its sample and count it.
            if marker_generation(bits).is_none() {
                sink(f64::from_bits(bits));
            }
        }
        (n_claimed - in_capacity) as u64
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

    fn drained(buffer: &SampleBuffer) -> (Vec<f64>, u64) {
        let mut samples = Vec::new();
        let dropped = buffer.drain(|sample| samples.push(sample));
        (samples, dropped)
    }

    #[test]
    fn keeps_the_oldest_and_counts_the_rest() {
        let buffer = SampleBuffer::new(3);
        for value in [1.0, 2.0] {
            assert_eq!(buffer.push(value, 1), 0);
        }
        assert_eq!(buffer.push(3.0, 3), 0);
        assert_eq!(drained(&buffer), (vec![1.0, 2.0, 3.0], 2));
        assert_eq!(drained(&buffer), (vec![], 0), "a drain empties it");
        for value in [4.0, 5.0, 6.0, 7.0] {
            buffer.push(value, 1);
        }
        assert_eq!(
            drained(&buffer),
            (vec![4.0, 5.0, 6.0], 1),
            "both halves fill"
        );
        buffer.push(8.0, 1);
        assert_eq!(drained(&buffer), (vec![8.0], 0));
    }

    #[test]
    fn nan_samples_are_kept_as_nan() {
        let buffer = SampleBuffer::new(2);
        buffer.push(f64::from_bits(marker(0)), 1);
        buffer.push(-0.0, 1);
        let (samples, _) = drained(&buffer);
        assert!(samples[0].is_nan());
        assert!(samples[1] == 0.0 && samples[1].is_sign_negative());
    }

    #[test]
    fn a_recorder_held_up_past_a_drain_drops_its_sample_and_counts_it() {
        let buffer = SampleBuffer::new(4);
        buffer.push(1.0, 1);
        // A recorder that claimed slot 1 of generation 0 and has not written.
        let held_up = buffer.claimed.fetch_add(1, Ordering::Relaxed);
        assert_eq!(drained(&buffer), (vec![1.0], 0));
        // Two generations later, the same half is in use again.
        buffer.push(2.0, 1);
        assert_eq!(drained(&buffer), (vec![2.0], 0));
        buffer.push(3.0, 2);
        // The held-up recorder resumes: its slot holds a newer marker or a
        // newer sample, so it drops its sample.
        let slot = &buffer.slots[usize::try_from(held_up & COUNT_MASK).unwrap_or(0)];
        let current = slot.load(Ordering::Relaxed);
        let generation = (held_up >> COUNT_BITS) & GENERATION_MASK;
        assert!(
            marker_generation(current).is_none_or(|freed| is_newer(freed, generation)),
            "a held-up recorder never writes over a later generation"
        );
        assert_eq!(drained(&buffer), (vec![3.0, 3.0], 0));
    }

    #[test]
    fn generations_compare_across_the_wrap() {
        assert!(is_newer(1, 0));
        assert!(!is_newer(0, 1));
        assert!(!is_newer(5, 5));
        assert!(
            is_newer(0, GENERATION_MASK),
            "0 follows the last generation"
        );
        assert!(marker_generation(f64::NAN.to_bits()).is_none());
        assert_eq!(
            marker_generation(marker(GENERATION_MASK)),
            Some(GENERATION_MASK)
        );
        assert!(f64::from_bits(marker(7)).is_nan());
    }

    #[test]
    fn every_sample_from_many_threads_is_streamed_or_counted() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 50_000;
        let buffer = Arc::new(SampleBuffer::new(64));
        let occupied = Arc::new(AtomicU64::new(0));
        let recorders: Vec<_> = (0..THREADS)
            .map(|_| {
                let buffer = Arc::clone(&buffer);
                let occupied = Arc::clone(&occupied);
                thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        let n = buffer.push(i as f64, 1);
                        occupied.fetch_add(n, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut streamed = 0_u64;
        let mut dropped = 0_u64;
        while !recorders.iter().all(thread::JoinHandle::is_finished) {
            dropped += buffer.drain(|_| streamed += 1);
        }
        for recorder in recorders {
            recorder.join().expect("a recording thread");
        }
        // Every write is done: one last drain takes what the last one left.
        dropped += buffer.drain(|_| streamed += 1);
        assert_eq!(buffer.drain(|_| streamed += 1), 0);
        let occupied = occupied.load(Ordering::Relaxed);
        assert_eq!(streamed + dropped + occupied, (THREADS * PER_THREAD) as u64);
    }
}
