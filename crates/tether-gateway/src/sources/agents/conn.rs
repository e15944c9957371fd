//! One agent connection: the handshake, then scrapes, pushes and
//! heartbeats until either side closes.
//!
//! One task owns the socket. It selects between the next frame from the
//! agent, the next command from a scrape, the heartbeat tick and the close
//! signal, so no lock is held across IO and a slow agent only slows itself.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tether_model::{Label, MetricFamily, from_proto, pb};
use tether_proto::{
    ClientKind, ClientMessage, FrameError, Hello, MAX_HELLO_FRAME_BYTES, PROTOCOL_VERSION,
    PUSH_FIELD, Ping, Pong, PushAck, Reject, RejectReason, SCRAPE_RESPONSE_FIELD,
    SILENT_INTERVALS_BEFORE_DEAD, ScrapeRequest, ServerMessage, Welcome, decode_client_message,
    negotiate, scan_client_message,
};
use tether_tcp::{FramedConn, FramedError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::AgentsSource;
use super::admission::HandshakeGuard;
use super::registry::{Answer, Command, Identity, RegisterError, Registered};
use crate::telemetry::{Collision, FrameRefusal, PushDrop, RejectKind};
use crate::view::{Drops, Families, Origin};

/// Most identity labels an agent may declare.
pub(crate) const MAX_IDENTITY_LABELS: usize = 16;
/// Longest identity label value, in bytes.
pub(crate) const MAX_IDENTITY_VALUE_BYTES: usize = 256;
/// Most scrapes waiting for one agent's answer; older ones beyond it are
/// abandoned (their scrapes have timed out long since).
const MAX_PENDING_SCRAPES: usize = 64;

/// Where a scrape's answer goes.
type ScrapeReply = oneshot::Sender<Result<Answer, String>>;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("agent silent for {0:?}: closed as dead")]
    Dead(Duration),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
}

impl From<FramedError> for ConnectionError {
    fn from(error: FramedError) -> ConnectionError {
        match error {
            FramedError::Io(error) => ConnectionError::Io(error),
            FramedError::Frame(error) => ConnectionError::Frame(error),
        }
    }
}

/// Reads the next frame, errors as the connection's.
async fn read_frame<S: AsyncRead + Unpin>(
    conn: &mut FramedConn<S>,
    max_frame_bytes: usize,
) -> Result<Option<bytes::Bytes>, ConnectionError> {
    Ok(conn.read_frame(max_frame_bytes).await?)
}

/// Writes one message as a frame and flushes it. An agent that does not
/// read for as long as it may stay silent is dead: the write gives up then,
/// so a peer that stops reading cannot hold the connection task in a write
/// where no heartbeat can notice it.
async fn send<S: AsyncWrite + Unpin>(
    conn: &mut FramedConn<S>,
    message: &ServerMessage,
    write_timeout: Duration,
) -> Result<(), ConnectionError> {
    match tokio::time::timeout(write_timeout, conn.send(message)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ConnectionError::Dead(write_timeout)),
    }
}

