//! Fuzzes the logplex framer and the syslog header parser: no drain body
//! may panic them, no frame passes its limit, and the frames read, written
//! again, read back the same.
//!
//! The property lives in tether-drain's integration tests, which run it on
//! generated input.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/tether-drain/tests/it/fuzz_property.rs"]
#[allow(dead_code)]
mod property;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = property::logplex(data) {
        panic!("property violated: {violation}");
    }
});
