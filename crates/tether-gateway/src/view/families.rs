//! [`Families`]: one source's families, normalized once when they arrive,
//! so that the view merging many sources only has to look across them.
//!
//! Normalizing refuses, and counts by reason, everything a hostile or
//! careless source could send that would make the exposition invalid or
//! let it pass for someone else: names reserved to the gateway
//! (`tether_*`), families whose written names collide (a histogram `hh`
//! beside a gauge `hh_count`, a counter `c` beside a gauge `c_total`),
//! the same family twice with two types, labels reserved by a family's
//! type (`le` on histograms, `quantile` on summaries, `__*` anywhere) and
//! series given twice. Series labels that clash with the source's target
//! labels are renamed `exported_<name>` here, as rendering would, so that
//! a duplicate made by the renaming is found too.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use tether_model::{KeptNames, Label, MetricFamily, TargetLabels, family_key, reserved_label};

/// The prefix of every name the gateway writes itself; no source may use it.
pub(crate) const RESERVED_PREFIX: &str = "tether_";

/// Why series were left out; each is a `reason` of
/// `tether_merge_dropped_series_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The same label set twice in one family.
    Duplicate,
    /// A family with the key of another and a different type.
    TypeConflict,
    /// A family writing a name another family writes.
    NameCollision,
    /// A family named like the gateway's own (`tether_*`).
    ReservedName,
    /// A label reserved by the family's type, or `__`-prefixed.
    ReservedLabel,
}

impl DropReason {
    /// Every reason, in label order.
    pub(crate) const ALL: [DropReason; 5] = [
        DropReason::Duplicate,
        DropReason::TypeConflict,
        DropReason::NameCollision,
        DropReason::ReservedName,
        DropReason::ReservedLabel,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::Duplicate => "duplicate",
            DropReason::TypeConflict => "type_conflict",
            DropReason::NameCollision => "name_collision",
            DropReason::ReservedName => "reserved_name",
            DropReason::ReservedLabel => "reserved_label",
        }
    }
}

/// Series left out, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Drops {
    counts: [u64; DropReason::ALL.len()],
}

impl Drops {
    /// Counts `n_series` left out for `reason`.
    pub(crate) fn add(&mut self, reason: DropReason, n_series: usize) {
        let index = reason as usize;
        if let Some(count) = self.counts.get_mut(index) {
            *count = count.saturating_add(n_series as u64);
        }
    }

    /// Series left out for `reason`.
    pub(crate) fn get(&self, reason: DropReason) -> u64 {
        self.counts.get(reason as usize).copied().unwrap_or(0)
    }

    /// Whether nothing was left out.
    pub(crate) fn is_empty(&self) -> bool {
        self.counts.iter().all(|&n| n == 0)
    }
}

/// Who wrote a set of families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A peer: agents, streams, pushes. Names `tether_*` are refused.
    Peer,
    /// The gateway itself, the only writer of `tether_*` names.
    Gateway,
}

/// Families that keep, within themselves, every rule of a valid
/// exposition: keys unique (one family per key), no two families writing
/// one name, no reserved name (from a peer) or reserved label, no series
/// twice, no series label clashing with the target labels. Sorted by key.
///
/// The only ways to make one are [`Families::normalize`] and
/// [`Families::empty`], so holding one is proof of those rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Families {
    families: Vec<MetricFamily>,
    n_series: usize,
    approx_bytes: usize,
}

impl Families {
    /// No families.
    #[cfg(test)]
    pub(crate) fn empty() -> Families {
        Families::default()
    }

    /// The families, sorted by key.
    pub(crate) fn as_slice(&self) -> &[MetricFamily] {
        &self.families
    }

    /// How many series they hold.
    pub(crate) fn n_series(&self) -> usize {
        self.n_series
    }

