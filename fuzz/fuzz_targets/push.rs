//! Fuzzes a push request's checks (grouping key, decompression, text and
//! protobuf bodies, the Pushgateway's rules): no input may panic them, and
//! what they accept keeps their limits and the key's labels apart.
//!
//! The property lives in tether-gateway's integration tests, which run it
//! on generated input.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/tether-gateway/tests/it/fuzz_property.rs"]
mod property;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = property::push(data) {
        panic!("property violated: {violation}");
    }
});
