//! The line-level parser: one exposition line in, one [`Entry`] out, zero-copy.
//!
//! This layer checks the syntax of every line (names, escapes, numbers,
//! separators) and borrows from the input wherever it can. It knows nothing
//! of families; grouping samples into series is the builder's job.

use std::borrow::Cow;

use memchr::{memchr, memchr2};

use super::float::{parse_go_float, parse_go_int};
use super::{Format, Limits};
use crate::error::{ErrorKind, Found, ParseError};
use crate::model::MetricType;

/// One parsed line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// `# HELP name text`, with the text unescaped.
    Help {
        /// The metric name.
        name: &'a str,
        /// The help text.
        help: Cow<'a, str>,
    },
    /// `# TYPE name type`.
    Type {
        /// The metric name.
        name: &'a str,
        /// The declared type.
        metric_type: MetricType,
    },
    /// `# UNIT name unit` (OpenMetrics).
    Unit {
        /// The metric name.
        name: &'a str,
        /// The unit.
        unit: &'a str,
    },
    /// A sample line.
    Sample(Sample<'a>),
    /// The OpenMetrics `# EOF` line.
    Eof,
}

/// A sample line: name, labels, value, optional timestamp and exemplar.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The metric name of the line, suffix included (`foo_bucket`).
    pub name: &'a str,
    /// The labels, already checked; iterate to read them.
    pub labels: RawLabels<'a>,
    /// The value.
    pub value: f64,
    /// The timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// The OpenMetrics exemplar after `#`, if any.
    pub exemplar: Option<RawExemplar<'a>>,
    /// The whole line, for error columns.
    pub(crate) line: &'a str,
    /// Byte offset of the value in the line.
    pub(crate) value_offset: usize,
    /// Byte offset of the exemplar's `#` in the line (0 without one).
    pub(crate) exemplar_offset: usize,
}

/// An exemplar as written on a sample line, already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RawExemplar<'a> {
    /// The exemplar's labels.
    pub labels: RawLabels<'a>,
    /// The exemplar's value.
    pub value: f64,
    /// The exemplar's timestamp in seconds.
    pub timestamp: Option<f64>,
}

/// The label set of a sample as written between its braces.
///
/// The parser has checked the syntax; iteration decodes escapes lazily and
/// allocates only for values that contain them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLabels<'a> {
    /// The text between `{` and `}` (empty when there were no braces).
    text: &'a str,
    /// Offset of `text` in the line, for error columns.
    offset: usize,
    /// How many labels the text holds.
    len: usize,
}

impl<'a> RawLabels<'a> {
    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The labels in the order written: name and unescaped value.
    pub fn iter(&self) -> RawLabelsIter<'a> {
        RawLabelsIter {
            text: self.text,
            pos: 0,
            offset: self.offset,
        }
    }

    /// The unescaped value of the label `name`, if present.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.iter()
            .find(|label| label.name == name)
            .map(|label| label.value)
    }
}

/// One label read from [`RawLabels`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLabel<'a> {
    /// The name.
    pub name: &'a str,
    /// The unescaped value.
    pub value: Cow<'a, str>,
    /// The byte offset of the value's opening quote within its line.
    pub value_offset: usize,
}

/// Iterator over [`RawLabels`].
#[derive(Debug, Clone)]
pub struct RawLabelsIter<'a> {
    text: &'a str,
    pos: usize,
    offset: usize,
}

impl<'a> Iterator for RawLabelsIter<'a> {
    type Item = RawLabel<'a>;

    fn next(&mut self) -> Option<RawLabel<'a>> {
        // The text was validated by the lexer, so this only has to find the
        // boundaries again: name, `=`, quoted value, separator.
        let bytes = self.text.as_bytes();
        let mut pos = skip_blanks(bytes, self.pos);
        if pos >= bytes.len() {
            return None;
        }
        let name_start = pos;
        while pos < bytes.len() && is_label_name_byte(bytes[pos]) {
            pos += 1;
        }
        let name = &self.text[name_start..pos];
        pos = skip_blanks(bytes, pos);
        pos += 1; // `=`
        pos = skip_blanks(bytes, pos);
        let quote = pos;
        pos += 1; // opening quote
        let value_start = pos;
        let mut has_escape = false;
        loop {
            // Validated: a closing quote exists, and every backslash starts
            // a two-byte escape.
            match find_quote_or_backslash(bytes, pos) {
                Some(i) if bytes[i] == b'\\' => {
                    has_escape = true;
                    pos = i + 2;
                }
                Some(i) => {
                    pos = i;
                    break;
                }
                None => {
                    pos = bytes.len();
                    break;
                }
            }
        }
        let raw = &self.text[value_start..pos];
        let value = if has_escape {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        pos += 1; // closing quote
        pos = skip_blanks(bytes, pos);
        if pos < bytes.len() && bytes[pos] == b',' {
            pos += 1;
        }
        self.pos = pos;
        Some(RawLabel {
            name,
            value,
            value_offset: self.offset + quote,
        })
    }
}

fn skip_blanks(bytes: &[u8], mut pos: usize) -> usize {
    while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
        pos += 1;
    }
    pos
}

/// Decodes `\\`, `\"` and `\n` in text already checked by the lexer; a
/// backslash before any other character (OpenMetrics only) stays.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    unescape_into(raw, &mut out);
    out
}

/// [`unescape`], appending to `out`.
pub(crate) fn unescape_into(raw: &str, out: &mut String) {
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(c @ ('\\' | '"')) => out.push(c),
                // OpenMetrics keeps a backslash before any other character.
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
}

/// Byte classes of names, one bit each in [`NAME_CLASSES`].
const METRIC_NAME_START: u8 = 1;
const METRIC_NAME_BYTE: u8 = 2;
const LABEL_NAME_START: u8 = 4;
const LABEL_NAME_BYTE: u8 = 8;

