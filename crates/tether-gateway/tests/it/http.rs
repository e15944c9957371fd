//! The HTTP listener's deadlines against clients that hold connections:
//! silent sockets, a one-byte-a-second header sender, a scraper that does
//! not read its response.

use std::time::Duration;

use futures::future::join_all;
use tether_gateway::RawConfig;
use tether_model::{Format, parse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{PATIENCE, RawAgent, TestGateway, gauge, get, self_metric, value_of};

async fn closed_by_gateway(reason: &str, gateway: &TestGateway) -> f64 {
    self_metric(
        gateway,
        "tether_http_connections_closed_total",
        &[("reason", reason)],
    )
    .await
}

/// An agent whose answer renders far larger than the sockets' buffers.
async fn big_agent(gateway: &TestGateway) -> tokio::task::JoinHandle<()> {
    let (agent, _) = RawAgent::hello(gateway.agents, "j", "big", "").await;
    let values: Vec<(String, f64)> = (0..200_000).map(|i| (format!("{i:08}"), 1.0)).collect();
    let values: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    agent.serve(vec![gauge("wide_metric_with_a_long_name", &values)])
}

/// A scraper that sends `GET /metrics` and does not read the response.
async fn stalled_scraper(gateway: &TestGateway) -> TcpStream {
    let mut stalled = TcpStream::connect(gateway.http).await.expect("connect");
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    stalled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_and_a_slow_header_sender_do_not_delay_a_real_scrape() {
    let gateway = TestGateway::start_observed(RawConfig {
        http_header_timeout_ms: Some(1_000),
        ..RawConfig::loopback()
    })
    .await;
    // Twice the connection cap of silent sockets.
    let idle: Vec<TcpStream> = join_all((0..2_000).map(|_| TcpStream::connect(gateway.http)))
        .await
        .into_iter()
        .map(|c| c.expect("connect an idle socket"))
        .collect();
    // A client sending its request one byte a second.
    let slow = tokio::spawn({
        let addr = gateway.http;
        async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            for byte in request {
                interval.tick().await;
                if stream.write_all(&[*byte]).await.is_err() {
                    return true;
                }
            }
            // Every byte went out; the gateway must have closed by now,
            // so reading finds the end of the stream and no response.
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response).await;
            response.is_empty()
        }
    });
    // A real agent and a real scrape with Prometheus' deadline.
    let (agent, _) = RawAgent::hello(gateway.agents, "j", "real", "").await;
    let _serving = agent.serve(vec![gauge("g", &[("x", 1.0)])]);
    let scrape = tokio::time::timeout(
        Duration::from_secs(10),
        get(
            gateway.http,
            "/metrics",
            &[("X-Prometheus-Scrape-Timeout-Seconds", "10")],
        ),
    )
    .await
    .expect("the scrape is answered within its deadline");
    let families = parse(&scrape.body, Format::Text).expect("valid output");
    assert_eq!(
        value_of(&families, "g", &[("instance", "real"), ("k", "x")]),
        Some(1.0)
    );
    assert!(
        slow.await.expect("slow sender task"),
        "the slow header sender was cut off"
    );
    // Every idle socket is closed by the header deadline.
    let closed = join_all(idle.into_iter().map(|mut socket| async move {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(PATIENCE, socket.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await;
    assert!(closed.iter().all(|&c| c), "every idle socket was closed");
    // Past the cap of 1,024, each new socket evicted the one waiting
    // longest; the rest, and the slow sender, met the header deadline.
    let evicted = closed_by_gateway("evicted", &gateway).await;
    let timed_out = closed_by_gateway("header_timeout", &gateway).await;
    assert!(evicted >= 2_000.0 - 1_024.0, "{evicted} evicted");
    assert!(
        evicted + timed_out >= 2_001.0,
        "{evicted} + {timed_out} closed"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_that_does_not_read_is_dropped_at_the_write_deadline() {
    let gateway = TestGateway::start_observed(RawConfig {
        http_write_timeout_ms: Some(300),
        ..RawConfig::loopback()
    })
    .await;
    let _serving = big_agent(&gateway).await;
    let mut stalled = stalled_scraper(&gateway).await;
    // Not reading: the gateway gives up on the response and counts it.
    let counted = tokio::time::timeout(PATIENCE, async {
        loop {
            if closed_by_gateway("write_timeout", &gateway).await >= 1.0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "the stalled response was dropped and counted"
    );
    // The gateway closed the connection: reading drains what was buffered,
    // then finds the end.
    let mut sink = Vec::new();
    let drained = tokio::time::timeout(PATIENCE, stalled.read_to_end(&mut sink)).await;
    assert!(drained.is_ok(), "the connection was closed");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_past_the_bound_of_bodies_gets_503_with_retry_after() {
    let gateway = TestGateway::start_observed(RawConfig {
        max_scrape_bodies: Some(1),
        ..RawConfig::loopback()
    })
    .await;
    let _serving = big_agent(&gateway).await;
    // A scraper that does not read holds the one body of /metrics.
    let stalled = stalled_scraper(&gateway).await;
    let mut first_byte = [0u8; 1];
    tokio::time::timeout(PATIENCE, stalled.peek(&mut first_byte))
        .await
        .expect("the response starts")
        .expect("peek");
    // Another encoding cannot share it, and finds no room before its deadline.
    let refused = get(
        gateway.http,
        "/metrics",
        &[
            ("Accept-Encoding", "gzip"),
            ("X-Prometheus-Scrape-Timeout-Seconds", "1"),
        ],
    )
    .await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.headers.get("retry-after").map(String::as_str),
        Some("1")
    );
    assert!(
        refused.text().contains("--max-scrape-bodies"),
        "{}",
        refused.text()
    );
    // The gateway's own metrics have a bound of their own.
    let families = parse(
        &get(gateway.http, "/metrics/proxy", &[]).await.body,
        Format::Text,
    )
    .expect("valid output");
    assert_eq!(
        value_of(&families, "tether_scrapes_refused_total", &[]),
        Some(1.0)
    );
    drop(stalled);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_past_the_cap_make_room_for_a_real_scrape() {
    // A header deadline longer than the test: only eviction can make room.
    let gateway = TestGateway::start_observed(RawConfig {
        http_header_timeout_ms: Some(120_000),
        max_http_connections: Some(200),
        ..RawConfig::loopback()
    })
    .await;
    let silent: Vec<TcpStream> = join_all((0..400).map(|_| TcpStream::connect(gateway.http)))
        .await
        .into_iter()
        .map(|c| c.expect("connect a silent socket"))
        .collect();
    let (agent, _) = RawAgent::hello(gateway.agents, "j", "real", "").await;
    let _serving = agent.serve(vec![gauge("g", &[("x", 1.0)])]);
    let scrape = tokio::time::timeout(PATIENCE, get(gateway.http, "/metrics", &[]))
        .await
        .expect("the scrape is answered though the cap is full of silent sockets");
    let families = parse(&scrape.body, Format::Text).expect("valid output");
    assert_eq!(
        value_of(&families, "g", &[("instance", "real"), ("k", "x")]),
        Some(1.0)
    );
    let evicted = closed_by_gateway("evicted", &gateway).await;
    assert!(evicted >= 400.0 - 200.0, "{evicted} evicted");
    drop(silent);
    gateway.stop().await;
}

#[tokio::test]
async fn a_request_head_over_64_kib_is_refused_with_431() {
    let gateway = TestGateway::start(tether_gateway::Config::loopback()).await;
    let mut client = TcpStream::connect(gateway.http).await.expect("connect");
    let padding = "p".repeat(70 * 1024);
    client
        .write_all(
            format!("GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, client.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "{}",
        response.lines().next().unwrap_or("no response")
    );
    gateway.stop().await;
}
