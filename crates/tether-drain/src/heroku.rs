//! Heroku's own log lines: `key=value` pairs separated by spaces, values
//! optionally double-quoted. Add-ons (Postgres, Redis) and dynos log
//! measurements as `sample#<key>=<value><unit>`; the router logs one line
//! per request.

use std::fmt;

/// The `key=value` pairs of a message, in order, borrowed. A token without
/// `=` is skipped; a quoted value runs to the next unescaped `"` and comes
/// without its quotes (escapes are left as written).
///
/// Pairs are separated by one or more spaces. The key is what comes before
/// the token's first `=`; a token with an empty key (`=x`) is skipped. A `"`
/// is escaped by an odd number of backslashes before it, so `"a\\"` ends at
/// its second quote. A quoted value without its closing quote takes the rest
/// of the line. Nothing is allocated.
#[derive(Debug, Clone)]
pub struct KeyValues<'a> {
    rest: &'a [u8],
}

/// The `key=value` pairs of `msg`; a trailing `\r` or `\n` is not part of
/// the last value.
pub fn key_values(msg: &[u8]) -> KeyValues<'_> {
    let mut end = msg.len();
    while end > 0 && matches!(msg[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    KeyValues { rest: &msg[..end] }
}

impl<'a> Iterator for KeyValues<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        loop {
            let Some(start) = self.rest.iter().position(|&b| b != b' ') else {
                self.rest = &[];
                return None;
            };
            let token = &self.rest[start..];
            // The key runs to the first `=`; a space before one ends a token
            // that has none.
            let key_end = token.iter().position(|&b| b == b'=' || b == b' ');
            let Some(eq) = key_end.filter(|&at| token[at] == b'=') else {
                self.rest = &token[key_end.unwrap_or(token.len())..];
                continue;
            };
            let key = &token[..eq];
            let after = &token[eq + 1..];
            let (value, rest) = match after.strip_prefix(b"\"") {
                Some(quoted) => match closing_quote(quoted) {
                    Some(close) => (&quoted[..close], &quoted[close + 1..]),
                    None => (quoted, &quoted[quoted.len()..]),
                },
                None => {
                    let end = after.iter().position(|&b| b == b' ').unwrap_or(after.len());
                    after.split_at(end)
                }
            };
            self.rest = rest;
            if !key.is_empty() {
                return Some((key, value));
            }
        }
    }
}

