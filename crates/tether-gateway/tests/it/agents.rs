//! Agents pulled on every scrape: the merged exposition, deadlines, push
//! and close, and every way an agent can be turned away.

use std::io::Read;

use tether_gateway::{Config, RawConfig};

use crate::support::config;
use tether_model::{Format, parse};
use tether_proto::{Hello, Push, RejectReason, ServerKind};

use crate::support::{PATIENCE, RawAgent, TestGateway, gauge, get, self_metric, value_of};

async fn expect_reject(agent: &mut RawAgent, reason: RejectReason) {
    match agent.recv().await.and_then(|m| m.kind) {
        Some(ServerKind::Reject(reject)) => {
            assert_eq!(
                reject.reason(),
                reason,
                "reject message: {}",
                reject.message
            );
            assert!(!reject.message.is_empty(), "a Reject says why");
        }
        other => panic!("expected a Reject {reason:?}, got {other:?}"),
    }
    assert!(
        agent.recv().await.is_none(),
        "the gateway closes after a Reject"
    );
}

#[tokio::test]
async fn scrape_merges_agents_with_identity_labels_and_up() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let (a, _) = RawAgent::hello(gateway.agents, "app", "a:1", "").await;
    let (b, _) = RawAgent::hello(gateway.agents, "app", "b:1", "").await;
    let serving = [
        a.serve(vec![gauge("temperature", &[("x", 1.0), ("y", 2.0)])]),
        b.serve(vec![
            gauge("temperature", &[("x", 3.0)]),
            gauge("load", &[("z", 0.5)]),
        ]),
    ];
    let response = get(gateway.http, "/metrics", &[]).await;
    assert_eq!(response.status, 200);
    assert!(response.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let text = response.text();
    let families = parse(text.as_bytes(), Format::Text).expect("the gateway's output is valid");
    assert_eq!(
        text.matches("# TYPE temperature gauge").count(),
        1,
        "one TYPE per family:\n{text}"
    );
    assert_eq!(
        value_of(
            &families,
            "temperature",
            &[("job", "app"), ("instance", "a:1"), ("k", "y")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value_of(&families, "temperature", &[("instance", "b:1"), ("k", "x")]),
        Some(3.0)
    );
    assert_eq!(
        value_of(&families, "load", &[("instance", "b:1")]),
        Some(0.5)
    );
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "a:1")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "b:1")]),
        Some(1.0)
    );
    gateway.stop().await;
    for task in serving {
        task.await.expect("agent task");
    }
}

#[tokio::test]
async fn a_hung_agent_is_left_out_at_the_deadline_and_marked_down() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let (good, _) = RawAgent::hello(gateway.agents, "app", "good", "").await;
    let _good = good.serve(vec![gauge("g", &[("x", 1.0)])]);
    // Connected, but never answers a scrape.
    let (_hung, _) = RawAgent::hello(gateway.agents, "app", "hung", "").await;
    let response = get(
        gateway.http,
        "/metrics",
        &[("X-Prometheus-Scrape-Timeout-Seconds", "0.5")],
    )
    .await;
    let families = parse(&response.body, Format::Text).expect("valid output");
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "good")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "hung")]),
        Some(0.0)
    );
    assert_eq!(value_of(&families, "g", &[("instance", "good")]), Some(1.0));
    gateway.stop().await;
}

