//! The storage behind each metric handle: the atomics the recording path updates.
//!
//! Recording touches only these cells: a counter increment is one
//! `fetch_add`, a gauge set one `store`, a histogram sample one bucket
//! `fetch_add` and one compare-and-swap on the sum. Nothing here blocks,
//! allocates or knows about sockets. The stream's flusher reads the same
//! cells on its own schedule; the only thing it asks of the recording path
//! is that histogram samples also go into a bounded lock-free buffer while
//! a stream client is attached.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{CounterFn, GaugeFn, HistogramFn, Key};
use tether_model::{Bucket, Histogram, Label};

use crate::samples::SampleBuffer;

/// What the recording path needs to know about the stream: whether anyone
/// is listening, and where to count the samples it had to drop.
#[derive(Debug)]
pub(crate) struct StreamGate {
    /// True while at least one stream client is attached; only then do
    /// histogram samples go to the sample buffers. Written by the flusher,
    /// read with `Relaxed` on every sample: a sample recorded just as the
    /// first client attaches may miss the stream, never the buckets.
    pub(crate) active: AtomicBool,
    /// Samples each histogram's buffer holds between two flushes.
    pub(crate) samples_capacity: usize,
    /// Samples dropped because a histogram's buffer was full (counted when
    /// the flusher drains it), or not yet allocated when the first client
    /// attached.
    pub(crate) samples_dropped: AtomicU64,
}

impl StreamGate {
    pub(crate) fn new(samples_capacity: usize) -> StreamGate {
        StreamGate {
            active: AtomicBool::new(false),
            samples_capacity: samples_capacity.max(1),
            samples_dropped: AtomicU64::new(0),
        }
    }
}

/// The identity of one series, fixed at registration.
#[derive(Debug)]
pub(crate) struct SeriesInfo {
    /// The key as the application gave it: the event stream carries it as is.
    pub(crate) key: Key,
    /// The exposition's labels: sanitized, sorted by name, unique.
    pub(crate) labels: Box<[Label]>,
}

/// A counter: a `u64` total.
#[derive(Debug)]
pub(crate) struct CounterCell {
    value: AtomicU64,
    pub(crate) info: SeriesInfo,
}

impl CounterCell {
    pub(crate) fn new(info: SeriesInfo) -> CounterCell {
        CounterCell {
            value: AtomicU64::new(0),
            info,
        }
    }

    /// The current total.
    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl CounterFn for CounterCell {
    #[inline]
    fn increment(&self, value: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
    }

    /// Raises the total to `value`; a lower value is ignored, since a
    /// counter never goes down (the semantics of `metrics-util`'s
    /// `AtomicStorage` and of `metrics-exporter-prometheus`).
    #[inline]
    fn absolute(&self, value: u64) {
        self.value.fetch_max(value, Ordering::Relaxed);
    }
}

/// A gauge: an `f64` stored as its bits.
#[derive(Debug)]
pub(crate) struct GaugeCell {
    bits: AtomicU64,
    pub(crate) info: SeriesInfo,
}

impl GaugeCell {
    pub(crate) fn new(info: SeriesInfo) -> GaugeCell {
        GaugeCell {
            bits: AtomicU64::new(0.0_f64.to_bits()),
            info,
        }
    }

    /// The current value's bits (compared as bits: a NaN equals itself).
    pub(crate) fn get_bits(&self) -> u64 {
        self.bits.load(Ordering::Relaxed)
    }
}

impl GaugeFn for GaugeCell {
    #[inline]
    fn increment(&self, value: f64) {
        add_f64(&self.bits, value);
    }

    #[inline]
    fn decrement(&self, value: f64) {
        add_f64(&self.bits, -value);
    }

    #[inline]
    fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// A histogram: atomic counts per bucket, the sum, and the stream's sample buffer.
#[derive(Debug)]
pub(crate) struct HistogramCell {
    /// Upper bounds, finite and increasing; `+Inf` is implied.
    bounds: Arc<[f64]>,
    /// One count per bound plus one for `+Inf`; not cumulative, so a sample
    /// touches one of them. The total count is their sum.
    counts: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
    /// Samples waiting for the flusher; allocated when streaming first
    /// starts, so a process without stream clients never pays for it.
    samples: OnceLock<SampleBuffer>,
    gate: Arc<StreamGate>,
    pub(crate) info: SeriesInfo,
}

impl HistogramCell {
    pub(crate) fn new(
        info: SeriesInfo,
        bounds: Arc<[f64]>,
        gate: Arc<StreamGate>,
    ) -> HistogramCell {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        let cell = HistogramCell {
            bounds,
            counts,
            sum_bits: AtomicU64::new(0.0_f64.to_bits()),
            samples: OnceLock::new(),
            gate,
            info,
        };
        if cell.gate.active.load(Ordering::Relaxed) {
            cell.ensure_sample_buffer();
        }
        cell
    }

    /// The bucket a sample falls in: the first bound at or above it (`le`),
    /// or `+Inf` for anything above every bound and for NaN, as in the Go
    /// client. Short lists (the usual case) are counted without branches,
    /// which beats a binary search's mispredictions.
    #[inline]
    fn bucket_index(&self, value: f64) -> usize {
        if value.is_nan() {
            return self.bounds.len();
        }
        if self.bounds.len() <= 32 {
            return self
                .bounds
                .iter()
                .fold(0, |below, bound| below + usize::from(*bound < value));
        }
        self.bounds.partition_point(|bound| *bound < value)
    }

    /// Allocates the sample buffer if it is not there yet.
    pub(crate) fn ensure_sample_buffer(&self) {
        self.samples
            .get_or_init(|| SampleBuffer::new(self.gate.samples_capacity));
    }

