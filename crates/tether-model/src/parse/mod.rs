//! Parsing text 0.0.4 and OpenMetrics 1.0 expositions into metric families.
//!
//! Two layers: [`Parser`] checks and yields one line at a time without
//! copying; the builder here groups its samples into families and series,
//! and enforces the rules that span lines (metadata order, suffixes,
//! duplicates, histogram shape).

mod float;
mod lexer;
mod stream;

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64_with_secret, xxh3_64_with_seed, xxh3_128_with_secret};

pub use lexer::{Entry, LinePos, Parser, RawExemplar, RawLabel, RawLabels, RawLabelsIter, Sample};
use lexer::{LabelSpan, same_bytes, unescape_into};
pub use stream::{CheckReport, CheckStream, FamilyStats};

use crate::error::{ErrorKind, ParseError};
use crate::model::{
    Bucket, Counter, Exemplar, Histogram, Label, MetricFamily, MetricType, Quantile, Series,
    Summary, Value,
};

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The HTTP content type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Guesses the format of an input: OpenMetrics when its last line is
    /// `# EOF`, text otherwise.
    pub fn detect(input: &[u8]) -> Format {
        let trimmed = input.strip_suffix(b"\n").unwrap_or(input);
        let last_line = match memchr::memrchr(b'\n', trimmed) {
            Some(i) => &trimmed[i + 1..],
            None => trimmed,
        };
        if last_line == b"# EOF" {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// Default for [`Limits::max_line_bytes`]: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
/// Default for [`Limits::max_labels_per_series`].
pub const DEFAULT_MAX_LABELS_PER_SERIES: usize = 128;
/// Default for [`Limits::max_series`].
pub const DEFAULT_MAX_SERIES: usize = 10_000_000;
/// Default for [`Limits::max_families`].
pub const DEFAULT_MAX_FAMILIES: usize = 1_000_000;

/// Limits that bound what one input can make the parser hold.
///
/// Each limit, when exceeded, fails the input with an error that names it;
/// nothing past the limit is kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest line accepted, in bytes, newline excluded.
    pub max_line_bytes: usize,
    /// The most labels one series (or exemplar) may carry.
    pub max_labels_per_series: usize,
    /// The most series one input may hold, across all families.
    pub max_series: usize,
    /// The most families one input may declare or use.
    pub max_families: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_labels_per_series: DEFAULT_MAX_LABELS_PER_SERIES,
            max_series: DEFAULT_MAX_SERIES,
            max_families: DEFAULT_MAX_FAMILIES,
        }
    }
}

/// Parses a whole exposition with default limits; the first error fails it.
pub fn parse(input: &[u8], format: Format) -> Result<Vec<MetricFamily>, ParseError> {
    parse_with_limits(input, format, Limits::default())
}

/// Parses a whole exposition; the first error fails it.
pub fn parse_with_limits(
    input: &[u8],
    format: Format,
    limits: Limits,
) -> Result<Vec<MetricFamily>, ParseError> {
    let mut parser = Parser::new(input, format, limits)?;
    let mut builder = Builder::new(format, limits, Full);
    while let Some(entry) = parser.next_entry() {
        let (entry, pos) = entry?;
        // By reference: an entry is a couple of hundred bytes to move.
        builder.feed(&entry, parser.label_spans(), pos)?;
    }
    let (families, _, mut errors) = builder.finish();
    match errors.is_empty() {
        true => Ok(families),
        false => Err(errors.swap_remove(0)),
    }
}

/// The result of [`check`]: what could be read, and every error found.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The families read from the valid lines.
    pub families: Vec<MetricFamily>,
    /// The line where each family first appears, parallel to `families`.
    pub family_lines: Vec<u32>,
    /// Every error, in input order, at most `max_errors`.
    pub errors: Vec<ParseError>,
}

/// Parses an exposition and collects every error instead of stopping at the
/// first, for validators. A line with an error is skipped; at most
/// `max_errors` errors are kept.
pub fn check(input: &[u8], format: Format, limits: Limits, max_errors: usize) -> Checked {
    let mut parser = match Parser::new(input, format, limits) {
        Ok(parser) => parser,
        Err(error) => {
            return Checked {
                families: Vec::new(),
                family_lines: Vec::new(),
                errors: vec![error],
            };
        }
    };
    let mut builder = Builder::new(format, limits, Full);
    let mut errors = Vec::new();
    while let Some(entry) = parser.next_entry() {
        let result = entry.and_then(|(entry, pos)| builder.feed(&entry, parser.label_spans(), pos));
        if let Err(error) = result {
            let fatal = matches!(
                error.kind,
                ErrorKind::TooManySeries { .. } | ErrorKind::TooManyFamilies { .. }
            );
            errors.push(error);
            if fatal || errors.len() >= max_errors {
                break;
            }
        }
    }
    let (families, family_lines, finish_errors) = builder.finish();
    errors.extend(finish_errors);
    errors.sort_by_key(|e| (e.line, e.column));
    errors.truncate(max_errors);
    Checked {
        families,
        family_lines,
        errors,
    }
}

/// Which part of a series a sample line sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The bare name: a gauge, unknown, state or counter (text) value, or a
    /// summary quantile.
    Bare,
    Total,
    Created,
    Bucket,
    Count,
    Sum,
    Info,
}

/// Bits of [`FamilyState::seen`]: which parts a series already has.
const SEEN_VALUE: u8 = 1;
const SEEN_COUNT: u8 = 2;
const SEEN_SUM: u8 = 4;
const SEEN_CREATED: u8 = 8;

/// The suffixes a sample name may carry, and the part each one sets.
const SUFFIXES: [(&str, Part); 8] = [
    ("_total", Part::Total),
    ("_created", Part::Created),
    ("_bucket", Part::Bucket),
    ("_count", Part::Count),
    ("_sum", Part::Sum),
    ("_gcount", Part::Count),
    ("_gsum", Part::Sum),
    ("_info", Part::Info),
];

/// A family being built.
#[derive(Debug)]
struct FamilyState<F> {
    /// The family's metadata; with [`Full`], its series too.
    family: MetricFamily,
    /// The name on metadata lines (the OpenMetrics family name).
    meta_name: String,
    /// Whether a `# TYPE` line was seen.
    typed: bool,
    /// Line where the family first appeared.
    first_line: u32,
    /// How many series the family has.
    n_series: usize,
    /// What the builder's [`Store`] keeps of the family's series.
    series: F,
}

