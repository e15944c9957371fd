//! The observer's model of one event stream: events folded into series,
//! counter rates, gauge history, histogram quantiles, the series cap and
//! the name filter.
//!
//! Nothing here knows about sockets, terminals or wall time: events come in
//! through [`Store::apply`] and time through [`Store::tick`], so tests drive
//! both. Every collection is bounded: at most `max_series` series and as many
//! metadata entries, a fixed number of points of history per series, and a
//! fixed window of samples per histogram.

use std::collections::btree_map::Entry;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use tether_proto::{Event, EventKind, EventMetadata, EventMetric, EventMetricType, Operation};

/// The most series tracked at once. An event for a series beyond it is
/// dropped, and the series counted in [`Dropped::series`]; the series
/// already tracked go on updating.
pub(crate) const DEFAULT_MAX_SERIES: usize = 10_000;

/// The samples kept per histogram: p50, p99 and max are those of the most
/// recent samples, at most this many (a sliding window, oldest out first).
/// Count and sum cover every sample since the connection opened. With the
/// default series cap, the windows hold at most 80 MiB.
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

/// A series as the stream names it: the metric name and its labels, sorted
/// by key. Ordering is by name, then labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SeriesKey {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// `name{a="1",b="2"}`, label values escaped as in the Prometheus text
    /// format; just `name` without labels.
    pub(crate) fn display(&self) -> String {
        let mut out = self.name.clone();
        if self.labels.is_empty() {
            return out;
        }
        out.push('{');
        for (i, (key, value)) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
        out
    }
}

/// What a metric name is, from its `Metadata` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metadata {
    pub(crate) kind: EventMetricType,
    pub(crate) unit: Option<String>,
    pub(crate) description: Option<String>,
}

/// The kind of a series, decided by the operations it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One series' values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Series {
    Counter(CounterSeries),
    Gauge(GaugeSeries),
    Histogram(HistogramSeries),
}

impl Series {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Series::Counter(_) => Kind::Counter,
            Series::Gauge(_) => Kind::Gauge,
            Series::Histogram(_) => Kind::Histogram,
        }
    }
}

/// A monotonic total, sampled once per tick for its rate.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CounterSeries {
    pub(crate) total: u64,
    /// `(tick time, total)`, oldest first, at most `RATE_WINDOW_TICKS + 1`.
    samples: VecDeque<(Instant, u64)>,
    rate: Option<f64>,
}

impl CounterSeries {
    /// Increase per second over the last ticks; `None` until two ticks saw it.
    pub(crate) fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn tick(&mut self, now: Instant) {
        // A total that went down was reset (a restarted process, an
        // absolute `set_counter`): the rate starts over from here.
        if self
            .samples
            .back()
            .is_some_and(|&(_, last)| self.total < last)
        {
            self.samples.clear();
        }
        self.samples.push_back((now, self.total));
        while self.samples.len() > RATE_WINDOW_TICKS + 1 {
            self.samples.pop_front();
        }
        self.rate = rate(&self.samples);
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

/// A current value and its recent history, one point per tick.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct GaugeSeries {
    pub(crate) value: f64,
    /// Oldest first, at most [`SPARKLINE_POINTS`].
    history: VecDeque<f64>,
}

impl GaugeSeries {
    /// The value at each of the last ticks, oldest first.
    pub(crate) fn history(&self) -> &VecDeque<f64> {
        &self.history
    }

    fn tick(&mut self) {
        if self.history.len() == SPARKLINE_POINTS {
            self.history.pop_front();
        }
        self.history.push_back(self.value);
    }
}

/// Every sample counted and summed; the most recent ones kept for quantiles.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct HistogramSeries {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    /// The most recent samples, oldest first, at most the window size.
    window: VecDeque<f64>,
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

impl HistogramSeries {
    fn record(&mut self, sample: f64, window_samples: usize) {
        self.count = self.count.saturating_add(1);
        self.sum += sample;
        while self.window.len() >= window_samples {
            self.window.pop_front();
        }
        self.window.push_back(sample);
    }

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

/// What was refused at the limits since the stream (re)connected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Dropped {
    /// Hashes of the distinct series refused by the series cap.
    series_hashes: HashSet<u64>,
    /// More distinct series were refused than `series_hashes` holds.
    pub(crate) series_saturated: bool,
    /// Events for refused series.
    pub(crate) events: u64,
    /// Metadata of new names refused by the cap.
    pub(crate) metadata: u64,
}

impl Dropped {
    /// Distinct series refused; a lower bound when `series_saturated`.
    pub(crate) fn series(&self) -> usize {
        self.series_hashes.len()
    }

    fn refuse(&mut self, key: &SeriesKey) {
        self.events = self.events.saturating_add(1);
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let hash = hasher.finish();
        if self.series_hashes.len() < MAX_DROPPED_SERIES_TRACKED {
            self.series_hashes.insert(hash);
        } else if !self.series_hashes.contains(&hash) {
            self.series_saturated = true;
        }
    }
}

/// Everything known about the stream of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    limits: Limits,
    series: BTreeMap<SeriesKey, Series>,
    metadata: HashMap<String, Metadata>,
    dropped: Dropped,
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
            series: BTreeMap::new(),
            metadata: HashMap::new(),
            dropped: Dropped::default(),
            n_events: 0,
            n_skipped: 0,
            event_samples: VecDeque::new(),
            events_per_second: None,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Forgets everything, for a new connection: the server replays
    /// metadata and current values to every new client.
    pub(crate) fn clear(&mut self) {
        *self = Store::new(self.limits);
    }

