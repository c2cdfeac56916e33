//! The `zeo-server` command.
fn main() {}
