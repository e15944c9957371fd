//! `ExporterBuilder`: configuring, building and installing the recorder.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::cells::StreamGate;
use crate::error::Error;
use crate::handle::ExporterHandle;
use crate::matcher::Matcher;
use crate::recorder::{Inner, StreamParts, TetherRecorder};
use crate::registry::{BucketConfig, Index, SharedIndex, TetherStorage};
use crate::stream::{
    self, DEFAULT_MAX_STREAM_CLIENTS, DEFAULT_STREAM_CLIENT_BUFFER_BYTES,
    DEFAULT_STREAM_CLIENT_BUFFER_MESSAGES, DEFAULT_STREAM_CLIENT_WRITE_TIMEOUT_MS,
    DEFAULT_STREAM_FLUSH_INTERVAL_MS, DEFAULT_STREAM_HISTOGRAM_BUFFER_SAMPLES,
    DEFAULT_STREAM_SHUTDOWN_TIMEOUT_MS, MIN_STREAM_CLIENT_BUFFER_BYTES, StreamConfig, StreamShared,
};

/// Prometheus' default histogram buckets, the same as every official client's.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The future that runs the stream server, from [`ExporterBuilder::build`].
///
/// It completes when the server stops (after [`ExporterHandle::shutdown`]
/// or the builder's shutdown token), or at once when no stream listener is
/// configured. Run it on a Tokio runtime with IO and time enabled.
pub type ExporterFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'static>>;

/// Builds a [`TetherRecorder`], in the manner of `metrics-exporter-prometheus`.
///
/// ```
/// use tether_exporter::{ExporterBuilder, Format, Matcher};
///
/// let recorder = ExporterBuilder::new()
///     .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &[1024.0, 65536.0])?
///     .build_recorder();
/// let handle = recorder.handle();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::counter!("jobs_done_total", "queue" => "mail").increment(3);
/// });
/// let text = String::from_utf8(handle.render(Format::Text)).expect("UTF-8");
/// assert!(text.contains("jobs_done_total{queue=\"mail\"} 3\n"));
/// # Ok::<(), tether_exporter::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ExporterBuilder {
    buckets: Vec<f64>,
    bucket_overrides: Vec<(Matcher, Vec<f64>)>,
    stream_addr: Option<SocketAddr>,
    max_stream_clients: usize,
    stream_client_buffer_messages: usize,
    stream_client_buffer_bytes: usize,
    stream_flush_interval: Duration,
    stream_histogram_buffer_samples: usize,
    stream_client_write_timeout: Duration,
    stream_shutdown_timeout: Duration,
    shutdown: Option<CancellationToken>,
}

impl Default for ExporterBuilder {
    fn default() -> Self {
        ExporterBuilder::new()
    }
}

impl ExporterBuilder {
    /// A builder with the default buckets and no stream listener.
    pub fn new() -> ExporterBuilder {
        ExporterBuilder {
            buckets: DEFAULT_BUCKETS.to_vec(),
            bucket_overrides: Vec::new(),
            stream_addr: None,
            max_stream_clients: DEFAULT_MAX_STREAM_CLIENTS,
            stream_client_buffer_messages: DEFAULT_STREAM_CLIENT_BUFFER_MESSAGES,
            stream_client_buffer_bytes: DEFAULT_STREAM_CLIENT_BUFFER_BYTES,
            stream_flush_interval: Duration::from_millis(DEFAULT_STREAM_FLUSH_INTERVAL_MS),
            stream_histogram_buffer_samples: DEFAULT_STREAM_HISTOGRAM_BUFFER_SAMPLES,
            stream_client_write_timeout: Duration::from_millis(
                DEFAULT_STREAM_CLIENT_WRITE_TIMEOUT_MS,
            ),
            stream_shutdown_timeout: Duration::from_millis(DEFAULT_STREAM_SHUTDOWN_TIMEOUT_MS),
            shutdown: None,
        }
    }

