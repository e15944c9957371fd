//! Choosing histogram buckets by metric name.

use crate::sanitize;

/// Matches a metric name, to give the histograms it names their own buckets.
///
/// Both the matcher's text and the metric name are sanitized first (see
/// [`ExporterBuilder`](crate::ExporterBuilder) for the rule), so
/// `Matcher::Prefix("http.".into())` matches `http.latency` and
/// `http_latency` alike, as in `metrics-exporter-prometheus`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Matcher {
    /// Matches the whole name.
    Full(String),
    /// Matches names that start with the text.
    Prefix(String),
    /// Matches names that end with the text.
    Suffix(String),
}

impl Matcher {
    /// Whether `name` (already sanitized) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Full(full) => name == full,
            Matcher::Prefix(prefix) => name.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => name.ends_with(suffix.as_str()),
        }
    }

    /// The same matcher with its text sanitized like a metric name.
    ///
    /// Only a whole name is sanitized as a name: the text of a prefix or
    /// suffix may start with a digit, and stays a fragment.
    pub(crate) fn sanitized(self) -> Matcher {
        match self {
            Matcher::Full(full) => Matcher::Full(sanitize::metric_name(&full).into_owned()),
            Matcher::Prefix(prefix) => Matcher::Prefix(sanitize_fragment(&prefix)),
            Matcher::Suffix(suffix) => Matcher::Suffix(sanitize_fragment(&suffix)),
        }
    }
}

/// Sanitizes part of a name: every character outside `[a-zA-Z0-9_:]`
/// becomes `_`, wherever it stands.
fn sanitize_fragment(fragment: &str) -> String {
    fragment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Matcher;

    #[test]
    fn matchers_match_sanitized_names() {
        let table = [
            (Matcher::Full("http.latency".into()), "http_latency", true),
            (
                Matcher::Full("http.latency".into()),
                "http_latency_x",
                false,
            ),
            (Matcher::Prefix("http.".into()), "http_latency", true),
            (Matcher::Prefix("rpc".into()), "http_latency", false),
            (Matcher::Suffix(".seconds".into()), "db_query_seconds", true),
            (Matcher::Suffix("2xx".into()), "status_2xx", true),
            (Matcher::Suffix("_bytes".into()), "db_query_seconds", false),
        ];
        for (matcher, name, expected) in table {
            assert_eq!(
                matcher.clone().sanitized().matches(name),
                expected,
                "{matcher:?} on {name}"
            );
        }
    }
}
