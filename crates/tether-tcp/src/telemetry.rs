//! The metrics of one listener: names, descriptions, and the handles
//! registered once per listener.

use std::io;
use std::sync::Arc;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};

/// Sockets accepted, by listener.
pub const SOCKETS_OPENED_TOTAL: &str = "tether_tcp_sockets_opened_total";
/// Sockets whose connection task ended (normally, by error or by panic), by listener.
pub const SOCKETS_CLOSED_TOTAL: &str = "tether_tcp_sockets_closed_total";
/// Sockets open now, by listener.
pub const SOCKETS_ACTIVE: &str = "tether_tcp_sockets_active";
/// Bytes read from sockets, by listener.
pub const BYTES_READ_TOTAL: &str = "tether_tcp_bytes_read_total";
/// Bytes written to sockets, by listener.
pub const BYTES_WRITTEN_TOTAL: &str = "tether_tcp_bytes_written_total";
/// Failed `accept()` calls that were backed off, by listener and error kind.
pub const ACCEPT_ERRORS_TOTAL: &str = "tether_tcp_accept_errors_total";
/// How long connections stayed open, by listener.
pub const CONNECTION_DURATION_SECONDS: &str = "tether_tcp_connection_duration_seconds";

/// The label that tells listeners apart.
const LISTENER_LABEL: &str = "listener";
/// The label of [`ACCEPT_ERRORS_TOTAL`] that says which error it was.
const KIND_LABEL: &str = "kind";

/// Metadata given to the recorder with each registration.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Describes every metric of this crate (help text and unit) to `recorder`.
///
/// [`ListenerMetrics::new`] calls it; describing twice is harmless.
pub fn describe(recorder: &dyn Recorder) {
    let counters: [(&'static str, Unit, &'static str); 6] = [
        (SOCKETS_OPENED_TOTAL, Unit::Count, "TCP sockets accepted."),
        (
            SOCKETS_CLOSED_TOTAL,
            Unit::Count,
            "TCP sockets closed, whether the connection ended normally, \
             with an error or by a panic.",
        ),
        (
            BYTES_READ_TOTAL,
            Unit::Bytes,
            "Bytes read from TCP sockets.",
        ),
        (
            BYTES_WRITTEN_TOTAL,
            Unit::Bytes,
            "Bytes written to TCP sockets.",
        ),
        (
            ACCEPT_ERRORS_TOTAL,
            Unit::Count,
            "Failed accept() calls that made the listener back off, \
             by kind (emfile, enfile, enobufs, enomem, other).",
        ),
        (SOCKETS_ACTIVE, Unit::Count, "TCP sockets open now."),
    ];
    for (name, unit, help) in counters {
        let key = KeyName::from_const_str(name);
        let help = SharedString::const_str(help);
        if name == SOCKETS_ACTIVE {
            recorder.describe_gauge(key, Some(unit), help);
        } else {
            recorder.describe_counter(key, Some(unit), help);
        }
    }
    recorder.describe_histogram(
        KeyName::from_const_str(CONNECTION_DURATION_SECONDS),
        Some(Unit::Seconds),
        SharedString::const_str("How long TCP connections stayed open, from accept to close."),
    );
}

/// The kinds of accept error that are counted, in the order of
/// [`ListenerMetrics`]'s handles. Each is a label value of
/// [`ACCEPT_ERRORS_TOTAL`]; the set is closed so the label stays bounded.
const ACCEPT_ERROR_KINDS: [&str; 5] = ["emfile", "enfile", "enobufs", "enomem", "other"];

/// `EMFILE`: the process ran out of file descriptors. The same number on
/// Linux, the BSDs and macOS.
const EMFILE: i32 = 24;
/// `ENFILE`: the system ran out of file descriptors (same on all unixes).
const ENFILE: i32 = 23;
/// `ENOMEM` (same on all unixes).
const ENOMEM: i32 = 12;
/// `ENOBUFS`; its number differs between systems.
#[cfg(target_os = "linux")]
const ENOBUFS: i32 = 105;
#[cfg(not(target_os = "linux"))]
const ENOBUFS: i32 = 55;

