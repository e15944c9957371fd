//! Instance-metric lines: `<prefix> <base64 of a JSON array>`, each element
//! `{"metric": {...}}` in Vector's metric model. This module reads what
//! follows the prefix and its space.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{
    self, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Unexpected,
    Visitor,
};
use serde_json::value::RawValue;

/// Bounds of one line's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorLimits {
    /// Most metrics in one line; past it the line is refused.
    pub max_metrics: usize,
    /// Most tags on one metric; past it the metric is refused.
    pub max_tags: usize,
    /// Most values in one metric (set members, distribution samples,
    /// buckets, quantiles); past it the metric is refused.
    pub max_values: usize,
}

impl Default for VectorLimits {
    fn default() -> VectorLimits {
        VectorLimits {
            max_metrics: 10_000,
            max_tags: 64,
            max_values: 4096,
        }
    }
}

/// Whether a metric replaces what is held (`absolute`) or adds to it
/// (`incremental`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorKind {
    Absolute,
    Incremental,
}

/// How a distribution is to be summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Histogram,
    Summary,
}

/// A metric's value, one of Vector's value kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorValue {
    Counter(f64),
    Gauge(f64),
    /// The members of a set.
    Set(Vec<String>),
    /// Samples as `(value, rate)`: `rate` is how many times the value was
    /// seen.
    Distribution {
        samples: Vec<(f64, u32)>,
        statistic: Statistic,
    },
    /// Buckets as `(upper_limit, count)`, counts per bucket as sent (not
    /// cumulative), in the order sent.
    AggregatedHistogram {
        buckets: Vec<(f64, f64)>,
        count: f64,
        sum: f64,
    },
    /// Quantiles as `(quantile, value)`.
    AggregatedSummary {
        quantiles: Vec<(f64, f64)>,
        count: f64,
        sum: f64,
    },
}

/// One metric of a line.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorMetric {
    pub name: String,
    /// Vector's namespace, when one was given and is not empty.
    pub namespace: Option<String>,
    /// Tags with one value each, in the order sent: of an array the last
    /// string, a null (a bare tag) or an array of nulls left out.
    pub tags: Vec<(String, String)>,
    pub kind: VectorKind,
    pub value: VectorValue,
}

/// What one line held: the metrics read, and why each other element was
/// refused (the rest of the line is still read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorLine {
    pub metrics: Vec<VectorMetric>,
    pub rejected: Vec<VectorError>,
}

/// Why a line, or one metric of it, was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorError {
    /// The payload is not standard base64.
    Base64,
    /// The decoded payload is not a JSON array of objects; the parser's
    /// message.
    Json(String),
    /// The line holds more metrics than allowed.
    TooManyMetrics(usize),
    /// An element has no value of a known kind; the kinds it had.
    UnknownKind(String),
    /// An element is not a valid metric (a missing name, a kind other than
    /// absolute or incremental, a value of the wrong type, more than one
    /// value kind, too many tags or values); what was wrong.
    Invalid(String),
}

impl VectorError {
    /// A short label value naming the reason: `base64`, `json`,
    /// `too_many_metrics`, `unknown_kind`, `invalid_metric`.
    pub fn reason(&self) -> &'static str {
        match self {
            VectorError::Base64 => "base64",
            VectorError::Json(_) => "json",
            VectorError::TooManyMetrics(_) => "too_many_metrics",
            VectorError::UnknownKind(_) => "unknown_kind",
            VectorError::Invalid(_) => "invalid_metric",
        }
    }
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::Base64 => write!(f, "the metrics payload is not standard base64"),
            VectorError::Json(message) => {
                write!(
                    f,
                    "the metrics payload is not a JSON array of metrics: {message}"
                )
            }
            VectorError::TooManyMetrics(max) => {
                write!(f, "the line holds more than {max} metrics: split it")
            }
            VectorError::UnknownKind(kinds) => write!(
                f,
                "no value of a known kind (counter, gauge, set, distribution, aggregated_histogram, aggregated_summary): {kinds}"
            ),
            VectorError::Invalid(message) => write!(f, "not a valid metric: {message}"),
        }
    }
}

impl std::error::Error for VectorError {}

