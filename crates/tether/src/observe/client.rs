//! Reading an event stream: connecting, splitting frames, decoding events,
//! reconnecting with backoff, and the one-shot read of `--once`.
//!
//! The server only writes; the observer never sends a byte. A frame over
//! the limit, a body that is not an `Event`, or a stream that ends inside a
//! frame ends the connection with an error (the stream cannot be
//! resynchronised) and the UI reconnects; nothing a server sends can panic
//! the observer.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::BytesMut;
use tether_proto::{Event, FrameDecoder, decode_event};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::observe::state::{Limits, Store};

/// The longest event accepted, in bytes. An event is one metric update or
/// one description, a few hundred bytes at most; a longer frame ends the
/// connection (and the UI reconnects).
pub(crate) const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// The first wait before reconnecting; it doubles after each failure.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two connection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long one connection attempt may take in the UI.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The most events handed on in one batch, so that one large read does
/// not make one huge batch.
pub(crate) const MAX_BATCH_EVENTS: usize = 4096;

/// Exponential backoff between connection attempts, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The wait before the next attempt; each call doubles the one after,
    /// up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the initial wait, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

/// Reads frames off a byte stream and decodes each as an [`Event`].
#[derive(Debug)]
pub(crate) struct EventReader<R> {
    reader: R,
    buf: BytesMut,
    frames: FrameDecoder,
    /// An error found after good events, reported at the next call.
    failed: Option<anyhow::Error>,
}

impl<R: AsyncRead + Unpin> EventReader<R> {
    pub(crate) fn new(reader: R, max_frame_bytes: usize) -> EventReader<R> {
        EventReader {
            reader,
            buf: BytesMut::new(),
            frames: FrameDecoder::new(max_frame_bytes),
            failed: None,
        }
    }

    /// Appends the next events to `out`, at least one and at most
    /// [`MAX_BATCH_EVENTS`], and returns true; false when the stream ended
    /// cleanly between two frames. Events before a bad frame are returned
    /// first; the error comes at the next call.
    ///
    /// Cancel safe: bytes read are kept in the reader's buffer, and events
    /// are added to `out` only right before returning.
    ///
    /// # Errors
    ///
    /// A read error, a malformed or oversized frame, a body that is not an
    /// `Event`, or an end of stream inside a frame.
    pub(crate) async fn next_batch(&mut self, out: &mut Vec<Event>) -> anyhow::Result<bool> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        loop {
            let before = out.len();
            while out.len() - before < MAX_BATCH_EVENTS {
                match self.decode_one() {
                    Ok(Some(event)) => out.push(event),
                    Ok(None) => break,
                    // The events before the bad frame are good: hand them
                    // on first, and the error at the next call.
                    Err(error) if out.len() > before => {
                        self.failed = Some(error);
                        break;
                    }
                    Err(error) => return Err(error),
                }
            }
            if out.len() > before {
                return Ok(true);
            }
            // The buffer holds at most one incomplete frame here, which the
            // decoder has checked against the limit: it stays bounded.
            self.buf.reserve(READ_CHUNK_BYTES);
            let n_read = self
                .reader
                .read_buf(&mut self.buf)
                .await
                .context("cannot read from the stream")?;
            if n_read == 0 {
                return match self.frames.decode_eof(&mut self.buf)? {
                    // `decode` above took every complete frame.
                    Some(_) => Err(anyhow!("the stream ended unexpectedly")),
                    None => Ok(false),
                };
            }
        }
    }

    /// The next complete event in the buffer, if any.
    fn decode_one(&mut self) -> anyhow::Result<Option<Event>> {
        match self.frames.decode(&mut self.buf)? {
            Some(body) => Ok(Some(decode_event(body)?)),
            None => Ok(None),
        }
    }
}

/// What the connection task tells the UI.
#[derive(Debug)]
pub(crate) enum Update {
    /// A connection attempt started.
    Connecting,
    /// Connected: what follows is the server's replay, then live updates.
    Connected,
    /// Events, in the order received.
    Events(Vec<Event>),
    /// The connection failed or ended; the next attempt is in `retry_in`.
    Disconnected { error: String, retry_in: Duration },
}