/// Serves one agent connection on `stream` until it ends. `handshake` is
/// its place among the connections still in their handshake, given up
/// once the agent is registered.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    shared: Arc<AgentsSource>,
    shutdown: CancellationToken,
    handshake: HandshakeGuard,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // The Hello (at most 64 KiB) is read outside the shared frame budget:
    // connections that have not authenticated must not be able to take it.
    let mut conn = FramedConn::new(stream);
    let config = &shared.settings;
    let first_frame = tokio::select! {
        read = tokio::time::timeout(
            config.handshake_timeout,
            read_frame(&mut conn, MAX_HELLO_FRAME_BYTES),
        ) => read,
        () = handshake.evicted().cancelled() => {
            return reject(
                &mut conn,
                &shared,
                RejectKind::HandshakeEvicted,
                format!(
                    "{} connections were waiting to say Hello and this one had waited longest: send Hello as soon as you connect",
                    config.max_handshakes
                ),
            )
            .await;
        }
    };
    let hello = match first_frame {
        Err(_) => {
            return reject(
                &mut conn,
                &shared,
                RejectKind::HandshakeTimeout,
                format!(
                    "no Hello within {} ms: send Hello as the first frame",
                    config.handshake_timeout.as_millis()
                ),
            )
            .await;
        }
        Ok(Err(ConnectionError::Frame(error))) => {
            let kind = reject_kind(&error);
            return reject(&mut conn, &shared, kind, error.to_string()).await;
        }
        Ok(Err(error)) => return Err(error),
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(body))) => match decode_client_message(body) {
            Ok(message) => match message.kind {
                Some(ClientKind::Hello(hello)) => hello,
                _ => {
                    return reject(
                        &mut conn,
                        &shared,
                        RejectKind::ProtocolViolation,
                        format!(
                            "first frame is {}, not hello: send Hello first",
                            message.kind_name()
                        ),
                    )
                    .await;
                }
            },
            Err(error) => {
                let kind = reject_kind(&error);
                return reject(&mut conn, &shared, kind, error.to_string()).await;
            }
        },
    };
    let Some(version) = negotiate(hello.min_version, hello.max_version) else {
        return reject(&mut conn, &shared, RejectKind::UnsupportedVersion, format!(
            "this gateway speaks protocol versions {}..={}, the agent offered {}..={}: upgrade the older side",
            tether_proto::MIN_SUPPORTED_VERSION,
            PROTOCOL_VERSION,
            hello.min_version,
            hello.max_version
        ))
        .await;
    };
    if !config.tokens.is_empty() {
        let now = Instant::now();
        if !shared.auth.allows(peer.ip(), now) {
            return reject(
                &mut conn,
                &shared,
                RejectKind::Throttled,
                format!(
                    "too many bad tokens from {}: wait a second between attempts",
                    peer.ip()
                ),
            )
            .await;
        }
        if !token_accepted(&config.tokens, &hello.token) {
            shared.auth.failed(peer.ip(), now);
            return reject(
                &mut conn,
                &shared,
                RejectKind::BadToken,
                "the token is not one this gateway accepts".to_owned(),
            )
            .await;
        }
    }
    let identity = match identity_of(&hello) {
        Ok(identity) => identity,
        Err(message) => {
            return reject(&mut conn, &shared, RejectKind::MissingIdentity, message).await;
        }
    };
    if shutdown.is_cancelled() {
        return reject(
            &mut conn,
            &shared,
            RejectKind::ShuttingDown,
            "the gateway is shutting down: reconnect later".to_owned(),
        )
        .await;
    }
    let close = shutdown.child_token();
    let registered = match register(&shared, identity, &close, peer).await {
        Ok(registered) => registered,
        Err((kind, message)) => return reject(&mut conn, &shared, kind, message).await,
    };
    drop(handshake);
    conn.set_budget(shared.budget.clone());
    let Registered {
        guard,
        mut commands,
        ..
    } = registered;
    let identity = Arc::clone(guard.identity());
    let target = Arc::clone(guard.target());
    tracing::info!(%peer, job = identity.get("job").unwrap_or(""), instance = identity.get("instance").unwrap_or(""), client = %hello.client_name, "agent connected");
    let heartbeat = config.heartbeat_interval;
    let dead_after = heartbeat * SILENT_INTERVALS_BEFORE_DEAD;
    send(
        &mut conn,
        &ServerMessage::from(Welcome {
            version,
            heartbeat_interval_ms: u32::try_from(heartbeat.as_millis()).unwrap_or(u32::MAX),
            max_frame_bytes: u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX),
            gateway_version: env!("CARGO_PKG_VERSION").to_owned(),
        }),
        dead_after,
    )
    .await?;

    let mut pending: HashMap<u64, ScrapeReply> = HashMap::new();
    // Connections claiming this agent's identity, waiting to hear it is alive.
    let mut probes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut next_scrape_id: u64 = 1;
    let mut next_nonce: u64 = 1;
    let mut last_heard = Instant::now();
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let result = loop {
        tokio::select! {
            frame = read_frame(&mut conn, config.max_frame_bytes) => {
                let body = match frame {
                    Ok(Some(body)) => body,
                    Ok(None) => break Ok(()),
                    Err(ConnectionError::Frame(error)) => {
                        let kind = reject_kind(&error);
                        break reject(&mut conn, &shared, kind, error.to_string()).await;
                    }
                    Err(error) => break Err(error),
                };
                last_heard = Instant::now();
                for probe in probes.drain(..) {
                    let _ = probe.send(());
                }
                // Look before decoding: what was not asked for, or is over
                // the limit, is never decoded (decoding amplifies).
                let shape = match scan(&body, &shared).await {
                    Ok(shape) => shape,
                    Err(error) => {
                        let kind = reject_kind(&error);
                        break reject(&mut conn, &shared, kind, error.to_string()).await;
                    }
                };
                let max_series = config.max_series_per_answer;
                let over_limit = shape.n_series.saturating_add(shape.n_families) > max_series;
                let refusal = format!(
                    "{} families with {} series: over the limit of {max_series} per answer; send fewer or raise --max-series-per-answer",
                    shape.n_families, shape.n_series
                );
                let mut reply = None;
                match shape.kind {
                    Some(SCRAPE_RESPONSE_FIELD) => {
                        // A late or unsolicited answer finds no waiter.
                        let Some(waiter) = pending.remove(&shape.id) else {
                            shared.telemetry.frame_refused(FrameRefusal::Unsolicited);
                            continue;
                        };
                        if over_limit {
                            shared.telemetry.frame_refused(FrameRefusal::OverLimit);
                            let _ = waiter.send(Err(refusal));
                            continue;
                        }
                        reply = Some(waiter);
                    }
                    Some(PUSH_FIELD) if over_limit => {
                        shared.telemetry.frame_refused(FrameRefusal::OverLimit);
                        send(&mut conn, &ServerMessage::from(PushAck { id: shape.id, error: refusal }), dead_after).await?;
                        continue;
                    }
                    _ => {}
                }
                let message = match decode(body, &target, &shared).await {
                    Ok(message) => message,
                    Err(error) => {
                        let kind = reject_kind(&error);
                        break reject(&mut conn, &shared, kind, error.to_string()).await;
                    }
                };
                match message {
                    Decoded::Answer(outcome) => {
                        if let Some(reply) = reply {
                            let outcome = outcome.map(|families| Answer {
                                families: Arc::new(families),
                                seq: shared.registry.stamp(),
                            });
                            let _ = reply.send(outcome);
                        }
                    }
                    Decoded::Push { id, is_final, families } => {
                        shared.telemetry.push(is_final);
                        // A final push is acknowledged once it is on disk.
                        let kept = if is_final {
                            shared.finals.keep(target.labels(), &families, config.final_push_ttl).await
                        } else {
                            Ok(())
                        };
                        let error = match kept.map(|()| shared.registry.store_push(&identity, &target, families, config.final_push_ttl)) {
                            Err(error) => format!("the final push could not be kept: {error}"),
                            Ok(Ok(evicted)) => {
                                shared.telemetry.pushes_dropped(PushDrop::Evicted, evicted);
                                String::new()
                            }
                            Ok(Err(too_large)) => {
                                shared.telemetry.pushes_dropped(PushDrop::TooLarge, 1);
                                format!(
                                    "the push takes about {} bytes, over the gateway's limit of {} for all pushes: push less or raise --max-push-bytes",
                                    too_large.bytes, too_large.max_bytes
                                )
                            }
                        };
                        send(&mut conn, &ServerMessage::from(PushAck { id, error }), dead_after).await?;
                    }
                    Decoded::Other(message) => match message.kind {
                    Some(ClientKind::Ping(ping)) => {
                        send(&mut conn, &ServerMessage::from(Pong { nonce: ping.nonce }), dead_after).await?;
                    }
                    Some(ClientKind::Pong(_)) => {}
                    Some(ClientKind::Goodbye(goodbye)) => {
                        tracing::info!(reason = %goodbye.reason, "agent said goodbye");
                        break Ok(());
                    }
                    Some(ClientKind::Hello(_) | ClientKind::ScrapeResponse(_) | ClientKind::Push(_)) | None => {
                        break reject(&mut conn, &shared, RejectKind::ProtocolViolation, format!(
                            "unexpected {} after the handshake",
                            message.kind_name()
                        ))
                        .await;
                    }
                    },
                }
            }
            command = commands.recv() => {
                let (timeout, reply) = match command {
                    Some(Command::Scrape { timeout, reply }) => (timeout, reply),
                    Some(Command::Probe { reply }) => {
                        // Alive when a frame is arriving (or waits for the
                        // budget), and while it is too busy to be asked.
                        probes.retain(|probe| !probe.is_closed());
                        if conn.buffered_bytes() > 0 || conn.waiting_for_budget() || probes.len() >= MAX_PENDING_SCRAPES {
                            let _ = reply.send(());
                            continue;
                        }
                        probes.push(reply);
                        send(&mut conn, &ServerMessage::from(Ping { nonce: next_nonce }), dead_after).await?;
                        next_nonce += 1;
                        continue;
                    }
                    // The registry let go of this agent: it was closed
                    // (the close branch may not have been picked yet).
                    None => {
                        if close.is_cancelled() {
                            let _ = send(&mut conn, &ServerMessage::from(closing_reject(&shutdown)), dead_after).await;
                        }
                        break Ok(());
                    }
                };
                let id = next_scrape_id;
                next_scrape_id += 1;
                pending.retain(|_, waiter| !waiter.is_closed());
                if pending.len() >= MAX_PENDING_SCRAPES {
                    let _ = reply.send(Err("too many scrapes waiting for this agent".to_owned()));
                    continue;
                }
                pending.insert(id, reply);
                send(&mut conn, &ServerMessage::from(ScrapeRequest {
                    id,
                    timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                }), dead_after)
                .await?;
            }
            _ = ticks.tick() => {
                if conn.waiting_for_budget() {
                    // The gateway holds the agent back, not the reverse.
                    last_heard = Instant::now();
                }
                let silent = last_heard.elapsed();
                if silent >= dead_after {
                    break Err(ConnectionError::Dead(silent));
                }
                pending.retain(|_, waiter| !waiter.is_closed());
                send(&mut conn, &ServerMessage::from(Ping { nonce: next_nonce }), dead_after).await?;
                next_nonce += 1;
            }
            () = close.cancelled() => {
                let _ = send(&mut conn, &ServerMessage::from(closing_reject(&shutdown)), dead_after).await;
                break Ok(());
            }
        }
    };
    drop(guard);
    tracing::info!(%peer, job = identity.get("job").unwrap_or(""), instance = identity.get("instance").unwrap_or(""), "agent disconnected");
    result
}

