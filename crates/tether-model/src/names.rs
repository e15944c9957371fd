//! Names as they are written: the key that groups a family across sources,
//! every name a family writes in either format, reserved labels, and the
//! one sanitizer that turns foreign names into Prometheus names.
//!
//! A counter is named after its sample in the model (`requests_total`) but
//! written as `requests` on OpenMetrics `# TYPE` lines, and a histogram
//! `hh` writes `hh_bucket`, `hh_count` and `hh_sum`. Two families that
//! write one name, in either format, cannot both be in one exposition: a
//! strict scraper rejects it. The functions here are what a merge and a
//! validator use to find those collisions, so both refuse the same cases.

use std::borrow::Cow;

use crate::model::{MetricFamily, MetricType};

/// The name that identifies a family in an exposition, whatever the
/// format: the OpenMetrics family name. A counter loses its `_total`
/// (`requests_total` and `requests` are one counter family); every other
/// type keeps its name.
pub fn family_key(name: &str, metric_type: MetricType) -> &str {
    match metric_type {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// The suffixes a family of `metric_type` appends to its key for its
/// sample lines, in text 0.0.4 or OpenMetrics. The key itself (suffix
/// `""`) is always written too: on `# TYPE` lines, or as a sample name.
pub fn sample_suffixes(metric_type: MetricType) -> &'static [&'static str] {
    match metric_type {
        MetricType::Counter => &["", "_total", "_created"],
        MetricType::Histogram => &["", "_bucket", "_count", "_sum", "_created"],
        MetricType::GaugeHistogram => &["", "_bucket", "_count", "_sum", "_gcount", "_gsum"],
        MetricType::Summary => &["", "_count", "_sum", "_created"],
        MetricType::Info => &["", "_info"],
        MetricType::Gauge | MetricType::StateSet | MetricType::Unknown => &[""],
    }
}

/// Every name a family called `name` of `metric_type` writes, in text
/// 0.0.4 or OpenMetrics: metadata names and sample names. Two families
/// whose sets meet collide.
pub fn exposition_names(name: &str, metric_type: MetricType) -> impl Iterator<Item = String> {
    let key = family_key(name, metric_type);
    sample_suffixes(metric_type)
        .iter()
        .map(move |suffix| format!("{key}{suffix}"))
}

/// Whether `a` and `b`, the keys and types of two families, write a name
/// in common, with no allocation. Equal keys always collide.
pub fn keys_collide(a: (&str, MetricType), b: (&str, MetricType)) -> bool {
    // Names written are `key + suffix`; two collide when one key is the
    // other plus the difference of two suffixes.
    let (long, short) = if a.0.len() >= b.0.len() {
        (a, b)
    } else {
        (b, a)
    };
    let Some(rest) = long.0.strip_prefix(short.0) else {
        return false;
    };
    sample_suffixes(short.1).iter().any(|short_suffix| {
        short_suffix
            .strip_prefix(rest)
            .is_some_and(|remaining| sample_suffixes(long.1).contains(&remaining))
    })
}

/// Why a label cannot be on a series of a family of some type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedLabel {
    /// `le` on a histogram: the bucket bound is written under that name.
    Le,
    /// `quantile` on a summary: the quantile is written under that name.
    Quantile,
    /// A name starting with `__`, which Prometheus keeps for itself.
    DoubleUnderscore,
}

impl ReservedLabel {
    /// A short explanation, for error messages.
    pub fn explain(self) -> &'static str {
        match self {
            ReservedLabel::Le => "`le` is reserved on histograms for the bucket bound",
            ReservedLabel::Quantile => "`quantile` is reserved on summaries",
            ReservedLabel::DoubleUnderscore => {
                "label names starting with `__` are reserved for Prometheus"
            }
        }
    }
}

/// Whether a series of a `metric_type` family may not carry a label `name`.
pub fn reserved_label(metric_type: MetricType, name: &str) -> Option<ReservedLabel> {
    if name.starts_with("__") {
        return Some(ReservedLabel::DoubleUnderscore);
    }
    match (metric_type, name) {
        (MetricType::Histogram | MetricType::GaugeHistogram, "le") => Some(ReservedLabel::Le),
        (MetricType::Summary, "quantile") => Some(ReservedLabel::Quantile),
        _ => None,
    }
}

