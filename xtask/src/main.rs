//! `cargo xtask`: project tasks (build-pie, bench, demo, setup).
//!
//! - `build-pie [--out FILE]`: builds and packages the restorer blob, prints
//!   the package summary (size, segments, relocations, entries).
//! - `bench [--runs N]`: prints a table of measurements.
//! - `setup`: installs the test tools (qemu-user, criu's `crit`) if missing.
//! - `demo`: not yet.

mod bench;
mod setup;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: cargo xtask <build-pie [--out FILE] | bench [--runs N] | setup | demo>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else { bail!("{USAGE}") };
    match cmd.as_str() {
        "build-pie" => build_pie(rest),
        "bench" => bench::run(rest),
        "setup" => setup::run(),
        "demo" => {
            println!("demo: not yet");
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n{USAGE}"),
    }
}

/// The workspace root (this crate's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The value following `flag` in `args`, if present.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Result<Option<&'a str>> {
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) => args.get(i + 1).map(|v| Some(v.as_str())).with_context(|| format!("{flag} needs a value")),
    }
}

fn build_pie(args: &[String]) -> Result<()> {
    let root = workspace_root();
    let target_dir = root.join("target").join("restorer-pie");
    let out = flag_value(args, "--out")?.map_or_else(|| target_dir.join("restorer.pie"), PathBuf::from);
    let opts = linker::build::BuildOptions::new(root.join("restorer-pie"), &target_dir);
    std::fs::create_dir_all(&target_dir).with_context(|| format!("creating {}", target_dir.display()))?;
    let pkg = linker::build::build_package(&opts, &out)?;
    let file_size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!("wrote {} ({file_size} bytes)", out.display());
    print!("{}", pkg.summary());
    Ok(())
}
