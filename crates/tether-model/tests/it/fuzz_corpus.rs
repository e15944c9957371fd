//! The fuzz corpora replayed as ordinary tests: every input in
//! `fuzz/corpus/<target>/` must satisfy the property its fuzz target checks,
//! so `cargo test` guards what the fuzzer found without a nightly toolchain.
//!
//! Inputs named `crash-*` are minimised findings; they stay in the corpus and
//! are replayed like the rest.

#[path = "fuzz_property.rs"]
pub(crate) mod property;

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The inputs of one fuzz target's corpus, sorted by name.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read the corpus {}: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a corpus directory entry is readable").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `property` on every input of `target`'s corpus and fails naming
/// each input that panics or breaks the property.
fn replay(target: &str, min_files: usize, property: fn(&[u8]) -> Result<(), String>) {
    let files = corpus_files(target);
    assert!(
        files.len() >= min_files,
        "the {target} corpus has {} files, expected at least {min_files}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let input = std::fs::read(path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        // The property may panic inside the library; catching it lets one
        // run report every failing input, not just the first.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| property(&input)));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(violation)) => violation,
            Err(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
        };
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        failures.push(format!(
            "fuzz/corpus/{target}/{name} (input \"{}\"): {failure}",
            input.escape_ascii()
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs in fuzz/corpus/{target} fail:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[test]
fn parse_corpus_satisfies_the_exposition_property() {
    replay("parse", 30, property::exposition);
}

#[test]
fn proto_delimited_corpus_satisfies_the_delimited_property() {
    replay("proto_delimited", 1, property::delimited);
}
