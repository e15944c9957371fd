//! The streamed check: an exposition fed piece by piece, checked by every
//! rule of [`check`](super::check), holding per series a 128-bit hash and a
//! few bits instead of the series.
//!
//! [`CheckStream`] cuts what it is fed into lines (keeping only an
//! unfinished line, and of a line over the limit only its start), checks
//! UTF-8, and hands whole lines to the [`Parser`] of each format it checks,
//! whose [`Builder`] keeps its series in [`Marks`]. What a series needs
//! for the rules that span lines is small: the parts it has (a duplicate
//! `_sum`), its first timestamp (a duplicate or a second point), its last
//! line (errors found at the end), and for histograms and summaries the
//! set of its bucket bounds or quantiles, kept as an index into the
//! family's distinct sets (series of a family mostly share their buckets).
//! OpenMetrics keeps a series' lines together, so the state of a histogram
//! under way is kept for the family's last series only.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;

use memchr::{memchr, memchr_iter, memrchr};

use super::lexer::ResumeState;
use super::{
    Builder, FamilyState, FinishError, Format, HashIsKey, Limits, LineLabels, Parser, Part, Point,
    SEEN_VALUE, Store, check_bucket, describe_series, takes_several_lines,
};
use crate::error::{ErrorKind, ParseError};
use crate::model::{Label, MetricFamily, MetricType};
use crate::names::{ReservedLabel, reserved_label};

/// [`Mark::flags`]: the series has a timestamp, in [`Marks::timestamps`].
const HAS_TIMESTAMP: u8 = 1;
/// [`Mark::flags`]: two of its buckets (or quantiles) are equal.
const DUPLICATE_POINT: u8 = 2;
/// [`Mark::flags`]: an OpenMetrics histogram whose last bucket is not `+Inf`.
const NO_INF_BUCKET: u8 = 4;
/// [`Mark::flags`]: an OpenMetrics histogram with `_sum` or `_count` alone.
const SUM_COUNT_APART: u8 = 8;
/// [`Mark::layout`] of a series with no points kept.
const NO_LAYOUT: u32 = u32::MAX;

/// A series as the streamed check keeps it: no labels, no values.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The index of its family.
    family: u32,
    /// The line of its last sample, for the errors found at the end.
    line: u32,
    /// Its bucket bounds or quantiles so far, as an index into its
    /// family's [`Layouts`], or [`NO_LAYOUT`].
    layout: u32,
    /// The parts seen (`SEEN_*` bits).
    seen: u8,
    /// `HAS_TIMESTAMP`, `DUPLICATE_POINT`, `NO_INF_BUCKET`, `SUM_COUNT_APART`.
    flags: u8,
}

/// The series store of the streamed check: each series by the 128-bit
/// hash of its family and label set (see `HashKeys`), which is its
/// identity: label sets are never compared.
#[derive(Debug, Default)]
pub(super) struct Marks {
    /// The series of one line (gauges, untyped, text counters, info and
    /// state sets): a series that exists has its value, so its hash is
    /// all there is to keep; another line of it is a duplicate.
    singles: HashSet<u128, BuildHasherDefault<HashIsKey>>,
    /// Every other series but each family's last one, which its family
    /// holds.
    series: HashMap<u128, Mark, BuildHasherDefault<HashIsKey>>,
    /// The first timestamp of each series that has one.
    timestamps: HashMap<u128, i64, BuildHasherDefault<HashIsKey>>,
}

/// What the streamed check keeps of a family's series.
#[derive(Debug, Default)]
pub(super) struct MarkFamily {
    /// The last series created, out of [`Marks::series`] while it is the
    /// last: lines mostly go on with it.
    last: Option<(u128, Mark)>,
    /// The labels of the last series, to see that a line continues it
    /// without hashing. Their strings are reused from series to series.
    last_labels: Vec<Label>,
    /// The OpenMetrics histogram under way: the last series'.
    open: OpenHistogram,
    /// The series whose points (bucket bounds, quantiles) lines are adding
    /// now, and those points.
    run: Option<(u128, Vec<f64>)>,
    /// The distinct sets of points of the family's series.
    layouts: Layouts,
    /// Scratch for the bits of a set of points.
    bits: Vec<u64>,
    /// The distinct label names of the family's series.
    label_names: BTreeSet<String>,
    /// The first label (by series, then by position) that the family's
    /// type reserves.
    reserved: Option<(String, ReservedLabel)>,
    /// Whether a series' labels were noted.
    noted: bool,
}

