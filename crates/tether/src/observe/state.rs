//! The observer's model of one event stream: the events folded by
//! [`StreamFold`], and what only the observer keeps on top of the fold
//! (counter rates, gauge history, histogram sample windows, the distinct
//! series refused, events/s), in parallel to the fold's series indices,
//! and the name filter.
//!
//! Nothing here knows about sockets, terminals or wall time: events come in
//! through [`Store::apply`] and time through [`Store::tick`], so tests drive
//! both. The fold's policies (a type change is dropped and counted, a
//! reconnect keeps what was folded) are the gateway's too. Every
//! collection is bounded: at most `max_series` series and as many metadata
//! entries (and the fold's byte cap), a fixed number of points of history
//! per series, and a fixed window of samples per histogram.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tether_proto::{
    Applied, Change, DropReason, Event, FoldLimits, FoldedSeries, FoldedValue, Metadata, SeriesKey,
    SeriesKind, StreamFold,
};

/// The most series tracked at once. An event for a series beyond it is
/// dropped, and the series counted in [`Dropped::series`]; the series
/// already tracked go on updating.
pub(crate) const DEFAULT_MAX_SERIES: usize = 10_000;

/// The samples kept per histogram: p50, p99 and max are those of the most
/// recent samples, at most this many (a sliding window, oldest out first).
/// Count and sum cover every sample folded. With the default series cap,
/// the windows hold at most 80 MiB.
pub(crate) const DEFAULT_HISTOGRAM_WINDOW_SAMPLES: usize = 1024;

/// Points of gauge history shown as a sparkline: one per tick.
pub(crate) const SPARKLINE_POINTS: usize = 30;

/// Ticks a rate is computed over: a counter's rate is its increase over
/// the last this-many ticks, divided by the time they span.
pub(crate) const RATE_WINDOW_TICKS: usize = 5;

/// Distinct dropped series remembered (as 64-bit hashes) to count them;
/// past it the count is a lower bound, shown with a `+`.
pub(crate) const MAX_DROPPED_SERIES_TRACKED: usize = 65_536;

/// The bounds of one [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// See [`DEFAULT_MAX_SERIES`]; also bounds the metadata entries.
    pub(crate) max_series: usize,
    /// See [`DEFAULT_HISTOGRAM_WINDOW_SAMPLES`].
    pub(crate) histogram_window_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: DEFAULT_MAX_SERIES,
            histogram_window_samples: DEFAULT_HISTOGRAM_WINDOW_SAMPLES,
        }
    }
}

impl Limits {
    /// The fold's bounds: the observer's series cap for series and
    /// metadata alike, and the fold's own byte cap.
    fn fold_limits(self) -> FoldLimits {
        FoldLimits {
            max_series: self.max_series,
            max_metadata: self.max_series,
            max_bytes: FoldLimits::DEFAULT_MAX_BYTES,
        }
    }
}

/// What one series shows, borrowed from the fold and the observer's
/// extras.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Series<'a> {
    Counter(CounterSeries),
    Gauge(GaugeSeries<'a>),
    Histogram(HistogramSeries<'a>),
}

impl Series<'_> {
    pub(crate) fn kind(&self) -> SeriesKind {
        match self {
            Series::Counter(_) => SeriesKind::Counter,
            Series::Gauge(_) => SeriesKind::Gauge,
            Series::Histogram(_) => SeriesKind::Histogram,
        }
    }
}

/// A monotonic total and its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CounterSeries {
    pub(crate) total: u64,
    rate: Option<f64>,
}

impl CounterSeries {
    /// Increase per second over the last ticks; `None` until two ticks saw it.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.rate
    }
}

/// A current value and its recent history, one point per tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GaugeSeries<'a> {
    pub(crate) value: f64,
    /// Oldest first, at most [`SPARKLINE_POINTS`].
    history: &'a VecDeque<f64>,
}

impl<'a> GaugeSeries<'a> {
    /// The value at each of the last ticks, oldest first.
    pub(crate) fn history(&self) -> &'a VecDeque<f64> {
        self.history
    }
}