/// The last frame of a connection the gateway closes: it is shutting
/// down, or another connection took the agent's identity.
fn closing_reject(shutdown: &CancellationToken) -> Reject {
    if shutdown.is_cancelled() {
        Reject::new(
            RejectReason::ShuttingDown,
            "the gateway is shutting down: reconnect later",
        )
    } else {
        Reject::new(
            RejectReason::IdentityInUse,
            "another connection took this agent's identity: give each agent its own job and instance",
        )
    }
}

/// Registers the agent, settling an identity collision by the configured
/// policy; on failure, the reject to send.
///
/// With [`KeepConnected`](crate::config::IdentityCollision::KeepConnected), the connected agent must
/// show it is alive (answer a ping within half the handshake deadline): a
/// connection left half-open by a network failure would otherwise keep
/// its agent's identity, and keep the agent out, until its heartbeats run
/// out. One that does not answer is closed, and the newcomer takes its
/// place.
async fn register(
    shared: &AgentsSource,
    identity: Identity,
    close: &CancellationToken,
    peer: SocketAddr,
) -> Result<Registered, (RejectKind, String)> {
    let config = &shared.settings;
    let policy = config.identity_collision;
    let mut probed = false;
    loop {
        match shared
            .registry
            .register(identity.clone(), config.max_agents, close.clone(), policy)
        {
            Ok(registered) => {
                if registered.replaced {
                    shared
                        .telemetry
                        .identity_collision(Collision::OlderReplaced);
                    log_collision(
                        shared,
                        &identity,
                        peer,
                        "the newest connection took the identity",
                    );
                }
                return Ok(registered);
            }
            Err(RegisterError::Full) => {
                return Err((
                    RejectKind::TooManyConnections,
                    format!(
                        "the gateway holds its limit of {} agents: retry later or raise --max-agents",
                        config.max_agents
                    ),
                ));
            }
            Err(RegisterError::InUse { holder }) => {
                if !probed {
                    probed = true;
                    if !holder.probe(config.handshake_timeout / 2).await {
                        shared.registry.close(&holder);
                        shared.telemetry.identity_collision(Collision::OlderDead);
                        log_collision(
                            shared,
                            &identity,
                            peer,
                            "the connected agent did not answer a ping and was closed",
                        );
                        continue;
                    }
                }
                shared
                    .telemetry
                    .identity_collision(Collision::NewcomerRejected);
                log_collision(shared, &identity, peer, "the connected agent keeps it");
                return Err((
                    RejectKind::IdentityInUse,
                    format!(
                        "an agent with the identity {} is connected: give each agent its own job and instance (or run the gateway with --identity-collision newest-wins)",
                        render(&identity)
                    ),
                ));
            }
        }
    }
}