/// Reads one line's payload (what follows the prefix and its space;
/// surrounding ASCII whitespace is ignored).
///
/// The payload is standard base64, padded or not, of a JSON array of
/// `{"metric": {...}}` elements in Vector's native JSON. The line as a
/// whole is refused when it is not base64, not a JSON array, or holds more
/// than [`VectorLimits::max_metrics`] elements; an element that is not a
/// valid metric is refused alone, with the reason, in
/// [`VectorLine::rejected`].
pub fn parse_vector_line(payload: &[u8], limits: VectorLimits) -> Result<VectorLine, VectorError> {
    let json = BASE64
        .decode(payload.trim_ascii())
        .map_err(|_| VectorError::Base64)?;
    let json = std::str::from_utf8(&json).map_err(|error| {
        VectorError::Json(format!("the decoded payload is not UTF-8 ({error})"))
    })?;
    let elements = elements(json, limits.max_metrics)?;
    let n_elements = elements.len();
    let mut line = VectorLine {
        metrics: Vec::with_capacity(n_elements),
        rejected: Vec::new(),
    };
    for (index, element) in elements.into_iter().enumerate() {
        match read_element(element.get(), limits) {
            Ok(Element::Metric(metric)) => line.metrics.push(metric),
            Ok(Element::UnknownKind(kinds)) => line.rejected.push(VectorError::UnknownKind(kinds)),
            Err(error) => line.rejected.push(VectorError::Invalid(format!(
                "element {} of {n_elements}: {}",
                index + 1,
                without_position(&error)
            ))),
        }
    }
    Ok(line)
}

/// Standard base64 that takes a payload with or without its padding: some
/// senders strip the `=`.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The keys of Vector's value kinds, the ones this parser reads.
const VALUE_KINDS: [&str; 6] = [
    "counter",
    "gauge",
    "set",
    "distribution",
    "aggregated_histogram",
    "aggregated_summary",
];

/// Keys of a metric object that Vector writes and a drain has no use for.
const IGNORED_KEYS: [&str; 2] = ["timestamp", "interval_ms"];

/// How many unknown keys an [`VectorError::UnknownKind`] names; the rest
/// are counted.
const MAX_UNKNOWN_KEYS_NAMED: usize = 8;

/// The elements of the payload's array, each as its JSON text, checked for
/// syntax and counted against `max_metrics` before any is read as a
/// metric.
///
/// Reading each element on its own afterwards is what lets one bad metric
/// be refused without losing the rest of the line: a typed read that fails
/// halfway leaves a streaming parser with no place to go on from.
fn elements(json: &str, max_metrics: usize) -> Result<Vec<&RawValue>, VectorError> {
    let mut too_many = false;
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let read = deserializer
        .deserialize_seq(ElementsVisitor {
            max_metrics,
            too_many: &mut too_many,
        })
        .and_then(|elements| deserializer.end().map(|()| elements));
    match read {
        Ok(elements) => Ok(elements),
        Err(_) if too_many => Err(VectorError::TooManyMetrics(max_metrics)),
        Err(error) => Err(VectorError::Json(error.to_string())),
    }
}

/// Reads the top-level array's elements as raw JSON, at most `max_metrics`
/// of them.
struct ElementsVisitor<'f> {
    max_metrics: usize,
    /// Set when the array holds more than `max_metrics` elements: the error
    /// that stops the read is then that one, not the JSON's.
    too_many: &'f mut bool,
}

impl<'de> Visitor<'de> for ElementsVisitor<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a JSON array of {"metric": {...}} elements"#)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            if elements.len() == self.max_metrics {
                *self.too_many = true;
                return Err(A::Error::custom("too many metrics"));
            }
            elements.push(element);
        }
        Ok(elements)
    }
}

/// serde_json's message without its ` at line L column C`: the position is
/// within one element, which would mislead a reader of the whole payload.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if error.line() == 0 {
        return message;
    }
    let position = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&position) {
        Some(stripped) => stripped.to_owned(),
        None => message,
    }
}

/// What one element of the array held.
enum Element {
    Metric(VectorMetric),
    /// No value of a known kind; the other keys, named.
    UnknownKind(String),
}

fn read_element(json: &str, limits: VectorLimits) -> Result<Element, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let element = ElementSeed { limits }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(element)
}

