//! Heroku logplex drain bodies: the octet-counted frames of one batch
//! (`<decimal length><SP><message>`, the length counting the message's
//! trailing newline), and the RFC 5424 header of each message as logplex
//! writes it (`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID MSG`, no
//! structured data).
//!
//! Framing is forgiving where real senders differ and strict where a
//! mistake would misread the rest: a last frame without its newline is
//! taken, a length that leaves out the newline is taken (the newline is
//! skipped), and a frame whose length does not parse or runs past the body
//! is reported, after which reading goes on at the next line that starts a
//! frame. Nothing here allocates per frame.

use std::fmt;

/// Bounds of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogplexLimits {
    /// The longest message, newline included; a longer frame is refused
    /// (and skipped) without being read.
    pub max_message_bytes: usize,
    /// The most frames read from one body; the rest is left unread.
    pub max_messages: usize,
}

/// Default longest logplex message: logplex itself cuts lines at 10 KB;
/// metric lines of the instance-metrics convention are split below 64 KiB.
pub const DEFAULT_MAX_LOGPLEX_MESSAGE_BYTES: usize = 64 << 10;
/// Default most frames in one batch (Heroku sends a few hundred at most).
pub const DEFAULT_MAX_LOGPLEX_MESSAGES: usize = 100_000;

impl Default for LogplexLimits {
    fn default() -> LogplexLimits {
        LogplexLimits {
            max_message_bytes: DEFAULT_MAX_LOGPLEX_MESSAGE_BYTES,
            max_messages: DEFAULT_MAX_LOGPLEX_MESSAGES,
        }
    }
}

/// Why a frame could not be read; each is a reason a drain counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogplexFrameError {
    /// The frame does not start with a decimal length and a space.
    BadLength {
        /// Where the frame starts in the body.
        offset: usize,
    },
    /// The length is over [`LogplexLimits::max_message_bytes`].
    TooLong {
        /// Where the frame starts in the body.
        offset: usize,
        /// The length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body ends before the length given.
    Truncated {
        /// Where the frame starts in the body.
        offset: usize,
        /// The length given.
        len: usize,
        /// What is left of the body.
        left: usize,
    },
    /// More frames than [`LogplexLimits::max_messages`]; the rest is unread.
    TooManyMessages {
        /// The limit.
        max: usize,
    },
}

impl LogplexFrameError {
    /// A short name of the error, for a `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            LogplexFrameError::BadLength { .. } => "bad_frame_length",
            LogplexFrameError::TooLong { .. } => "frame_too_long",
            LogplexFrameError::Truncated { .. } => "truncated_frame",
            LogplexFrameError::TooManyMessages { .. } => "too_many_messages",
        }
    }
}

impl fmt::Display for LogplexFrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogplexFrameError::BadLength { offset } => write!(
                f,
                "byte {offset}: a frame must start with its length in decimal and a space"
            ),
            LogplexFrameError::TooLong { offset, len, max } => write!(
                f,
                "byte {offset}: a frame of {len} bytes is longer than the {max} allowed"
            ),
            LogplexFrameError::Truncated { offset, len, left } => write!(
                f,
                "byte {offset}: a frame of {len} bytes with only {left} left in the body"
            ),
            LogplexFrameError::TooManyMessages { max } => {
                write!(
                    f,
                    "more than {max} frames in one body; the rest was not read"
                )
            }
        }
    }
}

impl std::error::Error for LogplexFrameError {}

/// The frames of one body, each a message without its trailing newline.
#[derive(Debug, Clone)]
pub struct LogplexFrames<'a> {
    body: &'a [u8],
    offset: usize,
    n_messages: usize,
    limits: LogplexLimits,
    done: bool,
}

/// Reads the frames of `body` within `limits`.
pub fn logplex_frames(body: &[u8], limits: LogplexLimits) -> LogplexFrames<'_> {
    LogplexFrames {
        body,
        offset: 0,
        n_messages: 0,
        limits,
        done: false,
    }
}

/// The most digits a frame length may have: more could not be a length
/// under any limit a drain sets.
const MAX_LENGTH_DIGITS: usize = 10;

impl<'a> LogplexFrames<'a> {
    /// Goes on after a frame that could not be read: at the start of the
    /// next line, or at the end.
    fn skip_line(&mut self) {
        match self.body[self.offset..].iter().position(|&b| b == b'\n') {
            Some(newline) => self.offset += newline + 1,
            None => self.offset = self.body.len(),
        }
    }
}