/// The settings of a connection task.
#[derive(Debug, Clone)]
pub(crate) struct StreamConfig {
    pub(crate) addr: String,
    pub(crate) max_frame_bytes: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

/// Connects to the stream and sends what happens to `updates`, reconnecting
/// with backoff, until `shutdown` or until the receiver is gone.
///
/// `updates` is bounded: when the UI falls behind, this task waits, so the
/// socket stops being read and the server's own per-client policy (drop
/// the oldest, counted) applies instead of memory growing here.
pub(crate) async fn stream_updates(
    config: StreamConfig,
    updates: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    loop {
        let error = tokio::select! {
            () = shutdown.cancelled() => return,
            result = connection(&config, &updates, &mut backoff) => match result {
                Ok(()) => return,
                Err(error) => error,
            },
        };
        let retry_in = backoff.next_delay();
        let update = Update::Disconnected {
            error: format!("{error:#}"),
            retry_in,
        };
        if updates.send(update).await.is_err() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(retry_in) => {}
        }
    }
}

/// One connection, until it fails (`Err`) or the receiver is gone (`Ok`).
async fn connection(
    config: &StreamConfig,
    updates: &mpsc::Sender<Update>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    if updates.send(Update::Connecting).await.is_err() {
        return Ok(());
    }
    let stream = connect(&config.addr, config.connect_timeout).await?;
    if updates.send(Update::Connected).await.is_err() {
        return Ok(());
    }
    let mut reader = EventReader::new(stream, config.max_frame_bytes);
    loop {
        let mut batch = Vec::new();
        if !reader.next_batch(&mut batch).await? {
            bail!("the server closed the connection");
        }
        // A connection that carried events worked: the next failure
        // starts the backoff from the beginning.
        backoff.reset();
        if updates.send(Update::Events(batch)).await.is_err() {
            return Ok(());
        }
    }
}

/// Connects to `addr` (`host:port`, resolved here) within `timeout`.
pub(crate) async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            // Latency matters more than packet count for a few small reads;
            // failing to set it changes nothing that matters.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(error)) => Err(anyhow!(error).context(format!("cannot connect to {addr}"))),
        Err(_) => bail!(
            "cannot connect to {addr}: no answer within {} ms",
            timeout.as_millis()
        ),
    }
}

/// The settings of [`read_snapshot`].
#[derive(Debug, Clone)]
pub(crate) struct SnapshotConfig {
    pub(crate) addr: String,
    pub(crate) limits: Limits,
    pub(crate) max_frame_bytes: usize,
    /// How long the stream must be quiet after an event for the replay to count as over.
    pub(crate) settle: Duration,
    /// The most time for everything: connecting and reading.
    pub(crate) timeout: Duration,
}

