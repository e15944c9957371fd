//! Integration tests of `tether-drain` through its public API only: the
//! fuzz properties run on generated input.

mod fuzz_inputs;
mod fuzz_property;
