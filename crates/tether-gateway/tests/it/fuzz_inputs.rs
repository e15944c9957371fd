//! The push fuzz property run without a fuzzer: on generated inputs, on
//! generated push bodies, and on inputs picked by hand.

use proptest::prelude::*;

use crate::fuzz_property::push;

proptest! {
    #[test]
    fn arbitrary_requests_hold_the_property(input in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Err(violation) = push(&input) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn requests_of_text_lines_hold_the_property(
        selector in 0u8..2,
        path in "job/[a-z@=/]{0,12}(/[a-z_]{1,4}/[a-zA-Z0-9=]{0,4}){0,3}/?",
        lines in prop::collection::vec("[a-z_]{1,4}(\\{[a-z]{1,3}=\"[a-z]{0,3}\"\\})? [0-9.e+-]{1,4}( [0-9]{1,3})?", 0..8),
    ) {
        // Arbitrary bytes rarely form a push; these often do, so the rules
        // after the parser see them.
        let mut input = vec![selector];
        input.extend_from_slice(path.as_bytes());
        input.push(b'\n');
        for line in &lines {
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
        }
        if let Err(violation) = push(&input) {
            prop_assert!(false, "{}", violation);
        }
    }
}

#[test]
fn hand_picked_requests_hold_the_property() {
    let cases: [&[u8]; 8] = [
        b"",
        b"\x00job/a\nx 1\n",
        b"\x00job/a/instance/i\nx{instance=\"b\",job=\"c\"} 1\n",
        b"\x00job/a\nx 1\nx 2\n",
        b"\x00job@base64/=\nx 1\n",
        b"\x04job/a\n\x1f\x8b\x08\x00\x00\x00\x00\x00",
        b"\x08job/a\n\xff\x06\x00\x00sNaPpY\x01\x09\x00\x00",
        b"\x02job/a\n\x05\x0a\x03ab",
    ];
    for case in cases {
        assert_eq!(push(case), Ok(()), "{case:?}");
    }
    // The answers themselves: accepted, or refused with a reason.
    let accepted = tether_gateway::fuzz::push_request("job/a", None, None, b"x{k=\"v\"} 1\ny 2\n");
    assert_eq!(accepted, Ok(Ok(2)));
    let refused = tether_gateway::fuzz::push_request("job/a", None, None, b"x 1 123\n");
    assert!(matches!(refused, Ok(Err(line)) if line.contains("timestamps")));
}

/// Every input of `fuzz/corpus/push/` holds the property, so `cargo test`
/// guards what the fuzzer found without a nightly toolchain.
#[test]
fn the_push_corpus_holds_the_property() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/push");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read the corpus {}: {error}", dir.display()))
        .map(|entry| entry.expect("a corpus entry is readable").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} inputs in {}",
        files.len(),
        dir.display()
    );
    for path in files {
        let input = std::fs::read(&path).expect("a corpus input is readable");
        assert_eq!(push(&input), Ok(()), "{}", path.display());
    }
}
