//! The dial-out agent: keeps a connection to a tether gateway, answers its
//! scrapes from a registry (or any source of families), reconnects with
//! backoff, and pushes final metrics before the process exits.
//!
//! The agent runs as one task that owns the socket. The application talks
//! to it through [`Agent`] (push, close, state); recording metrics never
//! touches the agent at all, so a slow or absent gateway cannot slow the
//! application down.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_model::{MetricFamily, to_proto};
use tether_proto::{
    ClientMessage, Goodbye, Hello, Ping, Pong, Push, RejectReason, SILENT_INTERVALS_BEFORE_DEAD,
    ScrapeResponse, ServerKind, ServerMessage, decode_server_message,
};
use tether_tcp::FramedConn;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handle::ExporterHandle;

/// Default first reconnection delay; it doubles up to the maximum.
pub const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Default longest reconnection delay.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Default time to establish TCP (and TLS) and complete the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame the agent reads from the gateway, in bytes. Gateway
/// frames are small (requests, acknowledgements); the limit only guards
/// against a peer that is not a gateway.
const MAX_INBOUND_FRAME_BYTES: usize = 1 << 20;
/// Heartbeat interval used before the gateway's Welcome says otherwise.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(15);
/// Capacity of the application's command queue to the agent task.
const CONTROL_QUEUE: usize = 16;
/// How long a stopping agent waits for acknowledgements of pushes in flight.
const STOP_ACKS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping agent may take to send `Goodbye` and close.
const STOP_GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the agent gets the families it answers scrapes with.
pub type FamiliesSource = Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

/// TLS settings of the connection to the gateway.
#[derive(Clone)]
pub struct AgentTls {
    config: Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl AgentTls {
    /// TLS with `config` (roots, and a client certificate for mutual TLS),
    /// checking the gateway's certificate against `server_name`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<AgentTls, AgentError> {
        let server_name =
            rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|_| {
                AgentError::Config(format!("{server_name:?} is not a valid TLS server name"))
            })?;
        Ok(AgentTls {
            config,
            server_name,
        })
    }
}

impl fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why the agent failed or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The builder's settings cannot work.
    #[error("agent configuration: {0}")]
    Config(String),
    /// The gateway refused the agent for good (token, version, identity).
    #[error("rejected by the gateway ({reason:?}): {message}")]
    Rejected {
        /// The gateway's reason.
        reason: RejectReason,
        /// The gateway's explanation.
        message: String,
    },
    /// The operation did not finish in time.
    #[error("timed out after {0:?}: the gateway is unreachable or slow")]
    Timeout(Duration),
    /// The gateway answered a push with an error.
    #[error("the gateway refused the push: {0}")]
    PushRefused(String),
    /// The agent task has stopped (closed, rejected, or out of retries).
    #[error("the agent has stopped")]
    Stopped,
}

/// Where the agent's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    /// Connecting, or waiting to reconnect; `attempt` counts failures in a row.
    Connecting {
        /// Failed attempts since the last successful handshake.
        attempt: u32,
    },
    /// Handshake done; answering scrapes.
    Connected,
    /// Stopped: closed on request, rejected for good, or out of retries.
    Stopped {
        /// Why, when it was not on request.
        error: Option<AgentError>,
    },
}

/// Builds an [`Agent`].
#[derive(Clone)]
pub struct AgentBuilder {
    gateway: String,
    identity: Vec<(String, String)>,
    token: String,
    tls: Option<AgentTls>,
    source: Option<FamiliesSource>,
    first_backoff: Duration,
    max_backoff: Duration,
    max_retries: Option<u32>,
    connect_timeout: Duration,
    client_name: String,
}

