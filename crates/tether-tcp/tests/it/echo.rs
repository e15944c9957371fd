//! The echo server's functional tests, in the manner of the userver echo
//! sample's suite: a poem echoed while it is sent, a reader that comes late,
//! pieces read back whole, peers that vanish, many sockets at once, and
//! sockets that only send.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tether_tcp::{
    BYTES_READ_TOTAL, BYTES_WRITTEN_TOTAL, CONNECTION_DURATION_SECONDS, Echo, EchoConfig,
    SOCKETS_ACTIVE, SOCKETS_CLOSED_TOTAL, SOCKETS_OPENED_TOTAL, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{TestServer, wait_for};

const POEM: [&str; 4] = [
    "Tyger Tyger, burning bright,\nIn the forests of the night;\n",
    "What immortal hand or eye,\nCould frame thy fearful symmetry?\n\n",
    "In what distant deeps or skies.\nBurnt the fire of thine eyes?\n",
    "On what wings dare he aspire?\nWhat the hand, dare seize the fire?\n",
];

async fn echo_server(name: &'static str, config: EchoConfig) -> TestServer {
    let echo = Echo::new(config).expect("valid echo config");
    TestServer::start(name, ServerConfig::default(), echo).await
}

/// Sends `data` and reads its echo at the same time; returns the echo.
async fn echo_round_trip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut reader, mut writer) = stream.split();
    let send = async {
        writer.write_all(data).await.expect("send");
    };
    let mut echoed = vec![0_u8; data.len()];
    let receive = async {
        reader.read_exact(&mut echoed).await.expect("receive echo");
    };
    tokio::join!(send, receive);
    echoed
}

