//! The `tether` command: argument parsing and wiring only.

fn main() {}
