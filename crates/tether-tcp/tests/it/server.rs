//! The accept loop: metrics, spans, the connection cap, panics, shutdown.

use std::io::{self, IoSlice, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::Unit;
use tether_tcp::{
    ACCEPT_ERRORS_TOTAL, BYTES_READ_TOTAL, BYTES_WRITTEN_TOTAL, CONNECTION_DURATION_SECONDS,
    Connection, Drain, ListenerMetrics, MeteredStream, SOCKETS_ACTIVE, SOCKETS_CLOSED_TOTAL,
    SOCKETS_OPENED_TOTAL, ServerConfig, spawn_in_current_span,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestRecorder, TestServer, wait_for};

/// A handler that reads until the peer closes, then returns.
async fn read_to_close(mut stream: MeteredStream, _conn: Connection) -> io::Result<()> {
    let mut sink = Vec::new();
    stream.read_to_end(&mut sink).await.map(drop)
}

#[test]
fn every_metric_is_described_with_its_unit() {
    let recorder = TestRecorder::default();
    let metrics = ListenerMetrics::new("described", &recorder);
    assert_eq!(metrics.name(), "described");
    let expected = [
        (SOCKETS_OPENED_TOTAL, Unit::Count),
        (SOCKETS_CLOSED_TOTAL, Unit::Count),
        (SOCKETS_ACTIVE, Unit::Count),
        (BYTES_READ_TOTAL, Unit::Bytes),
        (BYTES_WRITTEN_TOTAL, Unit::Bytes),
        (ACCEPT_ERRORS_TOTAL, Unit::Count),
        (CONNECTION_DURATION_SECONDS, Unit::Seconds),
    ];
    for (name, unit) in expected {
        let (described_unit, help) = recorder
            .description(name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(described_unit, Some(unit), "{name}");
        assert!(help.ends_with('.') && help.len() > 10, "{name}: {help}");
    }
    // Accept errors are registered per kind up front, at zero.
    for kind in ["emfile", "enfile", "enobufs", "enomem", "other"] {
        let labels = [("listener", "described"), ("kind", kind)];
        assert_eq!(recorder.counter(ACCEPT_ERRORS_TOTAL, &labels), 0);
    }
}

#[test]
fn global_registers_on_the_recorder_in_effect() {
    let recorder = TestRecorder::default();
    let metrics = metrics::with_local_recorder(&recorder, || ListenerMetrics::global("local"));
    let stream = MeteredStream::new(tokio::io::empty(), &metrics);
    drop(stream);
    assert!(recorder.description(SOCKETS_OPENED_TOTAL).is_some());
}

#[tokio::test]
async fn bytes_are_counted_both_ways_including_vectored_writes() {
    let handler = |mut stream: MeteredStream, _conn: Connection| async move {
        let mut request = [0_u8; 10];
        stream.read_exact(&mut request).await?;
        let parts = [
            IoSlice::new(b"0123456789"),
            IoSlice::new(b"abcdefghijklmno"),
        ];
        let mut n_written = 0;
        while n_written < 25 {
            // A vectored write may be partial; the rest goes plainly.
            if n_written == 0 {
                n_written += stream.write_vectored(&parts).await?;
            } else {
                let all = b"0123456789abcdefghijklmno";
                n_written += stream.write(&all[n_written..]).await?;
            }
        }
        Ok::<_, io::Error>(())
    };
    let server = TestServer::start("bytes", ServerConfig::default(), handler).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(b"ten bytes!").await.expect("send");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("receive");
    assert_eq!(reply, b"0123456789abcdefghijklmno");
    server.wait_counter(SOCKETS_CLOSED_TOTAL, 1).await;
    assert_eq!(server.counter(BYTES_READ_TOTAL), 10);
    assert_eq!(server.counter(BYTES_WRITTEN_TOTAL), 25);
    assert!(server.stop().await.complete);
}

#[tokio::test]
async fn a_panicking_handler_still_counts_closed() {
    let logs = Capture::default();
    let _default = tracing::subscriber::set_default(logs.subscriber());
    let handler = |_stream: MeteredStream, conn: Connection| async move {
        // Ids start at 1: this always panics, and the closure still has a
        // return type.
        if conn.info().id > 0 {
            panic!("handler panics on purpose");
        }
        Ok::<_, io::Error>(())
    };
    let server = TestServer::start("panics", ServerConfig::default(), handler).await;
    for n in 1..=2 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let mut rest = Vec::new();
        // The server's side closes when the task unwinds.
        let _ = stream.read_to_end(&mut rest).await;
        server.wait_counter(SOCKETS_CLOSED_TOTAL, n).await;
    }
    assert_eq!(server.counter(SOCKETS_OPENED_TOTAL), 2);
    server.wait_gauge(SOCKETS_ACTIVE, 0.0).await;
    assert!(server.stop().await.complete);
    let text = logs.text();
    let n_reported = text
        .lines()
        .filter(|line| {
            line.contains("connection handler panicked") && line.contains("conn{listener=panics")
        })
        .count();
    assert_eq!(n_reported, 2, "{text}");
}

/// At the cap the server stops accepting; a connection that closes lets the
/// next one in.
#[tokio::test]
async fn the_connection_cap_holds_back_accepts() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let server = TestServer::start("capped", config, read_to_close).await;
    let first = TcpStream::connect(server.addr).await.expect("connect 1");
    let second = TcpStream::connect(server.addr).await.expect("connect 2");
    // The kernel completes the third handshake (the backlog), the server
    // does not accept it.
    let third = TcpStream::connect(server.addr).await.expect("connect 3");
    server.wait_counter(SOCKETS_OPENED_TOTAL, 2).await;
    // Nothing changes while both slots are taken: check it over many polls.
    let mut polls = 0;
    wait_for("a while at the cap", || {
        assert_eq!(
            server.counter(SOCKETS_OPENED_TOTAL),
            2,
            "accepted past the cap"
        );
        polls += 1;
        polls >= 50
    })
    .await;
    drop(first);
    server.wait_counter(SOCKETS_OPENED_TOTAL, 3).await;
    server.wait_counter(SOCKETS_CLOSED_TOTAL, 1).await;
    assert_eq!(server.gauge(SOCKETS_ACTIVE), 2.0);
    drop((second, third));
    assert!(server.stop().await.complete);
}