#[tokio::test]
async fn openmetrics_and_gzip_are_negotiated() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let (agent, _) = RawAgent::hello(gateway.agents, "app", "a", "").await;
    let _serving = agent.serve(vec![gauge("g", &[("x", 1.0)])]);
    let response = get(
        gateway.http,
        "/metrics/connected",
        &[
            (
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            ),
            ("Accept-Encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(response.headers["content-encoding"], "gzip");
    assert!(
        response.headers["content-type"].starts_with("application/openmetrics-text; version=1.0.0")
    );
    let mut body = Vec::new();
    flate2::read::GzDecoder::new(&response.body[..])
        .read_to_end(&mut body)
        .expect("valid gzip");
    let families = parse(&body, Format::OpenMetrics).expect("valid OpenMetrics");
    assert_eq!(
        value_of(&families, "g", &[("job", "app"), ("instance", "a")]),
        Some(1.0)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_final_push_is_served_after_the_agent_left() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let (mut agent, _) = RawAgent::hello(gateway.agents, "batch", "run-7", "").await;
    agent
        .send(Push {
            id: 42,
            families: vec![gauge("rows_written", &[("table", 1234.0)])],
            r#final: true,
        })
        .await;
    match agent.recv().await.and_then(|m| m.kind) {
        Some(ServerKind::PushAck(ack)) => {
            assert_eq!(ack.id, 42);
            assert!(ack.error.is_empty(), "{}", ack.error);
        }
        other => panic!("expected PushAck, got {other:?}"),
    }
    agent
        .send(tether_proto::Goodbye {
            reason: "done".into(),
        })
        .await;
    assert!(
        agent.recv().await.is_none(),
        "the gateway closes after Goodbye"
    );
    drop(agent);
    let families =
        parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text).expect("valid output");
    assert_eq!(
        value_of(
            &families,
            "rows_written",
            &[("job", "batch"), ("instance", "run-7")]
        ),
        Some(1234.0)
    );
    // The agent is gone: it is not scraped, so it has no up series.
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "run-7")]),
        None
    );
    // /metrics/connected shows connected agents only.
    let connected = parse(
        &get(gateway.http, "/metrics/connected", &[]).await.body,
        Format::Text,
    )
    .expect("valid");
    assert_eq!(value_of(&connected, "rows_written", &[]), None);
    gateway.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_rejected_and_good_ones_admitted() {
    let config = config(RawConfig {
        agent_token: Some(vec!["s3cret".into(), "other".into()]),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    let mut agent = RawAgent::connect(gateway.agents).await;
    agent
        .send(Hello::new("wrong", [("job", "j"), ("instance", "i")]))
        .await;
    expect_reject(&mut agent, RejectReason::BadToken).await;
    let mut agent = RawAgent::connect(gateway.agents).await;
    agent
        .send(Hello::new("", [("job", "j"), ("instance", "i")]))
        .await;
    expect_reject(&mut agent, RejectReason::BadToken).await;
    let (_agent, welcome) = RawAgent::hello(gateway.agents, "j", "i", "other").await;
    assert_eq!(welcome.version, tether_proto::PROTOCOL_VERSION);
    gateway.stop().await;
}

#[tokio::test]
async fn unknown_versions_missing_identity_and_non_hello_first_frames_are_rejected() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let mut agent = RawAgent::connect(gateway.agents).await;
    let mut hello = Hello::new("", [("job", "j"), ("instance", "i")]);
    hello.min_version = 7;
    hello.max_version = 9;
    agent.send(hello).await;
    expect_reject(&mut agent, RejectReason::UnsupportedVersion).await;

    let mut agent = RawAgent::connect(gateway.agents).await;
    agent.send(Hello::new("", [("job", "j")])).await;
    expect_reject(&mut agent, RejectReason::MissingIdentity).await;

    let mut agent = RawAgent::connect(gateway.agents).await;
    agent.send(tether_proto::Ping { nonce: 1 }).await;
    expect_reject(&mut agent, RejectReason::ProtocolViolation).await;
    gateway.stop().await;
}

#[tokio::test]
async fn oversized_truncated_and_garbage_frames_never_bring_the_gateway_down() {
    let config = config(RawConfig {
        max_frame_bytes: Some(4096),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    // A Hello declared larger than the handshake allows.
    let mut agent = RawAgent::connect(gateway.agents).await;
    agent.write_raw(&[0x80, 0x80, 0x80, 0x01]).await;
    expect_reject(&mut agent, RejectReason::FrameTooLarge).await;
    // After the handshake, a frame over --max-frame-bytes.
    let (mut agent, _) = RawAgent::hello(gateway.agents, "j", "big", "").await;
    agent.write_raw(&[0x80, 0x40]).await; // 8192 bytes declared
    expect_reject(&mut agent, RejectReason::FrameTooLarge).await;
    // Bytes that are not protobuf.
    let mut agent = RawAgent::connect(gateway.agents).await;
    agent.write_raw(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).await;
    expect_reject(&mut agent, RejectReason::MalformedFrame).await;
    // A header longer than any varint.
    let mut agent = RawAgent::connect(gateway.agents).await;
    agent.write_raw(&[0xff; 11]).await;
    expect_reject(&mut agent, RejectReason::MalformedFrame).await;
    // Half a frame, then the agent vanishes.
    let mut agent = RawAgent::connect(gateway.agents).await;
    agent.write_raw(&[0x20, 0x0a, 0x00]).await;
    drop(agent);
    // The gateway still serves agents and scrapes.
    let (agent, _) = RawAgent::hello(gateway.agents, "j", "fine", "").await;
    let _serving = agent.serve(vec![gauge("g", &[("x", 1.0)])]);
    let families =
        parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text).expect("valid output");
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "fine")]),
        Some(1.0)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_rejected_at_the_handshake_deadline() {
    let config = config(RawConfig {
        handshake_timeout_ms: Some(200),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    let mut agent = RawAgent::connect(gateway.agents).await;
    expect_reject(&mut agent, RejectReason::HandshakeTimeout).await;
    gateway.stop().await;
}

#[tokio::test]
async fn agents_past_the_cap_are_told_why_and_a_dead_holder_gives_its_identity_up() {
    let config = config(RawConfig {
        max_agents: Some(1),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    let (mut first, _) = RawAgent::hello(gateway.agents, "j", "one", "").await;
    let mut second = RawAgent::connect(gateway.agents).await;
    second
        .send(Hello::new("", [("job", "j"), ("instance", "two")]))
        .await;
    expect_reject(&mut second, RejectReason::TooManyConnections).await;
    // The same identity again, while the first connection answers nothing
    // (the dead half of a reconnect): it is pinged, found silent, closed.
    let (again, _) = RawAgent::hello(gateway.agents, "j", "one", "").await;
    assert!(
        matches!(
            first.recv().await.and_then(|m| m.kind),
            Some(ServerKind::Ping(_))
        ),
        "the holder is pinged"
    );
    expect_reject(&mut first, RejectReason::IdentityInUse).await;
    let _serving = again.serve(vec![gauge("g", &[("x", 7.0)])]);
    let families =
        parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text).expect("valid output");
    assert_eq!(value_of(&families, "g", &[("instance", "one")]), Some(7.0));
    gateway.stop().await;
}

/// `tether_agent_identity_collisions_total{outcome}` as served now.
async fn collisions(gateway: &TestGateway, outcome: &str) -> f64 {
    self_metric(
        gateway,
        "tether_agent_identity_collisions_total",
        &[("outcome", outcome)],
    )
    .await
}

#[tokio::test]
async fn a_newcomer_with_a_live_agents_identity_is_rejected_and_the_agent_stays() {
    let gateway = TestGateway::start_observed(RawConfig::loopback()).await;
    let (first, _) = RawAgent::hello(gateway.agents, "j", "one", "").await;
    let serving = first.serve(vec![gauge("g", &[("x", 1.0)])]);
    for _ in 0..3 {
        let mut newcomer = RawAgent::connect(gateway.agents).await;
        newcomer
            .send(Hello::new("", [("job", "j"), ("instance", "one")]))
            .await;
        expect_reject(&mut newcomer, RejectReason::IdentityInUse).await;
    }
    assert!(
        !serving.is_finished(),
        "the connected agent keeps its connection"
    );
    let families =
        parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text).expect("valid output");
    assert_eq!(value_of(&families, "g", &[("instance", "one")]), Some(1.0));
    assert_eq!(collisions(&gateway, "newcomer_rejected").await, 3.0);
    assert_eq!(collisions(&gateway, "older_dead").await, 0.0);
    gateway.stop().await;
}

#[tokio::test]
async fn with_newest_wins_the_older_connection_is_told_and_closed() {
    let gateway = TestGateway::start_observed(RawConfig {
        identity_collision: Some(tether_gateway::IdentityCollision::NewestWins),
        ..RawConfig::loopback()
    })
    .await;
    let (mut first, _) = RawAgent::hello(gateway.agents, "j", "one", "").await;
    let (second, _) = RawAgent::hello(gateway.agents, "j", "one", "").await;
    expect_reject(&mut first, RejectReason::IdentityInUse).await;
    let _serving = second.serve(vec![gauge("g", &[("x", 2.0)])]);
    let families =
        parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text).expect("valid output");
    assert_eq!(value_of(&families, "g", &[("instance", "one")]), Some(2.0));
    assert_eq!(collisions(&gateway, "older_replaced").await, 1.0);
    gateway.stop().await;
}

#[tokio::test]
async fn agents_ping_and_get_pong() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let (mut agent, welcome) = RawAgent::hello(gateway.agents, "j", "i", "").await;
    assert!(welcome.heartbeat_interval_ms > 0);
    agent.send(tether_proto::Ping { nonce: 99 }).await;
    match agent.recv().await.and_then(|m| m.kind) {
        Some(ServerKind::Pong(pong)) => assert_eq!(pong.nonce, 99),
        other => panic!("expected Pong, got {other:?}"),
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_silent_agent_is_closed_after_three_heartbeats() {
    let config = config(RawConfig {
        heartbeat_interval_ms: Some(50),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    let (mut agent, welcome) = RawAgent::hello(gateway.agents, "j", "silent", "").await;
    assert_eq!(welcome.heartbeat_interval_ms, 50);
    // The agent reads but never answers: the gateway pings, then gives up.
    let mut pings = 0;
    while let Some(message) = agent.recv().await {
        assert!(
            matches!(message.kind, Some(ServerKind::Ping(_))),
            "only pings: {message:?}"
        );
        pings += 1;
    }
    assert!(
        pings >= 2,
        "the gateway pinged before closing ({pings} pings)"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn rejections_are_counted_on_the_proxy_endpoint() {
    let gateway = TestGateway::start_observed(RawConfig {
        agent_token: Some(vec!["right".into()]),
        ..RawConfig::loopback()
    })
    .await;
    for _ in 0..2 {
        let mut agent = RawAgent::connect(gateway.agents).await;
        agent
            .send(Hello::new("wrong", [("job", "j"), ("instance", "i")]))
            .await;
        expect_reject(&mut agent, RejectReason::BadToken).await;
    }
    let (agent, _) = RawAgent::hello(gateway.agents, "j", "ok", "right").await;
    let _serving = agent.serve(vec![gauge("g", &[("x", 1.0)])]);
    let families = parse(
        &get(gateway.http, "/metrics/proxy", &[]).await.body,
        Format::Text,
    )
    .expect("valid output");
    assert_eq!(
        value_of(
            &families,
            "tether_agent_rejects_total",
            &[("reason", "bad_token")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value_of(&families, "tether_agents_connected", &[]),
        Some(1.0)
    );
    // The listeners report their sockets too.
    assert!(
        value_of(
            &families,
            "tether_tcp_sockets_opened_total",
            &[("listener", "agents")]
        )
        .is_some_and(|n| n >= 3.0)
    );
    gateway.stop().await;
}

/// `value` as a protobuf varint.
fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A whole frame: a `ClientMessage` whose `scrape_response` has `id` and
/// `n` empty families, written byte by byte (building it with prost would
/// allocate what the gateway must not).
fn empty_families_answer(id: u64, n: usize) -> Vec<u8> {
    let mut response = Vec::with_capacity(2 * n + 12);
    response.push(0x08);
    varint(id, &mut response);
    for _ in 0..n {
        response.extend_from_slice(&[0x12, 0x00]);
    }
    let mut message = vec![0x22];
    varint(response.len() as u64, &mut message);
    message.extend_from_slice(&response);
    let mut frame = Vec::with_capacity(message.len() + 10);
    varint(message.len() as u64, &mut frame);
    frame.extend_from_slice(&message);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_not_asked_for_or_over_the_limit_are_refused_undecoded() {
    let gateway = TestGateway::start_observed(RawConfig {
        max_series_per_answer: Some(1_000),
        ..RawConfig::loopback()
    })
    .await;
    // 8 MiB of empty families, answering a scrape nobody made: it would
    // decode into gigabytes.
    let (mut hostile, _) = RawAgent::hello(gateway.agents, "j", "hostile", "").await;
    hostile
        .write_raw(&empty_families_answer(987_654_321, 4 << 20))
        .await;
    let healthy = tokio::time::timeout(PATIENCE, get(gateway.http, "/-/healthy", &[])).await;
    assert!(healthy.is_ok(), "health answers");
    // An agent that answers with more families than the limit is down for
    // that scrape; the gateway stays up for the others.
    let (greedy, _) = RawAgent::hello(gateway.agents, "j", "greedy", "").await;
    let _greedy = greedy.serve(vec![tether_model::pb::MetricFamily::default(); 2_000]);
    let (fine, _) = RawAgent::hello(gateway.agents, "j", "fine", "").await;
    let _fine = fine.serve(vec![gauge("g", &[("x", 1.0)])]);
    let families =
        parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text).expect("valid output");
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "greedy")]),
        Some(0.0)
    );
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "fine")]),
        Some(1.0)
    );
    let count = |reason: &str| {
        value_of(
            &families,
            "tether_agent_frames_refused_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(count("unsolicited"), Some(1.0));
    assert_eq!(count("over_limit"), Some(1.0));
    gateway.stop().await;
}

#[tokio::test]
async fn a_brute_force_is_throttled_per_address_and_other_agents_get_in() {
    use std::net::{IpAddr, Ipv4Addr};
    let config = config(RawConfig {
        agent_token: Some(vec!["right".into()]),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let mut refused_unchecked = false;
    for attempt in 0..30 {
        let mut agent = RawAgent::connect_from(attacker, gateway.agents).await;
        agent
            .send(Hello::new(
                format!("guess-{attempt}"),
                [("job", "j"), ("instance", "i")],
            ))
            .await;
        let Some(ServerKind::Reject(reject)) = agent.recv().await.and_then(|m| m.kind) else {
            panic!("a bad token is rejected");
        };
        if reject.message.contains("too many bad tokens") {
            refused_unchecked = true;
            break;
        }
    }
    assert!(refused_unchecked, "the attacker's address is throttled");
    // Even the right token is not compared from that address now...
    let mut agent = RawAgent::connect_from(attacker, gateway.agents).await;
    agent
        .send(Hello::new("right", [("job", "j"), ("instance", "i")]))
        .await;
    expect_reject(&mut agent, RejectReason::BadToken).await;
    // ...while an agent from another address is admitted at once.
    let mut agent =
        RawAgent::connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), gateway.agents).await;
    agent
        .send(Hello::new("right", [("job", "j"), ("instance", "other")]))
        .await;
    assert!(
        matches!(
            agent.recv().await.and_then(|m| m.kind),
            Some(ServerKind::Welcome(_))
        ),
        "an agent from another address is welcomed"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_hellos_cannot_take_the_frame_budget_from_agents() {
    let gateway = TestGateway::start_observed(RawConfig {
        max_frame_bytes: Some(1 << 20),
        max_frame_bytes_in_flight: Some(1 << 20),
        handshake_timeout_ms: Some(120_000),
        ..RawConfig::loopback()
    })
    .await;
    // 30 connections start a 60 KiB Hello and stop: 1.8 MiB announced.
    let mut stalled = Vec::new();
    for _ in 0..30 {
        let mut agent = RawAgent::connect(gateway.agents).await;
        // The header of a 61,440-byte body (a varint), then 5 KiB of it.
        let mut partial = vec![0x80, 0xe0, 0x03];
        partial.extend_from_slice(&[0x0a; 5 << 10]);
        agent.write_raw(&partial).await;
        stalled.push(agent);
    }
    // A real agent's answer far above a read chunk is read at once.
    let (agent, _) = RawAgent::hello(gateway.agents, "j", "real", "").await;
    let values: Vec<(String, f64)> = (0..5_000).map(|i| (format!("{i:06}"), 1.0)).collect();
    let values: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let _serving = agent.serve(vec![gauge("g", &values)]);
    let families = parse(
        &get(
            gateway.http,
            "/metrics",
            &[("X-Prometheus-Scrape-Timeout-Seconds", "10")],
        )
        .await
        .body,
        Format::Text,
    )
    .expect("valid output");
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "real")]),
        Some(1.0)
    );
    assert_eq!(
        self_metric(&gateway, "tether_agent_frame_budget_waits_total", &[]).await,
        0.0
    );
    drop(stalled);
    gateway.stop().await;
}