/// What [`Full`] keeps of a family's series besides the series themselves.
#[derive(Debug, Default)]
struct FullFamily {
    /// For each series: the parts seen (`SEEN_*` bits).
    seen: Vec<u8>,
    /// For each series: the line of its last sample, for late errors.
    series_lines: Vec<u32>,
    /// Series by the hash of their (order-insensitive) label set.
    index: HashMap<u64, usize, BuildHasherDefault<HashIsKey>>,
    /// Series whose hash collided with another's; searched linearly.
    collided: Vec<usize>,
}

impl<F> FamilyState<F> {
    /// Which part a sample named `sample` sets, if this family takes it.
    fn part_of(&self, sample: &str, format: Format) -> Option<Part> {
        let rest = sample.strip_prefix(self.meta_name.as_str())?;
        let part = if rest.is_empty() {
            Part::Bare
        } else {
            SUFFIXES.iter().find(|(suffix, _)| *suffix == rest)?.1
        };
        accepts(self.family.metric_type, format, part, rest).then_some(part)
    }
}

/// Whether a family of `metric_type` takes a sample with `suffix`.
fn accepts(metric_type: MetricType, format: Format, part: Part, suffix: &str) -> bool {
    let om = format == Format::OpenMetrics;
    match metric_type {
        MetricType::Counter if om => matches!(part, Part::Total | Part::Created),
        MetricType::Counter => part == Part::Bare,
        MetricType::Gauge | MetricType::Unknown | MetricType::StateSet => part == Part::Bare,
        MetricType::Histogram => {
            matches!(suffix, "_bucket" | "_count" | "_sum") || (om && part == Part::Created)
        }
        MetricType::GaugeHistogram => matches!(suffix, "_bucket" | "_gcount" | "_gsum"),
        MetricType::Summary => {
            part == Part::Bare
                || matches!(suffix, "_count" | "_sum")
                || (om && part == Part::Created)
        }
        MetricType::Info => part == Part::Info,
    }
}

fn name_hint(metric_type: MetricType, format: Format) -> &'static str {
    match (metric_type, format) {
        (MetricType::Counter, Format::OpenMetrics) => ": counters take _total and _created samples",
        (MetricType::Histogram, Format::OpenMetrics) => {
            ": histograms take _bucket, _count, _sum and _created samples"
        }
        (MetricType::Histogram, Format::Text) => {
            ": histograms take _bucket, _count and _sum samples"
        }
        (MetricType::GaugeHistogram, _) => {
            ": gauge histograms take _bucket, _gcount and _gsum samples"
        }
        (MetricType::Summary, Format::OpenMetrics) => {
            ": summaries take quantile, _count, _sum and _created samples"
        }
        (MetricType::Info, _) => ": info metrics take _info samples",
        _ => "",
    }
}

/// What the builder keeps of each series, and the rules that read it:
/// everything, to make the model ([`Full`], for `parse` and `check`), or
/// a 128-bit hash and a few bits ([`stream::Marks`], for the streamed
/// check). The family layer (names, metadata, suffixes, labels, values
/// by type) is the builder's own and the same for both.
trait Store: Sized {
    /// What is kept per family.
    type Family: Default + fmt::Debug;

    /// Whether `labels` (of `line`) are, in this order, those of the
    /// family's last series: the lines of one series mostly come in a row.
    fn continues_last(family: &FamilyState<Self::Family>, labels: &LineLabels, line: &str) -> bool;

    /// Adds the sample `point` to the series with `labels` in family
    /// `index` (its last series when `continues_last`), created if new.
    fn add(
        builder: &mut Builder<Self>,
        index: usize,
        continues_last: bool,
        labels: &LineLabels,
        point: &Point<'_, '_>,
    ) -> Result<(), ParseError>;
}

/// The store of `parse` and `check`: every series in the model.
#[derive(Debug)]
struct Full;

/// A sample line once its family, part and special label are known.
struct Point<'s, 'a> {
    /// The sample line.
    sample: &'s Sample<'a>,
    /// Where its line is.
    pos: LinePos,
    /// The part of its series it sets.
    part: Part,
    /// Its family's type.
    metric_type: MetricType,
    /// The value of the `le` or `quantile` label, checked.
    special_value: Option<f64>,
    /// Whether the input is OpenMetrics.
    om: bool,
}

impl Point<'_, '_> {
    /// An error of kind `kind` at `column` of the sample's line.
    fn at(&self, column: u32, kind: ErrorKind) -> ParseError {
        ParseError {
            line: self.pos.line,
            column,
            kind,
        }
    }

    /// The error of a sample that its series already has, given the
    /// series' first timestamp.
    fn duplicate(&self, previous_timestamp: Option<i64>) -> ParseError {
        let kind = match (previous_timestamp, self.sample.timestamp_ms) {
            // OpenMetrics allows several timestamped points of one
            // series; the model holds one value per series.
            (Some(first), Some(this)) if first != this => {
                ErrorKind::SeveralPoints(describe_series(self.sample))
            }
            _ => ErrorKind::DuplicateSeries(describe_series(self.sample)),
        };
        self.at(1, kind)
    }

    /// The column of the sample's exemplar.
    fn exemplar_column(&self) -> u32 {
        column_of(self.sample.exemplar_offset, self.sample)
    }

    /// The `SEEN_*` bit of the part this sample sets, or 0 when a series
    /// takes any number of them (buckets, quantiles).
    fn seen_bit(&self) -> u8 {
        let bit = match self.part {
            Part::Bare | Part::Total | Part::Info => SEEN_VALUE,
            Part::Count => SEEN_COUNT,
            Part::Sum => SEEN_SUM,
            Part::Created => SEEN_CREATED,
            Part::Bucket => 0,
        };
        // Quantile samples share the bare name; they are told apart by value.
        if self.metric_type == MetricType::Summary && self.part == Part::Bare {
            0
        } else {
            bit
        }
    }
}

/// Groups entries into families and checks the rules that span lines.
#[derive(Debug)]
struct Builder<S: Store> {
    format: Format,
    limits: Limits,
    families: Vec<FamilyState<S::Family>>,
    /// Families by metadata name.
    by_name: HashMap<String, usize, HashKeys>,
    /// The family of the last line, checked first and used to find
    /// interleaving in OpenMetrics.
    current: Option<usize>,
    /// Families whose samples are complete (OpenMetrics: another began).
    closed: Vec<bool>,
    n_series: usize,
    /// Keys of the hash of families' names and series' label sets.
    keys: HashKeys,
    /// Scratch: a label spelled out for its hash.
    scratch: Vec<u8>,
    /// Scratch: the labels of the current sample line.
    line_labels: LineLabels,
    /// The sample name last resolved, and what [`Builder::resolve`] found
    /// for it with `current` as it then was. Consecutive lines mostly share
    /// their name, and the answer holds until a metadata line or a new
    /// family changes what `resolve` reads; those clear it.
    resolved_name: String,
    resolved: Option<(Option<usize>, usize, Part)>,
    /// What is kept of the series besides the families' own state.
    store: S,
}

