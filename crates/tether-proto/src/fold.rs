//! The one fold of the metrics-exporter-tcp event stream: [`StreamFold`]
//! turns metadata and metric operations into series, bounded by
//! [`FoldLimits`], and the series into Prometheus families.
//!
//! A consumer feeds every [`EventKind`] to [`StreamFold::apply`], reads what
//! it did from the returned [`Applied`] (so that it can keep rates or
//! sample windows of its own, in a `Vec` parallel to the series indices),
//! calls [`StreamFold::reconnected`] when it opens a new connection, and
//! asks [`StreamFold::families`] for an exposition, cached by
//! [`StreamFold::version`].
//!
//! # Policies
//!
//! - **Series and kinds.** A series is a raw metric name and its labels,
//!   sorted by key. Its first operation decides its kind: a counter (a
//!   `u64` total), a gauge (an `f64`) or a histogram (count, sum and the
//!   cumulative counts of [`HISTOGRAM_BUCKETS`] and `+Inf`). A series keeps
//!   its index for the life of the fold: series are never removed.
//! - **Type change.** An operation of another kind than its series' (an
//!   `increment_gauge` on a counter) is dropped and counted in
//!   [`Dropped::type_change`]; the series keeps its kind and value. The
//!   first kind is the one Prometheus has already stored, and a series that
//!   changed type would break every query over it.
//! - **Metadata.** Metadata is kept per raw name, the last one sent wins,
//!   and an empty unit or description is none. Its type never creates,
//!   changes or drops a series: operations decide kinds. Its help and unit
//!   describe the series of its name whose kind matches its type (an
//!   unknown type number matches any kind); metadata whose type disagrees
//!   with the family its name created is not used, and is counted in
//!   [`Dropped::metadata_type_mismatch`] when it arrives after the family,
//!   or when the family is created after it.
//! - **Reconnect.** [`StreamFold::reconnected`] keeps everything: what a
//!   new connection sends is folded on top of what the last one left.
//!   Counter increments continue from the kept total, so Prometheus sees
//!   one monotonic counter across reconnects (a sender that replays
//!   absolute values sends `set_counter`, which replaces the total, as it
//!   always does); gauges keep their value until the next operation;
//!   histograms keep their counts and add new samples. Samples sent while
//!   no connection was open are lost to every kind alike; the kept values
//!   are never newer than the stream.
//! - **Labels.** The event's label map holds each key once, the last one
//!   decoded winning; [`SeriesKey::new`] applies the same rule.
//!
//! # Families
//!
//! [`StreamFold::families`] writes what is folded as Prometheus families,
//! in time linear in the series:
//!
//! - Metric names are sanitized with [`sanitize_metric_name`] and label
//!   names with [`sanitize_label_name`] (`http.requests` is
//!   `http_requests`, `1xx` is `_xx`). A label name that starts with `__`
//!   after sanitizing (reserved for Prometheus) loses its leading
//!   underscores but one: `__name__` is written `_name__`. A histogram's own
//!   `le` label is written `exported_le`, as the exporter does. A label with
//!   an empty value is left out, since Prometheus reads it as no label at
//!   all. Two labels that end up with one name keep the last, in the order
//!   of the raw keys.
//! - Series are grouped by family key (the sanitized name, without
//!   `_total` for a counter); the grouping is kept as series are created,
//!   so `families()` never searches. Families come in the order of their
//!   keys, series in the order they were created.
//! - The first series wins every collision, and each series left out is
//!   counted once, at creation, in [`Dropped::hidden_series`]: a series
//!   whose sanitized name and labels are those of an earlier one (`a.b` and
//!   `a_b`); a series of another kind than its family's (the first kind is
//!   kept); and every series of a family that would write a name an earlier
//!   family writes (a gauge `hh_count` after a histogram `hh`). Hidden
//!   series are still folded, so a consumer showing raw names sees them.
//!
//! # Bounds
//!
//! [`FoldLimits`] bounds the series, the metadata entries and the bytes of
//! text held; past any of them the event is dropped and counted by reason
//! in [`Dropped`], and everything already folded goes on updating.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use tether_model::{
    Bucket, Counter, Histogram, Label, MetricFamily, MetricType, Series, Value, exposition_names,
    family_key, sanitize_label_name, sanitize_metric_name,
};

use crate::event::{EventKind, EventMetadata, EventMetric, EventMetricType, Operation};

/// The upper bounds of a folded histogram's buckets, below its `+Inf`
/// bucket: Prometheus' default buckets, as the stream carries samples and
/// no buckets.
pub const HISTOGRAM_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The bounds of one [`StreamFold`]. Past any of them an event is dropped
/// and counted in [`Dropped`] by reason; what is already folded goes on
/// updating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldLimits {
    /// Most series; see [`FoldLimits::DEFAULT_MAX_SERIES`].
    pub max_series: usize,
    /// Most metadata entries (raw names with metadata); see
    /// [`FoldLimits::DEFAULT_MAX_METADATA`].
    pub max_metadata: usize,
    /// Most bytes of text held; see [`FoldLimits::DEFAULT_MAX_BYTES`].
    pub max_bytes: usize,
}

impl FoldLimits {
    /// Series folded at most. An operation that would create one more is
    /// dropped and counted in [`Dropped::series_cap`].
    pub const DEFAULT_MAX_SERIES: usize = 100_000;
    /// Metadata entries kept at most. Metadata of one more name is dropped
    /// and counted in [`Dropped::metadata_cap`]; metadata of a name already
    /// kept replaces it.
    pub const DEFAULT_MAX_METADATA: usize = 10_000;
    /// Bytes of text held at most, 64 MiB: raw names, label keys and
    /// values, help and unit texts, and the sanitized family names written.
    /// An event whose new text would pass it is dropped and counted in
    /// [`Dropped::bytes_cap`]. The fixed size of each entry is not counted:
    /// the count caps bound it.
    pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
}

impl Default for FoldLimits {
    fn default() -> Self {
        FoldLimits {
            max_series: FoldLimits::DEFAULT_MAX_SERIES,
            max_metadata: FoldLimits::DEFAULT_MAX_METADATA,
            max_bytes: FoldLimits::DEFAULT_MAX_BYTES,
        }
    }
}

/// The kind of a series, decided by its first operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeriesKind {
    /// `increment_counter` and `set_counter`.
    Counter,
    /// `increment_gauge`, `decrement_gauge` and `set_gauge`.
    Gauge,
    /// `record_histogram`.
    Histogram,
}

impl SeriesKind {
    /// Every kind, for lookups over all of them.
    const ALL: [SeriesKind; 3] = [
        SeriesKind::Counter,
        SeriesKind::Gauge,
        SeriesKind::Histogram,
    ];

    /// The kind an operation works on.
    pub fn of(operation: Operation) -> SeriesKind {
        match operation {
            Operation::IncrementCounter(_) | Operation::SetCounter(_) => SeriesKind::Counter,
            Operation::IncrementGauge(_)
            | Operation::DecrementGauge(_)
            | Operation::SetGauge(_) => SeriesKind::Gauge,
            Operation::RecordHistogram(_) => SeriesKind::Histogram,
        }
    }

    /// `counter`, `gauge` or `histogram`.
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Counter => "counter",
            SeriesKind::Gauge => "gauge",
            SeriesKind::Histogram => "histogram",
        }
    }

    /// The type of the family a series of this kind is written in.
    pub fn metric_type(self) -> MetricType {
        match self {
            SeriesKind::Counter => MetricType::Counter,
            SeriesKind::Gauge => MetricType::Gauge,
            SeriesKind::Histogram => MetricType::Histogram,
        }
    }
}