/// Logs an identity collision at warn, at most once per identity per
/// interval.
fn log_collision(shared: &AgentsSource, identity: &Identity, peer: SocketAddr, outcome: &str) {
    if shared.collisions.should_log(identity, Instant::now()) {
        tracing::warn!(%peer, identity = %render(identity), policy = shared.settings.identity_collision.as_str(), outcome, "two agents claim one identity");
    }
}

/// `job="app",instance="a:1"`.
fn render(identity: &Identity) -> String {
    super::render_identity(identity.target_labels().labels())
}

/// Sends a Reject, counts it, and ends the connection with its reason.
async fn reject<S>(
    conn: &mut FramedConn<S>,
    shared: &AgentsSource,
    kind: RejectKind,
    message: String,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    shared.telemetry.reject(kind);
    if matches!(
        kind,
        RejectKind::BadToken
            | RejectKind::Throttled
            | RejectKind::HandshakeTimeout
            | RejectKind::HandshakeEvicted
            | RejectKind::TooManyConnections
    ) {
        // A brute force or a flood of sockets must not flood the log: at
        // warn at most once per interval, with the count of those not
        // logged.
        if let Some(suppressed) = shared.auth.should_log(Instant::now()) {
            tracing::warn!(reason = kind.as_str(), %message, suppressed, "agent rejected");
        }
    } else {
        tracing::warn!(reason = kind.as_str(), %message, "agent rejected");
    }
    // The peer may be gone or not reading; the Reject is best effort and
    // must not hold the task.
    let reject = ServerMessage::from(Reject::new(reason_of(kind), message.clone()));
    let _ = send(conn, &reject, Duration::from_secs(1)).await;
    Err(ConnectionError::Rejected(message))
}

