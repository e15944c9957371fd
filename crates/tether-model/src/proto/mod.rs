//! The protobuf exposition format: the `io.prometheus.client` messages, their
//! conversions to and from the model, and the varint-delimited stream codec.

mod convert;
mod delimited;
pub mod pb;

pub use convert::{from_proto, to_proto};
pub use delimited::{
    DEFAULT_MAX_MESSAGE_BYTES, decode_delimited, decode_delimited_frame, encode_delimited,
    encode_delimited_frame,
};
