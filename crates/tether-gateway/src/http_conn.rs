//! One HTTP connection with deadlines: TLS handshake, request headers,
//! idle keep-alive, and a response write blocked on a client that does not
//! read. hyper serves the connection; this module decides when it ends.
//!
//! The IO is wrapped in [`Deadlined`], which notes when bytes move and
//! fails a write blocked past the write deadline. The service is wrapped
//! so that the connection knows whether a request is in flight. A
//! watchdog beside the connection closes it when a client is waiting too
//! long to send headers (a silent new connection, a one-byte-a-second
//! sender) or has sent nothing for the idle timeout between requests.
//!
//! Every connection, from accept (TLS included), is in [`Connections`]. At
//! `--max-http-connections` a new connection closes the one that has
//! waited longest with no request in flight, so silent sockets, however
//! many, never keep a real scrape waiting for a header deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::telemetry::{CloseReason, Telemetry};

/// Largest request head (request line and headers) accepted, in bytes;
/// past it HTTP/1 answers 431 and HTTP/2 refuses the stream.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// HTTP/2 flow-control window for request bodies, per stream and per
/// connection (the protocol's initial value).
const HTTP2_WINDOW_BYTES: u32 = 65_535;

/// The deadlines and limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// From accept (or the end of the last request) to a request's complete
    /// headers, when the client has started sending or never sent one.
    pub(crate) header: Duration,
    /// Between requests, with nothing in flight and no byte moving.
    pub(crate) idle: Duration,
    /// A write blocked on a client that does not read.
    pub(crate) write: Duration,
    /// Most concurrent HTTP/2 streams (requests) on the connection.
    pub(crate) http2_max_streams: u32,
}

/// Every HTTP connection open, oldest first, and the cap past which the
/// oldest with no request in flight is closed to make room.
#[derive(Debug)]
pub(crate) struct Connections {
    cap: usize,
    /// Short sections (an insert, a removal, a scan of the cap's length),
    /// never across an await.
    open: Mutex<BTreeMap<u64, (Arc<Activity>, CancellationToken)>>,
    next_id: AtomicU64,
}

impl Connections {
    /// Connections beyond `cap` evict.
    pub(crate) fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap,
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Admits a connection just accepted; at the cap, first tells the one
    /// waiting longest with no request in flight to close.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let activity = Arc::new(Activity::new());
        let evicted = CancellationToken::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock();
        if open.len() >= self.cap {
            let idle = open
                .iter()
                .filter(|(_, (activity, token))| {
                    activity.in_flight.load(Ordering::Acquire) == 0 && !token.is_cancelled()
                })
                // Those that sent nothing first, then those part way through
                // a request head (which may be about to reach the router);
                // the one waiting longest of each.
                .min_by_key(|(_, (activity, _))| {
                    (
                        activity.read_since_wait.load(Ordering::Acquire),
                        activity.waiting_since(),
                    )
                })
                .map(|(id, _)| *id);
            if let Some((_, token)) = idle.and_then(|id| open.remove(&id)) {
                token.cancel();
            }
        }
        open.insert(id, (Arc::clone(&activity), evicted.clone()));
        drop(open);
        Admitted {
            connections: Arc::clone(self),
            id,
            activity,
            evicted,
        }
    }
}

/// A connection's place in [`Connections`], given up when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
    evicted: CancellationToken,
}

impl Admitted {
    /// Cancelled when the connection is closed to make room.
    pub(crate) fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.open.lock().remove(&self.id);
    }
}

/// What the IO, the service and the watchdog of one connection share.
#[derive(Debug)]
struct Activity {
    base: Instant,
    /// Requests being answered now.
    in_flight: AtomicUsize,
    /// Milliseconds since `base` when the connection began waiting for a
    /// request: at accept, then at the end of each request.
    waiting_since_ms: AtomicU64,
    /// Whether bytes arrived since then (a request has begun).
    read_since_wait: AtomicBool,
    /// Whether a request has been answered on this connection.
    served: AtomicBool,
    /// Milliseconds since `base` of the last byte read or written.
    last_byte_ms: AtomicU64,
    /// Set when a write passed its deadline.
    write_timed_out: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            waiting_since_ms: AtomicU64::new(0),
            read_since_wait: AtomicBool::new(false),
            served: AtomicBool::new(false),
            last_byte_ms: AtomicU64::new(0),
            write_timed_out: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// When the connection began waiting for its next request.
    fn waiting_since(&self) -> Instant {
        self.at(self.waiting_since_ms.load(Ordering::Acquire))
    }

    fn touch(&self) {
        self.last_byte_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When the connection should be closed if nothing changes, and why.
    fn deadline(&self, deadlines: &ConnLimits) -> Option<(Instant, CloseReason)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let waiting_since = self.waiting_since_ms.load(Ordering::Acquire);
        if self.read_since_wait.load(Ordering::Acquire) || !self.served.load(Ordering::Acquire) {
            return Some((
                self.at(waiting_since) + deadlines.header,
                CloseReason::Header,
            ));
        }
        let last = waiting_since.max(self.last_byte_ms.load(Ordering::Relaxed));
        Some((self.at(last) + deadlines.idle, CloseReason::Idle))
    }
}