impl<'a> Iterator for LogplexFrames<'a> {
    type Item = Result<&'a [u8], LogplexFrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // Blank lines and stray whitespace between frames are not frames.
        while self
            .body
            .get(self.offset)
            .is_some_and(u8::is_ascii_whitespace)
        {
            self.offset += 1;
        }
        if self.offset >= self.body.len() {
            self.done = true;
            return None;
        }
        if self.n_messages == self.limits.max_messages {
            self.done = true;
            return Some(Err(LogplexFrameError::TooManyMessages {
                max: self.limits.max_messages,
            }));
        }
        self.n_messages += 1;
        let start = self.offset;
        let rest = &self.body[start..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > MAX_LENGTH_DIGITS || rest.get(digits) != Some(&b' ') {
            self.skip_line();
            return Some(Err(LogplexFrameError::BadLength { offset: start }));
        }
        // Ten ASCII digits fit a u64.
        let len = rest[..digits]
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.limits.max_message_bytes {
            self.skip_line();
            return Some(Err(LogplexFrameError::TooLong {
                offset: start,
                len,
                max: self.limits.max_message_bytes,
            }));
        }
        let message_start = start + digits + 1;
        let left = self.body.len() - message_start;
        let (message, next) = if len <= left {
            (
                &self.body[message_start..message_start + len],
                message_start + len,
            )
        } else if len == left + 1 {
            // A last frame whose newline the sender left out.
            (&self.body[message_start..], self.body.len())
        } else {
            self.skip_line();
            return Some(Err(LogplexFrameError::Truncated {
                offset: start,
                len,
                left,
            }));
        };
        self.offset = next;
        Some(Ok(message.strip_suffix(b"\n").unwrap_or(message)))
    }
}

/// One logplex message: the RFC 5424 header fields (`-` where the sender
/// had none) and the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogMessage<'a> {
    /// Facility times eight plus severity, 0 to 191.
    pub priority: u8,
    /// The timestamp as written (RFC 3339).
    pub timestamp: &'a str,
    pub hostname: &'a str,
    /// `app` for an app's own lines, `heroku` for the platform's.
    pub app_name: &'a str,
    /// The process: `web.1`, `router`, `heroku-postgres`, …
    pub procid: &'a str,
    pub msgid: &'a str,
    /// The rest of the line.
    pub msg: &'a [u8],
}

/// Why a message's header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogError {
    /// No `<PRI>` of 0 to 191 at the start.
    BadPriority,
    /// A version other than 1.
    BadVersion,
    /// A header field is missing, empty or not printable ASCII.
    BadField(&'static str),
}

impl fmt::Display for SyslogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyslogError::BadPriority => {
                write!(
                    f,
                    "the message must start with <PRI>, a priority from 0 to 191"
                )
            }
            SyslogError::BadVersion => write!(f, "the syslog version must be 1"),
            SyslogError::BadField(field) => {
                write!(f, "the syslog {field} is missing or not printable ASCII")
            }
        }
    }
}

impl std::error::Error for SyslogError {}

/// Reads the header of one message (a frame from [`logplex_frames`]).
pub fn parse_syslog(message: &[u8]) -> Result<SyslogMessage<'_>, SyslogError> {
    let rest = message.strip_prefix(b"<").ok_or(SyslogError::BadPriority)?;
    let close = rest
        .iter()
        .take(4)
        .position(|&b| b == b'>')
        .ok_or(SyslogError::BadPriority)?;
    let digits = &rest[..close];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(SyslogError::BadPriority);
    }
    let priority = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let priority = u8::try_from(priority)
        .ok()
        .filter(|&p| p <= 191)
        .ok_or(SyslogError::BadPriority)?;
    let mut rest = &rest[close + 1..];
    let version = field(&mut rest).ok_or(SyslogError::BadVersion)?;
    if version != "1" {
        return Err(SyslogError::BadVersion);
    }
    let timestamp = field(&mut rest).ok_or(SyslogError::BadField("timestamp"))?;
    let hostname = field(&mut rest).ok_or(SyslogError::BadField("hostname"))?;
    let app_name = field(&mut rest).ok_or(SyslogError::BadField("app name"))?;
    let procid = field(&mut rest).ok_or(SyslogError::BadField("process id"))?;
    let msgid = field(&mut rest).ok_or(SyslogError::BadField("message id"))?;
    Ok(SyslogMessage {
        priority,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        msg: rest,
    })
}

