//! The fuzz properties run without a fuzzer: on generated input and on
//! input shaped like real drain bodies.

use proptest::prelude::*;

use crate::fuzz_property::logplex;

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