/// What OpenMetrics' histogram rules read of the series under way.
#[derive(Debug, Default, Clone, Copy)]
struct OpenHistogram {
    /// The bound and count of its last bucket.
    last_bucket: Option<(f64, f64)>,
    /// Its `_count`.
    count: Option<f64>,
    /// Whether it has a `_sum`.
    sum: bool,
}

impl OpenHistogram {
    /// The `NO_INF_BUCKET` and `SUM_COUNT_APART` flags of the series.
    fn flags(self) -> u8 {
        let mut flags = 0;
        if self
            .last_bucket
            .is_none_or(|(bound, _)| bound != f64::INFINITY)
        {
            flags |= NO_INF_BUCKET;
        }
        if self.sum != self.count.is_some() {
            flags |= SUM_COUNT_APART;
        }
        flags
    }
}

/// Sets of points (bucket bounds or quantiles, sorted, as bits), each kept
/// once per family.
#[derive(Debug, Default)]
struct Layouts {
    /// Each set's index, by the set.
    ids: HashMap<Box<[u64]>, u32>,
    /// Each set, by its index.
    all: Vec<Box<[u64]>>,
}

impl Layouts {
    /// The index of `bits`, added if new; [`NO_LAYOUT`] past 2^32 - 1 sets,
    /// which no input that fits in memory reaches.
    fn intern(&mut self, bits: &[u64]) -> u32 {
        if let Some(&id) = self.ids.get(bits) {
            return id;
        }
        let Ok(id) = u32::try_from(self.all.len()) else {
            return NO_LAYOUT;
        };
        if id == NO_LAYOUT {
            return NO_LAYOUT;
        }
        self.ids.insert(bits.into(), id);
        self.all.push(bits.into());
        id
    }
}

/// The mark of the series `key` of a family: its last series, or one in
/// the map.
fn mark_of<'m>(
    last: &'m mut Option<(u128, Mark)>,
    series: &'m mut HashMap<u128, Mark, BuildHasherDefault<HashIsKey>>,
    key: u128,
) -> Option<&'m mut Mark> {
    match last {
        Some((last_key, mark)) if *last_key == key => Some(mark),
        _ => series.get_mut(&key),
    }
}

impl MarkFamily {
    /// Adds a point to series `key`, which becomes the one under way.
    fn add_point(&mut self, marks: &mut Marks, key: u128, point: f64) {
        if let Some((run_key, points)) = &mut self.run
            && *run_key == key
        {
            points.push(point);
            return;
        }
        let mut points = self.close_run(marks);
        let Some(mark) = mark_of(&mut self.last, &mut marks.series, key) else {
            return;
        };
        if mark.flags & DUPLICATE_POINT != 0 {
            // Already an error; its points no longer matter.
            return;
        }
        if let Some(layout) = self.layouts.all.get(mark.layout as usize) {
            points.extend(layout.iter().map(|&bits| f64::from_bits(bits)));
        }
        points.push(point);
        self.run = Some((key, points));
    }

    /// Ends the run of points under way: finds equal points and files the
    /// set. Answers the run's buffer, emptied, for reuse.
    fn close_run(&mut self, marks: &mut Marks) -> Vec<f64> {
        let Some((key, mut points)) = self.run.take() else {
            return Vec::new();
        };
        // Sorted by total order, points equal by `==` (`-0` and `0`; never
        // NaN) end up next to each other, as `finish_series` finds them.
        points.sort_by(f64::total_cmp);
        let duplicate = points.windows(2).any(|w| w[0] == w[1]);
        let layout = if duplicate {
            NO_LAYOUT
        } else {
            self.bits.clear();
            self.bits.extend(points.iter().map(|point| point.to_bits()));
            self.layouts.intern(&self.bits)
        };
        if let Some(mark) = mark_of(&mut self.last, &mut marks.series, key) {
            mark.layout = layout;
            if duplicate {
                mark.flags |= DUPLICATE_POINT;
            }
        }
        points.clear();
        points
    }

