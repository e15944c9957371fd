//! The agent protocol: the messages an agent and the gateway exchange on one
//! connection, version negotiation, and a decoder for each direction.
//!
//! Each frame body is one [`ClientMessage`] (agent to gateway) or one
//! [`ServerMessage`] (gateway to agent), proto3, package `tether.agent.v1`.
//! `PROTOCOL.md` at the root of the workspace is the specification; the tests
//! hold it and this file to the same bytes.
//!
//! Field numbers of the two `oneof`s are grouped with room to grow, all
//! below 16 so that every key takes one byte: 1 to 3 for the handshake,
//! 4 to 7 for metrics, 8 to 11 for liveness, 12 to 15 for the last word.

use std::fmt;

use bytes::Bytes;
use prost::Message;
use tether_model::pb::{LabelPair, MetricFamily};

use crate::FrameError;

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest protocol version this crate speaks.
pub const MIN_SUPPORTED_VERSION: u32 = 1;

/// The longest `Hello` frame body, 64 KiB.
///
/// A gateway reads the first frame of a connection with this limit rather
/// than its `max_frame_bytes`, so a peer that has not authenticated cannot
/// make it buffer more; a longer `Hello` gets `Reject` with
/// `FRAME_TOO_LARGE` and a close. A token and a few identity labels take a
/// few hundred bytes.
pub const MAX_HELLO_FRAME_BYTES: usize = 64 << 10;

/// How many heartbeat intervals a peer may stay silent, 3: after that long
/// with no frame from it, the other side considers it dead and closes.
pub const SILENT_INTERVALS_BEFORE_DEAD: u32 = 3;

/// The identity labels every `Hello` carries, non-empty; a `Hello` without
/// one gets `Reject` with `MISSING_IDENTITY`.
pub const REQUIRED_IDENTITY_LABELS: [&str; 2] = ["job", "instance"];

/// The version two peers speak: the highest one in both `min..=max` (what
/// the agent's `Hello` offers) and what this crate supports, or `None` when
/// the ranges do not meet.
pub fn negotiate(min: u32, max: u32) -> Option<u32> {
    let highest = max.min(PROTOCOL_VERSION);
    (highest >= min.max(MIN_SUPPORTED_VERSION)).then_some(highest)
}

/// A message from an agent to the gateway: the body of every frame the
/// agent sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientMessage {
    /// The `oneof kind`. Always `Some` from [`decode_client_message`].
    #[prost(oneof = "ClientKind", tags = "1, 4, 5, 8, 9, 12")]
    pub kind: Option<ClientKind>,
}

/// What a [`ClientMessage`] carries: its `oneof kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ClientKind {
    /// `Hello hello = 1`: the first frame of every connection.
    #[prost(message, tag = "1")]
    Hello(Hello),
    /// `ScrapeResponse scrape_response = 4`: the answer to a scrape.
    #[prost(message, tag = "4")]
    ScrapeResponse(ScrapeResponse),
    /// `Push push = 5`: families the agent sends unasked.
    #[prost(message, tag = "5")]
    Push(Push),
    /// `Ping ping = 8`: a heartbeat the gateway answers with `Pong`.
    #[prost(message, tag = "8")]
    Ping(Ping),
    /// `Pong pong = 9`: the answer to the gateway's `Ping`.
    #[prost(message, tag = "9")]
    Pong(Pong),
    /// `Goodbye goodbye = 12`: the agent is leaving on purpose.
    #[prost(message, tag = "12")]
    Goodbye(Goodbye),
}

impl ClientKind {
    /// The field name of this kind, such as `scrape_response`, for logs and
    /// metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            ClientKind::Hello(_) => "hello",
            ClientKind::ScrapeResponse(_) => "scrape_response",
            ClientKind::Push(_) => "push",
            ClientKind::Ping(_) => "ping",
            ClientKind::Pong(_) => "pong",
            ClientKind::Goodbye(_) => "goodbye",
        }
    }
}