/// Every sample counted and summed; the most recent ones kept for quantiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HistogramSeries<'a> {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    /// The most recent samples, oldest first, at most the window size.
    window: &'a VecDeque<f64>,
}

/// What a histogram shows: count and sum of all samples, quantiles and
/// maximum of the window. The quantiles are `None` only without samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HistogramSummary {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) max: Option<f64>,
}

impl HistogramSeries<'_> {
    /// Count and sum, and p50, p99 and max of the window (nearest rank:
    /// the smallest sample with at least that share of the window at or
    /// below it).
    pub(crate) fn summary(&self) -> HistogramSummary {
        let mut sorted: Vec<f64> = self.window.iter().copied().collect();
        sorted.sort_unstable_by(f64::total_cmp);
        HistogramSummary {
            count: self.count,
            sum: self.sum,
            p50: quantile(&sorted, 0.5),
            p99: quantile(&sorted, 0.99),
            max: sorted.last().copied(),
        }
    }
}

/// The nearest-rank quantile `q` (0 < q <= 1) of sorted samples.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // The rank is at least 1 and, for q <= 1, at most the length; `min`
    // and `get` keep any other q within bounds.
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// One series as the screen and the snapshot show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Entry<'a> {
    pub(crate) key: &'a SeriesKey,
    pub(crate) series: Series<'a>,
    /// Its name's metadata, when the type matches the series' kind.
    pub(crate) metadata: Option<&'a Metadata>,
}

/// What the observer keeps of one series beyond the fold. Only the parts
/// of the series' kind fill up; the others stay empty and unallocated.
#[derive(Debug, Clone, Default)]
struct Extras {
    /// A counter's `(tick time, total)`, oldest first, at most
    /// `RATE_WINDOW_TICKS + 1`.
    samples: VecDeque<(Instant, u64)>,
    rate: Option<f64>,
    /// A gauge's value at each tick, oldest first, at most
    /// [`SPARKLINE_POINTS`].
    history: VecDeque<f64>,
    /// A histogram's most recent samples, oldest first.
    window: VecDeque<f64>,
}

impl Extras {
    fn tick(&mut self, now: Instant, value: &FoldedValue) {
        match value {
            FoldedValue::Counter(total) => {
                // A total that went down was reset (a restarted process, an
                // absolute `set_counter`): the rate starts over from here.
                if self.samples.back().is_some_and(|&(_, last)| *total < last) {
                    self.samples.clear();
                }
                self.samples.push_back((now, *total));
                while self.samples.len() > RATE_WINDOW_TICKS + 1 {
                    self.samples.pop_front();
                }
                self.rate = rate(&self.samples);
            }
            FoldedValue::Gauge(value) => {
                if self.history.len() == SPARKLINE_POINTS {
                    self.history.pop_front();
                }
                self.history.push_back(*value);
            }
            FoldedValue::Histogram(_) => {}
        }
    }

    fn record(&mut self, sample: f64, window_samples: usize) {
        while self.window.len() >= window_samples {
            self.window.pop_front();
        }
        self.window.push_back(sample);
    }
}

/// The increase per second from the first to the last sample.
fn rate(samples: &VecDeque<(Instant, u64)>) -> Option<f64> {
    let (&(first_at, first), &(last_at, last)) = (samples.front()?, samples.back()?);
    let seconds = last_at.checked_duration_since(first_at)?.as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    // Precision beyond 2^53 does not matter for a rate on a screen.
    let delta = last.saturating_sub(first) as f64;
    Some(delta / seconds)
}

/// What was refused at the limits since the observer started: a reconnect
/// keeps what was folded, and so what was refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Dropped {
    /// Hashes of the distinct series refused by the series or byte cap.
    series_hashes: HashSet<u64>,
    /// More distinct series were refused than `series_hashes` holds.
    pub(crate) series_saturated: bool,
    /// Events for refused series.
    pub(crate) events: u64,
    /// Metadata refused by the cap (of new names) or the byte cap.
    pub(crate) metadata: u64,
}