/// The name classes of every byte: one load per byte of a name instead of
/// a chain of range comparisons.
const NAME_CLASSES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let alpha = byte.is_ascii_alphabetic();
        let digit = byte.is_ascii_digit();
        let underscore = byte == b'_';
        let colon = byte == b':';
        let mut class = 0;
        if alpha || underscore || colon {
            class |= METRIC_NAME_START;
        }
        if alpha || digit || underscore || colon {
            class |= METRIC_NAME_BYTE;
        }
        if alpha || underscore {
            class |= LABEL_NAME_START;
        }
        if alpha || digit || underscore {
            class |= LABEL_NAME_BYTE;
        }
        table[b] = class;
        b += 1;
    }
    table
};

/// `[a-zA-Z_:]`: bytes that may start a metric name.
fn is_metric_name_start(b: u8) -> bool {
    NAME_CLASSES[usize::from(b)] & METRIC_NAME_START != 0
}

/// `[a-zA-Z0-9_:]`: bytes that may continue a metric name.
fn is_metric_name_byte(b: u8) -> bool {
    NAME_CLASSES[usize::from(b)] & METRIC_NAME_BYTE != 0
}

/// `[a-zA-Z_]`: bytes that may start a label name.
fn is_label_name_start(b: u8) -> bool {
    NAME_CLASSES[usize::from(b)] & LABEL_NAME_START != 0
}

/// `[a-zA-Z0-9_]`: bytes that may continue a label name.
fn is_label_name_byte(b: u8) -> bool {
    NAME_CLASSES[usize::from(b)] & LABEL_NAME_BYTE != 0
}

/// The end of the label name whose rest starts at `pos`.
fn scan_label_name_rest(bytes: &[u8], pos: usize) -> usize {
    let rest = bytes.get(pos..).unwrap_or_default();
    pos + rest
        .iter()
        .position(|&b| !is_label_name_byte(b))
        .unwrap_or(rest.len())
}

/// `a == b`, with short slices compared a word at a time in registers
/// rather than by a call to `memcmp`: names and label values are short.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    let word = |bytes: &[u8], at: usize| {
        let mut word = [0; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(word)
    };
    let half = |bytes: &[u8], at: usize| {
        let mut half = [0; 4];
        half.copy_from_slice(&bytes[at..at + 4]);
        u32::from_ne_bytes(half)
    };
    if (8..=16).contains(&len) {
        word(a, 0) == word(b, 0) && word(a, len - 8) == word(b, len - 8)
    } else if (4..8).contains(&len) {
        half(a, 0) == half(b, 0) && half(a, len - 4) == half(b, len - 4)
    } else if len < 4 {
        a.iter().zip(b).all(|(x, y)| x == y)
    } else {
        a == b
    }
}

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Label values shorter than this are searched a word at a time; memchr's
/// vector search costs more to set up than it saves on the few bytes of a
/// typical value.
const SHORT_SEARCH_BYTES: usize = 64;

/// The offset of the first `"` or `\` at or after `pos`.
#[inline]
fn find_quote_or_backslash(bytes: &[u8], pos: usize) -> Option<usize> {
    let mut at = pos;
    let limit = pos.saturating_add(SHORT_SEARCH_BYTES);
    while at < limit {
        let Some(chunk) = bytes.get(at..at + 8) else {
            // Fewer than eight bytes are left.
            let rest = bytes.get(at..)?;
            return rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .map(|i| at + i);
        };
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // The classic zero-byte test on `word` XOR each byte sought; the
        // lowest flagged byte is exact (only bytes above a match can be
        // flagged falsely), and little-endian order makes it the first.
        let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        let found = zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    // A long value: memchr's vector search pays off.
    memchr2(b'"', b'\\', bytes.get(at..)?).map(|i| at + i)
}

/// Where a line starts, for turning byte offsets into positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePos {
    /// The line number, from 1.
    pub line: u32,
    /// The byte offset of the line's first byte in the input.
    pub start: usize,
}

/// What a [`Parser`] carries from one piece of an input to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResumeState {
    /// The number of the next line.
    pub(crate) line: u32,
    /// Whether `# EOF` was seen.
    pub(crate) saw_eof: bool,
    /// Whether nothing more is read (content after `# EOF`).
    pub(crate) finished: bool,
}

impl ResumeState {
    /// The state at the start of an input.
    pub(crate) const START: ResumeState = ResumeState {
        line: 1,
        saw_eof: false,
        finished: false,
    };
}

/// A failure inside one line: the byte offset within the line and the kind.
type LineResult<T> = Result<T, (usize, ErrorKind)>;

/// The streaming parser: yields each line of an exposition as an [`Entry`].
///
/// After an error it goes on with the next line, so a caller can collect
/// every error of an input in one pass.
#[derive(Debug)]
pub struct Parser<'a> {
    src: &'a str,
    format: Format,
    limits: Limits,
    /// Start of the next line.
    pos: usize,
    /// Number of the next line.
    line: u32,
    /// Set once the input is exhausted or a fatal error was reported.
    finished: bool,
    /// Set after `# EOF`.
    saw_eof: bool,
    /// Whether `src` ends the input; false for a piece of a longer input
    /// read piece by piece ([`Parser::resume`]), whose end is no error.
    at_end: bool,
    /// The metric name of the last sample line: consecutive lines mostly
    /// share it, and comparing is cheaper than scanning it again.
    last_name: &'a str,
    /// The label names of the last label set read by
    /// [`Parser::scan_simple_labels`], in order: valid and distinct. Lines
    /// of one family mostly repeat them, and comparing is cheaper than
    /// scanning them and checking them for duplicates again.
    last_label_names: Vec<&'a [u8]>,
    /// Where each label of the current line lies: the sample's labels,
    /// then the exemplar's. Used to find duplicate names, and read by the
    /// family builder so that it need not scan the labels again. Reused so
    /// a line allocates nothing.
    label_spans: Vec<LabelSpan>,
}

/// Where one label lies in its line (byte offsets), as the lexer found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LabelSpan {
    pub(crate) name_start: usize,
    pub(crate) name_end: usize,
    /// The value's first byte, just after its opening quote.
    pub(crate) value_start: usize,
    /// The value's closing quote.
    pub(crate) value_end: usize,
    /// Whether the value holds a backslash escape.
    pub(crate) escaped: bool,
}

