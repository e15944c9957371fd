//! The aggregated registry: metric cells by key, grouped into families.
//!
//! Handles are found by `metrics::Key` in `metrics-util`'s sharded
//! `Registry`; [`TetherStorage`] creates the cells it stores. Creating a
//! cell also files it in the [`Index`], which keeps what a scrape and the
//! stream need without touching that map: families by sanitized name (in
//! name order, so a scrape neither hashes nor sorts), the descriptions, and
//! every series in registration order for the stream's flusher. Metrics are
//! never removed, so everything in the index only grows.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use metrics::{Key, Unit};
use metrics_util::registry::Storage;
use tether_model::{Counter, Label, MetricFamily, MetricType, Series, Value};
use tracing::warn;

use crate::cells::{CounterCell, GaugeCell, HistogramCell, SeriesInfo, StreamGate};
use crate::matcher::Matcher;
use crate::sanitize;

/// The three kinds of `metrics` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        }
    }
}

/// Histogram bucket bounds: a default and overrides by name.
#[derive(Debug)]
pub(crate) struct BucketConfig {
    pub(crate) default: Arc<[f64]>,
    /// Tried in the order they were given; the first that matches wins.
    pub(crate) overrides: Vec<(Matcher, Arc<[f64]>)>,
}

impl BucketConfig {
    fn for_name(&self, sanitized_name: &str) -> Arc<[f64]> {
        self.overrides
            .iter()
            .find(|(matcher, _)| matcher.matches(sanitized_name))
            .map_or_else(|| Arc::clone(&self.default), |(_, b)| Arc::clone(b))
    }
}

/// One registered series, of any kind.
#[derive(Debug, Clone)]
pub(crate) enum SeriesRef {
    Counter(Arc<CounterCell>),
    Gauge(Arc<GaugeCell>),
    Histogram(Arc<HistogramCell>),
}

impl SeriesRef {
    pub(crate) fn info(&self) -> &SeriesInfo {
        match self {
            SeriesRef::Counter(cell) => &cell.info,
            SeriesRef::Gauge(cell) => &cell.info,
            SeriesRef::Histogram(cell) => &cell.info,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            SeriesRef::Counter(_) => Kind::Counter,
            SeriesRef::Gauge(_) => Kind::Gauge,
            SeriesRef::Histogram(_) => Kind::Histogram,
        }
    }

    /// Writes this series' labels and current value over `target`,
    /// reusing its allocations.
    fn fill(&self, target: &mut Series) {
        let labels = &self.info().labels;
        target.labels.truncate(labels.len());
        for (j, label) in labels.iter().enumerate() {
            match target.labels.get_mut(j) {
                Some(existing) => existing.clone_from(label),
                None => target.labels.push(label.clone()),
            }
        }
        target.timestamp_ms = None;
        match (self, &mut target.value) {
            (SeriesRef::Counter(cell), Value::Counter(counter)) => {
                counter.total = cell.get() as f64;
                counter.created = None;
                counter.exemplar = None;
            }
            (SeriesRef::Histogram(cell), Value::Histogram(histogram)) => cell.fill(histogram),
            (_, value) => *value = self.value(),
        }
    }

    fn value(&self) -> Value {
        match self {
            SeriesRef::Counter(cell) => Value::Counter(Counter {
                total: cell.get() as f64,
                created: None,
                exemplar: None,
            }),
            SeriesRef::Gauge(cell) => Value::Single(f64::from_bits(cell.get_bits())),
            SeriesRef::Histogram(cell) => Value::Histogram(cell.snapshot()),
        }
    }

    fn to_series(&self) -> Series {
        Series {
            labels: self.info().labels.to_vec(),
            value: self.value(),
            timestamp_ms: None,
        }
    }
}

/// What `describe_*` said about a metric name.
#[derive(Debug, Clone)]
pub(crate) struct Description {
    pub(crate) kind: Kind,
    /// The name as given, unsanitized: the stream carries it so.
    pub(crate) name: String,
    pub(crate) unit: Option<Unit>,
    pub(crate) help: String,
    /// The index's description version when this was last changed.
    pub(crate) version: u64,
}