/// Where the quoted text `quoted` (after its opening quote) ends: the first
/// `"` not escaped by an odd number of backslashes.
fn closing_quote(quoted: &[u8]) -> Option<usize> {
    let mut escaped = false;
    for (at, &b) in quoted.iter().enumerate() {
        match b {
            b'\\' => escaped = !escaped,
            b'"' if !escaped => return Some(at),
            _ => escaped = false,
        }
    }
    None
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
///
/// `None` for anything else, and for a number too large to be finite.
pub fn parse_sample_value(value: &[u8]) -> Option<f64> {
    let (number, unit) = value.split_at(decimal_len(value)?);
    let scale = match unit {
        b"" | b"bytes" | b"pages" => 1.0,
        b"kB" => 1024.0,
        b"MB" => 1024.0 * 1024.0,
        b"GB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(decimal(number)? * scale).filter(|value| value.is_finite())
}

/// The length of the decimal number that `text` starts with, in Go's
/// ParseFloat syntax: an optional sign, digits with an optional fraction
/// (`1`, `1.`, `.5`, `1.5`), an optional exponent (`e-3`); `None` when it
/// does not start with one. An `e` not followed by digits is not part of
/// the number.
fn decimal_len(text: &[u8]) -> Option<usize> {
    let digits_from = |from: usize| {
        text.get(from..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let mut end = usize::from(matches!(text.first(), Some(b'+' | b'-')));
    let int_digits = digits_from(end);
    end += int_digits;
    let mut fraction_digits = 0;
    if text.get(end) == Some(&b'.') {
        fraction_digits = digits_from(end + 1);
        end += 1 + fraction_digits;
    }
    if int_digits + fraction_digits == 0 {
        return None;
    }
    if matches!(text.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(text.get(end + 1), Some(b'+' | b'-')));
        let exponent_digits = digits_from(end + 1 + sign);
        if exponent_digits > 0 {
            end += 1 + sign + exponent_digits;
        }
    }
    Some(end)
}

/// `text` as a number when all of it is a decimal in Go's syntax (see
/// [`decimal_len`]); infinite when too large.
fn decimal(text: &[u8]) -> Option<f64> {
    if decimal_len(text)? != text.len() {
        return None;
    }
    // Checked above: ASCII, and a syntax Rust's parser reads the same way.
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A value as text, when it is UTF-8 and not empty: an empty value
/// (`dyno=`) is taken as absent.
fn text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value)
        .ok()
        .filter(|text| !text.is_empty())
}

/// The measurements of a message; `None` when it has no `sample#` key.
///
/// `source=`, `addon=` and `dyno=` are read when UTF-8 and not empty; a key
/// given twice keeps its last value. A `sample#` key that is empty or not
/// UTF-8 is rejected as [`SampleError::BadKey`] under its UTF-8 start.
pub fn parse_samples(msg: &[u8]) -> Option<Samples<'_>> {
    let mut samples = Samples::default();
    let mut any_sample = false;
    for (key, value) in key_values(msg) {
        if let Some(name) = key.strip_prefix(b"sample#") {
            any_sample = true;
            match std::str::from_utf8(name) {
                Ok("") => samples.rejected.push(("", SampleError::BadKey)),
                Ok(name) => match parse_sample_value(value) {
                    Some(value) => samples.samples.push((name, value)),
                    None => samples.rejected.push((name, SampleError::BadValue)),
                },
                Err(error) => {
                    let start = std::str::from_utf8(&name[..error.valid_up_to()]).unwrap_or("");
                    samples.rejected.push((start, SampleError::BadKey));
                }
            }
            continue;
        }
        match key {
            b"source" => samples.source = text(value),
            b"addon" => samples.addon = text(value),
            b"dyno" => samples.dyno = text(value),
            _ => {}
        }
    }
    any_sample.then_some(samples)
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
///
/// An empty value (`connect=` on an `H10` line) is taken as absent. A
/// duration is milliseconds, with or without `ms` (`18ms`, `0.5ms`, `18`),
/// not negative. A key given twice keeps its last value.
pub fn parse_router(msg: &[u8]) -> Result<RouterLine<'_>, RouterError> {
    let mut at = None;
    let (mut code, mut status, mut service, mut connect, mut method) =
        (None, None, None, None, None);
    for (key, value) in key_values(msg) {
        let slot = match key {
            b"at" => &mut at,
            b"code" => &mut code,
            b"status" => &mut status,
            b"service" => &mut service,
            b"connect" => &mut connect,
            b"method" => &mut method,
            _ => continue,
        };
        *slot = Some(value);
    }
    let at = at.ok_or(RouterError::NotARequest)?;
    Ok(RouterLine {
        error: at == b"error",
        code: code.and_then(text),
        status: present(status)
            .map(|value| http_status(value).ok_or(RouterError::BadValue("status")))
            .transpose()?,
        service_seconds: present(service)
            .map(|value| seconds(value).ok_or(RouterError::BadValue("service")))
            .transpose()?,
        connect_seconds: present(connect)
            .map(|value| seconds(value).ok_or(RouterError::BadValue("connect")))
            .transpose()?,
        method: method.and_then(text),
    })
}

/// A value given and not empty.
fn present(value: Option<&[u8]>) -> Option<&[u8]> {
    value.filter(|value| !value.is_empty())
}

/// An HTTP status: decimal digits only, from 100 to 999.
fn http_status(value: &[u8]) -> Option<u16> {
    // Five digits cannot overflow and are more than any status has.
    if value.len() > 5 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = value.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    u16::try_from(status)
        .ok()
        .filter(|status| (100..=999).contains(status))
}

/// A router duration in seconds from milliseconds, `ms` written or not.
fn seconds(value: &[u8]) -> Option<f64> {
    let millis = decimal(value.strip_suffix(b"ms").unwrap_or(value))?;
    // `-0` is no time, not a negative one.
    (millis.is_finite() && millis >= 0.0).then(|| (millis + 0.0) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POSTGRES: &str = "source=HEROKU_POSTGRESQL_RED addon=postgresql-opaque-12345 sample#current_transaction=1873 sample#db_size=147391814791bytes sample#tables=12 sample#active-connections=41 sample#waiting-connections=0 sample#index-cache-hit-rate=0.99625 sample#table-cache-hit-rate=0.99889 sample#load-avg-1m=0.3575 sample#load-avg-5m=0.405 sample#load-avg-15m=0.4125 sample#read-iops=302.48 sample#write-iops=12.35 sample#tmp-disk-used=543633408 sample#tmp-disk-available=72435159040 sample#memory-total=31328356kB sample#memory-free=3786332.0kB sample#memory-cached=24589220kB sample#memory-postgres=1015432kB sample#wal-percentage-used=0.07720331520217211";
    const DYNO_MEMORY: &str = "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 sample#memory_total=154.85MB sample#memory_rss=150.19MB sample#memory_cache=4.66MB sample#memory_swap=0.00MB sample#memory_pgpgin=50196pages sample#memory_pgpgout=11611pages sample#memory_quota=512.00MB";
    const DYNO_LOAD: &str = "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 sample#load_avg_1m=0.00 sample#load_avg_5m=0.00 sample#load_avg_15m=0.01";
    const ROUTER_INFO: &str = r#"at=info method=GET path="/api/v1/crates?page=1" host=crates.io request_id=1f4a4c5e-7d7e-4c36-9a5a-6f8c7e4b2a11 fwd="203.0.113.9" dyno=web.1 connect=0ms service=18ms status=200 bytes=2345 protocol=https"#;
    const ROUTER_H12: &str = r#"at=error code=H12 desc="Request timeout" method=GET path="/" host=myapp.herokuapp.com request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd="204.204.204.204" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https"#;
    const ROUTER_H10: &str = r#"at=error code=H10 desc="App crashed" method=GET path="/favicon.ico" host=myapp.herokuapp.com fwd=17.17.17.17 dyno= connect= service= status=503 bytes="#;

    fn pairs(msg: &str) -> Vec<(&str, &str)> {
        key_values(msg.as_bytes())
            .map(|(key, value)| {
                (
                    std::str::from_utf8(key).expect("a UTF-8 key"),
                    std::str::from_utf8(value).expect("a UTF-8 value"),
                )
            })
            .collect()
    }

    #[test]
    fn key_values_split_as_heroku_writes_them() {
        let cases: [(&str, &[(&str, &str)]); 14] = [
            ("a=1 b=two", &[("a", "1"), ("b", "two")]),
            ("  a=1    b=2  ", &[("a", "1"), ("b", "2")]),
            ("word a=1 another b=2 last", &[("a", "1"), ("b", "2")]),
            (
                r#"desc="Request timeout" x=1"#,
                &[("desc", "Request timeout"), ("x", "1")],
            ),
            (r#"p="a \"q\" b" x=1"#, &[("p", r#"a \"q\" b"#), ("x", "1")]),
            (r#"p="ends in \\" x=1"#, &[("p", r"ends in \\"), ("x", "1")]),
            (r#"p="never closed x=1"#, &[("p", "never closed x=1")]),
            (r#"p=" x=1"#, &[("p", " x=1")]),
            ("=x a=1 =", &[("a", "1")]),
            (
                "dyno= connect= b=",
                &[("dyno", ""), ("connect", ""), ("b", "")],
            ),
            ("a=b=c k==", &[("a", "b=c"), ("k", "=")]),
            ("a=1 b=2\r\n", &[("a", "1"), ("b", "2")]),
            (r#"q="x"y z=1"#, &[("q", "x"), ("z", "1")]),
            ("", &[]),
        ];
        for (msg, expected) in cases {
            assert_eq!(pairs(msg), expected, "{msg:?}");
        }
        assert_eq!(pairs("   \n").len(), 0);
        assert_eq!(pairs(r#"a="x""#), [("a", "x")]);
        assert_eq!(pairs("a=\"x\r\n"), [("a", "x")]);
    }

    #[test]
    fn sample_values_read_with_their_units() {
        let cases: [(&str, f64); 18] = [
            ("147391814791bytes", 147391814791.0),
            ("8945836.0bytes", 8945836.0),
            ("31328356kB", 31328356.0 * 1024.0),
            ("3786332.0kB", 3786332.0 * 1024.0),
            ("154.85MB", 154.85 * 1048576.0),
            ("0.00MB", 0.0),
            ("2GB", 2.0 * 1073741824.0),
            ("0.99625", 0.99625),
            ("41", 41.0),
            ("302.48", 302.48),
            ("0pages", 0.0),
            ("50196pages", 50196.0),
            ("-1.5", -1.5),
            ("+2", 2.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("1e3bytes", 1000.0),
            ("2.5E-1", 0.25),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_sample_value(value.as_bytes()),
                Some(expected),
                "{value}"
            );
        }
        for bad in [
            "", "bytes", "kB", ".", "-", "+.", "inf", "Inf", "NaN", "infinity", "0x10", "1_000",
            "1e", "1e+", "1ekB", "5 kB", "5kb", "5KB", "5mb", "5TB", "5B", "1e400", "-1e309MB",
            "1,5", "١", "5bytesx", "--1", "1..2",
        ] {
            assert_eq!(parse_sample_value(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn postgres_samples_read_with_their_source() {
        let samples = parse_samples(POSTGRES.as_bytes()).expect("samples");
        assert_eq!(samples.source, Some("HEROKU_POSTGRESQL_RED"));
        assert_eq!(samples.addon, Some("postgresql-opaque-12345"));
        assert_eq!(samples.dyno, None);
        assert_eq!(samples.rejected, []);
        let expected: [(&str, f64); 19] = [
            ("current_transaction", 1873.0),
            ("db_size", 147391814791.0),
            ("tables", 12.0),
            ("active-connections", 41.0),
            ("waiting-connections", 0.0),
            ("index-cache-hit-rate", 0.99625),
            ("table-cache-hit-rate", 0.99889),
            ("load-avg-1m", 0.3575),
            ("load-avg-5m", 0.405),
            ("load-avg-15m", 0.4125),
            ("read-iops", 302.48),
            ("write-iops", 12.35),
            ("tmp-disk-used", 543633408.0),
            ("tmp-disk-available", 72435159040.0),
            ("memory-total", 31328356.0 * 1024.0),
            ("memory-free", 3786332.0 * 1024.0),
            ("memory-cached", 24589220.0 * 1024.0),
            ("memory-postgres", 1015432.0 * 1024.0),
            ("wal-percentage-used", 0.07720331520217211),
        ];
        assert_eq!(samples.samples, expected);
        let database = POSTGRES.replace("source=HEROKU_POSTGRESQL_RED", "source=DATABASE");
        let samples = parse_samples(database.as_bytes()).expect("samples");
        assert_eq!(samples.source, Some("DATABASE"));
        assert_eq!(samples.samples.len(), 19);
    }

    #[test]
    fn dyno_samples_read_with_their_dyno() {
        let memory = parse_samples(DYNO_MEMORY.as_bytes()).expect("samples");
        assert_eq!(memory.source, Some("web.1"));
        assert_eq!(
            memory.dyno,
            Some("heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456")
        );
        assert_eq!(memory.addon, None);
        assert_eq!(
            memory.samples,
            [
                ("memory_total", 154.85 * 1048576.0),
                ("memory_rss", 150.19 * 1048576.0),
                ("memory_cache", 4.66 * 1048576.0),
                ("memory_swap", 0.0),
                ("memory_pgpgin", 50196.0),
                ("memory_pgpgout", 11611.0),
                ("memory_quota", 512.0 * 1048576.0),
            ]
        );
        let load = parse_samples(DYNO_LOAD.as_bytes()).expect("samples");
        assert_eq!(
            load.samples,
            [
                ("load_avg_1m", 0.0),
                ("load_avg_5m", 0.0),
                ("load_avg_15m", 0.01)
            ]
        );
    }

    #[test]
    fn bad_samples_are_rejected_one_by_one() {
        let msg = b"source= addon=\xff sample#ok=1 sample#bad=12XB sample#=3 sample#\xc3\xa9\xff=4 sample#quoted=\"5kB\" sample#empty= sample#inf=inf\n";
        let samples = parse_samples(msg).expect("samples");
        assert_eq!((samples.source, samples.addon), (None, None));
        assert_eq!(samples.samples, [("ok", 1.0), ("quoted", 5120.0)]);
        assert_eq!(
            samples.rejected,
            [
                ("bad", SampleError::BadValue),
                ("", SampleError::BadKey),
                ("é", SampleError::BadKey),
                ("empty", SampleError::BadValue),
                ("inf", SampleError::BadValue),
            ]
        );
        assert_eq!(samples.rejected[0].1.reason(), "bad_sample_value");
        assert_eq!(parse_samples(ROUTER_INFO.as_bytes()), None);
        assert_eq!(
            parse_samples(b"Starting process with command `bin/web`"),
            None
        );
        assert_eq!(parse_samples(b"text sample#x without=value"), None);
        assert_eq!(
            parse_samples(b"count#requests=1 sample#"),
            None,
            "a bare `sample#` with no `=` is not a key"
        );
    }

    #[test]
    fn router_lines_read_their_status_and_timings() {
        let info = parse_router(ROUTER_INFO.as_bytes()).expect("a request");
        assert_eq!(
            info,
            RouterLine {
                error: false,
                code: None,
                status: Some(200),
                service_seconds: Some(0.018),
                connect_seconds: Some(0.0),
                method: Some("GET"),
            }
        );
        let h12 = parse_router(ROUTER_H12.as_bytes()).expect("a request");
        assert_eq!(
            h12,
            RouterLine {
                error: true,
                code: Some("H12"),
                status: Some(503),
                service_seconds: Some(30.0),
                connect_seconds: Some(0.0),
                method: Some("GET"),
            }
        );
        let h10 = parse_router(ROUTER_H10.as_bytes()).expect("a request");
        assert_eq!(
            h10,
            RouterLine {
                error: true,
                code: Some("H10"),
                status: Some(503),
                service_seconds: None,
                connect_seconds: None,
                method: Some("GET"),
            }
        );
        let warning = parse_router(b"sock=client at=warning code=H27 desc=\"Client Request Interrupted\" method=POST connect=0.5ms service=12 status=499")
            .expect("a request");
        assert_eq!(
            (
                warning.error,
                warning.code,
                warning.status,
                warning.connect_seconds,
                warning.service_seconds,
                warning.method,
            ),
            (
                false,
                Some("H27"),
                Some(499),
                Some(0.0005),
                Some(0.012),
                Some("POST")
            )
        );
        let bare = parse_router(b"at=info").expect("a request");
        assert_eq!(
            (bare.status, bare.service_seconds, bare.method),
            (None, None, None)
        );
    }

    #[test]
    fn router_lines_that_do_not_parse_say_which_value() {
        let cases: [(&[u8], RouterError); 14] = [
            (b"method=GET status=200", RouterError::NotARequest),
            (b"Process exited with status 143", RouterError::NotARequest),
            (b"", RouterError::NotARequest),
            (b"at=info status=99", RouterError::BadValue("status")),
            (b"at=info status=1000", RouterError::BadValue("status")),
            (b"at=info status=+200", RouterError::BadValue("status")),
            (b"at=info status=20x", RouterError::BadValue("status")),
            (
                b"at=info status=99999999999999999999",
                RouterError::BadValue("status"),
            ),
            (b"at=info service=fast", RouterError::BadValue("service")),
            (b"at=info service=-1ms", RouterError::BadValue("service")),
            (b"at=info service=1s", RouterError::BadValue("service")),
            (b"at=info service=ms", RouterError::BadValue("service")),
            (b"at=info connect=1e999ms", RouterError::BadValue("connect")),
            (b"at=info connect=NaNms", RouterError::BadValue("connect")),
        ];
        for (msg, error) in cases {
            assert_eq!(
                parse_router(msg),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
        assert_eq!(
            RouterError::BadValue("status").to_string(),
            "the router line's status= does not parse"
        );
        assert_eq!(RouterError::NotARequest.reason(), "router_not_a_request");
    }
}
