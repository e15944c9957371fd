//! The gateway's own metrics, registered once on the recorder the gateway
//! was given and served on `/metrics/proxy` (and within `/metrics`).

use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};

use crate::sources::agents::registry::ScrapeFailure;
use crate::sources::agents::scrape::Round;
use crate::view::{DropReason, Drops, ViewStats};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Why an agent was turned away; each reason is a label value of
/// `tether_agent_rejects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectKind {
    BadToken,
    /// Refused without its token compared: too many bad tokens from its address.
    Throttled,
    UnsupportedVersion,
    FrameTooLarge,
    MalformedFrame,
    HandshakeTimeout,
    TooManyConnections,
    /// Closed before its Hello to make room for newer connections.
    HandshakeEvicted,
    MissingIdentity,
    /// Another connection holds the identity, and keeps it.
    IdentityInUse,
    ProtocolViolation,
    ShuttingDown,
}

impl RejectKind {
    const ALL: [RejectKind; 12] = [
        RejectKind::BadToken,
        RejectKind::Throttled,
        RejectKind::UnsupportedVersion,
        RejectKind::FrameTooLarge,
        RejectKind::MalformedFrame,
        RejectKind::HandshakeTimeout,
        RejectKind::TooManyConnections,
        RejectKind::HandshakeEvicted,
        RejectKind::MissingIdentity,
        RejectKind::IdentityInUse,
        RejectKind::ProtocolViolation,
        RejectKind::ShuttingDown,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RejectKind::BadToken => "bad_token",
            RejectKind::Throttled => "throttled",
            RejectKind::UnsupportedVersion => "unsupported_version",
            RejectKind::FrameTooLarge => "frame_too_large",
            RejectKind::MalformedFrame => "malformed_frame",
            RejectKind::HandshakeTimeout => "handshake_timeout",
            RejectKind::TooManyConnections => "too_many_connections",
            RejectKind::HandshakeEvicted => "handshake_evicted",
            RejectKind::MissingIdentity => "missing_identity",
            RejectKind::IdentityInUse => "identity_in_use",
            RejectKind::ProtocolViolation => "protocol_violation",
            RejectKind::ShuttingDown => "shutting_down",
        }
    }
}

/// How an identity collision ended; each is an `outcome` of
/// `tether_agent_identity_collisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collision {
    /// The connected agent answered and kept the identity; the newcomer was rejected.
    NewcomerRejected,
    /// The connected agent did not answer a ping: it was closed, the newcomer took its place.
    OlderDead,
    /// `newest-wins`: the older connection was closed.
    OlderReplaced,
}

impl Collision {
    const ALL: [Collision; 3] = [
        Collision::NewcomerRejected,
        Collision::OlderDead,
        Collision::OlderReplaced,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Collision::NewcomerRejected => "newcomer_rejected",
            Collision::OlderDead => "older_dead",
            Collision::OlderReplaced => "older_replaced",
        }
    }
}

/// Why an agent's frame was dropped undecoded; each is a `reason` of
/// `tether_agent_frames_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameRefusal {
    /// An answer to no scrape that is waiting (unknown id, or too late).
    Unsolicited,
    /// An answer or push over `--max-series-per-answer`.
    OverLimit,
}

impl FrameRefusal {
    const ALL: [FrameRefusal; 2] = [FrameRefusal::Unsolicited, FrameRefusal::OverLimit];

    fn as_str(self) -> &'static str {
        match self {
            FrameRefusal::Unsolicited => "unsolicited",
            FrameRefusal::OverLimit => "over_limit",
        }
    }
}

/// Why a push was dropped; each is a `reason` of `tether_pushes_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushDrop {
    /// The oldest push, dropped to make room under --max-pushes or --max-push-bytes.
    Evicted,
    /// A push larger on its own than --max-push-bytes, refused.
    TooLarge,
}

impl PushDrop {
    const ALL: [PushDrop; 2] = [PushDrop::Evicted, PushDrop::TooLarge];

    fn as_str(self) -> &'static str {
        match self {
            PushDrop::Evicted => "evicted",
            PushDrop::TooLarge => "too_large",
        }
    }
}

/// Why the gateway closed an HTTP connection; each is a `reason` of
/// `tether_http_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The header deadline: the client took too long to send a request's headers.
    Header,
    /// The idle deadline: nothing happened between requests for too long.
    Idle,
    /// The write deadline: a response write stayed blocked on a client that does not read.
    Write,
    /// The connection cap was reached: the connection waiting longest with
    /// no request in flight made room for a new one.
    Evicted,
}

impl CloseReason {
    const ALL: [CloseReason; 4] = [
        CloseReason::Header,
        CloseReason::Idle,
        CloseReason::Write,
        CloseReason::Evicted,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CloseReason::Header => "header_timeout",
            CloseReason::Idle => "idle_timeout",
            CloseReason::Write => "write_timeout",
            CloseReason::Evicted => "evicted",
        }
    }
}

