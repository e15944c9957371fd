//! Turning `metrics` names and labels into valid Prometheus names.
//!
//! Names follow tether-model's one rule (`sanitize_metric_name`, tested
//! there): each character Prometheus does not accept at its position
//! becomes one `_` (`http.requests` becomes `http_requests`, `1xx` becomes
//! `_xx`), the rule of `metrics-exporter-prometheus`, so names are the ones
//! its users know. Label values are never changed: the renderer escapes
//! them.

use std::borrow::Cow;

use metrics::Key;
use tether_model::Label;

/// Returns `name` as a valid Prometheus metric name, by the one rule of
/// `tether_model::sanitize_metric_name`.
pub(crate) fn metric_name(name: &str) -> Cow<'_, str> {
    tether_model::sanitize_metric_name(name)
}

/// Returns `name` as a valid Prometheus label name, by the one rule of
/// `tether_model::sanitize_label_name`.
pub(crate) fn label_name(name: &str) -> Cow<'_, str> {
    tether_model::sanitize_label_name(name)
}

/// The exposition labels of `key`: names sanitized, sorted by name, and
/// one label per name (the last one given wins, as in the event stream,
/// whose label map keeps the last). A histogram's own `le` label is renamed
/// `exported_le`, as Prometheus renames clashing target labels.
pub(crate) fn labels(key: &Key, histogram: bool) -> Box<[Label]> {
    let mut labels: Vec<Label> = key
        .labels()
        .map(|label| {
            let name = label_name(label.key());
            let name = if histogram && name == "le" {
                "exported_le".to_owned()
            } else {
                name.into_owned()
            };
            Label {
                name,
                value: label.value().to_owned(),
            }
        })
        .collect();
    // A stable sort keeps equal names in the order given, so the last of a
    // run is the last one given.
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    let mut deduplicated: Vec<Label> = Vec::with_capacity(labels.len());
    for label in labels {
        match deduplicated.last_mut() {
            Some(previous) if previous.name == label.name => *previous = label,
            _ => deduplicated.push(label),
        }
    }
    deduplicated.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_unique_with_the_last_winning() {
        let key = Key::from_parts(
            "m",
            vec![
                metrics::Label::new("z", "1"),
                metrics::Label::new("a-b", "first"),
                metrics::Label::new("a_b", "second"),
                metrics::Label::new("le", "x"),
            ],
        );
        let labels = labels(&key, true);
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(pairs, [("a_b", "second"), ("exported_le", "x"), ("z", "1")]);
        let plain = super::labels(
            &Key::from_parts("m", vec![metrics::Label::new("le", "x")]),
            false,
        );
        assert_eq!(plain[0].name, "le");
    }
}