impl fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("gateway", &self.gateway)
            .field("identity", &self.identity)
            .field("tls", &self.tls)
            .field("first_backoff", &self.first_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// An agent that dials `gateway` (`host:port`) as `job`/`instance`.
    pub fn new(
        gateway: impl Into<String>,
        job: impl Into<String>,
        instance: impl Into<String>,
    ) -> AgentBuilder {
        AgentBuilder {
            gateway: gateway.into(),
            identity: vec![
                ("job".to_owned(), job.into()),
                ("instance".to_owned(), instance.into()),
            ],
            token: String::new(),
            tls: None,
            source: None,
            first_backoff: DEFAULT_FIRST_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_retries: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            client_name: format!("tether-exporter/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Adds an identity label, added by the gateway to every series.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> AgentBuilder {
        self.identity.push((name.into(), value.into()));
        self
    }

    /// The token the gateway requires (`--agent-token`).
    pub fn token(mut self, token: impl Into<String>) -> AgentBuilder {
        self.token = token.into();
        self
    }

    /// Connects over TLS.
    pub fn tls(mut self, tls: AgentTls) -> AgentBuilder {
        self.tls = Some(tls);
        self
    }

    /// Answers scrapes from a recorder's registry.
    pub fn registry(self, handle: ExporterHandle) -> AgentBuilder {
        self.source(move || handle.families())
    }

    /// Answers scrapes with whatever `source` returns (several registries
    /// combined, or families built by hand).
    pub fn source(
        mut self,
        source: impl Fn() -> Vec<MetricFamily> + Send + Sync + 'static,
    ) -> AgentBuilder {
        self.source = Some(Arc::new(source));
        self
    }

    /// Reconnection delays: the first, doubled after each failure up to the
    /// maximum, each with random jitter of up to half its length.
    pub fn backoff(mut self, first: Duration, max: Duration) -> AgentBuilder {
        self.first_backoff = first;
        self.max_backoff = max;
        self
    }

    /// Gives up after `retries` failed attempts in a row (unlimited by default).
    pub fn max_retries(mut self, retries: u32) -> AgentBuilder {
        self.max_retries = Some(retries);
        self
    }

    /// Time allowed to connect and complete the handshake.
    pub fn connect_timeout(mut self, timeout: Duration) -> AgentBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Starts the agent on the current tokio runtime.
    pub fn spawn(self) -> Result<Agent, AgentError> {
        let Some(source) = self.source.clone() else {
            return Err(AgentError::Config(
                "no source of metrics: call .registry(handle) or .source(fn)".to_owned(),
            ));
        };
        if self.first_backoff.is_zero() || self.max_backoff < self.first_backoff {
            return Err(AgentError::Config(
                "backoff: first must be above zero and at most max".to_owned(),
            ));
        }
        if self.identity.iter().any(|(_, value)| value.is_empty()) {
            return Err(AgentError::Config(
                "job and instance must not be empty".to_owned(),
            ));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| AgentError::Config("spawn needs a tokio runtime".to_owned()))?;
        let (control, commands) = mpsc::channel(CONTROL_QUEUE);
        let (state_tx, state) = watch::channel(AgentState::Connecting { attempt: 0 });
        let shutdown = CancellationToken::new();
        let task = runtime.spawn(run(self, source, commands, state_tx, shutdown.clone()));
        Ok(Agent {
            control,
            state,
            shutdown,
            task: Some(task),
        })
    }
}

/// A running agent. Dropping it stops the agent without a final push.
#[derive(Debug)]
pub struct Agent {
    control: mpsc::Sender<Control>,
    state: watch::Receiver<AgentState>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
enum Control {
    Push {
        is_final: bool,
        reply: oneshot::Sender<Result<(), AgentError>>,
    },
}

impl Agent {
    /// The connection's state now.
    pub fn state(&self) -> AgentState {
        self.state.borrow().clone()
    }

    /// Waits until the agent is connected, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), AgentError> {
        let mut state = self.state.clone();
        let wait = state.wait_for(|s| !matches!(s, AgentState::Connecting { .. }));
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(AgentError::Timeout(timeout)),
            Ok(Err(_)) => Err(AgentError::Stopped),
            Ok(Ok(state)) => match &*state {
                AgentState::Connected => Ok(()),
                AgentState::Stopped { error } => Err(error.clone().unwrap_or(AgentError::Stopped)),
                AgentState::Connecting { .. } => Err(AgentError::Stopped),
            },
        }
    }

    /// Sends the current metrics now; returns once the gateway holds them.
    pub async fn push(&self, timeout: Duration) -> Result<(), AgentError> {
        self.send_push(false, timeout).await
    }

    /// Pushes the final metrics, waits until the gateway acknowledged them
    /// (it then serves them to scrapes for its final-push TTL), says
    /// goodbye and stops. Call it just before the process exits.
    pub async fn push_and_close(mut self, timeout: Duration) -> Result<(), AgentError> {
        let result = self.send_push(true, timeout).await;
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(timeout, task).await;
        }
        result
    }

    /// Says goodbye to the gateway and stops, without a final push.
    pub async fn close(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    async fn send_push(&self, is_final: bool, timeout: Duration) -> Result<(), AgentError> {
        let deadline = Instant::now() + timeout;
        // A push needs a connection: wait for one within the same deadline.
        self.wait_connected(timeout).await?;
        let (reply, answer) = oneshot::channel();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let sent = tokio::time::timeout(
            remaining,
            self.control.send(Control::Push { is_final, reply }),
        )
        .await;
        match sent {
            Err(_) => return Err(AgentError::Timeout(timeout)),
            Ok(Err(_)) => return Err(AgentError::Stopped),
            Ok(Ok(())) => {}
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, answer).await {
            Err(_) => Err(AgentError::Timeout(timeout)),
            Ok(Err(_)) => Err(AgentError::Stopped),
            Ok(Ok(result)) => result,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The agent task: connect, serve, back off, until stopped.
async fn run(
    builder: AgentBuilder,
    source: FamiliesSource,
    mut commands: mpsc::Receiver<Control>,
    state: watch::Sender<AgentState>,
    shutdown: CancellationToken,
) {
    let mut attempt: u32 = 0;
    let mut jitter = Jitter::new(&builder.gateway);
    loop {
        let _ = state.send(AgentState::Connecting { attempt });
        let outcome = tokio::select! {
            outcome = session(&builder, &source, &mut commands, &state, &shutdown) => outcome,
            // A session stops by itself when `shutdown` is cancelled, and
            // says goodbye when connected; this ends one that is stuck in
            // a write to a gateway that stopped reading.
            () = cancelled_for(&shutdown, STOP_ACKS_TIMEOUT + STOP_GOODBYE_TIMEOUT) => Outcome::Stop(None),
        };
        match outcome {
            Outcome::Stop(error) => {
                let _ = state.send(AgentState::Stopped { error });
                return;
            }
            Outcome::Lost {
                was_connected,
                reason,
            } => {
                if was_connected {
                    attempt = 0;
                }
                attempt = attempt.saturating_add(1);
                tracing::debug!(gateway = %builder.gateway, attempt, %reason, "agent disconnected; will reconnect");
                if builder.max_retries.is_some_and(|max| attempt > max) {
                    tracing::warn!(gateway = %builder.gateway, attempts = attempt, %reason, "agent gives up");
                    let _ = state.send(AgentState::Stopped {
                        error: Some(AgentError::Config(format!(
                            "gave up after {attempt} attempts: {reason}"
                        ))),
                    });
                    return;
                }
                let _ = state.send(AgentState::Connecting { attempt });
                let delay = jitter.backoff(builder.first_backoff, builder.max_backoff, attempt);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => {
                        let _ = state.send(AgentState::Stopped { error: None });
                        return;
                    }
                }
            }
        }
    }
}

/// Returns `grace` after `token` is cancelled.
async fn cancelled_for(token: &CancellationToken, grace: Duration) {
    token.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// How one session ended.
enum Outcome {
    /// Do not reconnect.
    Stop(Option<AgentError>),
    /// Reconnect after a backoff.
    Lost { was_connected: bool, reason: String },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, from dial to close.
async fn session(
    builder: &AgentBuilder,
    source: &FamiliesSource,
    commands: &mut mpsc::Receiver<Control>,
    state: &watch::Sender<AgentState>,
    shutdown: &CancellationToken,
) -> Outcome {
    let lost = |reason: String| Outcome::Lost {
        was_connected: false,
        reason,
    };
    let connect = async {
        let tcp = TcpStream::connect(builder.gateway.as_str())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &builder.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
                Box::new(
                    connector
                        .connect(tls.server_name.clone(), tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?,
                )
            }
        };
        let mut conn = Framed {
            frames: FramedConn::new(stream),
        };
        let mut hello = Hello::new(
            builder.token.clone(),
            builder.identity.iter().map(|(n, v)| (n.clone(), v.clone())),
        );
        hello.client_name.clone_from(&builder.client_name);
        hello.client_version = env!("CARGO_PKG_VERSION").to_owned();
        conn.send(&ClientMessage::from(hello))
            .await
            .map_err(|e| format!("send Hello: {e}"))?;
        let welcome = conn
            .read()
            .await
            .map_err(|e| format!("read Welcome: {e}"))?;
        Ok::<_, String>((conn, welcome))
    };
    let connected = tokio::select! {
        connected = tokio::time::timeout(builder.connect_timeout, connect) => connected,
        // Not connected yet: there is no one to say goodbye to.
        () = shutdown.cancelled() => return Outcome::Stop(None),
    };
    let (mut conn, first) = match connected {
        Err(_) => return lost(format!("no handshake within {:?}", builder.connect_timeout)),
        Ok(Err(reason)) => return lost(reason),
        Ok(Ok(connected)) => connected,
    };
    let welcome = match first.and_then(|m| m.kind) {
        Some(ServerKind::Welcome(welcome)) => welcome,
        Some(ServerKind::Reject(reject)) => {
            let reason = reject.reason();
            tracing::warn!(gateway = %builder.gateway, ?reason, message = %reject.message, "gateway rejected the agent");
            if reason.is_permanent() {
                return Outcome::Stop(Some(AgentError::Rejected {
                    reason,
                    message: reject.message,
                }));
            }
            return lost(format!("rejected: {}", reject.message));
        }
        Some(other) => return lost(format!("expected Welcome, got {}", other.name())),
        None => return lost("the gateway closed during the handshake".to_owned()),
    };
    let _ = state.send(AgentState::Connected);
    tracing::info!(gateway = %builder.gateway, version = welcome.version, "agent connected");
    let max_frame_bytes = usize::try_from(welcome.max_frame_bytes)
        .unwrap_or(usize::MAX)
        .max(1024);
    let heartbeat = match welcome.heartbeat_interval_ms {
        0 => FALLBACK_HEARTBEAT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let dead_after = heartbeat * SILENT_INTERVALS_BEFORE_DEAD;
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut last_heard = Instant::now();
    let mut next_push_id: u64 = 1;
    let mut next_nonce: u64 = 1;
    let mut pending_pushes: Vec<(u64, oneshot::Sender<Result<(), AgentError>>)> = Vec::new();
    let connected_lost = |reason: String| Outcome::Lost {
        was_connected: true,
        reason,
    };
    loop {
        tokio::select! {
            message = conn.read() => {
                let message = match message {
                    Ok(Some(message)) => message,
                    Ok(None) => return connected_lost("the gateway closed the connection".to_owned()),
                    Err(error) => return connected_lost(error),
                };
                last_heard = Instant::now();
                match message.kind {
                    Some(ServerKind::ScrapeRequest(request)) => {
                        let families: Vec<_> = source().iter().map(to_proto).collect();
                        let response = ClientMessage::from(ScrapeResponse { id: request.id, families, error: String::new() });
                        if conn.frames.feed_limited(&response, max_frame_bytes).is_err() {
                            let error = format!("the metrics exceed the gateway's frame limit of {max_frame_bytes} bytes");
                            tracing::warn!(gateway = %builder.gateway, %error, "scrape answered with an error");
                            conn.frames.feed(&ClientMessage::from(ScrapeResponse { id: request.id, families: Vec::new(), error }));
                        }
                        if let Err(error) = conn.flush().await {
                            return connected_lost(error);
                        }
                    }
                    Some(ServerKind::PushAck(ack)) => {
                        if let Some(index) = pending_pushes.iter().position(|(id, _)| *id == ack.id) {
                            let (_, reply) = pending_pushes.swap_remove(index);
                            let result = if ack.error.is_empty() { Ok(()) } else { Err(AgentError::PushRefused(ack.error)) };
                            let _ = reply.send(result);
                        }
                    }
                    Some(ServerKind::Ping(ping)) => {
                        if let Err(error) = conn.send(&ClientMessage::from(Pong { nonce: ping.nonce })).await {
                            return connected_lost(error);
                        }
                    }
                    Some(ServerKind::Reject(reject)) => {
                        let reason = format!("the gateway closed the connection: {}", reject.message);
                        if reject.reason() == RejectReason::IdentityInUse {
                            // Displaced by a newer agent with this identity:
                            // back off as after a failed connect, or the two
                            // would take turns for ever.
                            tracing::warn!(gateway = %builder.gateway, message = %reject.message, "another agent took this identity");
                            return lost(reason);
                        }
                        return connected_lost(reason);
                    }
                    Some(ServerKind::Pong(_) | ServerKind::Welcome(_)) | None => {}
                }
            }
            command = commands.recv() => {
                let Some(Control::Push { is_final, reply }) = command else {
                    // Every `Agent` is gone.
                    let _ = conn.send(&ClientMessage::from(Goodbye { reason: "agent dropped".to_owned() })).await;
                    return Outcome::Stop(None);
                };
                let id = next_push_id;
                next_push_id += 1;
                let push = ClientMessage::from(Push { id, families: source().iter().map(to_proto).collect(), r#final: is_final });
                if conn.frames.feed_limited(&push, max_frame_bytes).is_err() {
                    let _ = reply.send(Err(AgentError::PushRefused(format!(
                        "the metrics exceed the gateway's frame limit of {max_frame_bytes} bytes"
                    ))));
                    continue;
                }
                if let Err(error) = conn.flush().await {
                    let _ = reply.send(Err(AgentError::Stopped));
                    return connected_lost(error);
                }
                pending_pushes.push((id, reply));
            }
            _ = ticks.tick() => {
                if last_heard.elapsed() >= dead_after {
                    return connected_lost(format!("the gateway was silent for {:?}", last_heard.elapsed()));
                }
                if let Err(error) = conn.send(&ClientMessage::from(Ping { nonce: next_nonce })).await {
                    return connected_lost(error);
                }
                next_nonce += 1;
            }
            () = shutdown.cancelled() => {
                // Let acknowledgements of pushes in flight arrive first.
                let drain = async {
                    while !pending_pushes.is_empty() {
                        match conn.read().await {
                            Ok(Some(message)) => {
                                if let Some(ServerKind::PushAck(ack)) = message.kind
                                    && let Some(index) = pending_pushes.iter().position(|(id, _)| *id == ack.id)
                                {
                                    let (_, reply) = pending_pushes.swap_remove(index);
                                    let _ = reply.send(Ok(()));
                                }
                            }
                            _ => return,
                        }
                    }
                };
                let _ = tokio::time::timeout(STOP_ACKS_TIMEOUT, drain).await;
                let goodbye = async {
                    let _ = conn.send(&ClientMessage::from(Goodbye { reason: "closing".to_owned() })).await;
                    let _ = conn.frames.get_mut().shutdown().await;
                };
                let _ = tokio::time::timeout(STOP_GOODBYE_TIMEOUT, goodbye).await;
                return Outcome::Stop(None);
            }
        }
    }
}

/// The connection to the gateway as messages: frames through
/// [`FramedConn`], decoded, with errors as the reasons a session ends.
struct Framed {
    frames: FramedConn<Box<dyn Io>>,
}

impl Framed {
    /// The next message, `None` at a clean end between frames. Cancel safe,
    /// as [`FramedConn::read_frame`] is: a partial frame stays buffered.
    async fn read(&mut self) -> Result<Option<ServerMessage>, String> {
        let Some(body) = self
            .frames
            .read_frame(MAX_INBOUND_FRAME_BYTES)
            .await
            .map_err(|e| format!("read: {e}"))?
        else {
            return Ok(None);
        };
        decode_server_message(body)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Writes `message` as one frame and flushes it.
    async fn send(&mut self, message: &ClientMessage) -> Result<(), String> {
        self.frames
            .send(message)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Writes the frames fed to the connection.
    async fn flush(&mut self) -> Result<(), String> {
        self.frames.flush().await.map_err(|e| format!("write: {e}"))
    }
}

/// Random jitter for backoff delays, so that agents of a restarted gateway
/// do not all reconnect in the same instant. A xorshift generator seeded
/// from the clock and the agent's address: statistical spread is all that
/// is needed, not unpredictability.
struct Jitter(u64);

impl Jitter {
    fn new(seed_text: &str) -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut seed = (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32);
        for byte in seed_text.bytes() {
            seed = seed.wrapping_mul(0x0100_0000_01b3) ^ u64::from(byte);
        }
        Jitter(seed | 1)
    }

    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        #[allow(
            clippy::cast_precision_loss,
            reason = "53 random bits are plenty for jitter"
        )]
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }

    /// The delay before attempt `attempt` (from 1): exponential up to `max`,
    /// then between half and all of it.
    fn backoff(&mut self, first: Duration, max: Duration, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let full = first.saturating_mul(1 << exponent).min(max);
        full.mul_f64(0.5 + 0.5 * self.next_unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_in_the_upper_half() {
        let mut jitter = Jitter::new("127.0.0.1:7001");
        let first = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1600),
            (6, 2000),
            (40, 2000),
        ] {
            for _ in 0..50 {
                let delay = jitter.backoff(first, max, attempt);
                let full = Duration::from_millis(full);
                assert!(
                    delay >= full / 2 && delay <= full,
                    "attempt {attempt}: {delay:?} outside {:?}..={full:?}",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn builder_rejects_settings_that_cannot_work() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        assert!(matches!(
            AgentBuilder::new("127.0.0.1:1", "j", "i").spawn(),
            Err(AgentError::Config(_))
        ));
        let with_source = AgentBuilder::new("127.0.0.1:1", "j", "i").source(Vec::new);
        assert!(matches!(
            with_source
                .clone()
                .backoff(Duration::ZERO, Duration::from_secs(1))
                .spawn(),
            Err(AgentError::Config(_))
        ));
        assert!(matches!(
            AgentBuilder::new("127.0.0.1:1", "", "i")
                .source(Vec::new)
                .spawn(),
            Err(AgentError::Config(_))
        ));
    }
}