/// A family of `families` that collides with an earlier one: it writes a
/// name the earlier one writes (or has its key with another type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCollision {
    /// Index of the family left out.
    pub family: usize,
    /// Index of the family kept, which it collides with.
    pub with: usize,
    /// True when both have one key and different types, false when a
    /// sample name of one is a name of the other.
    pub type_conflict: bool,
}

/// The collisions among `families`, in the order a merge resolves them:
/// families are taken by key, shortest first (so a histogram `hh` keeps
/// its `hh_count` against a gauge of that name, and a counter `c` its
/// `c_total`), the earlier of equal keys first; each one that collides
/// with a family already kept is left out. Families with one key and one
/// type do not collide: they are one family, to be merged.
pub fn name_collisions(families: &[MetricFamily]) -> Vec<NameCollision> {
    let mut order: Vec<usize> = (0..families.len()).collect();
    let key = |i: usize| family_key(&families[i].name, families[i].metric_type);
    order.sort_by(|&a, &b| key(a).cmp(key(b)).then(a.cmp(&b)));
    let mut kept = KeptNames::default();
    let mut collisions = Vec::new();
    for index in order {
        let family = &families[index];
        if let Some(with) = kept.collision(&family.name, family.metric_type, index) {
            collisions.push(NameCollision {
                family: index,
                with: with.0,
                type_conflict: with.1,
            });
        }
    }
    collisions
}

/// The names written by the families kept so far, for a merge that takes
/// families in key order.
#[derive(Debug, Default)]
pub struct KeptNames {
    /// Written name -> (owner's index, owner's key, owner's type).
    owners: std::collections::HashMap<String, (usize, MetricType, String)>,
}

impl KeptNames {
    /// Files a family unless it collides with one kept; answers the kept
    /// family it collides with (its index, and whether the collision is a
    /// type conflict on one key). A family with the key and type of a kept
    /// one is the same family: it is accepted and answers `None`.
    pub fn collision(
        &mut self,
        name: &str,
        metric_type: MetricType,
        index: usize,
    ) -> Option<(usize, bool)> {
        self.collision_written(name, metric_type, index, true)
    }

    /// As [`collision`](Self::collision), for a family that writes its
    /// `_created` samples only if `writes_created` (a counter, histogram
    /// or summary with a creation time on some series). One without them
    /// leaves `<key>_created` free: the text format's clients push a gauge
    /// of that name beside their counters, and it clashes with nothing.
    pub fn collision_written(
        &mut self,
        name: &str,
        metric_type: MetricType,
        index: usize,
        writes_created: bool,
    ) -> Option<(usize, bool)> {
        let key = family_key(name, metric_type);
        let names: Vec<String> = exposition_names(name, metric_type)
            .filter(|written| writes_created || !written.ends_with("_created") || written == key)
            .collect();
        for written in &names {
            if let Some((owner, owner_type, owner_key)) = self.owners.get(written) {
                if owner_key == key && *owner_type == metric_type {
                    continue;
                }
                return Some((*owner, owner_key == key));
            }
        }
        for written in names {
            self.owners
                .entry(written)
                .or_insert_with(|| (index, metric_type, key.to_owned()));
        }
        None
    }
}

/// Returns `name` as a valid Prometheus metric name: each character not
/// allowed at its position becomes one `_` (`http.requests` becomes
/// `http_requests`, `1xx` becomes `_xx`), and an empty name becomes `_`.
/// Metric names allow `[a-zA-Z_:]` first and `[a-zA-Z0-9_:]` after. This is
/// the rule of `metrics-exporter-prometheus`, so names are the ones its
/// users know.
pub fn sanitize_metric_name(name: &str) -> Cow<'_, str> {
    sanitize(name, true)
}

/// Returns `name` as a valid Prometheus label name: the rule of
/// [`sanitize_metric_name`] without `:`. Label values are never changed.
pub fn sanitize_label_name(name: &str) -> Cow<'_, str> {
    sanitize(name, false)
}

fn valid_char(c: char, first: bool, colon: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
}