fn reason_of(kind: RejectKind) -> RejectReason {
    match kind {
        RejectKind::BadToken | RejectKind::Throttled => RejectReason::BadToken,
        RejectKind::UnsupportedVersion => RejectReason::UnsupportedVersion,
        RejectKind::FrameTooLarge => RejectReason::FrameTooLarge,
        RejectKind::MalformedFrame => RejectReason::MalformedFrame,
        RejectKind::HandshakeTimeout => RejectReason::HandshakeTimeout,
        RejectKind::TooManyConnections | RejectKind::HandshakeEvicted => {
            RejectReason::TooManyConnections
        }
        RejectKind::IdentityInUse => RejectReason::IdentityInUse,
        RejectKind::MissingIdentity => RejectReason::MissingIdentity,
        RejectKind::ProtocolViolation => RejectReason::ProtocolViolation,
        RejectKind::ShuttingDown => RejectReason::ShuttingDown,
    }
}

fn reject_kind(error: &FrameError) -> RejectKind {
    match error.reject_reason() {
        RejectReason::FrameTooLarge => RejectKind::FrameTooLarge,
        RejectReason::ProtocolViolation => RejectKind::ProtocolViolation,
        _ => RejectKind::MalformedFrame,
    }
}

/// Whether `token` is one of `accepted` (or none is required). Each
/// comparison takes the same time wherever the first difference is.
fn token_accepted(accepted: &[String], token: &str) -> bool {
    if accepted.is_empty() {
        return true;
    }
    accepted.iter().fold(false, |found, candidate| {
        found | bool::from(candidate.as_bytes().ct_eq(token.as_bytes()))
    })
}

