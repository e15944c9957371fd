//! Integration tests of `tether-proto` through its public API only: a whole
//! agent session between two in-memory peers, and the fuzz property run on
//! generated input.

mod fuzz_inputs;
mod fuzz_property;
mod session;