    /// About how many bytes of memory they hold: texts plus a fixed cost
    /// per family, series, label, bucket and quantile (the sizes of their
    /// structures and allocations). What budgets of held data count.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// Normalizes `families` from `origin`, to be served with `target`;
    /// what is left out is counted in `drops`.
    pub(crate) fn normalize(
        mut families: Vec<MetricFamily>,
        target: Option<&TargetLabels>,
        origin: Origin,
        drops: &mut Drops,
    ) -> Families {
        if origin == Origin::Peer {
            families.retain(|family| {
                let reserved = family.name.starts_with(RESERVED_PREFIX);
                if reserved {
                    drops.add(DropReason::ReservedName, family.series.len());
                }
                !reserved
            });
        }
        // By key, shortest first, so the shorter key keeps its suffixed
        // names (a histogram `hh` against a gauge `hh_count`); a stable sort
        // keeps the first of equal keys first.
        families.sort_by(|a, b| {
            family_key(&a.name, a.metric_type).cmp(family_key(&b.name, b.metric_type))
        });
        let mut kept: Vec<MetricFamily> = Vec::with_capacity(families.len());
        let mut names = KeptNames::default();
        for (index, family) in families.into_iter().enumerate() {
            if let Some(last) = kept.last_mut()
                && last.metric_type == family.metric_type
                && family_key(&last.name, last.metric_type)
                    == family_key(&family.name, family.metric_type)
            {
                // The same family given twice (or as `x` and `x_total`).
                last.series.extend(family.series);
                continue;
            }
            if let Some((_, type_conflict)) = names.collision_written(
                &family.name,
                family.metric_type,
                index,
                family.writes_created(),
            ) {
                let reason = if type_conflict {
                    DropReason::TypeConflict
                } else {
                    DropReason::NameCollision
                };
                drops.add(reason, family.series.len());
                continue;
            }
            kept.push(family);
        }
        let hasher = RandomState::new();
        let mut n_series = 0;
        for family in &mut kept {
            let metric_type = family.metric_type;
            if let Some(target) = target.filter(|t| !t.labels().is_empty()) {
                for series in &mut family.series {
                    export_clashing(&mut series.labels, target.labels());
                }
            }
            let before = family.series.len();
            family.series.retain(|series| {
                !series
                    .labels
                    .iter()
                    .any(|l| reserved_label(metric_type, &l.name).is_some())
            });
            drops.add(DropReason::ReservedLabel, before - family.series.len());
            let before = family.series.len();
            dedup_series(&mut family.series, &hasher);
            drops.add(DropReason::Duplicate, before - family.series.len());
            n_series += family.series.len();
        }
        let approx_bytes = kept.iter().map(family_bytes).sum();
        Families {
            families: kept,
            n_series,
            approx_bytes,
        }
    }
}

/// The estimate of [`Families::approx_bytes`] for one family.
fn family_bytes(family: &MetricFamily) -> usize {
    const FAMILY: usize = 128;
    const SERIES: usize = 96;
    const LABEL: usize = 48;
    const POINT: usize = 40;
    let texts = family.name.len()
        + family.help.as_ref().map_or(0, String::len)
        + family.unit.as_ref().map_or(0, String::len);
    let series: usize = family
        .series
        .iter()
        .map(|series| {
            let labels: usize = series
                .labels
                .iter()
                .map(|l| LABEL + l.name.len() + l.value.len())
                .sum();
            let points = match &series.value {
                tether_model::Value::Histogram(h) => h.buckets.len(),
                tether_model::Value::Summary(s) => s.quantiles.len(),
                _ => 0,
            };
            SERIES + labels + points * POINT
        })
        .sum();
    FAMILY + texts + series
}

/// Renames each label of `labels` named like a target label to the first
/// `exported_…` name free in both sets, as Prometheus does and as the
/// renderer would.
fn export_clashing(labels: &mut [Label], target: &[Label]) {
    let clashes = |name: &str| target.iter().any(|t| t.name == name);
    for i in 0..labels.len() {
        if !clashes(&labels[i].name) {
            continue;
        }
        let mut name = format!("exported_{}", labels[i].name);
        while clashes(&name) || labels.iter().any(|l| l.name == name) {
            name.insert_str(0, "exported_");
        }
        labels[i].name = name;
    }
}

/// An order-insensitive keyed hash of a label set: each label's keyed
/// hash, summed. The random key keeps collisions out of a peer's reach;
/// equality is still checked on a match, so a collision never drops a
/// series.
pub(crate) fn label_set_hash<'a>(
    labels: impl Iterator<Item = &'a Label>,
    hasher: &RandomState,
) -> u64 {
    labels
        .map(|l| hasher.hash_one((l.name.as_str(), l.value.as_str())))
        .fold(0u64, u64::wrapping_add)
}