fn sanitize(name: &str, colon: bool) -> Cow<'_, str> {
    if name.is_empty() {
        return Cow::Borrowed("_");
    }
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| valid_char(c, i == 0, colon));
    if valid {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.chars()
            .enumerate()
            .map(|(i, c)| if valid_char(c, i == 0, colon) { c } else { '_' })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_drop_the_counter_suffix_only() {
        assert_eq!(family_key("x_total", MetricType::Counter), "x");
        assert_eq!(family_key("x", MetricType::Counter), "x");
        assert_eq!(family_key("x_total", MetricType::Gauge), "x_total");
    }

    #[test]
    fn exposition_names_cover_both_formats() {
        let names: Vec<String> = exposition_names("x_total", MetricType::Counter).collect();
        assert_eq!(names, ["x", "x_total", "x_created"]);
        let names: Vec<String> = exposition_names("i", MetricType::Info).collect();
        assert_eq!(names, ["i", "i_info"]);
    }

    #[test]
    fn collisions_match_the_written_names() {
        use MetricType::*;
        let cases = [
            (("x", Counter), ("x", Gauge), true),
            (("hh", Histogram), ("hh_count", Gauge), true),
            (("hh", Histogram), ("hh_bucket", Gauge), true),
            (("c", Counter), ("c_total", Gauge), true),
            (("x", Counter), ("x_created", Gauge), true),
            (("x", Info), ("x_info", Gauge), true),
            (("x", Gauge), ("x_created", Gauge), false),
            (("x", Gauge), ("xy", Gauge), false),
            (("a", Summary), ("a_counts", Gauge), false),
            (("a", Summary), ("a_count_total", Counter), true),
            (("a_count", Counter), ("a", Summary), true),
            (("h", Histogram), ("h_sum", Summary), true),
            (("h", Histogram), ("h_sums", Summary), false),
            (("h", Histogram), ("h", Summary), true),
        ];
        for (a, b, expected) in cases {
            let a = (family_key(a.0, a.1), a.1);
            let b = (family_key(b.0, b.1), b.1);
            assert_eq!(keys_collide(a, b), expected, "{a:?} {b:?}");
            assert_eq!(keys_collide(b, a), expected, "{b:?} {a:?}");
            // The allocation-free test agrees with the written names.
            let written_a: Vec<String> = exposition_names(a.0, a.1).collect();
            let meets = exposition_names(b.0, b.1).any(|n| written_a.contains(&n));
            assert_eq!(meets, expected, "{a:?} {b:?}");
        }
    }

    #[test]
    fn the_shorter_key_keeps_its_names() {
        let families = [
            MetricFamily::new("hh_count", MetricType::Gauge),
            MetricFamily::new("hh", MetricType::Histogram),
            MetricFamily::new("x", MetricType::Gauge),
            MetricFamily::new("x_total", MetricType::Counter),
            MetricFamily::new("x", MetricType::Counter),
        ];
        let collisions = name_collisions(&families);
        assert_eq!(
            collisions,
            [
                NameCollision {
                    family: 0,
                    with: 1,
                    type_conflict: false
                },
                NameCollision {
                    family: 3,
                    with: 2,
                    type_conflict: true
                },
                NameCollision {
                    family: 4,
                    with: 2,
                    type_conflict: true
                },
            ]
        );
    }

    #[test]
    fn reserved_labels_depend_on_the_type() {
        assert_eq!(
            reserved_label(MetricType::Histogram, "le"),
            Some(ReservedLabel::Le)
        );
        assert_eq!(reserved_label(MetricType::Gauge, "le"), None);
        assert_eq!(
            reserved_label(MetricType::Summary, "quantile"),
            Some(ReservedLabel::Quantile)
        );
        assert_eq!(
            reserved_label(MetricType::Gauge, "__name__"),
            Some(ReservedLabel::DoubleUnderscore)
        );
    }

    #[test]
    fn sanitizing_follows_the_documented_rule() {
        let cases = [
            ("requests_total", "requests_total"),
            ("http.requests", "http_requests"),
            ("ns:sub:metric", "ns:sub:metric"),
            ("1xx", "_xx"),
            ("a-b c", "a_b_c"),
            ("naïve", "na_ve"),
            ("", "_"),
            ("_9", "_9"),
        ];
        for (given, expected) in cases {
            assert_eq!(sanitize_metric_name(given), expected, "{given:?}");
        }
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name("9lives"), "_lives");
    }
}
