//! The merged view against hostile and careless sources.

use std::sync::Arc;

use tether_model::{
    Counter, Format, Label, MetricFamily, MetricType, Series, TargetLabels, Value, parse,
};

use super::*;
use crate::sources::Part;

fn series(labels: &[(&str, &str)], value: Value) -> Series {
    Series {
        labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
        value,
        timestamp_ms: None,
    }
}

fn gauge(name: &str, label_sets: &[&[(&str, &str)]]) -> MetricFamily {
    let mut family = MetricFamily::new(name, MetricType::Gauge);
    family.help = Some(format!("{name} help."));
    family.series = label_sets
        .iter()
        .map(|labels| series(labels, Value::Single(1.0)))
        .collect();
    family
}

fn counter(name: &str, label_sets: &[&[(&str, &str)]]) -> MetricFamily {
    let mut family = MetricFamily::new(name, MetricType::Counter);
    family.series = label_sets
        .iter()
        .map(|labels| {
            series(
                labels,
                Value::Counter(Counter {
                    total: 2.0,
                    created: None,
                    exemplar: None,
                }),
            )
        })
        .collect();
    family
}

fn target(pairs: &[(&str, &str)]) -> Option<Arc<TargetLabels>> {
    Some(Arc::new(TargetLabels::new(
        pairs.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
    )))
}

fn part(families: Vec<MetricFamily>, target: Option<Arc<TargetLabels>>) -> Part {
    let mut drops = Drops::default();
    let families = Families::normalize(families, target.as_deref(), Origin::Peer, &mut drops);
    assert!(drops.is_empty(), "each part is valid on its own: {drops:?}");
    Part {
        families: Arc::new(families),
        target,
    }
}

fn rendered(view: &View, format: Format) -> String {
    let mut out = Vec::new();
    view.render(format, &mut out);
    String::from_utf8(out).expect("utf-8")
}

/// The exposition parses in both formats, and each `# TYPE` name appears once.
fn assert_valid(view: &View) {
    for format in [Format::Text, Format::OpenMetrics] {
        let text = rendered(view, format);
        parse(text.as_bytes(), format).unwrap_or_else(|e| panic!("{format:?}: {e}\n{text}"));
        let mut types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let n = types.len();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), n, "one TYPE per name:\n{text}");
    }
}

#[test]
fn a_counter_x_total_and_a_gauge_x_from_two_sources_make_one_valid_exposition() {
    let view = View::build(vec![
        part(
            vec![counter("x_total", &[&[]])],
            target(&[("job", "a"), ("instance", "1")]),
        ),
        part(
            vec![gauge("x", &[&[]])],
            target(&[("job", "b"), ("instance", "2")]),
        ),
    ]);
    assert_valid(&view);
    assert_eq!(view.stats().drops.get(DropReason::TypeConflict), 1);
    assert_eq!(view.stats().series, 1);
    let text = rendered(&view, Format::OpenMetrics);
    assert!(text.contains("# TYPE x counter\n"), "{text}");
    assert!(!text.contains("gauge"), "{text}");
}

#[test]
fn the_same_family_from_two_agents_has_one_metadata_block() {
    let view = View::build(vec![
        part(
            vec![gauge("temp", &[&[("k", "v")]])],
            target(&[("job", "app"), ("instance", "a")]),
        ),
        part(
            vec![gauge("temp", &[&[("k", "v")]])],
            target(&[("job", "app"), ("instance", "b")]),
        ),
    ]);
    assert_valid(&view);
    let text = rendered(&view, Format::Text);
    assert_eq!(text.matches("# TYPE temp gauge").count(), 1, "{text}");
    assert_eq!(view.stats().series, 2);
    assert!(view.stats().drops.is_empty());
}

#[test]
fn counters_named_with_and_without_total_are_one_family() {
    let view = View::build(vec![
        part(
            vec![counter("req_total", &[&[]])],
            target(&[("job", "a"), ("instance", "1")]),
        ),
        part(
            vec![counter("req", &[&[]])],
            target(&[("job", "a"), ("instance", "2")]),
        ),
    ]);
    assert_valid(&view);
    let text = rendered(&view, Format::Text);
    assert_eq!(text.matches("req_total{").count(), 2, "{text}");
}

