//! Fuzzes the parsers of Heroku's `key=value` lines: no message may panic
//! them, every pair is a slice of the message where the syntax puts it,
//! sample values are finite and read as Rust reads a decimal, and a router
//! line's status and durations are in range.
//!
//! The property lives in tether-drain's integration tests, which run it on
//! generated input.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/tether-drain/tests/it/fuzz_property.rs"]
#[allow(dead_code)]
mod property;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = property::heroku(data) {
        panic!("property violated: {violation}");
    }
});