    /// Sets the buckets of every histogram no matcher picks out. Defaults
    /// to [`DEFAULT_BUCKETS`].
    ///
    /// # Errors
    ///
    /// [`Error::EmptyBuckets`] or [`Error::InvalidBucket`] unless the bounds
    /// are finite and strictly increasing (`+Inf` is always added).
    pub fn set_buckets(mut self, bounds: &[f64]) -> Result<Self, Error> {
        check_buckets(bounds)?;
        self.buckets = bounds.to_vec();
        Ok(self)
    }

    /// Sets the buckets of the histograms whose (sanitized) name `matcher`
    /// matches. Matchers are tried in the order they were set; the first
    /// that matches wins.
    ///
    /// # Errors
    ///
    /// As [`set_buckets`](Self::set_buckets).
    pub fn set_buckets_for_metric(
        mut self,
        matcher: Matcher,
        bounds: &[f64],
    ) -> Result<Self, Error> {
        check_buckets(bounds)?;
        self.bucket_overrides
            .push((matcher.sanitized(), bounds.to_vec()));
        Ok(self)
    }

    /// Serves the live event stream on `addr` (see
    /// [`DEFAULT_STREAM_ADDR`](crate::DEFAULT_STREAM_ADDR)); port 0 picks a
    /// free port, which [`ExporterHandle::stream_local_addr`] reports.
    pub fn with_stream_listener(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.stream_addr = Some(addr.into());
        self
    }

    /// Sets how many stream clients may be connected at once (default
    /// [`DEFAULT_MAX_STREAM_CLIENTS`](crate::DEFAULT_MAX_STREAM_CLIENTS));
    /// the next is refused and counted.
    pub fn max_stream_clients(mut self, max_clients: usize) -> Self {
        self.max_stream_clients = max_clients;
        self
    }

    /// Sets how many events each client's queue holds (default
    /// [`DEFAULT_STREAM_CLIENT_BUFFER_MESSAGES`](crate::DEFAULT_STREAM_CLIENT_BUFFER_MESSAGES));
    /// past it the oldest are dropped and counted.
    pub fn stream_client_buffer_messages(mut self, max_events: usize) -> Self {
        self.stream_client_buffer_messages = max_events;
        self
    }

    /// Sets how many bytes each client's queue holds (default
    /// [`DEFAULT_STREAM_CLIENT_BUFFER_BYTES`](crate::DEFAULT_STREAM_CLIENT_BUFFER_BYTES),
    /// at least 64 KiB); past it the oldest events are dropped and counted.
    pub fn stream_client_buffer_bytes(mut self, max_bytes: usize) -> Self {
        self.stream_client_buffer_bytes = max_bytes;
        self
    }

    /// Sets how often changes go out to stream clients (default
    /// [`DEFAULT_STREAM_FLUSH_INTERVAL_MS`](crate::DEFAULT_STREAM_FLUSH_INTERVAL_MS)).
    pub fn stream_flush_interval(mut self, interval: Duration) -> Self {
        self.stream_flush_interval = interval;
        self
    }

    /// Sets how many samples each histogram buffers between two flushes
    /// while a client is attached (default
    /// [`DEFAULT_STREAM_HISTOGRAM_BUFFER_SAMPLES`](crate::DEFAULT_STREAM_HISTOGRAM_BUFFER_SAMPLES));
    /// past it new samples are dropped from the stream and counted.
    pub fn stream_histogram_buffer_samples(mut self, samples: usize) -> Self {
        self.stream_histogram_buffer_samples = samples;
        self
    }

    /// Sets how long writing one chunk of events (at most 64 KiB) to a
    /// client may take before it is disconnected (default
    /// [`DEFAULT_STREAM_CLIENT_WRITE_TIMEOUT_MS`](crate::DEFAULT_STREAM_CLIENT_WRITE_TIMEOUT_MS)).
    pub fn stream_client_write_timeout(mut self, timeout: Duration) -> Self {
        self.stream_client_write_timeout = timeout;
        self
    }

