//! Wire formats of tether: the varint length-delimited frame codec, the
//! agent protocol and the metrics-exporter-tcp event stream.
//!
//! Everything here is a pure codec over bytes: no sockets, no runtime, no
//! knowledge of the gateway. A reader buffers what arrives, asks
//! [`FrameDecoder`] (or the cheaper [`check`]) for the next complete frame
//! body, and hands the body to [`decode_client_message`],
//! [`decode_server_message`] or [`decode_event`]. A writer calls [`encode`]
//! (or [`encode_limited`]) with the message. `PROTOCOL.md` at the root of the
//! workspace describes the agent protocol byte by byte.
//!
//! [`StreamFold`] is the one fold of the event stream into series and
//! Prometheus families, bounded by [`FoldLimits`], for every reader of it.
//!
//! ```
//! use bytes::BytesMut;
//! use tether_proto::{ClientKind, ClientMessage, FrameDecoder, Ping, decode_client_message};
//!
//! let mut wire = BytesMut::new();
//! tether_proto::encode(&ClientMessage::from(Ping { nonce: 7 }), &mut wire);
//!
//! // The reader's side, with the bytes arriving in two pieces.
//! let mut read_buf = BytesMut::from(&wire[..1]);
//! let mut frames = FrameDecoder::default();
//! assert_eq!(frames.decode(&mut read_buf), Ok(None));
//! read_buf.extend_from_slice(&wire[1..]);
//! let body = frames.decode(&mut read_buf)?.expect("a complete frame");
//! let message = decode_client_message(body)?;
//! assert_eq!(message.kind, Some(ClientKind::Ping(Ping { nonce: 7 })));
//! # Ok::<(), tether_proto::FrameError>(())
//! ```

mod agent;
mod error;
mod event;
#[cfg(test)]
mod examples;
mod fold;
mod frame;
mod scan;

pub use agent::{
    ClientKind, ClientMessage, Goodbye, Hello, MAX_HELLO_FRAME_BYTES, MIN_SUPPORTED_VERSION,
    PROTOCOL_VERSION, Ping, Pong, Push, PushAck, REQUIRED_IDENTITY_LABELS, Reject, RejectReason,
    SILENT_INTERVALS_BEFORE_DEAD, ScrapeRequest, ScrapeResponse, ServerKind, ServerMessage,
    Welcome, decode_client_message, decode_server_message, negotiate,
};
pub use error::FrameError;
pub use event::{
    Event, EventKind, EventMetadata, EventMetric, EventMetricType, Operation, decode_event,
    encode_event,
};
pub use fold::{
    Applied, Change, DropReason, Dropped, FoldLimits, FoldedHistogram, FoldedSeries, FoldedValue,
    HISTOGRAM_BUCKETS, Metadata, SeriesKey, SeriesKind, StreamFold,
};
pub use frame::{
    DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameLen, check, encode, encode_limited, encode_to_vec,
};
pub use scan::{PUSH_FIELD, SCRAPE_RESPONSE_FIELD, Shape, scan_client_message};