    /// Folds one event in.
    ///
    /// An operation of another kind than the series has (an `increment_gauge`
    /// on a counter) replaces the series with a new one of that kind: the
    /// sender is the authority on what its metrics are.
    pub(crate) fn apply(&mut self, event: Event) {
        self.n_events = self.n_events.saturating_add(1);
        match event.kind {
            Some(EventKind::Metadata(metadata)) => self.apply_metadata(metadata),
            Some(EventKind::Metric(metric)) => self.apply_metric(metric),
            None => self.n_skipped = self.n_skipped.saturating_add(1),
        }
    }

    fn apply_metadata(&mut self, event: EventMetadata) {
        let metadata = Metadata {
            kind: event.metric_type(),
            unit: event.unit.filter(|unit| !unit.is_empty()),
            description: event.description.filter(|text| !text.is_empty()),
        };
        if let Some(known) = self.metadata.get_mut(&event.name) {
            *known = metadata;
        } else if self.metadata.len() < self.limits.max_series {
            self.metadata.insert(event.name, metadata);
        } else {
            self.dropped.metadata = self.dropped.metadata.saturating_add(1);
        }
    }

    fn apply_metric(&mut self, metric: EventMetric) {
        let Some(operation) = metric.operation else {
            self.n_skipped = self.n_skipped.saturating_add(1);
            return;
        };
        let kind = match operation {
            Operation::IncrementCounter(_) | Operation::SetCounter(_) => Kind::Counter,
            Operation::IncrementGauge(_)
            | Operation::DecrementGauge(_)
            | Operation::SetGauge(_) => Kind::Gauge,
            Operation::RecordHistogram(_) => Kind::Histogram,
        };
        let key = SeriesKey {
            name: metric.name,
            labels: metric.labels.into_iter().collect(),
        };
        let at_cap = self.series.len() >= self.limits.max_series;
        let series = match self.series.entry(key) {
            Entry::Occupied(entry) => {
                let series = entry.into_mut();
                if series.kind() != kind {
                    *series = new_series(kind);
                }
                series
            }
            Entry::Vacant(entry) if at_cap => {
                self.dropped.refuse(entry.key());
                return;
            }
            Entry::Vacant(entry) => entry.insert(new_series(kind)),
        };
        match (series, operation) {
            (Series::Counter(counter), Operation::IncrementCounter(by)) => {
                counter.total = counter.total.saturating_add(by);
            }
            (Series::Counter(counter), Operation::SetCounter(value)) => counter.total = value,
            (Series::Gauge(gauge), Operation::IncrementGauge(by)) => gauge.value += by,
            (Series::Gauge(gauge), Operation::DecrementGauge(by)) => gauge.value -= by,
            (Series::Gauge(gauge), Operation::SetGauge(value)) => gauge.value = value,
            (Series::Histogram(histogram), Operation::RecordHistogram(sample)) => {
                histogram.record(sample, self.limits.histogram_window_samples.max(1));
            }
            // `new_series` made the series of the operation's kind.
            _ => {}
        }
    }

    /// Advances time: samples every counter for its rate and every gauge
    /// for its sparkline, and the event count for events/s. Call it at a
    /// steady interval.
    pub(crate) fn tick(&mut self, now: Instant) {
        for series in self.series.values_mut() {
            match series {
                Series::Counter(counter) => counter.tick(now),
                Series::Gauge(gauge) => gauge.tick(),
                Series::Histogram(_) => {}
            }
        }
        self.event_samples.push_back((now, self.n_events));
        while self.event_samples.len() > RATE_WINDOW_TICKS + 1 {
            self.event_samples.pop_front();
        }
        self.events_per_second = rate(&self.event_samples);
    }

    /// Every series, by name then labels.
    pub(crate) fn series(&self) -> impl Iterator<Item = (&SeriesKey, &Series)> {
        self.series.iter()
    }

    /// The series whose name contains `filter`, ignoring ASCII case; all of
    /// them for an empty filter.
    pub(crate) fn matching<'a>(
        &'a self,
        filter: &'a str,
    ) -> impl Iterator<Item = (&'a SeriesKey, &'a Series)> + 'a {
        self.series
            .iter()
            .filter(move |(key, _)| name_matches(&key.name, filter))
    }

    #[cfg(test)]
    pub(crate) fn get(&self, key: &SeriesKey) -> Option<&Series> {
        self.series.get(key)
    }

    pub(crate) fn metadata(&self, name: &str) -> Option<&Metadata> {
        self.metadata.get(name)
    }

    pub(crate) fn n_series(&self) -> usize {
        self.series.len()
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

    /// Events per second over the last ticks; `None` before two ticks.
    pub(crate) fn events_per_second(&self) -> Option<f64> {
        self.events_per_second
    }
}