/// One exposition family.
#[derive(Debug)]
struct Family {
    kind: Kind,
    help: Option<String>,
    unit: Option<String>,
    series: Vec<SeriesRef>,
    /// Series positions by a hash of their labels, to find duplicates.
    by_labels: HashMap<u64, Vec<usize>>,
}

/// Everything a scrape and the stream need, filed at registration.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Families by sanitized name.
    families: BTreeMap<String, Family>,
    /// Every sample or family name a family writes in either text format,
    /// with the family that owns it, so two families never write one name.
    owners: HashMap<String, String>,
    descriptions: Vec<Description>,
    description_ids: HashMap<(Kind, String), usize>,
    description_version: u64,
    /// Every series in registration order, including those left out of the
    /// exposition by a name clash: the stream carries raw names, which do
    /// not clash.
    series: Vec<SeriesRef>,
}

/// The names a family of `kind` called `name` writes, in text 0.0.4 and in
/// OpenMetrics: the rule of `tether_model::exposition_names`, which the
/// gateway's merge applies too.
fn exposition_names(name: &str, kind: Kind) -> Vec<String> {
    tether_model::exposition_names(name, kind.metric_type()).collect()
}

fn labels_hash(labels: &[Label]) -> u64 {
    let mut hasher = DefaultHasher::new();
    labels.hash(&mut hasher);
    hasher.finish()
}

impl Index {
    /// An index in which `reserved` names (the exporter's own families)
    /// are taken.
    pub(crate) fn new(reserved: &[(&str, Kind)]) -> Index {
        let mut index = Index::default();
        for (name, kind) in reserved {
            for taken in exposition_names(name, *kind) {
                index.owners.insert(taken, (*name).to_owned());
            }
        }
        index
    }

    /// Files a new series; called once per key, when its cell is created.
    fn insert(&mut self, series: SeriesRef) {
        self.series.push(series.clone());
        let kind = series.kind();
        let raw_name = series.info().key.name();
        let name = sanitize::metric_name(raw_name).into_owned();
        if let Some(family) = self.families.get_mut(&name) {
            if family.kind != kind {
                warn!(metric = %raw_name, family = %name, "metric left out of the exposition: its family has another type");
                return;
            }
            let labels = &series.info().labels;
            let hash = labels_hash(labels);
            let same = family.by_labels.entry(hash).or_default();
            if same.iter().any(|&i| {
                family
                    .series
                    .get(i)
                    .is_some_and(|s| s.info().labels == *labels)
            }) {
                warn!(metric = %raw_name, family = %name, "metric left out of the exposition: its sanitized name and labels equal another series'");
                return;
            }
            same.push(family.series.len());
            family.series.push(series);
            return;
        }
        let names = exposition_names(&name, kind);
        if let Some(owner) = names.iter().find_map(|n| self.owners.get(n)) {
            warn!(metric = %raw_name, family = %name, clashes_with = %owner, "metric left out of the exposition: its sample names clash with another family");
            return;
        }
        for taken in names {
            self.owners.insert(taken, name.clone());
        }
        let (help, unit) = match self.description_ids.get(&(kind, raw_name.to_owned())) {
            Some(&id) => self.descriptions.get(id).map_or((None, None), |d| {
                (non_empty(&d.help), d.unit.map(|u| u.as_str().to_owned()))
            }),
            None => (None, None),
        };
        let mut by_labels = HashMap::new();
        by_labels.insert(labels_hash(&series.info().labels), vec![0]);
        self.families.insert(
            name,
            Family {
                kind,
                help,
                unit,
                series: vec![series],
                by_labels,
            },
        );
    }

