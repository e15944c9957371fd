//! What one drain holds: series derived from its lines, each with the
//! time it was last updated, within a series cap and a byte budget.
//!
//! A series is found by its family name and its sorted label set; every
//! update says whether it replaces what is held (absolute) or adds to it
//! (incremental). Families are built from the series on demand, sorted,
//! for the scrape's snapshot.

use std::collections::{HashMap, HashSet, VecDeque};

use tether_model::{
    Bucket, Counter, Histogram, Label, MetricFamily, MetricType, Quantile, Series, Summary, Value,
};

/// Buckets of histograms built from samples (Vector's distributions of
/// statistic `histogram`), as Vector's Prometheus exporter has them.
pub(crate) const SAMPLE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Quantiles of summaries built from samples (distributions of statistic
/// `summary`), as Vector's Prometheus exporter has them.
pub(crate) const SAMPLE_QUANTILES: &[f64] = &[0.5, 0.75, 0.9, 0.95, 0.99];
/// Samples a summary built from samples keeps, the most recent first to
/// go: its quantiles are those of this window.
pub(crate) const SAMPLE_WINDOW: usize = 1024;
/// Fixed cost of a series in the byte budget (its entry, its state).
const SERIES_BYTES: usize = 160;
/// Cost of a label, a set member or a bucket beyond its text.
const ENTRY_BYTES: usize = 48;

/// What a family is, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
            Kind::Summary => MetricType::Summary,
        }
    }
}

/// One update of one series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// A counter's total (`add`: an increment); never negative.
    Counter { value: f64, add: bool },
    /// A gauge's value (`add`: a change).
    Gauge { value: f64, add: bool },
    /// The members of a set, served as a gauge of how many there are
    /// (`add`: joined to those held).
    Set { members: Vec<String>, add: bool },
    /// Samples `(value, rate)` counted into `buckets` (ascending; `add`:
    /// on top of those held).
    Observe {
        samples: Vec<(f64, u32)>,
        buckets: &'static [f64],
        add: bool,
    },
    /// Per-bucket counts `(upper bound, count)`, ascending (`add`: to those
    /// held, when the bounds are the same).
    Histogram {
        buckets: Vec<(f64, f64)>,
        count: f64,
        sum: f64,
        add: bool,
    },
    /// Quantiles as sent (`add`: count and sum added, quantiles replaced).
    Summary {
        quantiles: Vec<(f64, f64)>,
        count: f64,
        sum: f64,
        add: bool,
    },
    /// Samples `(value, rate)` whose quantiles are served
    /// ([`SAMPLE_QUANTILES`] over the last [`SAMPLE_WINDOW`]).
    SampleSummary { samples: Vec<(f64, u32)>, add: bool },
}

impl Op {
    /// The kind of family the update belongs to.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Op::Counter { .. } => Kind::Counter,
            Op::Gauge { .. } | Op::Set { .. } => Kind::Gauge,
            Op::Observe { .. } | Op::Histogram { .. } => Kind::Histogram,
            Op::Summary { .. } | Op::SampleSummary { .. } => Kind::Summary,
        }
    }
}

/// Why an update was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A new series past the drain's series cap.
    SeriesLimit,
    /// More than the drain's byte budget.
    BytesLimit,
    /// The name is held with another type.
    TypeConflict,
    /// A value that cannot be held (a negative or non-finite counter).
    BadValue,
}

impl Refused {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refused::SeriesLimit => "series_limit",
            Refused::BytesLimit => "bytes_limit",
            Refused::TypeConflict => "type_conflict",
            Refused::BadValue => "bad_value",
        }
    }
}

/// A series' state.
#[derive(Debug, Clone)]
enum Held {
    Single(f64),
    Set(HashSet<String>),
    Histogram {
        /// Upper bounds, ascending, without `+Inf`.
        bounds: Vec<f64>,
        /// Per-bucket counts, one more than `bounds` (the last is `+Inf`'s).
        counts: Vec<f64>,
        count: f64,
        sum: f64,
    },
    Summary {
        quantiles: Vec<(f64, f64)>,
        count: f64,
        sum: f64,
    },
    Samples {
        window: VecDeque<(f64, u32)>,
        count: f64,
        sum: f64,
    },
}