impl LabelSpan {
    /// The label name.
    pub(crate) fn name<'a>(&self, line: &'a str) -> &'a str {
        &line[self.name_start..self.name_end]
    }

    /// The value as written, escapes undecoded.
    pub(crate) fn raw_value<'a>(&self, line: &'a str) -> &'a str {
        &line[self.value_start..self.value_end]
    }

    /// The unescaped value.
    pub(crate) fn value<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let raw = self.raw_value(line);
        if self.escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        }
    }
}

impl<'a> Parser<'a> {
    /// A parser over `input` in the given format.
    ///
    /// Input that is not UTF-8 yields one [`ErrorKind::InvalidUtf8`] error at
    /// the first bad byte and nothing else.
    pub fn new(input: &'a [u8], format: Format, limits: Limits) -> Result<Parser<'a>, ParseError> {
        let src = std::str::from_utf8(input).map_err(|e| {
            let valid = &input[..e.valid_up_to()];
            // The prefix is valid UTF-8 by the error's definition.
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
            ParseError {
                line: line_number(valid.matches('\n').count()),
                column: column_number(valid[line_start..].chars().count()),
                kind: ErrorKind::InvalidUtf8,
            }
        })?;
        Ok(Parser {
            src,
            format,
            limits,
            pos: 0,
            line: 1,
            finished: false,
            saw_eof: false,
            at_end: true,
            last_name: "",
            last_label_names: Vec::new(),
            label_spans: Vec::new(),
        })
    }

    /// A parser over `src`, the next piece of an input read piece by
    /// piece, going on where the parser of the previous piece stopped
    /// (`state`, from [`Parser::resume_state`]). `src` is whole lines,
    /// each with its newline, unless `at_end`: the last piece, which may
    /// end without one (or be empty) and gets the errors of an input's end.
    /// Line numbers go on; byte offsets ([`LinePos::start`]) are in `src`.
    pub(crate) fn resume(
        src: &'a str,
        format: Format,
        limits: Limits,
        state: ResumeState,
        at_end: bool,
    ) -> Parser<'a> {
        Parser {
            src,
            format,
            limits,
            pos: 0,
            line: state.line,
            finished: state.finished,
            saw_eof: state.saw_eof,
            at_end,
            last_name: "",
            last_label_names: Vec::new(),
            label_spans: Vec::new(),
        }
    }

    /// Where this parser stopped, for [`Parser::resume`] on the next piece.
    pub(crate) fn resume_state(&self) -> ResumeState {
        ResumeState {
            line: self.line,
            saw_eof: self.saw_eof,
            finished: self.finished,
        }
    }

    /// The next entry with the position of its line, or `None` at the end.
    pub fn next_entry(&mut self) -> Option<Result<(Entry<'a>, LinePos), ParseError>> {
        loop {
            if self.finished {
                return None;
            }
            let bytes = self.src.as_bytes();
            if self.pos >= bytes.len() {
                if !self.at_end {
                    // The input goes on in the next piece.
                    return None;
                }
                self.finished = true;
                if self.format == Format::OpenMetrics && !self.saw_eof {
                    return Some(Err(self.error_at_end(ErrorKind::MissingEof)));
                }
                return None;
            }
            let start = self.pos;
            let pos = LinePos {
                line: self.line,
                start,
            };
            let (end, has_newline) = match memchr(b'\n', &bytes[start..]) {
                Some(i) => (start + i, true),
                None => (bytes.len(), false),
            };
            self.pos = end + 1;
            self.line = self.line.saturating_add(1);
            let line = &self.src[start..end];

            if self.saw_eof {
                self.finished = true;
                return Some(Err(make_error(
                    self.src,
                    pos,
                    0,
                    ErrorKind::ContentAfterEof,
                )));
            }
            if line.len() > self.limits.max_line_bytes {
                return Some(Err(make_error(
                    self.src,
                    pos,
                    self.limits.max_line_bytes,
                    ErrorKind::LineTooLong {
                        limit: self.limits.max_line_bytes,
                    },
                )));
            }
            let result = self.parse_line(line);
            let missing_newline = !has_newline && !matches!(result, Ok(Some(Entry::Eof)));
            if missing_newline {
                // Report the line's own error first; the missing newline
                // comes with the next call.
                self.pos = bytes.len() + 1;
                self.finished = true;
                let kind = match self.format {
                    Format::Text => ErrorKind::MissingFinalNewline,
                    Format::OpenMetrics => ErrorKind::MissingEof,
                };
                let newline_error = make_error(self.src, pos, line.len(), kind);
                return Some(match result {
                    Err((offset, kind)) => Err(make_error(self.src, pos, offset, kind)),
                    Ok(_) => Err(newline_error),
                });
            }
            match result {
                Ok(Some(entry)) => return Some(Ok((entry, pos))),
                Ok(None) => continue,
                Err((offset, kind)) => return Some(Err(make_error(self.src, pos, offset, kind))),
            }
        }
    }

    fn error_at_end(&self, kind: ErrorKind) -> ParseError {
        // Only reached when the input is empty or ends with a newline: the
        // position is the start of the line after the last one.
        ParseError {
            line: self.line,
            column: 1,
            kind,
        }
    }