impl ClientMessage {
    /// The field name of the kind this message carries, or `none`.
    pub fn kind_name(&self) -> &'static str {
        self.kind.as_ref().map_or("none", ClientKind::name)
    }
}

/// A message from the gateway to an agent: the body of every frame the
/// gateway sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMessage {
    /// The `oneof kind`. Always `Some` from [`decode_server_message`].
    #[prost(oneof = "ServerKind", tags = "1, 4, 5, 8, 9, 12")]
    pub kind: Option<ServerKind>,
}

/// What a [`ServerMessage`] carries: its `oneof kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ServerKind {
    /// `Welcome welcome = 1`: the handshake succeeded.
    #[prost(message, tag = "1")]
    Welcome(Welcome),
    /// `ScrapeRequest scrape_request = 4`: asks for the agent's metrics now.
    #[prost(message, tag = "4")]
    ScrapeRequest(ScrapeRequest),
    /// `PushAck push_ack = 5`: the gateway holds a pushed snapshot, or refused it.
    #[prost(message, tag = "5")]
    PushAck(PushAck),
    /// `Ping ping = 8`: a heartbeat the agent answers with `Pong`.
    #[prost(message, tag = "8")]
    Ping(Ping),
    /// `Pong pong = 9`: the answer to the agent's `Ping`.
    #[prost(message, tag = "9")]
    Pong(Pong),
    /// `Reject reject = 12`: the gateway's last frame before it closes.
    #[prost(message, tag = "12")]
    Reject(Reject),
}

impl ServerKind {
    /// The field name of this kind, such as `scrape_request`, for logs and
    /// metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            ServerKind::Welcome(_) => "welcome",
            ServerKind::ScrapeRequest(_) => "scrape_request",
            ServerKind::PushAck(_) => "push_ack",
            ServerKind::Ping(_) => "ping",
            ServerKind::Pong(_) => "pong",
            ServerKind::Reject(_) => "reject",
        }
    }
}

impl ServerMessage {
    /// The field name of the kind this message carries, or `none`.
    pub fn kind_name(&self) -> &'static str {
        self.kind.as_ref().map_or("none", ServerKind::name)
    }
}

/// Implements `From` each variant's message, and from the `oneof` itself,
/// for the message that wraps them.
macro_rules! from_kinds {
    ($message:ident, $kind:ident: $($variant:ident),+) => {
        $(
            impl From<$variant> for $message {
                fn from(inner: $variant) -> Self {
                    $message {
                        kind: Some($kind::$variant(inner)),
                    }
                }
            }
        )+

        impl From<$kind> for $message {
            fn from(kind: $kind) -> Self {
                $message { kind: Some(kind) }
            }
        }
    };
}

from_kinds!(ClientMessage, ClientKind: Hello, ScrapeResponse, Push, Ping, Pong, Goodbye);
from_kinds!(ServerMessage, ServerKind: Welcome, ScrapeRequest, PushAck, Ping, Pong, Reject);

/// `Hello`: the agent's first frame, which offers versions, authenticates
/// and says who the agent is.
///
/// Its `Debug` output hides the token, so that logging a message never
/// leaks a credential.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct Hello {
    /// `uint32 min_version = 1`: the oldest protocol version the agent speaks.
    #[prost(uint32, tag = "1")]
    pub min_version: u32,
    /// `uint32 max_version = 2`: the newest protocol version the agent speaks.
    #[prost(uint32, tag = "2")]
    pub max_version: u32,
    /// `string token = 3`: the shared secret the gateway expects; empty
    /// when it expects none.
    #[prost(string, tag = "3")]
    pub token: String,
    /// `repeated io.prometheus.client.LabelPair identity = 4`: labels that
    /// tell this agent apart, `job` and `instance` among them. The gateway
    /// adds them to every series the agent sends.
    #[prost(message, repeated, tag = "4")]
    pub identity: Vec<LabelPair>,
    /// `string client_name = 5`: the agent's software, such as `tether-exporter`.
    #[prost(string, tag = "5")]
    pub client_name: String,
    /// `string client_version = 6`: the version of that software.
    #[prost(string, tag = "6")]
    pub client_version: String,
}