/// Shutdown stops accepting at once, tells open connections through their
/// token, and waits for them.
#[tokio::test]
async fn shutdown_drains_connections_that_honour_it() {
    let handler = |mut stream: MeteredStream, conn: Connection| async move {
        conn.shutdown_token().cancelled().await;
        stream.write_all(b"bye").await
    };
    let server = TestServer::start("draining", ServerConfig::default(), handler).await;
    let addr = server.addr;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    server.wait_counter(SOCKETS_OPENED_TOTAL, 1).await;
    let recorder = server.recorder.clone();
    assert_eq!(
        server.stop().await,
        Drain {
            complete: true,
            n_remaining: 0
        }
    );
    let mut farewell = Vec::new();
    stream.read_to_end(&mut farewell).await.expect("receive");
    assert_eq!(farewell, b"bye");
    assert_eq!(
        recorder.counter(SOCKETS_CLOSED_TOTAL, &[("listener", "draining")]),
        1
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// A connection that ignores shutdown is left behind when the deadline
/// passes (with the clock paused, at once).
#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_at_its_deadline() {
    let handler = |_stream: MeteredStream, conn: Connection| async move {
        // A sub-task is waited for as well.
        conn.spawn(std::future::pending::<()>());
        std::future::pending::<Result<(), io::Error>>().await
    };
    let config = ServerConfig {
        shutdown_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let server = TestServer::start("stuck", config, handler).await;
    let _stream = TcpStream::connect(server.addr).await.expect("connect");
    server.wait_counter(SOCKETS_OPENED_TOTAL, 1).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        server.stop().await,
        Drain {
            complete: false,
            n_remaining: 2
        }
    );
    assert!(started.elapsed() >= Duration::from_secs(30));
}

/// Log lines of a connection carry its span, in the handler and in every
/// task it spawns.
#[tokio::test]
async fn connection_logs_carry_the_span_fields() {
    let logs = Capture::default();
    let _default = tracing::subscriber::set_default(logs.subscriber());

    let handler = |stream: MeteredStream, conn: Connection| async move {
        assert_eq!(conn.info().peer, stream.get_ref().peer_addr()?);
        assert_eq!(conn.info().local, stream.get_ref().local_addr()?);
        tracing::info!("from the handler");
        let tracked = conn.spawn(async { tracing::info!("from a tracked task") });
        let plain = spawn_in_current_span(async { tracing::info!("from a plain task") });
        tracked.await.map_err(io::Error::other)?;
        plain.await.map_err(io::Error::other)?;
        Ok::<_, io::Error>(())
    };
    let server = TestServer::start("spans", ServerConfig::default(), handler).await;
    let local = server.addr;
    let stream = TcpStream::connect(local).await.expect("connect");
    let peer = stream.local_addr().expect("client address");
    server.wait_counter(SOCKETS_CLOSED_TOTAL, 1).await;
    server.stop().await;

    let text = logs.text();
    for message in [
        "from the handler",
        "from a tracked task",
        "from a plain task",
    ] {
        let line = text
            .lines()
            .find(|line| line.contains(message))
            .unwrap_or_else(|| panic!("no line {message:?} in:\n{text}"));
        assert!(line.contains("conn{listener=spans conn_id="), "{line}");
        assert!(line.contains(&format!("peer={peer}")), "{line}");
        assert!(line.contains(&format!("local={local}")), "{line}");
        assert!(line.contains(" fd="), "{line}");
    }
}

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// A text subscriber at info level writing here, to install for the
    /// current thread (so the test's runtime must be current-thread).
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}