    /// Notes the label names of a new series, and the first reserved one.
    fn note_labels(&mut self, metric_type: MetricType, labels: &LineLabels, line: &str) {
        let same_names = labels.labels.len() == self.last_labels.len()
            && labels
                .iter(line)
                .zip(&self.last_labels)
                .all(|((name, _), last)| name == last.name.as_bytes());
        if same_names && self.noted {
            // Noted with the last series.
            return;
        }
        self.noted = true;
        for label in &labels.labels {
            let name = &line[label.name.clone()];
            if self.reserved.is_none()
                && let Some(why) = reserved_label(metric_type, name)
            {
                self.reserved = Some((name.to_owned(), why));
            }
            if !self.label_names.contains(name) {
                self.label_names.insert(name.to_owned());
            }
        }
    }

    /// Keeps `labels` as the last series' labels, reusing the strings.
    fn keep_last_labels(&mut self, labels: &LineLabels, line: &str) {
        let kept = &mut self.last_labels;
        kept.truncate(labels.labels.len());
        for (i, (name, value)) in labels.iter_str(line).enumerate() {
            match kept.get_mut(i) {
                Some(label) => {
                    label.name.clear();
                    label.name.push_str(name);
                    label.value.clear();
                    label.value.push_str(value);
                }
                None => kept.push(Label::new(name, value)),
            }
        }
    }
}

/// Counts a new series against the input's limit.
fn count_new_series(
    n_series: &mut usize,
    max_series: usize,
    point: &Point<'_, '_>,
) -> Result<(), ParseError> {
    if *n_series >= max_series {
        return Err(point.at(1, ErrorKind::TooManySeries { limit: max_series }));
    }
    *n_series += 1;
    Ok(())
}

impl Store for Marks {
    type Family = MarkFamily;

    fn continues_last(family: &FamilyState<MarkFamily>, labels: &LineLabels, line: &str) -> bool {
        family.series.last.is_some() && labels.equal_in_order(line, &family.series.last_labels)
    }