impl Hello {
    /// A `Hello` that offers every version this crate speaks, with `token`
    /// and the identity labels `identity`; the client name and version are
    /// left empty for the caller to fill in.
    pub fn new<N, V>(token: impl Into<String>, identity: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<String>,
        V: Into<String>,
    {
        Hello {
            min_version: MIN_SUPPORTED_VERSION,
            max_version: PROTOCOL_VERSION,
            token: token.into(),
            identity: identity
                .into_iter()
                .map(|(name, value)| LabelPair {
                    name: Some(name.into()),
                    value: Some(value.into()),
                })
                .collect(),
            client_name: String::new(),
            client_version: String::new(),
        }
    }

    /// The value of the identity label `name`, the first if it is given twice.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.identity
            .iter()
            .find(|label| label.name.as_deref() == Some(name))
            .map(|label| label.value.as_deref().unwrap_or_default())
    }

    /// The first of [`REQUIRED_IDENTITY_LABELS`] that is absent or empty.
    pub fn missing_identity(&self) -> Option<&'static str> {
        REQUIRED_IDENTITY_LABELS
            .into_iter()
            .find(|name| self.label(name).is_none_or(str::is_empty))
    }
}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.token.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("Hello")
            .field("min_version", &self.min_version)
            .field("max_version", &self.max_version)
            .field("token", &token)
            .field("identity", &self.identity)
            .field("client_name", &self.client_name)
            .field("client_version", &self.client_version)
            .finish()
    }
}

/// `Welcome`: the gateway accepts the agent and fixes the terms of the
/// connection.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Welcome {
    /// `uint32 version = 1`: the protocol version both now speak, the result
    /// of [`negotiate`] on the `Hello`'s range.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// `uint32 heartbeat_interval_ms = 2`: each peer sends a `Ping` after
    /// this long without sending anything, and considers the other dead
    /// after [`SILENT_INTERVALS_BEFORE_DEAD`] intervals without hearing from
    /// it. 0 turns heartbeats off.
    #[prost(uint32, tag = "2")]
    pub heartbeat_interval_ms: u32,
    /// `uint32 max_frame_bytes = 3`: the longest frame body the gateway
    /// accepts from the agent; a longer one gets `Reject` with
    /// `FRAME_TOO_LARGE` and a close.
    #[prost(uint32, tag = "3")]
    pub max_frame_bytes: u32,
    /// `string gateway_version = 4`: the gateway's software version.
    #[prost(string, tag = "4")]
    pub gateway_version: String,
}

/// `Reject`: why the gateway closes the connection; the last frame it sends.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Reject {
    /// `RejectReason reason = 1`, a [`RejectReason`] number; read it with
    /// [`reason()`](Self::reason), which maps unknown numbers to `UNSPECIFIED`.
    #[prost(enumeration = "RejectReason", tag = "1")]
    pub reason: i32,
    /// `string message = 2`: for a person, what went wrong and what to do.
    #[prost(string, tag = "2")]
    pub message: String,
}