    /// Sets how long a graceful shutdown waits for clients to receive what
    /// is queued (default
    /// [`DEFAULT_STREAM_SHUTDOWN_TIMEOUT_MS`](crate::DEFAULT_STREAM_SHUTDOWN_TIMEOUT_MS)).
    pub fn stream_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.stream_shutdown_timeout = timeout;
        self
    }

    /// Stops the stream server when `token` is cancelled, as well as on
    /// [`ExporterHandle::shutdown`].
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// Builds the recorder and, when a stream listener is configured,
    /// binds it and returns the future that serves it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for a stream setting that cannot work, and
    /// [`Error::BindStream`] when the listener cannot be bound.
    pub fn build(self) -> Result<(TetherRecorder, ExporterFuture), Error> {
        let config = self.stream_config()?;
        let listener = match self.stream_addr {
            Some(addr) => Some(bind(addr)?),
            None => None,
        };
        let stream = match &listener {
            Some(listener) => Some(StreamParts {
                shared: Arc::new(StreamShared::new(config)),
                local_addr: listener.local_addr().map_err(Error::StreamListener)?,
            }),
            None => None,
        };
        let inner = self.inner(stream);
        let recorder = TetherRecorder::new(Arc::clone(&inner));
        let future: ExporterFuture = match (listener, &inner.stream) {
            (Some(listener), Some(stream)) => {
                let index = Arc::clone(&inner.index);
                let gate = Arc::clone(&inner.gate);
                let shared = Arc::clone(&stream.shared);
                let shutdown = inner.shutdown.clone();
                Box::pin(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(Error::StreamListener)?;
                    stream::run(listener, index, gate, shared, shutdown).await;
                    Ok(())
                })
            }
            _ => Box::pin(async { Ok(()) }),
        };
        Ok((recorder, future))
    }

    /// Builds the recorder alone, without a stream server, whatever the
    /// stream settings say.
    pub fn build_recorder(self) -> TetherRecorder {
        TetherRecorder::new(self.inner(None))
    }

    /// Builds the recorder, starts the stream server (on the current Tokio
    /// runtime, or on a thread of its own named `tether-exporter` when
    /// there is none) and installs the recorder globally.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build); [`Error::Runtime`] when no runtime can be
    /// started, and [`Error::RecorderAlreadyInstalled`] when another global
    /// recorder is in place (the stream server is then stopped again).
    pub fn install(self) -> Result<ExporterHandle, Error> {
        let has_stream = self.stream_addr.is_some();
        let (recorder, future) = self.build()?;
        let handle = recorder.handle();
        if has_stream {
            let logged = async move {
                if let Err(error) = future.await {
                    error!(error = %error, "tether-exporter stream server stopped");
                }
            };
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(logged);
            } else {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::Runtime)?;
                std::thread::Builder::new()
                    .name("tether-exporter".to_owned())
                    .spawn(move || runtime.block_on(logged))
                    .map_err(Error::Runtime)?;
            }
        }
        if metrics::set_global_recorder(recorder).is_err() {
            handle.shutdown();
            return Err(Error::RecorderAlreadyInstalled);
        }
        Ok(handle)
    }

    /// Builds the recorder without a stream server and installs it globally.
    ///
    /// # Errors
    ///
    /// [`Error::RecorderAlreadyInstalled`] when another global recorder is in place.
    pub fn install_recorder(self) -> Result<ExporterHandle, Error> {
        let recorder = self.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| Error::RecorderAlreadyInstalled)?;
        Ok(handle)
    }

    fn stream_config(&self) -> Result<StreamConfig, Error> {
        let at_least = |name: &'static str, value: u64, min: u64| {
            if value < min {
                Err(Error::InvalidLimit { name, min, value })
            } else {
                Ok(())
            }
        };
        at_least("max_stream_clients", self.max_stream_clients as u64, 1)?;
        at_least(
            "stream_client_buffer_messages",
            self.stream_client_buffer_messages as u64,
            2,
        )?;
        at_least(
            "stream_client_buffer_bytes",
            self.stream_client_buffer_bytes as u64,
            MIN_STREAM_CLIENT_BUFFER_BYTES as u64,
        )?;
        at_least(
            "stream_histogram_buffer_samples",
            self.stream_histogram_buffer_samples as u64,
            1,
        )?;
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        at_least(
            "stream_flush_interval",
            millis(self.stream_flush_interval),
            1,
        )?;
        at_least(
            "stream_client_write_timeout",
            millis(self.stream_client_write_timeout),
            1,
        )?;
        Ok(StreamConfig {
            max_clients: self.max_stream_clients,
            client_buffer_messages: self.stream_client_buffer_messages,
            client_buffer_bytes: self.stream_client_buffer_bytes,
            flush_interval: self.stream_flush_interval,
            client_write_timeout: self.stream_client_write_timeout,
            shutdown_timeout: self.stream_shutdown_timeout,
        })
    }

    fn inner(self, stream: Option<StreamParts>) -> Arc<Inner> {
        let reserved: &[_] = if stream.is_some() {
            &stream::RESERVED_NAMES
        } else {
            &[]
        };
        let index = Arc::new(SharedIndex::new(Index::new(reserved)));
        let gate = Arc::new(StreamGate::new(self.stream_histogram_buffer_samples));
        let buckets = BucketConfig {
            default: Arc::from(self.buckets),
            overrides: self
                .bucket_overrides
                .into_iter()
                .map(|(matcher, bounds)| (matcher, Arc::from(bounds)))
                .collect(),
        };
        let storage = TetherStorage {
            index: Arc::clone(&index),
            buckets,
            gate: Arc::clone(&gate),
        };
        let shutdown = self
            .shutdown
            .map_or_else(CancellationToken::new, |token| token.child_token());
        Arc::new(Inner {
            registry: Registry::new(storage),
            index,
            gate,
            stream,
            shutdown,
        })
    }
}