    fn add(
        builder: &mut Builder<Marks>,
        index: usize,
        continues_last: bool,
        labels: &LineLabels,
        point: &Point<'_, '_>,
    ) -> Result<(), ParseError> {
        let &Point {
            sample,
            pos,
            part,
            metric_type,
            special_value,
            om,
        } = point;
        let line = sample.line;
        let key = match (continues_last, builder.families[index].series.last) {
            (true, Some((key, _))) => key,
            _ => {
                let labels_hash = labels.hash(line, &builder.keys, &mut builder.scratch);
                let family_hash = builder.keys.hash128(&(index as u64).to_le_bytes());
                labels_hash.wrapping_add(family_hash)
            }
        };
        let state = &mut builder.families[index];
        let family = &mut state.series;
        let marks = &mut builder.store;
        if !takes_several_lines(metric_type, om) {
            // Its one line sets the value (`SEEN_VALUE`).
            if marks.singles.contains(&key) {
                let previous_timestamp = marks.timestamps.get(&key).copied();
                if previous_timestamp.is_none()
                    && let Some(timestamp) = sample.timestamp_ms
                {
                    // As the model does: a series takes the first timestamp
                    // it is given, even on a line refused.
                    marks.timestamps.insert(key, timestamp);
                }
                return Err(point.duplicate(previous_timestamp));
            }
            count_new_series(&mut builder.n_series, builder.limits.max_series, point)?;
            state.n_series += 1;
            family.note_labels(metric_type, labels, line);
            family.keep_last_labels(labels, line);
            marks.singles.insert(key);
            if let Some(timestamp) = sample.timestamp_ms {
                marks.timestamps.insert(key, timestamp);
            }
            return Ok(());
        }
        let is_last = family.last.is_some_and(|(last, _)| last == key);
        if !is_last && !marks.series.contains_key(&key) {
            // A new series.
            count_new_series(&mut builder.n_series, builder.limits.max_series, point)?;
            state.n_series += 1;
            family.note_labels(metric_type, labels, line);
            family.keep_last_labels(labels, line);
            let histogram = matches!(
                metric_type,
                MetricType::Histogram | MetricType::GaugeHistogram
            );
            if let Some((last_key, mut last)) = family.last.take() {
                if om && histogram {
                    last.flags |= family.open.flags();
                }
                marks.series.insert(last_key, last);
            }
            family.open = OpenHistogram::default();
            family.last = Some((
                key,
                Mark {
                    // The builder refuses more families than that.
                    family: u32::try_from(index).unwrap_or(u32::MAX),
                    line: pos.line,
                    layout: NO_LAYOUT,
                    seen: 0,
                    flags: 0,
                },
            ));
        }
        let is_last = family.last.is_some_and(|(last, _)| last == key);
        let Some(mark) = mark_of(&mut family.last, &mut marks.series, key) else {
            // The series was found or made above.
            return Ok(());
        };
        mark.line = pos.line;
        let previous_timestamp = match mark.flags & HAS_TIMESTAMP {
            0 => None,
            _ => marks.timestamps.get(&key).copied(),
        };
        if previous_timestamp.is_none()
            && let Some(timestamp) = sample.timestamp_ms
        {
            mark.flags |= HAS_TIMESTAMP;
            marks.timestamps.insert(key, timestamp);
        }
        let bit = point.seen_bit();
        if bit != 0 {
            if mark.seen & bit != 0 {
                return Err(point.duplicate(previous_timestamp));
            }
            mark.seen |= bit;
        }
        // OpenMetrics keeps the lines of one series together.
        if om && !is_last {
            return Err(point.at(1, ErrorKind::InterleavedSeries(describe_series(sample))));
        }
        let histogram = matches!(
            metric_type,
            MetricType::Histogram | MetricType::GaugeHistogram
        );
        match part {
            Part::Bucket if histogram => {
                let upper_bound = special_value.unwrap_or(f64::INFINITY);
                if om {
                    // Buckets go up strictly, so none repeats.
                    let open = &mut family.open;
                    let exemplar = sample.exemplar.as_ref().map(|e| e.value);
                    check_bucket(point, open.last_bucket, open.count, exemplar).map_err(
                        |error| error.into_error(point, &state.meta_name, previous_timestamp),
                    )?;
                    open.last_bucket = Some((upper_bound, sample.value));
                } else {
                    family.add_point(marks, key, upper_bound);
                }
            }
            Part::Count if histogram => {
                let inf_bucket = family
                    .open
                    .last_bucket
                    .filter(|&(bound, _)| bound == f64::INFINITY);
                if om && inf_bucket.is_some_and(|(_, count)| count != sample.value) {
                    return Err(point.at(
                        1,
                        ErrorKind::InvalidHistogram(
                            state.meta_name.clone(),
                            "_count must equal the +Inf bucket",
                        ),
                    ));
                }
                family.open.count = Some(sample.value);
            }
            Part::Sum if histogram => family.open.sum = true,
            Part::Bare if metric_type == MetricType::Summary => {
                family.add_point(marks, key, special_value.unwrap_or(f64::NAN));
            }
            _ => {}
        }
        Ok(())
    }
}

/// One family as the streamed check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyStats {
    /// The line where the family first appears.
    pub first_line: u32,
    /// How many series it has.
    pub n_series: usize,
    /// The distinct label names of its series, sorted.
    pub label_names: Vec<String>,
    /// The first label of its series (by series, then by position) that
    /// its type reserves, and why ([`reserved_label`]).
    pub reserved_label: Option<(String, ReservedLabel)>,
}

/// The result of a [`CheckStream`]: what [`check`](super::check) finds,
/// without the series.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// The format the input was checked as.
    pub format: Format,
    /// The families read from the valid lines: their metadata, no series.
    pub families: Vec<MetricFamily>,
    /// What was seen of each family, parallel to `families`.
    pub stats: Vec<FamilyStats>,
    /// Every error, in input order, at most `max_errors`.
    pub errors: Vec<ParseError>,
}

/// Errors in input order, at most `max` of them, kept so as the errors
/// found at the end (which come in any order, any number) are added.
#[derive(Debug)]
struct ErrorList {
    /// The errors: the first `max` by position, and some not sorted yet.
    errors: Vec<ParseError>,
    /// How many are reported.
    max: usize,
}

impl ErrorList {
    /// Adds an error; settles the list when it grows well past `max`.
    fn push(&mut self, error: ParseError) {
        self.errors.push(error);
        if self.errors.len() >= self.max.saturating_mul(2).saturating_add(1024) {
            self.settle();
        }
    }