impl Reject {
    /// A `Reject` for `reason` that tells a person `message`.
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Reject {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// `RejectReason`: why the gateway rejects or drops a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RejectReason {
    /// `REJECT_REASON_UNSPECIFIED = 0`: no reason given, or a number this
    /// version does not know.
    Unspecified = 0,
    /// `REJECT_REASON_BAD_TOKEN = 1`: the token is missing or wrong.
    BadToken = 1,
    /// `REJECT_REASON_UNSUPPORTED_VERSION = 2`: the `Hello`'s version range
    /// and the gateway's do not meet.
    UnsupportedVersion = 2,
    /// `REJECT_REASON_FRAME_TOO_LARGE = 3`: a frame declared a body over
    /// the gateway's limit.
    FrameTooLarge = 3,
    /// `REJECT_REASON_MALFORMED_FRAME = 4`: a frame header or body could not
    /// be decoded.
    MalformedFrame = 4,
    /// `REJECT_REASON_HANDSHAKE_TIMEOUT = 5`: no complete `Hello` before the
    /// handshake deadline.
    HandshakeTimeout = 5,
    /// `REJECT_REASON_TOO_MANY_CONNECTIONS = 6`: the gateway is at its
    /// connection limit.
    TooManyConnections = 6,
    /// `REJECT_REASON_MISSING_IDENTITY = 7`: a required identity label is
    /// absent or empty.
    MissingIdentity = 7,
    /// `REJECT_REASON_SHUTTING_DOWN = 8`: the gateway is stopping.
    ShuttingDown = 8,
    /// `REJECT_REASON_PROTOCOL_VIOLATION = 9`: a message out of place, such
    /// as anything but `Hello` first, or a kind the version lacks.
    ProtocolViolation = 9,
    /// `REJECT_REASON_IDENTITY_IN_USE = 10`: another connection holds the
    /// agent's identity (its `job`, `instance` and other identity labels).
    /// By default the gateway keeps the agent already connected and turns
    /// the newcomer away; configured to let the newest win, it closes the
    /// older connection with this reason instead.
    IdentityInUse = 10,
}

impl RejectReason {
    /// The name of the value in the `.proto` file, such as `REJECT_REASON_BAD_TOKEN`.
    pub fn as_str_name(self) -> &'static str {
        match self {
            RejectReason::Unspecified => "REJECT_REASON_UNSPECIFIED",
            RejectReason::BadToken => "REJECT_REASON_BAD_TOKEN",
            RejectReason::UnsupportedVersion => "REJECT_REASON_UNSUPPORTED_VERSION",
            RejectReason::FrameTooLarge => "REJECT_REASON_FRAME_TOO_LARGE",
            RejectReason::MalformedFrame => "REJECT_REASON_MALFORMED_FRAME",
            RejectReason::HandshakeTimeout => "REJECT_REASON_HANDSHAKE_TIMEOUT",
            RejectReason::TooManyConnections => "REJECT_REASON_TOO_MANY_CONNECTIONS",
            RejectReason::MissingIdentity => "REJECT_REASON_MISSING_IDENTITY",
            RejectReason::ShuttingDown => "REJECT_REASON_SHUTTING_DOWN",
            RejectReason::ProtocolViolation => "REJECT_REASON_PROTOCOL_VIOLATION",
            RejectReason::IdentityInUse => "REJECT_REASON_IDENTITY_IN_USE",
        }
    }

    /// Whether reconnecting with the same `Hello` will be rejected again
    /// (bad token, unsupported version, missing identity): an agent keeps
    /// retrying with back-off, since an operator may fix the gateway, but
    /// reports these as configuration errors rather than outages.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            RejectReason::BadToken
                | RejectReason::UnsupportedVersion
                | RejectReason::MissingIdentity
        )
    }
}

impl FrameError {
    /// The reason the gateway gives in its `Reject` when it closes a
    /// connection over this error: `FRAME_TOO_LARGE` for
    /// [`TooLarge`](Self::TooLarge), `PROTOCOL_VIOLATION` for
    /// [`UnknownKind`](Self::UnknownKind), `MALFORMED_FRAME` otherwise.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            FrameError::TooLarge { .. } => RejectReason::FrameTooLarge,
            FrameError::UnknownKind { .. } => RejectReason::ProtocolViolation,
            FrameError::InvalidHeader
            | FrameError::Truncated { .. }
            | FrameError::Decode { .. }
            | FrameError::Malformed { .. } => RejectReason::MalformedFrame,
        }
    }
}

/// `ScrapeRequest`: the gateway asks for the agent's metrics now.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct ScrapeRequest {
    /// `uint64 id = 1`: chosen by the gateway, unique on the connection; the
    /// answer carries it back.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// `uint32 timeout_ms = 2`: how long the gateway waits for the answer,
    /// counted from when it sent the request; a later answer is discarded.
    #[prost(uint32, tag = "2")]
    pub timeout_ms: u32,
}

