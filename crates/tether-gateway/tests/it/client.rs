//! tether-exporter's agent against the real gateway: scrapes from a
//! registry, reconnects, push and close, rejection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Key, Label, Level, Metadata, Recorder};
use tether_exporter::{AgentBuilder, AgentError, AgentState, ExporterBuilder};
use tether_gateway::{Config, RawConfig};

use crate::support::config;
use tether_model::{Format, parse};
use tether_proto::RejectReason;

use crate::support::{TestGateway, gauge, get, value_of};

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);
const WAIT: Duration = Duration::from_secs(20);

async fn scrape(gateway: &TestGateway) -> Vec<tether_model::MetricFamily> {
    parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text).expect("valid output")
}

/// Scrapes until `check` holds or the deadline passes.
async fn scrape_until(
    gateway: &TestGateway,
    what: &str,
    check: impl Fn(&[tether_model::MetricFamily]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !check(&scrape(gateway).await) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_scrapes_from_its_registry() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let recorder = ExporterBuilder::new().build_recorder();
    let counter = recorder.register_counter(
        &Key::from_parts("jobs_done_total", vec![Label::new("queue", "mail")]),
        &METADATA,
    );
    counter.increment(41);
    let agent = AgentBuilder::new(gateway.agents.to_string(), "worker", "w-1")
        .label("region", "eu")
        .registry(recorder.handle())
        .spawn()
        .expect("agent starts");
    agent.wait_connected(WAIT).await.expect("agent connects");
    counter.increment(1);
    let families = scrape(&gateway).await;
    assert_eq!(
        value_of(
            &families,
            "jobs_done_total",
            &[
                ("job", "worker"),
                ("instance", "w-1"),
                ("region", "eu"),
                ("queue", "mail")
            ]
        ),
        Some(42.0)
    );
    assert_eq!(
        value_of(&families, "tether_agent_up", &[("instance", "w-1")]),
        Some(1.0)
    );
    agent.close().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reconnect_after_the_gateway_restarts() {
    let first = TestGateway::start(Config::loopback()).await;
    let agent_addr = first.agents;
    let agent = AgentBuilder::new(agent_addr.to_string(), "app", "a-1")
        .source(|| vec![tether_model::from_proto(gauge("g", &[("x", 1.0)])).expect("valid family")])
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .spawn()
        .expect("agent starts");
    agent.wait_connected(WAIT).await.expect("agent connects");
    first.stop().await;
    // The agent notices and keeps trying.
    let deadline = Instant::now() + WAIT;
    while agent.state() == AgentState::Connected {
        assert!(
            Instant::now() < deadline,
            "the agent never noticed the gateway stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = TestGateway::start_at(config(RawConfig {
        agent_listen: Some(agent_addr.to_string()),
        ..RawConfig::loopback()
    }))
    .await;
    scrape_until(&second, "the agent to reconnect", |f| {
        value_of(f, "g", &[("instance", "a-1")]) == Some(1.0)
    })
    .await;
    agent.close().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_close_leaves_the_final_metrics_served() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let recorder = Arc::new(ExporterBuilder::new().build_recorder());
    let rows = recorder.register_gauge(&Key::from_name("rows_exported"), &METADATA);
    let agent = AgentBuilder::new(
        gateway.agents.to_string(),
        "nightly-export",
        "run-2026-11-22",
    )
    .registry(recorder.handle())
    .spawn()
    .expect("agent starts");
    rows.set(90_210.0);
    agent
        .push_and_close(WAIT)
        .await
        .expect("the gateway acknowledged the final push");
    // The process would exit here; the gateway keeps what it acknowledged.
    let families = scrape(&gateway).await;
    assert_eq!(
        value_of(
            &families,
            "rows_exported",
            &[("job", "nightly-export"), ("instance", "run-2026-11-22")]
        ),
        Some(90_210.0)
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_final_push_survives_a_gateway_restart() {
    let dir = std::env::temp_dir().join(format!("tether-final-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let durable = || RawConfig {
        data_dir: Some(dir.clone()),
        no_persistence: Some(false),
        ..RawConfig::loopback()
    };
    let gateway = TestGateway::start(config(durable())).await;
    let recorder = Arc::new(ExporterBuilder::new().build_recorder());
    let rows = recorder.register_gauge(&Key::from_name("rows_exported"), &METADATA);
    let agent = AgentBuilder::new(gateway.agents.to_string(), "nightly-export", "run-7")
        .registry(recorder.handle())
        .spawn()
        .expect("agent starts");
    rows.set(4_242.0);
    agent
        .push_and_close(WAIT)
        .await
        .expect("the gateway acknowledged the final push");
    gateway.stop().await;
    // A new gateway on the same data directory serves what the old one
    // acknowledged.
    let restarted = TestGateway::start(config(durable())).await;
    let families = scrape(&restarted).await;
    assert_eq!(
        value_of(
            &families,
            "rows_exported",
            &[("job", "nightly-export"), ("instance", "run-7")]
        ),
        Some(4_242.0)
    );
    restarted.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_stops_the_agent_with_the_reason() {
    let gateway = TestGateway::start(config(RawConfig {
        agent_token: Some(vec!["right".into()]),
        ..RawConfig::loopback()
    }))
    .await;
    let agent = AgentBuilder::new(gateway.agents.to_string(), "app", "a")
        .token("wrong")
        .source(Vec::new)
        .spawn()
        .expect("agent starts");
    match agent.wait_connected(WAIT).await {
        Err(AgentError::Rejected { reason, message }) => {
            assert_eq!(reason, RejectReason::BadToken);
            assert!(!message.is_empty());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(matches!(
        agent.state(),
        AgentState::Stopped { error: Some(_) }
    ));
    gateway.stop().await;
}

#[tokio::test]
async fn an_agent_gives_up_after_its_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("probe")
        .local_addr()
        .expect("addr");
    // Nothing listens once the probe is dropped.
    let agent = AgentBuilder::new(closed.to_string(), "app", "a")
        .source(Vec::new)
        .backoff(Duration::from_millis(5), Duration::from_millis(10))
        .max_retries(2)
        .spawn()
        .expect("agent starts");
    let outcome = agent.wait_connected(WAIT).await;
    assert!(
        matches!(outcome, Err(AgentError::Config(ref m)) if m.contains("gave up")),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_with_one_identity_do_not_take_turns() {
    let gateway = TestGateway::start_observed(RawConfig::loopback()).await;
    let spawn = || {
        AgentBuilder::new(gateway.agents.to_string(), "app", "same")
            .registry(ExporterBuilder::new().build_recorder().handle())
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .spawn()
            .expect("agent starts")
    };
    let first = spawn();
    first
        .wait_connected(WAIT)
        .await
        .expect("the first connects");
    let second = spawn();
    // The second is turned away again and again, with back-off, while the
    // first keeps its connection.
    let deadline = Instant::now() + WAIT;
    loop {
        let families = parse(
            &get(gateway.http, "/metrics/proxy", &[]).await.body,
            Format::Text,
        )
        .expect("valid output");
        let outcome = |outcome: &str| {
            value_of(
                &families,
                "tether_agent_identity_collisions_total",
                &[("outcome", outcome)],
            )
            .unwrap_or(0.0)
        };
        assert_eq!(
            outcome("older_dead"),
            0.0,
            "the live agent was never displaced"
        );
        assert_eq!(outcome("older_replaced"), 0.0);
        if outcome("newcomer_rejected") >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for rejections"
        );
        tokio::task::yield_now().await;
    }
    assert!(matches!(first.state(), AgentState::Connected));
    assert!(!matches!(second.state(), AgentState::Connected));
    second.close().await;
    first.close().await;
    gateway.stop().await;
}
