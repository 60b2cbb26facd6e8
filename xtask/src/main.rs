//! `cargo xtask`: project tasks (build-pie, bench, demo, setup).
//!
//! - `build-pie [--out FILE]`: builds and packages the restorer blob, prints
//!   the package summary (size, segments, relocations, entries).
//! - `bench [--runs N] [--only GROUP]`: prints a table of measurements
//!   (`--only blob|dump|restore|predump|live|lazy|fds|mmap`: one group of rows;
//!   `lazy-fault`: the lazy fault latency, N runs; `lazy-bg`: the lazy
//!   background copy throughput, N runs per chunk size; `user`: every
//!   user-flow row, `user:NAME,...` some (see `bench_user.rs`), CRIU's
//!   runs interleaved when `CRIU_BIN` is set).
//! - `test [ARGS]`: every test: the workspace's, then the blob library's
//!   host unit tests (restorer-pie is a workspace of its own); then the
//!   skipped checks and ignored tests with their reasons.
//! - `mutants [--list] [SCOPE...]`: mutation testing (cargo-mutants) of the
//!   restore argument builder, credentials, rlimits, fds, fill and the
//!   blob's pure logic; survivors must be listed with a reason in
//!   `mutants-survivors.txt`.
//! - `zdtm`: CRIU's own test suite (zdtm.py, built by
//!   `../shared/tools/upstream-criu.sh`) over `tests/zdtm-pass.txt`: the
//!   tests that passed must pass again (`criu-cli/tests/zdtm.rs`).
//! - `setup`: installs the test tools (qemu-user, criu's `crit`) if missing.
//! - `demo`: checkpoints and restores a demo process (the README's main job).
//! - `interop [--bin CRIU_RS] [--tests T,..] [--modes plain,page-server,lazy]`:
//!   CRIU 4.2 and criu-rs dumping and restoring each other's images, driven
//!   by CRIU's zdtm, as a matrix (skipped with the reason where CRIU is not
//!   built).

mod bench;
mod bench_dump;
mod bench_fds;
mod bench_live;
mod bench_lazy;
mod bench_lazy_restore;
mod bench_mmap;
mod bench_predump;
mod bench_restore;
mod bench_user;
mod demo;
mod interop;
mod setup;
mod mutants;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: cargo xtask <build-pie [--out FILE] | bench [--runs N] [--only blob|dump|restore|predump|live|lazy|fds|mmap|lazy-fault|lazy-bg|user|user:NAME,...] | setup | demo | test [ARGS] | mutants [--list] [SCOPE...] | zdtm | interop [--bin CRIU_RS] [--tests T,..] [--modes M,..]>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else { bail!("{USAGE}") };
    match cmd.as_str() {
        "build-pie" => build_pie(rest),
        "bench" => bench::run(rest),
        "setup" => setup::run(),
        "demo" => demo::run(&workspace_root()),
        "test" => test(rest),
        "mutants" => mutants::run(&workspace_root(), rest),
        "interop" => interop::run(&workspace_root(), rest),
        "zdtm" => zdtm(),
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

/// Runs the ignored zdtm pass-list test (`criu-cli/tests/zdtm.rs`).
fn zdtm() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["test", "-p", "criu-cli", "--test", "zdtm", "--", "--ignored", "--nocapture"])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("zdtm pass list: {status}");
    }
    Ok(())
}

/// Runs `cargo test --workspace ARGS`, then the restorer blob's library
/// tests on the host; then prints what was not tested: checks skipped at
/// run time (recorded by the tests into the file `CRIU_RS_SKIPS` names;
/// any under CI fails the run) and tests marked `#[ignore]`, with reasons.
fn test(args: &[String]) -> Result<()> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let blob_manifest = root.join("restorer-pie/Cargo.toml");
    let blob_target = root.join("target/restorer-pie-tests");
    let skips = root.join("target/test-skips.txt");
    std::fs::create_dir_all(root.join("target"))?;
    std::fs::write(&skips, "")?;
    let runs: [Vec<std::ffi::OsString>; 2] = [
        ["test", "--workspace"].iter().map(Into::into).chain(args.iter().map(Into::into)).collect(),
        vec!["test".into(), "--lib".into(), "--manifest-path".into(), blob_manifest.into(), "--target-dir".into(), blob_target.into()],
    ];
    let mut ignored = Vec::new();
    for run in runs {
        let mut child = std::process::Command::new(&cargo)
            .args(&run)
            .current_dir(&root)
            .env("CRIU_RS_SKIPS", &skips)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        // Passed through as it comes; "test NAME ... ignored[, REASON]" noted.
        let out = std::io::BufReader::new(child.stdout.take().context("cargo test stdout")?);
        for line in std::io::BufRead::lines(out) {
            let line = line?;
            println!("{line}");
            if let Some((name, rest)) = line.strip_prefix("test ").and_then(|l| l.split_once(" ... ignored")) {
                let reason = rest.strip_prefix(", ").unwrap_or("no reason given");
                ignored.push(format!("{name}: {reason}"));
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("cargo {run:?} failed: {status}");
        }
    }
    let text = std::fs::read_to_string(&skips).unwrap_or_default();
    let mut skipped: Vec<&str> = text.lines().collect();
    skipped.sort();
    skipped.dedup();
    println!("\nskipped at run time: {}", skipped.len());
    for s in &skipped {
        println!("  {s}");
    }
    println!("ignored (#[ignore] in the code): {}", ignored.len());
    for s in &ignored {
        println!("  {s}");
    }
    if !skipped.is_empty() && std::env::var_os("CI").is_some() {
        bail!("{} check(s) skipped under CI: CI must run everything", skipped.len());
    }
    Ok(())
}