impl Dropped {
    /// Distinct series refused; a lower bound when `series_saturated`.
    pub(crate) fn series(&self) -> usize {
        self.series_hashes.len()
    }

    fn refuse(&mut self, hash: u64) {
        self.events = self.events.saturating_add(1);
        if self.series_hashes.len() < MAX_DROPPED_SERIES_TRACKED {
            self.series_hashes.insert(hash);
        } else if !self.series_hashes.contains(&hash) {
            self.series_saturated = true;
        }
    }
}

/// Everything known about the stream, over every connection.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    limits: Limits,
    fold: StreamFold,
    /// `extras[i]` belongs to the fold's series `i`.
    extras: Vec<Extras>,
    /// Every series' index, by name then labels; the keys share the fold's
    /// text.
    order: BTreeMap<Arc<SeriesKey>, usize>,
    dropped: Dropped,
    /// Whether a connection opened before: the next one is a reconnect.
    connected_before: bool,
    /// Events received, those dropped or skipped included.
    n_events: u64,
    /// Events of a kind or operation this schema does not know.
    n_skipped: u64,
    /// `(tick time, n_events)`, as a counter's samples.
    event_samples: VecDeque<(Instant, u64)>,
    events_per_second: Option<f64>,
}

impl Store {
    pub(crate) fn new(limits: Limits) -> Store {
        Store {
            limits,
            fold: StreamFold::new(limits.fold_limits()),
            extras: Vec::new(),
            order: BTreeMap::new(),
            dropped: Dropped::default(),
            connected_before: false,
            n_events: 0,
            n_skipped: 0,
            event_samples: VecDeque::new(),
            events_per_second: None,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Tells the fold about a new connection (from the second one on):
    /// everything is kept, and what the server replays is folded on top
    /// (see [`StreamFold::reconnected`]).
    pub(crate) fn connected(&mut self) {
        if self.connected_before {
            self.fold.reconnected();
        }
        self.connected_before = true;
    }

    /// Folds one event in, and keeps the observer's extras of what it
    /// changed.
    pub(crate) fn apply(&mut self, event: Event) {
        self.n_events = self.n_events.saturating_add(1);
        let Some(kind) = event.kind else {
            self.n_skipped = self.n_skipped.saturating_add(1);
            return;
        };
        match self.fold.apply(kind) {
            Applied::Series {
                index,
                created,
                change,
            } => {
                if created {
                    self.track(index);
                }
                if let (Change::Histogram { sample }, Some(extras)) =
                    (change, self.extras.get_mut(index))
                {
                    extras.record(sample, self.limits.histogram_window_samples.max(1));
                }
            }
            Applied::Metadata { .. } => {}
            Applied::Dropped { reason, series } => match (reason, series) {
                (DropReason::SeriesCap | DropReason::BytesCap, Some(hash)) => {
                    self.dropped.refuse(hash);
                }
                (DropReason::MetadataCap | DropReason::BytesCap, _) => {
                    self.dropped.metadata = self.dropped.metadata.saturating_add(1);
                }
                (DropReason::UnknownOperation, _) => {
                    self.n_skipped = self.n_skipped.saturating_add(1);
                }
                // A type change is counted by the fold (see
                // `type_changes`); a refused series always has its hash.
                (DropReason::TypeChange | DropReason::SeriesCap, _) => {}
            },
        }
    }

    /// Starts the extras of the fold's new series `index`, the next one:
    /// the fold numbers series in creation order and every event comes
    /// through [`Store::apply`].
    fn track(&mut self, index: usize) {
        if let Some(series) = self.fold.series().get(index) {
            self.extras.push(Extras::default());
            self.order.insert(series.shared_key(), index);
        }
    }

    /// Advances time: samples every counter for its rate and every gauge
    /// for its sparkline, and the event count for events/s. Call it at a
    /// steady interval.
    pub(crate) fn tick(&mut self, now: Instant) {
        for (series, extras) in self.fold.series().iter().zip(&mut self.extras) {
            extras.tick(now, series.value());
        }
        self.event_samples.push_back((now, self.n_events));
        while self.event_samples.len() > RATE_WINDOW_TICKS + 1 {
            self.event_samples.pop_front();
        }
        self.events_per_second = rate(&self.event_samples);
    }

    /// Every series, by name then labels.
    pub(crate) fn series(&self) -> impl Iterator<Item = Entry<'_>> {
        self.matching("")
    }

    /// The series whose name contains `filter`, ignoring ASCII case; all of
    /// them for an empty filter.
    pub(crate) fn matching<'a>(&'a self, filter: &'a str) -> impl Iterator<Item = Entry<'a>> + 'a {
        self.order
            .iter()
            .filter(move |(key, _)| name_matches(key.name(), filter))
            .filter_map(|(_, &index)| self.entry(index))
    }