/// One counter per reason of a `{reason}`-labelled counter, registered up
/// front so that every reason is served from zero.
#[derive(Debug)]
struct ByReason<R> {
    counters: Vec<(R, Counter)>,
}

impl<R: Copy + PartialEq> ByReason<R> {
    fn new(
        counter: &impl Fn(&'static str, Vec<Label>) -> Counter,
        name: &'static str,
        reasons: &[R],
        label: fn(R) -> &'static str,
    ) -> ByReason<R> {
        ByReason::labelled(counter, name, "reason", reasons, label)
    }

    /// As [`new`](Self::new), with another label name than `reason`.
    fn labelled(
        counter: &impl Fn(&'static str, Vec<Label>) -> Counter,
        name: &'static str,
        label_name: &'static str,
        reasons: &[R],
        label: fn(R) -> &'static str,
    ) -> ByReason<R> {
        ByReason {
            counters: reasons
                .iter()
                .map(|&reason| {
                    (
                        reason,
                        counter(name, vec![Label::new(label_name, label(reason))]),
                    )
                })
                .collect(),
        }
    }

    fn increment(&self, reason: R, n: u64) {
        if let Some((_, counter)) = self.counters.iter().find(|(r, _)| *r == reason) {
            counter.increment(n);
        }
    }
}

/// Describes the metric `name` on `recorder`: a counter (`kind` 0), a
/// gauge (1) or a histogram (any other), with its unit and help. Sources
/// with metrics of their own describe them through it too.
pub(crate) fn describe_on(
    recorder: &dyn Recorder,
    name: &'static str,
    unit: Unit,
    help: &'static str,
    kind: u8,
) {
    let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
    match kind {
        0 => recorder.describe_counter(name, Some(unit), help),
        1 => recorder.describe_gauge(name, Some(unit), help),
        _ => recorder.describe_histogram(name, Some(unit), help),
    }
}

/// Handles of every gateway metric. Cheap to update: each is an atomic
/// behind the recorder's handle.
#[derive(Debug)]
pub(crate) struct Telemetry {
    agents_connected: Gauge,
    rejects: ByReason<RejectKind>,
    scrapes: Counter,
    scrape_duration: Histogram,
    agent_timeouts: Counter,
    agent_unavailable: Counter,
    agent_errors: Counter,
    dropped_series: ByReason<DropReason>,
    invalid_families: Counter,
    series_served: Counter,
    pushes: Counter,
    final_pushes: Counter,
    pushes_held: Gauge,
    http_closed: ByReason<CloseReason>,
    frames_refused: ByReason<FrameRefusal>,
    pushes_dropped: ByReason<PushDrop>,
    push_bytes: Gauge,
    collisions: ByReason<Collision>,
    handshakes: Gauge,
    frame_bytes_in_flight: Gauge,
    frame_budget_waits: Counter,
    scrapes_shared: Counter,
    scrapes_refused: Counter,
    bodies_held: Gauge,
}

fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

impl Telemetry {
    /// Describes and registers every metric on `recorder`.
    pub(crate) fn new(recorder: &dyn Recorder) -> Telemetry {
        let describe = |name: &'static str, unit: Unit, help: &'static str, kind: u8| {
            describe_on(recorder, name, unit, help, kind);
        };
        describe(
            "tether_agents_connected",
            Unit::Count,
            "Agents connected now.",
            1,
        );
        describe(
            "tether_agent_rejects_total",
            Unit::Count,
            "Agent connections turned away, by reason.",
            0,
        );
        describe(
            "tether_scrapes_total",
            Unit::Count,
            "Expositions served: /metrics, /metrics/connected and /metrics/proxy.",
            0,
        );
        describe(
            "tether_scrape_duration_seconds",
            Unit::Seconds,
            "Time to serve a scrape, fan-out included.",
            2,
        );
        describe(
            "tether_agent_scrape_failures_total",
            Unit::Count,
            "Agents left out of a scrape, by reason (timeout, unavailable, error).",
            0,
        );
        describe(
            "tether_merge_dropped_series_total",
            Unit::Count,
            "Series left out to keep the exposition valid, by reason: duplicate, type_conflict, name_collision (a written name taken by another family), reserved_name (tether_*), reserved_label (le, quantile, __*).",
            0,
        );
        describe(
            "tether_agent_invalid_families_total",
            Unit::Count,
            "Families in agents' answers and pushes that were not valid Prometheus families, left out.",
            0,
        );
        describe(
            "tether_series_served_total",
            Unit::Count,
            "Series written into expositions.",
            0,
        );
        describe(
            "tether_agent_pushes_total",
            Unit::Count,
            "Pushes received from agents, by whether they were final.",
            0,
        );
        describe(
            "tether_pushes_held",
            Unit::Count,
            "Pushed data sets held and served now.",
            1,
        );
        describe(
            "tether_http_connections_closed_total",
            Unit::Count,
            "HTTP connections the gateway closed, by reason: header_timeout, idle_timeout, write_timeout, evicted (at --max-http-connections, the one waiting longest with no request in flight).",
            0,
        );
        describe(
            "tether_agent_frames_refused_total",
            Unit::Count,
            "Agent frames dropped without being decoded, by reason: unsolicited (an answer no scrape waits for), over_limit (more families and series than --max-series-per-answer).",
            0,
        );
        describe(
            "tether_pushes_dropped_total",
            Unit::Count,
            "Final pushes dropped, by reason: evicted (the oldest, to make room under --max-pushes or --max-push-bytes), too_large (refused).",
            0,
        );
        describe(
            "tether_pushes_held_bytes",
            Unit::Bytes,
            "Estimated memory of the pushes held now (bounded by --max-push-bytes).",
            1,
        );
        describe(
            "tether_agent_identity_collisions_total",
            Unit::Count,
            "Agents that said Hello with the identity of a connected one, by outcome: newcomer_rejected (the connected one answered and kept it), older_dead (it did not answer a ping and was closed), older_replaced (--identity-collision newest-wins).",
            0,
        );
        describe(
            "tether_agent_handshakes",
            Unit::Count,
            "Agent connections in their handshake now (TLS and Hello), bounded by --max-handshakes.",
            1,
        );
        describe(
            "tether_agent_frame_bytes_in_flight",
            Unit::Bytes,
            "Bytes of agent frames being read or processed now, bounded by --max-frame-bytes-in-flight.",
            1,
        );
        describe(
            "tether_agent_frame_budget_waits_total",
            Unit::Count,
            "Agent frames that waited, unread, for room under --max-frame-bytes-in-flight.",
            0,
        );
        describe(
            "tether_scrapes_shared_total",
            Unit::Count,
            "Scrapes answered with a body rendered for a concurrent scrape of the same round.",
            0,
        );
        describe(
            "tether_scrapes_refused_total",
            Unit::Count,
            "Scrapes answered 503 because --max-scrape-bodies bodies were held until their deadline.",
            0,
        );
        describe(
            "tether_scrape_bodies_held",
            Unit::Count,
            "Exposition bodies held now, rendering or being written, bounded by --max-scrape-bodies.",
            1,
        );
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&key(name, labels), &METADATA)
        };
        let gauge = |name: &'static str| recorder.register_gauge(&key(name, vec![]), &METADATA);
        let failure = |reason: &'static str| {
            counter(
                "tether_agent_scrape_failures_total",
                vec![Label::new("reason", reason)],
            )
        };
        let push = |is_final: &'static str| {
            counter(
                "tether_agent_pushes_total",
                vec![Label::new("final", is_final)],
            )
        };
        Telemetry {
            agents_connected: recorder
                .register_gauge(&key("tether_agents_connected", vec![]), &METADATA),
            rejects: ByReason::new(
                &counter,
                "tether_agent_rejects_total",
                &RejectKind::ALL,
                RejectKind::as_str,
            ),
            scrapes: counter("tether_scrapes_total", vec![]),
            scrape_duration: recorder
                .register_histogram(&key("tether_scrape_duration_seconds", vec![]), &METADATA),
            agent_timeouts: failure("timeout"),
            agent_unavailable: failure("unavailable"),
            agent_errors: failure("error"),
            dropped_series: ByReason::new(
                &counter,
                "tether_merge_dropped_series_total",
                &DropReason::ALL,
                DropReason::as_str,
            ),
            invalid_families: counter("tether_agent_invalid_families_total", vec![]),
            series_served: counter("tether_series_served_total", vec![]),
            pushes: push("false"),
            final_pushes: push("true"),
            pushes_held: recorder.register_gauge(&key("tether_pushes_held", vec![]), &METADATA),
            pushes_dropped: ByReason::new(
                &counter,
                "tether_pushes_dropped_total",
                &PushDrop::ALL,
                PushDrop::as_str,
            ),
            push_bytes: recorder
                .register_gauge(&key("tether_pushes_held_bytes", vec![]), &METADATA),
            frames_refused: ByReason::new(
                &counter,
                "tether_agent_frames_refused_total",
                &FrameRefusal::ALL,
                FrameRefusal::as_str,
            ),
            http_closed: ByReason::new(
                &counter,
                "tether_http_connections_closed_total",
                &CloseReason::ALL,
                CloseReason::as_str,
            ),
            collisions: ByReason::labelled(
                &counter,
                "tether_agent_identity_collisions_total",
                "outcome",
                &Collision::ALL,
                Collision::as_str,
            ),
            handshakes: gauge("tether_agent_handshakes"),
            frame_bytes_in_flight: gauge("tether_agent_frame_bytes_in_flight"),
            frame_budget_waits: counter("tether_agent_frame_budget_waits_total", vec![]),
            scrapes_shared: counter("tether_scrapes_shared_total", vec![]),
            scrapes_refused: counter("tether_scrapes_refused_total", vec![]),
            bodies_held: gauge("tether_scrape_bodies_held"),
        }
    }

    /// Two agents claimed one identity.
    pub(crate) fn identity_collision(&self, outcome: Collision) {
        self.collisions.increment(outcome, 1);
    }

    /// The state of the agents' admission and frame budget, read when a
    /// scrape is served.
    pub(crate) fn set_agent_admission(&self, handshakes: usize, budget: &tether_tcp::FrameBudget) {
        #[allow(
            clippy::cast_precision_loss,
            reason = "counts and sizes far below 2^53"
        )]
        {
            self.handshakes.set(handshakes as f64);
            self.frame_bytes_in_flight.set(budget.in_use() as f64);
        }
        self.frame_budget_waits.absolute(budget.waits());
    }

    /// A scrape was answered with a body rendered for another.
    pub(crate) fn scrape_shared(&self) {
        self.scrapes_shared.increment(1);
    }

    /// A scrape was answered 503: no room for another body.
    pub(crate) fn scrape_refused(&self) {
        self.scrapes_refused.increment(1);
    }

    /// The number of bodies held changed.
    pub(crate) fn set_bodies_held(&self, n_bodies: usize) {
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
        self.bodies_held.set(n_bodies as f64);
    }

    /// An agent turned away.
    pub(crate) fn reject(&self, kind: RejectKind) {
        self.rejects.increment(kind, 1);
    }

    /// The number of connected agents changed.
    pub(crate) fn set_agents_connected(&self, n_agents: usize) {
        #[allow(
            clippy::cast_precision_loss,
            reason = "agent counts are far below 2^53"
        )]
        self.agents_connected.set(n_agents as f64);
    }

    /// The number of held pushes changed.
    pub(crate) fn set_pushes_held(&self, n_pushes: usize) {
        #[allow(clippy::cast_precision_loss, reason = "push counts are far below 2^53")]
        self.pushes_held.set(n_pushes as f64);
    }

    /// A push arrived.
    pub(crate) fn push(&self, is_final: bool) {
        if is_final {
            self.final_pushes.increment(1);
        } else {
            self.pushes.increment(1);
        }
    }

    /// Families of an agent's answer or push were invalid.
    pub(crate) fn invalid_families(&self, n_families: u64) {
        self.invalid_families.increment(n_families);
    }

    /// Series left out while normalizing a source's families or merging.
    pub(crate) fn record_drops(&self, drops: &Drops) {
        if drops.is_empty() {
            return;
        }
        for reason in DropReason::ALL {
            let n = drops.get(reason);
            if n > 0 {
                self.dropped_series.increment(reason, n);
            }
        }
    }

    /// A round of agent scrapes finished.
    pub(crate) fn record_round(&self, round: &Round) {
        for result in &round.results {
            match &result.outcome {
                Ok(_) => {}
                Err(ScrapeFailure::Timeout) => self.agent_timeouts.increment(1),
                Err(ScrapeFailure::Unavailable) => self.agent_unavailable.increment(1),
                Err(ScrapeFailure::Failed(_)) => self.agent_errors.increment(1),
            }
        }
    }

    /// A scrape's view was built and rendered (once for the scrapes that
    /// share its body).
    pub(crate) fn record_view(&self, stats: &ViewStats) {
        self.series_served.increment(stats.series);
        self.record_drops(&stats.drops);
    }

    /// Pushes were dropped.
    pub(crate) fn pushes_dropped(&self, reason: PushDrop, n_pushes: usize) {
        if n_pushes > 0 {
            self.pushes_dropped.increment(reason, n_pushes as u64);
        }
    }

    /// The bytes held by pushes changed.
    pub(crate) fn set_push_bytes(&self, bytes: usize) {
        #[allow(clippy::cast_precision_loss, reason = "sizes far below 2^53")]
        self.push_bytes.set(bytes as f64);
    }

    /// An agent's frame was dropped undecoded.
    pub(crate) fn frame_refused(&self, reason: FrameRefusal) {
        self.frames_refused.increment(reason, 1);
    }

    /// The gateway closed an HTTP connection.
    pub(crate) fn http_connection_closed(&self, reason: CloseReason) {
        self.http_closed.increment(reason, 1);
    }

    /// A scrape was answered after `elapsed`.
    pub(crate) fn record_scrape(&self, elapsed: Duration) {
        self.scrapes.increment(1);
        self.scrape_duration.record(elapsed.as_secs_f64());
    }
}
