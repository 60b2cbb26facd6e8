//! Compiles the image schemas in `proto/` with protox + prost-build.

pub fn build() {}