    /// Records a description, replacing an earlier one of the same kind and name.
    pub(crate) fn describe(&mut self, kind: Kind, name: &str, unit: Option<Unit>, help: &str) {
        self.description_version += 1;
        let version = self.description_version;
        let description = Description {
            kind,
            name: name.to_owned(),
            unit,
            help: help.to_owned(),
            version,
        };
        match self.description_ids.get(&(kind, name.to_owned())) {
            Some(&id) => {
                if let Some(slot) = self.descriptions.get_mut(id) {
                    *slot = description;
                }
            }
            None => {
                self.description_ids
                    .insert((kind, name.to_owned()), self.descriptions.len());
                self.descriptions.push(description);
            }
        }
        let sanitized = sanitize::metric_name(name);
        if let Some(family) = self.families.get_mut(sanitized.as_ref())
            && family.kind == kind
        {
            family.help = non_empty(help);
            family.unit = unit.map(|u| u.as_str().to_owned());
        }
    }

    /// Writes every family, in name order, over the first elements of
    /// `out`, reusing their allocations, and returns how many it wrote;
    /// elements past that are left for the caller to truncate.
    pub(crate) fn families_into(&self, out: &mut Vec<MetricFamily>) -> usize {
        for (i, (name, family)) in self.families.iter().enumerate() {
            if i == out.len() {
                out.push(MetricFamily::new(String::new(), MetricType::Unknown));
            }
            let Some(target) = out.get_mut(i) else {
                continue;
            };
            target.name.clone_from(name);
            target.metric_type = family.kind.metric_type();
            target.help.clone_from(&family.help);
            target.unit.clone_from(&family.unit);
            target.series.truncate(family.series.len());
            for (j, series) in family.series.iter().enumerate() {
                match target.series.get_mut(j) {
                    Some(existing) => series.fill(existing),
                    None => target.series.push(series.to_series()),
                }
            }
        }
        self.families.len()
    }

    /// Every series, in registration order.
    pub(crate) fn series(&self) -> &[SeriesRef] {
        &self.series
    }

    /// Every description, in the order first given.
    pub(crate) fn descriptions(&self) -> &[Description] {
        &self.descriptions
    }