#[test]
fn suffix_collisions_across_sources_are_resolved_and_counted() {
    let histogram = {
        let mut family = MetricFamily::new("hh", MetricType::Histogram);
        family.series.push(series(
            &[],
            Value::Histogram(tether_model::Histogram {
                buckets: vec![tether_model::Bucket {
                    upper_bound: f64::INFINITY,
                    count: 1.0,
                    exemplar: None,
                }],
                count: Some(1.0),
                sum: Some(0.5),
                created: None,
            }),
        ));
        family
    };
    let cases: Vec<(MetricFamily, MetricFamily)> = vec![
        (histogram.clone(), gauge("hh_count", &[&[]])),
        (histogram, gauge("hh_bucket", &[&[("x", "1")]])),
        (counter("c", &[&[]]), gauge("c_total", &[&[]])),
        (
            {
                // Only a counter with creation times writes `x_created`.
                let mut created = counter("x", &[&[]]);
                if let Value::Counter(c) = &mut created.series[0].value {
                    c.created = Some(1.0);
                }
                created
            },
            gauge("x_created", &[&[]]),
        ),
    ];
    for (kept, refused) in cases {
        let name = refused.name.clone();
        // Whichever source comes first, the shorter name keeps its names.
        for flip in [false, true] {
            let mut parts = vec![
                part(
                    vec![kept.clone()],
                    target(&[("job", "a"), ("instance", "1")]),
                ),
                part(
                    vec![refused.clone()],
                    target(&[("job", "b"), ("instance", "2")]),
                ),
            ];
            if flip {
                parts.reverse();
            }
            let view = View::build(parts);
            assert_valid(&view);
            assert_eq!(
                view.stats().drops.get(DropReason::NameCollision),
                1,
                "{name} flip={flip}"
            );
            let text = rendered(&view, Format::Text);
            assert!(!text.contains(&format!("# TYPE {name} ")), "{text}");
        }
    }
}

#[test]
fn series_repeated_across_sources_are_dropped_and_counted() {
    // Identities of different label names: `{zone="z"}` of the first agent
    // and the second agent's own `zone` render the same series.
    let view = View::build(vec![
        part(
            vec![gauge("g", &[&[("zone", "z")], &[("zone", "y")]])],
            target(&[("job", "a"), ("instance", "1")]),
        ),
        part(
            vec![gauge("g", &[&[]])],
            target(&[("job", "a"), ("instance", "1"), ("zone", "z")]),
        ),
    ]);
    assert_valid(&view);
    assert_eq!(view.stats().drops.get(DropReason::Duplicate), 1);
    assert_eq!(view.stats().series, 2);
    // Two sources without target labels giving one series.
    let view = View::build(vec![
        part(vec![gauge("g", &[&[("k", "v")]])], None),
        part(vec![gauge("g", &[&[("k", "v")], &[("k", "w")]])], None),
    ]);
    assert_valid(&view);
    assert_eq!(view.stats().drops.get(DropReason::Duplicate), 1);
    assert_eq!(view.stats().series, 2);
}

#[test]
fn a_source_cannot_replace_or_hide_the_gateways_own_names() {
    let mut drops = Drops::default();
    let own = Families::normalize(
        vec![gauge(
            "tether_agent_up",
            &[&[("job", "a"), ("instance", "1")]],
        )],
        None,
        Origin::Gateway,
        &mut drops,
    );
    let view = View::build(vec![
        part(
            vec![gauge("ok", &[&[]])],
            target(&[("job", "a"), ("instance", "1")]),
        ),
        Part {
            families: Arc::new(own),
            target: None,
        },
    ]);
    assert_valid(&view);
    let mut drops = Drops::default();
    let hostile = Families::normalize(
        vec![
            gauge("tether_agent_up", &[&[]]),
            gauge("tether_scrapes_total", &[&[]]),
        ],
        target(&[("job", "evil"), ("instance", "1")]).as_deref(),
        Origin::Peer,
        &mut drops,
    );
    assert_eq!(hostile.n_series(), 0);
    assert_eq!(drops.get(DropReason::ReservedName), 2);
    let text = rendered(&view, Format::Text);
    assert_eq!(text.matches("tether_agent_up{").count(), 1, "{text}");
}