impl From<EventMetricType> for SeriesKind {
    fn from(metric_type: EventMetricType) -> Self {
        match metric_type {
            EventMetricType::Counter => SeriesKind::Counter,
            EventMetricType::Gauge => SeriesKind::Gauge,
            EventMetricType::Histogram => SeriesKind::Histogram,
        }
    }
}

/// A series as the stream names it: the raw metric name and its labels,
/// sorted by key, each key once. Ordered by name, then labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    name: String,
    labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// A key of `name` and `labels` in any order. A key given twice keeps
    /// its last value, as the event's label map does.
    pub fn new(
        name: impl Into<String>,
        labels: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut labels: Vec<(String, String)> = labels.into_iter().collect();
        // A stable sort keeps equal keys in the order given, so the last
        // of a run is the last one given.
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(String, String)> = Vec::with_capacity(labels.len());
        for label in labels {
            match unique.last_mut() {
                Some(previous) if previous.0 == label.0 => *previous = label,
                _ => unique.push(label),
            }
        }
        SeriesKey {
            name: name.into(),
            labels: unique,
        }
    }

    /// The raw metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw labels, sorted by key.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    /// The bytes of text the key holds.
    fn text_bytes(&self) -> usize {
        self.name.len()
            + self
                .labels
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum::<usize>()
    }

    /// A hash that is the same for equal keys in every fold of a process,
    /// for [`Applied::Dropped`].
    fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// `name{a="1",b="2"}`, raw names, values escaped as in the text format
/// (`\\`, `\"`, `\n`); just `name` without labels. For people and logs:
/// the raw names may not be valid Prometheus names.
impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.labels.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (key, value)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{key}=\"")?;
            for c in value.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

/// A histogram folded from samples: every sample counted and summed, and
/// counted in each bucket of [`HISTOGRAM_BUCKETS`] whose bound it is at or
/// below.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FoldedHistogram {
    count: u64,
    sum: f64,
    buckets: [u64; HISTOGRAM_BUCKETS.len()],
}

impl FoldedHistogram {
    /// Samples recorded; the count of the `+Inf` bucket.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the samples (`NaN` once a `NaN` was recorded).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// The cumulative count of each bucket of [`HISTOGRAM_BUCKETS`].
    pub fn buckets(&self) -> &[u64; HISTOGRAM_BUCKETS.len()] {
        &self.buckets
    }

    fn record(&mut self, sample: f64) {
        for (bound, bucket) in HISTOGRAM_BUCKETS.iter().zip(self.buckets.iter_mut()) {
            // A `NaN` is at or below no bound: it counts in `+Inf` only.
            if sample <= *bound {
                *bucket = bucket.saturating_add(1);
            }
        }
        self.count = self.count.saturating_add(1);
        self.sum += sample;
    }
}

/// The value of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FoldedValue {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value.
    Gauge(f64),
    /// A histogram.
    Histogram(FoldedHistogram),
}

impl FoldedValue {
    /// The kind of the series holding it.
    pub fn kind(&self) -> SeriesKind {
        match self {
            FoldedValue::Counter(_) => SeriesKind::Counter,
            FoldedValue::Gauge(_) => SeriesKind::Gauge,
            FoldedValue::Histogram(_) => SeriesKind::Histogram,
        }
    }

    fn empty(kind: SeriesKind) -> FoldedValue {
        match kind {
            SeriesKind::Counter => FoldedValue::Counter(0),
            SeriesKind::Gauge => FoldedValue::Gauge(0.0),
            SeriesKind::Histogram => FoldedValue::Histogram(FoldedHistogram::default()),
        }
    }

    /// The model's value; counts beyond 2^53 lose precision, as in any
    /// Prometheus exposition.
    fn to_value(self) -> Value {
        match self {
            FoldedValue::Counter(total) => Value::Counter(Counter {
                total: total as f64,
                created: None,
                exemplar: None,
            }),
            FoldedValue::Gauge(value) => Value::Single(value),
            FoldedValue::Histogram(histogram) => {
                let finite = HISTOGRAM_BUCKETS.iter().zip(histogram.buckets);
                let buckets = finite
                    .map(|(bound, count)| (*bound, count))
                    .chain(std::iter::once((f64::INFINITY, histogram.count)))
                    .map(|(upper_bound, count)| Bucket {
                        upper_bound,
                        count: count as f64,
                        exemplar: None,
                    })
                    .collect();
                Value::Histogram(Histogram {
                    buckets,
                    count: Some(histogram.count as f64),
                    sum: Some(histogram.sum),
                    created: None,
                })
            }
        }
    }
}

/// One folded series.
#[derive(Debug, Clone)]
pub struct FoldedSeries {
    /// Shared with the fold's index, so the text is held once.
    key: Arc<SeriesKey>,
    value: FoldedValue,
    /// Its family's slot in the fold's `family_slots`.
    family: usize,
    exported: bool,
}

impl FoldedSeries {
    /// The raw name and labels.
    pub fn key(&self) -> &SeriesKey {
        &self.key
    }

    /// A handle on the key that shares its text, for a consumer that
    /// indexes the series its own way (such as by key, in order) without
    /// holding the text twice.
    pub fn shared_key(&self) -> Arc<SeriesKey> {
        Arc::clone(&self.key)
    }

    /// The current value.
    pub fn value(&self) -> &FoldedValue {
        &self.value
    }

    /// The kind, fixed at creation.
    pub fn kind(&self) -> SeriesKind {
        self.value.kind()
    }

    /// Whether [`StreamFold::families`] writes it: false when it lost a
    /// collision of sanitized names to an earlier series.
    pub fn is_exported(&self) -> bool {
        self.exported
    }
}

/// What a metric name is, from its last metadata event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The type it declares; `None` for a type number this schema does not
    /// know, which matches series of any kind.
    pub kind: Option<SeriesKind>,
    /// The unit, such as `seconds`; never empty.
    pub unit: Option<String>,
    /// The description; never empty.
    pub help: Option<String>,
}

impl Metadata {
    fn text_bytes(&self) -> usize {
        self.unit.as_ref().map_or(0, String::len) + self.help.as_ref().map_or(0, String::len)
    }

    /// Whether it describes series of `kind`.
    fn describes(&self, kind: SeriesKind) -> bool {
        self.kind.is_none_or(|declared| declared == kind)
    }
}

/// How one operation changed its series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The counter's total went from `previous` to `total`; lower than
    /// `previous` after a `set_counter` below it (a reset).
    Counter {
        /// The total before the operation.
        previous: u64,
        /// The total after it.
        total: u64,
    },
    /// The gauge's value after the operation.
    Gauge {
        /// The new value.
        value: f64,
    },
    /// One sample was recorded.
    Histogram {
        /// The sample.
        sample: f64,
    },
}

/// Why an event changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// It would have created a series past [`FoldLimits::max_series`].
    SeriesCap,
    /// It was metadata of a new name past [`FoldLimits::max_metadata`].
    MetadataCap,
    /// Its new text would have passed [`FoldLimits::max_bytes`].
    BytesCap,
    /// Its operation is of another kind than its series.
    TypeChange,
    /// A metric event without an operation this schema knows.
    UnknownOperation,
}

impl DropReason {
    /// `series_cap`, `metadata_cap`, `bytes_cap`, `type_change` or
    /// `unknown_operation`: a label value for a drop counter.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SeriesCap => "series_cap",
            DropReason::MetadataCap => "metadata_cap",
            DropReason::BytesCap => "bytes_cap",
            DropReason::TypeChange => "type_change",
            DropReason::UnknownOperation => "unknown_operation",
        }
    }
}

