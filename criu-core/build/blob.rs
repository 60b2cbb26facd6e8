//! Builds the restorer blob (restorer-pie) and packages it into OUT_DIR.

pub fn build() {}