fn check_buckets(bounds: &[f64]) -> Result<(), Error> {
    if bounds.is_empty() {
        return Err(Error::EmptyBuckets);
    }
    let mut previous = f64::NEG_INFINITY;
    for (index, &bound) in bounds.iter().enumerate() {
        if !bound.is_finite() || bound <= previous {
            return Err(Error::InvalidBucket { index, bound });
        }
        previous = bound;
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| Error::BindStream { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::BindStream { addr, source })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_must_be_finite_and_increasing() {
        assert!(matches!(
            ExporterBuilder::new().set_buckets(&[]),
            Err(Error::EmptyBuckets)
        ));
        for (bounds, bad) in [
            (&[1.0, 1.0][..], 1),
            (&[2.0, 1.0][..], 1),
            (&[f64::NAN][..], 0),
            (&[1.0, f64::INFINITY][..], 1),
        ] {
            let result =
                ExporterBuilder::new().set_buckets_for_metric(Matcher::Full("x".into()), bounds);
            assert!(
                matches!(result, Err(Error::InvalidBucket { index, .. }) if index == bad),
                "{bounds:?}"
            );
        }
        assert!(
            ExporterBuilder::new()
                .set_buckets(&[-1.0, 0.0, 1.0])
                .is_ok()
        );
    }

    #[test]
    fn unworkable_stream_limits_are_refused_before_binding() {
        let builders = [
            ExporterBuilder::new().max_stream_clients(0),
            ExporterBuilder::new().stream_client_buffer_bytes(1024),
            ExporterBuilder::new().stream_client_buffer_messages(1),
            ExporterBuilder::new().stream_flush_interval(Duration::ZERO),
            ExporterBuilder::new().stream_histogram_buffer_samples(0),
        ];
        for builder in builders {
            // Port 1 would need privileges: an error here must come first.
            let result = builder.with_stream_listener(([127, 0, 0, 1], 1)).build();
            assert!(
                matches!(result, Err(Error::InvalidLimit { .. })),
                "{:?}",
                result.err()
            );
        }
    }

    #[test]
    fn a_taken_address_is_a_bind_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let addr = taken.local_addr().expect("a bound address");
        let result = ExporterBuilder::new().with_stream_listener(addr).build();
        assert!(matches!(result, Err(Error::BindStream { addr: a, .. }) if a == addr));
    }
}