/// Marks a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.served.store(true, Ordering::Release);
        activity.read_since_wait.store(false, Ordering::Release);
        activity
            .waiting_since_ms
            .store(activity.now_ms(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// IO that notes activity and fails writes blocked past a deadline.
struct Deadlined<S> {
    inner: S,
    activity: Arc<Activity>,
    write_timeout: Duration,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Deadlined<S> {
    /// Called when a write returned Pending: arms the timer, and fails the
    /// write once it fires.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let timeout = self.write_timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_ready() {
            self.write_timer = None;
            self.activity.write_timed_out.store(true, Ordering::Release);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response within the write deadline",
            )));
        }
        Poll::Pending
    }

    fn wrote(&mut self, result: io::Result<usize>) -> Poll<io::Result<usize>> {
        self.write_timer = None;
        if matches!(result, Ok(n) if n > 0) {
            self.activity.touch();
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
            this.activity.read_since_wait.store(true, Ordering::Release);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => this.wrote(result),
            Poll::Pending => this.blocked(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => this.wrote(result),
            Poll::Pending => this.blocked(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 and HTTP/2 on `stream` until the client leaves, a
/// deadline passes or `shutdown` asks the connection to finish.
pub(crate) async fn serve<S>(
    stream: S,
    peer: std::net::SocketAddr,
    router: axum::Router,
    deadlines: ConnLimits,
    admitted: &Admitted,
    shutdown: CancellationToken,
    telemetry: Arc<Telemetry>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(&admitted.activity);
    let io = Deadlined {
        inner: stream,
        activity: Arc::clone(&activity),
        write_timeout: deadlines.write,
        write_timer: None,
    };
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let in_flight = InFlight::enter(&activity);
            // Who sent it, for the routes that throttle failed credentials.
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let response = tower::ServiceExt::oneshot(router.clone(), request);
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // What one connection may make the gateway hold, so that the connection
    // cap bounds memory: a request's headers (hyper would buffer 400 KiB of
    // them, HTTP/2 16 MiB), request bodies sent before anyone reads them
    // (the HTTP/2 flow-control windows), and
    // streams, each of which may hold a response. Push bodies are read
    // by their route within its own bounds.
    builder.http1().max_buf_size(MAX_REQUEST_HEAD_BYTES);
    builder
        .http2()
        .max_concurrent_streams(deadlines.http2_max_streams)
        .max_header_list_size(MAX_REQUEST_HEAD_BYTES as u32)
        .initial_stream_window_size(HTTP2_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_WINDOW_BYTES);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let result = drive(
        connection,
        &activity,
        deadlines,
        admitted.evicted(),
        shutdown,
        &telemetry,
    )
    .await;
    if activity.write_timed_out.load(Ordering::Acquire) {
        telemetry.http_connection_closed(CloseReason::Write);
    }
    result
}

/// Runs the connection beside its watchdog.
async fn drive<C>(
    connection: C,
    activity: &Activity,
    deadlines: ConnLimits,
    evicted: &CancellationToken,
    shutdown: CancellationToken,
    telemetry: &Telemetry,
) -> Result<(), String>
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    loop {
        // With a request in flight there is no header or idle deadline; look
        // again after a while (the write deadline covers a stuck response).
        let (wake, reason) = activity
            .deadline(&deadlines)
            .map_or((Instant::now() + deadlines.header, None), |(at, reason)| {
                (at, Some(reason))
            });
        tokio::select! {
            result = connection.as_mut() => return result.map_err(|e| e.to_string()),
            () = shutdown.cancelled() => break,
            () = evicted.cancelled() => {
                telemetry.http_connection_closed(CloseReason::Evicted);
                break;
            }
            () = tokio::time::sleep_until(wake) => {
                let Some(reason) = reason else { continue };
                // Still due? A request may have begun meanwhile.
                match activity.deadline(&deadlines) {
                    Some((at, now_reason)) if at <= Instant::now() && now_reason == reason => {
                        telemetry.http_connection_closed(reason);
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    // Finish what is in flight (nothing, when a deadline passed), but no
    // longer than a write may take.
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(deadlines.write, connection.as_mut()).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => {
            Err("the connection did not finish in time after being asked to close".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_state_of_the_connection() {
        let deadlines = ConnLimits {
            header: Duration::from_secs(5),
            idle: Duration::from_secs(60),
            write: Duration::from_secs(10),
            http2_max_streams: 8,
        };
        let activity = Arc::new(Activity::new());
        // A new connection has the header deadline.
        let (at, reason) = activity.deadline(&deadlines).expect("a deadline");
        assert_eq!(reason, CloseReason::Header);
        assert_eq!(at, activity.base + deadlines.header);
        // None while a request is in flight.
        let request = InFlight::enter(&activity);
        assert!(activity.deadline(&deadlines).is_none());
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(request);
        // After a request, the idle deadline from its end.
        let (at, reason) = activity.deadline(&deadlines).expect("a deadline");
        assert_eq!(reason, CloseReason::Idle);
        assert_eq!(at, activity.base + Duration::from_secs(90));
        // A byte of a next request brings the header deadline back.
        activity.read_since_wait.store(true, Ordering::Release);
        let (at, reason) = activity.deadline(&deadlines).expect("a deadline");
        assert_eq!(reason, CloseReason::Header);
        assert_eq!(at, activity.base + Duration::from_secs(35));
    }
}
