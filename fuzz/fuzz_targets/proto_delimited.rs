//! Fuzzes the varint-delimited protobuf decoder: no input may panic it, and
//! whatever it accepts must encode and decode back to the same families.
//!
//! The property lives in `fuzz_property.rs` beside the integration tests,
//! which replay this target's corpus through it.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/tether-model/tests/it/fuzz_property.rs"]
#[allow(
    dead_code,
    reason = "the file also holds the other targets' properties"
)]
mod property;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = property::delimited(data) {
        panic!("property violated: {violation}");
    }
});
