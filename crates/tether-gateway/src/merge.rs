//! Merging families from many sources into one valid exposition.
//!
//! Sources (connected agents, final pushes, the gateway itself) each hand
//! in families with the target labels that identify them. The merge writes
//! exactly one HELP/TYPE per family name, in name order, then every
//! source's series of that family with the source's labels added. A family
//! whose type differs from the first source's is left out for that source
//! and counted: the output is always an exposition a strict scraper takes.

use std::collections::BTreeMap;

use tether_model::{
    Format, MetricFamily, TargetLabels, render_end, render_metadata, render_series,
};

/// One source's families and the labels that identify it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceRef<'a> {
    /// The families, each name at most once.
    pub(crate) families: &'a [MetricFamily],
    /// Labels added to every series (`job`, `instance`), if any.
    pub(crate) target: Option<&'a TargetLabels>,
}

/// What a merge left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MergeStats {
    /// Families dropped from a source because their type conflicted with
    /// the same name from an earlier source.
    pub(crate) type_conflicts: u64,
    /// Families written.
    pub(crate) families: u64,
    /// Series written.
    pub(crate) series: u64,
}

/// Renders the merge of `sources` in `format` into `out`, ending it as the
/// format requires.
pub(crate) fn render_merged(
    sources: &[SourceRef<'_>],
    format: Format,
    out: &mut Vec<u8>,
) -> MergeStats {
    // Family name -> the (source, family) pairs that contribute to it. A
    // BTreeMap gives a deterministic order whatever order agents answered in.
    let mut by_name: BTreeMap<&str, Vec<(usize, &MetricFamily)>> = BTreeMap::new();
    for (source_index, source) in sources.iter().enumerate() {
        for family in source.families {
            by_name
                .entry(family.name.as_str())
                .or_default()
                .push((source_index, family));
        }
    }
    let mut stats = MergeStats::default();
    for parts in by_name.values() {
        // The first contributor fixes type, help and unit, as the
        // Pushgateway does; later ones must agree on the type.
        let Some(&(_, first)) = parts.first() else {
            continue;
        };
        render_metadata(first, format, out);
        stats.families += 1;
        for &(source_index, family) in parts {
            if family.metric_type != first.metric_type {
                stats.type_conflicts += 1;
                continue;
            }
            render_series(family, format, sources[source_index].target, out);
            stats.series += family.series.len() as u64;
        }
    }
    render_end(format, out);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_model::{Label, MetricType, Series, Value, parse};

    fn gauge(name: &str, help: &str, values: &[(&str, f64)]) -> MetricFamily {
        let mut family = MetricFamily::new(name, MetricType::Gauge);
        family.help = Some(help.to_owned());
        for &(label, value) in values {
            family.series.push(Series {
                labels: vec![Label::new("k", label)],
                value: Value::Single(value),
                timestamp_ms: None,
            });
        }
        family
    }

    fn target(job: &str, instance: &str) -> TargetLabels {
        TargetLabels::new(vec![
            Label::new("job", job),
            Label::new("instance", instance),
        ])
    }

    #[test]
    fn one_metadata_block_per_family_and_sources_kept_apart() {
        let a = [
            gauge("temp", "Temperature.", &[("x", 1.0)]),
            gauge("zeta", "Z.", &[("y", 2.0)]),
        ];
        let b = [gauge("temp", "Other help.", &[("x", 3.0)])];
        let (ta, tb) = (target("app", "a:1"), target("app", "b:1"));
        let sources = [
            SourceRef {
                families: &a,
                target: Some(&ta),
            },
            SourceRef {
                families: &b,
                target: Some(&tb),
            },
        ];
        let mut out = Vec::new();
        let stats = render_merged(&sources, Format::Text, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "# HELP temp Temperature.\n# TYPE temp gauge\n\
             temp{job=\"app\",instance=\"a:1\",k=\"x\"} 1\n\
             temp{job=\"app\",instance=\"b:1\",k=\"x\"} 3\n\
             # HELP zeta Z.\n# TYPE zeta gauge\n\
             zeta{job=\"app\",instance=\"a:1\",k=\"y\"} 2\n"
        );
        assert_eq!(
            stats,
            MergeStats {
                type_conflicts: 0,
                families: 2,
                series: 3
            }
        );
        // The merged output is itself a valid exposition.
        let families = parse(text.as_bytes(), Format::Text).expect("valid exposition");
        assert_eq!(families.len(), 2);
    }

    #[test]
    fn a_conflicting_type_is_dropped_from_that_source_and_counted() {
        let a = [gauge("requests", "R.", &[("x", 1.0)])];
        let mut counter = MetricFamily::new("requests", MetricType::Counter);
        counter.series.push(Series {
            labels: vec![],
            value: Value::Counter(tether_model::Counter {
                total: 5.0,
                created: None,
                exemplar: None,
            }),
            timestamp_ms: None,
        });
        let b = [counter];
        let (ta, tb) = (target("a", "1"), target("b", "2"));
        let sources = [
            SourceRef {
                families: &a,
                target: Some(&ta),
            },
            SourceRef {
                families: &b,
                target: Some(&tb),
            },
        ];
        let mut out = Vec::new();
        let stats = render_merged(&sources, Format::OpenMetrics, &mut out);
        assert_eq!(stats.type_conflicts, 1);
        let families = parse(&out, Format::OpenMetrics).expect("valid exposition");
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].series.len(), 1);
    }
}
