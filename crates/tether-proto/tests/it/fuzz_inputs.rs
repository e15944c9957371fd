//! The fuzz property run without a fuzzer: on generated streams, on
//! streams of generated frames, and on inputs picked by hand.

use proptest::prelude::*;

use crate::fuzz_property::{frames, logplex};

proptest! {
    #[test]
    fn arbitrary_streams_hold_the_property(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(violation) = frames(&input) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn streams_of_small_frames_hold_the_property(
        chunk_len in any::<u8>(),
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..8),
    ) {
        // Arbitrary bytes rarely form frames; these always do, so the
        // message decoders see every body.
        let mut input = vec![chunk_len];
        for body in &bodies {
            input.push(u8::try_from(body.len()).expect("under 128 bytes"));
            input.extend_from_slice(body);
        }
        if let Err(violation) = frames(&input) {
            prop_assert!(false, "{}", violation);
        }
    }
}

#[test]
fn hand_picked_inputs_hold_the_property() {
    let cases: [&[u8]; 6] = [
        &[],
        &[0],
        &[3, 0x04, 0x42, 0x02, 0x08, 0x07],
        &[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
        &[7, 0x81, 0x08],
        &[0, 0x02, 0x0f, 0x00, 0x00],
    ];
    for input in cases {
        assert_eq!(frames(input), Ok(()), "{input:02x?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_drain_bodies_hold_the_logplex_property(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(violation) = logplex(&input) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn drain_bodies_of_frames_hold_the_logplex_property(
        limit in any::<u8>(),
        messages in prop::collection::vec("<[0-9]{1,3}>1 [ -~]{0,12} [a-z]{1,4} [a-z.0-9]{1,6} - [ -~\r]{0,30}", 0..8),
        drop_last_newline in any::<bool>(),
    ) {
        // Arbitrary bytes rarely form frames; these always do.
        let mut input = vec![limit];
        for message in &messages {
            input.extend_from_slice(format!("{} {message}\n", message.len() + 1).as_bytes());
        }
        if drop_last_newline {
            input.pop();
        }
        if let Err(violation) = logplex(&input) {
            prop_assert!(false, "{}", violation);
        }
    }
}