impl<S: Store> Builder<S> {
    fn new(format: Format, limits: Limits, store: S) -> Builder<S> {
        let keys = HashKeys::new();
        Builder {
            format,
            limits,
            families: Vec::new(),
            by_name: HashMap::with_hasher(keys.clone()),
            current: None,
            closed: Vec::new(),
            n_series: 0,
            keys,
            scratch: Vec::new(),
            line_labels: LineLabels::default(),
            resolved_name: String::new(),
            resolved: None,
            store,
        }
    }

    /// Takes one entry; `spans` are the lexer's spans of a sample's labels
    /// (see [`Parser::label_spans`]).
    fn feed(
        &mut self,
        entry: &Entry<'_>,
        spans: &[LabelSpan],
        pos: LinePos,
    ) -> Result<(), ParseError> {
        let at = |column: u32, kind: ErrorKind| ParseError {
            line: pos.line,
            column,
            kind,
        };
        if !matches!(entry, Entry::Sample(_)) {
            self.resolved = None;
        }
        match *entry {
            Entry::Eof => Ok(()),
            Entry::Help { name, ref help } => {
                let index = self.metadata_family(name, "HELP", pos)?;
                let state = &mut self.families[index];
                if state.family.help.is_some() {
                    return Err(at(1, ErrorKind::DuplicateMetadata("HELP", name.to_owned())));
                }
                state.family.help = Some(help.as_ref().to_owned());
                Ok(())
            }
            Entry::Unit { name, unit } => {
                let index = self.metadata_family(name, "UNIT", pos)?;
                let state = &mut self.families[index];
                if state.family.unit.is_some() {
                    return Err(at(1, ErrorKind::DuplicateMetadata("UNIT", name.to_owned())));
                }
                if !unit.is_empty() && takes_no_unit(state.family.metric_type) {
                    return Err(at(1, ErrorKind::UnitNotAllowed(name.to_owned())));
                }
                if !unit.is_empty() {
                    let suffix_ok = name
                        .strip_suffix(unit)
                        .is_some_and(|stem| stem.ends_with('_') && stem.len() > 1);
                    if !suffix_ok {
                        return Err(at(
                            1,
                            ErrorKind::UnitNotSuffix {
                                name: name.to_owned(),
                                unit: unit.to_owned(),
                            },
                        ));
                    }
                    state.family.unit = Some(unit.to_owned());
                }
                Ok(())
            }
            Entry::Type { name, metric_type } => {
                let index = self.metadata_family(name, "TYPE", pos)?;
                let state = &mut self.families[index];
                if state.typed {
                    return Err(at(1, ErrorKind::DuplicateMetadata("TYPE", name.to_owned())));
                }
                if state.n_series != 0 {
                    return Err(at(
                        1,
                        ErrorKind::MetadataAfterSamples("TYPE", name.to_owned()),
                    ));
                }
                if state.family.unit.is_some() && takes_no_unit(metric_type) {
                    return Err(at(1, ErrorKind::UnitNotAllowed(name.to_owned())));
                }
                state.typed = true;
                state.family.metric_type = metric_type;
                Ok(())
            }
            Entry::Sample(ref sample) => {
                // The exemplar's spans follow the sample's.
                let spans = &spans[..sample.labels.len()];
                // Moved out for the call, so that it can be read while the
                // families change.
                let mut labels = std::mem::take(&mut self.line_labels);
                let result = self.add_sample(sample, spans, &mut labels, pos);
                self.line_labels = labels;
                result
            }
        }
    }

    /// The family a metadata line of `name` belongs to, created if new.
    fn metadata_family(
        &mut self,
        name: &str,
        what: &'static str,
        pos: LinePos,
    ) -> Result<usize, ParseError> {
        if let Some(&index) = self.by_name.get(name) {
            if self.format == Format::OpenMetrics {
                if self.current != Some(index) {
                    return Err(ParseError {
                        line: pos.line,
                        column: 1,
                        kind: ErrorKind::InterleavedFamily(name.to_owned()),
                    });
                }
                if self.families[index].n_series != 0 {
                    return Err(ParseError {
                        line: pos.line,
                        column: 1,
                        kind: ErrorKind::MetadataAfterSamples(what, name.to_owned()),
                    });
                }
            }
            return Ok(index);
        }
        let index = self.new_family(name, MetricType::Unknown, pos)?;
        self.switch_to(index);
        Ok(index)
    }

    fn new_family(
        &mut self,
        name: &str,
        metric_type: MetricType,
        pos: LinePos,
    ) -> Result<usize, ParseError> {
        if self.families.len() >= self.limits.max_families {
            return Err(ParseError {
                line: pos.line,
                column: 1,
                kind: ErrorKind::TooManyFamilies {
                    limit: self.limits.max_families,
                },
            });
        }
        self.resolved = None;
        let index = self.families.len();
        self.families.push(FamilyState {
            family: MetricFamily::new(name, metric_type),
            meta_name: name.to_owned(),
            typed: false,
            first_line: pos.line,
            n_series: 0,
            series: S::Family::default(),
        });
        self.closed.push(false);
        self.by_name.insert(name.to_owned(), index);
        Ok(index)
    }

    /// Makes `index` the current family; in OpenMetrics this closes the
    /// previous one.
    fn switch_to(&mut self, index: usize) {
        if let Some(previous) = self.current
            && previous != index
        {
            self.closed[previous] = true;
        }
        self.current = Some(index);
    }

    /// Finds the family and part of a sample name, creating an untyped
    /// family when no declared one takes it.
    fn resolve(&mut self, name: &str, pos: LinePos) -> Result<(usize, Part), ParseError> {
        // Fast path: the family of the previous line, when the name cannot
        // belong to another family by exact match.
        if let Some(current) = self.current {
            let state = &self.families[current];
            if name.len() == state.meta_name.len() {
                if let Some(part) = state.part_of(name, self.format) {
                    return Ok((current, part));
                }
            } else if let Some(part) = state.part_of(name, self.format)
                && !self.by_name.contains_key(name)
            {
                return Ok((current, part));
            }
        }
        if let Some(&index) = self.by_name.get(name) {
            let state = &self.families[index];
            if let Some(part) = state.part_of(name, self.format) {
                return Ok((index, part));
            }
            if state.typed {
                return Err(self.mismatch(name, index, pos));
            }
        }
        for (suffix, _) in SUFFIXES {
            if let Some(stem) = name.strip_suffix(suffix)
                && let Some(&index) = self.by_name.get(stem)
            {
                let state = &self.families[index];
                // A suffix the stem's type does not take starts a family of
                // its own, as OpenMetrics specifies.
                if let Some(part) = state.part_of(name, self.format) {
                    return Ok((index, part));
                }
            }
        }
        if let Some(&index) = self.by_name.get(name) {
            // An untyped family made by a HELP line alone: samples of its
            // exact name are its own.
            return Ok((index, Part::Bare));
        }
        let index = self.new_family(name, MetricType::Unknown, pos)?;
        Ok((index, Part::Bare))
    }