fn new_series(kind: Kind) -> Series {
    match kind {
        Kind::Counter => Series::Counter(CounterSeries::default()),
        Kind::Gauge => Series::Gauge(GaugeSeries::default()),
        Kind::Histogram => Series::Histogram(HistogramSeries::default()),
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

    use super::*;
    use crate::observe::test_events::{metadata, metric};

    fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
        SeriesKey {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn store_with(events: impl IntoIterator<Item = Event>) -> Store {
        let mut store = Store::new(Limits::default());
        for event in events {
            store.apply(event);
        }
        store
    }

    fn counter(store: &Store, key: &SeriesKey) -> CounterSeries {
        match store.get(key) {
            Some(Series::Counter(counter)) => counter.clone(),
            other => panic!("{key:?} is not a counter: {other:?}"),
        }
    }

    fn gauge(store: &Store, key: &SeriesKey) -> GaugeSeries {
        match store.get(key) {
            Some(Series::Gauge(gauge)) => gauge.clone(),
            other => panic!("{key:?} is not a gauge: {other:?}"),
        }
    }

    fn histogram(store: &Store, key: &SeriesKey) -> HistogramSeries {
        match store.get(key) {
            Some(Series::Histogram(histogram)) => histogram.clone(),
            other => panic!("{key:?} is not a histogram: {other:?}"),
        }
    }

    #[test]
    fn each_operation_folds_into_its_series() {
        // (operations on one series, the kind and value they leave)
        let cases: [(&[Operation], Kind, f64); 7] = [
            (&[Operation::IncrementCounter(3)], Kind::Counter, 3.0),
            (
                &[
                    Operation::IncrementCounter(3),
                    Operation::IncrementCounter(4),
                ],
                Kind::Counter,
                7.0,
            ),
            (&[Operation::SetCounter(42)], Kind::Counter, 42.0),
            (&[Operation::IncrementGauge(1.5)], Kind::Gauge, 1.5),
            (
                &[Operation::SetGauge(10.0), Operation::DecrementGauge(2.5)],
                Kind::Gauge,
                7.5,
            ),
            (&[Operation::SetGauge(-3.0)], Kind::Gauge, -3.0),
            (
                &[
                    Operation::RecordHistogram(1.0),
                    Operation::RecordHistogram(2.5),
                ],
                Kind::Histogram,
                3.5,
            ),
        ];
        for (operations, kind, value) in cases {
            let store = store_with(operations.iter().map(|&op| metric("m", &[], op)));
            let series = store.get(&key("m", &[])).expect("the series");
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
        let keys: Vec<String> = store.series().map(|(key, _)| key.display()).collect();
        assert_eq!(keys, ["a{x=\"1\"}", "a{x=\"2\"}", "b"]);
        assert_eq!(counter(&store, &key("a", &[("x", "1")])).total, 2);
    }

    #[test]
    fn label_values_are_escaped_for_display() {
        let k = key("m", &[("a", "q\"b\\n\nz"), ("b", "")]);
        assert_eq!(k.display(), r#"m{a="q\"b\\n\nz",b=""}"#);
    }

    #[test]
    fn an_operation_of_another_kind_replaces_the_series() {
        let k = key("m", &[]);
        let store = store_with([
            metric("m", &[], Operation::IncrementCounter(5)),
            metric("m", &[], Operation::SetGauge(2.0)),
        ]);
        assert_eq!(gauge(&store, &k).value, 2.0);
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
            kind: EventMetricType::Histogram,
            unit: Some("seconds".to_owned()),
            description: Some("Time to answer.".to_owned()),
        };
        assert_eq!(store.metadata("latency"), Some(&expected));
        // Metadata alone makes no series.
        assert_eq!(store.n_series(), 0);
        // An empty unit or description is no unit or description.
        store.apply(metadata("latency", EventMetricType::Histogram, "", ""));
        let latency = store.metadata("latency").expect("metadata");
        assert_eq!((&latency.unit, &latency.description), (&None, &None));
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
    fn clearing_for_a_reconnect_forgets_everything_but_the_limits() {
        let limits = Limits {
            max_series: 1,
            histogram_window_samples: 4,
        };
        let mut store = Store::new(limits);
        store.apply(metadata("a", EventMetricType::Counter, "count", "A."));
        store.apply(metric("a", &[], Operation::IncrementCounter(1)));
        store.apply(metric("b", &[], Operation::IncrementCounter(1)));
        store.tick(Instant::now());
        assert_eq!(store.dropped().series(), 1);
        store.clear();
        assert_eq!(store.n_series(), 0);
        assert_eq!(store.metadata("a"), None);
        assert_eq!(store.dropped(), &Dropped::default());
        assert_eq!((store.n_events(), store.events_per_second()), (0, None));
        assert_eq!(store.limits(), limits);
        // The replay after the reconnect starts from zero.
        store.apply(metric("b", &[], Operation::SetCounter(9)));
        assert_eq!(counter(&store, &key("b", &[])).total, 9);
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
                .map(|(key, _)| key.name.clone())
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