/// What [`StreamFold::apply`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Applied {
    /// An operation changed series `index`.
    Series {
        /// The series' index, stable for the life of the fold.
        index: usize,
        /// Whether this event created it.
        created: bool,
        /// What changed.
        change: Change,
    },
    /// Metadata was kept for its name.
    Metadata {
        /// Whether the name had no metadata before.
        created: bool,
    },
    /// The event changed nothing; it is counted in [`StreamFold::dropped`].
    Dropped {
        /// Why.
        reason: DropReason,
        /// For a metric event, a hash of its series key, equal for equal
        /// keys in every fold of one process, so that a consumer can count
        /// the distinct series refused in bounded memory.
        series: Option<u64>,
    },
}

/// What was left out since the fold was made, one counter per reason. The
/// fields but the last two count events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    /// Events that would have created a series past the series cap.
    pub series_cap: u64,
    /// Metadata events of new names past the metadata cap.
    pub metadata_cap: u64,
    /// Events whose new text would have passed the byte cap.
    pub bytes_cap: u64,
    /// Operations of another kind than their series.
    pub type_change: u64,
    /// Metric events without an operation this schema knows.
    pub unknown_operation: u64,
    /// Series (not events) folded but left out of
    /// [`StreamFold::families`]: they collided with an earlier series or
    /// family once sanitized, or had another kind than their family.
    pub hidden_series: u64,
    /// Metadata events and families whose metadata type disagreed with the
    /// family of its name; that metadata is not written.
    pub metadata_type_mismatch: u64,
}

impl Dropped {
    /// Events dropped, for every reason: everything but the last two fields.
    pub fn events(&self) -> u64 {
        self.series_cap
            .saturating_add(self.metadata_cap)
            .saturating_add(self.bytes_cap)
            .saturating_add(self.type_change)
            .saturating_add(self.unknown_operation)
    }

    fn count(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::SeriesCap => &mut self.series_cap,
            DropReason::MetadataCap => &mut self.metadata_cap,
            DropReason::BytesCap => &mut self.bytes_cap,
            DropReason::TypeChange => &mut self.type_change,
            DropReason::UnknownOperation => &mut self.unknown_operation,
        };
        *counter = counter.saturating_add(1);
    }
}

/// One family as it is written: its series, in creation order.
#[derive(Debug, Clone)]
struct FamilySlot {
    /// The sanitized name of its first series.
    name: String,
    /// The kind of its first series; series of other kinds are hidden.
    kind: SeriesKind,
    /// The series that created it, whose raw name's metadata it writes.
    first_series: usize,
    series: Vec<usize>,
    /// It writes a name an earlier family writes: none of it is written.
    hidden: bool,
}

/// The series of one event stream, folded; see the module documentation
/// for every policy.
#[derive(Debug, Clone)]
pub struct StreamFold {
    limits: FoldLimits,
    /// Every series, by index.
    series: Vec<FoldedSeries>,
    /// Key -> index in `series`; every index in it is in bounds.
    index: HashMap<Arc<SeriesKey>, usize>,
    metadata: HashMap<String, Metadata>,
    family_slots: Vec<FamilySlot>,
    /// Family key -> slot in `family_slots`, ordered for `families()`.
    family_index: BTreeMap<String, usize>,
    /// Every name written by a family that is not hidden -> its slot.
    written: HashMap<String, usize>,
    /// Hash of (slot, written labels) -> the first exported series with
    /// it; a hit is confirmed by comparing, so it is exact.
    exported: HashMap<u64, usize>,
    /// Keys the hashes of `exported`; random, so that a peer cannot aim
    /// for collisions.
    hasher: RandomState,
    bytes: usize,
    dropped: Dropped,
    version: u64,
    n_reconnects: u64,
}

impl Default for StreamFold {
    fn default() -> Self {
        StreamFold::new(FoldLimits::default())
    }
}

impl StreamFold {
    /// An empty fold bounded by `limits`.
    pub fn new(limits: FoldLimits) -> StreamFold {
        StreamFold {
            limits,
            series: Vec::new(),
            index: HashMap::new(),
            metadata: HashMap::new(),
            family_slots: Vec::new(),
            family_index: BTreeMap::new(),
            written: HashMap::new(),
            exported: HashMap::new(),
            hasher: RandomState::new(),
            bytes: 0,
            dropped: Dropped::default(),
            version: 0,
            n_reconnects: 0,
        }
    }

    /// The bounds it was made with.
    pub fn limits(&self) -> FoldLimits {
        self.limits
    }

    /// Folds one event in and says what it did.
    pub fn apply(&mut self, event: EventKind) -> Applied {
        let applied = match event {
            EventKind::Metadata(metadata) => self.apply_metadata(metadata),
            EventKind::Metric(metric) => self.apply_metric(metric),
        };
        match applied {
            Applied::Dropped { reason, .. } => self.dropped.count(reason),
            Applied::Series { .. } | Applied::Metadata { .. } => {
                self.version = self.version.wrapping_add(1);
            }
        }
        applied
    }

    /// Tells the fold that its consumer opened a new connection to the
    /// stream. Everything folded is kept (see the module documentation):
    /// increments continue from the kept totals, absolute values replace
    /// them, and nothing folded changes here.
    pub fn reconnected(&mut self) {
        self.n_reconnects = self.n_reconnects.saturating_add(1);
    }

    /// Calls to [`reconnected`](Self::reconnected) so far.
    pub fn n_reconnects(&self) -> u64 {
        self.n_reconnects
    }

    /// Bumped by every event that changed something, so that a consumer
    /// can cache [`families`](Self::families); drops leave it alone.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Bytes of text held, at most [`FoldLimits::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What was left out, by reason.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Every series; a series' index is its position.
    pub fn series(&self) -> &[FoldedSeries] {
        &self.series
    }

