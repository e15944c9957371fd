//! Heroku's own log lines: `key=value` pairs separated by spaces, values
//! optionally double-quoted. Add-ons (Postgres, Redis) and dynos log
//! measurements as `sample#<key>=<value><unit>`; the router logs one line
//! per request.

use std::fmt;

/// The `key=value` pairs of a message, in order, borrowed. A token without
/// `=` is skipped; a quoted value runs to the next unescaped `"` and comes
/// without its quotes (escapes are left as written).
#[derive(Debug, Clone)]
pub struct KeyValues<'a> {
    rest: &'a [u8],
}

/// The `key=value` pairs of `msg`.
pub fn key_values(msg: &[u8]) -> KeyValues<'_> {
    KeyValues { rest: msg }
}

impl<'a> Iterator for KeyValues<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let _ = self.rest;
        None
    }
}

/// The measurements of one line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples<'a> {
    /// `source=` (`HEROKU_POSTGRESQL_RED`, `DATABASE`, `web.1`), if given.
    pub source: Option<&'a str>,
    /// `addon=`, if given.
    pub addon: Option<&'a str>,
    /// `dyno=`, if given.
    pub dyno: Option<&'a str>,
    /// Each `sample#` key (without `sample#`, as written) and its value in
    /// base units.
    pub samples: Vec<(&'a str, f64)>,
    /// Each `sample#` key whose value could not be read, and why.
    pub rejected: Vec<(&'a str, SampleError)>,
}

/// Why a sample's value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleError {
    /// Not a number followed by a known unit.
    BadValue,
    /// The key is empty or not UTF-8.
    BadKey,
}

impl SampleError {
    /// A short label value naming the reason.
    pub fn reason(self) -> &'static str {
        match self {
            SampleError::BadValue => "bad_sample_value",
            SampleError::BadKey => "bad_sample_key",
        }
    }
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleError::BadValue => write!(
                f,
                "a sample value must be a number with an optional unit (bytes, kB, MB, GB, pages)"
            ),
            SampleError::BadKey => write!(f, "a sample key must be non-empty UTF-8"),
        }
    }
}

impl std::error::Error for SampleError {}

/// A sample's value in base units: a decimal number (as Go's ParseFloat
/// reads it, no `Inf`/`NaN`) with an optional unit: `bytes` and `pages`
/// stripped, `kB` times 1024, `MB` times 1024², `GB` times 1024³.
pub fn parse_sample_value(value: &[u8]) -> Option<f64> {
    let _ = value;
    None
}

/// The measurements of a message; `None` when it has no `sample#` key.
pub fn parse_samples(msg: &[u8]) -> Option<Samples<'_>> {
    let _ = msg;
    None
}

/// One router line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterLine<'a> {
    /// `at=error` rather than `at=info` (or `at=warning`).
    pub error: bool,
    /// `code=` (`H12`, `H13`, …), if given.
    pub code: Option<&'a str>,
    /// `status=`, if given and a number from 100 to 999.
    pub status: Option<u16>,
    /// `service=` in seconds (`30000ms` is 30.0), if given.
    pub service_seconds: Option<f64>,
    /// `connect=` in seconds, if given.
    pub connect_seconds: Option<f64>,
    /// `method=`, if given.
    pub method: Option<&'a str>,
}

/// Why a router line could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterError {
    /// No `at=` key: not a request line.
    NotARequest,
    /// A `status=`, `service=` or `connect=` value that does not parse; the key.
    BadValue(&'static str),
}

impl RouterError {
    /// A short label value naming the reason.
    pub fn reason(self) -> &'static str {
        match self {
            RouterError::NotARequest => "router_not_a_request",
            RouterError::BadValue(_) => "router_bad_value",
        }
    }
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterError::NotARequest => write!(f, "a router line without at= is not a request"),
            RouterError::BadValue(key) => write!(f, "the router line's {key}= does not parse"),
        }
    }
}

impl std::error::Error for RouterError {}

/// Reads a router line's message.
pub fn parse_router(msg: &[u8]) -> Result<RouterLine<'_>, RouterError> {
    let _ = msg;
    Err(RouterError::NotARequest)
}
