//! The protobuf `io.prometheus.client.MetricFamily` messages and their conversions.

/// The prost messages of `io.prometheus.client`.
pub mod pb {}