    /// Parses one line without its newline. `Ok(None)` is a line that
    /// carries nothing (a blank line or a plain comment in text format).
    // Inlined, as `parse_sample`, so that the entry is built in place
    // rather than copied out of each call.
    #[inline]
    fn parse_line(&mut self, line: &'a str) -> LineResult<Option<Entry<'a>>> {
        self.label_spans.clear();
        let bytes = line.as_bytes();
        match self.format {
            Format::Text => {
                let pos = skip_blanks(bytes, 0);
                if pos == bytes.len() {
                    return Ok(None);
                }
                if bytes[pos] == b'#' {
                    return self.parse_text_comment(line, pos + 1);
                }
                self.parse_sample(line, pos).map(|s| Some(Entry::Sample(s)))
            }
            Format::OpenMetrics => {
                if bytes.is_empty() {
                    return Err((
                        0,
                        ErrorKind::Unexpected {
                            expected: "metric name or \"#\" (OpenMetrics has no blank lines)",
                            found: Found::EndOfLine,
                        },
                    ));
                }
                if bytes[0] == b'#' {
                    return self.parse_openmetrics_comment(line).map(Some);
                }
                self.parse_sample(line, 0).map(|s| Some(Entry::Sample(s)))
            }
        }
    }

    /// A text-format comment; `pos` is just after `#`.
    fn parse_text_comment(&mut self, line: &'a str, pos: usize) -> LineResult<Option<Entry<'a>>> {
        let bytes = line.as_bytes();
        let keyword_start = skip_blanks(bytes, pos);
        let mut keyword_end = keyword_start;
        while keyword_end < bytes.len() && bytes[keyword_end] != b' ' && bytes[keyword_end] != b'\t'
        {
            keyword_end += 1;
        }
        let keyword = &line[keyword_start..keyword_end];
        let is_help = keyword == "HELP";
        if !is_help && keyword != "TYPE" {
            // Any other comment carries nothing.
            return Ok(None);
        }
        let name_start = skip_blanks(bytes, keyword_end);
        let name_end = scan_metric_name(bytes, name_start, "metric name")?;
        let name = &line[name_start..name_end];
        if name_end < bytes.len() && bytes[name_end] != b' ' && bytes[name_end] != b'\t' {
            return Err((name_end, ErrorKind::InvalidMetricName));
        }
        let rest_start = skip_blanks(bytes, name_end);
        if is_help {
            let help = unescape_help(line, rest_start, Format::Text)?;
            return Ok(Some(Entry::Help { name, help }));
        }
        let mut type_end = rest_start;
        while type_end < bytes.len() && bytes[type_end] != b' ' && bytes[type_end] != b'\t' {
            type_end += 1;
        }
        let word = &line[rest_start..type_end];
        if word.is_empty() {
            return Err((
                rest_start,
                ErrorKind::Unexpected {
                    expected: "metric type",
                    found: Found::EndOfLine,
                },
            ));
        }
        let metric_type = text_type(word).ok_or_else(|| {
            (
                rest_start,
                ErrorKind::UnknownType(
                    word.to_owned(),
                    "counter, gauge, histogram, summary, untyped",
                ),
            )
        })?;
        let trailing = skip_blanks(bytes, type_end);
        if trailing != bytes.len() {
            return Err((
                trailing,
                ErrorKind::Unexpected {
                    expected: "end of line after the type",
                    found: found_at(line, trailing),
                },
            ));
        }
        Ok(Some(Entry::Type { name, metric_type }))
    }

    /// An OpenMetrics comment: `# HELP`, `# TYPE`, `# UNIT` or `# EOF`.
    fn parse_openmetrics_comment(&mut self, line: &'a str) -> LineResult<Entry<'a>> {
        let bytes = line.as_bytes();
        if line == "# EOF" {
            self.saw_eof = true;
            return Ok(Entry::Eof);
        }
        let keyword = if bytes.len() >= 6
            && bytes[1] == b' '
            && bytes[6..].first().is_none_or(|&b| b == b' ')
        {
            &line[2..6]
        } else {
            ""
        };
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            let found = if bytes.len() > 1 && bytes[1] != b' ' {
                found_at(line, 1)
            } else {
                found_at(line, 2)
            };
            let offset = if bytes.len() > 1 && bytes[1] != b' ' {
                1
            } else {
                2
            };
            return Err((
                offset,
                ErrorKind::Unexpected {
                    expected: "\"# HELP\", \"# TYPE\", \"# UNIT\" or \"# EOF\" (OpenMetrics has no other comments)",
                    found,
                },
            ));
        }
        let name_start = 7;
        let name_end = scan_metric_name(bytes, name_start, "metric name")?;
        let name = &line[name_start..name_end];
        if name_end == bytes.len() {
            // Every metadata line has a space after the name, even when the
            // help text or unit after it is empty.
            return Err((
                name_end,
                ErrorKind::Unexpected {
                    expected: match keyword {
                        "HELP" => "space and help text",
                        "TYPE" => "space and metric type",
                        _ => "space and unit",
                    },
                    found: Found::EndOfLine,
                },
            ));
        }
        if bytes[name_end] != b' ' {
            return Err((name_end, ErrorKind::InvalidMetricName));
        }
        let rest_start = name_end + 1;
        let rest = &line[rest_start..];
        match keyword {
            "HELP" => Ok(Entry::Help {
                name,
                help: unescape_help(line, rest_start, Format::OpenMetrics)?,
            }),
            "TYPE" => {
                let metric_type = openmetrics_type(rest).ok_or_else(|| {
                    (
                        rest_start,
                        ErrorKind::UnknownType(
                            rest.to_owned(),
                            "counter, gauge, histogram, gaugehistogram, stateset, info, summary, unknown",
                        ),
                    )
                })?;
                Ok(Entry::Type { name, metric_type })
            }
            _ => {
                // A unit is a metric-name-like word; empty means no unit.
                if let Some(bad) = rest.bytes().position(|b| !is_metric_name_byte(b)) {
                    return Err((
                        rest_start + bad,
                        ErrorKind::Unexpected {
                            expected: "unit made of [a-zA-Z0-9_:]",
                            found: found_at(line, rest_start + bad),
                        },
                    ));
                }
                Ok(Entry::Unit { name, unit: rest })
            }
        }
    }

    /// A sample line starting at `start` (after any leading blanks).
    #[inline(always)]
    fn parse_sample(&mut self, line: &'a str, start: usize) -> LineResult<Sample<'a>> {
        let bytes = line.as_bytes();
        let text = self.format == Format::Text;
        // Consecutive lines mostly repeat the last line's name: comparing
        // is cheaper than scanning it again, and it is a valid name.
        let repeats_last_name = !self.last_name.is_empty()
            && bytes[start..]
                .strip_prefix(self.last_name.as_bytes())
                .is_some_and(|rest| rest.first().is_none_or(|&b| !is_metric_name_byte(b)));
        let name_end = if repeats_last_name {
            start + self.last_name.len()
        } else {
            scan_metric_name(bytes, start, "metric name")?
        };
        let name = &line[start..name_end];
        self.last_name = name;
        let mut pos = name_end;
        if text {
            // The text format allows blanks between name and labels.
            let after = skip_blanks(bytes, pos);
            if after < bytes.len() && bytes[after] == b'{' {
                pos = after;
            }
        }
        let has_braces = pos < bytes.len() && bytes[pos] == b'{';
        let labels = if has_braces {
            let (labels, end) = self.scan_labels(line, pos)?;
            pos = end;
            labels
        } else {
            RawLabels {
                text: "",
                offset: pos,
                len: 0,
            }
        };
        // Value separator: blanks in text (none needed after `}`), exactly
        // one space in OpenMetrics.
        let value_follows_brace =
            text && has_braces && pos < bytes.len() && bytes[pos] != b' ' && bytes[pos] != b'\t';
        if !value_follows_brace {
            pos = self.expect_separator(line, pos, "space before the value")?;
        }
        let value_start = pos;
        let value_end = token_end(bytes, pos);
        let value_token = &line[value_start..value_end];
        let value = parse_go_float(value_token).ok_or_else(|| {
            if value_token.is_empty() {
                (
                    value_start,
                    ErrorKind::Unexpected {
                        expected: "value",
                        found: found_at(line, value_start),
                    },
                )
            } else {
                (value_start, ErrorKind::InvalidValue(value_token.to_owned()))
            }
        })?;
        pos = value_end;
        let mut sample = Sample {
            name,
            labels,
            value,
            timestamp_ms: None,
            exemplar: None,
            line,
            value_offset: value_start,
            exemplar_offset: 0,
        };
        if text {
            pos = skip_blanks(bytes, pos);
            if pos == bytes.len() {
                return Ok(sample);
            }
            let ts_end = token_end(bytes, pos);
            let token = &line[pos..ts_end];
            sample.timestamp_ms = Some(parse_go_int(token).ok_or_else(|| {
                if token.starts_with('#') {
                    (
                        pos,
                        ErrorKind::ExemplarNotAllowed(
                            "the text format 0.0.4 has no exemplars; use OpenMetrics",
                        ),
                    )
                } else {
                    (
                        pos,
                        ErrorKind::InvalidTimestamp(
                            token.to_owned(),
                            "the text format takes integer milliseconds since the Unix epoch",
                        ),
                    )
                }
            })?);
            let trailing = skip_blanks(bytes, ts_end);
            if trailing != bytes.len() {
                return Err((
                    trailing,
                    ErrorKind::Unexpected {
                        expected: "end of line after the timestamp",
                        found: found_at(line, trailing),
                    },
                ));
            }
            return Ok(sample);
        }
        // OpenMetrics: [SP timestamp] [SP # SP exemplar]
        if pos == bytes.len() {
            return Ok(sample);
        }
        pos = self.expect_separator(line, pos, "space")?;
        if bytes[pos] != b'#' {
            let ts_end = token_end(bytes, pos);
            let token = &line[pos..ts_end];
            sample.timestamp_ms = Some(parse_openmetrics_timestamp_ms(token).ok_or_else(|| {
                (
                    pos,
                    ErrorKind::InvalidTimestamp(
                        token.to_owned(),
                        "OpenMetrics takes seconds since the Unix epoch",
                    ),
                )
            })?);
            pos = ts_end;
            if pos == bytes.len() {
                return Ok(sample);
            }
            pos = self.expect_separator(line, pos, "space")?;
            if bytes[pos] != b'#' {
                return Err((
                    pos,
                    ErrorKind::Unexpected {
                        expected: "\"#\" and an exemplar, or end of line",
                        found: found_at(line, pos),
                    },
                ));
            }
        }
        sample.exemplar_offset = pos;
        sample.exemplar = Some(self.scan_exemplar(line, pos)?);
        Ok(sample)
    }

    /// Expects the separator of the format at `pos` and returns the offset
    /// of the next token.
    fn expect_separator(
        &self,
        line: &str,
        pos: usize,
        expected: &'static str,
    ) -> LineResult<usize> {
        let bytes = line.as_bytes();
        match self.format {
            Format::Text => {
                let next = skip_blanks(bytes, pos);
                if next == pos || next == bytes.len() {
                    return Err((
                        next,
                        ErrorKind::Unexpected {
                            expected: if next == pos { expected } else { "value" },
                            found: found_at(line, next),
                        },
                    ));
                }
                Ok(next)
            }
            Format::OpenMetrics => {
                if pos >= bytes.len() || bytes[pos] != b' ' {
                    return Err((
                        pos,
                        ErrorKind::Unexpected {
                            expected,
                            found: found_at(line, pos),
                        },
                    ));
                }
                if pos + 1 >= bytes.len() || bytes[pos + 1] == b' ' {
                    return Err((
                        pos + 1,
                        ErrorKind::Unexpected {
                            expected: "a token after a single space",
                            found: found_at(line, pos + 1),
                        },
                    ));
                }
                Ok(pos + 1)
            }
        }
    }

    /// `# {labels} value [timestamp]` at `pos` (the `#`), up to end of line.
    fn scan_exemplar(&mut self, line: &'a str, pos: usize) -> LineResult<RawExemplar<'a>> {
        let bytes = line.as_bytes();
        let mut pos = pos + 1;
        if pos >= bytes.len() || bytes[pos] != b' ' {
            return Err((
                pos,
                ErrorKind::Unexpected {
                    expected: "space after \"#\"",
                    found: found_at(line, pos),
                },
            ));
        }
        pos += 1;
        if pos >= bytes.len() || bytes[pos] != b'{' {
            return Err((
                pos,
                ErrorKind::Unexpected {
                    expected: "\"{\" opening the exemplar's labels",
                    found: found_at(line, pos),
                },
            ));
        }
        let (labels, end) = self.scan_labels(line, pos)?;
        let label_chars: usize = labels
            .iter()
            .map(|l| l.name.chars().count() + l.value.chars().count())
            .sum();
        if label_chars > 128 {
            return Err((pos, ErrorKind::ExemplarTooLong(label_chars)));
        }
        pos = self.expect_separator(line, end, "space before the exemplar value")?;
        let value_end = token_end(bytes, pos);
        let token = &line[pos..value_end];
        let value = parse_go_float(token)
            .ok_or_else(|| (pos, ErrorKind::InvalidValue(token.to_owned())))?;
        pos = value_end;
        let mut timestamp = None;
        if pos < bytes.len() {
            pos = self.expect_separator(line, pos, "space")?;
            let ts_end = token_end(bytes, pos);
            let token = &line[pos..ts_end];
            timestamp = Some(
                parse_go_float(token)
                    .filter(|t| t.is_finite())
                    .ok_or_else(|| {
                        (
                            pos,
                            ErrorKind::InvalidTimestamp(
                                token.to_owned(),
                                "OpenMetrics takes seconds since the Unix epoch",
                            ),
                        )
                    })?,
            );
            if ts_end != bytes.len() {
                return Err((
                    ts_end,
                    ErrorKind::Unexpected {
                        expected: "end of line after the exemplar",
                        found: found_at(line, ts_end),
                    },
                ));
            }
        }
        Ok(RawExemplar {
            labels,
            value,
            timestamp,
        })
    }

    /// Checks `{...}` starting at `open` and returns the labels and the
    /// offset just after `}`. The labels' spans are appended to
    /// `label_spans`.
    fn scan_labels(&mut self, line: &'a str, open: usize) -> LineResult<(RawLabels<'a>, usize)> {
        let bytes = line.as_bytes();
        // The spans of this label set; an exemplar's follow the sample's.
        let first = self.label_spans.len();
        if let Some(end) = self.scan_simple_labels(bytes, open) {
            let labels = RawLabels {
                text: &line[open + 1..end - 1],
                offset: open + 1,
                len: self.label_spans.len() - first,
            };
            return Ok((labels, end));
        }
        self.label_spans.truncate(first);
        let text = self.format == Format::Text;
        let blanks = |pos: usize| if text { skip_blanks(bytes, pos) } else { pos };
        let mut pos = blanks(open + 1);
        let mut expect_more = false;
        loop {
            let n_labels = self.label_spans.len() - first;
            if pos >= bytes.len() {
                return Err((
                    pos,
                    ErrorKind::Unexpected {
                        expected: if n_labels == 0 || expect_more {
                            "label name or \"}\""
                        } else {
                            "\",\" or \"}\""
                        },
                        found: Found::EndOfLine,
                    },
                ));
            }
            if bytes[pos] == b'}' {
                if expect_more && !text {
                    // OpenMetrics has no trailing comma.
                    return Err((
                        pos,
                        ErrorKind::Unexpected {
                            expected: "label name (OpenMetrics allows no trailing comma)",
                            found: Found::Char('}'),
                        },
                    ));
                }
                break;
            }
            if n_labels != 0 && !expect_more {
                return Err((
                    pos,
                    ErrorKind::Unexpected {
                        expected: "\",\" or \"}\"",
                        found: found_at(line, pos),
                    },
                ));
            }
            // Label name.
            let name_start = pos;
            if !is_label_name_start(bytes[pos]) {
                return Err((
                    pos,
                    ErrorKind::Unexpected {
                        expected: "label name or \"}\"",
                        found: found_at(line, pos),
                    },
                ));
            }
            pos = scan_label_name_rest(bytes, pos + 1);
            // Compared as bytes: slicing the `str` would check for character
            // boundaries, and a name is ASCII.
            let name = &bytes[name_start..pos];
            if name == b"__name__" {
                let name = line[name_start..pos].to_owned();
                return Err((name_start, ErrorKind::ReservedLabelName(name)));
            }
            if self.label_spans[first..]
                .iter()
                .any(|span| &bytes[span.name_start..span.name_end] == name)
            {
                let name = line[name_start..pos].to_owned();
                return Err((name_start, ErrorKind::DuplicateLabelName(name)));
            }
            if n_labels >= self.limits.max_labels_per_series {
                return Err((
                    name_start,
                    ErrorKind::TooManyLabels {
                        limit: self.limits.max_labels_per_series,
                    },
                ));
            }
            let name_end = pos;
            pos = blanks(pos);
            if pos >= bytes.len() || bytes[pos] != b'=' {
                return Err((
                    pos,
                    ErrorKind::Unexpected {
                        expected: "\"=\"",
                        found: found_at(line, pos),
                    },
                ));
            }
            pos = blanks(pos + 1);
            if pos >= bytes.len() || bytes[pos] != b'"' {
                return Err((
                    pos,
                    ErrorKind::Unexpected {
                        expected: "\"\\\"\" opening the label value",
                        found: found_at(line, pos),
                    },
                ));
            }
            let quote = pos;
            pos += 1;
            let value_start = pos;
            let mut escaped = false;
            let value_end = loop {
                match find_quote_or_backslash(bytes, pos) {
                    None => return Err((quote, ErrorKind::UnterminatedLabelValue)),
                    Some(i) if bytes[i] == b'"' => break i,
                    Some(backslash) => {
                        escaped = true;
                        match bytes.get(backslash + 1) {
                            Some(b'\\' | b'"' | b'n') => pos = backslash + 2,
                            // OpenMetrics: a backslash before any other
                            // character is that backslash and character.
                            Some(_) if !text => pos = backslash + 2,
                            Some(_) => {
                                let c = line[backslash + 1..].chars().next().unwrap_or('\\');
                                return Err((
                                    backslash,
                                    ErrorKind::InvalidEscape(c, "\\\\, \\\" and \\n"),
                                ));
                            }
                            None => return Err((quote, ErrorKind::UnterminatedLabelValue)),
                        }
                    }
                }
            };
            self.label_spans.push(LabelSpan {
                name_start,
                name_end,
                value_start,
                value_end,
                escaped,
            });
            pos = blanks(value_end + 1);
            expect_more = false;
            if pos < bytes.len() && bytes[pos] == b',' {
                expect_more = true;
                pos = blanks(pos + 1);
            }
        }
        let labels = RawLabels {
            text: &line[open + 1..pos],
            offset: open + 1,
            len: self.label_spans.len() - first,
        };
        Ok((labels, pos + 1))
    }

    /// The common case of [`Parser::scan_labels`], in one tight pass:
    /// `name="value"` pairs joined by single commas, without blanks, escapes
    /// or a trailing comma, and valid. Returns the offset just after `}`;
    /// `None` for anything else, which [`Parser::scan_labels`] then reads
    /// (and reports) in full.
    fn scan_simple_labels(&mut self, bytes: &'a [u8], open: usize) -> Option<usize> {
        let first = self.label_spans.len();
        let mut pos = open + 1;
        if *bytes.get(pos)? == b'}' {
            return Some(pos + 1);
        }
        // Whether every name so far is the last label set's at its place.
        let mut as_last_set = true;
        loop {
            let name_start = pos;
            let n_labels = self.label_spans.len() - first;
            let last_name = self.last_label_names.get(n_labels).copied();
            let name_end = match last_name {
                // The name of the last set at this place again: valid, and
                // distinct from the others so far, which are the last set's.
                Some(last)
                    if as_last_set
                        && bytes.get(pos + last.len()) == Some(&b'=')
                        && bytes
                            .get(pos..pos + last.len())
                            .is_some_and(|name| same_bytes(name, last)) =>
                {
                    pos + last.len()
                }
                _ => {
                    as_last_set = false;
                    if !is_label_name_start(*bytes.get(pos)?) {
                        return None;
                    }
                    let name_end = scan_label_name_rest(bytes, pos + 1);
                    let name = &bytes[name_start..name_end];
                    if name == b"__name__"
                        || n_labels >= self.limits.max_labels_per_series
                        || self.label_spans[first..]
                            .iter()
                            .any(|span| same_bytes(&bytes[span.name_start..span.name_end], name))
                    {
                        return None;
                    }
                    name_end
                }
            };
            if bytes.get(name_end..name_end + 2)? != b"=\"" {
                return None;
            }
            let value_start = name_end + 2;
            let value_end = find_quote_or_backslash(bytes, value_start)?;
            if bytes[value_end] != b'"' {
                return None;
            }
            self.label_spans.push(LabelSpan {
                name_start,
                name_end,
                value_start,
                value_end,
                escaped: false,
            });
            match *bytes.get(value_end + 1)? {
                b'}' => {
                    let spans = &self.label_spans[first..];
                    if !as_last_set || spans.len() != self.last_label_names.len() {
                        self.last_label_names.clear();
                        self.last_label_names.extend(
                            spans
                                .iter()
                                .map(|span| &bytes[span.name_start..span.name_end]),
                        );
                    }
                    return Some(value_end + 2);
                }
                b',' if bytes
                    .get(value_end + 2)
                    .is_some_and(|&b| is_label_name_start(b)) =>
                {
                    pos = value_end + 2;
                }
                _ => return None,
            }
        }
    }

    /// The spans of the labels of the sample line last returned, then of
    /// its exemplar's; empty after any other line.
    pub(crate) fn label_spans(&self) -> &[LabelSpan] {
        &self.label_spans
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<(Entry<'a>, LinePos), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry()
    }
}

/// Scans a metric name starting at `start`; returns its end.
fn scan_metric_name(bytes: &[u8], start: usize, expected: &'static str) -> LineResult<usize> {
    if start >= bytes.len() || !is_metric_name_start(bytes[start]) {
        let found = match bytes.get(start) {
            None => Found::EndOfLine,
            Some(_) => Found::Char(char_at_bytes(bytes, start)),
        };
        let kind = match bytes.get(start) {
            Some(b) if b.is_ascii_digit() => ErrorKind::InvalidMetricName,
            _ => ErrorKind::Unexpected { expected, found },
        };
        return Err((start, kind));
    }
    let rest = &bytes[start + 1..];
    let len = rest
        .iter()
        .position(|&b| !is_metric_name_byte(b))
        .unwrap_or(rest.len());
    Ok(start + 1 + len)
}

/// The end of the token at `pos`: the next blank or the end of the line.
fn token_end(bytes: &[u8], pos: usize) -> usize {
    let mut end = pos;
    // A word at a time while one fits: a value is a dozen bytes or so.
    while let Some(chunk) = bytes.get(end..end + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        let found = zero_byte(word ^ (ONES * u64::from(b' ')))
            | zero_byte(word ^ (ONES * u64::from(b'\t')));
        if found != 0 {
            return end + found.trailing_zeros() as usize / 8;
        }
        end += 8;
    }
    while end < bytes.len() && bytes[end] != b' ' && bytes[end] != b'\t' {
        end += 1;
    }
    end
}

fn char_at_bytes(bytes: &[u8], pos: usize) -> char {
    // `bytes` comes from a `&str` and `pos` is a char boundary at every
    // call site (it follows ASCII bytes), so decoding cannot fail.
    std::str::from_utf8(&bytes[pos..])
        .ok()
        .and_then(|s| s.chars().next())
        .unwrap_or('\u{fffd}')
}

fn found_at(line: &str, pos: usize) -> Found {
    match line.get(pos..).and_then(|s| s.chars().next()) {
        Some(c) => Found::Char(c),
        None => Found::EndOfLine,
    }
}

/// Unescapes the help text at `start`; text allows `\\` and `\n`,
/// OpenMetrics also `\"`.
fn unescape_help(line: &str, start: usize, format: Format) -> LineResult<Cow<'_, str>> {
    let rest = &line[start..];
    if memchr(b'\\', rest.as_bytes()).is_none() {
        return Ok(Cow::Borrowed(rest));
    }
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match (chars.next(), format) {
            (Some((_, '\\')), _) => out.push('\\'),
            (Some((_, 'n')), _) => out.push('\n'),
            (Some((_, '"')), Format::OpenMetrics) => out.push('"'),
            (Some((_, other)), Format::Text) => {
                return Err((start + i, ErrorKind::InvalidEscape(other, "\\\\ and \\n")));
            }
            // OpenMetrics keeps a backslash before any other character.
            (Some((_, other)), Format::OpenMetrics) => {
                out.push('\\');
                out.push(other);
            }
            (None, _) => {
                return Err((
                    start + i,
                    ErrorKind::Unexpected {
                        expected: "escaped character after \"\\\"",
                        found: Found::EndOfLine,
                    },
                ));
            }
        }
    }
    Ok(Cow::Owned(out))
}

fn text_type(word: &str) -> Option<MetricType> {
    // Prometheus' own text parser takes the type word in any case.
    [
        ("counter", MetricType::Counter),
        ("gauge", MetricType::Gauge),
        ("histogram", MetricType::Histogram),
        ("summary", MetricType::Summary),
        ("untyped", MetricType::Unknown),
    ]
    .into_iter()
    .find(|(name, _)| word.eq_ignore_ascii_case(name))
    .map(|(_, t)| t)
}

fn openmetrics_type(word: &str) -> Option<MetricType> {
    Some(match word {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "gaugehistogram" => MetricType::GaugeHistogram,
        "summary" => MetricType::Summary,
        "info" => MetricType::Info,
        "stateset" => MetricType::StateSet,
        "unknown" => MetricType::Unknown,
        _ => return None,
    })
}

/// An OpenMetrics timestamp (seconds, possibly fractional) in milliseconds.
///
/// Plain decimals are read exactly, so that millisecond timestamps survive
/// a round trip through seconds; other number forms go through a float.
fn parse_openmetrics_timestamp_ms(token: &str) -> Option<i64> {
    if let Some(ms) = parse_decimal_seconds_as_ms(token) {
        return Some(ms);
    }
    let seconds = parse_go_float(token)?;
    let ms = (seconds * 1000.0).round();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "range checked just above the cast"
    )]
    (ms.is_finite() && ms.abs() < 9.2e18).then_some(ms as i64)
}

/// `[-+]digits[.digits]` as milliseconds, rounding past the third decimal.
fn parse_decimal_seconds_as_ms(token: &str) -> Option<i64> {
    let (negative, unsigned) = match token.as_bytes().first()? {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let seconds: i64 = int_part.parse().ok()?;
    let mut ms: i64 = 0;
    for digit in frac_part.bytes().chain(std::iter::repeat(b'0')).take(3) {
        ms = ms * 10 + i64::from(digit - b'0');
    }
    if frac_part.as_bytes().get(3).is_some_and(|&d| d >= b'5') {
        ms += 1;
    }
    let total = seconds.checked_mul(1000)?.checked_add(ms)?;
    Some(if negative { -total } else { total })
}

/// Builds a positioned error from a byte offset within a line.
fn make_error(src: &str, pos: LinePos, offset: usize, kind: ErrorKind) -> ParseError {
    let line_text = &src[pos.start..];
    let mut offset = offset.min(line_text.len());
    // A limit can fall inside a character: point at that character.
    while !line_text.is_char_boundary(offset) {
        offset -= 1;
    }
    let column = line_text[..offset].chars().count();
    ParseError {
        line: pos.line,
        column: column_number(column),
        kind,
    }
}

fn line_number(newlines_before: usize) -> u32 {
    u32::try_from(newlines_before + 1).unwrap_or(u32::MAX)
}

fn column_number(chars_before: usize) -> u32 {
    u32::try_from(chars_before + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each line's result through one parser, so that every line follows
    /// the one before, as the label-name cache sees them.
    fn lines_through_one_parser(lines: &[&str], max_labels: usize) -> Vec<Result<String, String>> {
        let input: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let limits = Limits {
            max_labels_per_series: max_labels,
            ..Limits::default()
        };
        let parser = Parser::new(input.as_bytes(), Format::Text, limits).expect("UTF-8");
        parser
            .map(|entry| match entry {
                Ok((Entry::Sample(sample), _)) => Ok(sample
                    .labels
                    .iter()
                    .map(|label| format!("{}={}", label.name, label.value))
                    .collect::<Vec<_>>()
                    .join(",")),
                Ok((other, _)) => Ok(format!("{other:?}")),
                Err(error) => Err(error.to_string()),
            })
            .collect()
    }

    #[test]
    fn labels_after_a_similar_line_are_still_checked() {
        let results = lines_through_one_parser(
            &[
                r#"m{a="1",b="2"} 1"#,
                r#"m{a="1",b="3"} 1"#,
                r#"m{a="1",a="3"} 1"#,
                r#"m{a="1",b="2",a="3"} 1"#,
                r#"m{a="1",bb="2"} 1"#,
                r#"m{a="1",b="2",c="3"} 1"#,
                r#"m{a="1",__name__="x"} 1"#,
                r#"m{a="1",b="2"} 1"#,
                r#"m{a="1",b="x\"y"} 1"#,
                r#"m{b="1",a="2"} 1"#,
                r#"m{a="1",b="2",} 1"#,
            ],
            2,
        );
        let expected: Vec<Result<&str, &str>> = vec![
            Ok("a=1,b=2"),
            Ok("a=1,b=3"),
            Err("3:9: duplicate label name \"a\""),
            Err("4:15: duplicate label name \"a\""),
            Ok("a=1,bb=2"),
            Err("6:15: more than 2 labels in one series"),
            Err("7:9: label name \"__name__\" is reserved"),
            Ok("a=1,b=2"),
            Ok("a=1,b=x\"y"),
            Ok("b=1,a=2"),
            Ok("a=1,b=2"),
        ];
        for (i, (result, expected)) in results.iter().zip(&expected).enumerate() {
            match (result, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "line {}", i + 1),
                (Err(got), Err(want)) => assert!(got.starts_with(want), "line {}: {got}", i + 1),
                _ => panic!("line {}: {result:?}, expected {expected:?}", i + 1),
            }
        }
        assert_eq!(results.len(), expected.len());
    }
}