    /// Goes up by one with every `describe`.
    pub(crate) fn description_version(&self) -> u64 {
        self.description_version
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// The index behind a lock that recording never takes: only registration
/// (once per key), `describe_*`, scrapes and the flusher do, each for a
/// short section without awaiting, so a `std` lock is enough.
#[derive(Debug, Default)]
pub(crate) struct SharedIndex(RwLock<Index>);

impl SharedIndex {
    pub(crate) fn new(index: Index) -> SharedIndex {
        SharedIndex(RwLock::new(index))
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while holding the lock leaves the index consistent (each
        // change is one push or insert), so a poisoned lock is still usable.
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates the cells that `metrics-util`'s registry stores, filing each in
/// the index.
#[derive(Debug)]
pub(crate) struct TetherStorage {
    pub(crate) index: Arc<SharedIndex>,
    pub(crate) buckets: BucketConfig,
    pub(crate) gate: Arc<StreamGate>,
}

impl Storage<Key> for TetherStorage {
    type Counter = Arc<CounterCell>;
    type Gauge = Arc<GaugeCell>;
    type Histogram = Arc<HistogramCell>;

    fn counter(&self, key: &Key) -> Self::Counter {
        let cell = Arc::new(CounterCell::new(SeriesInfo {
            key: key.clone(),
            labels: sanitize::labels(key, false),
        }));
        self.index
            .write()
            .insert(SeriesRef::Counter(Arc::clone(&cell)));
        cell
    }

    fn gauge(&self, key: &Key) -> Self::Gauge {
        let cell = Arc::new(GaugeCell::new(SeriesInfo {
            key: key.clone(),
            labels: sanitize::labels(key, false),
        }));
        self.index
            .write()
            .insert(SeriesRef::Gauge(Arc::clone(&cell)));
        cell
    }

    fn histogram(&self, key: &Key) -> Self::Histogram {
        let bounds = self.buckets.for_name(&sanitize::metric_name(key.name()));
        let cell = Arc::new(HistogramCell::new(
            SeriesInfo {
                key: key.clone(),
                labels: sanitize::labels(key, true),
            },
            bounds,
            Arc::clone(&self.gate),
        ));
        self.index
            .write()
            .insert(SeriesRef::Histogram(Arc::clone(&cell)));
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str, labels: &[(&str, &str)]) -> SeriesRef {
        let key = Key::from_parts(
            name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| metrics::Label::new(k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        );
        SeriesRef::Counter(Arc::new(CounterCell::new(SeriesInfo {
            labels: sanitize::labels(&key, false),
            key,
        })))
    }

    fn gauge(name: &str) -> SeriesRef {
        let key = Key::from_name(name.to_owned());
        SeriesRef::Gauge(Arc::new(GaugeCell::new(SeriesInfo {
            labels: sanitize::labels(&key, false),
            key,
        })))
    }

    fn family_names(index: &Index) -> Vec<(String, usize)> {
        let mut families = Vec::new();
        index.families_into(&mut families);
        families
            .into_iter()
            .map(|f| (f.name, f.series.len()))
            .collect()
    }

    #[test]
    fn series_of_one_name_share_a_family_and_duplicates_are_left_out() {
        let mut index = Index::new(&[]);
        index.insert(counter("http.requests", &[("code", "200")]));
        index.insert(counter("http.requests", &[("code", "500")]));
        index.insert(counter("http_requests", &[("code", "200")]));
        index.insert(counter("b", &[("x", "1"), ("y", "2")]));
        index.insert(counter("b", &[("y", "2"), ("x", "1")]));
        assert_eq!(
            family_names(&index),
            [("b".to_owned(), 1), ("http_requests".to_owned(), 2)]
        );
        assert_eq!(index.series().len(), 5, "the stream still sees every key");
    }

    #[test]
    fn families_whose_sample_names_clash_are_left_out() {
        let mut index = Index::new(&[("tether_exporter_stream_clients", Kind::Gauge)]);
        index.insert(gauge("x"));
        index.insert(counter("x", &[]));
        index.insert(gauge("lat_count"));
        let key = Key::from_name("lat");
        index.insert(SeriesRef::Histogram(Arc::new(HistogramCell::new(
            SeriesInfo {
                labels: sanitize::labels(&key, true),
                key,
            },
            Arc::from([1.0]),
            Arc::new(StreamGate::new(1)),
        ))));
        index.insert(counter("req_total", &[]));
        index.insert(gauge("req"));
        index.insert(gauge("tether_exporter_stream_clients"));
        assert_eq!(
            family_names(&index),
            [
                ("lat_count".to_owned(), 1),
                ("req_total".to_owned(), 1),
                ("x".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn descriptions_reach_families_given_before_or_after() {
        let mut index = Index::new(&[]);
        index.describe(
            Kind::Counter,
            "early.total",
            Some(Unit::Bytes),
            "Early help.",
        );
        index.insert(counter("early.total", &[]));
        index.insert(gauge("late"));
        index.describe(Kind::Gauge, "late", None, "Late help.");
        index.describe(Kind::Counter, "late", None, "Wrong kind: ignored.");
        let mut families = Vec::new();
        index.families_into(&mut families);
        assert_eq!(families[0].name, "early_total");
        assert_eq!(families[0].help.as_deref(), Some("Early help."));
        assert_eq!(families[0].unit.as_deref(), Some("bytes"));
        assert_eq!(families[1].help.as_deref(), Some("Late help."));
        assert_eq!(index.description_version(), 3);
        assert_eq!(index.descriptions().len(), 3);
    }

    #[test]
    fn bucket_overrides_apply_in_order() {
        let config = BucketConfig {
            default: Arc::from([1.0]),
            overrides: vec![
                (Matcher::Full("a_b".into()).sanitized(), Arc::from([2.0])),
                (Matcher::Prefix("a".into()).sanitized(), Arc::from([3.0])),
            ],
        };
        assert_eq!(&*config.for_name("a_b"), &[2.0]);
        assert_eq!(&*config.for_name("a_c"), &[3.0]);
        assert_eq!(&*config.for_name("z"), &[1.0]);
    }
}
