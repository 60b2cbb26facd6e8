//! `cargo xtask`: project tasks (build-pie, bench, demo, setup).
//!
//! - `build-pie [--out FILE]`: builds and packages the restorer blob, prints
//!   the package summary (size, segments, relocations, entries).
//! - `bench [--runs N] [--only GROUP]`: prints a table of measurements
//!   (`--only blob|dump|restore|predump|lazy|fds`: one group of rows;
//!   `lazy-fault`: the lazy fault latency, N runs; `lazy-bg`: the lazy
//!   background copy throughput, N runs per chunk size).
//! - `test [ARGS]`: every test: the workspace's, then the blob library's
//!   host unit tests (restorer-pie is a workspace of its own).
//! - `setup`: installs the test tools (qemu-user, criu's `crit`) if missing.
//! - `demo`: checkpoints and restores a demo process (the README's main job).

mod bench;
mod bench_dump;
mod bench_fds;
mod bench_lazy;
mod bench_lazy_restore;
mod bench_predump;
mod bench_restore;
mod demo;
mod setup;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: cargo xtask <build-pie [--out FILE] | bench [--runs N] [--only blob|dump|restore|predump|lazy|fds|lazy-fault|lazy-bg] | setup | demo | test [ARGS]>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else { bail!("{USAGE}") };
    match cmd.as_str() {
        "build-pie" => build_pie(rest),
        "bench" => bench::run(rest),
        "setup" => setup::run(),
        "demo" => demo::run(&workspace_root()),
        "test" => test(rest),
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

/// Runs `cargo test --workspace ARGS`, then the restorer blob's library
/// tests on the host.
fn test(args: &[String]) -> Result<()> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let blob_manifest = root.join("restorer-pie/Cargo.toml");
    let blob_target = root.join("target/restorer-pie-tests");
    let runs: [Vec<std::ffi::OsString>; 2] = [
        ["test", "--workspace"].iter().map(Into::into).chain(args.iter().map(Into::into)).collect(),
        vec!["test".into(), "--lib".into(), "--manifest-path".into(), blob_manifest.into(), "--target-dir".into(), blob_target.into()],
    ];
    for run in runs {
        let status = std::process::Command::new(&cargo).args(&run).current_dir(&root).status()?;
        if !status.success() {
            bail!("cargo {run:?} failed: {status}");
        }
    }
    Ok(())
}