    /// The index of the series of `key`, if it is folded.
    pub fn index_of(&self, key: &SeriesKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The last metadata of a raw name, whatever its type.
    pub fn metadata(&self, name: &str) -> Option<&Metadata> {
        self.metadata.get(name)
    }

    /// The metadata that describes series `index`: its raw name's, when the
    /// type matches the series' kind.
    pub fn series_metadata(&self, index: usize) -> Option<&Metadata> {
        let series = self.series.get(index)?;
        self.metadata
            .get(series.key.name())
            .filter(|metadata| metadata.describes(series.kind()))
    }

    /// The exported series as Prometheus families, in time linear in the
    /// series; see the module documentation for names and collisions.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut families = Vec::with_capacity(self.family_index.len());
        for &slot in self.family_index.values() {
            // Every slot in the index is in `family_slots`.
            let family = &self.family_slots[slot];
            if family.hidden {
                continue;
            }
            let series: Vec<Series> = family
                .series
                .iter()
                .map(|&index| &self.series[index])
                .filter(|series| series.exported)
                .map(|series| Series {
                    labels: written_labels(series.kind(), series.key.labels()),
                    value: series.value.to_value(),
                    timestamp_ms: None,
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let metadata = self.series_metadata(family.first_series);
            families.push(MetricFamily {
                name: family.name.clone(),
                metric_type: family.kind.metric_type(),
                help: metadata.and_then(|metadata| metadata.help.clone()),
                unit: metadata.and_then(|metadata| metadata.unit.clone()),
                series,
            });
        }
        families
    }

    fn apply_metadata(&mut self, event: EventMetadata) -> Applied {
        let metadata = Metadata {
            kind: EventMetricType::try_from(event.metric_type)
                .ok()
                .map(SeriesKind::from),
            unit: event.unit.filter(|unit| !unit.is_empty()),
            help: event.description.filter(|help| !help.is_empty()),
        };
        let name = event.name;
        let (held, created) = match self.metadata.get(&name) {
            Some(known) => (known.text_bytes(), false),
            None if self.metadata.len() >= self.limits.max_metadata => {
                return dropped(DropReason::MetadataCap, None);
            }
            None => (0, true),
        };
        let added = metadata.text_bytes() + if created { name.len() } else { 0 };
        let Some(bytes) = self.bytes_after(held, added) else {
            return dropped(DropReason::BytesCap, None);
        };
        self.bytes = bytes;
        if self.disagrees_with_family(&name, metadata.kind) {
            self.dropped.metadata_type_mismatch =
                self.dropped.metadata_type_mismatch.saturating_add(1);
        }
        self.metadata.insert(name, metadata);
        Applied::Metadata { created }
    }

    /// Whether a family created by raw name `name` has another kind than
    /// `kind`. Three lookups: the family key depends on the kind.
    fn disagrees_with_family(&self, name: &str, kind: Option<SeriesKind>) -> bool {
        let Some(kind) = kind else {
            return false;
        };
        let family_name = sanitize_metric_name(name);
        SeriesKind::ALL.iter().any(|other| {
            let key = family_key(&family_name, other.metric_type());
            self.family_index.get(key).is_some_and(|&slot| {
                let family = &self.family_slots[slot];
                family.kind != kind && self.series[family.first_series].key.name() == name
            })
        })
    }

    /// `self.bytes` with `held` bytes given back and `added` taken, if that
    /// stays within the cap.
    fn bytes_after(&self, held: usize, added: usize) -> Option<usize> {
        self.bytes
            .saturating_sub(held)
            .checked_add(added)
            .filter(|&bytes| bytes <= self.limits.max_bytes)
    }

    fn apply_metric(&mut self, metric: EventMetric) -> Applied {
        let Some(operation) = metric.operation else {
            return dropped(DropReason::UnknownOperation, None);
        };
        // The map is sorted by key and holds each key once.
        let key = SeriesKey {
            name: metric.name,
            labels: metric.labels.into_iter().collect(),
        };
        let kind = SeriesKind::of(operation);
        let (index, created) = match self.index.get(&key) {
            Some(&index) => (index, false),
            None => match self.create(key, kind) {
                Ok(index) => (index, true),
                Err(refused) => return refused,
            },
        };
        // `index` comes from `self.index` or `create`: in bounds.
        let series = &mut self.series[index];
        let change = match (&mut series.value, operation) {
            (FoldedValue::Counter(total), Operation::IncrementCounter(by)) => {
                let previous = *total;
                *total = total.saturating_add(by);
                Change::Counter {
                    previous,
                    total: *total,
                }
            }
            (FoldedValue::Counter(total), Operation::SetCounter(value)) => {
                let previous = std::mem::replace(total, value);
                Change::Counter {
                    previous,
                    total: value,
                }
            }
            (FoldedValue::Gauge(value), Operation::IncrementGauge(by)) => {
                *value += by;
                Change::Gauge { value: *value }
            }
            (FoldedValue::Gauge(value), Operation::DecrementGauge(by)) => {
                *value -= by;
                Change::Gauge { value: *value }
            }
            (FoldedValue::Gauge(value), Operation::SetGauge(new)) => {
                *value = new;
                Change::Gauge { value: new }
            }
            (FoldedValue::Histogram(histogram), Operation::RecordHistogram(sample)) => {
                histogram.record(sample);
                Change::Histogram { sample }
            }
            // A new series has the operation's kind, so only a series
            // created by an earlier event gets here.
            _ => {
                return dropped(DropReason::TypeChange, Some(series.key.fingerprint()));
            }
        };
        Applied::Series {
            index,
            created,
            change,
        }
    }

    /// Creates the series of `key`, of `kind`, within the caps; the refusal
    /// is the [`Applied`] to return.
    fn create(&mut self, key: SeriesKey, kind: SeriesKind) -> Result<usize, Applied> {
        if self.series.len() >= self.limits.max_series {
            return Err(dropped(DropReason::SeriesCap, Some(key.fingerprint())));
        }
        let family_name = sanitize_metric_name(key.name());
        let family_key = family_key(&family_name, kind.metric_type());
        let slot = self.family_index.get(family_key).copied();
        // A new family holds its key, its name and the names it writes.
        let written_names: Vec<String> = match slot {
            Some(_) => Vec::new(),
            None => exposition_names(&family_name, kind.metric_type()).collect(),
        };
        let family_bytes = match slot {
            Some(_) => 0,
            None => {
                family_key.len()
                    + family_name.len()
                    + written_names.iter().map(String::len).sum::<usize>()
            }
        };
        let key_bytes = key.text_bytes();
        if self.bytes_after(0, key_bytes + family_bytes).is_none() {
            return Err(dropped(DropReason::BytesCap, Some(key.fingerprint())));
        }
        let index = self.series.len();
        let slot = match slot {
            Some(slot) => slot,
            None => {
                let family_key = family_key.to_owned();
                let family_name = family_name.into_owned();
                self.new_family(
                    key.name(),
                    family_key,
                    family_name,
                    kind,
                    index,
                    written_names,
                )
            }
        };
        self.bytes += key_bytes;
        let family = &self.family_slots[slot];
        let exported = !family.hidden && family.kind == kind && self.claim(slot, &key, kind);
        if !exported {
            self.dropped.hidden_series = self.dropped.hidden_series.saturating_add(1);
        }
        let key = Arc::new(key);
        self.series.push(FoldedSeries {
            key: Arc::clone(&key),
            value: FoldedValue::empty(kind),
            family: slot,
            exported,
        });
        self.family_slots[slot].series.push(index);
        self.index.insert(key, index);
        Ok(index)
    }

    /// Makes the family slot of a new family key, hidden when it writes a
    /// name an earlier family writes; answers the slot. Takes the bytes of
    /// what it keeps, which the caller checked against the cap.
    fn new_family(
        &mut self,
        raw_name: &str,
        family_key: String,
        family_name: String,
        kind: SeriesKind,
        first_series: usize,
        written_names: Vec<String>,
    ) -> usize {
        let slot = self.family_slots.len();
        let hidden = written_names
            .iter()
            .any(|name| self.written.contains_key(name));
        self.bytes += family_key.len() + family_name.len();
        if !hidden {
            for name in written_names {
                self.bytes += name.len();
                self.written.insert(name, slot);
            }
        }
        // Metadata sent before the family's first series: counted now.
        if self
            .metadata
            .get(raw_name)
            .is_some_and(|metadata| !metadata.describes(kind))
        {
            self.dropped.metadata_type_mismatch =
                self.dropped.metadata_type_mismatch.saturating_add(1);
        }
        self.family_slots.push(FamilySlot {
            name: family_name,
            kind,
            first_series,
            series: Vec::new(),
            hidden,
        });
        self.family_index.insert(family_key, slot);
        slot
    }

    /// Whether the series about to be created for `key` may be written in
    /// family `slot`: no exported series of the slot has its written
    /// labels. Registers it when it may.
    fn claim(&mut self, slot: usize, key: &SeriesKey, kind: SeriesKind) -> bool {
        let labels = written_labels(kind, key.labels());
        let hash = self.hasher.hash_one((slot, &labels));
        let index = self.series.len();
        match self.exported.entry(hash) {
            Entry::Vacant(entry) => {
                entry.insert(index);
                true
            }
            Entry::Occupied(entry) => {
                let holder = &self.series[*entry.get()];
                if holder.family == slot
                    && written_labels(holder.kind(), holder.key.labels()) == labels
                {
                    return false;
                }
                // Two label sets with one 64-bit hash: compare with the
                // family's series. The random keys keep this rare.
                !self.family_slots[slot].series.iter().any(|&other| {
                    let other = &self.series[other];
                    other.exported && written_labels(other.kind(), other.key.labels()) == labels
                })
            }
        }
    }
}

/// The refusal of an event.
fn dropped(reason: DropReason, series: Option<u64>) -> Applied {
    Applied::Dropped { reason, series }
}

/// The labels a series of `kind` is written with: names sanitized, `__`
/// prefixes cut to `_`, a histogram's `le` renamed `exported_le`, empty
/// values left out, sorted by name, the last of equal names kept.
fn written_labels(kind: SeriesKind, labels: &[(String, String)]) -> Vec<Label> {
    let mut written: Vec<Label> = labels
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| {
            let name = sanitize_label_name(key);
            let name = if name.starts_with("__") {
                // `__x` and `___x` become `_x`; `__` alone becomes `_`.
                format!("_{}", name.trim_start_matches('_'))
            } else {
                name.into_owned()
            };
            let name = if kind == SeriesKind::Histogram && name == "le" {
                "exported_le".to_owned()
            } else {
                name
            };
            Label::new(name, value.clone())
        })
        .collect();
    // A stable sort keeps equal names in raw key order, so the last of a
    // run is the last raw key.
    written.sort_by(|a, b| a.name.cmp(&b.name));
    let mut unique: Vec<Label> = Vec::with_capacity(written.len());
    for label in written {
        match unique.last_mut() {
            Some(previous) if previous.name == label.name => *previous = label,
            _ => unique.push(label),
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tether_model::{Format, parse, render};

    use super::*;
    use crate::decode_event;

    fn metric(name: &str, labels: &[(&str, &str)], operation: Operation) -> EventKind {
        EventKind::Metric(EventMetric {
            name: name.to_owned(),
            timestamp: None,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            operation: Some(operation),
        })
    }

    fn metadata(name: &str, kind: EventMetricType, unit: &str, help: &str) -> EventKind {
        EventKind::Metadata(EventMetadata {
            name: name.to_owned(),
            metric_type: kind.into(),
            unit: Some(unit.to_owned()),
            description: Some(help.to_owned()),
        })
    }

    fn fold_of(events: impl IntoIterator<Item = EventKind>) -> StreamFold {
        let mut fold = StreamFold::default();
        for event in events {
            fold.apply(event);
        }
        fold
    }

    fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(
            name,
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    fn value(fold: &StreamFold, name: &str, labels: &[(&str, &str)]) -> FoldedValue {
        let index = fold.index_of(&key(name, labels)).expect("the series");
        *fold.series()[index].value()
    }

    /// Renders `families` in both formats and parses each back.
    fn assert_valid(families: &[MetricFamily]) {
        for format in [Format::Text, Format::OpenMetrics] {
            let mut out = Vec::new();
            render(families, format, &mut out);
            if let Err(error) = parse(&out, format) {
                panic!("{format:?}: {error}\n{}", String::from_utf8_lossy(&out));
            }
        }
    }

    fn counter(total: f64) -> Value {
        Value::Counter(Counter {
            total,
            created: None,
            exemplar: None,
        })
    }

    #[test]
    fn each_operation_folds_into_its_series_and_says_what_changed() {
        // (operations on one series, what the last one answers, the value left)
        let cases: [(&[Operation], Change, FoldedValue); 7] = [
            (
                &[Operation::IncrementCounter(3)],
                Change::Counter {
                    previous: 0,
                    total: 3,
                },
                FoldedValue::Counter(3),
            ),
            (
                &[
                    Operation::IncrementCounter(3),
                    Operation::IncrementCounter(4),
                ],
                Change::Counter {
                    previous: 3,
                    total: 7,
                },
                FoldedValue::Counter(7),
            ),
            (
                &[Operation::IncrementCounter(10), Operation::SetCounter(4)],
                Change::Counter {
                    previous: 10,
                    total: 4,
                },
                FoldedValue::Counter(4),
            ),
            (
                &[
                    Operation::SetCounter(u64::MAX),
                    Operation::IncrementCounter(1),
                ],
                Change::Counter {
                    previous: u64::MAX,
                    total: u64::MAX,
                },
                FoldedValue::Counter(u64::MAX),
            ),
            (
                &[Operation::SetGauge(10.0), Operation::DecrementGauge(2.5)],
                Change::Gauge { value: 7.5 },
                FoldedValue::Gauge(7.5),
            ),
            (
                &[Operation::IncrementGauge(1.5)],
                Change::Gauge { value: 1.5 },
                FoldedValue::Gauge(1.5),
            ),
            (
                &[
                    Operation::RecordHistogram(0.3),
                    Operation::RecordHistogram(20.0),
                ],
                Change::Histogram { sample: 20.0 },
                FoldedValue::Histogram(FoldedHistogram {
                    count: 2,
                    sum: 20.3,
                    buckets: [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
                }),
            ),
        ];
        for (operations, last_change, expected) in cases {
            let mut fold = StreamFold::default();
            let mut applied = Vec::new();
            for &operation in operations {
                applied.push(fold.apply(metric("m", &[], operation)));
            }
            for (i, applied) in applied.iter().enumerate() {
                assert!(
                    matches!(applied, Applied::Series { index: 0, created, .. } if *created == (i == 0)),
                    "{operations:?}: {applied:?}"
                );
            }
            assert!(
                matches!(applied.last(), Some(Applied::Series { change, .. }) if *change == last_change),
                "{operations:?}: {applied:?}"
            );
            assert_eq!(value(&fold, "m", &[]), expected, "{operations:?}");
            assert_eq!(fold.version(), operations.len() as u64);
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_nan_counts_in_inf_only() {
        let mut histogram = FoldedHistogram::default();
        for sample in [0.005, 0.0051, 7.0, f64::NAN, -1.0] {
            histogram.record(sample);
        }
        assert_eq!(histogram.buckets(), &[2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4]);
        assert_eq!(histogram.count(), 5);
        assert!(histogram.sum().is_nan());
    }

    #[test]
    fn an_operation_of_another_kind_is_dropped_and_counted() {
        let mut fold = fold_of([metric("m", &[], Operation::IncrementCounter(5))]);
        let version = fold.version();
        for operation in [
            Operation::SetGauge(2.0),
            Operation::RecordHistogram(1.0),
            Operation::IncrementGauge(1.0),
        ] {
            let applied = fold.apply(metric("m", &[], operation));
            assert_eq!(
                applied,
                Applied::Dropped {
                    reason: DropReason::TypeChange,
                    series: Some(key("m", &[]).fingerprint()),
                }
            );
        }
        assert_eq!(value(&fold, "m", &[]), FoldedValue::Counter(5));
        assert_eq!(fold.dropped().type_change, 3);
        assert_eq!(fold.dropped().events(), 3);
        assert_eq!(fold.version(), version, "a drop changes nothing");
        // The series goes on taking operations of its kind.
        fold.apply(metric("m", &[], Operation::IncrementCounter(1)));
        assert_eq!(value(&fold, "m", &[]), FoldedValue::Counter(6));
    }

    #[test]
    fn events_without_an_operation_are_dropped_and_counted() {
        let mut fold = StreamFold::default();
        let applied = fold.apply(EventKind::Metric(EventMetric {
            name: "m".to_owned(),
            ..EventMetric::default()
        }));
        assert_eq!(
            applied,
            Applied::Dropped {
                reason: DropReason::UnknownOperation,
                series: None
            }
        );
        assert_eq!(fold.series().len(), 0);
        assert_eq!(fold.dropped().unknown_operation, 1);
    }

    #[test]
    fn metadata_gives_help_and_unit_and_the_last_one_wins() {
        let mut fold = fold_of([
            metadata("latency", EventMetricType::Histogram, "seconds", "Old."),
            metadata(
                "latency",
                EventMetricType::Histogram,
                "seconds",
                "Time to answer.",
            ),
        ]);
        // Metadata alone makes no series and no family.
        assert!(fold.families().is_empty());
        fold.apply(metric("latency", &[], Operation::RecordHistogram(0.5)));
        let families = fold.families();
        assert_eq!(families[0].help.as_deref(), Some("Time to answer."));
        assert_eq!(families[0].unit.as_deref(), Some("seconds"));
        assert_eq!(
            fold.series_metadata(0).and_then(|m| m.help.as_deref()),
            Some("Time to answer.")
        );
        // An empty unit or description is none, and frees its bytes.
        let bytes = fold.bytes();
        let applied = fold.apply(metadata("latency", EventMetricType::Histogram, "", ""));
        assert_eq!(applied, Applied::Metadata { created: false });
        assert_eq!(
            fold.bytes(),
            bytes - "seconds".len() - "Time to answer.".len()
        );
        let families = fold.families();
        assert_eq!((&families[0].help, &families[0].unit), (&None, &None));
        assert_valid(&families);
    }

    #[test]
    fn metadata_of_another_type_is_kept_but_not_written_and_counted() {
        // Metadata before the family, then after it.
        let mut fold = fold_of([
            metadata("a", EventMetricType::Gauge, "bytes", "A."),
            metric("a", &[], Operation::IncrementCounter(1)),
            metric("b", &[], Operation::IncrementCounter(1)),
            metadata("b", EventMetricType::Histogram, "", "B."),
            // Matching metadata is not counted.
            metadata("c", EventMetricType::Counter, "", "C."),
            metric("c", &[], Operation::IncrementCounter(1)),
        ]);
        assert_eq!(fold.dropped().metadata_type_mismatch, 2);
        assert_eq!(fold.dropped().events(), 0);
        assert_eq!(
            fold.metadata("a").map(|m| m.kind),
            Some(Some(SeriesKind::Gauge))
        );
        assert_eq!(fold.series_metadata(0), None);
        let families = fold.families();
        let help: Vec<Option<&str>> = families
            .iter()
            .map(|family| family.help.as_deref())
            .collect();
        assert_eq!(help, [None, None, Some("C.")]);
        // An unknown type number describes any kind.
        fold.apply(EventKind::Metadata(EventMetadata {
            name: "a".to_owned(),
            metric_type: 7,
            unit: None,
            description: Some("Any.".to_owned()),
        }));
        assert_eq!(fold.families()[0].help.as_deref(), Some("Any."));
        assert_eq!(fold.dropped().metadata_type_mismatch, 2);
    }

    #[test]
    fn a_reconnect_keeps_every_value_and_increments_continue() {
        let mut fold = fold_of([
            metadata("c", EventMetricType::Counter, "", "Done."),
            metric("c", &[], Operation::IncrementCounter(5)),
            metric("s", &[], Operation::SetCounter(50)),
            metric("g", &[], Operation::SetGauge(3.0)),
            metric("h", &[], Operation::RecordHistogram(1.0)),
        ]);
        fold.reconnected();
        assert_eq!(fold.n_reconnects(), 1);
        // Nothing changes until the new connection sends something.
        assert_eq!(value(&fold, "c", &[]), FoldedValue::Counter(5));
        assert_eq!(value(&fold, "g", &[]), FoldedValue::Gauge(3.0));
        for event in [
            metric("c", &[], Operation::IncrementCounter(2)),
            metric("s", &[], Operation::SetCounter(7)),
            metric("g", &[], Operation::IncrementGauge(1.0)),
            metric("h", &[], Operation::RecordHistogram(2.0)),
        ] {
            fold.apply(event);
        }
        // Increments continue from the kept total; absolute values replace.
        assert_eq!(value(&fold, "c", &[]), FoldedValue::Counter(7));
        assert_eq!(value(&fold, "s", &[]), FoldedValue::Counter(7));
        assert_eq!(value(&fold, "g", &[]), FoldedValue::Gauge(4.0));
        let FoldedValue::Histogram(histogram) = value(&fold, "h", &[]) else {
            panic!("h is a histogram");
        };
        assert_eq!((histogram.count(), histogram.sum()), (2, 3.0));
        assert_eq!(
            fold.metadata("c").and_then(|m| m.help.as_deref()),
            Some("Done.")
        );
        // Indices are stable across the reconnect.
        assert_eq!(fold.index_of(&key("c", &[])), Some(0));
    }

    #[test]
    fn a_label_key_given_twice_keeps_its_last_value() {
        let k = SeriesKey::new(
            "m",
            [
                ("b".to_owned(), "1".to_owned()),
                ("a".to_owned(), "first".to_owned()),
                ("a".to_owned(), "last".to_owned()),
            ],
        );
        assert_eq!(k, key("m", &[("a", "last"), ("b", "1")]));
        // The wire: a Metric whose label map has `a` twice, then `set_gauge`.
        #[rustfmt::skip]
        let body: &[u8] = &[
            0x12, 0x1c,                                         // Event.metric, 28 bytes
                0x0a, 0x01, b'm',                               //   name: "m"
                0x1a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'1', //   labels: a=1
                0x1a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'2', //   labels: a=2
                0x41, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,             //   set_gauge: 1.0
        ];
        let event = decode_event(Bytes::from_static(body));
        let event = event.expect("a valid event");
        let mut fold = StreamFold::default();
        fold.apply(event.kind.expect("a metric"));
        assert_eq!(fold.series()[0].key(), &key("m", &[("a", "2")]));
    }

    #[test]
    fn families_sanitize_names_and_labels_as_the_exporter_does() {
        let fold = fold_of([
            metadata("http.requests", EventMetricType::Counter, "", "Requests."),
            metric(
                "http.requests",
                &[("code", "200"), ("9lives", "x"), ("a:b", "y")],
                Operation::IncrementCounter(3),
            ),
            metric("1xx", &[], Operation::SetGauge(1.0)),
            metric(
                "latency",
                &[("le", "own"), ("__name__", "n"), ("___x", "x"), ("__", "u")],
                Operation::RecordHistogram(0.3),
            ),
            metric(
                "queue",
                &[("le", "kept"), ("empty", "")],
                Operation::SetGauge(2.0),
            ),
        ]);
        let families = fold.families();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        // By family key; the sanitizer agrees with tether-model's.
        assert_eq!(names, ["_xx", "http_requests", "latency", "queue"]);
        assert_eq!(sanitize_metric_name("1xx"), "_xx");
        let labels = |family: usize| -> Vec<(String, String)> {
            families[family].series[0]
                .labels
                .iter()
                .map(|label| (label.name.clone(), label.value.clone()))
                .collect()
        };
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            labels(1),
            owned(&[("_lives", "x"), ("a_b", "y"), ("code", "200")])
        );
        // `__` prefixes are cut to one `_` (the last raw key of a name
        // wins), a histogram's `le` is `exported_le`.
        assert_eq!(
            labels(2),
            owned(&[
                ("_", "u"),
                ("_name__", "n"),
                ("_x", "x"),
                ("exported_le", "own")
            ])
        );
        // A gauge keeps `le`; an empty value is no label.
        assert_eq!(labels(3), owned(&[("le", "kept")]));
        assert_eq!(families[1].help.as_deref(), Some("Requests."));
        assert_eq!(families[1].series[0].value, counter(3.0));
        let Value::Histogram(histogram) = &families[2].series[0].value else {
            panic!("latency is a histogram");
        };
        let bounds: Vec<f64> = histogram.buckets.iter().map(|b| b.upper_bound).collect();
        let expected: Vec<f64> = HISTOGRAM_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .collect();
        assert_eq!(bounds, expected);
        let counts: Vec<f64> = histogram.buckets.iter().map(|b| b.count).collect();
        assert_eq!(
            counts,
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        );
        assert_eq!((histogram.count, histogram.sum), (Some(1.0), Some(0.3)));
        assert_eq!(fold.dropped(), Dropped::default());
        assert_valid(&families);
    }

    #[test]
    fn the_first_series_wins_every_collision_and_the_rest_are_counted() {
        // (events, family names written, series written per family, hidden series)
        type Case = (
            Vec<EventKind>,
            &'static [&'static str],
            &'static [usize],
            u64,
        );
        let cases: [Case; 7] = [
            // Two raw names, one sanitized series.
            (
                vec![
                    metric("a.b", &[("k", "1")], Operation::SetGauge(1.0)),
                    metric("a_b", &[("k", "1")], Operation::SetGauge(2.0)),
                    metric("a-b", &[("k", "2")], Operation::SetGauge(3.0)),
                ],
                &["a_b"],
                &[2],
                1,
            ),
            // Two raw label sets, one sanitized label set.
            (
                vec![
                    metric("m", &[("x.y", "1")], Operation::SetGauge(1.0)),
                    metric("m", &[("x_y", "1")], Operation::SetGauge(2.0)),
                    metric("m", &[("e", "")], Operation::SetGauge(3.0)),
                    metric("m", &[], Operation::SetGauge(4.0)),
                ],
                &["m"],
                &[2],
                2,
            ),
            // One family name, two kinds: the first kind stays.
            (
                vec![
                    metric("m", &[("k", "1")], Operation::IncrementCounter(1)),
                    metric("m", &[("k", "2")], Operation::SetGauge(1.0)),
                    metric("m", &[("k", "3")], Operation::RecordHistogram(1.0)),
                ],
                &["m"],
                &[1],
                2,
            ),
            // A counter with and without `_total` is one family.
            (
                vec![
                    metric("c_total", &[], Operation::IncrementCounter(1)),
                    metric("c", &[], Operation::IncrementCounter(2)),
                    metric("c", &[("k", "1")], Operation::IncrementCounter(3)),
                ],
                &["c_total"],
                &[2],
                1,
            ),
            // A gauge whose name a histogram writes.
            (
                vec![
                    metric("hh", &[], Operation::RecordHistogram(1.0)),
                    metric("hh_count", &[], Operation::SetGauge(1.0)),
                    metric("hh_count", &[("k", "1")], Operation::SetGauge(1.0)),
                ],
                &["hh"],
                &[1],
                2,
            ),
            // A counter's `_total` after a gauge of that name.
            (
                vec![
                    metric("x_total", &[], Operation::SetGauge(1.0)),
                    metric("x", &[], Operation::IncrementCounter(1)),
                ],
                &["x_total"],
                &[1],
                1,
            ),
            // Names that only look alike do not collide.
            (
                vec![
                    metric("h", &[], Operation::RecordHistogram(1.0)),
                    metric("h_sums", &[], Operation::SetGauge(1.0)),
                    metric("x", &[], Operation::SetGauge(1.0)),
                    metric("x_created", &[], Operation::SetGauge(1.0)),
                ],
                &["h", "h_sums", "x", "x_created"],
                &[1, 1, 1, 1],
                0,
            ),
        ];
        for (events, names, n_series, hidden) in cases {
            let description = format!("{events:?}");
            let fold = fold_of(events);
            let families = fold.families();
            let got: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(got, names, "{description}");
            let got: Vec<usize> = families.iter().map(|f| f.series.len()).collect();
            assert_eq!(got, n_series, "{description}");
            assert_eq!(fold.dropped().hidden_series, hidden, "{description}");
            let n_hidden = fold.series().iter().filter(|s| !s.is_exported()).count();
            assert_eq!(n_hidden as u64, hidden, "{description}");
            assert_valid(&families);
        }
    }

    #[test]
    fn the_first_of_colliding_series_keeps_its_value() {
        let mut fold = fold_of([
            metric("a.b", &[], Operation::SetGauge(1.0)),
            metric("a_b", &[], Operation::SetGauge(2.0)),
        ]);
        assert_eq!(fold.families()[0].series[0].value, Value::Single(1.0));
        // The hidden series is still folded, under its raw name.
        assert_eq!(value(&fold, "a_b", &[]), FoldedValue::Gauge(2.0));
        fold.apply(metric("a_b", &[], Operation::SetGauge(3.0)));
        assert_eq!(fold.families()[0].series[0].value, Value::Single(1.0));
        assert_eq!(fold.dropped().hidden_series, 1);
    }

    #[test]
    fn version_moves_on_every_change_and_never_on_a_drop() {
        let limits = FoldLimits {
            max_series: 1,
            ..FoldLimits::default()
        };
        let mut fold = StreamFold::new(limits);
        assert_eq!(fold.version(), 0);
        fold.apply(metric("a", &[], Operation::SetGauge(1.0)));
        fold.apply(metadata("a", EventMetricType::Gauge, "", "A."));
        assert_eq!(fold.version(), 2);
        fold.apply(metric("b", &[], Operation::SetGauge(1.0)));
        fold.apply(metric("a", &[], Operation::IncrementCounter(1)));
        fold.reconnected();
        assert_eq!(fold.version(), 2);
        fold.apply(metric("a", &[], Operation::SetGauge(1.0)));
        assert_eq!(fold.version(), 3);
    }

    #[test]
    fn the_series_cap_drops_new_series_and_counts_them() {
        let limits = FoldLimits {
            max_series: 3,
            ..FoldLimits::default()
        };
        let mut fold = StreamFold::new(limits);
        for i in 0..10 {
            let id = i.to_string();
            let applied = fold.apply(metric(
                "flood",
                &[("id", &id)],
                Operation::IncrementCounter(1),
            ));
            if i >= 3 {
                let expected = key("flood", &[("id", &id)]).fingerprint();
                assert_eq!(
                    applied,
                    Applied::Dropped {
                        reason: DropReason::SeriesCap,
                        series: Some(expected)
                    }
                );
            }
        }
        // Series already folded still update.
        fold.apply(metric(
            "flood",
            &[("id", "0")],
            Operation::IncrementCounter(1),
        ));
        assert_eq!(fold.series().len(), 3);
        assert_eq!(fold.dropped().series_cap, 7);
        assert_eq!(
            value(&fold, "flood", &[("id", "0")]),
            FoldedValue::Counter(2)
        );
    }

    #[test]
    fn the_metadata_cap_drops_new_names_but_updates_known_ones() {
        let limits = FoldLimits {
            max_metadata: 2,
            ..FoldLimits::default()
        };
        let mut fold = StreamFold::new(limits);
        for i in 0..5 {
            fold.apply(metadata(
                &format!("name{i}"),
                EventMetricType::Gauge,
                "",
                "",
            ));
        }
        assert_eq!(fold.dropped().metadata_cap, 3);
        let applied = fold.apply(metadata("name1", EventMetricType::Gauge, "", "Now."));
        assert_eq!(applied, Applied::Metadata { created: false });
        assert_eq!(
            fold.metadata("name1").and_then(|m| m.help.as_deref()),
            Some("Now.")
        );
        assert_eq!(fold.metadata("name4"), None);
    }

    #[test]
    fn the_byte_cap_drops_what_would_pass_it() {
        let limits = FoldLimits {
            max_bytes: 80,
            ..FoldLimits::default()
        };
        let mut fold = StreamFold::new(limits);
        let big = "v".repeat(40);
        fold.apply(metric("g", &[("k", &big)], Operation::SetGauge(1.0)));
        // The key ("g", "k" and 40 bytes of value) and the family's key,
        // name and the one name a gauge writes, all "g".
        let held = fold.bytes();
        assert_eq!(held, 1 + 1 + 40 + 3);
        let other = "w".repeat(40);
        let applied = fold.apply(metric("g", &[("k", &other)], Operation::SetGauge(1.0)));
        assert_eq!(
            applied,
            Applied::Dropped {
                reason: DropReason::BytesCap,
                series: Some(key("g", &[("k", &other)]).fingerprint())
            }
        );
        let applied = fold.apply(metadata("g", EventMetricType::Gauge, "", &big));
        assert!(matches!(
            applied,
            Applied::Dropped {
                reason: DropReason::BytesCap,
                series: None
            }
        ));
        assert_eq!(fold.dropped().bytes_cap, 2);
        assert_eq!(fold.bytes(), held);
        // Metadata that fits is kept, and replacing it gives its bytes back.
        fold.apply(metadata("g", EventMetricType::Gauge, "", "short"));
        assert_eq!(fold.bytes(), held + 1 + 5);
        fold.apply(metadata("g", EventMetricType::Gauge, "", "tiny"));
        assert_eq!(fold.bytes(), held + 1 + 4);
        assert!(fold.bytes() <= limits.max_bytes);
    }

    #[test]
    fn a_peer_sending_endless_new_names_stays_within_the_default_caps() {
        let limits = FoldLimits::default();
        let mut fold = StreamFold::new(limits);
        let n_sent = FoldLimits::DEFAULT_MAX_SERIES + 1000;
        for i in 0..n_sent {
            fold.apply(metric(
                &format!("flood_{i}"),
                &[],
                Operation::IncrementCounter(1),
            ));
            fold.apply(metadata(
                &format!("meta_{i}"),
                EventMetricType::Counter,
                "",
                "Flood.",
            ));
        }
        assert_eq!(fold.series().len(), FoldLimits::DEFAULT_MAX_SERIES);
        assert_eq!(fold.dropped().series_cap, 1000);
        assert_eq!(
            fold.dropped().metadata_cap,
            (n_sent - FoldLimits::DEFAULT_MAX_METADATA) as u64
        );
        assert!(fold.bytes() < limits.max_bytes, "{}", fold.bytes());
        // One family per name; families() writes them all.
        assert_eq!(fold.families().len(), FoldLimits::DEFAULT_MAX_SERIES);
    }

    #[test]
    fn a_peer_sending_endless_large_label_values_stays_within_the_byte_cap() {
        let limits = FoldLimits::default();
        let mut fold = StreamFold::new(limits);
        let value = "x".repeat(64 << 10);
        let n_fit = limits.max_bytes / value.len();
        for i in 0..n_fit + 10 {
            let id = i.to_string();
            fold.apply(metric(
                "big",
                &[("id", &id), ("v", &value)],
                Operation::SetGauge(1.0),
            ));
        }
        assert!(fold.bytes() <= limits.max_bytes, "{}", fold.bytes());
        assert!(fold.dropped().bytes_cap >= 10, "{:?}", fold.dropped());
        assert!(fold.series().len() < n_fit);
    }

    #[test]
    fn one_large_family_is_written_in_linear_time() {
        // With a search per series this would take some 10^9 comparisons.
        let n = 50_000;
        let mut fold = StreamFold::default();
        for i in 0..n {
            let id = i.to_string();
            fold.apply(metric("wide.x", &[("id", &id)], Operation::SetGauge(1.0)));
            fold.apply(metric("wide_x", &[("id", &id)], Operation::SetGauge(2.0)));
        }
        let families = fold.families();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].series.len(), n);
        assert_eq!(fold.dropped().hidden_series, n as u64);
        assert!(
            families[0]
                .series
                .iter()
                .all(|s| s.value == Value::Single(1.0))
        );
    }

    #[test]
    fn families_are_a_valid_exposition_in_both_formats() {
        let mut events = vec![
            metadata(
                "http.requests",
                EventMetricType::Counter,
                "count",
                "Requests\nserved \\ \"ok\".",
            ),
            metadata(
                "latency_seconds",
                EventMetricType::Histogram,
                "seconds",
                "Time.",
            ),
            metadata(
                "queue",
                EventMetricType::Gauge,
                "bytes",
                "Unit not a suffix.",
            ),
        ];
        let operations = [
            Operation::IncrementCounter(3),
            Operation::SetCounter(0),
            Operation::SetGauge(f64::NAN),
            Operation::SetGauge(f64::NEG_INFINITY),
            Operation::IncrementGauge(-1.5),
            Operation::RecordHistogram(-3.0),
            Operation::RecordHistogram(f64::INFINITY),
            Operation::RecordHistogram(0.01),
        ];
        // (name, the operation it starts with): kinds meet under one name
        // and names meet once sanitized.
        let names = [
            ("http.requests", 0),
            ("latency_seconds", 5),
            ("queue", 2),
            ("1xx", 4),
            ("", 0),
            ("a:b", 3),
            ("c_total", 2),
            ("c", 0),
            ("hh", 5),
            ("hh_count", 2),
            ("hh_bucket", 1),
            ("x_created", 2),
            ("x", 0),
            ("naïve", 6),
            ("na.ve", 2),
        ];
        let label_sets: [&[(&str, &str)]; 5] = [
            &[],
            &[("le", "1")],
            &[("__name__", "x"), ("quantile", "0.5")],
            &[("a.b", "\"q\"\n\\"), ("a_b", "")],
            &[("exported_le", "e"), ("le", "l")],
        ];
        for (name, start) in names {
            for labels in label_sets {
                let rotated = operations.iter().cycle().skip(start).take(operations.len());
                for &operation in rotated {
                    events.push(metric(name, labels, operation));
                }
            }
        }
        let fold = fold_of(events);
        let families = fold.families();
        let kinds: Vec<(&str, MetricType)> = families
            .iter()
            .map(|family| (family.name.as_str(), family.metric_type))
            .collect();
        assert_eq!(
            kinds,
            [
                ("_", MetricType::Counter),
                ("_xx", MetricType::Gauge),
                ("a:b", MetricType::Gauge),
                ("c_total", MetricType::Gauge),
                ("hh", MetricType::Histogram),
                ("http_requests", MetricType::Counter),
                ("latency_seconds", MetricType::Histogram),
                ("na_ve", MetricType::Histogram),
                ("queue", MetricType::Gauge),
                // The counter `x` writes `x_created`, which came first.
                ("x_created", MetricType::Gauge),
            ]
        );
        let dropped = fold.dropped();
        assert!(
            dropped.type_change > 0 && dropped.hidden_series > 0,
            "{dropped:?}"
        );
        assert_valid(&families);
        // Histogram families end in +Inf and count everything there.
        for family in &families {
            for series in &family.series {
                if let Value::Histogram(histogram) = &series.value {
                    let last = histogram.buckets.last().expect("a +Inf bucket");
                    assert_eq!(last.upper_bound, f64::INFINITY);
                    assert_eq!(Some(last.count), histogram.count);
                }
            }
        }
    }

    #[test]
    fn keys_display_as_text_format_labels() {
        let k = key("m", &[("a", "q\"b\\n\nz"), ("b", "")]);
        assert_eq!(k.to_string(), r#"m{a="q\"b\\n\nz",b=""}"#);
        assert_eq!(key("m", &[]).to_string(), "m");
    }

    #[test]
    fn drop_reasons_have_label_values() {
        let names = [
            DropReason::SeriesCap,
            DropReason::MetadataCap,
            DropReason::BytesCap,
            DropReason::TypeChange,
            DropReason::UnknownOperation,
        ]
        .map(DropReason::as_str);
        assert_eq!(
            names,
            [
                "series_cap",
                "metadata_cap",
                "bytes_cap",
                "type_change",
                "unknown_operation"
            ]
        );
    }

    #[test]
    fn a_fold_can_move_between_threads_behind_a_lock() {
        fn shared<T: Send + Sync>() {}
        shared::<StreamFold>();
    }
}