#[tokio::test]
async fn poem_is_echoed_while_sent_and_counted() {
    let server = echo_server("poem", EchoConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let poem_len: usize = POEM.iter().map(|part| part.len()).sum();

    let (mut reader, mut writer) = stream.split();
    let send = async {
        for part in POEM {
            writer
                .write_all(part.as_bytes())
                .await
                .expect("send a part");
            tokio::task::yield_now().await;
        }
    };
    let mut echoed = vec![0_u8; poem_len];
    let receive = async { reader.read_exact(&mut echoed).await.expect("receive") };
    tokio::join!(send, receive);
    assert_eq!(String::from_utf8(echoed).expect("utf-8"), POEM.concat());

    // The connection is still open.
    server.wait_counter(BYTES_READ_TOTAL, poem_len as u64).await;
    server
        .wait_counter(BYTES_WRITTEN_TOTAL, poem_len as u64)
        .await;
    assert_eq!(server.counter(SOCKETS_OPENED_TOTAL), 1);
    assert_eq!(server.counter(SOCKETS_CLOSED_TOTAL), 0);
    assert_eq!(server.gauge(SOCKETS_ACTIVE), 1.0);

    // Closing our side ends the echo, and the server closes too.
    stream.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .await
        .expect("read to the server's close");
    assert!(rest.is_empty());
    server.wait_counter(SOCKETS_CLOSED_TOTAL, 1).await;
    server.wait_gauge(SOCKETS_ACTIVE, 0.0).await;
    assert_eq!(server.counter(SOCKETS_OPENED_TOTAL), 1);
    assert_eq!(server.counter(BYTES_READ_TOTAL), poem_len as u64);
    let durations = server
        .recorder
        .samples(CONNECTION_DURATION_SECONDS, &[("listener", server.name)]);
    assert_eq!(durations.len(), 1);
    assert!(durations[0] >= 0.0);
    assert!(server.stop().await.complete);
}

/// A peer that sends a lot and reads nothing makes the server stop reading:
/// what it read stays within its queue plus the socket buffers between it
/// and the peer. When the peer reads at last, every byte comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reader_keeps_the_server_bounded() {
    const QUEUE_BYTES: usize = 64 * 1024;
    const CHUNK_BYTES: usize = 16 * 1024;
    /// The peer's socket buffers, fixed so that they do not grow.
    const PEER_BUFFER: u32 = 64 * 1024;
    let config = EchoConfig {
        queue_bytes: QUEUE_BYTES,
        read_chunk_bytes: CHUNK_BYTES,
    };
    let server = echo_server("late", config).await;

    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(PEER_BUFFER).expect("SO_RCVBUF");
    socket.set_send_buffer_size(PEER_BUFFER).expect("SO_SNDBUF");
    let peer_recv_buffer = u64::from(socket.recv_buffer_size().expect("SO_RCVBUF"));
    let peer_send_buffer = u64::from(socket.send_buffer_size().expect("SO_SNDBUF"));
    let stream = socket.connect(server.addr).await.expect("connect");
    // What the server wrote and the peer has not read sits in the server's
    // send buffer (which grows up to tcp_wmem's maximum) and the peer's
    // receive buffer.
    let bound =
        (QUEUE_BYTES + CHUNK_BYTES) as u64 + tcp_buffer_max("tcp_wmem", 4 << 20) + peer_recv_buffer;
    // Enough that it cannot all fit in the bound, the server's receive
    // buffer (up to tcp_rmem's maximum) and the peer's send buffer.
    let total = bound + tcp_buffer_max("tcp_rmem", 6 << 20) + peer_send_buffer + (1 << 20);

    let (mut reader, mut writer) = stream.into_split();
    let n_sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let n_sent = Arc::clone(&n_sent);
        async move {
            let mut offset = 0_u64;
            while offset < total {
                let len = (total - offset).min(64 * 1024) as usize;
                let piece = pattern(offset, len);
                writer.write_all(&piece).await.expect("send");
                offset += len as u64;
                n_sent.store(offset, Ordering::SeqCst);
            }
            writer.shutdown().await.expect("half-close");
        }
    });

    // Wait until the server has stopped reading: its counter holds still
    // for a while. Every value seen on the way stays within the bound.
    let mut last = u64::MAX;
    let mut unchanged_polls = 0;
    wait_for("the server to stop reading", || {
        let read = server.counter(BYTES_READ_TOTAL);
        assert!(read <= bound, "server read {read} bytes, more than {bound}");
        unchanged_polls = if read == last { unchanged_polls + 1 } else { 0 };
        last = read;
        unchanged_polls >= 100 && read >= QUEUE_BYTES as u64
    })
    .await;
    assert!(
        !sender.is_finished(),
        "the peer could send everything without reading"
    );
    assert!(n_sent.load(Ordering::SeqCst) < total);

    // Now read: everything comes back, in order.
    let mut offset = 0_u64;
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await.expect("receive");
        if n == 0 {
            break;
        }
        assert_eq!(
            buf[..n],
            pattern(offset, n)[..],
            "echo differs at byte {offset}"
        );
        offset += n as u64;
    }
    assert_eq!(offset, total);
    sender.await.expect("sender finished");
    server.wait_counter(SOCKETS_CLOSED_TOTAL, 1).await;
    assert_eq!(server.counter(BYTES_READ_TOTAL), total);
    assert_eq!(server.counter(BYTES_WRITTEN_TOTAL), total);
    assert!(server.stop().await.complete);
}

/// `len` bytes of a sequence that never lines up with its own shifts
/// (period 251, prime), starting at `offset`.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i % 251) as u8)
        .collect()
}

