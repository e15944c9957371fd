//! The crate's one error type: what is wrong with a frame, its header or its body.

use std::io;

/// What is wrong with a frame read from a peer.
///
/// [`check`](crate::check) and [`FrameDecoder`](crate::FrameDecoder) report
/// the header errors ([`InvalidHeader`](Self::InvalidHeader),
/// [`TooLarge`](Self::TooLarge)) and [`Truncated`](Self::Truncated); the
/// message decoders report [`Decode`](Self::Decode) and
/// [`UnknownKind`](Self::UnknownKind). A stream cannot be resynchronised after
/// any of them: the reader closes the connection. On the agent protocol the
/// gateway first sends the `Reject` that
/// [`FrameError::reject_reason`](crate::FrameError::reject_reason) names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame header is not a protobuf varint of at most 10 bytes holding
    /// a 64-bit value: ten bytes without an end, or a tenth byte above 1.
    #[error(
        "frame header is not a varint of at most 10 bytes: the peer does not send varint length-delimited frames"
    )]
    InvalidHeader,
    /// The header declares a body longer than the reader's limit. Decided as
    /// soon as the header is complete, before any of the body is buffered.
    #[error(
        "frame body of {len} bytes is over the limit of {max_frame_bytes} bytes: send smaller frames or raise the limit"
    )]
    TooLarge {
        /// The body length the header declares.
        len: u64,
        /// The limit it exceeds.
        max_frame_bytes: usize,
    },
    /// The stream ended inside a frame.
    #[error(
        "stream ended {buffered} bytes into a frame: the peer closed the connection in the middle of a frame"
    )]
    Truncated {
        /// How many bytes of the unfinished frame, header included, had arrived.
        buffered: usize,
    },
    /// A complete frame body is not a valid protobuf encoding of the message
    /// the stream carries.
    #[error("invalid {message} frame: {reason}: the peer does not speak this protocol")]
    Decode {
        /// The message the body should hold, such as `ClientMessage`.
        message: &'static str,
        /// What prost found wrong.
        reason: prost::DecodeError,
    },
    /// A frame body is not well-formed protobuf, found by a scan before any
    /// decoding ([`scan_client_message`](crate::scan_client_message)).
    #[error("invalid {message} frame: {reason}: the peer does not speak this protocol")]
    Malformed {
        /// The message the body should hold, such as `ClientMessage`.
        message: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A frame body decodes but sets none of the message kinds this protocol
    /// version defines: the peer sent an empty message, or one from a version
    /// that was not negotiated.
    #[error(
        "no message kind of the negotiated protocol version in a {message} frame: the peer is broken or speaks another version"
    )]
    UnknownKind {
        /// The message whose `oneof` is unset, such as `ClientMessage`.
        message: &'static str,
    },
}

/// Lets a `tokio_util::codec::Decoder` use `std::io::Error` as its error:
/// [`FrameError::Truncated`] becomes `UnexpectedEof`, every other error
/// `InvalidData`, with the [`FrameError`] inside.
impl From<FrameError> for io::Error {
    fn from(error: FrameError) -> Self {
        let kind = match error {
            FrameError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_io_errors_of_the_right_kind() {
        let truncated = io::Error::from(FrameError::Truncated { buffered: 3 });
        assert_eq!(truncated.kind(), io::ErrorKind::UnexpectedEof);
        let invalid = io::Error::from(FrameError::InvalidHeader);
        assert_eq!(invalid.kind(), io::ErrorKind::InvalidData);
        // The frame error stays inside, for callers that downcast.
        let inner = invalid
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<FrameError>());
        assert_eq!(inner, Some(&FrameError::InvalidHeader));
    }

    /// A real prost error: field 1 with wire type 7, which does not exist.
    fn decode_error() -> prost::DecodeError {
        match <tether_model::pb::LabelPair as prost::Message>::decode(&[0x0f][..]) {
            Err(error) => error,
            Ok(label) => panic!("0x0f decoded as {label:?}"),
        }
    }

    #[test]
    fn messages_are_lowercase_without_a_final_period() {
        let errors = [
            FrameError::InvalidHeader,
            FrameError::TooLarge {
                len: 20,
                max_frame_bytes: 10,
            },
            FrameError::Truncated { buffered: 3 },
            FrameError::Decode {
                message: "Event",
                reason: decode_error(),
            },
            FrameError::UnknownKind {
                message: "ClientMessage",
            },
        ];
        for error in errors {
            let text = error.to_string();
            assert!(!text.ends_with('.'), "{text}");
            assert!(text.starts_with(char::is_lowercase), "{text}");
        }
    }
}
