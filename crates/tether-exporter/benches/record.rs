//! W1.
fn main() {}