/// `ScrapeResponse`: the agent's answer to a [`ScrapeRequest`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScrapeResponse {
    /// `uint64 id = 1`: the `id` of the request this answers.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// `repeated io.prometheus.client.MetricFamily families = 2`: the
    /// agent's metrics, without its identity labels (the gateway adds them).
    #[prost(message, repeated, tag = "2")]
    pub families: Vec<MetricFamily>,
    /// `string error = 3`: empty on success; otherwise why the agent could
    /// not collect its metrics, and the scrape counts as failed.
    #[prost(string, tag = "3")]
    pub error: String,
}

/// `Push`: families the agent sends without being asked.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Push {
    /// `uint64 id = 1`: chosen by the agent, unique on the connection; the
    /// `PushAck` carries it back.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// `repeated io.prometheus.client.MetricFamily families = 2`: a whole
    /// snapshot, which replaces the agent's previous push. The gateway
    /// serves the latest snapshot of an identity, for a time to live, while
    /// no agent with that identity is connected.
    #[prost(message, repeated, tag = "2")]
    pub families: Vec<MetricFamily>,
    /// `bool final = 3`: push and close, the agent's last push before its
    /// process exits. The agent sends nothing after it but `Goodbye`, and
    /// closes once acknowledged.
    #[prost(bool, tag = "3")]
    pub r#final: bool,
}

/// `PushAck`: the gateway's answer to a [`Push`].
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct PushAck {
    /// `uint64 id = 1`: the `id` of the push this answers.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// `string error = 2`: empty when the gateway holds the snapshot;
    /// otherwise why it refused it, and it holds nothing of it.
    #[prost(string, tag = "2")]
    pub error: String,
}

/// `Ping`: a heartbeat, sent by either peer, that the other answers with a
/// [`Pong`] of the same nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Ping {
    /// `uint64 nonce = 1`: any value, echoed by the `Pong`.
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
}

/// `Pong`: the answer to a [`Ping`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Pong {
    /// `uint64 nonce = 1`: the nonce of the `Ping` this answers.
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
}

/// `Goodbye`: the agent closes the connection on purpose, such as when its
/// process exits; the gateway treats the close as orderly, not as a failure.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Goodbye {
    /// `string reason = 1`: for a person, why the agent leaves.
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// The [`ClientMessage`] in one frame body, as the gateway's
/// [`FrameDecoder`](crate::FrameDecoder) returns it.
///
/// # Errors
///
/// [`FrameError::Decode`] when the body is not a `ClientMessage`;
/// [`FrameError::UnknownKind`] when it sets none of the kinds of this
/// version (an empty body, or a kind a newer version added).
pub fn decode_client_message(body: Bytes) -> Result<ClientMessage, FrameError> {
    let message = ClientMessage::decode(body).map_err(|reason| FrameError::Decode {
        message: "ClientMessage",
        reason,
    })?;
    if message.kind.is_none() {
        return Err(FrameError::UnknownKind {
            message: "ClientMessage",
        });
    }
    Ok(message)
}

/// The [`ServerMessage`] in one frame body, as the agent's
/// [`FrameDecoder`](crate::FrameDecoder) returns it.
///
/// # Errors
///
/// [`FrameError::Decode`] when the body is not a `ServerMessage`;
/// [`FrameError::UnknownKind`] when it sets none of the kinds of this version.
pub fn decode_server_message(body: Bytes) -> Result<ServerMessage, FrameError> {
    let message = ServerMessage::decode(body).map_err(|reason| FrameError::Decode {
        message: "ServerMessage",
        reason,
    })?;
    if message.kind.is_none() {
        return Err(FrameError::UnknownKind {
            message: "ServerMessage",
        });
    }
    Ok(message)
}

#[cfg(test)]
mod tests;
