//! The dial-out agent against a scripted gateway on a real loopback socket:
//! the handshake, scrapes, heartbeats, pushes, the frame limit, reconnects
//! and a permanent rejection, frame by frame.

use std::time::Duration;

use tether_exporter::{Agent, AgentBuilder, AgentError, AgentState, ExporterBuilder};
use tether_model::{Counter, MetricFamily, MetricType, Series, Value};
use tether_proto::{
    ClientKind, ClientMessage, Hello, MAX_HELLO_FRAME_BYTES, PROTOCOL_VERSION, Ping, PushAck,
    Reject, RejectReason, ScrapeRequest, ServerMessage, Welcome, decode_client_message,
};
use tether_tcp::FramedConn;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{DEADLINE, within};

/// The gateway's side of one agent connection, driven by the test.
struct Gateway {
    conn: FramedConn<TcpStream>,
}

impl Gateway {
    /// Accepts the agent's next connection and reads its `Hello`.
    async fn accept(listener: &TcpListener) -> (Gateway, Hello) {
        let (socket, _) = within("the agent to connect", listener.accept())
            .await
            .expect("an accepted connection");
        let mut gateway = Gateway {
            conn: FramedConn::new(socket),
        };
        match gateway.read_limited(MAX_HELLO_FRAME_BYTES).await {
            Some(ClientKind::Hello(hello)) => (gateway, hello),
            other => panic!("expected a Hello, got {other:?}"),
        }
    }

    /// Accepts the agent and welcomes it with a frame limit of
    /// `max_frame_bytes` and no heartbeats.
    async fn welcome(listener: &TcpListener, max_frame_bytes: u32) -> Gateway {
        let (mut gateway, _hello) = Gateway::accept(listener).await;
        gateway
            .send(Welcome {
                version: PROTOCOL_VERSION,
                heartbeat_interval_ms: 0,
                max_frame_bytes,
                gateway_version: "test".to_owned(),
            })
            .await;
        gateway
    }

    async fn send(&mut self, message: impl Into<ServerMessage>) {
        within("a frame to the agent", self.conn.send(&message.into()))
            .await
            .expect("the agent's socket takes the frame");
    }

    /// The next message's kind; `None` once the agent closed.
    async fn read(&mut self) -> Option<ClientKind> {
        self.read_limited(1 << 20).await
    }

    async fn read_limited(&mut self, max_frame_bytes: usize) -> Option<ClientKind> {
        let body = within(
            "a frame from the agent",
            self.conn.read_frame(max_frame_bytes),
        )
        .await
        .expect("a whole frame or a clean end")?;
        let message: ClientMessage = decode_client_message(body).expect("a valid ClientMessage");
        message.kind
    }
}

fn agent_builder(listener: &TcpListener) -> AgentBuilder {
    let addr = listener.local_addr().expect("a bound listener");
    AgentBuilder::new(addr.to_string(), "payments", "a:1")
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port")
}

/// A scrape with the timeout a gateway would give.
fn scrape(id: u64) -> ScrapeRequest {
    ScrapeRequest {
        id,
        timeout_ms: 10_000,
    }
}

fn counter_family(name: &str, total: f64) -> MetricFamily {
    MetricFamily {
        name: name.to_owned(),
        metric_type: MetricType::Counter,
        help: Some("A counter of the test.".to_owned()),
        unit: None,
        series: vec![Series {
            labels: Vec::new(),
            value: Value::Counter(Counter {
                total,
                created: None,
                exemplar: None,
            }),
            timestamp_ms: None,
        }],
    }
}

