//! Metric families and the Prometheus exposition formats.
//!
//! `tether-model` holds the data model every part of tether speaks
//! ([`MetricFamily`], [`Series`], [`Value`]) and its codecs: a parser and a
//! renderer for the text format 0.0.4 and OpenMetrics 1.0, and the protobuf
//! `io.prometheus.client.MetricFamily` messages. It does no IO.

mod error;
mod model;
mod proto;

pub use error::{ErrorKind, Found, ParseError, ProtoError};
pub use model::{
    Bucket, Counter, Exemplar, Histogram, Label, MetricFamily, MetricType, Quantile, Series,
    Summary, Value,
};
pub use proto::pb;
