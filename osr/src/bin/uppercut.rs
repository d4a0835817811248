//! The `uppercut` command line.
fn main() {}