    fn mismatch(&self, name: &str, index: usize, pos: LinePos) -> ParseError {
        let family = &self.families[index];
        ParseError {
            line: pos.line,
            column: 1,
            kind: ErrorKind::SampleNameMismatch {
                sample: name.to_owned(),
                family: family.meta_name.clone(),
                metric_type: match self.format {
                    Format::Text => family.family.metric_type.text_name(),
                    Format::OpenMetrics => family.family.metric_type.openmetrics_name(),
                },
                hint: name_hint(family.family.metric_type, self.format),
            },
        }
    }

    fn add_sample(
        &mut self,
        sample: &Sample<'_>,
        spans: &[LabelSpan],
        labels: &mut LineLabels,
        pos: LinePos,
    ) -> Result<(), ParseError> {
        let om = self.format == Format::OpenMetrics;
        let at = |column: u32, kind: ErrorKind| ParseError {
            line: pos.line,
            column,
            kind,
        };
        let (index, part) = match self.resolved {
            Some((current, index, part))
                if current == self.current && self.resolved_name == sample.name =>
            {
                (index, part)
            }
            _ => {
                let current = self.current;
                let (index, part) = self.resolve(sample.name, pos)?;
                self.resolved = Some((current, index, part));
                self.resolved_name.clear();
                self.resolved_name.push_str(sample.name);
                (index, part)
            }
        };
        if om && self.current != Some(index) && self.closed[index] {
            return Err(at(
                1,
                ErrorKind::InterleavedFamily(self.families[index].meta_name.clone()),
            ));
        }
        self.switch_to(index);
        let metric_type = self.families[index].family.metric_type;

        // The label that is not part of the series' identity.
        let special = match (metric_type, part) {
            (MetricType::Histogram | MetricType::GaugeHistogram, Part::Bucket) => Some("le"),
            (MetricType::Summary, Part::Bare) => Some("quantile"),
            _ => None,
        };
        let line = sample.line;
        let mut special_value = None;
        labels.clear();
        for span in spans {
            if Some(span.name(line)) == special {
                // The offset of the value's opening quote.
                special_value = Some((span.value(line), span.value_start - 1));
            } else {
                labels.push(line, span);
            }
        }
        // Lines of one histogram or summary come in a row: when this line's
        // labels are those of the family's last series, reuse it without
        // hashing. A series of one line cannot be continued, so other
        // families skip the comparison; a repeated series is still found
        // by the lookup, and reported.
        let continues_last = takes_several_lines(metric_type, om)
            && S::continues_last(&self.families[index], labels, line);
        let special_value = match special {
            Some(label) => {
                let Some((text, offset)) = special_value else {
                    return Err(at(
                        1,
                        ErrorKind::MissingLabel(label.to_owned(), sample.name.to_owned()),
                    ));
                };
                let column = || column_of(offset, sample);
                let value = float::parse_go_float(&text).ok_or_else(|| {
                    at(
                        column(),
                        ErrorKind::InvalidLabelFloat(label, text.to_string()),
                    )
                })?;
                check_special_label(metric_type, part, value, om)
                    .map_err(|kind| at(column(), kind))?;
                Some(value)
            }
            None => None,
        };
        if metric_type == MetricType::StateSet && !continues_last {
            let meta_name = &self.families[index].meta_name;
            if !labels
                .iter(line)
                .any(|(name, _)| name == meta_name.as_bytes())
            {
                return Err(at(
                    1,
                    ErrorKind::MissingLabel(meta_name.clone(), sample.name.to_owned()),
                ));
            }
        }

        // Exemplars ride on counter totals and histogram buckets only.
        if sample.exemplar.is_some() {
            let allowed = matches!(
                (metric_type, part),
                (MetricType::Counter, Part::Total)
                    | (
                        MetricType::Histogram | MetricType::GaugeHistogram,
                        Part::Bucket
                    )
            );
            if !allowed {
                return Err(at(
                    column_of(sample.exemplar_offset, sample),
                    ErrorKind::ExemplarNotAllowed(
                        "only counter _total and histogram _bucket samples carry exemplars",
                    ),
                ));
            }
        }

        if om {
            check_openmetrics_value(metric_type, part, sample.value)
                .map_err(|kind| at(column_of(sample.value_offset, sample), kind))?;
        }

        let point = Point {
            sample,
            pos,
            part,
            metric_type,
            special_value,
            om,
        };
        S::add(self, index, continues_last, labels, &point)
    }
}

impl Store for Full {
    type Family = FullFamily;

    fn continues_last(family: &FamilyState<FullFamily>, labels: &LineLabels, line: &str) -> bool {
        family
            .family
            .series
            .last()
            .is_some_and(|last| labels.equal_in_order(line, &last.labels))
    }

