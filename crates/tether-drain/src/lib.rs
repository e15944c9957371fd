//! The formats of a Heroku log drain, as pure functions over bytes: the
//! logplex framing of a batch ([`logplex_frames`]) and the syslog header
//! of each message ([`parse_syslog`]); instance-metric lines carrying
//! base64 JSON in Vector's metric model ([`parse_vector_line`]); and
//! Heroku's own `key=value` lines: `sample#` measurements of add-ons and
//! dynos ([`parse_samples`]) and router request lines ([`parse_router`]).
//!
//! Nothing here does IO or knows the gateway; every parser bounds what it
//! reads and reports bad input as a value with a reason, never a panic.
//!
//! ```
//! use tether_drain::{LogplexLimits, logplex_frames, parse_syslog};
//!
//! let body = b"85 <158>1 2024-01-01T00:00:00+00:00 host heroku router - at=info status=200 service=3ms\n";
//! let mut frames = logplex_frames(body, LogplexLimits::default());
//! let message = parse_syslog(frames.next().expect("one frame")?)?;
//! assert_eq!(message.procid, "router");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod heroku;
mod logplex;
mod vector;

pub use heroku::{
    KeyValues, RouterError, RouterLine, SampleError, Samples, key_values, parse_router,
    parse_sample_value, parse_samples,
};
pub use logplex::{
    DEFAULT_MAX_LOGPLEX_MESSAGE_BYTES, DEFAULT_MAX_LOGPLEX_MESSAGES, LogplexFrameError,
    LogplexFrames, LogplexLimits, SyslogError, SyslogMessage, logplex_frames, parse_syslog,
};
pub use vector::{
    Statistic, VectorError, VectorKind, VectorLimits, VectorLine, VectorMetric, VectorValue,
    parse_vector_line,
};