    /// Sorts by position (stable: equal positions keep their order) and
    /// keeps the first `max`.
    fn settle(&mut self) {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors.truncate(self.max);
    }
}

/// The parse of the input in its format.
#[derive(Debug)]
struct Track {
    /// The format checked.
    format: Format,
    /// The family layer, with the series in [`Marks`].
    builder: Builder<Marks>,
    /// Where the parser of the last piece stopped.
    state: ResumeState,
    /// The errors found line by line, at most `max_errors`.
    errors: Vec<ParseError>,
    /// Set once `max_errors` errors or a fatal one were found: as in
    /// `check`, the rest is not parsed.
    stopped: bool,
}

impl Track {
    /// A parse of an input in `format`, from its start.
    fn new(format: Format, limits: Limits) -> Track {
        Track {
            format,
            builder: Builder::new(format, limits, Marks::default()),
            state: ResumeState::START,
            errors: Vec::new(),
            stopped: false,
        }
    }

    /// Parses `text`, whole lines (or the input's last piece, `at_end`).
    fn parse(&mut self, text: &str, at_end: bool, limits: Limits, max_errors: usize) {
        if self.stopped {
            return;
        }
        let mut parser = Parser::resume(text, self.format, limits, self.state, at_end);
        while let Some(entry) = parser.next_entry() {
            let result =
                entry.and_then(|(entry, pos)| self.builder.feed(&entry, parser.label_spans(), pos));
            if let Err(error) = result {
                let fatal = matches!(
                    error.kind,
                    ErrorKind::TooManySeries { .. } | ErrorKind::TooManyFamilies { .. }
                );
                self.errors.push(error);
                if fatal || self.errors.len() >= max_errors {
                    self.stopped = true;
                    break;
                }
            }
        }
        self.state = parser.resume_state();
    }

    /// Runs the checks that need every line, and reports.
    fn finish(self, max_errors: usize) -> CheckReport {
        let Track {
            format,
            builder,
            errors,
            ..
        } = self;
        let mut errors = ErrorList {
            errors,
            max: max_errors,
        };
        let (families, stats) = builder.finish_marks(&mut errors);
        errors.settle();
        CheckReport {
            format,
            families,
            stats,
            errors: errors.errors,
        }
    }
}

impl Builder<Marks> {
    /// Ends the input: the checks that need every line, as
    /// `Builder::<Full>::finish` runs them, each error added to `errors`.
    fn finish_marks(self, errors: &mut ErrorList) -> (Vec<MetricFamily>, Vec<FamilyStats>) {
        let om = self.format == Format::OpenMetrics;
        let mut marks = self.store;
        let mut families = Vec::with_capacity(self.families.len());
        let mut stats = Vec::with_capacity(self.families.len());
        let mut metas = Vec::with_capacity(self.families.len());
        for mut state in self.families {
            let metric_type = state.family.metric_type;
            let series = &mut state.series;
            series.close_run(&mut marks);
            if let Some((key, mut last)) = series.last.take() {
                if om
                    && matches!(
                        metric_type,
                        MetricType::Histogram | MetricType::GaugeHistogram
                    )
                {
                    last.flags |= series.open.flags();
                }
                marks.series.insert(key, last);
            }
            if om && metric_type == MetricType::Counter {
                state.family.name.push_str("_total");
            }
            stats.push(FamilyStats {
                first_line: state.first_line,
                n_series: state.n_series,
                label_names: std::mem::take(&mut series.label_names)
                    .into_iter()
                    .collect(),
                reserved_label: series.reserved.take(),
            });
            metas.push((metric_type, state.meta_name));
            families.push(state.family);
        }
        for mark in marks.series.values() {
            let Some((metric_type, meta_name)) = metas.get(mark.family as usize) else {
                continue;
            };
            if let Some(reason) = finish_mark(mark, *metric_type, om) {
                errors.push(ParseError {
                    line: mark.line,
                    column: 1,
                    kind: reason.into_kind(meta_name),
                });
            }
        }
        (families, stats)
    }
}