    // Inlined into the builder's sample path, as it was before there were
    // two stores: it runs once per sample line.
    #[inline]
    fn add(
        builder: &mut Builder<Full>,
        index: usize,
        continues_last: bool,
        labels: &LineLabels,
        point: &Point<'_, '_>,
    ) -> Result<(), ParseError> {
        let &Point {
            sample,
            pos,
            part,
            special_value,
            om,
            ..
        } = point;
        let series_index = match continues_last {
            // `continues_last` found a last series.
            true => builder.families[index].n_series - 1,
            false => builder.series_for(index, labels, sample.line, pos)?,
        };
        let exemplar = sample.exemplar.as_ref().map(|raw| Exemplar {
            labels: raw
                .labels
                .iter()
                .map(|l| Label {
                    name: l.name.to_owned(),
                    value: l.value.into_owned(),
                })
                .collect(),
            value: raw.value,
            timestamp: raw.timestamp,
        });
        let state = &mut builder.families[index];
        let is_last_series = series_index + 1 == state.family.series.len();
        state.series.series_lines[series_index] = pos.line;
        let seen = &mut state.series.seen[series_index];
        let series = &mut state.family.series[series_index];
        let previous_timestamp = series.timestamp_ms;
        if series.timestamp_ms.is_none() {
            series.timestamp_ms = sample.timestamp_ms;
        }
        let bit = point.seen_bit();
        if bit != 0 {
            if *seen & bit != 0 {
                return Err(point.duplicate(previous_timestamp));
            }
            *seen |= bit;
        }
        // OpenMetrics keeps the lines of one series together.
        if om && !is_last_series {
            return Err(point.at(1, ErrorKind::InterleavedSeries(describe_series(sample))));
        }
        let invalid_histogram =
            |why| point.at(1, ErrorKind::InvalidHistogram(state.meta_name.clone(), why));
        match (&mut series.value, part) {
            (Value::Single(v), _) => *v = sample.value,
            (Value::Counter(c), Part::Bare | Part::Total) => {
                c.total = sample.value;
                c.exemplar = exemplar;
            }
            (Value::Counter(c), Part::Created) => c.created = Some(sample.value),
            (Value::Histogram(h), Part::Bucket) => {
                let last = h.buckets.last().map(|b| (b.upper_bound, b.count));
                check_bucket(point, last, h.count, exemplar.as_ref().map(|e| e.value)).map_err(
                    |error| error.into_error(point, &state.meta_name, previous_timestamp),
                )?;
                h.buckets.push(Bucket {
                    upper_bound: special_value.unwrap_or(f64::INFINITY),
                    count: sample.value,
                    exemplar,
                });
            }
            (Value::Histogram(h), Part::Count) => {
                let inf_bucket = h.buckets.last().filter(|b| b.upper_bound == f64::INFINITY);
                if om && inf_bucket.is_some_and(|b| b.count != sample.value) {
                    return Err(invalid_histogram("_count must equal the +Inf bucket"));
                }
                h.count = Some(sample.value);
            }
            (Value::Histogram(h), Part::Sum) => h.sum = Some(sample.value),
            (Value::Histogram(h), Part::Created) => h.created = Some(sample.value),
            (Value::Summary(s), Part::Bare) => s.quantiles.push(Quantile {
                quantile: special_value.unwrap_or(f64::NAN),
                value: sample.value,
            }),
            (Value::Summary(s), Part::Count) => s.count = Some(sample.value),
            (Value::Summary(s), Part::Sum) => s.sum = Some(sample.value),
            (Value::Summary(s), Part::Created) => s.created = Some(sample.value),
            // `accepts` admits no other pairs.
            _ => {}
        }
        Ok(())
    }
}

/// Why a histogram bucket line is refused.
enum BucketError {
    /// Its `le` is the last bucket's.
    Duplicate,
    /// It breaks the histogram's shape, for this reason.
    Histogram(&'static str),
    /// Its exemplar's value is outside the bucket.
    Exemplar,
}

impl BucketError {
    /// The error, given the series' family and first timestamp.
    fn into_error(
        self,
        point: &Point<'_, '_>,
        family: &str,
        previous_timestamp: Option<i64>,
    ) -> ParseError {
        match self {
            // A bucket's `le` repeats within the series.
            BucketError::Duplicate => point.duplicate(previous_timestamp),
            BucketError::Histogram(why) => point.at(
                1,
                ErrorKind::InvalidHistogram(family.to_owned(), why),
            ),
            BucketError::Exemplar => point.at(
                point.exemplar_column(),
                ErrorKind::ValueOutOfRange(
                    "an exemplar",
                    "its value must fall inside its bucket (above the previous le, at most this le)",
                ),
            ),
        }
    }
}

/// OpenMetrics' rules on a bucket line, given the series' last bucket
/// (bound and count), its `_count` so far and the line's exemplar value.
/// The text format checks none of them.
fn check_bucket(
    point: &Point<'_, '_>,
    last: Option<(f64, f64)>,
    count: Option<f64>,
    exemplar: Option<f64>,
) -> Result<(), BucketError> {
    if !point.om {
        return Ok(());
    }
    let upper_bound = point.special_value.unwrap_or(f64::INFINITY);
    let value = point.sample.value;
    if let Some((last_bound, last_count)) = last {
        if upper_bound == last_bound {
            return Err(BucketError::Duplicate);
        }
        if upper_bound < last_bound {
            return Err(BucketError::Histogram(
                "buckets must be in increasing order of le",
            ));
        }
        if value < last_count {
            return Err(BucketError::Histogram(
                "bucket counts must not decrease as le grows",
            ));
        }
    }
    let lower_bound = last.map_or(f64::NEG_INFINITY, |(bound, _)| bound);
    if let Some(exemplar) = exemplar
        && !(exemplar <= upper_bound && exemplar > lower_bound)
    {
        return Err(BucketError::Exemplar);
    }
    if upper_bound == f64::INFINITY && count.is_some_and(|count| count != value) {
        return Err(BucketError::Histogram("the +Inf bucket must equal _count"));
    }
    Ok(())
}

impl Builder<Full> {
    /// The index of the series with `labels` (of `line`) in family
    /// `index`, created if new.
    fn series_for(
        &mut self,
        index: usize,
        labels: &LineLabels,
        line: &str,
        pos: LinePos,
    ) -> Result<usize, ParseError> {
        let hash = labels.hash64(line, &self.keys, &mut self.scratch);
        let FamilyState {
            family,
            n_series,
            series:
                FullFamily {
                    seen,
                    series_lines,
                    index: series_index,
                    collided,
                },
            ..
        } = &mut self.families[index];
        let metric_type = family.metric_type;
        // One probe finds the series or the free slot for a new one.
        let slot = match series_index.entry(hash) {
            MapEntry::Occupied(slot) => {
                let i = *slot.get();
                let series = &family.series;
                if labels.same_set(line, &series[i].labels) {
                    return Ok(i);
                }
                // Two label sets with one hash: the first keeps the map
                // slot, the others are searched linearly.
                if let Some(i) = collided
                    .iter()
                    .copied()
                    .find(|&i| labels.same_set(line, &series[i].labels))
                {
                    return Ok(i);
                }
                None
            }
            MapEntry::Vacant(slot) => Some(slot),
        };
        if self.n_series >= self.limits.max_series {
            return Err(ParseError {
                line: pos.line,
                column: 1,
                kind: ErrorKind::TooManySeries {
                    limit: self.limits.max_series,
                },
            });
        }
        self.n_series += 1;
        let value = match metric_type {
            MetricType::Counter => Value::Counter(Counter {
                total: 0.0,
                created: None,
                exemplar: None,
            }),
            MetricType::Histogram | MetricType::GaugeHistogram => Value::Histogram(Histogram {
                // Series of a family mostly share their buckets: room for as
                // many as the last one has saves growing one by one.
                buckets: Vec::with_capacity(match family.series.last() {
                    Some(Series {
                        value: Value::Histogram(last),
                        ..
                    }) => last.buckets.len(),
                    _ => 0,
                }),
                count: None,
                sum: None,
                created: None,
            }),
            MetricType::Summary => Value::Summary(Summary {
                quantiles: Vec::new(),
                count: None,
                sum: None,
                created: None,
            }),
            _ => Value::Single(0.0),
        };
        let i = family.series.len();
        family.series.push(Series {
            labels: labels.to_owned(line),
            value,
            timestamp_ms: None,
        });
        seen.push(0);
        series_lines.push(pos.line);
        *n_series += 1;
        match slot {
            Some(slot) => {
                slot.insert(i);
            }
            None => collided.push(i),
        }
        Ok(i)
    }