/// The identity an agent declared, checked: `job` and `instance` present,
/// label names valid, sizes bounded.
fn identity_of(hello: &Hello) -> Result<Identity, String> {
    if let Some(missing) = hello.missing_identity() {
        return Err(format!(
            "the Hello has no \"{missing}\" identity label: every agent names its job and instance"
        ));
    }
    if hello.identity.len() > MAX_IDENTITY_LABELS {
        return Err(format!(
            "{} identity labels: at most {MAX_IDENTITY_LABELS} are allowed",
            hello.identity.len()
        ));
    }
    let mut labels: Vec<Label> = Vec::with_capacity(hello.identity.len());
    for pair in &hello.identity {
        let name = pair.name.as_deref().unwrap_or("");
        let value = pair.value.as_deref().unwrap_or("");
        if !tether_model::is_valid_label_name(name) || name.starts_with("__") {
            return Err(format!(
                "identity label name {name:?} is not a valid Prometheus label name"
            ));
        }
        if value.len() > MAX_IDENTITY_VALUE_BYTES {
            return Err(format!(
                "identity label {name} is longer than {MAX_IDENTITY_VALUE_BYTES} bytes"
            ));
        }
        if labels.iter().any(|l| l.name == name) {
            return Err(format!("identity label {name} is given twice"));
        }
        labels.push(Label::new(name, value));
    }
    Ok(Identity::new(labels))
}

/// Frames at least this large are decoded and converted on a blocking
/// thread, so that a large answer never holds a runtime worker (health
/// checks and other scrapes keep their latency).
const DECODE_OFF_RUNTIME_BYTES: usize = 64 * 1024;

/// A frame after the handshake, decoded.
enum Decoded {
    /// A scrape's answer, converted and normalized, or the agent's error.
    Answer(Result<Families, String>),
    /// A push, converted and normalized.
    Push {
        id: u64,
        is_final: bool,
        families: Families,
    },
    /// Any other message.
    Other(ClientMessage),
}

/// Frames from which on the scan runs on a blocking thread: it walks every
/// field, at about 4 ns a byte for the worst frame (empty entries, two
/// bytes each), so a 16 MiB frame would hold a runtime worker for 70 ms.
const SCAN_OFF_RUNTIME_BYTES: usize = 256 * 1024;

