//! The grouping key of a push: `job` and the label pairs of the URL path
//! `/metrics/job/<job>{/<label>/<value>}`, with `@base64` values, read as
//! the Pushgateway reads them; and its encoding as a key of the store.

use base64::Engine as _;
use tether_model::{Label, is_valid_label_name};

/// Most labels a grouping key may hold, `job` included.
pub(crate) const MAX_KEY_LABELS: usize = 32;

/// A grouping key: label pairs sorted by name, `job` among them; no two
/// with one name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct GroupingKey {
    labels: Vec<Label>,
}

/// Why a path is no grouping key; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    /// The path does not start with `job/<job>`: no push route.
    #[error("push to /metrics/job/<job>{{/<label>/<value>}}")]
    NotAPushPath,
    /// The job is empty.
    #[error("job name is required: the path must be /metrics/job/<job>")]
    EmptyJob,
    /// The labels after the job do not pair up.
    #[error(
        "odd number of components in label string {0:?}: give every label a value (an empty value is <label>@base64/=)"
    )]
    OddPath(String),
    /// A label name that is not one, or is reserved (`__*`).
    #[error(
        "improper label name {0:?}: label names match [a-zA-Z_][a-zA-Z0-9_]* and do not start with __"
    )]
    InvalidName(String),
    /// A `@base64` value that does not decode.
    #[error(
        "invalid base64 encoding for label {name}={value:?}: use URL-safe base64, padding optional"
    )]
    Base64 {
        /// The label.
        name: String,
        /// The value as given.
        value: String,
    },
    /// A value that is not UTF-8.
    #[error("the value of label {0:?} is not UTF-8")]
    NotUtf8(String),
    /// Too many labels.
    #[error("the grouping key has more than {MAX_KEY_LABELS} labels")]
    TooManyLabels,
    /// A percent escape that is not one.
    #[error("the path holds an invalid percent escape")]
    BadEscape,
}

impl GroupingKey {
    /// Reads the part of a request path after `/metrics/`, still
    /// percent-encoded: `job/<job>{/<label>/<value>}`. As in the
    /// Pushgateway, a trailing slash after a label name gives it the empty
    /// value, one after the job is ignored, and a `job` label after the job
    /// is overruled by it.
    pub(crate) fn from_path(rest: &str) -> Result<GroupingKey, KeyError> {
        // Decoded before it is split, as the Pushgateway does: `%2F` splits
        // too, so a `/` in a value needs `@base64`.
        let decoded = percent_decode(rest)?;
        let rest = decoded.as_str();
        let (first, after) = rest.split_once('/').ok_or(KeyError::NotAPushPath)?;
        let job_base64 = match first {
            "job" => false,
            "job@base64" => true,
            _ => return Err(KeyError::NotAPushPath),
        };
        let (job, label_string) = match after.find('/') {
            Some(index) => after.split_at(index),
            None => (after, ""),
        };
        if job.is_empty() {
            return Err(KeyError::NotAPushPath);
        }
        let job = value_of("job", job, job_base64)?;
        if job.is_empty() {
            return Err(KeyError::EmptyJob);
        }
        let mut labels: Vec<Label> = Vec::new();
        if label_string.len() > 1 {
            let components: Vec<&str> = label_string.split('/').collect();
            if components.len().is_multiple_of(2) {
                return Err(KeyError::OddPath(label_string.to_owned()));
            }
            for pair in components[1..].chunks_exact(2) {
                let (name, base64) = match pair[0].strip_suffix("@base64") {
                    Some(name) => (name.to_owned(), true),
                    None => (pair[0].to_owned(), false),
                };
                if !is_valid_label_name(&name) || name.starts_with("__") {
                    return Err(KeyError::InvalidName(name));
                }
                let value = value_of(&name, pair[1], base64)?;
                let n_labels = labels.len();
                match labels.iter_mut().find(|l| l.name == name) {
                    Some(label) => label.value = value,
                    None if n_labels + 1 == MAX_KEY_LABELS => {
                        return Err(KeyError::TooManyLabels);
                    }
                    None => labels.push(Label::new(name, value)),
                }
            }
        }
        labels.retain(|l| l.name != "job");
        labels.push(Label::new("job", job));
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(GroupingKey { labels })
    }

    /// A key from labels already validated (the store's own rows).
    pub(crate) fn from_labels(mut labels: Vec<Label>) -> Option<GroupingKey> {
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let has_job = labels
            .iter()
            .any(|l| l.name == "job" && !l.value.is_empty());
        let unique = labels.windows(2).all(|w| w[0].name != w[1].name);
        (has_job && unique && labels.len() <= MAX_KEY_LABELS).then_some(GroupingKey { labels })
    }

    /// The labels, sorted by name.
    pub(crate) fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// The value of `name`, if the key holds it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    /// The job.
    pub(crate) fn job(&self) -> &str {
        self.get("job").unwrap_or("")
    }