/// The largest buffer TCP autotuning may give a socket, from the sysctl
/// `tcp_wmem` or `tcp_rmem` (Linux's defaults where there is none).
fn tcp_buffer_max(sysctl: &str, default: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{sysctl}"))
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn pieces_sent_apart_are_read_back_whole() {
    let server = echo_server("pieces", EchoConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let pieces = ["Hel", "lo, ", "w", "orld", "!"];
    for piece in pieces {
        stream
            .write_all(piece.as_bytes())
            .await
            .expect("send a piece");
        stream.flush().await.expect("flush");
    }
    stream.shutdown().await.expect("half-close");
    let mut echoed = String::new();
    stream.read_to_string(&mut echoed).await.expect("receive");
    assert_eq!(echoed, "Hello, world!");
    server.wait_counter(SOCKETS_CLOSED_TOTAL, 1).await;
    assert_eq!(server.counter(BYTES_READ_TOTAL), 13);
    assert!(server.stop().await.complete);
}

/// Peers that reset their connection in the middle of a transfer end only
/// their own connection; the server keeps accepting and echoing.
#[tokio::test]
async fn server_keeps_accepting_after_peers_vanish() {
    const N_VANISHING: u64 = 10;
    let server = echo_server("vanish", EchoConfig::default()).await;
    for n in 1..=N_VANISHING {
        let read_before = server.counter(BYTES_READ_TOTAL);
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(&pattern(0, 256 * 1024))
            .await
            .expect("send");
        // Make sure the server is in the middle of it, then reset.
        server.wait_counter(SOCKETS_OPENED_TOTAL, n).await;
        wait_for("the server to read", || {
            server.counter(BYTES_READ_TOTAL) > read_before
        })
        .await;
        stream.set_zero_linger().expect("SO_LINGER 0");
        drop(stream);
    }
    server.wait_counter(SOCKETS_CLOSED_TOTAL, N_VANISHING).await;

    let mut stream = TcpStream::connect(server.addr)
        .await
        .expect("connect after the resets");
    let echoed = echo_round_trip(&mut stream, b"still here").await;
    assert_eq!(echoed, b"still here");
    assert_eq!(server.counter(SOCKETS_OPENED_TOTAL), N_VANISHING + 1);
    drop(stream);
    server.wait_gauge(SOCKETS_ACTIVE, 0.0).await;
    assert!(server.stop().await.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_250_sockets_at_once() {
    const N_SOCKETS: usize = 250;
    const MESSAGE_BYTES: usize = 4096;
    let server = echo_server("many", EchoConfig::default()).await;
    let addr = server.addr;
    // Every socket connects first, so all 250 are open at once.
    let mut streams = Vec::with_capacity(N_SOCKETS);
    for _ in 0..N_SOCKETS {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    server.wait_gauge(SOCKETS_ACTIVE, N_SOCKETS as f64).await;
    let clients: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            tokio::spawn(async move {
                let message = pattern(i as u64, MESSAGE_BYTES);
                let echoed = echo_round_trip(&mut stream, &message).await;
                assert_eq!(echoed, message, "socket {i}");
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client ran");
    }
    server
        .wait_counter(SOCKETS_CLOSED_TOTAL, N_SOCKETS as u64)
        .await;
    assert_eq!(server.counter(SOCKETS_OPENED_TOTAL), N_SOCKETS as u64);
    assert_eq!(
        server.counter(BYTES_READ_TOTAL),
        (N_SOCKETS * MESSAGE_BYTES) as u64
    );
    assert_eq!(
        server.counter(BYTES_WRITTEN_TOTAL),
        (N_SOCKETS * MESSAGE_BYTES) as u64
    );
    assert_eq!(server.gauge(SOCKETS_ACTIVE), 0.0);
    assert!(server.stop().await.complete);
}

/// Sockets that send and never read: their echo waits in their receive
/// buffers, and closing them (with unread data, so with a reset) closes the
/// server's side too.
#[tokio::test]
async fn serves_25_send_only_sockets() {
    const N_SOCKETS: usize = 25;
    const MESSAGE_BYTES: usize = 8 * 1024;
    let server = echo_server("send_only", EchoConfig::default()).await;
    let mut streams = Vec::with_capacity(N_SOCKETS);
    for i in 0..N_SOCKETS {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(&pattern(i as u64, MESSAGE_BYTES))
            .await
            .expect("send");
        streams.push(stream);
    }
    let total = (N_SOCKETS * MESSAGE_BYTES) as u64;
    server.wait_counter(BYTES_READ_TOTAL, total).await;
    server.wait_counter(BYTES_WRITTEN_TOTAL, total).await;
    assert_eq!(server.counter(SOCKETS_OPENED_TOTAL), N_SOCKETS as u64);
    assert_eq!(server.counter(SOCKETS_CLOSED_TOTAL), 0);
    drop(streams);
    server
        .wait_counter(SOCKETS_CLOSED_TOTAL, N_SOCKETS as u64)
        .await;
    server.wait_gauge(SOCKETS_ACTIVE, 0.0).await;

    let mut stream = TcpStream::connect(server.addr)
        .await
        .expect("connect afterwards");
    assert_eq!(echo_round_trip(&mut stream, b"ping").await, b"ping");
    drop(stream);
    assert!(server.stop().await.complete);
}

/// Shutdown stops the reading; what was read is still echoed, and the
/// server then closes the connection.
#[tokio::test]
async fn shutdown_finishes_the_echo_in_flight() {
    let server = echo_server("echo_shutdown", EchoConfig::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(echo_round_trip(&mut stream, b"before").await, b"before");
    let drain = tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("shutdown within its deadline");
    assert_eq!(
        drain,
        tether_tcp::Drain {
            complete: true,
            n_remaining: 0
        }
    );
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .await
        .expect("the server's close");
    assert!(rest.is_empty());
}