/// A frame's kind, id and counts (`scan_client_message`); off the runtime
/// when large.
async fn scan(
    body: &bytes::Bytes,
    shared: &AgentsSource,
) -> Result<tether_proto::Shape, FrameError> {
    if body.len() < SCAN_OFF_RUNTIME_BYTES {
        return scan_client_message(body);
    }
    let body = body.clone();
    match shared.off_runtime(move || scan_client_message(&body)).await {
        Ok(shape) => shape,
        // The scan returns errors and does not panic; if it did, the frame
        // is treated as malformed.
        Err(_) => Err(FrameError::Malformed {
            message: "ClientMessage",
            reason: "scanning failed",
        }),
    }
}

/// Decodes a frame and converts its families; off the runtime when large.
async fn decode(
    body: bytes::Bytes,
    target: &Arc<tether_model::TargetLabels>,
    shared: &Arc<AgentsSource>,
) -> Result<Decoded, FrameError> {
    let len = body.len();
    let work = {
        let target = Arc::clone(target);
        let shared = Arc::clone(shared);
        move || -> Result<Decoded, FrameError> {
            let message = decode_client_message(body)?;
            Ok(match message.kind {
                Some(ClientKind::ScrapeResponse(response)) => {
                    if response.error.is_empty() {
                        Decoded::Answer(Ok(convert(response.families, &target, &shared)))
                    } else {
                        Decoded::Answer(Err(response.error))
                    }
                }
                Some(ClientKind::Push(push)) => Decoded::Push {
                    id: push.id,
                    is_final: push.r#final,
                    families: convert(push.families, &target, &shared),
                },
                _ => Decoded::Other(message),
            })
        }
    };
    if len < DECODE_OFF_RUNTIME_BYTES {
        return work();
    }
    match shared.off_runtime(work).await {
        Ok(decoded) => decoded,
        // The closure does not panic (decoding returns errors); if it did,
        // the frame is treated as malformed.
        Err(_) => Err(FrameError::Malformed {
            message: "ClientMessage",
            reason: "decoding failed",
        }),
    }
}

/// Converts an agent's protobuf families into the model and normalizes
/// them for serving under `target`: invalid families, repeated series and
/// everything else [`Families::normalize`] refuses are dropped and counted.
fn convert(
    families: Vec<pb::MetricFamily>,
    target: &tether_model::TargetLabels,
    shared: &AgentsSource,
) -> Families {
    let mut out: Vec<MetricFamily> = Vec::with_capacity(families.len());
    let mut invalid: u64 = 0;
    for family in families {
        match from_proto(family) {
            Ok(family) => out.push(family),
            Err(error) => {
                tracing::debug!(%error, "agent family dropped");
                invalid += 1;
            }
        }
    }
    if invalid > 0 {
        shared.telemetry.invalid_families(invalid);
    }
    let mut drops = Drops::default();
    let families = Families::normalize(out, Some(target), Origin::Peer, &mut drops);
    shared.telemetry.record_drops(&drops);
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_all_checked_and_none_configured_admits_all() {
        let tokens = vec!["alpha".to_owned(), "beta".to_owned()];
        assert!(token_accepted(&tokens, "beta"));
        assert!(!token_accepted(&tokens, "gamma"));
        assert!(!token_accepted(&tokens, ""));
        assert!(!token_accepted(&tokens, "alph"));
        assert!(token_accepted(&[], "anything"));
    }

    #[test]
    fn identities_are_checked() {
        let ok = Hello::new("", [("job", "app"), ("instance", "a:1"), ("zone", "eu")]);
        let identity = identity_of(&ok).expect("valid");
        assert_eq!(identity.get("zone"), Some("eu"));
        let cases = [
            Hello::new("", [("job", "app")]),
            Hello::new("", [("job", "app"), ("instance", "i"), ("__bad", "x")]),
            Hello::new("", [("job", "app"), ("instance", "i"), ("1x", "x")]),
            Hello::new("", [("job", "app"), ("instance", "i"), ("job", "again")]),
        ];
        for hello in cases {
            assert!(identity_of(&hello).is_err(), "{hello:?}");
        }
    }
}
