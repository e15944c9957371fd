//! Placeholder replaced by the line parsers' benchmarks.

fn main() {}
