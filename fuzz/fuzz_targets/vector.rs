//! Fuzzes the instance-metric line parser: no payload may panic it, and a
//! line read keeps within its limits and reads back the same once written
//! again. The first byte picks whether the rest is a payload as it comes or
//! JSON to be encoded as base64 first, and which limits apply.
//!
//! The property lives in tether-drain's integration tests, which run it on
//! generated input.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/tether-drain/tests/it/fuzz_property.rs"]
#[allow(dead_code)]
mod property;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = property::vector(data) {
        panic!("property violated: {violation}");
    }
});
