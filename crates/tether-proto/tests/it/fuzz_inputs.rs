//! The fuzz property run without a fuzzer: on generated streams, on
//! streams of generated frames, and on inputs picked by hand.

use proptest::prelude::*;

use crate::fuzz_property::frames;

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