    /// Series `index` as it is shown.
    fn entry(&self, index: usize) -> Option<Entry<'_>> {
        let folded: &FoldedSeries = self.fold.series().get(index)?;
        let extras = self.extras.get(index)?;
        let series = match folded.value() {
            FoldedValue::Counter(total) => Series::Counter(CounterSeries {
                total: *total,
                rate: extras.rate,
            }),
            FoldedValue::Gauge(value) => Series::Gauge(GaugeSeries {
                value: *value,
                history: &extras.history,
            }),
            FoldedValue::Histogram(histogram) => Series::Histogram(HistogramSeries {
                count: histogram.count(),
                sum: histogram.sum(),
                window: &extras.window,
            }),
        };
        Some(Entry {
            key: folded.key(),
            series,
            metadata: self.fold.series_metadata(index),
        })
    }

    #[cfg(test)]
    pub(crate) fn get(&self, key: &SeriesKey) -> Option<Entry<'_>> {
        self.entry(self.fold.index_of(key)?)
    }

    #[cfg(test)]
    pub(crate) fn metadata(&self, name: &str) -> Option<&Metadata> {
        self.fold.metadata(name)
    }

    pub(crate) fn n_series(&self) -> usize {
        self.fold.series().len()
    }

    #[cfg(test)]
    pub(crate) fn n_events(&self) -> u64 {
        self.n_events
    }

    pub(crate) fn n_skipped(&self) -> u64 {
        self.n_skipped
    }

    pub(crate) fn dropped(&self) -> &Dropped {
        &self.dropped
    }

    /// Operations dropped because their kind differed from their series'.
    pub(crate) fn type_changes(&self) -> u64 {
        self.fold.dropped().type_change
    }

    /// Events per second over the last ticks; `None` before two ticks.
    pub(crate) fn events_per_second(&self) -> Option<f64> {
        self.events_per_second
    }
}