/// What `finish_series` answers for the series that `mark` stands for.
fn finish_mark(mark: &Mark, metric_type: MetricType, om: bool) -> Option<FinishError> {
    match metric_type {
        MetricType::Histogram | MetricType::GaugeHistogram => {
            if mark.flags & DUPLICATE_POINT != 0 {
                return Some(FinishError::Duplicate("two buckets with the same le"));
            }
            if !om {
                return None;
            }
            if mark.flags & NO_INF_BUCKET != 0 {
                return Some(FinishError::Histogram("a +Inf bucket is required"));
            }
            if mark.flags & SUM_COUNT_APART != 0 {
                return Some(FinishError::Histogram(
                    if metric_type == MetricType::GaugeHistogram {
                        "_gsum and _gcount come together or not at all"
                    } else {
                        "_sum and _count come together or not at all"
                    },
                ));
            }
            None
        }
        MetricType::Summary if mark.flags & DUPLICATE_POINT != 0 => {
            Some(FinishError::Duplicate("two samples with the same quantile"))
        }
        MetricType::Counter if om && mark.seen & SEEN_VALUE == 0 => Some(FinishError::Missing(
            "counter has _created but no _total sample",
        )),
        _ => None,
    }
}

/// The line being read when it is longer than the limit: its start is
/// kept (enough for the error's column), the rest is only checked to be
/// UTF-8.
#[derive(Debug, Default)]
struct LongLine {
    /// Characters of the line read so far.
    chars: usize,
    /// The first bytes of a character split between two pieces.
    split_char: Vec<u8>,
}

/// [`check`](super::check), fed an exposition piece by piece.
///
/// Pieces may end anywhere. The stream holds what the checks must
/// remember: per family its metadata, per series a 128-bit hash and a few
/// bits, per histogram or summary family its distinct sets of buckets or
/// quantiles, and the line being read, of which at most
/// `max_line_bytes + 4` bytes are kept (a longer line is an error, at the
/// same position as `check` reports it). The report is the one `check`
/// makes of the whole input, without the series; label sets are told apart
/// by their hashes alone, which collide with probability about 2^-128 per
/// pair.
///
/// [`Format::detect`] reads the input's last line, known only at its end:
/// a caller that cannot read the end first can check the input in both
/// formats, with two streams, and keep the report of the format detected.
#[derive(Debug)]
pub struct CheckStream {
    /// The parser's limits.
    limits: Limits,
    /// How many errors are reported.
    max_errors: usize,
    /// The parse of the whole lines read so far.
    track: Track,
    /// The line being read, without its newline: all of it, or the start
    /// of a line over the limit.
    line: Vec<u8>,
    /// Set while the line being read is over the limit.
    long: Option<LongLine>,
    /// The number of the line being read.
    line_number: u64,
    /// The first byte that is not UTF-8: the only error of the input.
    utf8_error: Option<ParseError>,
}

impl CheckStream {
    /// A stream checking `format`, keeping at most `max_errors` errors.
    pub fn new(format: Format, limits: Limits, max_errors: usize) -> CheckStream {
        let limits = Limits {
            // Marks name their family in 32 bits.
            max_families: limits.max_families.min(u32::MAX as usize),
            ..limits
        };
        CheckStream {
            limits,
            max_errors,
            track: Track::new(format, limits),
            line: Vec::new(),
            long: None,
            line_number: 1,
            utf8_error: None,
        }
    }

    /// Whether the rest of the input can no longer change the report: it
    /// has a byte that is not UTF-8.
    pub fn is_settled(&self) -> bool {
        self.utf8_error.is_some()
    }