#[derive(Debug, Clone)]
struct SeriesState {
    held: Held,
    /// Bytes of the budget it takes.
    bytes: usize,
    touched_ms: u64,
}

#[derive(Debug, Default)]
struct FamilyState {
    kind: Option<Kind>,
    /// Set by the first update that gives one.
    help: Option<&'static str>,
    series: HashMap<Vec<Label>, SeriesState>,
}

/// The bounds of one drain's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreLimits {
    pub(crate) max_series: usize,
    pub(crate) max_bytes: usize,
}

/// Every series of one drain.
#[derive(Debug)]
pub(crate) struct Store {
    limits: StoreLimits,
    families: HashMap<String, FamilyState>,
    n_series: usize,
    bytes: usize,
    /// Moves on with every change, so a snapshot knows whether it is stale.
    version: u64,
}

impl Store {
    pub(crate) fn new(limits: StoreLimits) -> Store {
        Store {
            limits,
            families: HashMap::new(),
            n_series: 0,
            bytes: 0,
            version: 0,
        }
    }

    pub(crate) fn n_series(&self) -> usize {
        self.n_series
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Applies `op` to the series `name{labels}` (labels sorted by name,
    /// each name once) at `now_ms`.
    pub(crate) fn apply(
        &mut self,
        name: &str,
        help: Option<&'static str>,
        labels: &[Label],
        op: Op,
        now_ms: u64,
    ) -> Result<(), Refused> {
        let kind = op.kind();
        if let Op::Counter { value, .. } = op
            && !(value.is_finite() && value >= 0.0)
        {
            return Err(Refused::BadValue);
        }
        let family = match self.families.get_mut(name) {
            Some(family) => family,
            None => self.families.entry(name.to_owned()).or_default(),
        };
        if family.kind.is_some_and(|k| k != kind) {
            return Err(Refused::TypeConflict);
        }
        if family.help.is_none() {
            family.help = help;
        }
        if let Some(series) = family.series.get_mut(labels) {
            let before = series.bytes;
            let after = updated_bytes(&series.held, &op, before);
            if after > before && self.bytes + (after - before) > self.limits.max_bytes {
                return Err(Refused::BytesLimit);
            }
            update(&mut series.held, op);
            series.bytes = after;
            series.touched_ms = now_ms;
            self.bytes = self.bytes + after - before;
            self.version += 1;
            return Ok(());
        }
        if self.n_series >= self.limits.max_series {
            if family.series.is_empty() {
                self.families.remove(name);
            }
            return Err(Refused::SeriesLimit);
        }
        let held = new_held(op);
        let bytes = SERIES_BYTES
            + labels
                .iter()
                .map(|l| ENTRY_BYTES + l.name.len() + l.value.len())
                .sum::<usize>()
            + held_bytes(&held)
            + if family.series.is_empty() {
                name.len()
            } else {
                0
            };
        if self.bytes + bytes > self.limits.max_bytes {
            if family.series.is_empty() {
                self.families.remove(name);
            }
            return Err(Refused::BytesLimit);
        }
        family.kind = Some(kind);
        family.series.insert(
            labels.to_vec(),
            SeriesState {
                held,
                bytes,
                touched_ms: now_ms,
            },
        );
        self.n_series += 1;
        self.bytes += bytes;
        self.version += 1;
        Ok(())
    }

    /// Removes every series last updated before `cutoff_ms`; how many.
    pub(crate) fn expire(&mut self, cutoff_ms: u64) -> usize {
        let mut removed = 0;
        let mut freed = 0;
        self.families.retain(|_, family| {
            family.series.retain(|_, series| {
                let keep = series.touched_ms >= cutoff_ms;
                if !keep {
                    removed += 1;
                    freed += series.bytes;
                }
                keep
            });
            !family.series.is_empty()
        });
        if removed > 0 {
            self.n_series -= removed;
            self.bytes = self.bytes.saturating_sub(freed);
            self.version += 1;
        }
        removed
    }

    /// The families held, each sorted by labels, families by name.
    pub(crate) fn families(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> = self
            .families
            .iter()
            .filter_map(|(name, family)| {
                let kind = family.kind?;
                let mut out = MetricFamily::new(name.clone(), kind.metric_type());
                out.help = family.help.map(str::to_owned);
                out.series = family
                    .series
                    .iter()
                    .map(|(labels, series)| Series {
                        labels: labels.clone(),
                        value: value_of(kind, &series.held),
                        timestamp_ms: None,
                    })
                    .collect();
                out.series.sort_by(|a, b| a.labels.cmp(&b.labels));
                Some(out)
            })
            .collect();
        families.sort_by(|a, b| a.name.cmp(&b.name));
        families
    }
}

fn new_held(op: Op) -> Held {
    let mut held = match &op {
        Op::Counter { .. } | Op::Gauge { .. } => Held::Single(0.0),
        Op::Set { .. } => Held::Set(HashSet::new()),
        Op::Observe { buckets, .. } => Held::Histogram {
            bounds: buckets.to_vec(),
            counts: vec![0.0; buckets.len() + 1],
            count: 0.0,
            sum: 0.0,
        },
        Op::Histogram { .. } => Held::Histogram {
            bounds: Vec::new(),
            counts: vec![0.0],
            count: 0.0,
            sum: 0.0,
        },
        Op::Summary { .. } => Held::Summary {
            quantiles: Vec::new(),
            count: 0.0,
            sum: 0.0,
        },
        Op::SampleSummary { .. } => Held::Samples {
            window: VecDeque::new(),
            count: 0.0,
            sum: 0.0,
        },
    };
    update(&mut held, op);
    held
}

/// The bytes of what a state holds beyond its fixed cost.
fn held_bytes(held: &Held) -> usize {
    match held {
        Held::Single(_) => 0,
        Held::Set(members) => members.iter().map(|m| ENTRY_BYTES + m.len()).sum(),
        Held::Histogram { bounds, .. } => bounds.len() * 16,
        Held::Summary { quantiles, .. } => quantiles.len() * 16,
        Held::Samples { window, .. } => window.len() * 16,
    }
}

/// The bytes a series will take once `op` is applied (at most; a set's
/// members already held are not counted twice).
fn updated_bytes(held: &Held, op: &Op, before: usize) -> usize {
    let base = before - held_bytes(held);
    match (held, op) {
        (Held::Set(current), Op::Set { members, add }) => {
            let new: usize = members
                .iter()
                .filter(|m| !*add || !current.contains(*m))
                .map(|m| ENTRY_BYTES + m.len())
                .sum();
            if *add { before + new } else { base + new }
        }
        (_, Op::Histogram { buckets, .. }) => base + buckets.len() * 16,
        (_, Op::Summary { quantiles, .. }) => base + quantiles.len() * 16,
        (Held::Samples { window, .. }, Op::SampleSummary { samples, add }) => {
            let n = if *add {
                (window.len() + samples.len()).min(SAMPLE_WINDOW)
            } else {
                samples.len().min(SAMPLE_WINDOW)
            };
            base + n * 16
        }
        _ => before,
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "set sizes and rates are far below 2^53"
)]
fn update(held: &mut Held, op: Op) {
    match (held, op) {
        (Held::Single(v), Op::Counter { value, add } | Op::Gauge { value, add }) => {
            *v = if add { *v + value } else { value };
        }
        (Held::Set(current), Op::Set { members, add }) => {
            if !add {
                current.clear();
            }
            current.extend(members);
        }
        (
            Held::Histogram {
                bounds,
                counts,
                count,
                sum,
            },
            Op::Observe {
                samples,
                buckets,
                add,
            },
        ) => {
            if !add || bounds.as_slice() != buckets {
                *bounds = buckets.to_vec();
                *counts = vec![0.0; buckets.len() + 1];
                *count = 0.0;
                *sum = 0.0;
            }
            for (value, rate) in samples {
                let rate = f64::from(rate);
                let bucket = bounds.partition_point(|&b| b < value);
                counts[bucket] += rate;
                *count += rate;
                *sum += value * rate;
            }
        }
        (
            Held::Histogram {
                bounds,
                counts,
                count,
                sum,
            },
            Op::Histogram {
                buckets,
                count: new_count,
                sum: new_sum,
                add,
            },
        ) => {
            let (new_bounds, mut new_counts) = split_buckets(&buckets);
            // The count past the last finite bound is what `count` has
            // beyond the buckets.
            let in_buckets: f64 = new_counts.iter().sum();
            new_counts.push((new_count - in_buckets).max(0.0));
            if add && *bounds == new_bounds {
                for (held, new) in counts.iter_mut().zip(&new_counts) {
                    *held += new;
                }
                *count += new_count.max(in_buckets);
                *sum += new_sum;
            } else {
                *bounds = new_bounds;
                *counts = new_counts;
                *count = new_count.max(in_buckets);
                *sum = new_sum;
            }
        }
        (
            Held::Summary {
                quantiles,
                count,
                sum,
            },
            Op::Summary {
                quantiles: new_quantiles,
                count: new_count,
                sum: new_sum,
                add,
            },
        ) => {
            let mut new_quantiles = new_quantiles;
            new_quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
            new_quantiles.dedup_by(|a, b| a.0 == b.0);
            *quantiles = new_quantiles;
            if add {
                *count += new_count;
                *sum += new_sum;
            } else {
                *count = new_count;
                *sum = new_sum;
            }
        }
        (Held::Samples { window, count, sum }, Op::SampleSummary { samples, add }) => {
            if !add {
                window.clear();
                *count = 0.0;
                *sum = 0.0;
            }
            for (value, rate) in samples {
                let weight = f64::from(rate);
                *count += weight;
                *sum += value * weight;
                if window.len() == SAMPLE_WINDOW {
                    window.pop_front();
                }
                window.push_back((value, rate));
            }
        }
        // `apply` refuses an update of another kind than the family's,
        // and a family's series all hold that kind's state; a set and a
        // gauge, or a sampled and an aggregated histogram or summary,
        // share a kind, so the state follows the update.
        (held, op) => *held = new_held(op),
    }
}

/// Finite bounds ascending with their counts (an `+Inf` bound's count
/// left out, as `count` carries it), duplicates merged.
fn split_buckets(buckets: &[(f64, f64)]) -> (Vec<f64>, Vec<f64>) {
    let mut sorted: Vec<(f64, f64)> = buckets
        .iter()
        .copied()
        .filter(|(bound, _)| !bound.is_nan() && *bound != f64::INFINITY)
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bounds: Vec<f64> = Vec::with_capacity(sorted.len());
    let mut counts: Vec<f64> = Vec::with_capacity(sorted.len() + 1);
    for (bound, count) in sorted {
        let count = if count.is_finite() {
            count.max(0.0)
        } else {
            0.0
        };
        if bounds.last() == Some(&bound) {
            if let Some(last) = counts.last_mut() {
                *last += count;
            }
        } else {
            bounds.push(bound);
            counts.push(count);
        }
    }
    (bounds, counts)
}

#[allow(clippy::cast_precision_loss, reason = "set sizes are far below 2^53")]
fn value_of(kind: Kind, held: &Held) -> Value {
    match held {
        Held::Single(v) if kind == Kind::Counter => Value::Counter(Counter {
            total: *v,
            created: None,
            exemplar: None,
        }),
        Held::Single(v) => Value::Single(*v),
        Held::Set(members) => Value::Single(members.len() as f64),
        Held::Histogram {
            bounds,
            counts,
            count,
            sum,
        } => {
            let mut cumulative = 0.0;
            let mut buckets: Vec<Bucket> = bounds
                .iter()
                .zip(counts)
                .map(|(&upper_bound, &n)| {
                    cumulative += n;
                    Bucket {
                        upper_bound,
                        count: cumulative,
                        exemplar: None,
                    }
                })
                .collect();
            buckets.push(Bucket {
                upper_bound: f64::INFINITY,
                count: count.max(cumulative),
                exemplar: None,
            });
            Value::Histogram(Histogram {
                buckets,
                count: Some(count.max(cumulative)),
                sum: Some(*sum),
                created: None,
            })
        }
        Held::Summary {
            quantiles,
            count,
            sum,
        } => Value::Summary(Summary {
            quantiles: quantiles
                .iter()
                .map(|&(quantile, value)| Quantile { quantile, value })
                .collect(),
            count: Some(*count),
            sum: Some(*sum),
            created: None,
        }),
        Held::Samples { window, count, sum } => Value::Summary(Summary {
            quantiles: window_quantiles(window),
            count: Some(*count),
            sum: Some(*sum),
            created: None,
        }),
    }
}

/// [`SAMPLE_QUANTILES`] of a window of weighted samples (none when it is
/// empty): the smallest value whose cumulative weight reaches the rank.
fn window_quantiles(window: &VecDeque<(f64, u32)>) -> Vec<Quantile> {
    let mut sorted: Vec<(f64, u32)> = window.iter().copied().filter(|(_, r)| *r > 0).collect();
    if sorted.is_empty() {
        return Vec::new();
    }
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = sorted.iter().map(|(_, r)| f64::from(*r)).sum();
    SAMPLE_QUANTILES
        .iter()
        .map(|&quantile| {
            let rank = quantile * total;
            let mut seen = 0.0;
            let value = sorted
                .iter()
                .find(|(_, r)| {
                    seen += f64::from(*r);
                    seen >= rank
                })
                .or(sorted.last())
                .map_or(f64::NAN, |(v, _)| *v);
            Quantile { quantile, value }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(StoreLimits {
            max_series: 3,
            max_bytes: 1 << 20,
        })
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect()
    }

    fn value(store: &Store, name: &str) -> Value {
        store
            .families()
            .into_iter()
            .find(|f| f.name == name)
            .and_then(|f| f.series.into_iter().next())
            .map(|s| s.value)
            .expect("the series is held")
    }

    #[test]
    fn absolute_replaces_and_incremental_adds() {
        let mut store = store();
        let l = labels(&[("app", "a")]);
        store
            .apply(
                "c",
                None,
                &l,
                Op::Counter {
                    value: 5.0,
                    add: false,
                },
                0,
            )
            .expect("applied");
        store
            .apply(
                "c",
                None,
                &l,
                Op::Counter {
                    value: 2.0,
                    add: true,
                },
                0,
            )
            .expect("applied");
        assert_eq!(
            value(&store, "c"),
            Value::Counter(Counter {
                total: 7.0,
                created: None,
                exemplar: None
            })
        );
        store
            .apply(
                "c",
                None,
                &l,
                Op::Counter {
                    value: 1.0,
                    add: false,
                },
                0,
            )
            .expect("applied");
        assert!(matches!(value(&store, "c"), Value::Counter(c) if c.total == 1.0));
        store
            .apply(
                "g",
                None,
                &l,
                Op::Gauge {
                    value: -3.0,
                    add: true,
                },
                0,
            )
            .expect("applied");
        store
            .apply(
                "g",
                None,
                &l,
                Op::Gauge {
                    value: 1.5,
                    add: true,
                },
                0,
            )
            .expect("applied");
        assert_eq!(value(&store, "g"), Value::Single(-1.5));
    }

    #[test]
    fn sets_count_distinct_members() {
        let mut store = store();
        let set = |members: &[&str], add| Op::Set {
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            add,
        };
        store
            .apply("s", None, &[], set(&["a", "b"], true), 0)
            .expect("applied");
        store
            .apply("s", None, &[], set(&["b", "c"], true), 0)
            .expect("applied");
        assert_eq!(value(&store, "s"), Value::Single(3.0));
        store
            .apply("s", None, &[], set(&["z"], false), 0)
            .expect("applied");
        assert_eq!(value(&store, "s"), Value::Single(1.0));
    }

    #[test]
    fn aggregated_histograms_become_cumulative() {
        let mut store = store();
        let op = |add| Op::Histogram {
            buckets: vec![(1.0, 2.0), (0.5, 1.0), (f64::INFINITY, 1.0)],
            count: 4.0,
            sum: 3.5,
            add,
        };
        store.apply("h", None, &[], op(false), 0).expect("applied");
        let Value::Histogram(h) = value(&store, "h") else {
            panic!("a histogram")
        };
        let counts: Vec<(f64, f64)> = h.buckets.iter().map(|b| (b.upper_bound, b.count)).collect();
        assert_eq!(counts, vec![(0.5, 1.0), (1.0, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!((h.count, h.sum), (Some(4.0), Some(3.5)));
        store.apply("h", None, &[], op(true), 0).expect("applied");
        let Value::Histogram(h) = value(&store, "h") else {
            panic!("a histogram")
        };
        let counts: Vec<f64> = h.buckets.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![2.0, 6.0, 8.0]);
    }

    #[test]
    fn samples_fill_buckets_and_quantiles() {
        let mut store = store();
        store
            .apply(
                "d",
                None,
                &[],
                Op::Observe {
                    samples: vec![(0.003, 2), (0.7, 1), (50.0, 1)],
                    buckets: SAMPLE_BUCKETS,
                    add: true,
                },
                0,
            )
            .expect("applied");
        let Value::Histogram(h) = value(&store, "d") else {
            panic!("a histogram")
        };
        assert_eq!(h.buckets[0].count, 2.0);
        assert_eq!(h.buckets[SAMPLE_BUCKETS.len() - 1].count, 3.0);
        assert_eq!(h.buckets.last().map(|b| b.count), Some(4.0));
        assert_eq!(h.sum, Some(0.006 + 0.7 + 50.0));
        let samples = (1..=100).map(|v| (f64::from(v), 1)).collect();
        store
            .apply(
                "q",
                None,
                &[],
                Op::SampleSummary {
                    samples,
                    add: false,
                },
                0,
            )
            .expect("applied");
        let Value::Summary(s) = value(&store, "q") else {
            panic!("a summary")
        };
        assert_eq!(
            s.quantiles[0],
            Quantile {
                quantile: 0.5,
                value: 50.0
            }
        );
        assert_eq!(
            s.quantiles[4],
            Quantile {
                quantile: 0.99,
                value: 99.0
            }
        );
        assert_eq!(s.count, Some(100.0));
    }

    #[test]
    fn limits_types_and_expiry_hold() {
        let mut store = store();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            store
                .apply(
                    name,
                    None,
                    &[],
                    Op::Gauge {
                        value: 1.0,
                        add: false,
                    },
                    i as u64,
                )
                .expect("room");
        }
        assert_eq!(
            store.apply(
                "d",
                None,
                &[],
                Op::Gauge {
                    value: 1.0,
                    add: false
                },
                5
            ),
            Err(Refused::SeriesLimit)
        );
        assert_eq!(
            store.apply(
                "a",
                None,
                &[],
                Op::Counter {
                    value: 1.0,
                    add: false
                },
                5
            ),
            Err(Refused::TypeConflict)
        );
        assert_eq!(
            store.apply(
                "a",
                None,
                &[],
                Op::Gauge {
                    value: 2.0,
                    add: false
                },
                5
            ),
            Ok(())
        );
        assert_eq!(store.expire(2), 1, "b (touched at 1) has expired");
        assert_eq!(store.n_series(), 2);
        assert_eq!(
            store
                .families()
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "c"]
        );
        assert_eq!(
            store.apply(
                "d",
                None,
                &[],
                Op::Counter {
                    value: -1.0,
                    add: true
                },
                5
            ),
            Err(Refused::BadValue)
        );
        let mut tiny = Store::new(StoreLimits {
            max_series: 100,
            max_bytes: 400,
        });
        let big = Op::Set {
            members: vec!["x".repeat(500)],
            add: true,
        };
        assert_eq!(tiny.apply("s", None, &[], big, 0), Err(Refused::BytesLimit));
        assert_eq!(tiny.bytes(), 0);
        assert!(tiny.families().is_empty());
    }
}
