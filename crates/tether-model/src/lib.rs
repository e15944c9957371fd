//! Metric families and the Prometheus exposition formats.
//!
//! `tether-model` holds the data model every part of tether speaks
//! ([`MetricFamily`], [`Series`], [`Value`]) and its codecs: a parser and a
//! renderer for the text format 0.0.4 and OpenMetrics 1.0, and the protobuf
//! `io.prometheus.client.MetricFamily` messages. It does no IO.

mod error;
mod lint;
mod model;
mod names;
mod parse;
mod proto;
mod render;

pub use error::{ErrorKind, Found, ParseError, ProtoError};
pub use lint::{Lint, lint, lint_report};
pub use model::{
    Bucket, Counter, Exemplar, Histogram, Label, MetricFamily, MetricType, Quantile, Series,
    Summary, Value, is_valid_label_name, is_valid_metric_name,
};
pub use names::{
    KeptNames, NameCollision, ReservedLabel, exposition_names, family_key, keys_collide,
    name_collisions, reserved_label, sample_suffixes, sanitize_label_name, sanitize_metric_name,
};
pub use parse::{
    CheckReport, CheckStream, Checked, DEFAULT_MAX_FAMILIES, DEFAULT_MAX_LABELS_PER_SERIES,
    DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_SERIES, Entry, FamilyStats, Format, Limits, LinePos,
    Parser, RawExemplar, RawLabel, RawLabels, RawLabelsIter, Sample, check, parse,
    parse_with_limits,
};
pub use proto::{
    DEFAULT_MAX_MESSAGE_BYTES, decode_delimited, decode_delimited_frame, encode_delimited,
    encode_delimited_frame, from_proto, pb, to_proto,
};
pub use render::{
    TargetLabels, estimated_series_bytes, render, render_end, render_family, render_metadata,
    render_series,
};