    /// Takes the next piece of the input.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.utf8_error.is_some() {
            return;
        }
        if !self.line.is_empty() || self.long.is_some() {
            match memchr(b'\n', data) {
                Some(end) => {
                    self.extend_line(&data[..end]);
                    self.end_line(true);
                    data = &data[end + 1..];
                }
                None => {
                    self.extend_line(data);
                    return;
                }
            }
        }
        if let Some(last) = memrchr(b'\n', data) {
            self.parse(&data[..=last], false);
            data = &data[last + 1..];
        }
        if !data.is_empty() {
            self.extend_line(data);
        }
    }

    /// Ends the input and reports.
    pub fn finish(mut self) -> CheckReport {
        if self.utf8_error.is_none() {
            if !self.line.is_empty() || self.long.is_some() {
                self.end_line(false);
            } else {
                self.parse(b"", true);
            }
        }
        if let Some(error) = self.utf8_error {
            return CheckReport {
                format: self.track.format,
                families: Vec::new(),
                stats: Vec::new(),
                errors: vec![error],
            };
        }
        self.track.finish(self.max_errors)
    }

    /// Adds `piece` (no newline in it) to the line being read.
    fn extend_line(&mut self, piece: &[u8]) {
        if self.utf8_error.is_some() {
            return;
        }
        if self.long.is_none() {
            self.line.extend_from_slice(piece);
            // Room for the character that the limit falls in.
            if self.line.len() <= self.limits.max_line_bytes.saturating_add(4) {
                return;
            }
            let line = std::mem::take(&mut self.line);
            let mut long = LongLine::default();
            if let Err(chars) = long.read(&line) {
                self.utf8_error = Some(self.utf8_error_at(0, chars));
                return;
            }
            // Whole characters, past the limit: the parser reports the line
            // too long, at the column `check` reports.
            let mut cut = self.limits.max_line_bytes + 1;
            while line.get(cut).is_some_and(|&b| b & 0xC0 == 0x80) {
                cut += 1;
            }
            self.line = line;
            self.line.truncate(cut);
            self.long = Some(long);
            return;
        }
        if let Some(long) = &mut self.long
            && let Err(chars) = long.read(piece)
        {
            self.utf8_error = Some(self.utf8_error_at(0, chars));
        }
    }

    /// Parses the line being read, whose newline came (or the input ended).
    fn end_line(&mut self, has_newline: bool) {
        if let Some(long) = self.long.take()
            && !long.split_char.is_empty()
        {
            // A character cut short by the newline or the end.
            self.utf8_error = Some(self.utf8_error_at(0, long.chars));
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        if has_newline {
            line.push(b'\n');
        }
        self.parse(&line, !has_newline);
        line.clear();
        self.line = line;
    }

    /// Checks that `chunk` (whole lines, or the input's last piece) is
    /// UTF-8 and parses it in each format.
    fn parse(&mut self, chunk: &[u8], at_end: bool) {
        if self.utf8_error.is_some() {
            return;
        }
        let text = match std::str::from_utf8(chunk) {
            Ok(text) => text,
            Err(e) => {
                let valid = &chunk[..e.valid_up_to()];
                let line_start = memrchr(b'\n', valid).map_or(0, |i| i + 1);
                let lines = memchr_iter(b'\n', valid).count();
                // The valid prefix is UTF-8 by the error's definition.
                let chars = std::str::from_utf8(&valid[line_start..])
                    .map_or(0, |rest| rest.chars().count());
                self.utf8_error = Some(self.utf8_error_at(lines, chars));
                return;
            }
        };
        self.track.parse(text, at_end, self.limits, self.max_errors);
        self.line_number += memchr_iter(b'\n', chunk).count() as u64;
    }

    /// The error of a byte that is not UTF-8, `lines` lines after the line
    /// being read, after `chars` characters of its line.
    fn utf8_error_at(&self, lines: usize, chars: usize) -> ParseError {
        let line = self.line_number.saturating_add(lines as u64);
        ParseError {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(chars.saturating_add(1)).unwrap_or(u32::MAX),
            kind: ErrorKind::InvalidUtf8,
        }
    }
}

impl LongLine {
    /// Checks the next bytes of the line; `Err` holds the characters of the
    /// line before the first byte that is not UTF-8.
    fn read(&mut self, mut piece: &[u8]) -> Result<(), usize> {
        if !self.split_char.is_empty() {
            let width = match self.split_char[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - self.split_char.len()).min(piece.len());
            self.split_char.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            match std::str::from_utf8(&self.split_char) {
                Ok(_) => {
                    self.chars += 1;
                    self.split_char.clear();
                }
                Err(e) if e.error_len().is_none() && piece.is_empty() => return Ok(()),
                Err(_) => return Err(self.chars),
            }
        }
        match std::str::from_utf8(piece) {
            Ok(text) => {
                self.chars += text.chars().count();
                Ok(())
            }
            Err(e) => {
                let (valid, rest) = piece.split_at(e.valid_up_to());
                // The valid prefix is UTF-8 by the error's definition.
                self.chars += std::str::from_utf8(valid).map_or(0, |text| text.chars().count());
                if e.error_len().is_some() {
                    return Err(self.chars);
                }
                self.split_char.extend_from_slice(rest);
                Ok(())
            }
        }
    }
}
