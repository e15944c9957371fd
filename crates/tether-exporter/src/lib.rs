//! A `metrics` recorder over an aggregated registry, with a live TCP event stream.
//!
//! [`ExporterBuilder`] builds a [`TetherRecorder`]: counters, gauges and
//! histograms (with buckets chosen per metric name) aggregated in memory,
//! and read through an [`ExporterHandle`] as Prometheus families
//! ([`ExporterHandle::families`]) or text ([`ExporterHandle::render`]).
//!
//! With [`ExporterBuilder::with_stream_listener`] it also serves the event
//! stream of `metrics-exporter-tcp`, which `metrics-observer` and
//! `tether observe` read: varint length-delimited `event.proto.Event`
//! messages. A new client gets every description and the current value of
//! every counter and gauge, then the changes. Changes go out every flush
//! interval as absolute values (`set_counter`, `set_gauge`), so that
//! recording stays a single atomic operation with clients attached and a
//! client's totals are exact even after it lost events to a full queue;
//! histogram samples go out one by one (`record_histogram`).
//!
//! # Names
//!
//! The exposition needs valid Prometheus names, so each character of a
//! metric name that Prometheus does not accept at its place becomes `_`
//! (`http.requests` is exported as `http_requests`, `1xx` as `_xx`), and so
//! do label names; label values are kept and escaped. Counters keep the
//! name they were given: `_total` is neither added nor removed (OpenMetrics
//! output adds it to the sample name, as that format requires). The event
//! stream carries names and labels exactly as given.
//!
//! # Cost
//!
//! Recording through a handle touches only atomics: a counter increment
//! is one `fetch_add`, a gauge set one `store`, a histogram sample one
//! bucket `fetch_add`, one compare-and-swap on the sum and, while a stream
//! client is attached, one `fetch_add` and one compare-and-swap into a
//! bounded lock-free buffer (only the `fetch_add` once it is full). Nothing on
//! that path allocates, locks, blocks or does IO. `BENCHMARKS.md` at the
//! root of the workspace has the figures.

mod agent;
mod builder;
mod cells;
mod error;
mod handle;
mod matcher;
mod recorder;
mod registry;
mod samples;
mod sanitize;
mod stream;

pub use agent::{
    Agent, AgentBuilder, AgentError, AgentState, AgentTls, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FIRST_BACKOFF, DEFAULT_MAX_BACKOFF, FamiliesSource,
};
pub use builder::{DEFAULT_BUCKETS, ExporterBuilder, ExporterFuture};
pub use error::Error;
pub use handle::ExporterHandle;
pub use matcher::Matcher;
pub use recorder::TetherRecorder;
pub use stream::{
    DEFAULT_MAX_STREAM_CLIENTS, DEFAULT_STREAM_ADDR, DEFAULT_STREAM_CLIENT_BUFFER_BYTES,
    DEFAULT_STREAM_CLIENT_BUFFER_MESSAGES, DEFAULT_STREAM_CLIENT_WRITE_TIMEOUT_MS,
    DEFAULT_STREAM_FLUSH_INTERVAL_MS, DEFAULT_STREAM_HISTOGRAM_BUFFER_SAMPLES,
    DEFAULT_STREAM_SHUTDOWN_TIMEOUT_MS, StreamStats,
};
pub use tether_model::Format;