/// An element: `{"metric": {...}}`, other keys ignored.
#[derive(Clone, Copy)]
struct ElementSeed {
    limits: VectorLimits,
}

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Element;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Element, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an element {"metric": {...}}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut metric = None;
        while let Some(key) = map.next_key_seed(Text { what: "a key" })? {
            if key == "metric" {
                if metric.is_some() {
                    return Err(A::Error::duplicate_field("metric"));
                }
                metric = Some(map.next_value_seed(MetricSeed {
                    limits: self.limits,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        metric.ok_or_else(|| {
            A::Error::custom(r#"the element has no `metric` key: elements are {"metric": {...}}"#)
        })
    }
}

/// The metric object: `name`, `namespace`, `tags`, `kind` and one value
/// kind's key; `timestamp`, `interval_ms` and keys unknown here ignored.
#[derive(Clone, Copy)]
struct MetricSeed {
    limits: VectorLimits,
}

impl<'de> DeserializeSeed<'de> for MetricSeed {
    type Value = Element;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Element, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetricSeed {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metric, an object with `name`, `kind` and a value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut name: Option<Cow<'de, str>> = None;
        let mut namespace: Option<Option<Cow<'de, str>>> = None;
        let mut tags: Option<Vec<(String, String)>> = None;
        let mut kind: Option<VectorKind> = None;
        let mut value: Option<(&'static str, VectorValue)> = None;
        let mut unknown: Vec<Cow<'de, str>> = Vec::new();
        let mut n_unknown = 0usize;
        while let Some(key) = map.next_key_seed(Text { what: "a key" })? {
            match &*key {
                "name" => {
                    if name.is_some() {
                        return Err(A::Error::duplicate_field("name"));
                    }
                    name = Some(map.next_value_seed(Text {
                        what: "`name`, a string",
                    })?);
                }
                "namespace" => {
                    if namespace.is_some() {
                        return Err(A::Error::duplicate_field("namespace"));
                    }
                    namespace = Some(map.next_value_seed(OptionalText {
                        what: "`namespace`, a string or null",
                    })?);
                }
                "tags" => {
                    if tags.is_some() {
                        return Err(A::Error::duplicate_field("tags"));
                    }
                    tags = Some(map.next_value_seed(Tags {
                        max_tags: self.limits.max_tags,
                    })?);
                }
                "kind" => {
                    if kind.is_some() {
                        return Err(A::Error::duplicate_field("kind"));
                    }
                    kind = Some(map.next_value_seed(KIND)?);
                }
                ignored if IGNORED_KEYS.contains(&ignored) => {
                    map.next_value::<IgnoredAny>()?;
                }
                other => match VALUE_KINDS.iter().find(|&&kind| kind == other) {
                    Some(&this) => {
                        if let Some((first, _)) = value {
                            let message = if first == this {
                                format!("`{this}` is given twice")
                            } else {
                                format!("both `{first}` and `{this}`: a metric has one value kind")
                            };
                            return Err(A::Error::custom(message));
                        }
                        value = Some((this, read_value(this, &mut map, self.limits)?));
                    }
                    None => {
                        n_unknown += 1;
                        if unknown.len() < MAX_UNKNOWN_KEYS_NAMED {
                            // An empty key is named as JSON writes it, so
                            // that the reason never reads as nothing.
                            unknown.push(if key.is_empty() {
                                Cow::Borrowed(r#""""#)
                            } else {
                                key.clone()
                            });
                        }
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        let Some((_, value)) = value else {
            if unknown.is_empty() {
                return Err(A::Error::custom(
                    "no value: a metric needs one of counter, gauge, set, distribution, aggregated_histogram, aggregated_summary",
                ));
            }
            let mut kinds = unknown.join(", ");
            if n_unknown > unknown.len() {
                kinds.push_str(&format!(" and {} more", n_unknown - unknown.len()));
            }
            return Ok(Element::UnknownKind(kinds));
        };
        let name = name.ok_or_else(|| A::Error::missing_field("name"))?;
        if name.is_empty() {
            return Err(A::Error::custom("`name` is empty"));
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
        Ok(Element::Metric(VectorMetric {
            name: name.into_owned(),
            namespace: namespace
                .flatten()
                .filter(|namespace| !namespace.is_empty())
                .map(Cow::into_owned),
            tags: tags.unwrap_or_default(),
            kind,
            value,
        }))
    }
}

/// Reads the value under the value kind's key `kind` (one of
/// [`VALUE_KINDS`]).
fn read_value<'de, A: MapAccess<'de>>(
    kind: &'static str,
    map: &mut A,
    limits: VectorLimits,
) -> Result<VectorValue, A::Error> {
    let max_values = limits.max_values;
    let value = match kind {
        "counter" => {
            let (value,) = map.next_value_seed(Object1 {
                what: "a counter",
                a: (
                    "value",
                    Number {
                        what: "a counter's `value`",
                    },
                ),
            })?;
            VectorValue::Counter(value)
        }
        "gauge" => {
            let (value,) = map.next_value_seed(Object1 {
                what: "a gauge",
                a: (
                    "value",
                    Number {
                        what: "a gauge's `value`",
                    },
                ),
            })?;
            VectorValue::Gauge(value)
        }
        "set" => {
            let (values,) = map.next_value_seed(Object1 {
                what: "a set",
                a: (
                    "values",
                    List {
                        what: "a set's `values`",
                        max_values,
                        item: OwnedText {
                            what: "a set member, a string",
                        },
                    },
                ),
            })?;
            VectorValue::Set(values)
        }
        "distribution" => {
            let (samples, statistic) = map.next_value_seed(Object2 {
                what: "a distribution",
                a: (
                    "samples",
                    List {
                        what: "a distribution's `samples`",
                        max_values,
                        item: Object2 {
                            what: "a sample",
                            a: (
                                "value",
                                Number {
                                    what: "a sample's `value`",
                                },
                            ),
                            b: ("rate", Rate),
                        },
                    },
                ),
                b: ("statistic", STATISTIC),
            })?;
            VectorValue::Distribution { samples, statistic }
        }
        "aggregated_histogram" => {
            let (buckets, count, sum) = map.next_value_seed(Object3 {
                what: "an aggregated_histogram",
                a: (
                    "buckets",
                    List {
                        what: "an aggregated_histogram's `buckets`",
                        max_values,
                        item: Object2 {
                            what: "a bucket",
                            a: (
                                "upper_limit",
                                Number {
                                    what: "a bucket's `upper_limit`",
                                },
                            ),
                            b: (
                                "count",
                                Count {
                                    what: "a bucket's `count`",
                                },
                            ),
                        },
                    },
                ),
                b: (
                    "count",
                    Count {
                        what: "an aggregated_histogram's `count`",
                    },
                ),
                c: (
                    "sum",
                    Number {
                        what: "an aggregated_histogram's `sum`",
                    },
                ),
            })?;
            VectorValue::AggregatedHistogram {
                buckets,
                count,
                sum,
            }
        }
        _ => {
            let (quantiles, count, sum) = map.next_value_seed(Object3 {
                what: "an aggregated_summary",
                a: (
                    "quantiles",
                    List {
                        what: "an aggregated_summary's `quantiles`",
                        max_values,
                        item: Object2 {
                            what: "a quantile",
                            a: ("quantile", QuantileSeed),
                            b: (
                                "value",
                                Number {
                                    what: "a quantile's `value`",
                                },
                            ),
                        },
                    },
                ),
                b: (
                    "count",
                    Count {
                        what: "an aggregated_summary's `count`",
                    },
                ),
                c: (
                    "sum",
                    Number {
                        what: "an aggregated_summary's `sum`",
                    },
                ),
            })?;
            VectorValue::AggregatedSummary {
                quantiles,
                count,
                sum,
            }
        }
    };
    Ok(value)
}

/// Defines a reader of an object whose fields are all required, each read
/// with its own seed, other fields ignored; it yields the fields' values as
/// a tuple in the order declared.
macro_rules! object_reader {
    ($name:ident; $($seed:ident $field:ident),+) => {
        #[derive(Clone, Copy)]
        struct $name<$($seed),+> {
            /// What the object is, for messages: `a bucket`.
            what: &'static str,
            $($field: (&'static str, $seed),)+
        }

        impl<'de, $($seed: DeserializeSeed<'de> + Copy),+> DeserializeSeed<'de>
            for $name<$($seed),+>
        {
            type Value = ($(<$seed as DeserializeSeed<'de>>::Value,)+);

            fn deserialize<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_map(self)
            }
        }

        impl<'de, $($seed: DeserializeSeed<'de> + Copy),+> Visitor<'de> for $name<$($seed),+> {
            type Value = ($(<$seed as DeserializeSeed<'de>>::Value,)+);

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}, an object with", self.what)?;
                $(write!(f, " `{}`", self.$field.0)?;)+
                Ok(())
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                $(let mut $field = None;)+
                while let Some(key) = map.next_key_seed(Text { what: "a key" })? {
                    $(
                        if key == self.$field.0 {
                            if $field.is_some() {
                                return Err(M::Error::custom(format_args!(
                                    "{} has `{}` twice",
                                    self.what, self.$field.0
                                )));
                            }
                            $field = Some(map.next_value_seed(self.$field.1)?);
                            continue;
                        }
                    )+
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(($(
                    $field.ok_or_else(|| {
                        M::Error::custom(format_args!("{} has no `{}`", self.what, self.$field.0))
                    })?,
                )+))
            }
        }
    };
}

object_reader!(Object1; A a);
object_reader!(Object2; A a, B b);
object_reader!(Object3; A a, B b, C c);

/// An array of at most `max_values` items, each read with `item`.
#[derive(Clone, Copy)]
struct List<S> {
    what: &'static str,
    max_values: usize,
    item: S,
}

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for List<S> {
    type Value = Vec<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for List<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array for {}", self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.item)? {
            if items.len() == self.max_values {
                return Err(A::Error::custom(format_args!(
                    "{} has more than {} values",
                    self.what, self.max_values
                )));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// A string, borrowed from the payload when it has no escapes.
#[derive(Clone, Copy)]
struct Text {
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A string, owned.
#[derive(Clone, Copy)]
struct OwnedText {
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for OwnedText {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        Text { what: self.what }
            .deserialize(deserializer)
            .map(Cow::into_owned)
    }
}

/// A string or null.
#[derive(Clone, Copy)]
struct OptionalText {
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for OptionalText {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OptionalText {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }
}

/// The `tags` object (or null), at most `max_tags` of them kept. A tag
/// given twice keeps its last value, as a JSON object's reader would.
#[derive(Clone, Copy)]
struct Tags {
    max_tags: usize,
}

impl<'de> DeserializeSeed<'de> for Tags {
    type Value = Vec<(String, String)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tags {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`tags`, an object of tag values")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut tags: Vec<(String, String)> = Vec::new();
        while let Some(key) = map.next_key_seed(Text { what: "a tag name" })? {
            let value = map.next_value_seed(TagValue)?;
            let held = tags.iter().position(|(held, _)| *held == *key);
            match (held, value) {
                (Some(index), Some(value)) => tags[index].1 = value.into_owned(),
                (Some(index), None) => {
                    tags.remove(index);
                }
                (None, Some(value)) => {
                    if tags.len() == self.max_tags {
                        return Err(A::Error::custom(format_args!(
                            "more than {} tags",
                            self.max_tags
                        )));
                    }
                    tags.push((key.into_owned(), value.into_owned()));
                }
                (None, None) => {}
            }
        }
        Ok(tags)
    }
}

/// A tag's value: a string; null for a bare tag; or an array of strings
/// and nulls, of which the last string is kept. `None` is a tag left out.
#[derive(Clone, Copy)]
struct TagValue;

impl<'de> DeserializeSeed<'de> for TagValue {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TagValue {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tag value: a string, null or an array of strings and nulls")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut last = None;
        while let Some(value) = seq.next_element_seed(OptionalText {
            what: "a tag value in an array, a string or null",
        })? {
            if value.is_some() {
                last = value;
            }
        }
        Ok(last)
    }
}

/// One of a few words, each standing for a value: `kind` (`absolute`,
/// `incremental`) and a distribution's `statistic` (`histogram`,
/// `summary`).
#[derive(Clone, Copy)]
struct Choice<T: 'static> {
    /// What the field is, for the error.
    expecting: &'static str,
    words: &'static [(&'static str, T)],
}

const KIND: Choice<VectorKind> = Choice {
    expecting: r#"`kind`, "absolute" or "incremental""#,
    words: &[
        ("absolute", VectorKind::Absolute),
        ("incremental", VectorKind::Incremental),
    ],
};

const STATISTIC: Choice<Statistic> = Choice {
    expecting: r#"a distribution's `statistic`, "histogram" or "summary""#,
    words: &[
        ("histogram", Statistic::Histogram),
        ("summary", Statistic::Summary),
    ],
};

impl<'de, T: Copy> DeserializeSeed<'de> for Choice<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, T: Copy> Visitor<'de> for Choice<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        self.words
            .iter()
            .find(|(word, _)| *word == v)
            .map(|(_, value)| *value)
            .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
    }
}

/// A finite number, integer or not.
#[derive(Clone, Copy)]
struct Number {
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for Number {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_f64(self)
    }
}

impl<'de> Visitor<'de> for Number {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number for {}", self.what)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        // JSON has no infinities, but a deserializer may still overflow.
        if v.is_finite() {
            Ok(v)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
}

/// A count: a finite number, not negative, integer or not.
#[derive(Clone, Copy)]
struct Count {
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for Count {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_f64(self)
    }
}

impl<'de> Visitor<'de> for Count {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number not below zero for {}", self.what)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if v.is_finite() && v >= 0.0 {
            // A `-0.0` is counted as nothing, without its sign.
            Ok(v + 0.0)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        if v >= 0 {
            Ok(v as f64)
        } else {
            Err(E::invalid_value(Unexpected::Signed(v), &self))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
}

/// A sample's `rate`: an integer from 0 to `u32::MAX`.
#[derive(Clone, Copy)]
struct Rate;

impl<'de> DeserializeSeed<'de> for Rate {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u32, D::Error> {
        deserializer.deserialize_u32(self)
    }
}

impl<'de> Visitor<'de> for Rate {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer from 0 to {} for a sample's `rate`", u32::MAX)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }
}

/// A quantile: a number from 0 to 1.
#[derive(Clone, Copy)]
struct QuantileSeed;

impl<'de> DeserializeSeed<'de> for QuantileSeed {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_f64(self)
    }
}

impl<'de> Visitor<'de> for QuantileSeed {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number from 0 to 1 for a quantile's `quantile`")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if (0.0..=1.0).contains(&v) {
            Ok(v + 0.0)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        match v {
            0 | 1 => Ok(v as f64),
            _ => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        match v {
            0 | 1 => Ok(v as f64),
            _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    use super::*;

    fn parse(json: &str) -> Result<VectorLine, VectorError> {
        parse_vector_line(STANDARD.encode(json).as_bytes(), VectorLimits::default())
    }

    fn metrics(json: &str) -> Vec<VectorMetric> {
        let line = parse(json).expect("the line parses");
        assert_eq!(line.rejected, [], "{json}");
        line.metrics
    }

    fn metric(name: &str, kind: VectorKind, value: VectorValue) -> VectorMetric {
        VectorMetric {
            name: name.to_owned(),
            namespace: None,
            tags: Vec::new(),
            kind,
            value,
        }
    }

    /// The messages of the elements refused as invalid.
    fn invalid(line: &VectorLine) -> Vec<&str> {
        line.rejected
            .iter()
            .map(|error| match error {
                VectorError::Invalid(message) => message.as_str(),
                other => panic!("expected an invalid metric, found {other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_instance_metrics_gauge_line_parses() {
        let payload = b"W3sibWV0cmljIjp7ImdhdWdlIjp7InZhbHVlIjowLjB9LCJraW5kIjoiYWJzb2x1dGUiLCJuYW1lIjoic2FtcGxlX2dhdWdlIiwidGFncyI6e319fV0=";
        let line = parse_vector_line(payload, VectorLimits::default()).expect("the line parses");
        assert_eq!(
            line,
            VectorLine {
                metrics: vec![metric(
                    "sample_gauge",
                    VectorKind::Absolute,
                    VectorValue::Gauge(0.0)
                )],
                rejected: Vec::new(),
            }
        );
    }

    #[test]
    fn every_value_kind_reads() {
        let cases = [
            (
                r#"{"counter":{"value":3}}"#,
                VectorKind::Incremental,
                VectorValue::Counter(3.0),
            ),
            (
                r#"{"gauge":{"value":-1.5e3}}"#,
                VectorKind::Absolute,
                VectorValue::Gauge(-1500.0),
            ),
            (
                r#"{"set":{"values":["a","b\"c"]}}"#,
                VectorKind::Incremental,
                VectorValue::Set(vec!["a".to_owned(), "b\"c".to_owned()]),
            ),
            (
                r#"{"distribution":{"samples":[{"value":1.5,"rate":2},{"value":-3,"rate":4294967295}],"statistic":"histogram"}}"#,
                VectorKind::Incremental,
                VectorValue::Distribution {
                    samples: vec![(1.5, 2), (-3.0, u32::MAX)],
                    statistic: Statistic::Histogram,
                },
            ),
            (
                r#"{"distribution":{"statistic":"summary","samples":[]}}"#,
                VectorKind::Absolute,
                VectorValue::Distribution {
                    samples: vec![],
                    statistic: Statistic::Summary,
                },
            ),
            (
                r#"{"aggregated_histogram":{"buckets":[{"upper_limit":0.005,"count":1},{"upper_limit":1,"count":2.0}],"count":7,"sum":12.25}}"#,
                VectorKind::Absolute,
                VectorValue::AggregatedHistogram {
                    buckets: vec![(0.005, 1.0), (1.0, 2.0)],
                    count: 7.0,
                    sum: 12.25,
                },
            ),
            (
                r#"{"aggregated_summary":{"quantiles":[{"quantile":0.5,"value":3.0},{"quantile":1,"value":9}],"count":4.0,"sum":20}}"#,
                VectorKind::Incremental,
                VectorValue::AggregatedSummary {
                    quantiles: vec![(0.5, 3.0), (1.0, 9.0)],
                    count: 4.0,
                    sum: 20.0,
                },
            ),
        ];
        for (value, kind, expected) in cases {
            let kind_name = match kind {
                VectorKind::Absolute => "absolute",
                VectorKind::Incremental => "incremental",
            };
            let value = value
                .strip_prefix('{')
                .and_then(|value| value.strip_suffix('}'))
                .expect("the case is an object");
            let json = format!(
                r#"[{{"metric":{{"name":"m","kind":"{kind_name}","timestamp":"2024-01-01T00:00:00Z","interval_ms":10000,{value}}}}}]"#
            );
            assert_eq!(metrics(&json), [metric("m", kind, expected)], "{json}");
        }
    }

    #[test]
    fn namespaces_and_tags_read_as_vector_writes_them() {
        let json = r#"[
            {"metric":{"name":"a","namespace":"app","kind":"absolute","gauge":{"value":1},
                "tags":{"plain":"x","bare":null,"many":["one",null,"two",null],"nulls":[null,null],
                        "empty":[],"escaped\u00e9":"line\nbreak","again":"first","again":"last"}}},
            {"metric":{"name":"b","namespace":"","kind":"absolute","gauge":{"value":1},"tags":null}},
            {"metric":{"name":"c","namespace":null,"kind":"absolute","gauge":{"value":1},
                "tags":{"gone":"soon","gone":null}}}
        ]"#;
        let read = metrics(json);
        assert_eq!(read[0].namespace.as_deref(), Some("app"));
        assert_eq!(
            read[0].tags,
            [
                ("plain", "x"),
                ("many", "two"),
                ("escapedé", "line\nbreak"),
                ("again", "last")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(
            (read[1].namespace.as_deref(), read[1].tags.len()),
            (None, 0)
        );
        assert_eq!(
            (read[2].namespace.as_deref(), read[2].tags.len()),
            (None, 0)
        );
    }

    #[test]
    fn an_unknown_value_kind_is_named() {
        let json = r#"[
            {"metric":{"name":"s","kind":"incremental","sketch":{"AgentDDSketch":{"bins":{"k":[],"n":[]},"count":0,"min":0,"max":0,"sum":0,"avg":0}},"interval_ms":1000}},
            {"metric":{"name":"c","kind":"incremental","counter":{"value":1}}},
            {"metric":{"future":1,"other":{}}},
            {"metric":{"":{"values":["a"]}}}
        ]"#;
        let line = parse(json).expect("the line parses");
        assert_eq!(line.metrics.len(), 1);
        assert_eq!(
            line.rejected,
            [
                VectorError::UnknownKind("sketch".to_owned()),
                VectorError::UnknownKind("future, other".to_owned()),
                VectorError::UnknownKind(r#""""#.to_owned())
            ]
        );
        assert_eq!(line.rejected[0].reason(), "unknown_kind");
    }

    #[test]
    fn a_malformed_element_is_refused_alone_and_says_why() {
        let good = r#"{"metric":{"name":"good","kind":"absolute","gauge":{"value":1}}}"#;
        let limits = VectorLimits {
            max_metrics: 100,
            max_tags: 2,
            max_values: 2,
        };
        let cases = [
            (
                r#"{"metric":{"kind":"absolute","gauge":{"value":1}}}"#,
                "missing field `name`",
            ),
            (
                r#"{"metric":{"name":"","kind":"absolute","gauge":{"value":1}}}"#,
                "`name` is empty",
            ),
            (
                r#"{"metric":{"name":5,"kind":"absolute","gauge":{"value":1}}}"#,
                "invalid type: integer `5`, expected `name`, a string",
            ),
            (
                r#"{"metric":{"name":"n","name":"m","kind":"absolute","gauge":{"value":1}}}"#,
                "duplicate field `name`",
            ),
            (
                r#"{"metric":{"name":"n","gauge":{"value":1}}}"#,
                "missing field `kind`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"delta","gauge":{"value":1}}}"#,
                r#"invalid value: string "delta", expected `kind`, "absolute" or "incremental""#,
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":1},"counter":{"value":1}}}"#,
                "both `gauge` and `counter`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":1},"gauge":{"value":1}}}"#,
                "`gauge` is given twice",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute"}}"#,
                "no value: a metric needs one of counter",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":"1"}}}"#,
                r#"invalid type: string "1", expected a number for a gauge's `value`"#,
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":null}}}"#,
                "expected a number for a gauge's `value`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{}}}"#,
                "a gauge has no `value`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","counter":[1]}}"#,
                "expected a counter, an object with `value`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","set":{"values":["a",1]}}}"#,
                "expected a set member, a string",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","set":{"values":["a","b","c"]}}}"#,
                "a set's `values` has more than 2 values",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","distribution":{"samples":[{"value":1,"rate":1.5}],"statistic":"histogram"}}}"#,
                "expected an integer from 0 to 4294967295 for a sample's `rate`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","distribution":{"samples":[{"value":1,"rate":-1}],"statistic":"histogram"}}}"#,
                "invalid value: integer `-1`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","distribution":{"samples":[{"value":1,"rate":4294967296}],"statistic":"histogram"}}}"#,
                "invalid value: integer `4294967296`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","distribution":{"samples":[],"statistic":"median"}}}"#,
                "expected a distribution's `statistic`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","distribution":{"samples":[]}}}"#,
                "a distribution has no `statistic`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","aggregated_histogram":{"buckets":[{"upper_limit":1,"count":-1}],"count":1,"sum":1}}}"#,
                "expected a number not below zero for a bucket's `count`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","aggregated_histogram":{"buckets":[{"upper_limit":null,"count":1}],"count":1,"sum":1}}}"#,
                "expected a number for a bucket's `upper_limit`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","aggregated_histogram":{"buckets":[],"count":-0.5,"sum":1}}}"#,
                "for an aggregated_histogram's `count`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","aggregated_histogram":{"buckets":[],"count":1}}}"#,
                "an aggregated_histogram has no `sum`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","aggregated_summary":{"quantiles":[{"quantile":1.5,"value":1}],"count":1,"sum":1}}}"#,
                "expected a number from 0 to 1 for a quantile's `quantile`",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","aggregated_summary":{"quantiles":[{"quantile":0.5,"value":1},{"quantile":0.5,"value":1},{"quantile":0.5,"value":1}],"count":1,"sum":1}}}"#,
                "`quantiles` has more than 2 values",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":1},"tags":{"a":"1","b":"2","c":"3"}}}"#,
                "more than 2 tags",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":1},"tags":{"a":1}}}"#,
                "expected a tag value: a string, null or an array of strings and nulls",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":1},"tags":{"a":[1]}}}"#,
                "expected a tag value in an array, a string or null",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":1},"tags":["a"]}}"#,
                "expected `tags`, an object of tag values",
            ),
            (
                r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":1},"namespace":7}}"#,
                "expected `namespace`, a string or null",
            ),
            (
                r#"{"log":{"message":"hello"}}"#,
                "the element has no `metric` key",
            ),
            (r#"[1,2]"#, r#"expected an element {"metric": {...}}"#),
            (r#""metric""#, r#"expected an element {"metric": {...}}"#),
            (
                r#"{"metric":null}"#,
                "expected a metric, an object with `name`, `kind` and a value",
            ),
        ];
        for (bad, message) in cases {
            let json = format!("[{good},{bad},{good}]");
            let line = parse_vector_line(STANDARD.encode(&json).as_bytes(), limits)
                .expect("the line parses");
            assert_eq!(line.metrics.len(), 2, "{bad}");
            let read = invalid(&line);
            assert_eq!(read.len(), 1, "{bad}");
            assert!(
                read[0].starts_with("element 2 of 3: "),
                "{bad}: {:?}",
                read[0]
            );
            assert!(read[0].contains(message), "{bad}: {:?}", read[0]);
            assert!(!read[0].contains(" at line "), "{bad}: {:?}", read[0]);
        }
    }

    #[test]
    fn limits_at_their_bound_are_kept() {
        let limits = VectorLimits {
            max_metrics: 2,
            max_tags: 2,
            max_values: 2,
        };
        let element = r#"{"metric":{"name":"n","kind":"absolute","set":{"values":["a","b"]},"tags":{"a":"1","b":"2","bare":null}}}"#;
        let json = format!("[{element},{element}]");
        let line =
            parse_vector_line(STANDARD.encode(&json).as_bytes(), limits).expect("the line parses");
        assert_eq!((line.metrics.len(), line.rejected.len()), (2, 0));
        let json = format!("[{element},{element},{element}]");
        assert_eq!(
            parse_vector_line(STANDARD.encode(&json).as_bytes(), limits),
            Err(VectorError::TooManyMetrics(2))
        );
        let json = format!("[{element},{element},[],{{}}]");
        assert_eq!(
            parse_vector_line(STANDARD.encode(&json).as_bytes(), limits),
            Err(VectorError::TooManyMetrics(2)),
            "the elements past the limit are counted, not read"
        );
    }

    #[test]
    fn a_line_that_is_not_base64_json_is_refused_whole() {
        let limits = VectorLimits::default();
        for payload in [
            &b"not base64!"[..],
            b"W3",
            b"W3s=x",
            b"W3sibWV0cmljIjp7\xff",
        ] {
            assert_eq!(
                parse_vector_line(payload, limits),
                Err(VectorError::Base64),
                "{payload:?}"
            );
        }
        for json in [
            &b""[..],
            b"{\"metric\":{}}",
            b"[1,",
            b"[] []",
            b"[{\"metric\":{\"name\":\"n\",}}]",
            b"\xff\xfe",
            b"nul",
        ] {
            let read = parse_vector_line(STANDARD.encode(json).as_bytes(), limits);
            assert!(
                matches!(read, Err(VectorError::Json(_))),
                "{json:?}: {read:?}"
            );
        }
        let Err(error) = parse(r#"{"metric":{}}"#) else {
            panic!("an object is not an array");
        };
        assert_eq!(
            error.to_string(),
            r#"the metrics payload is not a JSON array of metrics: invalid type: map, expected a JSON array of {"metric": {...}} elements at line 1 column 0"#
        );
        assert_eq!(parse("[]"), Ok(VectorLine::default()));
    }

    #[test]
    fn padding_and_surrounding_whitespace_do_not_matter() {
        let json = r#"[{"metric":{"name":"c","kind":"incremental","counter":{"value":1}}}]"#;
        assert_ne!(json.len() % 3, 0, "the encoding needs padding");
        let padded = STANDARD.encode(json);
        let unpadded = STANDARD_NO_PAD.encode(json);
        assert_ne!(padded, unpadded);
        let expected = parse(json);
        assert!(expected.is_ok());
        for payload in [unpadded, format!(" \t{padded}\r\n")] {
            assert_eq!(
                parse_vector_line(payload.as_bytes(), VectorLimits::default()),
                expected
            );
        }
    }

    #[test]
    fn numbers_read_in_every_json_form() {
        let json = r#"[
            {"metric":{"name":"big","kind":"absolute","gauge":{"value":18446744073709551615}}},
            {"metric":{"name":"neg","kind":"absolute","gauge":{"value":-9223372036854775808}}},
            {"metric":{"name":"exp","kind":"absolute","counter":{"value":1E-3}}},
            {"metric":{"name":"huge","kind":"absolute","gauge":{"value":1e400}}}
        ]"#;
        let line = parse(json).expect("the line parses");
        let values: Vec<_> = line.metrics.iter().map(|m| m.value.clone()).collect();
        assert_eq!(
            values,
            [
                VectorValue::Gauge(18446744073709551615.0),
                VectorValue::Gauge(-9223372036854775808.0),
                VectorValue::Counter(0.001),
            ]
        );
        // A number past f64 is refused with its element.
        assert_eq!(invalid(&line), ["element 4 of 4: number out of range"]);
    }
}