    /// Ends the input: checks what needs every line, fixes names.
    fn finish(self) -> (Vec<MetricFamily>, Vec<u32>, Vec<ParseError>) {
        let om = self.format == Format::OpenMetrics;
        let mut errors = Vec::new();
        let mut families = Vec::with_capacity(self.families.len());
        let mut lines = Vec::with_capacity(self.families.len());
        for mut state in self.families {
            // Only these have anything for `finish_series` to check; the
            // others are left untouched.
            let metric_type = state.family.metric_type;
            let checked = match metric_type {
                MetricType::Histogram | MetricType::GaugeHistogram | MetricType::Summary => true,
                MetricType::Counter => om,
                MetricType::Gauge
                | MetricType::Unknown
                | MetricType::StateSet
                | MetricType::Info => false,
            };
            let to_check: &mut [Series] = if checked {
                &mut state.family.series
            } else {
                &mut []
            };
            for (i, series) in to_check.iter_mut().enumerate() {
                if let Err(reason) = finish_series(series, metric_type, state.series.seen[i], om) {
                    errors.push(ParseError {
                        line: state.series.series_lines[i],
                        column: 1,
                        kind: reason.into_kind(&state.meta_name),
                    });
                }
            }
            if om && state.family.metric_type == MetricType::Counter {
                state.family.name.push_str("_total");
            }
            lines.push(state.first_line);
            families.push(state.family);
        }
        (families, lines, errors)
    }
}

/// Whether a series of `metric_type` may have several lines; the others
/// have one line, setting their value.
fn takes_several_lines(metric_type: MetricType, om: bool) -> bool {
    match metric_type {
        MetricType::Histogram | MetricType::GaugeHistogram | MetricType::Summary => true,
        MetricType::Counter => om,
        MetricType::Gauge | MetricType::Unknown | MetricType::StateSet | MetricType::Info => false,
    }
}

/// Why a series is incomplete or inconsistent once all lines are read.
enum FinishError {
    Histogram(&'static str),
    Duplicate(&'static str),
    Missing(&'static str),
}

impl FinishError {
    fn into_kind(self, family: &str) -> ErrorKind {
        match self {
            FinishError::Histogram(why) => ErrorKind::InvalidHistogram(family.to_owned(), why),
            FinishError::Duplicate(what) => {
                ErrorKind::DuplicateSeries(format!("{family} ({what})"))
            }
            FinishError::Missing(what) => ErrorKind::ValueOutOfRange("series", what),
        }
    }
}

fn finish_series(
    series: &mut Series,
    metric_type: MetricType,
    seen: u8,
    om: bool,
) -> Result<(), FinishError> {
    match &mut series.value {
        Value::Histogram(h) => {
            if !om {
                // The text format allows buckets in any order; the model
                // keeps them sorted.
                h.buckets
                    .sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
            }
            if h.buckets
                .windows(2)
                .any(|w| w[0].upper_bound == w[1].upper_bound)
            {
                return Err(FinishError::Duplicate("two buckets with the same le"));
            }
            if om {
                if h.buckets
                    .last()
                    .is_none_or(|last| last.upper_bound != f64::INFINITY)
                {
                    return Err(FinishError::Histogram("a +Inf bucket is required"));
                }
                if h.sum.is_some() != h.count.is_some() {
                    return Err(FinishError::Histogram(
                        if metric_type == MetricType::GaugeHistogram {
                            "_gsum and _gcount come together or not at all"
                        } else {
                            "_sum and _count come together or not at all"
                        },
                    ));
                }
            }
            Ok(())
        }
        Value::Summary(s) => {
            if has_equal_quantiles(&s.quantiles) {
                return Err(FinishError::Duplicate("two samples with the same quantile"));
            }
            Ok(())
        }
        Value::Counter(_) if om && seen & SEEN_VALUE == 0 => Err(FinishError::Missing(
            "counter has _created but no _total sample",
        )),
        _ => Ok(()),
    }
}

/// Quantile lists up to this long are checked pair by pair, without
/// allocating: a summary has a handful.
const FEW_QUANTILES: usize = 16;

/// Whether two quantiles are equal (by `==`: NaN equals nothing, `-0`
/// equals `0`).
fn has_equal_quantiles(quantiles: &[Quantile]) -> bool {
    if quantiles.len() <= FEW_QUANTILES {
        return quantiles
            .iter()
            .enumerate()
            .any(|(i, a)| quantiles[i + 1..].iter().any(|b| a.quantile == b.quantile));
    }
    // Sorted by total order, values equal by `==` end up next to each other.
    let mut sorted: Vec<f64> = quantiles.iter().map(|q| q.quantile).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// Whether OpenMetrics forbids a unit on families of this type.
fn takes_no_unit(metric_type: MetricType) -> bool {
    matches!(metric_type, MetricType::Info | MetricType::StateSet)
}

/// Rules on the `le` and `quantile` label values.
fn check_special_label(
    metric_type: MetricType,
    part: Part,
    value: f64,
    om: bool,
) -> Result<(), ErrorKind> {
    match (metric_type, part) {
        (MetricType::Histogram | MetricType::GaugeHistogram, Part::Bucket) if value.is_nan() => {
            Err(ErrorKind::ValueOutOfRange(
                "label \"le\"",
                "it must be a number or +Inf, not NaN",
            ))
        }
        (MetricType::Summary, Part::Bare) if om && !(0.0..=1.0).contains(&value) => Err(
            ErrorKind::ValueOutOfRange("label \"quantile\"", "it must be between 0 and 1"),
        ),
        _ => Ok(()),
    }
}

/// OpenMetrics' rules on values by type and part.
fn check_openmetrics_value(
    metric_type: MetricType,
    part: Part,
    value: f64,
) -> Result<(), ErrorKind> {
    let counting = matches!(
        (metric_type, part),
        (MetricType::Counter, Part::Total)
            | (MetricType::Histogram, Part::Bucket | Part::Count)
            | (MetricType::GaugeHistogram, Part::Bucket)
            | (MetricType::Summary, Part::Count)
    );
    if counting && (value.is_nan() || value < 0.0) {
        return Err(ErrorKind::ValueOutOfRange(
            "a counter, bucket or count",
            "it must be a number of 0 or more, not NaN",
        ));
    }
    if metric_type == MetricType::Info && value != 1.0 {
        return Err(ErrorKind::ValueOutOfRange(
            "an info metric",
            "its value must be 1",
        ));
    }
    if metric_type == MetricType::StateSet && value != 0.0 && value != 1.0 {
        return Err(ErrorKind::ValueOutOfRange(
            "a state set",
            "each state's value must be 0 or 1",
        ));
    }
    Ok(())
}

/// One label of a sample line, as ranges of bytes.
#[derive(Debug, Clone)]
struct LineLabel {
    /// The name, in the line.
    name: Range<usize>,
    /// The unescaped value: in the line, or in [`LineLabels::decoded`]
    /// when it had escapes.
    value: Range<usize>,
    decoded: bool,
}

/// The labels of one sample line (its special `le` or `quantile` label
/// left out), as ranges of the line: read once from the lexer's spans,
/// compared and hashed as bytes without allocating, and made owned only
/// when they start a new series.
#[derive(Debug, Default)]
struct LineLabels {
    labels: Vec<LineLabel>,
    /// The values that had escapes, unescaped.
    decoded: String,
}

impl LineLabels {
    fn clear(&mut self) {
        self.labels.clear();
        self.decoded.clear();
    }

    fn push(&mut self, line: &str, span: &LabelSpan) {
        let (value, decoded) = if span.escaped {
            let start = self.decoded.len();
            unescape_into(span.raw_value(line), &mut self.decoded);
            (start..self.decoded.len(), true)
        } else {
            (span.value_start..span.value_end, false)
        };
        self.labels.push(LineLabel {
            name: span.name_start..span.name_end,
            value,
            decoded,
        });
    }

    /// Name and unescaped value of each label, in line order, as bytes:
    /// slicing them as `str` would check for character boundaries again.
    fn iter<'s>(&'s self, line: &'s str) -> impl Iterator<Item = (&'s [u8], &'s [u8])> + 's {
        let line = line.as_bytes();
        let decoded = self.decoded.as_bytes();
        self.labels.iter().map(move |label| {
            let values = if label.decoded { decoded } else { line };
            (&line[label.name.clone()], &values[label.value.clone()])
        })
    }

    /// Name and unescaped value of each label, in line order.
    fn iter_str<'s>(&'s self, line: &'s str) -> impl Iterator<Item = (&'s str, &'s str)> + 's {
        self.labels.iter().map(move |label| {
            let values = if label.decoded {
                self.decoded.as_str()
            } else {
                line
            };
            (&line[label.name.clone()], &values[label.value.clone()])
        })
    }

    /// Whether these are exactly `labels`, in the same order.
    fn equal_in_order(&self, line: &str, labels: &[Label]) -> bool {
        self.labels.len() == labels.len()
            && self.iter(line).zip(labels).all(|((name, value), label)| {
                same_bytes(value, label.value.as_bytes()) && same_bytes(name, label.name.as_bytes())
            })
    }

    /// Whether these are the label set `labels`, in any order (names are
    /// unique in both).
    fn same_set(&self, line: &str, labels: &[Label]) -> bool {
        self.labels.len() == labels.len()
            && (self.equal_in_order(line, labels)
                || self.iter(line).all(|(name, value)| {
                    labels.iter().any(|label| {
                        label.name.as_bytes() == name && label.value.as_bytes() == value
                    })
                }))
    }

    /// The 128-bit hash of the label set, whatever the order of its labels
    /// (see [`HashKeys`]); `scratch` is reused to spell each label.
    fn hash(&self, line: &str, keys: &HashKeys, scratch: &mut Vec<u8>) -> u128 {
        self.iter(line).fold(0u128, |sum, (name, value)| {
            spell_label(scratch, name, value);
            sum.wrapping_add(keys.hash128(scratch))
        })
    }

    /// [`LineLabels::hash`] in 64 bits, cheaper, for an index that compares
    /// the labels on a match.
    fn hash64(&self, line: &str, keys: &HashKeys, scratch: &mut Vec<u8>) -> u64 {
        self.iter(line).fold(0u64, |sum, (name, value)| {
            spell_label(scratch, name, value);
            sum.wrapping_add(keys.hash64(scratch))
        })
    }

    /// The labels as the model holds them.
    fn to_owned(&self, line: &str) -> Vec<Label> {
        let mut labels = Vec::with_capacity(self.labels.len());
        labels.extend(self.labels.iter().map(|label| {
            let values = if label.decoded {
                self.decoded.as_str()
            } else {
                line
            };
            Label {
                name: line[label.name.clone()].to_owned(),
                value: values[label.value.clone()].to_owned(),
            }
        }));
        labels
    }
}

/// `name=value` into `scratch`, the bytes a label is hashed as.
fn spell_label(scratch: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    scratch.clear();
    scratch.extend_from_slice(name);
    scratch.push(b'=');
    scratch.extend_from_slice(value);
}

/// The keys of the builder's hashes, drawn from [`RandomState`] once per
/// parse: a random xxh3 secret, so that an input cannot be crafted to make
/// its series or families collide (no hash is ever shown).
///
/// A label set is hashed to 128 bits, whatever the order of its labels:
/// the wrapping sum of one xxh3-128 per label (its name, `=`, its value;
/// names hold no `=`, so the encoding is unambiguous). Two distinct sets
/// differ in at least one label, whose hash is independent of the others,
/// so their sums collide with probability about 2^-128: a map of millions
/// of series has no collision in practice; the streamed check keeps only
/// these hashes. `parse` and `check`, which compare labels when two sets
/// share a hash, use the same sum in 64 bits (xxh3-64), which is cheaper.
#[derive(Clone)]
struct HashKeys {
    /// The xxh3 secret of the label-set hashes, shared by the builder's maps.
    secret: Arc<[u8; SECRET_BYTES]>,
    /// The seed of the family-name maps' hasher.
    name_seed: u64,
}

/// The size of the xxh3 secret: the size of its default secret.
const SECRET_BYTES: usize = 192;

impl fmt::Debug for HashKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys stay secret, in logs too.
        f.debug_struct("HashKeys").finish_non_exhaustive()
    }
}

impl HashKeys {
    /// Keys drawn at random.
    fn new() -> HashKeys {
        let random = RandomState::new();
        let mut secret = [0u8; SECRET_BYTES];
        for (i, chunk) in secret.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&random.hash_one(i).to_le_bytes());
        }
        HashKeys {
            secret: Arc::new(secret),
            name_seed: random.hash_one(usize::MAX),
        }
    }

