//! The error types of tether-tcp: setting a server up (`Error`) and reading
//! or writing a framed connection (`FramedError`).

use std::io;

use tether_proto::FrameError;

/// What can go wrong when setting up a server or an echo handler.
///
/// Serving itself does not fail: accept errors are counted and backed off,
/// and a connection's error ends that connection only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of its range.
    #[error("invalid {name}: {value}; {expected}")]
    InvalidConfig {
        /// The setting, as named in its config struct.
        name: &'static str,
        /// The value given.
        value: String,
        /// The accepted range, phrased as advice.
        expected: &'static str,
    },
}

/// Why a [`FramedConn`](crate::FramedConn) could not read or write a frame.
///
/// Either way the connection is no longer at a frame boundary: close it.
/// A server that speaks the agent protocol first sends the `Reject` that
/// [`FrameError::reject_reason`] names for a [`Frame`](Self::Frame) error.
#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    /// Reading from or writing to the stream failed, or the stream stopped
    /// taking bytes (`WriteZero`).
    #[error("connection i/o failed: {0}: close the connection")]
    Io(#[from] io::Error),
    /// The bytes read are not a frame the limit allows: an invalid header, a
    /// body over the limit (refused from the header alone), or the end of the
    /// stream inside a frame ([`FrameError::Truncated`]).
    #[error(transparent)]
    Frame(#[from] FrameError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_errors_keep_the_frame_error_and_read_lowercase() {
        let cases = [
            FramedError::from(io::Error::from(io::ErrorKind::UnexpectedEof)),
            FramedError::from(FrameError::InvalidHeader),
            FramedError::from(FrameError::Truncated { buffered: 3 }),
        ];
        for error in &cases {
            let text = error.to_string();
            assert!(text.starts_with(char::is_lowercase), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
        assert!(matches!(
            &cases[1],
            FramedError::Frame(frame) if frame.reject_reason() == tether_proto::RejectReason::MalformedFrame
        ));
    }
}
