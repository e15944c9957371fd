//! Event builders shared by the observe modules' unit tests.

use tether_proto::{Event, EventMetadata, EventMetric, EventMetricType, Operation};

/// A metric event of `name` with `labels` carrying `operation`.
pub(super) fn metric(name: &str, labels: &[(&str, &str)], operation: Operation) -> Event {
    Event::from(EventMetric {
        name: name.to_owned(),
        timestamp: None,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        operation: Some(operation),
    })
}

/// A metadata event.
pub(super) fn metadata(name: &str, kind: EventMetricType, unit: &str, description: &str) -> Event {
    Event::from(EventMetadata {
        name: name.to_owned(),
        metric_type: kind as i32,
        unit: Some(unit.to_owned()),
        description: Some(description.to_owned()),
    })
}
