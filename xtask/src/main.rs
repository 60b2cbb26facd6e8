//! `cargo xtask`: project tasks (build-pie, bench, demo, setup).
fn main() {}