    /// Hands every buffered sample to `sink`, oldest first, and counts the
    /// samples dropped since the last drain.
    pub(crate) fn drain_samples(&self, sink: impl FnMut(f64)) {
        if let Some(samples) = self.samples.get() {
            let dropped = samples.drain(sink);
            if dropped > 0 {
                self.gate
                    .samples_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        }
    }

    #[inline]
    fn push_samples(&self, value: f64, count: usize) {
        let dropped = match self.samples.get() {
            Some(samples) => samples.push(value, count),
            None => count as u64,
        };
        if dropped > 0 {
            self.gate
                .samples_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// The histogram's current value, with cumulative buckets.
    ///
    /// Buckets and sum are read one after the other, not as one atomic
    /// snapshot: a sample recorded meanwhile may be in the counts and not
    /// yet in the sum, as with most Prometheus client libraries.
    pub(crate) fn snapshot(&self) -> Histogram {
        let mut histogram = Histogram {
            buckets: Vec::with_capacity(self.counts.len()),
            count: None,
            sum: None,
            created: None,
        };
        self.fill(&mut histogram);
        histogram
    }

    /// Writes the current value over `target`, reusing its bucket list.
    pub(crate) fn fill(&self, target: &mut Histogram) {
        target.buckets.clear();
        let mut cumulative = 0_u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            target.buckets.push(Bucket {
                upper_bound: self.bounds.get(i).copied().unwrap_or(f64::INFINITY),
                count: cumulative as f64,
                exemplar: None,
            });
        }
        target.count = Some(cumulative as f64);
        target.sum = Some(f64::from_bits(self.sum_bits.load(Ordering::Relaxed)));
        target.created = None;
    }
}

impl HistogramFn for HistogramCell {
    #[inline]
    fn record(&self, value: f64) {
        let index = self.bucket_index(value);
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        add_f64(&self.sum_bits, value);
        if self.gate.active.load(Ordering::Relaxed) {
            self.push_samples(value, 1);
        }
    }

    fn record_many(&self, value: f64, count: usize) {
        let index = self.bucket_index(value);
        if let Some(bucket) = self.counts.get(index) {
            bucket.fetch_add(count as u64, Ordering::Relaxed);
        }
        add_f64(&self.sum_bits, value * count as f64);
        if self.gate.active.load(Ordering::Relaxed) {
            self.push_samples(value, count);
        }
    }
}

/// Adds `delta` to the `f64` whose bits `cell` holds.
#[inline]
fn add_f64(cell: &AtomicU64, delta: f64) {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let new = (f64::from_bits(current) + delta).to_bits();
        match cell.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SeriesInfo {
        SeriesInfo {
            key: Key::from_name("h"),
            labels: Box::new([]),
        }
    }

    #[test]
    fn samples_fall_in_the_first_bucket_at_or_above_them() {
        let gate = Arc::new(StreamGate::new(4));
        let cell = HistogramCell::new(info(), Arc::from([1.0, 2.0, 5.0]), gate);
        for sample in [0.5, 1.0, 1.5, 2.0, 4.0, 9.0, f64::NAN] {
            cell.record(sample);
        }
        let snapshot = cell.snapshot();
        let counts: Vec<(f64, f64)> = snapshot
            .buckets
            .iter()
            .map(|b| (b.upper_bound, b.count))
            .collect();
        assert_eq!(
            counts,
            [(1.0, 2.0), (2.0, 4.0), (5.0, 5.0), (f64::INFINITY, 7.0)]
        );
        assert_eq!(snapshot.count, Some(7.0));
        assert!(snapshot.sum.is_some_and(f64::is_nan));
    }

    #[test]
    fn record_many_counts_every_sample() {
        let gate = Arc::new(StreamGate::new(4));
        let cell = HistogramCell::new(info(), Arc::from([1.0]), gate);
        cell.record_many(0.5, 3);
        let snapshot = cell.snapshot();
        assert_eq!(snapshot.count, Some(3.0));
        assert_eq!(snapshot.sum, Some(1.5));
    }

    #[test]
    fn the_sample_buffer_drops_the_newest_and_counts_it() {
        let gate = Arc::new(StreamGate::new(2));
        gate.active.store(true, Ordering::Relaxed);
        let cell = HistogramCell::new(info(), Arc::from([1.0]), Arc::clone(&gate));
        for sample in [1.0, 2.0, 3.0, 4.0] {
            cell.record(sample);
        }
        cell.record_many(5.0, 2);
        let mut drained = Vec::new();
        cell.drain_samples(|s| drained.push(s));
        assert_eq!(drained, [1.0, 2.0]);
        assert_eq!(gate.samples_dropped.load(Ordering::Relaxed), 4);
        // Every sample still counts in the buckets.
        assert_eq!(cell.snapshot().count, Some(6.0));
    }

    #[test]
    fn no_samples_are_buffered_while_no_client_is_attached() {
        let gate = Arc::new(StreamGate::new(8));
        let cell = HistogramCell::new(info(), Arc::from([1.0]), Arc::clone(&gate));
        cell.ensure_sample_buffer();
        cell.record(1.0);
        let mut n_drained = 0;
        cell.drain_samples(|_| n_drained += 1);
        assert_eq!(n_drained, 0);
        assert_eq!(gate.samples_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn counters_never_go_down_and_gauges_add_up() {
        let counter = CounterCell::new(info());
        counter.increment(5);
        counter.absolute(3);
        assert_eq!(counter.get(), 5);
        counter.absolute(9);
        assert_eq!(counter.get(), 9);

        let gauge = GaugeCell::new(info());
        gauge.increment(2.5);
        gauge.decrement(1.0);
        assert_eq!(f64::from_bits(gauge.get_bits()), 1.5);
        gauge.set(-4.0);
        assert_eq!(f64::from_bits(gauge.get_bits()), -4.0);
    }
}
