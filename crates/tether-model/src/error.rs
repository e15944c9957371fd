//! Errors of this crate: where an exposition is wrong, and why.

use std::fmt;

/// An error in an exposition, with its position.
///
/// Displays as `line:column: message`, the form editors and `tether check`
/// use. Lines and columns count from 1; a column counts characters, not bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {kind}")]
pub struct ParseError {
    /// The line, from 1.
    pub line: u32,
    /// The column in characters, from 1.
    pub column: u32,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// What is wrong with an exposition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The input is not UTF-8.
    #[error("invalid UTF-8: expositions must be UTF-8 text")]
    InvalidUtf8,
    /// A line is longer than the configured limit.
    #[error("line is longer than {limit} bytes: split the value or raise the line length limit")]
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The input does not end with a newline.
    #[error("missing newline at end of input: every line, the last included, must end with \\n")]
    MissingFinalNewline,
    /// A specific token was expected and something else was found.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows here.
        expected: &'static str,
        /// What the input has here.
        found: Found,
    },
    /// A metric name is not `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name: names match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidMetricName,
    /// A label name is not `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("invalid label name: names match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidLabelName,
    /// A label name that only Prometheus itself may set.
    #[error("label name \"{0}\" is reserved")]
    ReservedLabelName(String),
    /// The same label name twice in one label set.
    #[error("duplicate label name \"{0}\"")]
    DuplicateLabelName(String),
    /// A series has more labels than the configured limit.
    #[error("more than {limit} labels in one series: drop labels or raise the label limit")]
    TooManyLabels {
        /// The limit.
        limit: usize,
    },
    /// An escape sequence other than the ones the format allows.
    #[error("invalid escape sequence \"\\{0}\": only {1} are allowed")]
    InvalidEscape(char, &'static str),
    /// A label value without its closing quote.
    #[error("unterminated label value: a closing \" is missing")]
    UnterminatedLabelValue,
    /// A sample value that is not a float.
    #[error("invalid value \"{0}\": expected a float such as 1, -2.5e3, +Inf or NaN")]
    InvalidValue(String),
    /// A timestamp that is not an integer (text) or number (OpenMetrics).
    #[error("invalid timestamp \"{0}\": {1}")]
    InvalidTimestamp(String, &'static str),
    /// A `# TYPE` line with an unknown type.
    #[error("unknown metric type \"{0}\": expected one of {1}")]
    UnknownType(String, &'static str),
    /// A second `# TYPE`, `# HELP` or `# UNIT` line for one family.
    #[error("second {0} line for \"{1}\": give each at most once per family")]
    DuplicateMetadata(&'static str, String),
    /// A `# TYPE` line after samples of that family.
    #[error("{0} line for \"{1}\" after its samples: metadata must come first")]
    MetadataAfterSamples(&'static str, String),
    /// A unit that is not the suffix of its family's name.
    #[error(
        "unit \"{unit}\" is not a suffix of the metric name \"{name}\": name it \"{name}_{unit}\""
    )]
    UnitNotSuffix {
        /// The family name.
        name: String,
        /// The declared unit.
        unit: String,
    },
    /// A sample whose name does not fit its family's type.
    #[error("sample \"{sample}\" does not fit {metric_type} family \"{family}\"{hint}")]
    SampleNameMismatch {
        /// The sample's metric name.
        sample: String,
        /// The family it fell into.
        family: String,
        /// The family's type word.
        metric_type: &'static str,
        /// A hint on the expected names.
        hint: &'static str,
    },
    /// Lines of one series separated by another series (OpenMetrics).
    #[error(
        "lines of series {0} are interleaved with another series: keep each series' lines together"
    )]
    InterleavedSeries(String),
    /// Several points of one series with different timestamps (OpenMetrics).
    #[error(
        "several points of series {0} with different timestamps: tether keeps one point per series, send the latest only"
    )]
    SeveralPoints(String),
    /// A unit on a family type that takes none (OpenMetrics info, stateset).
    #[error(
        "\"{0}\" is an info or stateset metric, which cannot have a unit: remove the # UNIT line"
    )]
    UnitNotAllowed(String),
    /// Samples of one family separated by another family (OpenMetrics).
    #[error("samples of \"{0}\" are interleaved with another family: keep each family together")]
    InterleavedFamily(String),
    /// Two samples with the same name and label set.
    #[error("duplicate series {0}: each label set may appear once per family")]
    DuplicateSeries(String),
    /// A required label is missing (`le` on buckets, `quantile` on quantiles).
    #[error("missing \"{0}\" label on \"{1}\"")]
    MissingLabel(String, String),
    /// A label that must hold a float holds something else.
    #[error("label \"{0}\" must be a float, found \"{1}\"")]
    InvalidLabelFloat(&'static str, String),
    /// A value outside what the type allows (negative counter, NaN count).
    #[error("invalid value for {0}: {1}")]
    ValueOutOfRange(&'static str, &'static str),
    /// Histogram buckets out of order or not cumulative.
    #[error("histogram \"{0}\": {1}")]
    InvalidHistogram(String, &'static str),
    /// Exemplars where the format or the type does not allow them.
    #[error("exemplar not allowed here: {0}")]
    ExemplarNotAllowed(&'static str),
    /// An exemplar whose labels are longer than 128 characters.
    #[error("exemplar labels are {0} characters long: at most 128 are allowed")]
    ExemplarTooLong(usize),
    /// Something follows the OpenMetrics `# EOF` line.
    #[error("content after \"# EOF\": the end marker must be the last line")]
    ContentAfterEof,
    /// The OpenMetrics `# EOF` line is missing.
    #[error("missing \"# EOF\" line: OpenMetrics expositions must end with it")]
    MissingEof,
    /// More series than the configured limit.
    #[error("more than {limit} series: split the input or raise the series limit")]
    TooManySeries {
        /// The limit.
        limit: usize,
    },
    /// More families than the configured limit.
    #[error("more than {limit} metric families: split the input or raise the family limit")]
    TooManyFamilies {
        /// The limit.
        limit: usize,
    },
}

/// What the parser found where it expected something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The end of the line.
    EndOfLine,
    /// The end of the input.
    EndOfInput,
    /// A character.
    Char(char),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::EndOfLine => f.write_str("end of line"),
            Found::EndOfInput => f.write_str("end of input"),
            Found::Char(' ') => f.write_str("space"),
            Found::Char('\t') => f.write_str("tab"),
            Found::Char(c) if c.is_control() => write!(f, "{c:?}"),
            Found::Char(c) => write!(f, "\"{c}\""),
        }
    }
}

/// An error converting to or from the protobuf format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtoError {
    /// The bytes are not a valid protobuf message.
    #[error("invalid protobuf: {0}")]
    Decode(String),
    /// A delimited message is longer than the configured limit.
    #[error("protobuf message of {len} bytes exceeds the {limit}-byte limit")]
    MessageTooLarge {
        /// The declared length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// A delimited stream ends inside a message.
    #[error("protobuf stream ends inside a message: the input is truncated")]
    Truncated,
    /// A family that the model cannot hold (bad name, type without value).
    #[error("invalid metric family \"{name}\": {reason}")]
    InvalidFamily {
        /// The family name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}
