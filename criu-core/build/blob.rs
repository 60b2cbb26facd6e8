//! Builds the restorer blob (restorer-pie) and packages it into OUT_DIR.
//!
//! The nested cargo build (see `linker::build`) uses `OUT_DIR/pie-target`
//! as its target directory, so it never contends with the outer build's
//! lock; the package lands at `OUT_DIR/restorer.pie`, which `src/pie`
//! embeds with `include_bytes!`.

use std::path::PathBuf;

pub fn build() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let crate_dir = manifest_dir.join("..").join("restorer-pie");
    for input in linker::build::inputs(&crate_dir) {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let opts = linker::build::BuildOptions::new(&crate_dir, out_dir.join("pie-target"));
    match linker::build::build_package(&opts, &out_dir.join("restorer.pie")) {
        Ok(pkg) => {
            // Shown with `cargo build -vv`.
            for line in pkg.summary().lines() {
                eprintln!("{line}");
            }
        }
        Err(e) => panic!("building the restorer blob failed: {e}"),
    }
}