/// Connects once and reads the server's replay (metadata, then current
/// values): until the stream has been quiet for `settle` after an event,
/// until it ends, or until `timeout` from the start, whichever comes first.
///
/// # Errors
///
/// When it cannot connect, when no event arrived before the timeout or the
/// end of the stream, or when the stream is malformed.
pub(crate) async fn read_snapshot(config: &SnapshotConfig) -> anyhow::Result<Store> {
    let addr = &config.addr;
    let deadline = Instant::now() + config.timeout;
    let stream = connect(addr, config.timeout).await?;
    let mut reader = EventReader::new(stream, config.max_frame_bytes);
    let mut store = Store::new(config.limits);
    let mut batch = Vec::new();
    let mut last_event: Option<Instant> = None;
    loop {
        let wait_until = match last_event {
            Some(at) => (at + config.settle).min(deadline),
            None => deadline,
        };
        match tokio::time::timeout_at(wait_until, reader.next_batch(&mut batch)).await {
            Ok(Ok(true)) => {
                for event in batch.drain(..) {
                    store.apply(event);
                }
                last_event = Some(Instant::now());
            }
            Ok(Ok(false)) if last_event.is_some() => return Ok(store),
            Ok(Ok(false)) => bail!("{addr} closed the connection before sending any event"),
            Ok(Err(error)) => {
                return Err(error.context(format!("the event stream from {addr} is malformed")));
            }
            Err(_) if last_event.is_some() => return Ok(store),
            Err(_) => bail!(
                "no event from {addr} within {} ms (--timeout-ms)",
                config.timeout.as_millis()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tether_proto::{EventMetric, Operation, encode_event};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    fn counter_event(name: &str, by: u64) -> Event {
        Event::from(EventMetric {
            name: name.to_owned(),
            operation: Some(Operation::IncrementCounter(by)),
            ..EventMetric::default()
        })
    }

    fn frames(events: &[Event]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for event in events {
            encode_event(event, &mut out);
        }
        out.to_vec()
    }

    /// How long a test waits for anything before it fails.
    const DEADLINE: Duration = Duration::from_secs(20);

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
        let delays: Vec<u64> = (0..9)
            .map(|_| u64::try_from(backoff.next_delay().as_millis()).unwrap_or(u64::MAX))
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), INITIAL_BACKOFF);
    }

    #[tokio::test]
    async fn frames_split_anywhere_decode_in_order() {
        let events = [counter_event("a", 1), counter_event("b", 2)];
        let wire = frames(&events);
        // Every split point, delivered as two reads.
        for split in 0..=wire.len() {
            let (first, second) = wire.split_at(split);
            let reader = tokio_test_reader(&[first, second]);
            let mut reader = EventReader::new(reader, DEFAULT_MAX_FRAME_BYTES);
            let mut got = Vec::new();
            while reader.next_batch(&mut got).await.expect("valid frames") {}
            assert_eq!(got, events, "split at {split}");
        }
    }

    /// A reader that returns each piece in its own read.
    fn tokio_test_reader(pieces: &[&[u8]]) -> Box<dyn AsyncRead + Unpin + Send> {
        let mut chained: Box<dyn AsyncRead + Unpin + Send> = Box::new(tokio::io::empty());
        for piece in pieces.iter().rev() {
            let piece = std::io::Cursor::new(piece.to_vec());
            chained = Box::new(AsyncReadExt::chain(piece, chained));
        }
        chained
    }

    #[tokio::test]
    async fn malformed_streams_are_errors_not_panics() {
        let valid = frames(&[counter_event("a", 1)]);
        let mut truncated = valid.clone();
        truncated.pop();
        // (what, the bytes on the wire)
        let cases: [(&str, Vec<u8>); 4] = [
            ("a header that never ends", vec![0xff; 11]),
            ("a frame over the limit", vec![0x80, 0x80, 0x80, 0x01]),
            ("a body that is not an Event", vec![0x03, 0xff, 0xff, 0xff]),
            ("a stream cut inside a frame", truncated),
        ];
        for (what, wire) in cases {
            let mut reader = EventReader::new(&wire[..], 1024);
            let mut got = Vec::new();
            let result = reader.next_batch(&mut got).await;
            assert!(result.is_err(), "{what}: {result:?}");
            assert!(got.is_empty(), "{what}");
        }
        // Good events before a bad frame come first, then the error.
        let mut wire = valid.clone();
        wire.extend_from_slice(&[0x03, 0xff, 0xff, 0xff]);
        let mut reader = EventReader::new(&wire[..], 1024);
        let mut got = Vec::new();
        assert!(reader.next_batch(&mut got).await.expect("the good frame"));
        assert_eq!(got, [counter_event("a", 1)]);
        assert!(reader.next_batch(&mut got).await.is_err());
        // A clean end between frames is not an error.
        let mut reader = EventReader::new(&valid[..], 1024);
        let mut got = Vec::new();
        assert!(reader.next_batch(&mut got).await.expect("a frame"));
        assert!(!reader.next_batch(&mut got).await.expect("a clean end"));
    }

    #[tokio::test]
    async fn batches_are_bounded() {
        let events: Vec<Event> = (0..(MAX_BATCH_EVENTS + 10))
            .map(|i| counter_event("a", i as u64))
            .collect();
        let wire = frames(&events);
        let mut reader = EventReader::new(&wire[..], 1024);
        let mut first = Vec::new();
        assert!(reader.next_batch(&mut first).await.expect("frames"));
        assert_eq!(first.len(), MAX_BATCH_EVENTS);
        let mut rest = Vec::new();
        assert!(reader.next_batch(&mut rest).await.expect("frames"));
        assert_eq!(rest.len(), 10);
    }

    async fn recv(updates: &mut mpsc::Receiver<Update>) -> Update {
        tokio::time::timeout(DEADLINE, updates.recv())
            .await
            .expect("an update in time")
            .expect("the task is running")
    }

    #[tokio::test]
    async fn a_malformed_stream_reconnects_and_the_next_connection_is_read() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(stream_updates(
            StreamConfig {
                addr: addr.to_string(),
                max_frame_bytes: 1024,
                connect_timeout: DEADLINE,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            },
            tx,
            shutdown.clone(),
        ));

        // First connection: one good event, then garbage.
        assert!(matches!(recv(&mut rx).await, Update::Connecting));
        let (mut first, _) = listener.accept().await.expect("accept");
        assert!(matches!(recv(&mut rx).await, Update::Connected));
        let mut wire = frames(&[counter_event("a", 1)]);
        wire.extend_from_slice(&[0x03, 0xff, 0xff, 0xff]);
        first.write_all(&wire).await.expect("write");
        match recv(&mut rx).await {
            Update::Events(events) => assert_eq!(events, [counter_event("a", 1)]),
            other => panic!("expected events, got {other:?}"),
        }
        match recv(&mut rx).await {
            Update::Disconnected { error, retry_in } => {
                assert!(error.contains("Event"), "{error}");
                // The connection carried an event, so the backoff restarted.
                assert_eq!(retry_in, Duration::from_millis(1));
            }
            other => panic!("expected a disconnect, got {other:?}"),
        }

        // Second connection: read normally.
        assert!(matches!(recv(&mut rx).await, Update::Connecting));
        let (mut second, _) = listener.accept().await.expect("accept");
        assert!(matches!(recv(&mut rx).await, Update::Connected));
        second
            .write_all(&frames(&[counter_event("b", 2)]))
            .await
            .expect("write");
        match recv(&mut rx).await {
            Update::Events(events) => assert_eq!(events, [counter_event("b", 2)]),
            other => panic!("expected events, got {other:?}"),
        }

        // A server that closes is a disconnect too.
        drop(second);
        match recv(&mut rx).await {
            Update::Disconnected { error, .. } => assert!(error.contains("closed"), "{error}"),
            other => panic!("expected a disconnect, got {other:?}"),
        }
        shutdown.cancel();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the task stops on shutdown")
            .expect("the task does not panic");
    }

    #[tokio::test]
    async fn refused_connections_back_off_exponentially() {
        // A port nothing listens on: bound, then closed.
        let addr: SocketAddr = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("local addr")
        };
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(stream_updates(
            StreamConfig {
                addr: addr.to_string(),
                max_frame_bytes: 1024,
                connect_timeout: DEADLINE,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(4),
            },
            tx,
            shutdown.clone(),
        ));
        let mut delays = Vec::new();
        while delays.len() < 4 {
            match recv(&mut rx).await {
                Update::Connecting => {}
                Update::Disconnected { error, retry_in } => {
                    assert!(error.contains("cannot connect"), "{error}");
                    delays.push(retry_in.as_millis());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays, [1, 2, 4, 4]);
        shutdown.cancel();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the task stops on shutdown")
            .expect("the task does not panic");
    }

    #[tokio::test]
    async fn the_task_stops_when_the_ui_is_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let task = tokio::spawn(stream_updates(
            StreamConfig {
                addr: addr.to_string(),
                max_frame_bytes: 1024,
                connect_timeout: DEADLINE,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(1),
            },
            tx,
            CancellationToken::new(),
        ));
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the task stops")
            .expect("the task does not panic");
    }
}