    /// The key as stored: for each label, its name and value, each a
    /// varint length and the bytes. Sorted labels make it unique.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for label in &self.labels {
            put_text(&mut out, &label.name);
            put_text(&mut out, &label.value);
        }
        out
    }

    /// Reads a key written by [`encode`](Self::encode).
    pub(crate) fn decode(mut bytes: &[u8]) -> Option<GroupingKey> {
        let mut labels = Vec::new();
        while !bytes.is_empty() {
            let name = take_text(&mut bytes)?;
            let value = take_text(&mut bytes)?;
            labels.push(Label::new(name, value));
        }
        GroupingKey::from_labels(labels)
    }

    /// `{job="a",instance="b"}`-style text for logs, pages and messages.
    pub(crate) fn display(&self) -> String {
        let mut text = String::from("{");
        for (index, label) in self.labels.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            text.push_str(&label.name);
            text.push_str("=\"");
            for c in label.value.chars() {
                match c {
                    '"' => text.push_str("\\\""),
                    '\\' => text.push_str("\\\\"),
                    '\n' => text.push_str("\\n"),
                    c => text.push(c),
                }
            }
            text.push('"');
        }
        text.push('}');
        text
    }
}

/// Writes `text` as a varint length and its bytes.
pub(crate) fn put_text(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Writes a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a varint written by [`put_varint`].
pub(crate) fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Reads a text written by [`put_text`].
pub(crate) fn take_text(bytes: &mut &[u8]) -> Option<String> {
    let len = usize::try_from(take_varint(bytes)?).ok()?;
    if bytes.len() < len {
        return None;
    }
    let (text, rest) = bytes.split_at(len);
    *bytes = rest;
    String::from_utf8(text.to_vec()).ok()
}

/// One path value, base64-decoded when asked.
fn value_of(name: &str, raw: &str, base64: bool) -> Result<String, KeyError> {
    let value = raw.to_owned();
    if !base64 {
        return Ok(value);
    }
    let trimmed = value.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| KeyError::Base64 {
            name: name.to_owned(),
            value: value.clone(),
        })?;
    String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8(name.to_owned()))
}

/// Decodes `%XX` escapes of one path segment.
fn percent_decode(segment: &str) -> Result<String, KeyError> {
    if !segment.contains('%') {
        return Ok(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3).ok_or(KeyError::BadEscape)?;
            let text = std::str::from_utf8(hex).map_err(|_| KeyError::BadEscape)?;
            out.push(u8::from_str_radix(text, 16).map_err(|_| KeyError::BadEscape)?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| KeyError::NotUtf8("path".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(path: &str) -> Vec<(String, String)> {
        GroupingKey::from_path(path)
            .expect("as the test set it up")
            .labels()
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn paths_read_as_the_pushgateway_reads_them() {
        let cases: [(&str, &[(&str, &str)]); 8] = [
            (
                "job/app/instance/a%3A1",
                &[("instance", "a:1"), ("job", "app")],
            ),
            (
                "job@base64/YS9i/path@base64/L3Zhci90bXA=/e@base64/=",
                &[("e", ""), ("job", "a/b"), ("path", "/var/tmp")],
            ),
            ("job/app/", &[("job", "app")]),
            ("job/app/b/", &[("b", ""), ("job", "app")]),
            ("job/app/job/other", &[("job", "app")]),
            ("job/app/x@base64/w6k", &[("job", "app"), ("x", "é")]),
            ("job/app/x@base64/YQ==", &[("job", "app"), ("x", "a")]),
            ("job/a/b/1/b/2", &[("b", "2"), ("job", "a")]),
        ];
        for (path, expected) in cases {
            assert_eq!(pairs(path), owned(expected), "{path}");
        }
    }

    #[test]
    fn bad_paths_say_what_is_wrong() {
        let cases = [
            ("", KeyError::NotAPushPath),
            ("job", KeyError::NotAPushPath),
            ("job/", KeyError::NotAPushPath),
            ("instance/a", KeyError::NotAPushPath),
            ("job@base64/=", KeyError::EmptyJob),
            ("job/a/b", KeyError::OddPath("/b".to_owned())),
            ("job/a/b/c/", KeyError::OddPath("/b/c/".to_owned())),
            ("job/a/1x/y", KeyError::InvalidName("1x".to_owned())),
            ("job/a/__x/y", KeyError::InvalidName("__x".to_owned())),
            ("job/a/b/%zz", KeyError::BadEscape),
            ("job/a/l/x%2Fy", KeyError::OddPath("/l/x/y".to_owned())),
            ("job/a/b@base64/_-8", KeyError::NotUtf8("b".to_owned())),
        ];
        for (path, error) in cases {
            assert_eq!(GroupingKey::from_path(path), Err(error), "{path}");
        }
        assert!(matches!(
            GroupingKey::from_path("job/a/b@base64/!!"),
            Err(KeyError::Base64 { .. })
        ));
    }

    #[test]
    fn keys_round_trip_through_their_encoding() {
        let key = GroupingKey::from_path("job/a/z/%00x/b@base64/=").expect("as the test set it up");
        assert_eq!(GroupingKey::decode(&key.encode()), Some(key.clone()));
        assert_eq!(GroupingKey::decode(&[5, b'a']), None);
        assert_eq!(key.display(), "{b=\"\",job=\"a\",z=\"\u{0}x\"}");
    }
}
