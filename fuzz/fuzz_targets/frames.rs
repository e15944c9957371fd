//! Fuzzes the agent protocol's frame decoder and the three message
//! decoders: no input may panic them, whole or in chunks they agree, and
//! every message they accept re-encodes to itself.
//!
//! The property lives in tether-proto's integration tests, which run it on
//! generated input.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/tether-proto/tests/it/fuzz_property.rs"]
#[allow(dead_code)]
mod property;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = property::frames(data) {
        panic!("property violated: {violation}");
    }
});