/// The next space-ended header field of `rest` (printable ASCII, not
/// empty), and `rest` moved past it and its space. The last field before
/// an empty message may end the line instead.
fn field<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let token = &rest[..end];
    if token.is_empty() || !token.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    *rest = rest.get(end + 1..).unwrap_or(&[]);
    // Printable ASCII is UTF-8.
    std::str::from_utf8(token).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(body: &[u8]) -> Vec<Result<&[u8], LogplexFrameError>> {
        logplex_frames(body, LogplexLimits::default()).collect()
    }

    fn frame(message: &str) -> String {
        format!("{} {message}\n", message.len() + 1)
    }

    const POSTGRES: &str = "<134>1 2022-03-24T23:59:31+00:00 host app heroku-postgres - source=DATABASE addon=postgresql-opaque-12345 sample#db_size=147391814791bytes sample#active-connections=41";
    const ROUTER: &str = "<158>1 2022-03-24T23:59:32.123456+00:00 host heroku router - at=error code=H12 desc=\"Request timeout\" method=GET path=\"/\" status=503 service=30000ms";

    #[test]
    fn a_batch_reads_frame_by_frame_as_logplex_writes_it() {
        let body = format!("{}{}", frame(POSTGRES), frame(ROUTER));
        let read: Vec<&[u8]> = frames(body.as_bytes())
            .into_iter()
            .map(|f| f.expect("a frame"))
            .collect();
        assert_eq!(read, [POSTGRES.as_bytes(), ROUTER.as_bytes()]);
        let postgres = parse_syslog(read[0]).expect("a header");
        assert_eq!(
            (
                postgres.priority,
                postgres.timestamp,
                postgres.app_name,
                postgres.procid,
                postgres.msgid
            ),
            (
                134,
                "2022-03-24T23:59:31+00:00",
                "app",
                "heroku-postgres",
                "-"
            )
        );
        assert!(postgres.msg.starts_with(b"source=DATABASE "));
        assert_eq!(parse_syslog(read[1]).expect("a header").procid, "router");
    }

    #[test]
    fn senders_that_differ_are_read_and_mistakes_skipped() {
        // The last frame without its newline; a length without the newline.
        let lax = format!(
            "{} {POSTGRES}\n{}{}",
            POSTGRES.len(),
            frame("<13>1 - h a p - one"),
            &frame("<13>1 - h a p - last")[..frame("<13>1 - h a p - last").len() - 1]
        );
        let read: Vec<_> = frames(lax.as_bytes())
            .into_iter()
            .map(|f| f.expect("a frame"))
            .collect();
        assert_eq!(read.len(), 3, "{read:?}");
        assert_eq!(read[2], b"<13>1 - h a p - last");
        // A bad length, then a good frame on the next line.
        let bad = format!("12x nonsense\n{}", frame(ROUTER));
        let read = frames(bad.as_bytes());
        assert_eq!(read[0], Err(LogplexFrameError::BadLength { offset: 0 }));
        assert_eq!(read[1], Ok(ROUTER.as_bytes()));
        // Too long and truncated frames are errors, nothing is read past them.
        let limits = LogplexLimits {
            max_message_bytes: 16,
            max_messages: 2,
        };
        let long: Vec<_> = logplex_frames(b"99 abc\n5 abcd\n", limits).collect();
        assert_eq!(
            long,
            [
                Err(LogplexFrameError::TooLong {
                    offset: 0,
                    len: 99,
                    max: 16
                }),
                Ok(&b"abcd"[..])
            ]
        );
        assert_eq!(
            frames(b"10 abc"),
            [Err(LogplexFrameError::Truncated {
                offset: 0,
                len: 10,
                left: 3
            })]
        );
        let many: Vec<_> = logplex_frames(b"2 a\n2 b\n2 c\n", limits).collect();
        assert_eq!(many[2], Err(LogplexFrameError::TooManyMessages { max: 2 }));
        assert_eq!(many.len(), 3);
        assert!(frames(b"").is_empty() && frames(b"\n\n").is_empty());
        assert_eq!(
            frames(b"99999999999999999999 x"),
            [Err(LogplexFrameError::BadLength { offset: 0 })]
        );
    }

    #[test]
    fn bad_headers_say_which_field() {
        let cases: [(&[u8], SyslogError); 6] = [
            (b"134>1 t h a p - m", SyslogError::BadPriority),
            (b"<192>1 t h a p - m", SyslogError::BadPriority),
            (b"<1x>1 t h a p - m", SyslogError::BadPriority),
            (b"<13>2 t h a p - m", SyslogError::BadVersion),
            (b"<13>1 t h a", SyslogError::BadField("process id")),
            (b"<13>1 t h\xff a p - m", SyslogError::BadField("hostname")),
        ];
        for (message, error) in cases {
            assert_eq!(parse_syslog(message), Err(error), "{message:?}");
        }
        let empty = parse_syslog(b"<13>1 t h a p -").expect("a header with no message");
        assert_eq!(empty.msg, b"");
    }
}
