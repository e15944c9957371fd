//! Parsing text 0.0.4 and OpenMetrics 1.0 expositions into metric families.
//!
//! Two layers: [`Parser`] checks and yields one line at a time without
//! copying; the builder here groups its samples into families and series,
//! and enforces the rules that span lines (metadata order, suffixes,
//! duplicates, histogram shape).

mod float;
mod lexer;

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

pub use lexer::{Entry, LinePos, Parser, RawExemplar, RawLabel, RawLabels, RawLabelsIter, Sample};

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
    let mut builder = Builder::new(format, limits);
    while let Some(entry) = parser.next_entry() {
        let (entry, pos) = entry?;
        builder.feed(entry, pos)?;
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
    let mut builder = Builder::new(format, limits);
    let mut errors = Vec::new();
    while let Some(entry) = parser.next_entry() {
        let result = entry.and_then(|(entry, pos)| builder.feed(entry, pos));
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
struct FamilyState {
    family: MetricFamily,
    /// The name on metadata lines (the OpenMetrics family name).
    meta_name: String,
    /// Whether a `# TYPE` line was seen.
    typed: bool,
    /// Line where the family first appeared.
    first_line: u32,
    /// For each series: the parts seen (`SEEN_*` bits).
    seen: Vec<u8>,
    /// For each series: the line of its first sample, for late errors.
    series_lines: Vec<u32>,
    /// Series by the hash of their (order-insensitive) label set.
    index: HashMap<u64, usize>,
    /// Series whose hash collided with another's; searched linearly.
    collided: Vec<usize>,
}

impl FamilyState {
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

/// Groups entries into families and checks the rules that span lines.
#[derive(Debug)]
struct Builder {
    format: Format,
    limits: Limits,
    families: Vec<FamilyState>,
    /// Families by metadata name.
    by_name: HashMap<String, usize>,
    /// The family of the last line, checked first and used to find
    /// interleaving in OpenMetrics.
    current: Option<usize>,
    /// Families whose samples are complete (OpenMetrics: another began).
    closed: Vec<bool>,
    n_series: usize,
    hasher: RandomState,
    /// Scratch: label order for hashing, reused across samples.
    order: Vec<usize>,
}

impl Builder {
    fn new(format: Format, limits: Limits) -> Builder {
        Builder {
            format,
            limits,
            families: Vec::new(),
            by_name: HashMap::new(),
            current: None,
            closed: Vec::new(),
            n_series: 0,
            hasher: RandomState::new(),
            order: Vec::new(),
        }
    }

    fn feed(&mut self, entry: Entry<'_>, pos: LinePos) -> Result<(), ParseError> {
        let at = |column: u32, kind: ErrorKind| ParseError {
            line: pos.line,
            column,
            kind,
        };
        match entry {
            Entry::Eof => Ok(()),
            Entry::Help { name, help } => {
                let index = self.metadata_family(name, "HELP", pos)?;
                let state = &mut self.families[index];
                if state.family.help.is_some() {
                    return Err(at(1, ErrorKind::DuplicateMetadata("HELP", name.to_owned())));
                }
                state.family.help = Some(help.into_owned());
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
                if !state.family.series.is_empty() {
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
            Entry::Sample(sample) => self.add_sample(&sample, pos),
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
                if !self.families[index].family.series.is_empty() {
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
        let index = self.families.len();
        self.families.push(FamilyState {
            family: MetricFamily::new(name, metric_type),
            meta_name: name.to_owned(),
            typed: false,
            first_line: pos.line,
            seen: Vec::new(),
            series_lines: Vec::new(),
            index: HashMap::new(),
            collided: Vec::new(),
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

    fn add_sample(&mut self, sample: &Sample<'_>, pos: LinePos) -> Result<(), ParseError> {
        let om = self.format == Format::OpenMetrics;
        let at = |column: u32, kind: ErrorKind| ParseError {
            line: pos.line,
            column,
            kind,
        };
        let (index, part) = self.resolve(sample.name, pos)?;
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
        // Lines of one histogram or summary come in a row: when this line's
        // labels are those of the family's last series, reuse it without
        // allocating or hashing.
        let family_series = &self.families[index].family.series;
        let reuse = family_series
            .len()
            .checked_sub(1)
            .filter(|&last| same_as_series(&sample.labels, special, &family_series[last].labels));
        let mut special_value = None;
        let mut labels = Vec::new();
        if reuse.is_none() {
            labels.reserve_exact(sample.labels.len());
        }
        for label in sample.labels.iter() {
            if Some(label.name) == special {
                special_value = Some((label.value, label.value_offset));
            } else if reuse.is_none() {
                labels.push(Label {
                    name: label.name.to_owned(),
                    value: label.value.into_owned(),
                });
            }
        }
        let special_value = match special {
            Some(label) => {
                let Some((text, offset)) = special_value else {
                    return Err(at(
                        1,
                        ErrorKind::MissingLabel(label.to_owned(), sample.name.to_owned()),
                    ));
                };
                let column = column_of(offset, sample);
                let value = float::parse_go_float(&text).ok_or_else(|| {
                    at(
                        column,
                        ErrorKind::InvalidLabelFloat(label, text.to_string()),
                    )
                })?;
                check_special_label(metric_type, part, value, om)
                    .map_err(|kind| at(column, kind))?;
                Some(value)
            }
            None => None,
        };
        if metric_type == MetricType::StateSet && reuse.is_none() {
            let meta_name = &self.families[index].meta_name;
            if !labels.iter().any(|l| &l.name == meta_name) {
                return Err(at(
                    1,
                    ErrorKind::MissingLabel(meta_name.clone(), sample.name.to_owned()),
                ));
            }
        }

        // Exemplars ride on counter totals and histogram buckets only.
        let exemplar_column = column_of(sample.exemplar_offset, sample);
        let exemplar = match &sample.exemplar {
            None => None,
            Some(raw) => {
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
                        exemplar_column,
                        ErrorKind::ExemplarNotAllowed(
                            "only counter _total and histogram _bucket samples carry exemplars",
                        ),
                    ));
                }
                Some(Exemplar {
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
                })
            }
        };

        let value_column = column_of(sample.value_offset, sample);
        if om {
            check_openmetrics_value(metric_type, part, sample.value)
                .map_err(|kind| at(value_column, kind))?;
        }

        let series_index = match reuse {
            Some(series_index) => series_index,
            None => self.series_for(index, labels, pos)?,
        };
        let state = &mut self.families[index];
        let is_last_series = series_index + 1 == state.family.series.len();
        state.series_lines[series_index] = pos.line;
        let seen = &mut state.seen[series_index];
        let series = &mut state.family.series[series_index];
        let previous_timestamp = series.timestamp_ms;
        if series.timestamp_ms.is_none() {
            series.timestamp_ms = sample.timestamp_ms;
        }
        let duplicate = || {
            let kind = match (previous_timestamp, sample.timestamp_ms) {
                // OpenMetrics allows several timestamped points of one
                // series; the model holds one value per series.
                (Some(first), Some(this)) if first != this => {
                    ErrorKind::SeveralPoints(describe_series(sample))
                }
                _ => ErrorKind::DuplicateSeries(describe_series(sample)),
            };
            at(1, kind)
        };
        let bit = match part {
            Part::Bare | Part::Total | Part::Info => SEEN_VALUE,
            Part::Count => SEEN_COUNT,
            Part::Sum => SEEN_SUM,
            Part::Created => SEEN_CREATED,
            Part::Bucket => 0,
        };
        // Quantile samples share the bare name; they are told apart by value.
        if bit != 0 && !(metric_type == MetricType::Summary && part == Part::Bare) {
            if *seen & bit != 0 {
                return Err(duplicate());
            }
            *seen |= bit;
        }
        // OpenMetrics keeps the lines of one series together.
        if om && !is_last_series {
            return Err(at(1, ErrorKind::InterleavedSeries(describe_series(sample))));
        }
        let invalid_histogram =
            |why| at(1, ErrorKind::InvalidHistogram(state.meta_name.clone(), why));
        match (&mut series.value, part) {
            (Value::Single(v), _) => *v = sample.value,
            (Value::Counter(c), Part::Bare | Part::Total) => {
                c.total = sample.value;
                c.exemplar = exemplar;
            }
            (Value::Counter(c), Part::Created) => c.created = Some(sample.value),
            (Value::Histogram(h), Part::Bucket) => {
                let upper_bound = special_value.unwrap_or(f64::INFINITY);
                let lower_bound = h
                    .buckets
                    .last()
                    .map_or(f64::NEG_INFINITY, |b| b.upper_bound);
                if let Some(last) = h.buckets.last()
                    && om
                {
                    if upper_bound == last.upper_bound {
                        return Err(duplicate());
                    }
                    if upper_bound < last.upper_bound {
                        return Err(invalid_histogram(
                            "buckets must be in increasing order of le",
                        ));
                    }
                    if sample.value < last.count {
                        return Err(invalid_histogram(
                            "bucket counts must not decrease as le grows",
                        ));
                    }
                }
                if let Some(exemplar) = &exemplar
                    && om
                    && !(exemplar.value <= upper_bound && exemplar.value > lower_bound)
                {
                    return Err(at(
                        exemplar_column,
                        ErrorKind::ValueOutOfRange(
                            "an exemplar",
                            "its value must fall inside its bucket (above the previous le, at most this le)",
                        ),
                    ));
                }
                if om
                    && upper_bound == f64::INFINITY
                    && h.count.is_some_and(|count| count != sample.value)
                {
                    return Err(invalid_histogram("the +Inf bucket must equal _count"));
                }
                h.buckets.push(Bucket {
                    upper_bound,
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

    /// The index of the series with `labels` in family `index`, created if new.
    fn series_for(
        &mut self,
        index: usize,
        labels: Vec<Label>,
        pos: LinePos,
    ) -> Result<usize, ParseError> {
        self.order.clear();
        self.order.extend(0..labels.len());
        self.order
            .sort_unstable_by(|&a, &b| labels[a].name.cmp(&labels[b].name));
        let mut hasher = self.hasher.build_hasher();
        for &i in &self.order {
            labels[i].hash(&mut hasher);
        }
        let hash = hasher.finish();
        let state = &mut self.families[index];
        let metric_type = state.family.metric_type;
        let existing = match state.index.get(&hash) {
            Some(&i) if same_labels(&state.family.series[i].labels, &labels) => Some(i),
            Some(_) => state
                .collided
                .iter()
                .copied()
                .find(|&i| same_labels(&state.family.series[i].labels, &labels)),
            None => None,
        };
        if let Some(i) = existing {
            return Ok(i);
        }
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
                buckets: Vec::new(),
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
        let i = state.family.series.len();
        state.family.series.push(Series {
            labels,
            value,
            timestamp_ms: None,
        });
        state.seen.push(0);
        state.series_lines.push(pos.line);
        match state.index.entry(hash) {
            MapEntry::Vacant(slot) => {
                slot.insert(i);
            }
            // Two label sets with one hash: the first keeps the map slot,
            // the newcomer is found by the linear search of `collided`.
            MapEntry::Occupied(_) => state.collided.push(i),
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
            let name = state.meta_name.clone();
            for (i, series) in state.family.series.iter_mut().enumerate() {
                let line = state.series_lines[i];
                let seen = state.seen[i];
                if let Err(reason) = finish_series(series, state.family.metric_type, seen, om) {
                    errors.push(ParseError {
                        line,
                        column: 1,
                        kind: reason.into_kind(&name),
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
            let mut quantiles: Vec<f64> = s.quantiles.iter().map(|q| q.quantile).collect();
            quantiles.sort_by(f64::total_cmp);
            if quantiles.windows(2).any(|w| w[0] == w[1]) {
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

/// Whether `raw`, without the label `special`, is exactly `labels` in order.
fn same_as_series(raw: &RawLabels<'_>, special: Option<&str>, labels: &[Label]) -> bool {
    let mut n_matched = 0;
    for label in raw.iter() {
        if Some(label.name) == special {
            continue;
        }
        match labels.get(n_matched) {
            Some(l) if l.name == label.name && l.value == label.value => n_matched += 1,
            _ => return false,
        }
    }
    n_matched == labels.len()
}

fn same_labels(a: &[Label], b: &[Label]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x == y))
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