/// Whether `name` contains `filter`, ignoring ASCII case, without allocating.
pub(crate) fn name_matches(name: &str, filter: &str) -> bool {
    let (name, filter) = (name.as_bytes(), filter.as_bytes());
    filter.is_empty()
        || name
            .windows(filter.len())
            .any(|window| window.eq_ignore_ascii_case(filter))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tether_proto::{EventMetric, EventMetricType, Operation};

    use super::*;
    use crate::observe::test_events::{metadata, metric};

    fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(
            name,
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    fn store_with(events: impl IntoIterator<Item = Event>) -> Store {
        let mut store = Store::new(Limits::default());
        for event in events {
            store.apply(event);
        }
        store
    }

    fn counter(store: &Store, key: &SeriesKey) -> CounterSeries {
        match store.get(key).map(|entry| entry.series) {
            Some(Series::Counter(counter)) => counter,
            other => panic!("{key:?} is not a counter: {other:?}"),
        }
    }

    fn gauge<'a>(store: &'a Store, key: &SeriesKey) -> GaugeSeries<'a> {
        match store.get(key).map(|entry| entry.series) {
            Some(Series::Gauge(gauge)) => gauge,
            other => panic!("{key:?} is not a gauge: {other:?}"),
        }
    }

    fn histogram<'a>(store: &'a Store, key: &SeriesKey) -> HistogramSeries<'a> {
        match store.get(key).map(|entry| entry.series) {
            Some(Series::Histogram(histogram)) => histogram,
            other => panic!("{key:?} is not a histogram: {other:?}"),
        }
    }

    #[test]
    fn each_operation_folds_into_its_series() {
        // (operations on one series, the kind and value they leave)
        let cases: [(&[Operation], SeriesKind, f64); 7] = [
            (&[Operation::IncrementCounter(3)], SeriesKind::Counter, 3.0),
            (
                &[
                    Operation::IncrementCounter(3),
                    Operation::IncrementCounter(4),
                ],
                SeriesKind::Counter,
                7.0,
            ),
            (&[Operation::SetCounter(42)], SeriesKind::Counter, 42.0),
            (&[Operation::IncrementGauge(1.5)], SeriesKind::Gauge, 1.5),
            (
                &[Operation::SetGauge(10.0), Operation::DecrementGauge(2.5)],
                SeriesKind::Gauge,
                7.5,
            ),
            (&[Operation::SetGauge(-3.0)], SeriesKind::Gauge, -3.0),
            (
                &[
                    Operation::RecordHistogram(1.0),
                    Operation::RecordHistogram(2.5),
                ],
                SeriesKind::Histogram,
                3.5,
            ),
        ];
        for (operations, kind, value) in cases {
            let store = store_with(operations.iter().map(|&op| metric("m", &[], op)));
            let series = store.get(&key("m", &[])).expect("the series").series;
            assert_eq!(series.kind(), kind, "{operations:?}");
            let got = match series {
                Series::Counter(counter) => counter.total as f64,
                Series::Gauge(gauge) => gauge.value,
                Series::Histogram(histogram) => histogram.sum,
            };
            assert_eq!(got, value, "{operations:?}");
        }
    }

    #[test]
    fn set_counter_replaces_the_total_and_increments_add_to_it() {
        let k = key("requests", &[("code", "200")]);
        let mut store = store_with([
            metric(
                "requests",
                &[("code", "200")],
                Operation::IncrementCounter(5),
            ),
            metric("requests", &[("code", "200")], Operation::SetCounter(100)),
        ]);
        assert_eq!(counter(&store, &k).total, 100);
        store.apply(metric(
            "requests",
            &[("code", "200")],
            Operation::IncrementCounter(2),
        ));
        assert_eq!(counter(&store, &k).total, 102);
        // A lower absolute value is taken as it is: the sender restarted.
        store.apply(metric(
            "requests",
            &[("code", "200")],
            Operation::SetCounter(1),
        ));
        assert_eq!(counter(&store, &k).total, 1);
        // No overflow panic at the top of the range.
        store.apply(metric(
            "requests",
            &[("code", "200")],
            Operation::SetCounter(u64::MAX),
        ));
        store.apply(metric(
            "requests",
            &[("code", "200")],
            Operation::IncrementCounter(1),
        ));
        assert_eq!(counter(&store, &k).total, u64::MAX);
    }

    #[test]
    fn labels_tell_series_apart_and_order_them() {
        let store = store_with([
            metric("b", &[], Operation::IncrementCounter(1)),
            metric("a", &[("x", "2")], Operation::IncrementCounter(1)),
            metric("a", &[("x", "1")], Operation::IncrementCounter(1)),
            metric("a", &[("x", "1")], Operation::IncrementCounter(1)),
        ]);
        let keys: Vec<String> = store.series().map(|entry| entry.key.to_string()).collect();
        assert_eq!(keys, ["a{x=\"1\"}", "a{x=\"2\"}", "b"]);
        assert_eq!(counter(&store, &key("a", &[("x", "1")])).total, 2);
    }

    #[test]
    fn label_values_are_escaped_for_display() {
        let k = key("m", &[("a", "q\"b\\n\nz"), ("b", "")]);
        assert_eq!(k.to_string(), r#"m{a="q\"b\\n\nz",b=""}"#);
    }

    #[test]
    fn an_operation_of_another_kind_is_dropped_and_counted() {
        // The fold's policy, the gateway's too: the first kind stays.
        let k = key("m", &[]);
        let mut store = store_with([
            metric("m", &[], Operation::IncrementCounter(5)),
            metric("m", &[], Operation::SetGauge(2.0)),
            metric("m", &[], Operation::RecordHistogram(2.0)),
        ]);
        assert_eq!(counter(&store, &k).total, 5);
        assert_eq!(store.type_changes(), 2);
        assert_eq!(store.n_series(), 1);
        store.apply(metric("m", &[], Operation::IncrementCounter(1)));
        assert_eq!(counter(&store, &k).total, 6);
    }

    #[test]
    fn metadata_gives_unit_and_description_and_later_metadata_wins() {
        let mut store = store_with([metadata(
            "latency",
            EventMetricType::Histogram,
            "seconds",
            "Time to answer.",
        )]);
        let expected = Metadata {
            kind: Some(SeriesKind::Histogram),
            unit: Some("seconds".to_owned()),
            help: Some("Time to answer.".to_owned()),
        };
        assert_eq!(store.metadata("latency"), Some(&expected));
        // Metadata alone makes no series.
        assert_eq!(store.n_series(), 0);
        // An empty unit or description is no unit or description.
        store.apply(metadata("latency", EventMetricType::Histogram, "", ""));
        let latency = store.metadata("latency").expect("metadata");
        assert_eq!((&latency.unit, &latency.help), (&None, &None));
    }

    #[test]
    fn metadata_of_another_type_than_the_series_is_not_shown() {
        // The fold's policy, the gateway's too: the operations decide.
        let store = store_with([
            metadata("a", EventMetricType::Gauge, "bytes", "A gauge."),
            metric("a", &[], Operation::IncrementCounter(1)),
            metadata("b", EventMetricType::Counter, "", "A counter."),
            metric("b", &[], Operation::IncrementCounter(1)),
        ]);
        let shown: Vec<Option<&str>> = store
            .series()
            .map(|entry| entry.metadata.and_then(|m| m.help.as_deref()))
            .collect();
        assert_eq!(shown, [None, Some("A counter.")]);
    }

    #[test]
    fn unknown_kinds_and_operations_are_counted_and_skipped() {
        let store = store_with([
            Event { kind: None },
            Event::from(EventMetric {
                name: "m".to_owned(),
                ..EventMetric::default()
            }),
        ]);
        assert_eq!(store.n_series(), 0);
        assert_eq!((store.n_events(), store.n_skipped()), (2, 2));
    }

    #[test]
    fn counter_rates_come_from_tick_times_not_wall_time() {
        let k = key("hits", &[]);
        let t0 = Instant::now();
        let mut store = store_with([metric("hits", &[], Operation::IncrementCounter(10))]);
        store.tick(t0);
        assert_eq!(counter(&store, &k).rate(), None, "one tick is no rate");

        store.apply(metric("hits", &[], Operation::IncrementCounter(20)));
        store.tick(t0 + Duration::from_secs(2));
        assert_eq!(counter(&store, &k).rate(), Some(10.0));

        store.apply(metric("hits", &[], Operation::IncrementCounter(30)));
        store.tick(t0 + Duration::from_secs(3));
        assert_eq!(counter(&store, &k).rate(), Some(50.0 / 3.0));

        // The window slides: after enough quiet ticks the old increase is gone.
        for second in 4..=(3 + RATE_WINDOW_TICKS as u64) {
            store.tick(t0 + Duration::from_secs(second));
        }
        assert_eq!(counter(&store, &k).rate(), Some(0.0));

        // A reset starts the rate over instead of going negative.
        store.apply(metric("hits", &[], Operation::SetCounter(1)));
        store.tick(t0 + Duration::from_secs(20));
        assert_eq!(counter(&store, &k).rate(), None);
        store.apply(metric("hits", &[], Operation::IncrementCounter(4)));
        store.tick(t0 + Duration::from_millis(20_500));
        assert_eq!(counter(&store, &k).rate(), Some(8.0));
    }

    #[test]
    fn events_per_second_counts_every_event() {
        let t0 = Instant::now();
        let mut store = Store::new(Limits::default());
        store.tick(t0);
        for _ in 0..30 {
            store.apply(metric("m", &[], Operation::IncrementCounter(1)));
        }
        store.apply(Event { kind: None });
        store.tick(t0 + Duration::from_millis(500));
        assert_eq!(store.events_per_second(), Some(62.0));
    }

    #[test]
    fn gauge_history_keeps_one_point_per_tick_up_to_the_sparkline_width() {
        let k = key("temperature", &[]);
        let t0 = Instant::now();
        let mut store = Store::new(Limits::default());
        for i in 0..(SPARKLINE_POINTS + 10) {
            store.apply(metric("temperature", &[], Operation::SetGauge(i as f64)));
            store.tick(t0 + Duration::from_secs(i as u64));
        }
        let history = gauge(&store, &k).history().clone();
        assert_eq!(history.len(), SPARKLINE_POINTS);
        assert_eq!(history.front(), Some(&10.0));
        assert_eq!(history.back(), Some(&((SPARKLINE_POINTS + 9) as f64)));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        // (samples, q, expected)
        let cases: [(&[f64], f64, Option<f64>); 7] = [
            (&[], 0.5, None),
            (&[7.0], 0.5, Some(7.0)),
            (&[7.0], 0.99, Some(7.0)),
            (&[1.0, 2.0, 3.0, 4.0], 0.5, Some(2.0)),
            (&[1.0, 2.0, 3.0, 4.0], 0.99, Some(4.0)),
            (&samples, 0.5, Some(50.0)),
            (&samples, 0.99, Some(99.0)),
        ];
        for (samples, q, expected) in cases {
            assert_eq!(quantile(samples, q), expected, "{samples:?} {q}");
        }
    }

    #[test]
    fn histograms_summarise_a_bounded_window_and_count_everything() {
        let k = key("latency", &[]);
        let limits = Limits {
            histogram_window_samples: 100,
            ..Limits::default()
        };
        let mut store = Store::new(limits);
        // 1000 samples of 1..=1000, in reverse so that sorting matters;
        // the window keeps the last 100 recorded: 100 down to 1.
        for sample in (1..=1000).rev() {
            store.apply(metric(
                "latency",
                &[],
                Operation::RecordHistogram(f64::from(sample)),
            ));
        }
        let summary = histogram(&store, &k).summary();
        assert_eq!(
            summary,
            HistogramSummary {
                count: 1000,
                sum: 500_500.0,
                p50: Some(50.0),
                p99: Some(99.0),
                max: Some(100.0),
            }
        );
        assert_eq!(histogram(&store, &k).window.len(), 100);
    }

    #[test]
    fn nan_samples_do_not_break_the_summary() {
        let store = store_with([
            metric("h", &[], Operation::RecordHistogram(f64::NAN)),
            metric("h", &[], Operation::RecordHistogram(1.0)),
        ]);
        let summary = histogram(&store, &key("h", &[])).summary();
        assert_eq!(summary.count, 2);
        assert_eq!(summary.p50, Some(1.0));
    }

    #[test]
    fn the_series_cap_drops_new_series_and_counts_them() {
        let limits = Limits {
            max_series: 3,
            ..Limits::default()
        };
        let mut store = Store::new(limits);
        for i in 0..10 {
            let value = i.to_string();
            store.apply(metric(
                "flood",
                &[("id", &value)],
                Operation::IncrementCounter(1),
            ));
        }
        // A refused series seen twice is one series, two events.
        store.apply(metric(
            "flood",
            &[("id", "9")],
            Operation::IncrementCounter(1),
        ));
        // Series already tracked still update.
        store.apply(metric(
            "flood",
            &[("id", "0")],
            Operation::IncrementCounter(1),
        ));
        assert_eq!(store.n_series(), 3);
        assert_eq!(store.dropped().series(), 7);
        assert_eq!(store.dropped().events, 8);
        assert!(!store.dropped().series_saturated);
        assert_eq!(counter(&store, &key("flood", &[("id", "0")])).total, 2);
        // Metadata of new names is capped the same way.
        for i in 0..5 {
            store.apply(metadata(
                &format!("name{i}"),
                EventMetricType::Gauge,
                "",
                "",
            ));
        }
        assert_eq!(store.dropped().metadata, 2);
    }

    #[test]
    fn a_flood_of_label_sets_stays_within_the_default_cap() {
        let mut store = Store::new(Limits::default());
        let n_sent = DEFAULT_MAX_SERIES + MAX_DROPPED_SERIES_TRACKED + 100;
        for i in 0..n_sent {
            let id = i.to_string();
            store.apply(metric(
                "flood",
                &[("id", &id)],
                Operation::RecordHistogram(1.0),
            ));
        }
        assert_eq!(store.n_series(), DEFAULT_MAX_SERIES);
        // The dropped series are counted exactly up to what is remembered,
        // then as a lower bound.
        assert_eq!(store.dropped().series(), MAX_DROPPED_SERIES_TRACKED);
        assert!(store.dropped().series_saturated);
        assert_eq!(store.dropped().events, (n_sent - DEFAULT_MAX_SERIES) as u64);
    }

    #[test]
    fn a_reconnect_keeps_what_was_folded_and_increments_continue() {
        let limits = Limits {
            max_series: 2,
            histogram_window_samples: 4,
        };
        let mut store = Store::new(limits);
        store.connected();
        store.apply(metadata("a", EventMetricType::Counter, "count", "A."));
        store.apply(metric("a", &[], Operation::IncrementCounter(1)));
        store.apply(metric("b", &[], Operation::SetCounter(4)));
        store.apply(metric("c", &[], Operation::IncrementCounter(1)));
        store.apply(metric("h", &[], Operation::RecordHistogram(1.0)));
        store.tick(Instant::now());
        assert_eq!(store.dropped().series(), 2);
        store.connected();
        // The fold's policy, the gateway's too: everything is kept.
        assert_eq!(store.n_series(), 2);
        assert_eq!(
            store.metadata("a").and_then(|m| m.help.as_deref()),
            Some("A.")
        );
        assert_eq!(store.dropped().series(), 2);
        assert_eq!(store.limits(), limits);
        // Increments continue from the kept total; absolute values replace it.
        store.apply(metric("a", &[], Operation::IncrementCounter(2)));
        store.apply(metric("b", &[], Operation::SetCounter(9)));
        assert_eq!(counter(&store, &key("a", &[])).total, 3);
        assert_eq!(counter(&store, &key("b", &[])).total, 9);
        // The series refused before are refused still.
        store.apply(metric("c", &[], Operation::IncrementCounter(1)));
        assert_eq!(store.dropped().series(), 2);
        assert_eq!(store.dropped().events, 3);
    }

    #[test]
    fn the_filter_matches_names_ignoring_ascii_case() {
        let store = store_with([
            metric("http_requests_total", &[], Operation::IncrementCounter(1)),
            metric("HTTP_errors", &[], Operation::IncrementCounter(1)),
            metric("queue_depth", &[("http", "x")], Operation::SetGauge(1.0)),
        ]);
        let names = |filter: &str| -> Vec<String> {
            store
                .matching(filter)
                .map(|entry| entry.key.name().to_owned())
                .collect()
        };
        assert_eq!(names("http"), ["HTTP_errors", "http_requests_total"]);
        assert_eq!(names("ERRORS"), ["HTTP_errors"]);
        assert_eq!(names("").len(), 3);
        assert!(names("nothing").is_empty());
        assert!(name_matches("a", ""));
        assert!(!name_matches("", "a"));
    }
}