    /// The 128-bit hash of `bytes`.
    fn hash128(&self, bytes: &[u8]) -> u128 {
        xxh3_128_with_secret(bytes, &self.secret[..])
    }

    /// The 64-bit hash of `bytes`.
    fn hash64(&self, bytes: &[u8]) -> u64 {
        xxh3_64_with_secret(bytes, &self.secret[..])
    }
}

impl BuildHasher for HashKeys {
    type Hasher = NameHasher;

    fn build_hasher(&self) -> NameHasher {
        NameHasher {
            state: self.name_seed,
        }
    }
}

/// The [`Hasher`] of maps whose keys are already keyed hashes (the series
/// indexes): the key is its own hash.
#[derive(Debug, Clone, Copy, Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `u64` and `u128` keys; any mixing would do.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }

    fn write_u128(&mut self, i: u128) {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the halves of the hash are meant to be split"
        )]
        let (low, high) = (i as u64, (i >> 64) as u64);
        self.0 = low ^ high;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The [`Hasher`] of [`HashKeys`], for the family-name maps: seeded xxh3.
#[derive(Debug, Clone)]
struct NameHasher {
    /// The hash so far, the seed of the next write.
    state: u64,
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.state = xxh3_64_with_seed(bytes, self.state);
    }

    fn write_u8(&mut self, i: u8) {
        // `str` keys end with one `0xff` after their bytes, whose hash is
        // already mixed: a multiply by an odd constant (a bijection) keeps
        // it so, where another xxh3 call would cost as much as the name's.
        self.state = (self.state ^ u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u64(&mut self, i: u64) {
        self.state = xxh3_64_with_seed(&i.to_le_bytes(), self.state);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// `name{a="b",...}` for error messages.
fn describe_series(sample: &Sample<'_>) -> String {
    let mut out = String::from(sample.name);
    if sample.labels.is_empty() {
        return out;
    }
    out.push('{');
    for (i, label) in sample.labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(label.name);
        out.push_str("=\"");
        out.push_str(&label.value);
        out.push('"');
    }
    out.push('}');
    out
}

/// The column (in characters, from 1) of a byte offset in a sample's line.
fn column_of(offset: usize, sample: &Sample<'_>) -> u32 {
    let chars = sample
        .line
        .get(..offset)
        .map_or(offset, |prefix| prefix.chars().count());
    u32::try_from(chars + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels of `line` as the builder reads them, through the lexer.
    fn line_labels(line: &str) -> LineLabels {
        let input = format!("{line}\n");
        let mut parser = Parser::new(input.as_bytes(), Format::Text, Limits::default())
            .expect("test lines are UTF-8");
        let Some(Ok((Entry::Sample(sample), _))) = parser.next_entry() else {
            panic!("{line} is a valid sample line");
        };
        let mut labels = LineLabels::default();
        for span in &parser.label_spans()[..sample.labels.len()] {
            // Offsets are within the line, which starts the input.
            labels.push(line, span);
        }
        labels
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|&(n, v)| Label::new(n, v)).collect()
    }

    #[test]
    fn label_set_hash_ignores_order_and_sees_every_byte() {
        let keys = HashKeys::new();
        let mut scratch = Vec::new();
        let mut hash = |line: &str| line_labels(line).hash(line, &keys, &mut scratch);
        assert_eq!(hash(r#"m{a="1",b="2"} 1"#), hash(r#"m{b="2",a="1"} 1"#));
        assert_eq!(
            hash(r#"m{a="x\"y"} 1"#),
            hash(r#"m {a = "x\"y" } 1"#),
            "escapes and blanks are not part of the identity"
        );
        let distinct = [
            r#"m 1"#,
            r#"m{a="1"} 1"#,
            r#"m{a="2"} 1"#,
            r#"m{b="1"} 1"#,
            r#"m{a="1",b="2"} 1"#,
            r#"m{a="2",b="1"} 1"#,
            r#"m{a="12"} 1"#,
            r#"m{a1="2"} 1"#,
            r#"m{a=""} 1"#,
            r#"m{a="\n"} 1"#,
            r#"m{a="n"} 1"#,
            r#"m{a="b=c"} 1"#,
            r#"m{a_b="c"} 1"#,
        ];
        let hashes: Vec<u128> = distinct.iter().map(|line| hash(line)).collect();
        for (i, a) in hashes.iter().enumerate() {
            for (j, b) in hashes.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{} and {}", distinct[i], distinct[j]);
            }
        }
    }

    #[test]
    fn label_sets_that_the_old_hash_confused_are_told_apart() {
        // Two labels cycling through values, and one numbered label: the
        // shapes whose 64-bit folded-multiply hashes collided by the
        // thousand. Every set must have a hash of its own.
        let keys = HashKeys::new();
        let mut scratch = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000u32 {
            for line in [
                format!("m{{a=\"{}\",b=\"{}\"}} 1", i % 100, i / 100),
                format!("m{{id=\"{i}\"}} 1"),
            ] {
                let hash = line_labels(&line).hash(&line, &keys, &mut scratch);
                assert!(seen.insert(hash), "{line} collides");
            }
        }
    }

    #[test]
    fn line_labels_compare_with_owned_labels() {
        let line = r#"m{b="x\\y",a="1"} 1"#;
        let labels = line_labels(line);
        let same_order = owned(&[("b", "x\\y"), ("a", "1")]);
        let other_order = owned(&[("a", "1"), ("b", "x\\y")]);
        assert!(labels.equal_in_order(line, &same_order));
        assert!(!labels.equal_in_order(line, &other_order));
        assert!(labels.same_set(line, &other_order));
        assert!(!labels.same_set(line, &owned(&[("a", "1"), ("b", "x\\\\y")])));
        assert!(!labels.same_set(line, &owned(&[("a", "1")])));
        assert_eq!(labels.to_owned(line), same_order);
    }

    #[test]
    fn equal_quantiles_are_found_with_or_without_sorting() {
        let quantiles = |values: &[f64]| -> Vec<Quantile> {
            values
                .iter()
                .map(|&quantile| Quantile {
                    quantile,
                    value: 0.0,
                })
                .collect()
        };
        let cases: &[(&[f64], bool)] = &[
            (&[0.5, 0.9, 0.99], false),
            (&[0.5, 0.9, 0.5], true),
            (&[f64::NAN, f64::NAN], false),
            (&[-0.0, 0.5, 0.0], true),
            (&[], false),
        ];
        for &(values, expected) in cases {
            assert_eq!(
                has_equal_quantiles(&quantiles(values)),
                expected,
                "{values:?}"
            );
            // The same, past the pairwise limit.
            let mut padded: Vec<f64> = (0..FEW_QUANTILES).map(|i| 2.0 + i as f64).collect();
            padded.extend_from_slice(values);
            assert_eq!(
                has_equal_quantiles(&quantiles(&padded)),
                expected,
                "{padded:?}"
            );
        }
    }
}