/// The index in [`ACCEPT_ERROR_KINDS`] of an accept error.
pub(crate) fn accept_error_kind(error: &io::Error) -> usize {
    match error.raw_os_error() {
        Some(EMFILE) => 0,
        Some(ENFILE) => 1,
        Some(ENOBUFS) => 2,
        Some(ENOMEM) => 3,
        _ if error.kind() == io::ErrorKind::OutOfMemory => 3,
        _ => 4,
    }
}

/// The label value of an accept error kind index.
pub(crate) fn accept_error_kind_name(kind: usize) -> &'static str {
    ACCEPT_ERROR_KINDS.get(kind).copied().unwrap_or("other")
}

/// The metric handles of one listener, registered once and shared by all
/// its connections (cloning is cheap).
///
/// Every series carries `listener="<name>"`. Recording goes through the
/// handles the recorder returned, so its cost is the recorder's: for an
/// atomic-backed recorder, one atomic add per read or write call.
#[derive(Clone)]
pub struct ListenerMetrics {
    inner: Arc<Handles>,
}

/// The handles behind [`ListenerMetrics`].
pub(crate) struct Handles {
    pub(crate) name: Arc<str>,
    pub(crate) opened: Counter,
    pub(crate) closed: Counter,
    pub(crate) active: Gauge,
    pub(crate) bytes_read: Counter,
    pub(crate) bytes_written: Counter,
    pub(crate) duration: Histogram,
    pub(crate) accept_errors: [Counter; ACCEPT_ERROR_KINDS.len()],
}

impl ListenerMetrics {
    /// Describes and registers the metrics of listener `name` on `recorder`.
    pub fn new(name: &str, recorder: &dyn Recorder) -> Self {
        describe(recorder);
        let name: Arc<str> = Arc::from(name);
        let labels = || vec![Label::new(LISTENER_LABEL, name.to_string())];
        let counter = |metric: &'static str| {
            recorder.register_counter(&Key::from_parts(metric, labels()), &METADATA)
        };
        let accept_errors = ACCEPT_ERROR_KINDS.map(|kind| {
            let mut key_labels = labels();
            key_labels.push(Label::new(KIND_LABEL, kind));
            recorder.register_counter(&Key::from_parts(ACCEPT_ERRORS_TOTAL, key_labels), &METADATA)
        });
        let handles = Handles {
            opened: counter(SOCKETS_OPENED_TOTAL),
            closed: counter(SOCKETS_CLOSED_TOTAL),
            active: recorder.register_gauge(&Key::from_parts(SOCKETS_ACTIVE, labels()), &METADATA),
            bytes_read: counter(BYTES_READ_TOTAL),
            bytes_written: counter(BYTES_WRITTEN_TOTAL),
            duration: recorder.register_histogram(
                &Key::from_parts(CONNECTION_DURATION_SECONDS, labels()),
                &METADATA,
            ),
            accept_errors,
            name,
        };
        Self {
            inner: Arc::new(handles),
        }
    }

    /// Describes and registers the metrics of listener `name` on the
    /// recorder in effect here: the thread's local recorder if one is set,
    /// else the global one (a no-op recorder if none was installed).
    pub fn global(name: &str) -> Self {
        metrics::with_recorder(|recorder| Self::new(name, recorder))
    }

    /// The listener's name, as in its `listener` label.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn handles(&self) -> &Arc<Handles> {
        &self.inner
    }
}

impl std::fmt::Debug for ListenerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerMetrics")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_map_to_bounded_kinds() {
        let cases = [
            (io::Error::from_raw_os_error(EMFILE), "emfile"),
            (io::Error::from_raw_os_error(ENFILE), "enfile"),
            (io::Error::from_raw_os_error(ENOBUFS), "enobufs"),
            (io::Error::from_raw_os_error(ENOMEM), "enomem"),
            (io::Error::from(io::ErrorKind::OutOfMemory), "enomem"),
            (io::Error::other("something else"), "other"),
        ];
        for (error, expected) in cases {
            assert_eq!(
                accept_error_kind_name(accept_error_kind(&error)),
                expected,
                "{error}"
            );
        }
    }
}
