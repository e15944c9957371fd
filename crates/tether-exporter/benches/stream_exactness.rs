//! W2.
fn main() {}