/// Whether two label sets with unique names are equal as sets.
pub(crate) fn same_label_set<'a, 'b>(
    a: &(impl Iterator<Item = &'a Label> + Clone),
    b: &(impl Iterator<Item = &'b Label> + Clone),
) -> bool {
    a.clone().count() == b.clone().count()
        && a.clone().all(|label| b.clone().any(|other| other == label))
}

/// Drops every series whose label set an earlier series has, in linear
/// expected time.
fn dedup_series(series: &mut Vec<tether_model::Series>, hasher: &RandomState) {
    if series.len() < 2 {
        return;
    }
    // Hash -> index of the first series kept with it; further series of
    // one hash (a true collision, astronomically rare) in `overflow`.
    let mut first: HashMap<u64, usize> = HashMap::with_capacity(series.len());
    let mut overflow: Vec<(u64, usize)> = Vec::new();
    let mut keep = vec![true; series.len()];
    for index in 0..series.len() {
        let labels = &series[index].labels;
        let hash = label_set_hash(labels.iter(), hasher);
        match first.get(&hash) {
            None => {
                first.insert(hash, index);
            }
            Some(&earlier) => {
                let same =
                    |other: usize| same_label_set(&series[other].labels.iter(), &labels.iter());
                let duplicate =
                    same(earlier) || overflow.iter().any(|&(h, other)| h == hash && same(other));
                if duplicate {
                    keep[index] = false;
                } else {
                    overflow.push((hash, index));
                }
            }
        }
    }
    let mut flags = keep.into_iter();
    series.retain(|_| flags.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_model::{MetricType, Series, Value};

    fn family(name: &str, metric_type: MetricType, label_sets: &[&[(&str, &str)]]) -> MetricFamily {
        let mut family = MetricFamily::new(name, metric_type);
        for labels in label_sets {
            let labels = labels.iter().map(|(n, v)| Label::new(*n, *v)).collect();
            let value = match metric_type {
                MetricType::Counter => Value::Counter(tether_model::Counter {
                    total: 1.0,
                    created: None,
                    exemplar: None,
                }),
                MetricType::Histogram => Value::Histogram(tether_model::Histogram {
                    buckets: vec![tether_model::Bucket {
                        upper_bound: f64::INFINITY,
                        count: 1.0,
                        exemplar: None,
                    }],
                    count: Some(1.0),
                    sum: Some(1.0),
                    created: None,
                }),
                MetricType::Summary => Value::Summary(tether_model::Summary {
                    quantiles: vec![],
                    count: Some(1.0),
                    sum: Some(1.0),
                    created: None,
                }),
                _ => Value::Single(1.0),
            };
            family.series.push(Series {
                labels,
                value,
                timestamp_ms: None,
            });
        }
        family
    }

    fn names(families: &Families) -> Vec<(&str, MetricType, usize)> {
        families
            .as_slice()
            .iter()
            .map(|f| (f.name.as_str(), f.metric_type, f.series.len()))
            .collect()
    }

    #[test]
    fn a_hostile_source_is_refused_case_by_case() {
        use MetricType::*;
        // (families sent, families kept, the reason counted, series dropped)
        type Case = (
            Vec<MetricFamily>,
            Vec<(&'static str, MetricType, usize)>,
            DropReason,
            u64,
        );
        let cases: Vec<Case> = vec![
            (
                vec![
                    family("tether_agent_up", Gauge, &[&[]]),
                    family("ok", Gauge, &[&[]]),
                ],
                vec![("ok", Gauge, 1)],
                DropReason::ReservedName,
                1,
            ),
            (
                vec![
                    family("hh_count", Gauge, &[&[]]),
                    family("hh", Histogram, &[&[]]),
                ],
                vec![("hh", Histogram, 1)],
                DropReason::NameCollision,
                1,
            ),
            (
                vec![
                    family("hh", Histogram, &[&[]]),
                    family("hh_bucket", Gauge, &[&[("le", "1")]]),
                ],
                vec![("hh", Histogram, 1)],
                DropReason::NameCollision,
                1,
            ),
            (
                vec![
                    family("c_total", Gauge, &[&[]]),
                    family("c", Counter, &[&[]]),
                ],
                vec![("c", Counter, 1)],
                DropReason::NameCollision,
                1,
            ),
            (
                vec![
                    {
                        let mut counter = family("x", Counter, &[&[]]);
                        if let Value::Counter(c) = &mut counter.series[0].value {
                            c.created = Some(1.0);
                        }
                        counter
                    },
                    family("x_created", Gauge, &[&[]]),
                ],
                vec![("x", Counter, 1)],
                DropReason::NameCollision,
                1,
            ),
            (
                vec![family("x", Info, &[&[]]), family("x_info", Gauge, &[&[]])],
                vec![("x", Info, 1)],
                DropReason::NameCollision,
                1,
            ),
            (
                vec![
                    family("x_total", Counter, &[&[]]),
                    family("x", Gauge, &[&[], &[("a", "1")]]),
                ],
                vec![("x_total", Counter, 1)],
                DropReason::TypeConflict,
                2,
            ),
            (
                vec![family("h", Histogram, &[&[("le", "0.5")], &[("k", "v")]])],
                vec![("h", Histogram, 1)],
                DropReason::ReservedLabel,
                1,
            ),
            (
                vec![family("s", Summary, &[&[("quantile", "0.5")], &[]])],
                vec![("s", Summary, 1)],
                DropReason::ReservedLabel,
                1,
            ),
            (
                vec![family("g", Gauge, &[&[("__name__", "x")], &[]])],
                vec![("g", Gauge, 1)],
                DropReason::ReservedLabel,
                1,
            ),
            (
                vec![family(
                    "g",
                    Gauge,
                    &[&[("a", "1"), ("b", "2")], &[("b", "2"), ("a", "1")]],
                )],
                vec![("g", Gauge, 1)],
                DropReason::Duplicate,
                1,
            ),
        ];
        for (sent, kept, reason, dropped) in cases {
            let mut drops = Drops::default();
            let families = Families::normalize(sent.clone(), None, Origin::Peer, &mut drops);
            assert_eq!(names(&families), kept, "{sent:?}");
            assert_eq!(drops.get(reason), dropped, "{sent:?}: {drops:?}");
        }
    }

    #[test]
    fn the_same_family_twice_is_merged_and_the_gateway_may_write_its_names() {
        let mut drops = Drops::default();
        let families = Families::normalize(
            vec![
                family("x", MetricType::Counter, &[&[("a", "1")]]),
                family("x_total", MetricType::Counter, &[&[("a", "2")]]),
            ],
            None,
            Origin::Peer,
            &mut drops,
        );
        assert_eq!(names(&families), [("x", MetricType::Counter, 2)]);
        assert!(drops.is_empty());
        // A text client's counter and its `_created` gauge: the counter
        // writes no `_created` sample, so both are kept.
        let text_client = Families::normalize(
            vec![
                family("pc_total", MetricType::Counter, &[&[]]),
                family("pc_created", MetricType::Gauge, &[&[]]),
            ],
            None,
            Origin::Peer,
            &mut drops,
        );
        assert_eq!(text_client.n_series(), 2);
        assert!(drops.is_empty());
        let own = Families::normalize(
            vec![family("tether_agent_up", MetricType::Gauge, &[&[]])],
            None,
            Origin::Gateway,
            &mut drops,
        );
        assert_eq!(own.n_series(), 1);
    }

    #[test]
    fn labels_clashing_with_the_target_are_exported_without_making_duplicates() {
        let target = TargetLabels::new(vec![Label::new("job", "j"), Label::new("instance", "i")]);
        let mut drops = Drops::default();
        // `{instance="x"}` becomes `{exported_instance="x"}`, which the
        // second series already is: one of them is a duplicate.
        let families = Families::normalize(
            vec![family(
                "g",
                MetricType::Gauge,
                &[
                    &[("instance", "x")],
                    &[("exported_instance", "x")],
                    &[("instance", "y")],
                ],
            )],
            Some(&target),
            Origin::Peer,
            &mut drops,
        );
        let series = &families.as_slice()[0].series;
        assert_eq!(series.len(), 2);
        assert_eq!(drops.get(DropReason::Duplicate), 1);
        assert!(
            series
                .iter()
                .all(|s| s.labels.iter().all(|l| l.name != "instance"))
        );
    }
}