#[tokio::test]
async fn the_agent_greets_answers_scrapes_and_pings_and_pushes_until_it_says_goodbye() {
    let listener = listener().await;
    let recorder = ExporterBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("jobs_total").increment(3);
    });
    let agent = agent_builder(&listener)
        .label("zone", "eu")
        .registry(recorder.handle())
        .spawn()
        .expect("the agent starts");
    let (mut gateway, hello) = Gateway::accept(&listener).await;
    let identity: Vec<_> = hello
        .identity
        .iter()
        .map(|label| (label.name(), label.value()))
        .collect();
    assert_eq!(
        identity,
        [("job", "payments"), ("instance", "a:1"), ("zone", "eu")]
    );
    gateway
        .send(Welcome {
            version: PROTOCOL_VERSION,
            heartbeat_interval_ms: 0,
            max_frame_bytes: 1 << 20,
            gateway_version: "test".to_owned(),
        })
        .await;
    agent
        .wait_connected(DEADLINE)
        .await
        .expect("the agent connects");
    assert_eq!(agent.state(), AgentState::Connected);

    gateway.send(scrape(5)).await;
    match gateway.read().await {
        Some(ClientKind::ScrapeResponse(response)) => {
            assert_eq!(response.id, 5);
            assert_eq!(response.error, "");
            let names: Vec<_> = response
                .families
                .iter()
                .map(tether_model::pb::MetricFamily::name)
                .collect();
            assert_eq!(names, ["jobs_total"]);
        }
        other => panic!("expected a ScrapeResponse, got {other:?}"),
    }

    gateway.send(Ping { nonce: 9 }).await;
    assert!(
        matches!(gateway.read().await, Some(ClientKind::Pong(pong)) if pong.nonce == 9),
        "a Ping is answered with its nonce"
    );

    let (pushed, ()) = tokio::join!(agent.push(DEADLINE), async {
        match gateway.read().await {
            Some(ClientKind::Push(push)) => {
                assert!(!push.r#final);
                gateway
                    .send(PushAck {
                        id: push.id,
                        error: String::new(),
                    })
                    .await;
            }
            other => panic!("expected a Push, got {other:?}"),
        }
    });
    pushed.expect("the push is acknowledged");

    let (closed, ()) = tokio::join!(agent.push_and_close(DEADLINE), async {
        match gateway.read().await {
            Some(ClientKind::Push(push)) => {
                assert!(push.r#final);
                gateway
                    .send(PushAck {
                        id: push.id,
                        error: String::new(),
                    })
                    .await;
            }
            other => panic!("expected the final Push, got {other:?}"),
        }
        assert!(matches!(gateway.read().await, Some(ClientKind::Goodbye(_))));
        assert!(
            gateway.read().await.is_none(),
            "the agent closes after Goodbye"
        );
    });
    closed.expect("the final push is acknowledged");
}

#[tokio::test]
async fn metrics_over_the_gateways_frame_limit_are_answered_with_an_error() {
    let listener = listener().await;
    // Far more than the 1 KiB limit the gateway announces.
    let families: Vec<MetricFamily> = (0..200)
        .map(|n| counter_family(&format!("requests_of_a_long_named_route_{n}_total"), 1.0))
        .collect();
    let agent = agent_builder(&listener)
        .source(move || families.clone())
        .spawn()
        .expect("the agent starts");
    let mut gateway = Gateway::welcome(&listener, 1024).await;
    gateway.send(scrape(1)).await;
    match gateway.read().await {
        Some(ClientKind::ScrapeResponse(response)) => {
            assert_eq!(response.id, 1);
            assert!(response.families.is_empty());
            assert!(
                response.error.contains("frame limit of 1024 bytes"),
                "{}",
                response.error
            );
        }
        other => panic!("expected a ScrapeResponse, got {other:?}"),
    }
    let pushed = agent.push(DEADLINE).await;
    assert!(
        matches!(&pushed, Err(AgentError::PushRefused(message)) if message.contains("frame limit")),
        "{pushed:?}"
    );
    // Nothing was sent for the refused push: the next frame is the answer
    // to the next scrape.
    gateway.send(scrape(2)).await;
    assert!(matches!(
        gateway.read().await,
        Some(ClientKind::ScrapeResponse(response)) if response.id == 2
    ));
    agent.close().await;
}

#[tokio::test]
async fn a_gateway_that_closes_in_the_middle_of_a_frame_is_dialled_again() {
    let listener = listener().await;
    let agent = agent_builder(&listener)
        .source(Vec::new)
        .spawn()
        .expect("the agent starts");
    let mut first = Gateway::welcome(&listener, 1 << 20).await;
    agent
        .wait_connected(DEADLINE)
        .await
        .expect("the agent connects");
    // A header that announces 100 bytes, then 3 of them, then the end.
    let socket = first.conn.get_mut();
    socket
        .write_all(&[100, 1, 2, 3])
        .await
        .expect("the agent's socket takes the bytes");
    drop(first);
    let (mut second, hello) = Gateway::accept(&listener).await;
    assert_eq!(hello.identity.len(), 2, "the same agent dials again");
    second
        .send(Welcome {
            version: PROTOCOL_VERSION,
            heartbeat_interval_ms: 0,
            max_frame_bytes: 1 << 20,
            gateway_version: "test".to_owned(),
        })
        .await;
    // The agent said `Hello` again, so its state went back to connecting.
    agent
        .wait_connected(DEADLINE)
        .await
        .expect("the agent connects again");
    second.send(scrape(3)).await;
    assert!(matches!(
        second.read().await,
        Some(ClientKind::ScrapeResponse(response)) if response.id == 3
    ));
    agent.close().await;
}

#[tokio::test]
async fn a_permanent_rejection_stops_the_agent() {
    let listener = listener().await;
    let agent: Agent = agent_builder(&listener)
        .token("wrong")
        .source(Vec::new)
        .spawn()
        .expect("the agent starts");
    let (mut gateway, hello) = Gateway::accept(&listener).await;
    assert_eq!(hello.token, "wrong");
    gateway
        .send(Reject::new(
            RejectReason::BadToken,
            "the token is not accepted",
        ))
        .await;
    assert_eq!(
        agent.wait_connected(DEADLINE).await,
        Err(AgentError::Rejected {
            reason: RejectReason::BadToken,
            message: "the token is not accepted".to_owned(),
        })
    );
    assert!(matches!(
        agent.state(),
        AgentState::Stopped { error: Some(_) }
    ));
}
