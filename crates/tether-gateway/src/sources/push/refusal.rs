//! Why a push request was refused: a reason (a label of
//! `tether_push_refused_total` and an HTTP status) and a one-line message
//! saying what is wrong and what to do.

use axum::http::StatusCode;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The path is no grouping key.
    BadPath,
    /// The body does not parse or decompress.
    Malformed,
    /// A sample carries a timestamp.
    Timestamp,
    /// A name's type differs from the same name's in another group.
    TypeConflict,
    /// A series given twice.
    Duplicate,
    /// A name the gateway writes itself.
    ReservedName,
    /// An aggregated push whose histogram buckets differ from the stored ones.
    AggregateMismatch,
    /// The body, as sent, is over `--push-max-body-bytes`.
    BodyTooLarge,
    /// The body, decompressed, is over `--push-max-decompressed-bytes`.
    DecompressedTooLarge,
    /// Over `--push-max-series-per-push`.
    TooManySeriesInPush,
    /// A name over `--push-max-name-bytes`.
    NameTooLong,
    /// A label value or help over `--push-max-label-value-bytes`.
    ValueTooLong,
    /// A new group past `--push-max-groups`.
    TooManyGroups,
    /// Past `--push-max-series` in all groups.
    TooManySeries,
    /// A `Content-Encoding` other than gzip or snappy.
    UnsupportedEncoding,
    /// The body did not arrive in time.
    BodyTimeout,
    /// Missing or wrong credentials.
    Unauthorized,
    /// Too many failed credentials from the client's address.
    Throttled,
    /// The admin API is off.
    AdminDisabled,
    /// Push bodies in flight are at `--push-max-bytes-in-flight`.
    Busy,
    /// The store could not write (disk full, I/O error).
    StoreFailed,
    /// The gateway is shutting down.
    ShuttingDown,
}

impl Reason {
    /// Every reason, in label order.
    pub(crate) const ALL: [Reason; 22] = [
        Reason::BadPath,
        Reason::Malformed,
        Reason::Timestamp,
        Reason::TypeConflict,
        Reason::Duplicate,
        Reason::ReservedName,
        Reason::AggregateMismatch,
        Reason::BodyTooLarge,
        Reason::DecompressedTooLarge,
        Reason::TooManySeriesInPush,
        Reason::NameTooLong,
        Reason::ValueTooLong,
        Reason::TooManyGroups,
        Reason::TooManySeries,
        Reason::UnsupportedEncoding,
        Reason::BodyTimeout,
        Reason::Unauthorized,
        Reason::Throttled,
        Reason::AdminDisabled,
        Reason::Busy,
        Reason::StoreFailed,
        Reason::ShuttingDown,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::BadPath => "bad_path",
            Reason::Malformed => "malformed",
            Reason::Timestamp => "timestamp",
            Reason::TypeConflict => "type_conflict",
            Reason::Duplicate => "duplicate",
            Reason::ReservedName => "reserved_name",
            Reason::AggregateMismatch => "aggregate_mismatch",
            Reason::BodyTooLarge => "body_too_large",
            Reason::DecompressedTooLarge => "decompressed_too_large",
            Reason::TooManySeriesInPush => "too_many_series_in_push",
            Reason::NameTooLong => "name_too_long",
            Reason::ValueTooLong => "value_too_long",
            Reason::TooManyGroups => "too_many_groups",
            Reason::TooManySeries => "too_many_series",
            Reason::UnsupportedEncoding => "unsupported_encoding",
            Reason::BodyTimeout => "body_timeout",
            Reason::Unauthorized => "unauthorized",
            Reason::Throttled => "throttled",
            Reason::AdminDisabled => "admin_disabled",
            Reason::Busy => "busy",
            Reason::StoreFailed => "store_failed",
            Reason::ShuttingDown => "shutting_down",
        }
    }

    /// The HTTP status it is answered with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Reason::BadPath
            | Reason::Malformed
            | Reason::Timestamp
            | Reason::TypeConflict
            | Reason::Duplicate
            | Reason::ReservedName
            | Reason::AggregateMismatch => StatusCode::BAD_REQUEST,
            Reason::BodyTooLarge
            | Reason::DecompressedTooLarge
            | Reason::TooManySeriesInPush
            | Reason::NameTooLong
            | Reason::ValueTooLong => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::TooManyGroups | Reason::TooManySeries | Reason::Throttled => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Reason::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reason::Unauthorized => StatusCode::UNAUTHORIZED,
            Reason::AdminDisabled => StatusCode::FORBIDDEN,
            Reason::Busy | Reason::StoreFailed | Reason::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Whether the Pushgateway records it as a failed push of the group
    /// (`push_failure_time_seconds`): the body parsed but is inconsistent.
    pub(crate) fn marks_failure(self) -> bool {
        matches!(
            self,
            Reason::Timestamp
                | Reason::TypeConflict
                | Reason::Duplicate
                | Reason::ReservedName
                | Reason::AggregateMismatch
        )
    }
}

/// A refused push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: Reason,
    /// One line: what is wrong and what to do.
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(reason: Reason, message: String) -> Refusal {
        Refusal { reason, message }
    }

    /// A request the credentials check turned away.
    pub(crate) fn denied(denied: crate::credentials::Denied) -> Refusal {
        use crate::credentials::Denied;
        let reason = match denied {
            Denied::Unauthorized => Reason::Unauthorized,
            Denied::Throttled | Denied::Busy => Reason::Throttled,
        };
        Refusal::new(reason, denied.message().to_owned())
    }

    /// The message as the body of an answer: prefixed as the Pushgateway
    /// prefixes inconsistencies, one line.
    pub(crate) fn body(&self) -> String {
        let mut body = if self.reason.marks_failure() {
            format!(
                "pushed metrics are invalid or inconsistent with existing metrics: {}",
                self.message
            )
        } else {
            self.message.clone()
        };
        body.retain(|c| c != '\n' && c != '\r');
        body.push('\n');
        body
    }
}
